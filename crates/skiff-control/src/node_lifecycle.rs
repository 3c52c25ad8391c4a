//! The node lifecycle controller: notices a node whose agent stopped renewing, takes it out of
//! service and moves its pods elsewhere, as Kubernetes' node lifecycle controller and taint
//! manager do, on a timescale of seconds rather than minutes.
//!
//! - Every agent renews with the leader every second ([`skiff_api::api::Renewals`], held in memory,
//!   never written). A node silent for `monitor_grace` has its `Ready` condition set to `Unknown`
//!   (event `NodeNotReady`); then it is tainted `node.kubernetes.io/unreachable` with `NoSchedule`
//!   and `NoExecute` (with `timeAdded`), and its pods' `Ready` conditions are set to `False`, so
//!   nothing routes to them any more.
//! - A pod on a node with a `NoExecute` taint it does not tolerate is evicted (deleted gracefully;
//!   its controller replaces it at once, since a pod being deleted does not count): for the
//!   unreachable taint after `tolerationSeconds` of a matching toleration, or `eviction_grace` when
//!   it has none (Kubernetes' admission adds 300 s); for any other taint at once. A toleration
//!   without `tolerationSeconds` keeps the pod forever.
//! - When at least 55% of the nodes are silent at once, nothing is evicted ([`disrupted`]).
//! - When the node renews again its `Ready` goes back to `True` and the taints are removed. Its
//!   evicted pods are still marked for deletion: its agent stops them and they never count again.
//!
//! One change per node per reconcile (status first, then spec), each conditional on the version
//! read, so the controller never races its own writes. The decision is pure; time comes in as the
//! state's renewals and `now`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use skiff_api::api::Filter;
use skiff_api::kinds::node::{NodeCondition, Taint};
use skiff_api::kinds::pod::PodCondition;
use skiff_api::kinds::{Node, Pod};
use skiff_api::meta::Time;
use skiff_api::{Kind, Object};

use crate::events::{self, EventType};
use crate::pods;
use crate::runner::{Action, Controller, Reconciled, State};
use crate::scheduler::tolerates;

/// The taint of a node whose agent stopped renewing.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NO_SCHEDULE: &str = "NoSchedule";
pub const NO_EXECUTE: &str = "NoExecute";

/// How long a node may be silent before it is NotReady, by default. With renewals every second, a
/// node is NotReady 2 to 3 s after its last renewal.
pub const MONITOR_GRACE: Duration = Duration::from_secs(2);
/// How long the pods of an unreachable node stay, by default, when they carry no toleration of
/// their own.
pub const EVICTION_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLifecycle {
    pub monitor_grace: Duration,
    pub eviction_grace: Duration,
}

impl Default for NodeLifecycle {
    fn default() -> Self {
        NodeLifecycle { monitor_grace: MONITOR_GRACE, eviction_grace: EVICTION_GRACE }
    }
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status.as_ref()?.conditions.iter().find(|c| c.type_ == "Ready")
}

fn is_unreachable_taint(t: &Taint) -> bool {
    t.key == TAINT_UNREACHABLE && (t.effect == NO_SCHEDULE || t.effect == NO_EXECUTE)
}

/// `node` with its Ready condition set to `status`.
fn with_ready(node: &Node, status: &str, reason: &str, message: String, now: Time) -> Node {
    let mut updated = node.clone();
    let conditions = &mut updated.status.get_or_insert_with(Default::default).conditions;
    let condition = match conditions.iter_mut().find(|c| c.type_ == "Ready") {
        Some(c) => c,
        None => {
            conditions.push(NodeCondition { type_: "Ready".into(), ..Default::default() });
            let last = conditions.len() - 1;
            &mut conditions[last]
        }
    };
    condition.status = status.into();
    condition.reason = Some(reason.into());
    condition.message = Some(message);
    condition.last_transition_time = Some(now);
    updated
}

