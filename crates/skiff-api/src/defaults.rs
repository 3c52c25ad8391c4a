//! Server-side defaults, as Kubernetes' API server fills them in on create and update.

use crate::kinds::deployment::{DeploymentStrategy, RollingUpdateDeployment};
use crate::kinds::namespace::NamespaceStatus;
use crate::kinds::pod::{PodSpec, Probe};
use crate::kinds::Object;
use crate::meta::IntOrString;

/// The namespace every namespaced object without one goes to; it always exists.
pub const DEFAULT_NAMESPACE: &str = "default";
pub const DEFAULT_GRACE_PERIOD_SECONDS: i64 = 30;

/// Fills in every default of `object`.
pub fn apply_defaults(object: &mut Object) {
    if object.kind().namespaced() && object.meta().namespace.is_empty() {
        object.meta_mut().namespace = DEFAULT_NAMESPACE.to_string();
    } else if !object.kind().namespaced() {
        object.meta_mut().namespace.clear();
    }
    match object {
        Object::Pod(p) => pod_spec(&mut p.spec),
        Object::Deployment(d) => {
            let spec = &mut d.spec;
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
            pod_spec(&mut spec.template.spec);
        }
        Object::Service(s) => {
            s.spec.type_.get_or_insert_with(|| "ClusterIP".to_string());
            for port in &mut s.spec.ports {
                port.protocol.get_or_insert_with(|| "TCP".to_string());
                if port.target_port.is_none() {
                    port.target_port = Some(IntOrString::Int(port.port));
                }
            }
        }
        Object::Namespace(n) => {
            n.status.get_or_insert_with(NamespaceStatus::default).phase.get_or_insert_with(|| "Active".to_string());
        }
        Object::Node(_) | Object::ConfigMap(_) | Object::Event(_) => {}
    }
}

fn pod_spec(spec: &mut PodSpec) {
    spec.restart_policy.get_or_insert_with(|| "Always".to_string());
    spec.termination_grace_period_seconds.get_or_insert(DEFAULT_GRACE_PERIOD_SECONDS);
    for c in &mut spec.containers {
        c.image_pull_policy.get_or_insert_with(|| default_pull_policy(&c.image).to_string());
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

/// `Always` for `:latest` and untagged images, `IfNotPresent` otherwise (a digest counts as a tag).
pub fn default_pull_policy(image: &str) -> &'static str {
    if image.contains('@') {
        return "IfNotPresent";
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults_follow_the_tag() {
        assert_eq!(default_pull_policy("nginx"), "Always");
        assert_eq!(default_pull_policy("nginx:latest"), "Always");
        assert_eq!(default_pull_policy("nginx:1.14.2"), "IfNotPresent");
        assert_eq!(default_pull_policy("localhost:5000/nginx"), "Always");
        assert_eq!(default_pull_policy("registry.k8s.io/goproxy:0.1"), "IfNotPresent");
        assert_eq!(default_pull_policy("busybox@sha256:abc"), "IfNotPresent");
    }
}
