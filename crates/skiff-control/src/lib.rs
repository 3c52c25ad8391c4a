//! Skiff's control plane: what runs on the leader and keeps the cluster's reality equal to what
//! users asked for. Everything reaches the cluster through the `ResourceApi` it is given.
//!
//! # Layout
//!
//! - [`reflector`]: list + watch caches of one kind, one writer, many cheap readers.
//! - [`runner`]: starts a controller when this member leads, feeds its pure `reconcile`, applies
//!   its actions, and stops before its next write when leadership is lost.
//! - [`events`]: events about decisions, counted rather than repeated, and their expiry.
//! - [`gc`]: the garbage collector (objects whose owners are gone).
//! - [`scheduler`]: places pending pods on nodes.
//! - [`replica_set`]: keeps each ReplicaSet's pods at its replica count.
//! - [`deployment`]: rolls a Deployment's template out through ReplicaSets.
//! - [`endpoints`]: keeps each Service's EndpointSlices: its pods' addresses and conditions.
//! - [`node_lifecycle`]: takes nodes that stopped renewing out of service and evicts their pods.
//! - [`names`]: names derived from content (pod suffixes, template hashes, event names).
//! - [`pods`]: what controllers read from a pod (active, ready, available).

pub mod deployment;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod names;
pub mod node_lifecycle;
pub mod pods;
pub mod reflector;
pub mod replica_set;
pub mod runner;
pub mod scheduler;

pub use runner::{Action, Controller, Leadership, Reconciled, State};

use std::sync::Arc;

/// Every controller the leader runs, the node lifecycle and event expiry with their timings.
pub fn controllers(lifecycle: node_lifecycle::NodeLifecycle, events: events::EventExpiry) -> Vec<Arc<dyn Controller>> {
    vec![
        Arc::new(gc::GarbageCollector),
        Arc::new(events),
        Arc::new(lifecycle),
        Arc::new(scheduler::Scheduler),
        Arc::new(replica_set::ReplicaSetController),
        Arc::new(deployment::DeploymentController),
        Arc::new(endpoints::EndpointsController),
    ]
}
