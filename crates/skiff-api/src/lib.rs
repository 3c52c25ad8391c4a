//! Skiff's vocabulary: resource types, manifest parsing, validation and label selectors, in the
//! Kubernetes shape, and the `ResourceApi` contract the rest of Skiff reaches the cluster through.
//! Pure: no tokio, no IO.
//!
//! # Layout
//!
//! - [`api`]: the `ResourceApi` contract: request options, watch events, structured errors;
//!   [`memory`]: an in-memory implementation, the test double of the cluster.
//! - [`kinds`]: the object model (`Namespace`, `Node`, `Pod`, `Deployment`, `Service`, `ConfigMap`,
//!   `Event`) and [`kinds::Object`], any one of them with `apiVersion` and `kind`.
//! - [`limits`]: how large keys, values and transactions may be.
//! - [`meta`]: `metadata`, timestamps, `IntOrString`.
//! - [`manifest`]: reading YAML and JSON files into objects, with file:line:column errors.
//! - [`validate`]: what the API server checks before storing an object.
//! - [`defaults`]: what it fills in.
//! - [`fields`]: field selectors (`spec.nodeName=node1`).
//! - [`path`]: field paths (`spec.containers[0].image`) as messages name them.
//! - [`quantity`]: Kubernetes resource quantities (`250m`, `128Mi`, `1.5G`).
//! - [`name`]: DNS-1123 names and label keys and values.
//! - [`network`]: the service network: cluster IP and node port ranges.
//! - [`selector`]: label selectors (`kubectl -l` syntax, matchLabels, matchExpressions).

pub mod api;
pub mod defaults;
pub mod fields;
pub mod kinds;
pub mod limits;
pub mod manifest;
pub mod memory;
pub mod meta;
pub mod name;
pub mod network;
pub mod path;
pub mod quantity;
pub mod selector;
pub mod validate;

pub use api::{ApiError, Reason, ResourceApi};
pub use kinds::{Kind, Object};
