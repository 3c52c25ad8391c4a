//! Events about the controllers' decisions (`Scheduled`, `FailedScheduling`, `SuccessfulCreate`,
//! `ScalingReplicaSet`...). An event's name is derived from what it says about which object, so a
//! repeated event finds its earlier self and counts up (`count`, `lastTimestamp`) instead of
//! piling up copies, as Kubernetes' event correlator does.

use skiff_api::api::Filter;
use skiff_api::api::{Consistency, ResourceApi};
use skiff_api::kinds::event::{EventSource, ObjectReference};
use skiff_api::kinds::Event;
use skiff_api::meta::Time;
use skiff_api::{ApiError, Kind, Object, Reason};

use crate::runner::{Action, Controller, Reconciled, State};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// The event `reason` about `involved`, at `now`, reported by `component`. Pure.
pub fn about(involved: &Object, type_: EventType, reason: &str, message: &str, now: Time) -> Event {
    let m = involved.meta();
    let kind = involved.kind();
    let mut event = Event::default();
    let parts = [kind.name(), &m.namespace, &m.name, &m.uid, type_.as_str(), reason, message];
    let id = crate::names::fnv1a(&parts.map(str::as_bytes));
    event.metadata.name = format!("{}.{id:016x}", m.name);
    event.metadata.namespace = if kind.namespaced() { m.namespace.clone() } else { "default".into() };
    event.involved_object = ObjectReference {
        api_version: Some(kind.info().api_version.into()),
        kind: Some(kind.name().into()),
        namespace: kind.namespaced().then(|| m.namespace.clone()),
        name: Some(m.name.clone()),
        uid: Some(m.uid.clone()),
        ..Default::default()
    };
    event.reason = Some(reason.into());
    event.message = Some(message.into());
    event.type_ = Some(type_.as_str().into());
    event.count = Some(1);
    event.first_timestamp = Some(now);
    event.last_timestamp = Some(now);
    event.source = Some(EventSource { component: Some("skiff-controller".into()), host: None });
    event.reporting_component = Some("skiff-controller".into());
    event
}

/// Records `event`: creates it, or counts it on the event that already says the same.
pub async fn record(api: &dyn ResourceApi, event: &Event) -> Result<(), ApiError> {
    match api.create(Object::Event(event.clone())).await {
        Ok(_) => Ok(()),
        Err(e) if e.is(Reason::AlreadyExists) => {
            let m = &event.metadata;
            let Object::Event(mut earlier) =
                api.get(skiff_api::Kind::Event, &m.namespace, &m.name, Consistency::Stale).await?
            else {
                return Ok(());
            };
            earlier.count = Some(earlier.count.unwrap_or(1) + 1);
            earlier.last_timestamp = event.last_timestamp;
            api.apply(Object::Event(earlier), false).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Deletes events whose last occurrence is older than `ttl` (Kubernetes' `--event-ttl`, 1 h by
/// default there and here): events say what happened lately, and would otherwise grow the store
/// with every decision ever made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventExpiry {
    pub ttl: std::time::Duration,
}

/// How long an event lives after its last occurrence, by default.
pub const EVENT_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

impl Default for EventExpiry {
    fn default() -> Self {
        EventExpiry { ttl: EVENT_TTL }
    }
}

/// When an event last happened: its last timestamp, else its first, else its creation.
fn last_seen(event: &Event) -> Option<Time> {
    event.last_timestamp.or(event.first_timestamp).or(event.metadata.creation_timestamp)
}

impl Controller for EventExpiry {
    fn name(&self) -> &'static str {
        "event-expiry"
    }

    fn watches(&self) -> Vec<(Kind, Filter)> {
        vec![(Kind::Event, Filter::default())]
    }

    /// Expiry is not urgent: at most one look every few seconds however many events come.
    fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(5)
    }

    fn reconcile(&self, state: &State, now: Time) -> Reconciled {
        let mut out = Reconciled::default();
        for object in state.of(Kind::Event) {
            let Object::Event(event) = object.as_ref() else { continue };
            let Some(seen) = last_seen(event) else { continue };
            let age = std::time::Duration::try_from(now.0.duration_since(seen.0)).unwrap_or_default();
            match self.ttl.checked_sub(age).filter(|left| !left.is_zero()) {
                None => out.actions.push(Action::Delete(object.as_ref().clone())),
                Some(left) => out.merge(Reconciled { actions: Vec::new(), requeue_after: Some(left) }),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::kinds::Pod;
    use skiff_api::memory::MemoryApi;

    fn pod() -> Object {
        let mut p = Pod::default();
        p.metadata.name = "web-1".into();
        p.metadata.namespace = "default".into();
        p.metadata.uid = "u1".into();
        Object::Pod(p)
    }

    #[tokio::test]
    async fn a_repeated_event_counts_up_on_one_object() {
        let api = MemoryApi::new();
        let t1 = Time::from_unix(1_800_000_000).expect("time");
        let t2 = Time::from_unix(1_800_000_060).expect("time");
        let first = about(&pod(), EventType::Warning, "FailedScheduling", "0/3 nodes are available", t1);
        let again = about(&pod(), EventType::Warning, "FailedScheduling", "0/3 nodes are available", t2);
        let other = about(&pod(), EventType::Normal, "Scheduled", "Successfully assigned default/web-1 to n1", t2);
        assert_eq!(first.metadata.name, again.metadata.name, "the same event, the same name");
        assert_ne!(first.metadata.name, other.metadata.name);
        for e in [&first, &again, &other] {
            record(&api, e).await.expect("record");
        }
        let list = api.list(skiff_api::Kind::Event, &Default::default(), Consistency::Stale).await.expect("list");
        assert_eq!(list.items.len(), 2);
        let counted = list
            .items
            .iter()
            .find_map(|o| match o {
                Object::Event(e) if e.metadata.name == first.metadata.name => Some(e.clone()),
                _ => None,
            })
            .expect("the counted event");
        assert_eq!((counted.count, counted.first_timestamp, counted.last_timestamp), (Some(2), Some(t1), Some(t2)));
    }

    #[test]
    fn events_expire_an_hour_after_they_last_happened() {
        let t = |s: i64| Time::from_unix(1_800_000_000 + s).expect("time");
        let mut old = about(&pod(), EventType::Normal, "Scheduled", "long ago", t(0));
        old.last_timestamp = Some(t(100));
        let recent = about(&pod(), EventType::Normal, "Pulled", "lately", t(3000));
        let mut state = State::default();
        state.insert(Kind::Event, [Object::Event(old.clone()), Object::Event(recent)]);
        let expiry = EventExpiry::default();

        let r = expiry.reconcile(&state, t(3699));
        assert!(r.actions.is_empty(), "counted at 100 s, it lives until 3700 s");
        assert_eq!(r.requeue_after, Some(std::time::Duration::from_secs(1)));
        let r = expiry.reconcile(&state, t(3700));
        assert_eq!(r.actions, vec![Action::Delete(Object::Event(old))]);
        assert_eq!(r.requeue_after, Some(std::time::Duration::from_secs(2900)), "the recent one, at 6600 s");
    }
}
