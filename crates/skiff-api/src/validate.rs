//! Validation of objects, as the API server does it before anything is stored. Every error names
//! the field; the caller adds the file and the object.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::kinds::deployment::DeploymentSpec;
use crate::kinds::pod::{Container, LifecycleHandler, PodSpec, Probe};
use crate::kinds::service::ServiceSpec;
use crate::kinds::{Kind, Object};
use crate::meta::{IntOrString, ObjectMeta};
use crate::name::{check_dns1123_label, check_dns1123_subdomain, check_label_key, check_label_value};
use crate::path::FieldPath;

/// The largest object, serialized as JSON, that the server stores (Kubernetes' limit for etcd
/// values is 1.5 MiB; ours is the store's value limit).
pub const MAX_OBJECT_BYTES: usize = 1024 * 1024;

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: FieldPath,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

#[derive(Default)]
struct Errors(Vec<FieldError>);

impl Errors {
    fn add(&mut self, path: FieldPath, message: impl Into<String>) {
        self.0.push(FieldError { path, message: message.into() });
    }

    fn check(&mut self, path: &FieldPath, result: Result<(), String>) {
        if let Err(message) = result {
            self.add(path.clone(), message);
        }
    }
}

/// Every problem with `object`, in field order. Empty means valid.
pub fn validate(object: &Object) -> Vec<FieldError> {
    let mut errs = Errors::default();
    let root = FieldPath::root();
    meta(&mut errs, object.kind(), object.meta());
    match object {
        Object::Pod(p) => pod_spec(&mut errs, &root.at("spec"), &p.spec),
        Object::Deployment(d) => deployment_spec(&mut errs, &root.at("spec"), &d.spec),
        Object::Service(s) => service_spec(&mut errs, &root.at("spec"), &s.spec),
        Object::ConfigMap(c) => {
            for key in c.data.keys().chain(c.binary_data.keys()) {
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
        Object::Namespace(_) | Object::Node(_) | Object::Event(_) => {}
    }
    if let Some(e) = check_size(object) {
        errs.0.push(e);
    }
    errs.0
}

/// The size limit alone: for objects the server assembles (an update with the stored status).
pub fn check_size(object: &Object) -> Option<FieldError> {
    let size = json_size(object);
    (size > MAX_OBJECT_BYTES).then(|| FieldError {
        path: FieldPath::root(),
        message: format!("the object is {size} bytes, more than the limit of {MAX_OBJECT_BYTES} bytes (1 MiB)"),
    })
}

/// The length of the object's JSON, counted without building it.
fn json_size(object: &Object) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, object);
    count.0
}

fn meta(errs: &mut Errors, kind: Kind, m: &ObjectMeta) {
    let path = FieldPath::root().at("metadata");
    if m.name.is_empty() {
        if m.generate_name.is_empty() {
            errs.add(path.at("name"), "required: every object needs a name (or generateName)");
        }
    } else {
        let check = match kind {
            Kind::Namespace => check_dns1123_label(&m.name),
            Kind::Service => check_dns1035_label(&m.name),
            _ => check_dns1123_subdomain(&m.name),
        };
        errs.check(&path.at("name"), check);
    }
    if !m.namespace.is_empty() {
        // A cluster-scoped kind's namespace is cleared by the defaults, as Kubernetes does.
        if kind.namespaced() {
            errs.check(&path.at("namespace"), check_dns1123_label(&m.namespace));
        }
    }
    labels(errs, &path.at("labels"), &m.labels);
    for key in m.annotations.keys() {
        errs.check(&path.at("annotations").key(key), check_label_key(key));
    }
    for (i, owner) in m.owner_references.iter().enumerate() {
        let p = path.at("ownerReferences").index(i);
        for (field, value) in
            [("apiVersion", &owner.api_version), ("kind", &owner.kind), ("name", &owner.name), ("uid", &owner.uid)]
        {
            if value.is_empty() {
                errs.add(p.at(field), "required");
            }
        }
    }
}

fn labels(errs: &mut Errors, path: &FieldPath, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        errs.check(&path.key(k), check_label_key(k));
        errs.check(&path.key(k), check_label_value(v));
    }
}

/// Service names must also start with a letter (they become DNS names).
fn check_dns1035_label(value: &str) -> Result<(), String> {
    check_dns1123_label(value)?;
    if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!("{value:?} must start with a lowercase letter"));
    }
    Ok(())
}

/// A port name (IANA service name): 1-15 lowercase letters, digits and '-', with a letter, no
/// leading, trailing or doubled '-'.
fn check_port_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} must be 1-15 lowercase letters, digits and '-', with at least one letter"))
    }
}

