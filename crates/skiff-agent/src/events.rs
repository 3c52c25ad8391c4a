//! Events the agent records about pods (`Created`, `Started`, `Killing`, `BackOff`, `Unhealthy`,
//! `Failed`...), as Kubernetes' kubelet writes them. Losing one is not an error.

use skiff_api::api::ResourceApi;
use skiff_api::kinds::event::{EventSource, ObjectReference};
use skiff_api::kinds::{Event, Pod};
use skiff_api::meta::Time;
use skiff_api::Object;

/// The event `reason` (of `type_`, `Normal` or `Warning`) about `pod`, at `now`. Pure.
pub fn about(pod: &Pod, type_: &str, reason: &str, message: &str, now: jiff::Timestamp) -> Event {
    let mut event = Event::default();
    event.metadata.name = format!("{}.{:x}", pod.metadata.name, now.as_nanosecond());
    event.metadata.namespace = pod.metadata.namespace.clone();
    event.involved_object = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: Some(pod.metadata.namespace.clone()),
        name: Some(pod.metadata.name.clone()),
        uid: Some(pod.metadata.uid.clone()),
        ..Default::default()
    };
    event.reason = Some(reason.into());
    event.message = Some(message.into());
    event.type_ = Some(type_.into());
    event.count = Some(1);
    event.first_timestamp = Some(Time(now));
    event.last_timestamp = Some(Time(now));
    event.source = Some(EventSource { component: Some("skiff-agent".into()), host: pod.spec.node_name.clone() });
    event
}

/// Records an event about `pod` through `api`.
pub async fn record(api: &dyn ResourceApi, pod: &Pod, type_: &str, reason: &str, message: &str) {
    let event = about(pod, type_, reason, message, jiff::Timestamp::now());
    if let Err(e) = api.create(Object::Event(event)).await {
        tracing::debug!(pod = %pod.metadata.name, %reason, error = %e, "recording an event");
    }
}
