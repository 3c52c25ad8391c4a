//! `v1/ConfigMap`: configuration that pods read as environment variables.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::kinds::{Kind, Resource};
use crate::meta::ObjectMeta;
use crate::path::FieldPath;
use crate::validate::Errors;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMap {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Base64-encoded values, as Kubernetes writes them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub binary_data: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
}

impl Resource for ConfigMap {
    const KIND: Kind = Kind::ConfigMap;
    const HAS_STATUS: bool = false;

    metadata_field!();

    fn same_desired_state(&self, other: &Self) -> bool {
        self.data == other.data && self.binary_data == other.binary_data && self.immutable == other.immutable
    }

    /// Keys are file names when a config map is mounted: letters, digits, '-', '_' and '.'.
    fn validate(&self, errs: &mut Errors, root: &FieldPath) {
        for key in self.data.keys().chain(self.binary_data.keys()) {
            let ok = !key.is_empty()
                && key.len() <= 253
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            if !ok {
                errs.add(
                    root.at("data").key(key),
                    format!("key {key:?} must be 1-253 letters, digits, '-', '_' or '.'"),
                );
            }
        }
    }
}
