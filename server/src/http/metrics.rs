//! Request latency histograms per endpoint and outcome, rendered next to the
//! node's own metrics on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadbolt_runtime::metrics::{Histogram, LATENCY_BUCKETS_SECONDS};

/// Metric name of the request latency histogram.
const REQUEST_SECONDS: &str = "deadbolt_http_request_duration_seconds";

/// Latency per (endpoint, outcome). Endpoints are route templates (or
/// `unmatched`) and outcomes are `ok`, `other` or an error code, so the map
/// is bounded by the route table times the code list.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    histograms: Mutex<BTreeMap<(String, &'static str), Arc<Histogram>>>,
}

impl RequestMetrics {
    pub fn observe(&self, endpoint: &str, outcome: &'static str, elapsed: Duration) {
        let histogram = {
            // A poisoned lock only means another request panicked mid-insert;
            // the map itself is still whole.
            let mut map = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
            map.entry((endpoint.to_owned(), outcome))
                .or_insert_with(|| Arc::new(Histogram::new(LATENCY_BUCKETS_SECONDS)))
                .clone()
        };
        histogram.observe(elapsed.as_secs_f64());
    }

    /// Appends the histograms in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP {REQUEST_SECONDS} HTTP request latency by endpoint and outcome.\n# TYPE {REQUEST_SECONDS} histogram"
        );
        let map = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        for ((endpoint, outcome), histogram) in map.iter() {
            let labels = format!(
                "endpoint=\"{}\",outcome=\"{outcome}\"",
                endpoint.replace('\\', "\\\\").replace('"', "\\\"")
            );
            histogram.render(out, REQUEST_SECONDS, &labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_series_per_endpoint_and_outcome() {
        let m = RequestMetrics::default();
        m.observe("POST /v1/sessions", "ok", Duration::from_millis(3));
        m.observe("POST /v1/sessions", "ok", Duration::from_millis(4));
        m.observe("POST /v1/sessions", "unavailable", Duration::from_millis(1));
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains(
            "deadbolt_http_request_duration_seconds_count{endpoint=\"POST /v1/sessions\",outcome=\"ok\"} 2"
        ), "{out}");
        assert!(out.contains("outcome=\"unavailable\"} 1"), "{out}");
    }
}
