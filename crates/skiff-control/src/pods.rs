//! What the controllers read from a pod: its controller, whether it is active, ready, available,
//! as Kubernetes' controller utilities define them.

use std::sync::Arc;

use skiff_api::kinds::Pod;
use skiff_api::meta::Time;
use skiff_api::Object;

/// The uid of the object that controls `pod` (its controller owner reference).
pub fn controller_uid(pod: &Pod) -> Option<&str> {
    pod.metadata.owner_references.iter().find(|r| r.controller == Some(true)).map(|r| r.uid.as_str())
}

pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

/// Finished: it will never run again.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Counts toward its set's replicas: not finished and not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    !is_terminal(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// Since when the pod has been Ready (`None`: it is not).
pub fn ready_since(pod: &Pod) -> Option<Option<Time>> {
    let ready = pod.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(ready.last_transition_time)
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now` (a Ready pod without a transition time counts).
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Time) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => true,
        Some(Some(since)) => now.unix_seconds() - since.unix_seconds() >= i64::from(min_ready_seconds),
    }
}

/// When a Ready pod that is not yet available becomes so (for a requeue).
pub fn available_in(pod: &Pod, min_ready_seconds: i32, now: Time) -> Option<std::time::Duration> {
    let since = ready_since(pod)??;
    let left = since.unix_seconds() + i64::from(min_ready_seconds) - now.unix_seconds();
    (left > 0).then(|| std::time::Duration::from_secs(left as u64))
}

pub fn restarts(pod: &Pod) -> i32 {
    pod.status.as_ref().map(|s| s.container_statuses.iter().map(|c| c.restart_count).sum()).unwrap_or(0)
}

/// The pods among `objects`.
pub fn of(objects: &[Arc<Object>]) -> Vec<&Pod> {
    objects
        .iter()
        .filter_map(|o| match o.as_ref() {
            Object::Pod(p) => Some(p),
            _ => None,
        })
        .collect()
}
