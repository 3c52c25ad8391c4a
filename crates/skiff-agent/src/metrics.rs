//! What the agent counts for `/metrics`: the actions its pod workers take. (The pods of this node
//! by phase are read from the member's replica when the metrics are scraped.)

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// An action of a pod worker: `start-sandbox`, `start-container`, `stop`, `remove`, `finalize`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    pub action: String,
}

/// The agent's counters. Cheap to clone: clones count together.
#[derive(Debug, Clone, Default)]
pub struct AgentMetrics {
    pub actions: Family<ActionLabel, Counter>,
}

impl AgentMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register("skiff_agent_actions", "Actions the pod workers of this node took", self.actions.clone());
    }

    pub fn count(&self, action: &str) {
        self.actions.get_or_create(&ActionLabel { action: action.to_string() }).inc();
    }
}
