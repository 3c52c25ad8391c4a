//! Server-side defaults, as Kubernetes' API server fills them in on create and update: the
//! namespace every kind gets, then each kind's own (in its `kinds/<kind>.rs`).

use crate::kinds::Object;

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
    object.apply_kind_defaults();
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
