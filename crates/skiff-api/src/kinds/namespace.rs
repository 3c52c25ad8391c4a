//! `v1/Namespace`: a cluster-scoped name space for namespaced objects; `default` always exists.

use serde::{Deserialize, Serialize};

use crate::kinds::{Kind, Resource};
use crate::meta::ObjectMeta;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Namespace {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<NamespaceSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<NamespaceStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceStatus {
    /// `Active` or `Terminating`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

impl Resource for Namespace {
    const KIND: Kind = Kind::Namespace;
    const HAS_STATUS: bool = true;

    metadata_field!();

    fn same_desired_state(&self, other: &Self) -> bool {
        self.spec == other.spec
    }

    fn copy_status_from(&mut self, other: &Self) {
        self.status = other.status.clone();
    }

    fn apply_defaults(&mut self) {
        self.status.get_or_insert_with(NamespaceStatus::default).phase.get_or_insert_with(|| "Active".to_string());
    }
}
