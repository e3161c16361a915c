//! The HTTP/JSON API of `shared/API.md`: the router ([`app`]), its state, the
//! route table that both the router and the OpenAPI document are built from,
//! and the middleware that labels metrics and logs. The serve loop is in
//! [`serve`].

mod error;
mod extract;
mod metrics;
mod openapi;
mod routes;
mod serve;

#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use deadbolt_api::{
    ErrorCode, BODY_BYTES_MAX_DEFAULT, EPHEMERAL_SESSION_TTL_MS_DEFAULT, HEADER_LEADER,
};
use deadbolt_runtime::node::NodeHandle;

pub use error::ApiError;
pub use extract::{fingerprint, parse_json};
pub use metrics::RequestMetrics;
pub use serve::{
    serve_http, serve_http_with, ServeHttpOptions, CONNECTIONS_MAX_DEFAULT, DRAIN_TIMEOUT_DEFAULT,
};

/// What the API layer needs to know beyond the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    /// Request bodies above this get 413 `payload_too_large`.
    pub body_bytes_max: usize,
    /// TTL of the session an acquire without `session_id` opens, when the
    /// request gives none.
    pub ephemeral_ttl_ms_default: u64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            ephemeral_ttl_ms_default: EPHEMERAL_SESSION_TTL_MS_DEFAULT,
        }
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub(crate) struct AppState {
    /// `None` only in this crate's HTTP-layer tests, which check everything
    /// that is decided before a request reaches a node; such a server
    /// answers 503 where it would need one.
    node: Option<NodeHandle>,
    settings: Arc<ApiSettings>,
    metrics: Arc<RequestMetrics>,
}

impl AppState {
    fn node(&self) -> Result<&NodeHandle, ApiError> {
        self.node
            .as_ref()
            .ok_or_else(|| ApiError::unavailable("this server has no node attached"))
    }
}

/// One served route: the router and the OpenAPI document are both built
/// from this table, so a route cannot be served undocumented; the OpenAPI
/// coverage test checks that each annotation names the route it documents.
pub(crate) struct Route {
    // Read by the OpenAPI coverage test; the router gets it through `handler`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) method: Method,
    /// In OpenAPI/axum 0.8 syntax: `/v1/locks/{name}`.
    pub(crate) path: &'static str,
    handler: MethodRouter<AppState>,
    /// Adds the handler's `#[utoipa::path]` operation to the document.
    document: openapi::AddOperation,
}

/// `route!(METHOD "/path" => module::handler, module::__path_handler)`: the
/// second path is the struct `#[utoipa::path]` generates beside `handler`
/// (macro_rules cannot build that name itself).
macro_rules! route {
    ($method:ident $path:literal => $handler:path, $doc:ty) => {
        Route {
            method: Method::$method,
            path: $path,
            handler: on(MethodFilter::$method, $handler),
            document: openapi::add_operation::<$doc>,
        }
    };
}

