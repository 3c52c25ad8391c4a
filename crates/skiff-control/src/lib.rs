//! Skiff's control plane: what runs on the leader and keeps the cluster's reality equal to what
//! users asked for. Everything reaches the cluster through the `ResourceApi` it is given.
//!
//! # Layout
//!
//! - [`reflector`]: list + watch caches of one kind, one writer, many cheap readers.
//! - [`runner`]: starts a controller when this member leads, feeds its pure `reconcile`, applies
//!   its actions, and stops before its next write when leadership is lost.
//! - [`gc`]: the garbage collector (objects whose owners are gone).

pub mod gc;
pub mod reflector;
pub mod runner;

pub use runner::{Action, Controller, Leadership, Reconciled, State};
