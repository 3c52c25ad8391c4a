//! The scheduler: places every pod that has no node. Pure: [`schedule`] takes the nodes and the
//! pods and returns where each pending pod goes, or why it fits nowhere; [`Scheduler`] is the
//! controller around it.
//!
//! A node is feasible for a pod when it is Ready, not cordoned, has no `NoSchedule`/`NoExecute`
//! taint the pod does not tolerate, matches the pod's `nodeSelector`, and has room for the pod's
//! CPU and memory requests (and one more pod) in its allocatable capacity minus what the pods
//! already bound there request. Among feasible nodes the pod goes where its owner has the fewest
//! pods (spread), then where the least is allocated, then by name. A batch is decided in one pass:
//! each placement counts for the pods after it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use skiff_api::api::Filter;
use skiff_api::kinds::node::Taint;
use skiff_api::kinds::pod::Toleration;
use skiff_api::kinds::{Node, Pod};
use skiff_api::meta::Time;
use skiff_api::{Kind, Object};

use crate::events::{self, EventType};
use crate::runner::{Action, Controller, Reconciled, State};

/// What the scheduler assumes a pod without requests uses when it scores (Kubernetes' defaults:
/// without them, pods without requests would all pile onto one node).
const DEFAULT_CPU_MILLIS: i64 = 100;
const DEFAULT_MEMORY_BYTES: i64 = 200 * 1024 * 1024;
/// Pods a node takes when its allocatable does not say (Kubernetes' kubelet default).
const DEFAULT_MAX_PODS: i64 = 110;

/// Where a pending pod goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub namespace: String,
    pub name: String,
    pub node: String,
}

/// A pod that fits nowhere, with Kubernetes' explanation
/// (`0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient memory.`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    pub namespace: String,
    pub name: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    pub placements: Vec<Placement>,
    pub unschedulable: Vec<Unschedulable>,
}

/// What a pod asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Request {
    cpu_millis: i64,
    memory_bytes: i64,
}

fn request_of(pod: &Pod) -> Request {
    let mut r = Request::default();
    for c in &pod.spec.containers {
        if let Some(q) = c.resources.requests.get("cpu") {
            r.cpu_millis += i64::try_from(q.millis()).unwrap_or(i64::MAX);
        }
        if let Some(q) = c.resources.requests.get("memory") {
            r.memory_bytes += i64::try_from(q.units_ceil()).unwrap_or(i64::MAX);
        }
    }
    r
}

/// A node as the scheduler sees it during one pass.
struct Candidate<'a> {
    node: &'a Node,
    cpu_millis: i64,
    memory_bytes: i64,
    max_pods: i64,
    /// Requests of the pods bound here (with defaults for scoring apart).
    used: Request,
    used_for_score: Request,
    pods: i64,
}

impl<'a> Candidate<'a> {
    fn new(node: &'a Node) -> Self {
        let allocatable = node.status.as_ref().map(|s| &s.allocatable);
        let get = |name: &str| allocatable.and_then(|a| a.get(name));
        Candidate {
            node,
            cpu_millis: get("cpu").map(|q| i64::try_from(q.millis()).unwrap_or(i64::MAX)).unwrap_or(i64::MAX),
            memory_bytes: get("memory").map(|q| i64::try_from(q.units_ceil()).unwrap_or(i64::MAX)).unwrap_or(i64::MAX),
            max_pods: get("pods")
                .map(|q| i64::try_from(q.units_ceil()).unwrap_or(i64::MAX))
                .unwrap_or(DEFAULT_MAX_PODS),
            used: Request::default(),
            used_for_score: Request::default(),
            pods: 0,
        }
    }

    fn add(&mut self, request: Request) {
        self.used.cpu_millis += request.cpu_millis;
        self.used.memory_bytes += request.memory_bytes;
        let scored = for_score(request);
        self.used_for_score.cpu_millis += scored.cpu_millis;
        self.used_for_score.memory_bytes += scored.memory_bytes;
        self.pods += 1;
    }

