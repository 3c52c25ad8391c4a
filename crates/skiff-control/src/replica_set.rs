//! The ReplicaSet controller: keeps as many active pods of each ReplicaSet as it asks for, and
//! its status (replicas, ready, available) true. Pure: [`reconcile_set`] decides for one set from
//! the pods it controls.
//!
//! A pod that finished (Failed or Succeeded) or is being deleted no longer counts: a replacement is
//! created at once, and the finished pod is deleted (Kubernetes leaves it to a pod garbage
//! collector with a threshold of thousands; one owner's pods are few, so Skiff removes them now).
//! When there are too many, the pods least worth keeping go first: unscheduled, then pending, then
//! not ready, then the most restarted, then the newest.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use skiff_api::api::Filter;
use skiff_api::kinds::replica_set::ReplicaSetStatus;
use skiff_api::kinds::{Pod, ReplicaSet};
use skiff_api::meta::{OwnerReference, Time};
use skiff_api::{Kind, Object};

use crate::events::{self, EventType};
use crate::names::{fnv1a, spell};
use crate::pods;
use crate::runner::{Action, Controller, Reconciled, State};

/// A five-letter suffix derived from `seed`.
fn suffix(seed: u64) -> String {
    spell(seed, 5)
}

/// The reference a pod carries to the set that controls it.
pub fn controller_ref(rs: &ReplicaSet) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: rs.metadata.name.clone(),
        uid: rs.metadata.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A new pod of `rs` named `name`.
fn new_pod(rs: &ReplicaSet, name: String) -> Pod {
    let template = &rs.spec.template;
    let mut pod = Pod::default();
    pod.metadata.name = name;
    pod.metadata.namespace = rs.metadata.namespace.clone();
    pod.metadata.labels = template.metadata.labels.clone();
    pod.metadata.annotations = template.metadata.annotations.clone();
    pod.metadata.owner_references = vec![controller_ref(rs)];
    pod.spec = template.spec.clone();
    pod
}

/// The order in which pods are given up when there are too many: the first go first.
fn deletion_rank(pod: &Pod) -> impl Ord {
    let phase_rank = match pods::phase(pod) {
        "Pending" => 0,
        "Running" => 2,
        _ => 1,
    };
    (
        pod.spec.node_name.is_some(),
        phase_rank,
        pods::is_ready(pod),
        std::cmp::Reverse(pods::restarts(pod)),
        std::cmp::Reverse(pod.metadata.creation_timestamp),
        pod.metadata.name.clone(),
    )
}

/// What the set's status should say.
pub fn status_of(rs: &ReplicaSet, owned: &[&Pod], now: Time) -> ReplicaSetStatus {
    let active: Vec<&&Pod> = owned.iter().filter(|p| pods::is_active(p)).collect();
    let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
    let template_labels = &rs.spec.template.metadata.labels;
    let count = |f: &dyn Fn(&Pod) -> bool| active.iter().filter(|p| f(p)).count() as i32;
    ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(count(&|p| {
            template_labels.iter().all(|(k, v)| p.metadata.labels.get(k) == Some(v))
        })),
        ready_replicas: Some(count(&|p| pods::is_ready(p))),
        available_replicas: Some(count(&|p| pods::is_available(p, min_ready, now))),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default(),
    }
}

