//! `v1/Pod`: one or more containers that share a network namespace and run on one node.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::kinds::{Kind, Resource};
use crate::meta::{IntOrString, ObjectMeta, Time};
use crate::name::{check_dns1123_label, check_dns1123_subdomain, check_label_key, check_label_value};
use crate::path::FieldPath;
use crate::quantity::Quantity;
use crate::validate::{check_port, check_port_name, check_protocol, labels, non_negative, one_of, Errors};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatus>,
}

/// `spec.template` of a Deployment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateSpec {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
    /// `Always` (default), `OnFailure` or `Never`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// The node the pod is bound to; set by the scheduler through a binding, or by the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Seconds between SIGTERM and SIGKILL when the pod is deleted (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    /// Taints of nodes this pod accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// Lets a pod onto (or keeps it on) a node with a matching taint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Toleration {
    /// Empty with `Exists`: every taint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `Equal` (default) or `Exists`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Empty: every effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<String>,
    /// With `NoExecute`: how long the pod stays after the taint appears (unset: forever).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toleration_seconds: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    #[serde(default)]
    pub image: String,
    /// Replaces the image's entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Replaces the image's cmd.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    #[serde(default, skip_serializing_if = "ResourceRequirements::is_empty")]
    pub resources: ResourceRequirements,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<Lifecycle>,
    /// `Always`, `IfNotPresent` or `Never`; defaults as Kubernetes does (`Always` for `:latest` and
    /// untagged images). Skiff never pulls: see the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeySelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<ObjectFieldSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeySelector {
    pub name: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// `fieldRef`: `metadata.name`, `metadata.namespace`, `metadata.uid`, `spec.nodeName`, `status.podIP`...
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectFieldSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    pub field_path: String,
}

/// `envFrom`: every key of a ConfigMap as a variable, with an optional prefix.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvFromSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapEnvSource>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapEnvSource {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// Referenced by probes and by a Service's `targetPort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: i32,
    /// `TCP` (default), `UDP` or `SCTP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<i32>,
}

impl Container {
    /// The ports named `name` (a probe's or a Service's `targetPort` by name).
    pub fn ports_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ContainerPort> + 'a {
        self.ports.iter().filter(move |p| p.name.as_deref() == Some(name))
    }
}

/// CPU and memory, as quantities.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRequirements {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Quantity>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, Quantity>,
}

impl ResourceRequirements {
    pub fn is_empty(&self) -> bool {
        self.limits.is_empty() && self.requests.is_empty()
    }
}

/// A liveness, readiness or startup probe: one handler plus its timing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_seconds: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecAction {
    #[serde(default)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGetAction {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A number or the name of a container port.
    pub port: IntOrString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `HTTP` (default) or `HTTPS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpSocketAction {
    pub port: IntOrString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_start: Option<LifecycleHandler>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_stop: Option<LifecycleHandler>,
}

/// What a lifecycle hook runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleHandler {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGetAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocketAction>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PodCondition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "hostIP")]
    pub host_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub container_statuses: Vec<ContainerStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCondition {
    /// `PodScheduled`, `Initialized`, `ContainersReady`, `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ContainerState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state: Option<ContainerState>,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub restart_count: i32,
    #[serde(default)]
    pub image: String,
    #[serde(default, rename = "imageID")]
    pub image_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "containerID")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<bool>,
}

/// Exactly one of the three is set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<ContainerStateWaiting>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<ContainerStateRunning>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated: Option<ContainerStateTerminated>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateWaiting {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateRunning {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStateTerminated {
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "containerID")]
    pub container_id: Option<String>,
}

// Validation of a pod spec (also a deployment's template), as Kubernetes' API server does it.

pub(crate) fn validate_spec(errs: &mut Errors, path: &FieldPath, spec: &PodSpec) {
    if spec.containers.is_empty() {
        errs.add(path.at("containers"), "required: a pod needs at least one container");
    }
    let mut names = BTreeSet::new();
    let mut host_ports = BTreeSet::new();
    for (i, c) in spec.containers.iter().enumerate() {
        let p = path.at("containers").index(i);
        if !names.insert(c.name.as_str()) {
            errs.add(p.at("name"), format!("{:?} is used by another container of this pod", c.name));
        }
        container(errs, &p, c);
        for (j, port) in c.ports.iter().enumerate() {
            if let Some(hp) = port.host_port {
                if !host_ports.insert((hp, port.protocol.clone())) {
                    errs.add(p.at("ports").index(j).at("hostPort"), format!("{hp} is used twice in this pod"));
                }
            }
        }
    }
    errs.check(&path.at("restartPolicy"), one_of(&spec.restart_policy, &["Always", "OnFailure", "Never"]));
    labels(errs, &path.at("nodeSelector"), &spec.node_selector);
    if let Some(node) = &spec.node_name {
        errs.check(&path.at("nodeName"), check_dns1123_subdomain(node));
    }
    non_negative(errs, path.at("terminationGracePeriodSeconds"), spec.termination_grace_period_seconds);
    for (i, t) in spec.tolerations.iter().enumerate() {
        toleration(errs, &path.at("tolerations").index(i), t);
    }
}

