//! Binding a pod to a node: `spec.nodeName` is set once, with the `PodScheduled` condition. Pure.

use skiff_api::kinds::pod::PodCondition;
use skiff_api::kinds::Pod;
use skiff_api::meta::{Time, CONDITION_TRUE};
use skiff_api::ApiError;

/// Checks a node name before anything is read.
pub fn check_node_name(node: &str) -> Result<(), ApiError> {
    skiff_api::name::check_dns1123_subdomain(node).map_err(|e| ApiError::bad_request(format!("node name: {e}")))
}

/// Binds `pod` to `node` at `now`: only an unbound pod that is not being deleted.
pub fn bind(pod: &mut Pod, node: &str, now: Time) -> Result<(), ApiError> {
    let name = &pod.metadata.name;
    if let Some(bound) = &pod.spec.node_name {
        return Err(ApiError::conflict(format!(
            "pod {name:?} is already bound to node {bound:?}: a pod is bound once"
        )));
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Err(ApiError::conflict(format!("pod {name:?} is being deleted: it cannot be bound")));
    }
    pod.spec.node_name = Some(node.to_string());
    let status = pod.status.get_or_insert_with(Default::default);
    status.conditions.retain(|c| c.type_ != "PodScheduled");
    status.conditions.push(PodCondition {
        type_: "PodScheduled".into(),
        status: CONDITION_TRUE.into(),
        last_transition_time: Some(now),
        ..Default::default()
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_is_bound_once_with_the_scheduled_condition() {
        let now = Time::from_unix(1_800_000_000).expect("time");
        let mut pod = Pod::default();
        pod.metadata.name = "web".into();
        bind(&mut pod, "node2", now).expect("bound");
        assert_eq!(pod.spec.node_name.as_deref(), Some("node2"));
        let conditions = &pod.status.as_ref().expect("status").conditions;
        assert_eq!(conditions.len(), 1);
        assert_eq!((conditions[0].type_.as_str(), conditions[0].status.as_str()), ("PodScheduled", "True"));
        assert_eq!(conditions[0].last_transition_time, Some(now));
        let e = bind(&mut pod, "node3", now).expect_err("only once");
        assert!(e.message.contains("already bound to node \"node2\""), "{e}");
    }

    #[test]
    fn a_pod_being_deleted_is_not_bound_and_node_names_are_checked() {
        let now = Time::from_unix(1_800_000_000).expect("time");
        let mut pod = Pod::default();
        pod.metadata.name = "web".into();
        pod.metadata.deletion_timestamp = Some(now);
        assert!(bind(&mut pod, "node1", now).expect_err("refused").message.contains("being deleted"));
        assert!(check_node_name("Node_1").is_err());
        assert!(check_node_name("node-1").is_ok());
    }
}
