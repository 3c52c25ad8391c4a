//! What the API server counts for `/metrics`: every call by name and outcome, its latency, and the
//! watches open on this member.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use skiff_api::ApiError;

/// A call and how it ended: `OK` or the error's reason (`NotFound`, `Conflict`, `Unavailable`...).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub call: String,
    pub code: String,
}

/// A call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabel {
    pub call: String,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// The API server's figures. Cheap to clone: clones count together.
#[derive(Debug, Clone)]
pub struct ApiMetrics {
    pub calls: Family<CallLabels, Counter>,
    pub latency: Family<CallLabel, Histogram, fn() -> Histogram>,
    pub open_watches: Gauge,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        ApiMetrics {
            calls: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            open_watches: Gauge::default(),
        }
    }
}

impl ApiMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "skiff_api_calls",
            "API calls served or forwarded by this member, by call and outcome",
            self.calls.clone(),
        );
        registry.register("skiff_api_call_seconds", "Latency of API calls, by call", self.latency.clone());
        registry.register("skiff_api_open_watches", "Watches open on this member", self.open_watches.clone());
    }

    /// Counts one call of `name` that took `took` and ended as `outcome`.
    pub fn record<T>(&self, name: &str, took: Duration, outcome: &Result<T, ApiError>) {
        let code = match outcome {
            Ok(_) => "OK".to_string(),
            Err(e) => format!("{:?}", e.reason),
        };
        self.calls.get_or_create(&CallLabels { call: name.to_string(), code }).inc();
        self.latency.get_or_create(&CallLabel { call: name.to_string() }).observe(took.as_secs_f64());
    }

    /// Counts an open watch until the returned guard is dropped.
    pub fn watch_opened(&self) -> WatchGuard {
        self.open_watches.inc();
        WatchGuard(self.open_watches.clone())
    }
}

/// Held by an open watch; the watch count goes down when it is dropped.
pub struct WatchGuard(Gauge);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