const EFFECTS: [&str; 3] = ["NoSchedule", "PreferNoSchedule", "NoExecute"];

fn toleration(errs: &mut Errors, p: &FieldPath, t: &Toleration) {
    if let Some(key) = t.key.as_deref().filter(|k| !k.is_empty()) {
        errs.check(&p.at("key"), check_label_key(key));
    }
    errs.check(&p.at("operator"), one_of(&t.operator, &["Equal", "Exists"]));
    errs.check(&p.at("effect"), one_of(&t.effect.clone().filter(|e| !e.is_empty()), &EFFECTS));
    if t.operator.as_deref() == Some("Exists") && t.value.as_deref().is_some_and(|v| !v.is_empty()) {
        errs.add(p.at("value"), "must be empty when operator is Exists");
    }
    if t.key.as_deref().unwrap_or("").is_empty() && t.operator.as_deref() != Some("Exists") {
        errs.add(p.at("operator"), "must be Exists when key is empty (a toleration of every taint)");
    }
    if t.toleration_seconds.is_some() && t.effect.as_deref() != Some("NoExecute") {
        errs.add(p.at("tolerationSeconds"), "only a NoExecute toleration has tolerationSeconds");
    }
}

/// A node's taint: a label key and value and one of the three effects.
pub(crate) fn taint(errs: &mut Errors, p: &FieldPath, t: &crate::kinds::node::Taint) {
    errs.check(&p.at("key"), check_label_key(&t.key));
    if let Some(value) = &t.value {
        errs.check(&p.at("value"), check_label_value(value));
    }
    if !EFFECTS.contains(&t.effect.as_str()) {
        errs.add(p.at("effect"), format!("{:?} must be one of {}", t.effect, EFFECTS.join(", ")));
    }
}

fn container(errs: &mut Errors, p: &FieldPath, c: &Container) {
    errs.check(&p.at("name"), check_dns1123_label(&c.name));
    if c.image.trim().is_empty() {
        errs.add(p.at("image"), "required: name the image to run");
    }
    errs.check(&p.at("imagePullPolicy"), one_of(&c.image_pull_policy, &["Always", "IfNotPresent", "Never"]));
    let mut port_names = BTreeSet::new();
    for (j, port) in c.ports.iter().enumerate() {
        let pp = p.at("ports").index(j);
        errs.check(&pp.at("containerPort"), check_port(port.container_port));
        if port.host_port.is_some() {
            // Refused rather than silently ignored: the agent does not publish ports on the node.
            errs.add(pp.at("hostPort"), "Skiff does not publish host ports: remove hostPort (use a NodePort Service)");
        }
        errs.check(&pp.at("protocol"), check_protocol(&port.protocol));
        if let Some(name) = &port.name {
            errs.check(&pp.at("name"), check_port_name(name));
            if !port_names.insert(name.as_str()) {
                errs.add(pp.at("name"), format!("{name:?} names another port of this container"));
            }
        }
    }
    for (j, env) in c.env.iter().enumerate() {
        let ep = p.at("env").index(j);
        if env.name.is_empty() || env.name.contains('=') {
            errs.add(ep.at("name"), format!("{:?} must be a non-empty name without '='", env.name));
        }
        if let Some(from) = &env.value_from {
            if env.value.is_some() {
                errs.add(ep.at("valueFrom"), "may not be set together with value");
            }
            let sources = usize::from(from.config_map_key_ref.is_some()) + usize::from(from.field_ref.is_some());
            if sources != 1 {
                errs.add(ep.at("valueFrom"), "set exactly one of configMapKeyRef and fieldRef");
            }
            if let Some(r) = &from.config_map_key_ref {
                errs.check(&ep.at("valueFrom.configMapKeyRef.name"), check_dns1123_subdomain(&r.name));
            }
            if let Some(r) = &from.field_ref {
                const FIELDS: [&str; 6] = [
                    "metadata.name",
                    "metadata.namespace",
                    "metadata.uid",
                    "spec.nodeName",
                    "status.podIP",
                    "status.hostIP",
                ];
                if !FIELDS.contains(&r.field_path.as_str()) {
                    errs.add(
                        ep.at("valueFrom.fieldRef.fieldPath"),
                        format!("{:?} is not supported: use one of {}", r.field_path, FIELDS.join(", ")),
                    );
                }
            }
        }
    }
    for (j, from) in c.env_from.iter().enumerate() {
        match &from.config_map_ref {
            Some(r) => errs.check(&p.at("envFrom").index(j).at("configMapRef.name"), check_dns1123_subdomain(&r.name)),
            None => errs.add(p.at("envFrom").index(j), "set configMapRef"),
        }
    }
    resources(errs, &p.at("resources"), c);
    for (field, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(probe) = probe {
            validate_probe(errs, &p.at(field), field, probe, c);
        }
    }
    if let Some(lc) = &c.lifecycle {
        for (field, handler) in [("postStart", &lc.post_start), ("preStop", &lc.pre_stop)] {
            if let Some(h) = handler {
                handler_actions(
                    errs,
                    &p.at("lifecycle").at(field),
                    h.exec.is_some(),
                    h.http_get.is_some(),
                    h.tcp_socket.is_some(),
                );
                hook_ports(errs, &p.at("lifecycle").at(field), h, c);
            }
        }
    }
}

