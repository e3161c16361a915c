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

/// Appends the process's resident memory (the standard
/// `process_resident_memory_bytes`), read from `/proc/self/statm` where
/// there is one (Linux); nothing elsewhere, nor in the simulation, where
/// the process is not the node.
pub(crate) fn render_process(out: &mut String) {
    #[cfg(not(madsim))]
    if let Some(bytes) = resident_bytes() {
        let _ = writeln!(
            out,
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {bytes}"
        );
    }
    #[cfg(madsim)]
    let _ = out;
}

/// Resident pages (statm's second field) times the page size, assumed 4 KiB
/// (the size on every platform deadbolt is built for that has `/proc`).
#[cfg(not(madsim))]
fn resident_bytes() -> Option<u64> {
    const PAGE_BYTES: u64 = 4096;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_BYTES)
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

    #[cfg(all(target_os = "linux", not(madsim)))]
    #[test]
    fn renders_the_resident_memory_of_the_process() {
        let mut out = String::new();
        render_process(&mut out);
        let bytes: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .expect("the gauge")
            .parse()
            .expect("a number");
        assert!(
            bytes > 1 << 20,
            "a running test uses more than 1 MiB: {bytes}"
        );
    }
}
