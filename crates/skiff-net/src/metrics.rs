//! What the proxy counts for `/metrics`: connections forwarded, connections no endpoint could
//! take, and endpoints skipped because they did not answer.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `forwarded` or `refused` (no endpoint took it).
    pub outcome: &'static str,
}

/// The proxy's counters. Cheap to clone: clones count together.
#[derive(Debug, Clone, Default)]
pub struct ProxyMetrics {
    connections: Family<OutcomeLabel, Counter>,
    retries: Counter,
}

impl ProxyMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "skiff_proxy_connections",
            "Connections to Services through this member's proxy, by outcome",
            self.connections.clone(),
        );
        registry.register(
            "skiff_proxy_endpoint_retries",
            "Endpoints that did not take a connection, which then went to the next",
            self.retries.clone(),
        );
    }

    pub fn forwarded(&self) {
        self.connections.get_or_create(&OutcomeLabel { outcome: "forwarded" }).inc();
    }

    pub fn refused(&self) {
        self.connections.get_or_create(&OutcomeLabel { outcome: "refused" }).inc();
    }

    pub fn retried(&self) {
        self.retries.inc();
    }

    /// Connections forwarded and refused so far.
    pub fn counts(&self) -> (u64, u64) {
        let get = |outcome| self.connections.get_or_create(&OutcomeLabel { outcome }).get();
        (get("forwarded"), get("refused"))
    }
}