/// `pod` with its Ready condition False, as Kubernetes marks the pods of a node that stopped
/// reporting.
fn not_ready(pod: &Pod, node: &str, now: Time) -> Pod {
    let mut updated = pod.clone();
    let conditions = &mut updated.status.get_or_insert_with(Default::default).conditions;
    let message = format!("node {node} stopped renewing: the pod's state is unknown");
    match conditions.iter_mut().find(|c| c.type_ == "Ready") {
        Some(c) => {
            c.status = "False".into();
            c.reason = Some("NodeNotReady".into());
            c.message = Some(message);
            c.last_transition_time = Some(now);
        }
        None => conditions.push(PodCondition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: Some("NodeNotReady".into()),
            message: Some(message),
            last_transition_time: Some(now),
            ..Default::default()
        }),
    }
    updated
}

/// When `pod` must leave a node with `taints` (`None`: it may stay), as Kubernetes' taint manager
/// decides: the soonest of its untolerated `NoExecute` taints.
pub fn eviction_due(pod: &Pod, taints: &[Taint], default_grace: Duration) -> Option<Time> {
    let mut due: Option<Time> = None;
    for taint in taints.iter().filter(|t| t.effect == NO_EXECUTE) {
        let toleration = pod.spec.tolerations.iter().find(|tol| tolerates(tol, taint));
        let grace = match toleration {
            Some(tol) => match tol.toleration_seconds {
                None => continue, // tolerated for good
                Some(seconds) => Duration::from_secs(seconds.max(0) as u64),
            },
            // The unreachable taint is tolerated for a while by default (Kubernetes' admission
            // adds that toleration to every pod); any other is not tolerated at all.
            None if taint.key == TAINT_UNREACHABLE => default_grace,
            None => Duration::ZERO,
        };
        let at = match taint.time_added {
            Some(added) => after(added, grace),
            None if grace.is_zero() => Time(jiff::Timestamp::UNIX_EPOCH), // due now
            None => continue,                                             // a timed toleration needs to know since when
        };
        due = Some(due.map_or(at, |d| if at.0 < d.0 { at } else { d }));
    }
    due
}

fn after(t: Time, d: Duration) -> Time {
    let span = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    Time(t.0.checked_add(span).unwrap_or(jiff::Timestamp::MAX))
}

fn until(now: Time, then: Time) -> Duration {
    Duration::try_from(then.0.duration_since(now.0)).unwrap_or(Duration::ZERO)
}

/// Whether so many nodes are silent at once that evicting would do harm: at least 55% of them,
/// as Kubernetes' partial disruption of a small cluster (at most 50 nodes), where its secondary
/// eviction rate is 0. When most nodes fall silent together, the leader or its network is the more
/// likely culprit, and moving every pod would only pile them on the few nodes left. Such nodes are
/// still marked NotReady and tainted, so nothing new is placed on them.
pub fn disrupted(silent: usize, nodes: usize) -> bool {
    silent > 0 && silent * 100 >= nodes * 55
}

