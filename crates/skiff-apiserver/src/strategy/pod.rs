//! A pod's update and delete rules: its binding is kept, its spec is immutable but for its
//! containers' images, and a pod bound to a node is deleted gracefully.

use skiff_api::api::DeleteOptions;
use skiff_api::defaults::DEFAULT_GRACE_PERIOD_SECONDS;
use skiff_api::kinds::pod::PodSpec;
use skiff_api::kinds::Pod;
use skiff_api::path::FieldPath;
use skiff_api::validate::FieldError;
use skiff_api::{ApiError, Object};

fn describe(pod: &Pod) -> String {
    Object::Pod(pod.clone()).describe()
}

/// A user's apply keeps the pod's binding; it may not move the pod to another node.
pub fn keep_binding(current: &Pod, next: &mut Pod) -> Result<(), ApiError> {
    match (&current.spec.node_name, &next.spec.node_name) {
        (Some(bound), None) => next.spec.node_name = Some(bound.clone()),
        (Some(bound), Some(asked)) if bound != asked => {
            return Err(ApiError::bad_request(format!(
                "{}: spec.nodeName is {bound:?} and cannot change once bound (asked {asked:?}); delete and recreate the pod",
                describe(current)
            )))
        }
        _ => {}
    }
    Ok(())
}

/// Kubernetes lets an update change a pod's containers' images and nothing else of its spec: a
/// running pod is replaced, not edited.
pub fn immutable(current: &Pod, next: &Pod) -> Result<(), ApiError> {
    let without_images = |spec: &PodSpec| {
        let mut spec = spec.clone();
        // The pull policy's default follows the image's tag, so it may move with the image.
        spec.containers.iter_mut().for_each(|c| {
            c.image.clear();
            c.image_pull_policy = None;
        });
        spec.node_name = None;
        spec
    };
    if without_images(&current.spec) == without_images(&next.spec) {
        return Ok(());
    }
    Err(ApiError::invalid(
        &Object::Pod(current.clone()),
        &[FieldError {
            path: FieldPath::root().at("spec"),
            message: "a pod's spec cannot change after it is created, except spec.containers[*].image: delete and recreate the pod (or let a Deployment roll it)".into(),
        }],
    ))
}

/// The grace period a deletion gives a pod, or `None` to remove it at once: an unbound pod has
/// nothing to stop, `force` and a grace period of 0 skip the wait.
pub fn grace_period(pod: &Pod, options: &DeleteOptions) -> Option<i64> {
    if pod.spec.node_name.is_none() || options.force {
        return None;
    }
    let grace = options
        .grace_period_seconds
        .or(pod.spec.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS)
        .max(0);
    (grace > 0).then_some(grace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::kinds::pod::Container;

    fn pod(node: Option<&str>, image: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = "web".into();
        p.spec.node_name = node.map(str::to_string);
        p.spec.containers.push(Container { name: "app".into(), image: image.into(), ..Default::default() });
        p
    }

    #[test]
    fn an_apply_without_a_node_keeps_the_binding_and_one_with_another_node_is_refused() {
        let bound = pod(Some("node1"), "web:1");
        let mut next = pod(None, "web:1");
        keep_binding(&bound, &mut next).expect("kept");
        assert_eq!(next.spec.node_name.as_deref(), Some("node1"));
        let mut moved = pod(Some("node2"), "web:1");
        let e = keep_binding(&bound, &mut moved).expect_err("refused");
        assert!(e.message.contains("cannot change once bound (asked \"node2\")"), "{e}");
    }

    #[test]
    fn only_images_of_a_pod_spec_may_change() {
        immutable(&pod(None, "web:1"), &pod(None, "web:2")).expect("an image may change");
        let mut more = pod(None, "web:1");
        more.spec.restart_policy = Some("Never".into());
        let e = immutable(&pod(None, "web:1"), &more).expect_err("refused");
        assert_eq!(e.causes[0].field, "spec");
    }

    #[test]
    fn grace_periods_follow_the_options_then_the_pod_then_the_default() {
        let unbound = pod(None, "web:1");
        assert_eq!(grace_period(&unbound, &DeleteOptions::default()), None);
        let mut bound = pod(Some("node1"), "web:1");
        assert_eq!(grace_period(&bound, &DeleteOptions::default()), Some(30));
        bound.spec.termination_grace_period_seconds = Some(5);
        assert_eq!(grace_period(&bound, &DeleteOptions::default()), Some(5));
        let asked = DeleteOptions { grace_period_seconds: Some(1), ..Default::default() };
        assert_eq!(grace_period(&bound, &asked), Some(1));
        let now = DeleteOptions { grace_period_seconds: Some(0), ..Default::default() };
        assert_eq!(grace_period(&bound, &now), None);
        let forced = DeleteOptions { force: true, ..Default::default() };
        assert_eq!(grace_period(&bound, &forced), None);
    }
}
