//! Skiff's vocabulary: resource types, manifest parsing, validation and label selectors, in the
//! Kubernetes shape. Pure: no tokio, no IO.
//!
//! # Layout
//!
//! - [`quantity`]: Kubernetes resource quantities (`250m`, `128Mi`, `1.5G`).
//! - [`name`]: DNS-1123 names and label keys and values.
//! - [`selector`]: label selectors (`kubectl -l` syntax, matchLabels, matchExpressions).
//!
//! The object model, parsing and selectors follow with issue 3.

pub mod name;
pub mod quantity;
pub mod selector;