impl NodeLifecycle {
    /// What to do about one node and its pods; `evicting` is false while the cluster is disrupted.
    fn node(&self, node: &Node, on_node: &[&Pod], silence: Duration, evicting: bool, now: Time) -> Reconciled {
        let mut out = Reconciled::default();
        let name = &node.metadata.name;
        let ready = ready_condition(node).map(|c| c.status.as_str());
        let involved = || Object::Node(node.clone());
        if silence >= self.monitor_grace {
            if ready != Some("Unknown") {
                let message = format!(
                    "the node's agent stopped renewing: silent for {:.1} s (grace {:.1} s)",
                    silence.as_secs_f64(),
                    self.monitor_grace.as_secs_f64()
                );
                out.actions.push(Action::UpdateStatus(Object::Node(with_ready(
                    node,
                    "Unknown",
                    "NodeStatusUnknown",
                    message,
                    now,
                ))));
                let said = format!("Node {name} status is now: NodeNotReady");
                out.actions.push(Action::Record(events::about(
                    &involved(),
                    EventType::Normal,
                    "NodeNotReady",
                    &said,
                    now,
                )));
                return out;
            }
            let missing: Vec<&str> = [NO_SCHEDULE, NO_EXECUTE]
                .into_iter()
                .filter(|effect| !node.spec.taints.iter().any(|t| t.key == TAINT_UNREACHABLE && t.effect == *effect))
                .collect();
            if !missing.is_empty() {
                let mut tainted = node.clone();
                for effect in missing {
                    tainted.spec.taints.push(Taint {
                        key: TAINT_UNREACHABLE.into(),
                        value: None,
                        effect: effect.into(),
                        time_added: (effect == NO_EXECUTE).then_some(now),
                    });
                }
                out.actions.push(Action::Apply(Object::Node(tainted)));
                return out;
            }
            for pod in on_node.iter().filter(|p| pods::is_ready(p) && p.metadata.deletion_timestamp.is_none()) {
                out.actions.push(Action::UpdateStatus(Object::Pod(not_ready(pod, name, now))));
            }
        } else {
            out.requeue_after = Some(self.monitor_grace - silence);
            if ready == Some("Unknown") {
                let message = "the node's agent renews again".to_string();
                out.actions.push(Action::UpdateStatus(Object::Node(with_ready(
                    node,
                    "True",
                    "NodeReady",
                    message,
                    now,
                ))));
                let said = format!("Node {name} status is now: NodeReady");
                out.actions.push(Action::Record(events::about(
                    &involved(),
                    EventType::Normal,
                    "NodeReady",
                    &said,
                    now,
                )));
                return out;
            }
            if node.spec.taints.iter().any(is_unreachable_taint) {
                let mut healed = node.clone();
                healed.spec.taints.retain(|t| !is_unreachable_taint(t));
                out.actions.push(Action::Apply(Object::Node(healed)));
                return out;
            }
        }
        if evicting && !on_node.is_empty() {
            self.evict(node, on_node, now, &mut out);
        }
        out
    }

    fn evict(&self, node: &Node, on_node: &[&Pod], now: Time, out: &mut Reconciled) {
        for pod in on_node.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
            let Some(due) = eviction_due(pod, &node.spec.taints, self.eviction_grace) else { continue };
            if due.0 > now.0 {
                out.merge(Reconciled { actions: Vec::new(), requeue_after: Some(until(now, due)) });
                continue;
            }
            let involved = Object::Pod((*pod).clone());
            let message = format!(
                "Marking for deletion Pod {}/{}: node {} has a NoExecute taint it does not tolerate",
                pod.metadata.namespace, pod.metadata.name, node.metadata.name
            );
            out.actions.push(Action::Delete(involved.clone()));
            out.actions.push(Action::Record(events::about(
                &involved,
                EventType::Normal,
                "TaintManagerEviction",
                &message,
                now,
            )));
        }
    }
}