    /// What is missing for `request`, as Kubernetes words it.
    fn lacks(&self, request: Request) -> Option<&'static str> {
        if self.pods + 1 > self.max_pods {
            Some("Too many pods")
        } else if self.used.cpu_millis.saturating_add(request.cpu_millis) > self.cpu_millis {
            Some("Insufficient cpu")
        } else if self.used.memory_bytes.saturating_add(request.memory_bytes) > self.memory_bytes {
            Some("Insufficient memory")
        } else {
            None
        }
    }

    /// The share of the node allocated once `request` is added (lower is better), in millionths.
    fn allocated_after(&self, request: Request) -> i64 {
        let scored = for_score(request);
        let share = |used: i64, add: i64, total: i64| {
            if total == i64::MAX || total <= 0 {
                0
            } else {
                (i128::from(used.saturating_add(add)) * 1_000_000 / i128::from(total)) as i64
            }
        };
        share(self.used_for_score.cpu_millis, scored.cpu_millis, self.cpu_millis)
            + share(self.used_for_score.memory_bytes, scored.memory_bytes, self.memory_bytes)
    }
}

fn for_score(r: Request) -> Request {
    Request {
        cpu_millis: if r.cpu_millis == 0 { DEFAULT_CPU_MILLIS } else { r.cpu_millis },
        memory_bytes: if r.memory_bytes == 0 { DEFAULT_MEMORY_BYTES } else { r.memory_bytes },
    }
}

/// Whether the node's Ready condition is True.
pub fn node_ready(node: &Node) -> bool {
    node.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether `toleration` tolerates `taint` (Kubernetes' rules: an empty key with `Exists`
/// tolerates everything, an empty effect every effect).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty()) {
        if effect != taint.effect {
            return false;
        }
    }
    let key = toleration.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        _ => toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
    }
}

/// The first `NoSchedule` or `NoExecute` taint of `node` that `pod` does not tolerate.
fn untolerated<'a>(node: &'a Node, pod: &Pod) -> Option<&'a Taint> {
    node.spec
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !pod.spec.tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// Why `node` can never take `pod`, whatever is bound to it (`None`: it can, room permitting).
fn excluded(node: &Node, pod: &Pod) -> Option<String> {
    if node.metadata.deletion_timestamp.is_some() {
        return Some("node(s) were being deleted".into());
    }
    if node.spec.unschedulable == Some(true) {
        return Some("node(s) were unschedulable".into());
    }
    if !node_ready(node) {
        return Some("node(s) were not ready".into());
    }
    if let Some(taint) = untolerated(node, pod) {
        let value = taint.value.as_deref().unwrap_or("");
        return Some(format!("node(s) had untolerated taint {{{}: {value}}}", taint.key));
    }
    if !pod.spec.node_selector.iter().all(|(k, v)| node.metadata.labels.get(k) == Some(v)) {
        return Some("node(s) didn't match Pod's node affinity/selector".into());
    }
    None
}

/// The uid of the pod's controller (its ReplicaSet), or its own uid: pods spread by owner.
fn owner_of(pod: &Pod) -> &str {
    pod.metadata
        .owner_references
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
        .unwrap_or(pod.metadata.uid.as_str())
}