fn resources(errs: &mut Errors, p: &FieldPath, c: &Container) {
    const KNOWN: [&str; 3] = ["cpu", "memory", "ephemeral-storage"];
    for (field, map) in [("limits", &c.resources.limits), ("requests", &c.resources.requests)] {
        for (name, q) in map {
            let qp = p.at(field).key(name);
            // Extended resources (`example.com/gpu`) and huge pages are accepted as Kubernetes does;
            // the scheduler only counts cpu and memory.
            let extended = name.contains('/') || name.starts_with("hugepages-");
            if !KNOWN.contains(&name.as_str()) && !extended {
                errs.add(
                    qp.clone(),
                    format!("{name:?} is not a resource name: use cpu, memory, ephemeral-storage, hugepages-<size> or a domain-prefixed extended resource"),
                );
            }
            if q.millis() < 0 {
                errs.add(qp, format!("{q} must not be negative"));
            }
        }
    }
    for (name, request) in &c.resources.requests {
        if let Some(limit) = c.resources.limits.get(name) {
            if request.millis() > limit.millis() {
                errs.add(p.at("requests").key(name), format!("{request} must be at most the limit {limit}"));
            }
        }
    }
}

fn handler_actions(errs: &mut Errors, p: &FieldPath, exec: bool, http: bool, tcp: bool) {
    let n = usize::from(exec) + usize::from(http) + usize::from(tcp);
    if n != 1 {
        errs.add(p.clone(), format!("set exactly one of exec, httpGet and tcpSocket (found {n})"));
    }
}

/// A probe's port: a number in range or the name of one of the container's ports.
fn probe_port(errs: &mut Errors, p: &FieldPath, port: &IntOrString, c: &Container) {
    match port {
        IntOrString::Int(n) => errs.check(p, check_port(*n)),
        IntOrString::String(name) => {
            if !c.ports.iter().any(|cp| cp.name.as_deref() == Some(name)) {
                errs.add(p.clone(), format!("{name:?} is not the name of a port of container {:?}", c.name));
            }
        }
    }
}

fn hook_ports(errs: &mut Errors, p: &FieldPath, h: &LifecycleHandler, c: &Container) {
    if let Some(g) = &h.http_get {
        probe_port(errs, &p.at("httpGet.port"), &g.port, c);
        no_host(errs, &p.at("httpGet.host"), &g.host);
        if let Some(path) = &g.path {
            errs.check(&p.at("httpGet.path"), check_http_path(path));
        }
        for (i, h) in g.http_headers.iter().enumerate() {
            let hp = p.at("httpGet.httpHeaders").index(i);
            errs.check(&hp.at("name"), check_header_name(&h.name));
            errs.check(&hp.at("value"), check_header_value(&h.value));
        }
    }
    if let Some(t) = &h.tcp_socket {
        probe_port(errs, &p.at("tcpSocket.port"), &t.port, c);
        no_host(errs, &p.at("tcpSocket.host"), &t.host);
    }
    if let Some(e) = &h.exec {
        if e.command.is_empty() {
            errs.add(p.at("exec.command"), "required: the command to run");
        }
    }
}