/// The actions that bring `rs` to its replica count, given the pods it controls and the names
/// taken in its namespace.
pub fn reconcile_set(rs: &ReplicaSet, owned: &[&Pod], taken: &BTreeSet<&str>, now: Time) -> Reconciled {
    let mut actions = Vec::new();
    let involved = Object::ReplicaSet(rs.clone());
    if rs.metadata.deletion_timestamp.is_some() {
        return Reconciled::default();
    }
    for finished in owned.iter().filter(|p| pods::is_terminal(p) && p.metadata.deletion_timestamp.is_none()) {
        actions.push(Action::Delete(Object::Pod((*finished).clone())));
    }
    let mut active: Vec<&Pod> = owned.iter().copied().filter(|p| pods::is_active(p)).collect();
    let want = rs.replicas().max(0) as usize;
    if active.len() < want {
        // The reconcile's time is in the seed, so that a replacement never takes the name of a
        // pod that was deleted and finalized before this reconcile saw it go (Kubernetes draws
        // the suffix at random for the same reason).
        let at = now.0.as_nanosecond().to_le_bytes();
        let mut n: u64 = 0;
        for _ in active.len()..want {
            let name = loop {
                let candidate = format!(
                    "{}-{}",
                    rs.metadata.name,
                    suffix(fnv1a(&[rs.metadata.uid.as_bytes(), &at, &n.to_le_bytes()]))
                );
                n += 1;
                if !taken.contains(candidate.as_str()) {
                    break candidate;
                }
            };
            let message = format!("Created pod: {name}");
            actions.push(Action::Create(Object::Pod(new_pod(rs, name))));
            actions.push(Action::Record(events::about(
                &involved,
                EventType::Normal,
                "SuccessfulCreate",
                &message,
                now,
            )));
        }
    } else if active.len() > want {
        active.sort_by_cached_key(|p| deletion_rank(p));
        for pod in active.iter().take(active.len() - want) {
            let message = format!("Deleted pod: {}", pod.metadata.name);
            actions.push(Action::Delete(Object::Pod((*pod).clone())));
            actions.push(Action::Record(events::about(
                &involved,
                EventType::Normal,
                "SuccessfulDelete",
                &message,
                now,
            )));
        }
    }
    let status = status_of(rs, owned, now);
    if rs.status.as_ref() != Some(&status) {
        let mut updated = rs.clone();
        updated.status = Some(status);
        actions.push(Action::UpdateStatus(Object::ReplicaSet(updated)));
    }
    // A pod that is ready but not yet available becomes so without any change to wait for.
    let min_ready = rs.spec.min_ready_seconds.unwrap_or(0);
    let requeue_after = owned.iter().filter_map(|p| pods::available_in(p, min_ready, now)).min();
    Reconciled { actions, requeue_after }
}

pub struct ReplicaSetController;

