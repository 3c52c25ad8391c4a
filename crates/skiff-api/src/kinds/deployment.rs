//! `apps/v1/Deployment`: a replicated pod template rolled out with a strategy.

use serde::{Deserialize, Serialize};

use crate::kinds::pod::PodTemplateSpec;
use crate::kinds::{Kind, Resource};
use crate::meta::{IntOrString, ObjectMeta, Time};
use crate::path::FieldPath;
use crate::selector::LabelSelector;
use crate::validate::{non_negative, one_of, Errors};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: DeploymentSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeploymentStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Required in apps/v1; must match the template's labels.
    #[serde(default)]
    pub selector: LabelSelector,
    #[serde(default)]
    pub template: PodTemplateSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<DeploymentStrategy>,
    /// Seconds a new pod must be Ready before it counts as available (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ready_seconds: Option<i32>,
    /// Seconds without progress before the rollout is reported failed (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_seconds: Option<i32>,
    /// Old revisions kept for rollback (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_history_limit: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStrategy {
    /// `RollingUpdate` (default) or `Recreate`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdateDeployment>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdateDeployment {
    /// Default 25%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<IntOrString>,
    /// Default 25%.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<IntOrString>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unavailable_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<DeploymentCondition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentCondition {
    /// `Available`, `Progressing` or `ReplicaFailure`.
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn validate_spec(errs: &mut Errors, path: &FieldPath, spec: &DeploymentSpec) {
    non_negative(errs, path.at("replicas"), spec.replicas);
    crate::kinds::replica_set::validate_pod_set(errs, path, "deployment", &spec.selector, &spec.template);
    if let Some(strategy) = &spec.strategy {
        let sp = path.at("strategy");
        errs.check(&sp.at("type"), one_of(&strategy.type_, &["RollingUpdate", "Recreate"]));
        if let Some(ru) = &strategy.rolling_update {
            if strategy.type_.as_deref() == Some("Recreate") {
                errs.add(sp.at("rollingUpdate"), "may not be set when type is Recreate");
            }
            let mut resolved = Vec::new();
            for (name, value) in [("maxSurge", &ru.max_surge), ("maxUnavailable", &ru.max_unavailable)] {
                let Some(value) = value else { continue };
                let fp = sp.at("rollingUpdate").at(name);
                match value.scaled(100, false) {
                    Ok(v) if v < 0 => errs.add(fp, format!("{value} must be >= 0")),
                    Ok(v) if name == "maxUnavailable" && matches!(value, IntOrString::String(_)) && v > 100 => {
                        errs.add(fp, format!("{value} must be at most 100%"))
                    }
                    Ok(v) => resolved.push(v),
                    Err(message) => errs.add(fp, message),
                }
            }
            if resolved.len() == 2 && resolved.iter().all(|v| *v == 0) {
                errs.add(
                    sp.at("rollingUpdate"),
                    "maxSurge and maxUnavailable may not both be 0: the rollout could never progress",
                );
            }
        }
    }
    non_negative(errs, path.at("minReadySeconds"), spec.min_ready_seconds);
    non_negative(errs, path.at("revisionHistoryLimit"), spec.revision_history_limit);
    if let Some(deadline) = spec.progress_deadline_seconds {
        if deadline <= spec.min_ready_seconds.unwrap_or(0) {
            errs.add(path.at("progressDeadlineSeconds"), format!("{deadline} must be greater than minReadySeconds"));
        }
    }
}

impl Resource for Deployment {
    const KIND: Kind = Kind::Deployment;
    const HAS_STATUS: bool = true;

    metadata_field!();

    fn same_desired_state(&self, other: &Self) -> bool {
        self.spec == other.spec
    }

    fn copy_status_from(&mut self, other: &Self) {
        self.status = other.status.clone();
    }

    fn apply_defaults(&mut self) {
        let spec = &mut self.spec;
        spec.replicas.get_or_insert(1);
        spec.revision_history_limit.get_or_insert(10);
        spec.progress_deadline_seconds.get_or_insert(600);
        let strategy = spec.strategy.get_or_insert_with(DeploymentStrategy::default);
        let kind = strategy.type_.get_or_insert_with(|| "RollingUpdate".to_string());
        if kind == "RollingUpdate" {
            let ru = strategy.rolling_update.get_or_insert_with(RollingUpdateDeployment::default);
            ru.max_surge.get_or_insert(IntOrString::String("25%".into()));
            ru.max_unavailable.get_or_insert(IntOrString::String("25%".into()));
        }
        crate::kinds::pod::default_spec(&mut spec.template.spec);
    }

    fn validate(&self, errs: &mut Errors, root: &FieldPath) {
        validate_spec(errs, &root.at("spec"), &self.spec);
    }
}