/// Probes and hooks reach the pod's own IP: a `host` would have the member send requests wherever
/// the pod's author points them (other pods, the members' own ports), so it is refused. Kubernetes
/// itself advises setting the `Host` header instead.
fn no_host(errs: &mut Errors, p: &FieldPath, host: &Option<String>) {
    if host.as_deref().is_some_and(|h| !h.is_empty()) {
        errs.add(
            p.clone(),
            "not supported: probes and hooks reach the pod's own IP (set a Host header in httpHeaders instead)",
        );
    }
}

/// An HTTP request target: an absolute path of visible ASCII (no spaces or line breaks, which
/// would end the request line and start another request).
pub fn check_http_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must start with '/'"));
    }
    if let Some(bad) = path.chars().find(|ch| !ch.is_ascii_graphic()) {
        return Err(format!("{path:?} contains {bad:?}: only visible ASCII characters (percent-encode the others)"));
    }
    Ok(())
}

/// An HTTP header name: a token (RFC 9110 5.1).
pub fn check_header_name(name: &str) -> Result<(), String> {
    const SPECIAL: &str = "!#$%&'*+-.^_`|~";
    if name.is_empty() || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || SPECIAL.contains(ch)) {
        return Err(format!("{name:?} is not an HTTP header name (letters, digits and {SPECIAL})"));
    }
    Ok(())
}

/// An HTTP header value: visible characters, spaces and tabs, no line breaks (RFC 9110 5.5).
pub fn check_header_value(value: &str) -> Result<(), String> {
    if value.chars().any(|ch| ch.is_control() && ch != '\t') {
        return Err(format!("{value:?} contains a control character (a line break would start another header)"));
    }
    Ok(())
}

fn validate_probe(errs: &mut Errors, p: &FieldPath, field: &str, probe: &Probe, c: &Container) {
    handler_actions(errs, p, probe.exec.is_some(), probe.http_get.is_some(), probe.tcp_socket.is_some());
    let handler = LifecycleHandler {
        exec: probe.exec.clone(),
        http_get: probe.http_get.clone(),
        tcp_socket: probe.tcp_socket.clone(),
    };
    hook_ports(errs, p, &handler, c);
    if let Some(g) = &probe.http_get {
        errs.check(&p.at("httpGet.scheme"), one_of(&g.scheme, &["HTTP", "HTTPS"]));
    }
    non_negative(errs, p.at("initialDelaySeconds"), probe.initial_delay_seconds);
    for (name, value) in [
        ("timeoutSeconds", probe.timeout_seconds),
        ("periodSeconds", probe.period_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        if let Some(v) = value {
            if v < 1 {
                errs.add(p.at(name), format!("{v} must be >= 1"));
            }
        }
    }
    if field != "readinessProbe" {
        if let Some(v) = probe.success_threshold {
            if v != 1 {
                errs.add(p.at("successThreshold"), format!("{v} must be 1 for a {field}"));
            }
        }
    }
}

/// Kubernetes' defaults of a pod spec (also a deployment's template).
pub(crate) fn default_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".to_string());
    spec.termination_grace_period_seconds.get_or_insert(crate::defaults::DEFAULT_GRACE_PERIOD_SECONDS);
    for c in &mut spec.containers {
        c.image_pull_policy.get_or_insert_with(|| crate::defaults::default_pull_policy(&c.image).to_string());
        for port in &mut c.ports {
            port.protocol.get_or_insert_with(|| "TCP".to_string());
        }
        for probe in [&mut c.liveness_probe, &mut c.readiness_probe, &mut c.startup_probe].into_iter().flatten() {
            probe_defaults(probe);
        }
    }
}

fn probe_defaults(p: &mut Probe) {
    p.timeout_seconds.get_or_insert(1);
    p.period_seconds.get_or_insert(10);
    p.success_threshold.get_or_insert(1);
    p.failure_threshold.get_or_insert(3);
    if let Some(g) = &mut p.http_get {
        g.path.get_or_insert_with(|| "/".to_string());
        g.scheme.get_or_insert_with(|| "HTTP".to_string());
    }
}

impl Resource for Pod {
    const KIND: Kind = Kind::Pod;
    const HAS_STATUS: bool = true;

    metadata_field!();

    fn same_desired_state(&self, other: &Self) -> bool {
        self.spec == other.spec
    }

    fn copy_status_from(&mut self, other: &Self) {
        self.status = other.status.clone();
    }

    fn apply_defaults(&mut self) {
        default_spec(&mut self.spec);
    }

    fn validate(&self, errs: &mut Errors, root: &FieldPath) {
        validate_spec(errs, &root.at("spec"), &self.spec);
    }
}