/// Whether a pod still holds its node's resources: bound and not finished.
fn holds_resources(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.spec.node_name.is_some() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// Whether the scheduler must place `pod`.
pub fn is_pending(pod: &Pod) -> bool {
    pod.spec.node_name.is_none() && pod.metadata.deletion_timestamp.is_none()
}

/// Decides where every pending pod among `pods` goes, oldest first.
pub fn schedule(nodes: &[&Node], pods: &[&Pod]) -> Schedule {
    let mut candidates: Vec<Candidate> = nodes.iter().map(|n| Candidate::new(n)).collect();
    candidates.sort_by(|a, b| a.node.metadata.name.cmp(&b.node.metadata.name));
    let index: HashMap<&str, usize> =
        candidates.iter().enumerate().map(|(i, c)| (c.node.metadata.name.as_str(), i)).collect();
    // Pods per owner per node (dense: owners are few, nodes are many).
    let mut spread: HashMap<&str, Vec<u32>> = HashMap::new();
    for pod in pods.iter().filter(|p| holds_resources(p)) {
        let Some(&i) = pod.spec.node_name.as_deref().and_then(|n| index.get(n)) else { continue };
        candidates[i].add(request_of(pod));
        spread.entry(owner_of(pod)).or_insert_with(|| vec![0; candidates.len()])[i] += 1;
    }

    let mut pending: Vec<&Pod> = pods.iter().copied().filter(|p| is_pending(p)).collect();
    pending.sort_by(|a, b| {
        (a.metadata.creation_timestamp, &a.metadata.namespace, &a.metadata.name).cmp(&(
            b.metadata.creation_timestamp,
            &b.metadata.namespace,
            &b.metadata.name,
        ))
    });

    let mut out = Schedule::default();
    // Which nodes can ever take a pod depends on its spec only, which the pods of one owner share.
    let mut static_fit: HashMap<&str, StaticFit> = HashMap::new();
    for pod in pending {
        let owner = owner_of(pod);
        let fit = static_fit.entry(owner).or_insert_with(|| StaticFit::of(&candidates, pod));
        let request = request_of(pod);
        let counts = spread.entry(owner).or_insert_with(|| vec![0; candidates.len()]);
        let mut best: Option<(u32, i64, usize)> = None;
        for &i in &fit.nodes {
            let c = &candidates[i];
            if c.lacks(request).is_none() {
                let score = (counts[i], c.allocated_after(request), i);
                if best.is_none_or(|b| score < b) {
                    best = Some(score);
                }
            }
        }
        if let Some((_, _, i)) = best {
            candidates[i].add(request);
            counts[i] += 1;
            out.placements.push(Placement {
                namespace: pod.metadata.namespace.clone(),
                name: pod.metadata.name.clone(),
                node: candidates[i].node.metadata.name.clone(),
            });
            continue;
        }
        let mut reasons = fit.excluded.clone();
        for &i in &fit.nodes {
            if let Some(lack) = candidates[i].lacks(request) {
                *reasons.entry(lack.to_string()).or_default() += 1;
            }
        }
        out.unschedulable.push(Unschedulable {
            namespace: pod.metadata.namespace.clone(),
            name: pod.metadata.name.clone(),
            message: failed_message(candidates.len(), &reasons),
        });
    }
    out
}

/// The nodes that could take a pod if they had room, and why the others never can.
struct StaticFit {
    nodes: Vec<usize>,
    excluded: BTreeMap<String, usize>,
}

impl StaticFit {
    fn of(candidates: &[Candidate], pod: &Pod) -> Self {
        let mut fit = StaticFit { nodes: Vec::new(), excluded: BTreeMap::new() };
        for (i, c) in candidates.iter().enumerate() {
            match excluded(c.node, pod) {
                None => fit.nodes.push(i),
                Some(reason) => *fit.excluded.entry(reason).or_default() += 1,
            }
        }
        fit
    }
}

/// Kubernetes' FailedScheduling message: `0/3 nodes are available: 1 node(s) were unschedulable,
/// 2 Insufficient memory.` (each count and reason, sorted as text).
pub fn failed_message(nodes: usize, reasons: &BTreeMap<String, usize>) -> String {
    if nodes == 0 {
        return "0/0 nodes are available: no nodes registered.".into();
    }
    let mut parts: Vec<String> = reasons.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
    parts.sort();
    format!("0/{nodes} nodes are available: {}.", parts.join(", "))
}

/// The scheduler as a controller: binds pending pods, and tells why a pod fits nowhere (an event
/// and its `PodScheduled` condition) once per distinct reason.
pub struct Scheduler;

/// The `PodScheduled` condition message a pod already carries.
fn scheduled_message(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .and_then(|c| c.message.as_deref())
}

impl Controller for Scheduler {
    fn name(&self) -> &'static str {
        "scheduler"
    }

    fn watches(&self) -> Vec<(Kind, Filter)> {
        vec![(Kind::Node, Filter::default()), (Kind::Pod, Filter::default())]
    }

    fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(20)
    }

    fn reconcile(&self, state: &State, now: Time) -> Reconciled {
        let nodes: Vec<&Node> = state.of(Kind::Node).iter().filter_map(|o| as_node(o)).collect();
        let pods: Vec<&Pod> = state.of(Kind::Pod).iter().filter_map(|o| as_pod(o)).collect();
        let decided = schedule(&nodes, &pods);
        let by_name: HashMap<(&str, &str), &Pod> =
            pods.iter().map(|p| ((p.metadata.namespace.as_str(), p.metadata.name.as_str()), *p)).collect();
        let mut actions = Vec::new();
        for p in &decided.placements {
            actions.push(Action::Bind { namespace: p.namespace.clone(), name: p.name.clone(), node: p.node.clone() });
            if let Some(pod) = by_name.get(&(p.namespace.as_str(), p.name.as_str())) {
                let message = format!("Successfully assigned {}/{} to {}", p.namespace, p.name, p.node);
                actions.push(Action::Record(events::about(
                    &Object::Pod((*pod).clone()),
                    EventType::Normal,
                    "Scheduled",
                    &message,
                    now,
                )));
            }
        }
        for u in &decided.unschedulable {
            let Some(pod) = by_name.get(&(u.namespace.as_str(), u.name.as_str())) else { continue };
            if scheduled_message(pod) == Some(u.message.as_str()) {
                continue; // already told
            }
            let mut marked = (*pod).clone();
            set_unschedulable(&mut marked, &u.message, now);
            actions.push(Action::Record(events::about(
                &Object::Pod((*pod).clone()),
                EventType::Warning,
                "FailedScheduling",
                &u.message,
                now,
            )));
            actions.push(Action::UpdateStatus(Object::Pod(marked)));
        }
        Reconciled { actions, requeue_after: None }
    }
}

