//! Operations endpoints: `/health`, `/ready`, `/metrics`, `/openapi.json`
//! and a small `/docs` page that renders the document.

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::Json;
use deadbolt_api::{EmptyResponse, ErrorEnvelope};

use crate::http::error::ApiError;
use crate::http::{openapi_document, AppState};

/// 200 while the process runs.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = EmptyResponse)))]
pub(crate) async fn health() -> Json<EmptyResponse> {
    Json(EmptyResponse {})
}

/// 200 iff this node knows a leader with a quorum and has applied what it
/// knows committed; 503 otherwise.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, body = EmptyResponse), (status = 503, body = ErrorEnvelope)))]
pub(crate) async fn ready(State(state): State<AppState>) -> Result<Json<EmptyResponse>, ApiError> {
    let status = state.node()?.status().await?;
    if status.ready {
        Ok(Json(EmptyResponse {}))
    } else {
        Err(ApiError::unavailable(match status.leader {
            Some(leader) => format!("not caught up with leader {leader}"),
            None => "no leader known".to_owned(),
        }))
    }
}

/// Prometheus text: the node's metrics and request latency per endpoint.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain; version=0.0.4", body = String)))]
pub(crate) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    if let Some(node) = &state.node {
        node.metrics().render(&mut out);
    }
    state.metrics.render(&mut out);
    crate::http::metrics::render_process(&mut out);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, content_type = "application/json", body = Object)))]
pub(crate) async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi_document(),
    )
}

/// A dependency-free page listing the document's operations.
const DOCS_HTML: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>deadbolt API</title>
<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}code{background:#eee;padding:0 .2em}
details{margin:.3em 0}pre{background:#f6f6f6;padding:.5em;overflow:auto}</style></head>
<body><h1>deadbolt HTTP API</h1><p>From <a href="/openapi.json">/openapi.json</a>.</p><div id="ops"></div>
<script>
fetch('/openapi.json').then(r => r.json()).then(doc => {
  const ops = document.getElementById('ops');
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const d = document.createElement('details');
      const s = document.createElement('summary');
      s.innerHTML = '<code></code> ';
      s.firstChild.textContent = method.toUpperCase() + ' ' + path;
      s.appendChild(document.createTextNode(op.summary || ''));
      const pre = document.createElement('pre');
      pre.textContent = JSON.stringify(op, null, 2);
      d.append(s, pre);
      ops.appendChild(d);
    }
  }
});
</script></body></html>"#;

/// A small HTML page that renders `/openapi.json`.
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, content_type = "text/html", body = String)))]
pub(crate) async fn docs() -> Html<&'static str> {
    Html(DOCS_HTML)
}