impl Controller for ReplicaSetController {
    fn name(&self) -> &'static str {
        "replicaset"
    }

    fn watches(&self) -> Vec<(Kind, Filter)> {
        vec![(Kind::ReplicaSet, Filter::default()), (Kind::Pod, Filter::default())]
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(20)
    }

    fn reconcile(&self, state: &State, now: Time) -> Reconciled {
        let all_pods = pods::of(state.of(Kind::Pod));
        let mut by_owner: HashMap<&str, Vec<&Pod>> = HashMap::new();
        let mut taken: HashMap<&str, BTreeSet<&str>> = HashMap::new();
        for pod in &all_pods {
            taken.entry(pod.metadata.namespace.as_str()).or_default().insert(pod.metadata.name.as_str());
            if let Some(uid) = pods::controller_uid(pod) {
                by_owner.entry(uid).or_default().push(pod);
            }
        }
        let none = BTreeSet::new();
        let mut out = Reconciled::default();
        for object in state.of(Kind::ReplicaSet) {
            let Object::ReplicaSet(rs) = object.as_ref() else { continue };
            let owned = by_owner.get(rs.metadata.uid.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            let taken = taken.get(rs.metadata.namespace.as_str()).unwrap_or(&none);
            let decided = reconcile_set(rs, owned, taken, now);
            out.merge(decided);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::kinds::pod::{PodCondition, PodStatus};

    fn now() -> Time {
        Time::from_unix(1_800_000_000).expect("time")
    }

    fn rs(replicas: i32) -> ReplicaSet {
        let mut rs = ReplicaSet::default();
        rs.metadata.name = "web-5d8f".into();
        rs.metadata.namespace = "default".into();
        rs.metadata.uid = "rs-uid".into();
        rs.metadata.generation = Some(1);
        rs.spec.replicas = Some(replicas);
        rs.spec.template.metadata.labels.insert("app".into(), "web".into());
        rs
    }

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created: i64) -> Pod {
        let mut p = new_pod(&rs(1), name.into());
        p.metadata.uid = format!("uid-{name}");
        p.metadata.creation_timestamp = Time::from_unix(created);
        p.spec.node_name = node.map(String::from);
        let mut status = PodStatus { phase: Some(phase.into()), ..Default::default() };
        if ready {
            status.conditions.push(PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Time::from_unix(created + 1),
                ..Default::default()
            });
        }
        p.status = Some(status);
        p
    }

    fn creates(r: &Reconciled) -> Vec<String> {
        r.actions
            .iter()
            .filter_map(|a| match a {
                Action::Create(o) => Some(o.meta().name.clone()),
                _ => None,
            })
            .collect()
    }

    fn deletes(r: &Reconciled) -> Vec<String> {
        r.actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete(o) => Some(o.meta().name.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_replacement_made_later_does_not_reuse_the_name_of_a_pod_already_gone() {
        let first = creates(&reconcile_set(&rs(1), &[], &BTreeSet::new(), now()));
        let later = Time::from_unix(now().unix_seconds() + 1).expect("time");
        let second = creates(&reconcile_set(&rs(1), &[], &BTreeSet::new(), later));
        assert_eq!((first.len(), second.len()), (1, 1));
        assert_ne!(first, second, "the finalized pod's name is not handed out again");
    }

    #[test]
    fn too_few_pods_are_created_from_the_template_with_free_names_and_an_owner() {
        let existing = pod("web-5d8f-aaaaa", Some("n1"), "Running", true, 100);
        let at = now().0.as_nanosecond().to_le_bytes();
        let first = format!("web-5d8f-{}", suffix(fnv1a(&[b"rs-uid", &at, &0u64.to_le_bytes()])));
        let taken: BTreeSet<&str> = ["web-5d8f-aaaaa", first.as_str()].into_iter().collect();
        let r = reconcile_set(&rs(3), &[&existing], &taken, now());
        let made = creates(&r);
        assert_eq!(made.len(), 2);
        assert!(!made.contains(&first), "a taken name is skipped");
        let Some(Action::Create(Object::Pod(p))) = r.actions.iter().find(|a| matches!(a, Action::Create(_))) else {
            panic!("a create")
        };
        assert_eq!(p.metadata.labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(p.metadata.owner_references, vec![controller_ref(&rs(3))]);
        let events: Vec<_> = r
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Record(e) if e.reason.as_deref() == Some("SuccessfulCreate")))
            .collect();
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn scale_down_gives_up_unscheduled_then_pending_then_unready_then_newest_pods() {
        let pods = [
            pod("ready-old", Some("n1"), "Running", true, 100),
            pod("ready-new", Some("n1"), "Running", true, 200),
            pod("unready", Some("n1"), "Running", false, 50),
            pod("pending", Some("n2"), "Pending", false, 10),
            pod("unscheduled", None, "Pending", false, 5),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let order = |keep: i32| deletes(&reconcile_set(&rs(keep), &refs, &BTreeSet::new(), now()));
        assert_eq!(order(4), ["unscheduled"]);
        assert_eq!(order(2), ["unscheduled", "pending", "unready"]);
        assert_eq!(order(1), ["unscheduled", "pending", "unready", "ready-new"]);
        assert_eq!(order(0).len(), 5);
    }

    #[test]
    fn finished_and_deleting_pods_do_not_count_and_finished_ones_are_removed() {
        let failed = pod("failed", Some("n1"), "Failed", false, 100);
        let mut leaving = pod("leaving", Some("n1"), "Running", true, 100);
        leaving.metadata.deletion_timestamp = Some(now());
        let running = pod("running", Some("n1"), "Running", true, 100);
        let r = reconcile_set(&rs(2), &[&failed, &leaving, &running], &BTreeSet::new(), now());
        assert_eq!(creates(&r).len(), 1, "one replacement: only `running` counts");
        assert_eq!(deletes(&r), ["failed"]);
        let status = status_of(&rs(2), &[&failed, &leaving, &running], now());
        assert_eq!((status.replicas, status.ready_replicas, status.available_replicas), (1, Some(1), Some(1)));
    }

    #[test]
    fn availability_waits_for_min_ready_seconds_and_asks_to_look_again_then() {
        let mut set = rs(1);
        set.spec.min_ready_seconds = Some(10);
        let fresh = pod("fresh", Some("n1"), "Running", true, now().unix_seconds() - 4);
        let r = reconcile_set(&set, &[&fresh], &BTreeSet::new(), now());
        let Some(Action::UpdateStatus(Object::ReplicaSet(updated))) = r.actions.last() else { panic!("a status") };
        let status = updated.status.clone().expect("status");
        assert_eq!((status.ready_replicas, status.available_replicas), (Some(1), Some(0)));
        assert_eq!(r.requeue_after, Some(Duration::from_secs(7)), "ready at -3 s, available at +7 s");
    }

    #[test]
    fn a_set_in_its_desired_state_does_nothing() {
        let running = pod("running", Some("n1"), "Running", true, 100);
        let mut set = rs(1);
        set.status = Some(status_of(&set, &[&running], now()));
        let r = reconcile_set(&set, &[&running], &BTreeSet::new(), now());
        assert!(r.actions.is_empty(), "{:?}", r.actions);
    }
}