fn check_port(port: i32) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("{port} must be between 1 and 65535"))
    }
}

fn check_protocol(protocol: &Option<String>) -> Result<(), String> {
    match protocol.as_deref() {
        None | Some("TCP" | "UDP" | "SCTP") => Ok(()),
        Some(other) => Err(format!("{other:?} must be TCP, UDP or SCTP")),
    }
}

fn one_of(value: &Option<String>, allowed: &[&str]) -> Result<(), String> {
    match value.as_deref() {
        None => Ok(()),
        Some(v) if allowed.contains(&v) => Ok(()),
        Some(v) => Err(format!("{v:?} must be one of {}", allowed.join(", "))),
    }
}

fn non_negative<T: PartialOrd + Default + fmt::Display>(errs: &mut Errors, path: FieldPath, value: Option<T>) {
    if let Some(v) = value {
        if v < T::default() {
            errs.add(path, format!("{v} must be >= 0"));
        }
    }
}

fn pod_spec(errs: &mut Errors, path: &FieldPath, spec: &PodSpec) {
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
            self::probe(errs, &p.at(field), field, probe, c);
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
    }
    if let Some(t) = &h.tcp_socket {
        probe_port(errs, &p.at("tcpSocket.port"), &t.port, c);
    }
    if let Some(e) = &h.exec {
        if e.command.is_empty() {
            errs.add(p.at("exec.command"), "required: the command to run");
        }
    }
}

fn probe(errs: &mut Errors, p: &FieldPath, field: &str, probe: &Probe, c: &Container) {
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

fn deployment_spec(errs: &mut Errors, path: &FieldPath, spec: &DeploymentSpec) {
    non_negative(errs, path.at("replicas"), spec.replicas);
    let selector_path = path.at("selector");
    if spec.selector.match_labels.is_empty() && spec.selector.match_expressions.is_empty() {
        errs.add(selector_path.clone(), "required: a selector with matchLabels or matchExpressions");
    } else {
        match spec.selector.to_selector(&selector_path.to_string()) {
            Ok(selector) => {
                if !selector.matches(&spec.template.metadata.labels) {
                    errs.add(
                        path.at("template.metadata.labels"),
                        format!("the labels do not match the selector {selector}: the deployment would not own its own pods"),
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
    labels(errs, &path.at("template.metadata.labels"), &spec.template.metadata.labels);
    pod_spec(errs, &path.at("template.spec"), &spec.template.spec);
    if let Some(policy) = &spec.template.spec.restart_policy {
        if policy != "Always" {
            errs.add(
                path.at("template.spec.restartPolicy"),
                format!("{policy:?}: a deployment's pods must use Always"),
            );
        }
    }
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

fn service_spec(errs: &mut Errors, path: &FieldPath, spec: &ServiceSpec) {
    errs.check(&path.at("type"), one_of(&spec.type_, &["ClusterIP", "NodePort"]));
    labels(errs, &path.at("selector"), &spec.selector);
    if spec.ports.is_empty() {
        errs.add(path.at("ports"), "required: a service needs at least one port");
    }
    let mut names = BTreeSet::new();
    let mut node_ports = BTreeSet::new();
    for (i, port) in spec.ports.iter().enumerate() {
        let pp = path.at("ports").index(i);
        errs.check(&pp.at("port"), check_port(port.port));
        errs.check(&pp.at("protocol"), check_protocol(&port.protocol));
        match &port.name {
            Some(name) => {
                errs.check(&pp.at("name"), check_dns1123_label(name));
                if !names.insert(name.as_str()) {
                    errs.add(pp.at("name"), format!("{name:?} names another port of this service"));
                }
            }
            None if spec.ports.len() > 1 => errs.add(pp.at("name"), "required when a service has more than one port"),
            None => {}
        }
        match &port.target_port {
            Some(IntOrString::Int(n)) => errs.check(&pp.at("targetPort"), check_port(*n)),
            Some(IntOrString::String(name)) => errs.check(&pp.at("targetPort"), check_port_name(name)),
            None => {}
        }
        if let Some(np) = port.node_port {
            if spec.type_.as_deref() != Some("NodePort") {
                errs.add(pp.at("nodePort"), "may only be set when type is NodePort");
            } else if !(30000..=32767).contains(&np) {
                errs.add(pp.at("nodePort"), format!("{np} must be between 30000 and 32767"));
            } else if !node_ports.insert(np) {
                errs.add(pp.at("nodePort"), format!("{np} is used by another port of this service"));
            }
        }
    }
}