fn set_unschedulable(pod: &mut Pod, message: &str, now: Time) {
    let status = pod.status.get_or_insert_with(Default::default);
    status.phase.get_or_insert_with(|| "Pending".into());
    status.conditions.retain(|c| c.type_ != "PodScheduled");
    status.conditions.push(skiff_api::kinds::pod::PodCondition {
        type_: "PodScheduled".into(),
        status: "False".into(),
        reason: Some("Unschedulable".into()),
        message: Some(message.into()),
        last_transition_time: Some(now),
        ..Default::default()
    });
}

fn as_node(o: &Arc<Object>) -> Option<&Node> {
    match o.as_ref() {
        Object::Node(n) => Some(n),
        _ => None,
    }
}

fn as_pod(o: &Arc<Object>) -> Option<&Pod> {
    match o.as_ref() {
        Object::Pod(p) => Some(p),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::kinds::node::{NodeCondition, NodeStatus};
    use skiff_api::meta::OwnerReference;
    use skiff_api::quantity::Quantity;

    fn node(name: &str, cpu: &str, memory: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = name.into();
        let mut status = NodeStatus::default();
        for (k, v) in [("cpu", cpu), ("memory", memory)] {
            status.allocatable.insert(k.into(), Quantity::parse(v).expect("quantity"));
        }
        status.conditions.push(NodeCondition { type_: "Ready".into(), status: "True".into(), ..Default::default() });
        n.status = Some(status);
        n
    }

    fn pod(name: &str, owner: &str, cpu: &str, memory: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = "default".into();
        p.metadata.uid = format!("uid-{name}");
        p.metadata.owner_references.push(OwnerReference {
            uid: owner.into(),
            controller: Some(true),
            ..Default::default()
        });
        let mut c = skiff_api::kinds::pod::Container { name: "c".into(), image: "i".into(), ..Default::default() };
        for (k, v) in [("cpu", cpu), ("memory", memory)] {
            if !v.is_empty() {
                c.resources.requests.insert(k.into(), Quantity::parse(v).expect("quantity"));
            }
        }
        p.spec.containers.push(c);
        p
    }

    fn placed(s: &Schedule) -> Vec<(String, String)> {
        s.placements.iter().map(|p| (p.name.clone(), p.node.clone())).collect()
    }

    #[test]
    fn pods_of_one_owner_spread_evenly_over_the_nodes() {
        let nodes: Vec<Node> = (0..10).map(|i| node(&format!("n{i}"), "4", "8Gi")).collect();
        let pods: Vec<Pod> = (0..100).map(|i| pod(&format!("p{i:03}"), "rs1", "", "")).collect();
        let s = schedule(&nodes.iter().collect::<Vec<_>>(), &pods.iter().collect::<Vec<_>>());
        assert_eq!(s.placements.len(), 100);
        let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
        for p in &s.placements {
            *per_node.entry(p.node.clone()).or_default() += 1;
        }
        assert!(per_node.values().all(|n| *n == 10), "{per_node:?}");
    }

    #[test]
    fn spread_counts_what_is_already_bound_then_the_least_allocated_node_wins() {
        let nodes = [node("a", "4", "8Gi"), node("b", "4", "8Gi"), node("c", "4", "8Gi")];
        let mut on_a = pod("old", "rs1", "1", "1Gi");
        on_a.spec.node_name = Some("a".into());
        let mut other_on_b = pod("other", "rs2", "2", "4Gi");
        other_on_b.spec.node_name = Some("b".into());
        let new = pod("new", "rs1", "1", "1Gi");
        let s = schedule(&nodes.iter().collect::<Vec<_>>(), &[&on_a, &other_on_b, &new]);
        assert_eq!(placed(&s), [("new".to_string(), "c".to_string())], "not a (rs1 is there), c is emptier than b");
    }

    #[test]
    fn requests_must_fit_in_allocatable_minus_what_is_bound() {
        let nodes = [node("a", "2", "4Gi")];
        let mut big = pod("big", "rs1", "1500m", "1Gi");
        big.spec.node_name = Some("a".into());
        let more = pod("more", "rs2", "1", "1Gi");
        let small = pod("small", "rs3", "500m", "1Gi");
        let s = schedule(&nodes.iter().collect::<Vec<_>>(), &[&big, &more, &small]);
        assert_eq!(placed(&s), [("small".to_string(), "a".to_string())]);
        assert_eq!(s.unschedulable[0].message, "0/1 nodes are available: 1 Insufficient cpu.");
    }

    #[test]
    fn the_failed_scheduling_message_counts_each_reason_like_kubernetes() {
        let mut cordoned = node("a", "4", "8Gi");
        cordoned.spec.unschedulable = Some(true);
        let small_b = node("b", "4", "1Gi");
        let small_c = node("c", "4", "1Gi");
        let mut tainted = node("d", "4", "8Gi");
        tainted.spec.taints.push(Taint {
            key: "dedicated".into(),
            value: Some("db".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        });
        let mut not_ready = node("e", "4", "8Gi");
        not_ready.status.as_mut().expect("status").conditions[0].status = "False".into();
        let mut labelled = node("f", "4", "8Gi");
        labelled.metadata.labels.insert("disk".into(), "hdd".into());
        let mut p = pod("p", "rs1", "", "2Gi");
        p.spec.node_selector.insert("disk".into(), "ssd".into());
        let nodes = [cordoned, small_b, small_c, tainted, not_ready, labelled];
        let s = schedule(&nodes.iter().collect::<Vec<_>>(), &[&p]);
        assert_eq!(
            s.unschedulable[0].message,
            "0/6 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 1 node(s) were not ready, \
             1 node(s) were unschedulable, 3 node(s) didn't match Pod's node affinity/selector."
        );
        p.spec.node_selector.clear();
        let s = schedule(&nodes.iter().collect::<Vec<_>>(), &[&p]);
        assert_eq!(placed(&s), [("p".to_string(), "f".to_string())]);
        let mut huge = pod("huge", "rs1", "", "16Gi");
        huge.metadata.uid = "other".into();
        let s = schedule(&nodes.iter().collect::<Vec<_>>(), &[&huge]);
        assert_eq!(
            s.unschedulable[0].message,
            "0/6 nodes are available: 1 node(s) had untolerated taint {dedicated: db}, 1 node(s) were not ready, \
             1 node(s) were unschedulable, 3 Insufficient memory."
        );
    }

    #[test]
    fn tolerations_match_taints_by_key_value_and_effect() {
        let taint = Taint { key: "k".into(), value: Some("v".into()), effect: "NoExecute".into(), time_added: None };
        let t = |key: Option<&str>, op: Option<&str>, value: Option<&str>, effect: Option<&str>| Toleration {
            key: key.map(String::from),
            operator: op.map(String::from),
            value: value.map(String::from),
            effect: effect.map(String::from),
            toleration_seconds: None,
        };
        assert!(tolerates(&t(Some("k"), None, Some("v"), None), &taint), "Equal is the default");
        assert!(tolerates(&t(Some("k"), Some("Exists"), None, Some("NoExecute")), &taint));
        assert!(tolerates(&t(None, Some("Exists"), None, None), &taint), "empty key with Exists: everything");
        assert!(!tolerates(&t(Some("k"), None, Some("w"), None), &taint), "another value");
        assert!(!tolerates(&t(Some("k"), Some("Exists"), None, Some("NoSchedule")), &taint), "another effect");
        assert!(!tolerates(&t(Some("j"), Some("Exists"), None, None), &taint), "another key");

        let mut tainted = node("a", "4", "8Gi");
        tainted.spec.taints.push(Taint { effect: "NoSchedule".into(), ..taint.clone() });
        tainted.spec.taints.push(Taint {
            key: "soft".into(),
            value: None,
            effect: "PreferNoSchedule".into(),
            time_added: None,
        });
        let mut p = pod("p", "rs1", "", "");
        assert!(schedule(&[&tainted], &[&p]).placements.is_empty());
        p.spec.tolerations.push(t(Some("k"), Some("Exists"), None, None));
        assert_eq!(schedule(&[&tainted], &[&p]).placements.len(), 1, "PreferNoSchedule does not keep it out");
    }

    #[test]
    fn deleting_and_bound_pods_are_not_scheduled_and_no_nodes_is_said_plainly() {
        let mut leaving = pod("leaving", "rs1", "", "");
        leaving.metadata.deletion_timestamp = Time::from_unix(1_800_000_000);
        let s = schedule(&[], &[&leaving]);
        assert!(s.placements.is_empty() && s.unschedulable.is_empty());
        let s = schedule(&[], &[&pod("p", "rs1", "", "")]);
        assert_eq!(s.unschedulable[0].message, "0/0 nodes are available: no nodes registered.");
    }

    #[test]
    fn the_controller_binds_records_and_marks_an_unschedulable_pod_once() {
        let mut state = State::default();
        state.insert(Kind::Node, [Object::Node(node("a", "1", "1Gi"))]);
        state.insert(Kind::Pod, [Object::Pod(pod("fits", "rs1", "", "")), Object::Pod(pod("huge", "rs2", "", "4Gi"))]);
        let now = Time::from_unix(1_800_000_000).expect("time");
        let r = Scheduler.reconcile(&state, now);
        assert!(r.actions.contains(&Action::Bind {
            namespace: "default".into(),
            name: "fits".into(),
            node: "a".into()
        }));
        let marked = r
            .actions
            .iter()
            .find_map(|a| match a {
                Action::UpdateStatus(Object::Pod(p)) => Some(p.clone()),
                _ => None,
            })
            .expect("the unschedulable pod's condition");
        assert_eq!(scheduled_message(&marked), Some("0/1 nodes are available: 1 Insufficient memory."));
        assert!(r
            .actions
            .iter()
            .any(|a| matches!(a, Action::Record(e) if e.reason.as_deref() == Some("FailedScheduling"))));
        // Told once: the same reason again writes nothing for that pod.
        let mut state = State::default();
        state.insert(Kind::Node, [Object::Node(node("a", "1", "1Gi"))]);
        state.insert(Kind::Pod, [Object::Pod(marked)]);
        assert!(Scheduler.reconcile(&state, now).actions.is_empty());
    }
}
