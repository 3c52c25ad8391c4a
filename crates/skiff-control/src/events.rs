//! Events about the controllers' decisions (`Scheduled`, `FailedScheduling`, `SuccessfulCreate`,
//! `ScalingReplicaSet`...). An event's name is derived from what it says about which object, so a
//! repeated event finds its earlier self and counts up (`count`, `lastTimestamp`) instead of
//! piling up copies, as Kubernetes' event correlator does. Past ten different messages of one
//! reason about one object (a ReplicaSet's `Created pod: ...`), later ones are combined into one
//! event that counts them ([`Correlator`]).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

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
    event.metadata.name =
        event_name(&m.name, &[kind.name(), &m.namespace, &m.name, &m.uid, type_.as_str(), reason, message]);
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

/// An event's name: the involved object's name and a hash of what identifies the event.
fn event_name(involved: &str, parts: &[&str]) -> String {
    let parts: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    format!("{involved}.{:016x}", crate::names::fnv1a(&parts))
}

/// How many different messages of one reason about one object are recorded as events of their
/// own within [`SIMILAR_WINDOW`]; later ones are combined (Kubernetes' `EventAggregator`: 10 in
/// 10 minutes).
pub const SIMILAR_EVENTS: usize = 10;
pub const SIMILAR_WINDOW: Duration = Duration::from_secs(600);
/// The prefix of a combined event's message, as Kubernetes writes it.
pub const COMBINED: &str = "(combined from similar events): ";
/// How many (object, reason) pairs the correlator remembers before it forgets the quiet ones.
const SIMILAR_KEYS: usize = 4096;

/// Combines similar events, so that a ReplicaSet creating a thousand pods records about ten events
/// and one that counts the rest, instead of a thousand: a write saved per pod. It lives as long as
/// its runner's term (as Kubernetes' lives in each client's event recorder): a new leader starts
/// counting afresh.
#[derive(Debug, Default)]
pub struct Correlator {
    similar: HashMap<String, Similar>,
}

#[derive(Debug)]
struct Similar {
    messages: HashSet<String>,
    last: Time,
}

impl Correlator {
    /// The `actions` with their events correlated: an event past [`SIMILAR_EVENTS`] different
    /// messages becomes the combined event of its object and reason, and the events that are then
    /// the same (same name) become one whose count is their sum. Other actions are kept as they are.
    pub fn correlate(&mut self, actions: Vec<Action>, now: Time) -> Vec<Action> {
        if self.similar.len() > SIMILAR_KEYS {
            self.similar.retain(|_, s| age(now, s.last) < SIMILAR_WINDOW);
        }
        let mut out: Vec<Action> = Vec::with_capacity(actions.len());
        let mut merged: HashMap<(String, String), usize> = HashMap::new();
        for action in actions {
            let Action::Record(event) = action else {
                out.push(action);
                continue;
            };
            let event = self.combine(event, now);
            let key = (event.metadata.namespace.clone(), event.metadata.name.clone());
            match merged.get(&key).and_then(|&i| match &mut out[i] {
                Action::Record(earlier) => Some(earlier),
                _ => None,
            }) {
                Some(earlier) => {
                    earlier.count = Some(earlier.count.unwrap_or(1) + event.count.unwrap_or(1));
                    earlier.last_timestamp = earlier.last_timestamp.max(event.last_timestamp);
                    earlier.message = event.message;
                }
                None => {
                    merged.insert(key, out.len());
                    out.push(Action::Record(event));
                }
            }
        }
        out
    }

