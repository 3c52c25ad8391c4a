//! Skiff's node agent: turns the pods bound to this node into containers and reports what happens.
//!
//! # Layout
//!
//! - [`agent`]: the node agent: registration, a worker per pod, orphan removal.
//! - [`runtime`]: the [`runtime::ContainerRuntime`] trait, the one door to containers.
//! - [`docker`]: the runtime on a Docker engine (bollard).
//! - [`memory`]: an in-memory runtime (and prober) for control-plane tests and simulated nodes.
//! - [`plan`]: what a pod worker does next (pure): start, restart with back-off, stop, finalize.
//! - [`pod_spec`]: what the runtime is asked to create for a pod (pure).
//! - [`probe`]: when probes run and what their results mean (pure), and running them (exec
//!   through the runtime, TCP and HTTP through a [`probe::Prober`]).
//! - [`events`]: the events the agent records about pods; [`metrics`]: the actions it counts.
//! - [`status`]: a pod's status from what was observed of its containers (pure).
//! - [`worker`]: the pod worker: observes, acts on the plan, probes, reports status.
//! - [`backoff`]: the crash-loop back-off schedule (pure).

pub mod agent;
pub mod backoff;
pub mod docker;
pub mod events;
pub mod memory;
pub mod metrics;
pub mod plan;
pub mod pod_spec;
pub mod probe;
pub mod runtime;
pub mod status;
pub mod worker;