/// Every route of the API.
pub(crate) fn route_table() -> Vec<Route> {
    use routes::{cluster, kv, locks, ops, sessions, stacks};
    vec![
        route!(POST "/v1/sessions" => sessions::create, sessions::__path_create),
        route!(GET "/v1/sessions/{id}" => sessions::get, sessions::__path_get),
        route!(DELETE "/v1/sessions/{id}" => sessions::delete, sessions::__path_delete),
        route!(POST "/v1/sessions/{id}/keepalive" => sessions::keepalive, sessions::__path_keepalive),
        route!(GET "/v1/locks" => locks::list, locks::__path_list),
        route!(GET "/v1/locks/{name}" => locks::get, locks::__path_get),
        route!(POST "/v1/locks/{name}/acquire" => locks::acquire, locks::__path_acquire),
        route!(POST "/v1/locks/{name}/release" => locks::release, locks::__path_release),
        route!(POST "/v1/locks/{name}/withdraw" => locks::withdraw, locks::__path_withdraw),
        route!(POST "/v1/locks/{name}/validate" => locks::validate, locks::__path_validate),
        route!(GET "/v1/kv/{key}" => kv::get, kv::__path_get),
        route!(PUT "/v1/kv/{key}" => kv::put, kv::__path_put),
        route!(POST "/v1/kv/{key}/append" => kv::append, kv::__path_append),
        route!(GET "/v1/stacks/{name}" => stacks::get, stacks::__path_get),
        route!(DELETE "/v1/stacks/{name}" => stacks::delete, stacks::__path_delete),
        route!(POST "/v1/stacks/{name}/push" => stacks::push, stacks::__path_push),
        route!(POST "/v1/stacks/{name}/pop" => stacks::pop, stacks::__path_pop),
        route!(GET "/v1/cluster" => cluster::status, cluster::__path_status),
        route!(POST "/v1/cluster/members" => cluster::add_member, cluster::__path_add_member),
        route!(DELETE "/v1/cluster/members/{id}" => cluster::remove_member, cluster::__path_remove_member),
        route!(PATCH "/v1/cluster/members/{id}" => cluster::update_member, cluster::__path_update_member),
        route!(POST "/v1/cluster/members/{id}/promote" => cluster::promote_member, cluster::__path_promote_member),
        route!(POST "/v1/cluster/leader" => cluster::transfer_leader, cluster::__path_transfer_leader),
        route!(GET "/v1/cluster/snapshot" => cluster::snapshot, cluster::__path_snapshot),
        route!(GET "/health" => ops::health, ops::__path_health),
        route!(GET "/ready" => ops::ready, ops::__path_ready),
        route!(GET "/metrics" => ops::metrics, ops::__path_metrics),
        route!(GET "/openapi.json" => ops::openapi, ops::__path_openapi),
        route!(GET "/docs" => ops::docs, ops::__path_docs),
    ]
}

/// The OpenAPI document of [`route_table`], as JSON, built once.
pub fn openapi_document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| openapi::document(route_table().iter().map(|r| r.document)))
}

/// The whole API, served by `node`.
pub fn app(node: NodeHandle, settings: ApiSettings) -> Router {
    build(Some(node), settings)
}

/// The API with no node behind it: what is decided before a node is asked
/// (routing, envelopes, limits, validation) behaves as in production.
#[cfg(test)]
pub(crate) fn app_detached(settings: ApiSettings) -> Router {
    build(None, settings)
}

fn build(node: Option<NodeHandle>, settings: ApiSettings) -> Router {
    let state = AppState {
        node,
        settings: Arc::new(settings.clone()),
        metrics: Arc::new(RequestMetrics::default()),
    };
    let mut router = Router::new();
    for route in route_table() {
        router = router.route(route.path, route.handler);
    }
    router
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(settings.body_bytes_max))
        .with_state(state)
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found_route(method.as_str(), uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} does not serve {method}", uri.path()),
    )
}

/// Times every request into the per-endpoint histograms and logs it.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = tokio::time::Instant::now();
    let method = request.method().clone();
    let endpoint = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await.into_response();
    if let Some(leader) = state.node.as_ref().and_then(NodeHandle::leader_api_addr) {
        if let Ok(value) = HeaderValue::from_str(&leader) {
            response.headers_mut().insert(HEADER_LEADER, value);
        }
    }
    let elapsed = started.elapsed();
    let outcome = match response.extensions().get::<ErrorCode>() {
        Some(code) => code.as_str(),
        None if response.status().is_success() => "ok",
        None => "other",
    };
    let endpoint = match &endpoint {
        Some(route) => format!("{method} {route}"),
        None => "unmatched".to_owned(),
    };
    state.metrics.observe(&endpoint, outcome, elapsed);
    let status = response.status().as_u16();
    // `/ready` answering 503 is its job (probes poll it through every
    // election): not a failure worth a warning.
    let probe = endpoint == "GET /ready";
    if response.status().is_server_error() && !probe {
        tracing::warn!(%method, %path, status, outcome, elapsed_ms = elapsed.as_millis() as u64, "request failed");
    } else {
        tracing::debug!(%method, %path, status, outcome, elapsed_ms = elapsed.as_millis() as u64, "request");
    }
    response
}