impl Controller for NodeLifecycle {
    fn name(&self) -> &'static str {
        "node-lifecycle"
    }

    fn watches(&self) -> Vec<(Kind, Filter)> {
        vec![(Kind::Node, Filter::default()), (Kind::Pod, Filter::default())]
    }

    fn reads_renewals(&self) -> bool {
        true
    }

    fn reconcile(&self, state: &State, now: Time) -> Reconciled {
        let nodes: Vec<&Node> = state
            .of(Kind::Node)
            .iter()
            .filter_map(|o| if let Object::Node(n) = o.as_ref() { Some(n) } else { None })
            .collect();
        // Only silent nodes and nodes with a NoExecute taint have pods to mark or evict: the pods
        // (tens of thousands) are looked at only when there are such nodes, and only theirs kept.
        let concerned: HashSet<&str> = nodes
            .iter()
            .filter(|n| {
                state.silence(&n.metadata.name) >= self.monitor_grace
                    || n.spec.taints.iter().any(|t| t.effect == NO_EXECUTE)
            })
            .map(|n| n.metadata.name.as_str())
            .collect();
        let mut by_node: HashMap<&str, Vec<&Pod>> = HashMap::new();
        if !concerned.is_empty() {
            for pod in pods::of(state.of(Kind::Pod)) {
                if let Some(node) = pod.spec.node_name.as_deref().filter(|n| concerned.contains(n)) {
                    by_node.entry(node).or_default().push(pod);
                }
            }
        }
        let silent = nodes.iter().filter(|n| state.silence(&n.metadata.name) >= self.monitor_grace).count();
        let evicting = !disrupted(silent, nodes.len());
        if !evicting && silent > 0 {
            tracing::warn!(
                silent,
                nodes = nodes.len(),
                "most nodes are silent at once: more likely this leader or its network than the nodes; nothing is evicted until most renew again"
            );
        }
        let mut out = Reconciled::default();
        for node in nodes {
            let on_node = by_node.get(node.metadata.name.as_str()).map(Vec::as_slice).unwrap_or(&[]);
            out.merge(self.node(node, on_node, state.silence(&node.metadata.name), evicting, now));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::kinds::node::NodeStatus;
    use skiff_api::kinds::pod::{PodStatus, Toleration};

    const LIFECYCLE: NodeLifecycle =
        NodeLifecycle { monitor_grace: Duration::from_secs(2), eviction_grace: Duration::from_secs(3) };

    fn at(seconds: i64) -> Time {
        Time::from_unix(1_800_000_000 + seconds).expect("time")
    }

    fn node(name: &str, ready: &str) -> Node {
        let mut n = Node::default();
        n.metadata.name = name.into();
        n.metadata.uid = format!("uid-{name}");
        let condition = NodeCondition { type_: "Ready".into(), status: ready.into(), ..Default::default() };
        n.status = Some(NodeStatus { conditions: vec![condition], ..Default::default() });
        n
    }

    fn unreachable(mut n: Node, since: i64) -> Node {
        for effect in [NO_SCHEDULE, NO_EXECUTE] {
            n.spec.taints.push(Taint {
                key: TAINT_UNREACHABLE.into(),
                value: None,
                effect: effect.into(),
                time_added: (effect == NO_EXECUTE).then(|| at(since)),
            });
        }
        n
    }

    fn pod(name: &str, node: &str, ready: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = name.into();
        p.metadata.namespace = "default".into();
        p.metadata.uid = format!("uid-{name}");
        p.spec.node_name = Some(node.into());
        let status = if ready { "True" } else { "False" };
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: vec![PodCondition { type_: "Ready".into(), status: status.into(), ..Default::default() }],
            ..Default::default()
        });
        p
    }

    fn state(nodes: Vec<Node>, pods: Vec<Pod>, heard: &[(&str, u64)], leading_for: u64) -> State {
        let mut s = State::default();
        s.insert(Kind::Node, nodes.into_iter().map(Object::Node));
        s.insert(Kind::Pod, pods.into_iter().map(Object::Pod));
        s.renewals = heard.iter().map(|(n, secs)| (n.to_string(), Duration::from_millis(*secs))).collect();
        s.leading_for = Duration::from_millis(leading_for);
        s
    }

    /// The actions as short strings: `verb kind name [detail]`.
    fn said(r: &Reconciled) -> Vec<String> {
        r.actions
            .iter()
            .map(|a| match a {
                Action::UpdateStatus(Object::Node(n)) => {
                    format!("status node {} Ready={}", n.metadata.name, ready_condition(n).map_or("-", |c| &c.status))
                }
                Action::UpdateStatus(Object::Pod(p)) => format!(
                    "status pod {} Ready={}",
                    p.metadata.name,
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                        .map_or("-", |c| &c.status)
                ),
                Action::Apply(Object::Node(n)) => format!(
                    "apply node {} taints={}",
                    n.metadata.name,
                    n.spec.taints.iter().map(|t| t.effect.as_str()).collect::<Vec<_>>().join(",")
                ),
                Action::Delete(o) => format!("delete pod {}", o.meta().name),
                Action::Record(e) => format!("event {}", e.reason.as_deref().unwrap_or("")),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_node_that_renews_is_left_alone_and_looked_at_again_when_its_grace_would_end() {
        let s = state(vec![node("a", "True")], vec![pod("p", "a", true)], &[("a", 700)], 60_000);
        let r = LIFECYCLE.reconcile(&s, at(0));
        assert!(r.actions.is_empty(), "{:?}", said(&r));
        assert_eq!(r.requeue_after, Some(Duration::from_millis(1300)));
    }

    #[test]
    fn a_silent_node_goes_unknown_then_tainted_then_its_pods_not_ready_one_write_at_a_time() {
        let silent = &[("a", 2_500)];
        let pods = vec![pod("p", "a", true), pod("q", "a", false)];
        let r = LIFECYCLE.reconcile(&state(vec![node("a", "True")], pods.clone(), silent, 60_000), at(0));
        assert_eq!(said(&r), ["status node a Ready=Unknown", "event NodeNotReady"]);

        let r = LIFECYCLE.reconcile(&state(vec![node("a", "Unknown")], pods.clone(), silent, 60_000), at(0));
        assert_eq!(said(&r), ["apply node a taints=NoSchedule,NoExecute"]);
        let Action::Apply(Object::Node(tainted)) = &r.actions[0] else { panic!("apply") };
        let no_execute = tainted.spec.taints.iter().find(|t| t.effect == NO_EXECUTE).expect("NoExecute");
        assert_eq!(no_execute.time_added, Some(at(0)), "eviction counts from the taint");

        // With two nodes that renew (one silent node of three is not a disruption).
        let nodes = vec![unreachable(node("a", "Unknown"), 0), node("b", "True"), node("c", "True")];
        let heard = &[("a", 2_500), ("b", 0), ("c", 0)];
        let r = LIFECYCLE.reconcile(&state(nodes, pods, heard, 60_000), at(1));
        assert_eq!(said(&r), ["status pod p Ready=False"], "only the pod that was Ready");
        assert_eq!(r.requeue_after, Some(Duration::from_secs(2)), "its pods are evicted at 0 + 3 s");
    }

    #[test]
    fn a_new_leader_gives_every_node_a_full_grace_period() {
        // It heard nothing yet (or only renewals older than its term) and has led for 1 s.
        let s = state(vec![node("a", "True"), node("b", "True")], vec![], &[("b", 9_000)], 1_000);
        let r = LIFECYCLE.reconcile(&s, at(0));
        assert!(r.actions.is_empty(), "{:?}", said(&r));
        assert_eq!(r.requeue_after, Some(Duration::from_secs(1)));
        let r = LIFECYCLE.reconcile(&state(vec![node("a", "True")], vec![], &[], 2_000), at(0));
        assert_eq!(said(&r), ["status node a Ready=Unknown", "event NodeNotReady"]);
    }

    #[test]
    fn pods_are_evicted_after_their_toleration_or_the_default_grace() {
        let mut forever = pod("forever", "a", false);
        forever.spec.tolerations.push(Toleration {
            key: Some(TAINT_UNREACHABLE.into()),
            operator: Some("Exists".into()),
            effect: Some(NO_EXECUTE.into()),
            ..Default::default()
        });
        let mut ten = pod("ten", "a", false);
        ten.spec.tolerations.push(Toleration {
            key: Some(TAINT_UNREACHABLE.into()),
            operator: Some("Exists".into()),
            toleration_seconds: Some(10),
            ..Default::default()
        });
        let plain = pod("plain", "a", false);
        let mut going = pod("going", "a", false);
        going.metadata.deletion_timestamp = Some(at(0));
        // Two other nodes renew: one silent node of three is not a disruption.
        let nodes = vec![unreachable(node("a", "Unknown"), 0), node("b", "True"), node("c", "True")];
        let pods = vec![forever, ten, plain, going];
        let heard = &[("a", 5_000), ("b", 100), ("c", 100)];

        let r = LIFECYCLE.reconcile(&state(nodes.clone(), pods.clone(), heard, 60_000), at(2));
        assert!(r.actions.is_empty(), "{:?}", said(&r));
        assert_eq!(r.requeue_after, Some(Duration::from_secs(1)), "plain is due at 3 s");

        let r = LIFECYCLE.reconcile(&state(nodes.clone(), pods.clone(), heard, 60_000), at(3));
        assert_eq!(said(&r), ["delete pod plain", "event TaintManagerEviction"]);
        let r = LIFECYCLE.reconcile(&state(nodes.clone(), pods.clone(), heard, 60_000), at(9));
        assert_eq!(said(&r), ["delete pod plain", "event TaintManagerEviction"], "ten is due at 10 s");

        let r = LIFECYCLE.reconcile(&state(nodes, pods, heard, 60_000), at(10));
        assert_eq!(
            said(&r),
            ["delete pod ten", "event TaintManagerEviction", "delete pod plain", "event TaintManagerEviction"]
        );
    }

    #[test]
    fn nothing_is_evicted_while_most_nodes_are_silent_at_once() {
        assert!(!disrupted(0, 3));
        assert!(!disrupted(1, 3), "one of three: evict");
        assert!(disrupted(2, 3), "two of three: more likely the leader");
        assert!(disrupted(1, 1));
        assert!(!disrupted(5, 10));
        assert!(disrupted(6, 10));
        let lost = |n: &str| unreachable(node(n, "Unknown"), 0);
        let pods = vec![pod("p", "a", false), pod("q", "b", false)];
        let heard = &[("a", 9_000), ("b", 9_000), ("c", 100)];
        let r = LIFECYCLE
            .reconcile(&state(vec![lost("a"), lost("b"), node("c", "True")], pods.clone(), heard, 60_000), at(10));
        assert!(r.actions.is_empty(), "{:?}", said(&r));
        let heard = &[("a", 9_000), ("b", 100), ("c", 100)];
        let r = LIFECYCLE
            .reconcile(&state(vec![lost("a"), node("b", "True"), node("c", "True")], pods, heard, 60_000), at(10));
        assert_eq!(said(&r), ["delete pod p", "event TaintManagerEviction"]);
    }

    #[test]
    fn a_user_no_execute_taint_evicts_untolerating_pods_at_once() {
        let mut n = node("a", "True");
        n.spec.taints.push(Taint {
            key: "maintenance".into(),
            value: None,
            effect: NO_EXECUTE.into(),
            time_added: None,
        });
        let r = LIFECYCLE.reconcile(&state(vec![n], vec![pod("p", "a", true)], &[("a", 100)], 60_000), at(0));
        assert_eq!(said(&r), ["delete pod p", "event TaintManagerEviction"]);
    }

    #[test]
    fn a_node_that_renews_again_is_ready_then_untainted() {
        let back = &[("a", 200)];
        let r = LIFECYCLE.reconcile(&state(vec![unreachable(node("a", "Unknown"), 0)], vec![], back, 60_000), at(9));
        assert_eq!(said(&r), ["status node a Ready=True", "event NodeReady"]);
        let r = LIFECYCLE.reconcile(&state(vec![unreachable(node("a", "True"), 0)], vec![], back, 60_000), at(9));
        assert_eq!(said(&r), ["apply node a taints="]);
        // An untainted ready node's pods are not evicted, whatever happened before.
        let r = LIFECYCLE.reconcile(&state(vec![node("a", "True")], vec![pod("p", "a", false)], back, 60_000), at(9));
        assert!(r.actions.is_empty(), "{:?}", said(&r));
    }
}