    /// `event`, or the combined event it counts toward.
    fn combine(&mut self, mut event: Event, now: Time) -> Event {
        let o = &event.involved_object;
        let field = |f: &Option<String>| f.clone().unwrap_or_default();
        let (kind, namespace, name, uid) = (field(&o.kind), field(&o.namespace), field(&o.name), field(&o.uid));
        let (type_, reason) = (field(&event.type_), field(&event.reason));
        let key = [kind.as_str(), &namespace, &name, &uid, &type_, &reason].join("\0");
        let message = field(&event.message);
        let similar = self.similar.entry(key).or_insert_with(|| Similar { messages: HashSet::new(), last: now });
        if age(now, similar.last) >= SIMILAR_WINDOW {
            similar.messages.clear();
        }
        similar.last = now;
        if similar.messages.contains(&message) || similar.messages.len() < SIMILAR_EVENTS {
            similar.messages.insert(message);
            return event;
        }
        event.metadata.name = event_name(&name, &[&kind, &namespace, &name, &uid, &type_, &reason, COMBINED]);
        event.message = Some(format!("{COMBINED}{message}"));
        event
    }
}

/// How long before `now` `then` was (zero if after).
fn age(now: Time, then: Time) -> Duration {
    Duration::try_from(now.0.duration_since(then.0)).unwrap_or_default()
}

/// Records `event`: creates it, or adds its count to the event that already says the same.
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
            earlier.count = Some(earlier.count.unwrap_or(1) + event.count.unwrap_or(1));
            earlier.last_timestamp = event.last_timestamp;
            earlier.message = event.message.clone();
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

    fn created(rs: &Object, pod: usize, now: Time) -> Action {
        Action::Record(about(rs, EventType::Normal, "SuccessfulCreate", &format!("Created pod: web-{pod}"), now))
    }

    fn records(actions: &[Action]) -> Vec<&Event> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Record(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn past_ten_messages_similar_events_are_combined_and_counted_in_one_write() {
        let t = |s: i64| Time::from_unix(1_800_000_000 + s).expect("time");
        let rs = pod(); // any object: the events are about it
        let mut correlator = Correlator::default();
        let mut actions: Vec<Action> = (0..25).map(|i| created(&rs, i, t(0))).collect();
        actions.insert(3, Action::Delete(pod()));
        let out = correlator.correlate(actions, t(0));
        assert!(out.contains(&Action::Delete(pod())), "other actions pass through");
        let events = records(&out);
        assert_eq!(events.len(), SIMILAR_EVENTS + 1, "ten events of their own, then one combined");
        let combined = events[SIMILAR_EVENTS];
        assert_eq!(combined.count, Some(15));
        assert_eq!(combined.message.as_deref(), Some("(combined from similar events): Created pod: web-24"));
        assert!(events[..SIMILAR_EVENTS].iter().all(|e| e.count == Some(1)));

        // A repeat of a message seen is still its own event; a new one goes on counting the
        // combined event, under the same name.
        let out = correlator.correlate(vec![created(&rs, 0, t(5)), created(&rs, 99, t(5))], t(5));
        let events = records(&out);
        assert_eq!(events[0].message.as_deref(), Some("Created pod: web-0"));
        assert_eq!(events[1].metadata.name, combined.metadata.name);
        assert_eq!(events[1].count, Some(1));

        // Another reason about the same object, or the same reason about another, counts apart.
        let mut other = pod();
        other.meta_mut().uid = "u2".into();
        let out = correlator.correlate(vec![created(&other, 50, t(6))], t(6));
        assert_eq!(records(&out)[0].message.as_deref(), Some("Created pod: web-50"));

        // Ten quiet minutes later, messages are their own events again.
        let out = correlator.correlate(vec![created(&rs, 77, t(606))], t(606));
        assert_eq!(records(&out)[0].message.as_deref(), Some("Created pod: web-77"));
    }

    #[tokio::test]
    async fn a_counted_event_adds_its_count() {
        let api = MemoryApi::new();
        let t = Time::from_unix(1_800_000_000).expect("time");
        let mut e = about(&pod(), EventType::Normal, "SuccessfulCreate", "(combined from similar events): x", t);
        e.count = Some(5);
        record(&api, &e).await.expect("record");
        e.count = Some(7);
        record(&api, &e).await.expect("record");
        let Object::Event(stored) =
            api.get(Kind::Event, &e.metadata.namespace, &e.metadata.name, Consistency::Stale).await.expect("get")
        else {
            panic!("not an event")
        };
        assert_eq!(stored.count, Some(12));
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
