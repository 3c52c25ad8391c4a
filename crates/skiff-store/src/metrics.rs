//! What the store counts for `/metrics`: proposals to Raft and how many writes each carries. The
//! Raft figures themselves (term, leader, indexes) are read from [`crate::KvStore::status`] when
//! the metrics are scraped.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The store's counters. Cheap to clone: clones count together.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    /// Raft entries proposed by this member.
    pub proposals: Counter,
    /// Writes carried by those entries.
    pub proposed_writes: Counter,
    /// Writes per entry: how much the proposer batches.
    pub batch_size: Histogram,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            proposals: Counter::default(),
            proposed_writes: Counter::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 13)),
        }
    }
}

impl StoreMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("skiff_raft_proposals", "Raft entries this member proposed", self.proposals.clone());
        registry.register(
            "skiff_raft_proposed_writes",
            "Writes carried by the Raft entries this member proposed",
            self.proposed_writes.clone(),
        );
        registry.register(
            "skiff_raft_proposal_batch_size",
            "Writes per proposed Raft entry (the proposer batches concurrent writes)",
            self.batch_size.clone(),
        );
    }
}
