//! `apps/v1/ReplicaSet`: keeps a number of pods from one template running. A Deployment owns one
//! ReplicaSet per pod template (named after its `pod-template-hash`) and rolls out by scaling them.

use serde::{Deserialize, Serialize};

use crate::kinds::pod::PodTemplateSpec;
use crate::kinds::{Kind, Resource};
use crate::meta::{ObjectMeta, Time};
use crate::path::FieldPath;
use crate::selector::LabelSelector;
use crate::validate::{labels, non_negative, Errors};

/// The label a Deployment puts on a ReplicaSet and its pods: a hash of the pod template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The annotation carrying the Deployment revision a ReplicaSet belongs to.
pub const REVISION: &str = "deployment.kubernetes.io/revision";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSet {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ReplicaSetSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ReplicaSetStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetSpec {
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Seconds a new pod must be Ready before it counts as available (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    /// Required; must match the template's labels.
    #[serde(default)]
    pub selector: LabelSelector,
    #[serde(default)]
    pub template: PodTemplateSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetStatus {
    /// Pods that exist and are not being deleted.
    #[serde(default)]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fully_labeled_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ReplicaSetCondition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSetCondition {
    /// `ReplicaFailure`.
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a set of pods made from one template must satisfy (a Deployment's and a ReplicaSet's
/// spec): a selector that selects the template's own labels, and a template whose pods restart.
/// `what` names the owner in messages ("deployment").
pub(crate) fn validate_pod_set(
    errs: &mut Errors,
    path: &FieldPath,
    what: &str,
    selector: &LabelSelector,
    template: &PodTemplateSpec,
) {
    let selector_path = path.at("selector");
    if selector.match_labels.is_empty() && selector.match_expressions.is_empty() {
        errs.add(selector_path.clone(), "required: a selector with matchLabels or matchExpressions");
    } else {
        match selector.to_selector(&selector_path.to_string()) {
            Ok(parsed) => {
                if !parsed.matches(&template.metadata.labels) {
                    errs.add(
                        path.at("template.metadata.labels"),
                        format!("the labels do not match the selector {parsed}: the {what} would not own its own pods"),
                    );
                }
            }
            Err(message) => {
                let prefix = format!("{selector_path}.");
                let message = message.strip_prefix(&prefix).unwrap_or(&message).to_string();
                errs.add(selector_path, message)
            }
        }
    }
    labels(errs, &path.at("template.metadata.labels"), &template.metadata.labels);
    crate::kinds::pod::validate_spec(errs, &path.at("template.spec"), &template.spec);
    if let Some(policy) = &template.spec.restart_policy {
        if policy != "Always" {
            errs.add(path.at("template.spec.restartPolicy"), format!("{policy:?}: a {what}'s pods must use Always"));
        }
    }
}

impl ReplicaSet {
    pub fn replicas(&self) -> i32 {
        self.spec.replicas.unwrap_or(1)
    }

    /// The Deployment revision this set belongs to (0 when it has none).
    pub fn revision(&self) -> i64 {
        self.metadata.annotations.get(REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
    }
}

impl Resource for ReplicaSet {
    const KIND: Kind = Kind::ReplicaSet;
    const HAS_STATUS: bool = true;

    metadata_field!();

    fn same_desired_state(&self, other: &Self) -> bool {
        self.spec == other.spec
    }

    fn copy_status_from(&mut self, other: &Self) {
        self.status = other.status.clone();
    }

    fn apply_defaults(&mut self) {
        self.spec.replicas.get_or_insert(1);
        crate::kinds::pod::default_spec(&mut self.spec.template.spec);
    }

    fn validate(&self, errs: &mut Errors, root: &FieldPath) {
        let path = root.at("spec");
        non_negative(errs, path.at("replicas"), self.spec.replicas);
        non_negative(errs, path.at("minReadySeconds"), self.spec.min_ready_seconds);
        validate_pod_set(errs, &path, "replica set", &self.spec.selector, &self.spec.template);
    }
}
