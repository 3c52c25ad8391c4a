//! The Deployment controller: rolls a Deployment's pod template out through ReplicaSets, the
//! Kubernetes way. One ReplicaSet per template, named `<deployment>-<pod-template-hash>`, owned by
//! the Deployment and carrying its revision; a rolling update scales the new set up and the old ones
//! down within maxSurge and maxUnavailable, advancing only on available pods; `Recreate` removes
//! every old pod first. Pure: [`reconcile_deployment`] decides for one Deployment from its sets.
//!
//! Beyond Kubernetes: with the annotation [`AUTO_ROLLBACK`] set to `"true"`, a rollout that exceeds
//! its progress deadline is rolled back to the previous revision (Docker Swarm's
//! `failure_action: rollback`).

use std::collections::HashMap;
use std::time::Duration;

use skiff_api::api::Filter;
use skiff_api::kinds::deployment::{DeploymentCondition, DeploymentStatus};
use skiff_api::kinds::pod::PodTemplateSpec;
use skiff_api::kinds::replica_set::{ReplicaSetSpec, POD_TEMPLATE_HASH, REVISION};
use skiff_api::kinds::{Deployment, Pod, ReplicaSet};
use skiff_api::meta::{IntOrString, OwnerReference, Time};
use skiff_api::selector::LabelSelector;
use skiff_api::{Kind, Object};

use crate::events::{self, EventType};
use crate::names::{fnv1a, spell};
use crate::pods;
use crate::runner::{Action, Controller, Reconciled, State};

/// `deployment.skiff.io/auto-rollback: "true"`: roll back when the progress deadline is exceeded.
pub const AUTO_ROLLBACK: &str = "deployment.skiff.io/auto-rollback";

/// The `pod-template-hash` of a template: a stable hash of its JSON, ten characters.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    spell(fnv1a(&[&bytes]), 10)
}

/// maxSurge and maxUnavailable as numbers of pods for `replicas`: percentages of maxSurge round
/// up, of maxUnavailable down, and when both come to 0 one pod may be unavailable (Kubernetes'
/// `ResolveFenceposts`).
pub fn fenceposts(surge: &IntOrString, unavailable: &IntOrString, replicas: i32) -> (i32, i32) {
    let surge = surge.scaled(replicas, true).unwrap_or(0).max(0);
    let unavailable = unavailable.scaled(replicas, false).unwrap_or(0).max(0);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn replicas_of(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1).max(0)
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate")
}

/// The deployment's (maxSurge, maxUnavailable) in pods (Recreate: none of either).
fn limits(d: &Deployment) -> (i32, i32) {
    if is_recreate(d) {
        return (0, 0);
    }
    let ru = d.spec.strategy.as_ref().and_then(|s| s.rolling_update.clone()).unwrap_or_default();
    let quarter = IntOrString::String("25%".into());
    fenceposts(
        ru.max_surge.as_ref().unwrap_or(&quarter),
        ru.max_unavailable.as_ref().unwrap_or(&quarter),
        replicas_of(d),
    )
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(1)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)
}

/// The template the new ReplicaSet of `d` runs: the Deployment's, labelled with its hash.
fn labelled_template(d: &Deployment, hash: &str) -> PodTemplateSpec {
    let mut template = d.spec.template.clone();
    template.metadata.labels.insert(POD_TEMPLATE_HASH.into(), hash.into());
    template
}

/// A set's template as the Deployment wrote it (without the hash label).
pub fn unlabelled_template(rs: &ReplicaSet) -> PodTemplateSpec {
    let mut template = rs.spec.template.clone();
    template.metadata.labels.remove(POD_TEMPLATE_HASH);
    template
}

fn new_replica_set(d: &Deployment, hash: &str, replicas: i32, revision: i64) -> ReplicaSet {
    let mut rs = ReplicaSet::default();
    rs.metadata.name = format!("{}-{hash}", d.metadata.name);
    rs.metadata.namespace = d.metadata.namespace.clone();
    rs.metadata.labels = d.spec.template.metadata.labels.clone();
    rs.metadata.labels.insert(POD_TEMPLATE_HASH.into(), hash.into());
    rs.metadata.annotations.insert(REVISION.into(), revision.to_string());
    rs.metadata.owner_references = vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: d.metadata.name.clone(),
        uid: d.metadata.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }];
    let mut selector: LabelSelector = d.spec.selector.clone();
    selector.match_labels.insert(POD_TEMPLATE_HASH.into(), hash.into());
    rs.spec = ReplicaSetSpec {
        replicas: Some(replicas),
        min_ready_seconds: d.spec.min_ready_seconds,
        selector,
        template: labelled_template(d, hash),
    };
    rs
}

/// What one reconcile of a Deployment changes: the sets' replica counts (by name), new sets,
/// deletions, events, and the Deployment itself.
struct Plan<'a> {
    d: &'a Deployment,
    now: Time,
    actions: Vec<Action>,
    scaled: HashMap<String, i32>,
}

impl<'a> Plan<'a> {
    fn scale(&mut self, rs: &ReplicaSet, to: i32) {
        let from = self.scaled.get(&rs.metadata.name).copied().unwrap_or(spec_replicas(rs));
        if to == from {
            return;
        }
        self.scaled.insert(rs.metadata.name.clone(), to);
        let direction = if to > from { "up" } else { "down" };
        let message = format!("Scaled {direction} replica set {} to {to} from {from}", rs.metadata.name);
        self.event(EventType::Normal, "ScalingReplicaSet", &message);
    }

    fn event(&mut self, type_: EventType, reason: &str, message: &str) {
        let involved = Object::Deployment(self.d.clone());
        self.actions.push(Action::Record(events::about(&involved, type_, reason, message, self.now)));
    }

    /// The replica count of `rs` after this plan.
    fn replicas(&self, rs: &ReplicaSet) -> i32 {
        self.scaled.get(&rs.metadata.name).copied().unwrap_or(spec_replicas(rs))
    }

    fn finish(mut self, sets: &[&ReplicaSet]) -> Vec<Action> {
        for rs in sets {
            if let Some(&to) = self.scaled.get(&rs.metadata.name) {
                let mut scaled = (*rs).clone();
                scaled.spec.replicas = Some(to);
                self.actions.push(Action::Apply(Object::ReplicaSet(scaled)));
            }
        }
        self.actions
    }
}

/// Kubernetes' `NewRSNewReplicas` for a rolling update: how far the new set may grow now.
pub fn new_set_replicas(desired: i32, max_surge: i32, total: i32, new: i32) -> i32 {
    let max_total = desired + max_surge;
    if total >= max_total {
        return new;
    }
    let up = (max_total - total).min(desired - new);
    new + up
}

/// Scales old sets down as far as availability allows: first pods that are not available (they
/// cost nothing), then available ones down to `desired - maxUnavailable` (Kubernetes'
/// `reconcileOldReplicaSets`). `old` is oldest first.
fn scale_down_old(plan: &mut Plan, new: &ReplicaSet, old: &[&ReplicaSet], desired: i32, max_unavailable: i32) {
    let all: i32 = old.iter().map(|rs| plan.replicas(rs)).sum::<i32>() + plan.replicas(new);
    if old.iter().all(|rs| plan.replicas(rs) == 0) {
        return;
    }
    let min_available = desired - max_unavailable;
    let new_unavailable = plan.replicas(new) - available(new);
    let max_scaled_down = all - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return;
    }
    let mut cleaned = 0;
    for rs in old {
        if cleaned >= max_scaled_down {
            break;
        }
        let replicas = plan.replicas(rs);
        let unhealthy = replicas - available(rs).min(replicas);
        if replicas == 0 || unhealthy <= 0 {
            continue;
        }
        let down = unhealthy.min(max_scaled_down - cleaned);
        plan.scale(rs, replicas - down);
        cleaned += down;
    }
    let available_now: i32 = old.iter().map(|rs| available(rs).min(plan.replicas(rs))).sum::<i32>() + available(new);
    let mut budget = available_now - min_available;
    for rs in old {
        if budget <= 0 {
            break;
        }
        let replicas = plan.replicas(rs);
        if replicas == 0 {
            continue;
        }
        let down = replicas.min(budget);
        plan.scale(rs, replicas - down);
        budget -= down;
    }
}

fn condition<'c>(status: &'c DeploymentStatus, type_: &str) -> Option<&'c DeploymentCondition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// Sets a condition as Kubernetes does: the same status and reason change nothing; the same status
/// keeps its transition time.
fn set_condition(status: &mut DeploymentStatus, type_: &str, value: &str, reason: &str, message: String, now: Time) {
    if let Some(c) = status.conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status == value && c.reason.as_deref() == Some(reason) {
            return;
        }
        let transition = if c.status == value { c.last_transition_time } else { Some(now) };
        *c = DeploymentCondition {
            type_: type_.into(),
            status: value.into(),
            last_update_time: Some(now),
            last_transition_time: transition,
            reason: Some(reason.into()),
            message: Some(message),
        };
        return;
    }
    status.conditions.push(DeploymentCondition {
        type_: type_.into(),
        status: value.into(),
        last_update_time: Some(now),
        last_transition_time: Some(now),
        reason: Some(reason.into()),
        message: Some(message),
    });
}

/// The Deployment's status from its sets (the counts of Kubernetes' `calculateStatus`).
fn counts(d: &Deployment, new: Option<&ReplicaSet>, sets: &[&ReplicaSet]) -> DeploymentStatus {
    let actual = |rs: &ReplicaSet| rs.status.as_ref().map(|s| s.replicas).unwrap_or(0);
    let total: i32 = sets.iter().map(|rs| spec_replicas(rs)).sum();
    let available: i32 = sets.iter().map(|rs| available(rs)).sum();
    DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(sets.iter().map(|rs| actual(rs)).sum()),
        updated_replicas: Some(new.map(actual).unwrap_or(0)),
        ready_replicas: Some(
            sets.iter().map(|rs| rs.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0)).sum(),
        ),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        conditions: d.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default(),
    }
}

/// Whether the rollout is done: every replica updated and available, nothing old left.
fn complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let desired = replicas_of(d);
    status.updated_replicas == Some(desired)
        && status.replicas == Some(desired)
        && status.available_replicas == Some(desired)
        && status.observed_generation >= d.metadata.generation
}

/// Whether `now` shows progress over `before` (Kubernetes' `DeploymentProgressing`).
fn progressed(before: Option<&DeploymentStatus>, now: &DeploymentStatus) -> bool {
    let Some(before) = before else { return true };
    let old = |s: &DeploymentStatus| s.replicas.unwrap_or(0) - s.updated_replicas.unwrap_or(0);
    now.updated_replicas > before.updated_replicas
        || old(now) < old(before)
        || now.ready_replicas > before.ready_replicas
        || now.available_replicas > before.available_replicas
}

/// The actions for one Deployment, given the ReplicaSets it controls and the pods they control.
pub fn reconcile_deployment(d: &Deployment, sets: &[&ReplicaSet], set_pods: &[&Pod], now: Time) -> Reconciled {
    if d.metadata.deletion_timestamp.is_some() {
        return Reconciled::default();
    }
    let desired = replicas_of(d);
    let paused = d.spec.paused == Some(true);
    let hash = template_hash(&d.spec.template);
    let mut sets: Vec<&ReplicaSet> = sets.to_vec();
    sets.sort_by_key(|rs| (rs.revision(), rs.metadata.creation_timestamp, rs.metadata.name.clone()));
    let new = sets.iter().copied().find(|rs| unlabelled_template(rs) == d.spec.template);
    let old: Vec<&ReplicaSet> = sets
        .iter()
        .copied()
        .filter(|rs| Some(rs.metadata.uid.as_str()) != new.map(|n| n.metadata.uid.as_str()))
        .collect();
    let max_revision = sets.iter().map(|rs| rs.revision()).max().unwrap_or(0);
    let mut plan = Plan { d, now, actions: Vec::new(), scaled: HashMap::new() };
    let mut requeue_after = None;
    let mut progress_reason: Option<(&str, String)> = None;
    let (max_surge, max_unavailable) = limits(d);

    match new {
        None if !paused => {
            // A new template: a new set, as large as the strategy allows right away.
            let old_total: i32 = old.iter().map(|rs| spec_replicas(rs)).sum();
            let old_pods_left = set_pods.iter().any(|p| !pods::is_terminal(p));
            let start = if is_recreate(d) {
                if old_total == 0 && !old_pods_left {
                    desired
                } else {
                    0
                }
            } else {
                new_set_replicas(desired, max_surge, old_total, 0)
            };
            let rs = new_replica_set(d, &hash, start, max_revision + 1);
            let message = format!("Scaled up replica set {} to {start}", rs.metadata.name);
            progress_reason = Some(("NewReplicaSetCreated", format!("Created new replica set {:?}", rs.metadata.name)));
            plan.actions.push(Action::Create(Object::ReplicaSet(rs)));
            plan.event(EventType::Normal, "ScalingReplicaSet", &message);
            if is_recreate(d) {
                for rs in &old {
                    plan.scale(rs, 0);
                }
            }
            let mut annotated = d.clone();
            annotated.metadata.annotations.insert(REVISION.into(), (max_revision + 1).to_string());
            plan.actions.push(Action::Apply(Object::Deployment(annotated)));
        }
        None => {}
        Some(new) => {
            if new.revision() < max_revision && !paused {
                // An earlier template is current again (a rollback): it becomes the newest revision.
                let mut bumped = new.clone();
                bumped.metadata.annotations.insert(REVISION.into(), (max_revision + 1).to_string());
                if let Some(&to) = plan.scaled.get(&new.metadata.name) {
                    bumped.spec.replicas = Some(to);
                }
                plan.actions.push(Action::Apply(Object::ReplicaSet(bumped)));
                let mut annotated = d.clone();
                annotated.metadata.annotations.insert(REVISION.into(), (max_revision + 1).to_string());
                plan.actions.push(Action::Apply(Object::Deployment(annotated)));
                // A new rollout: its progress deadline starts now.
                progress_reason =
                    Some(("FoundNewReplicaSet", format!("Found new replica set {:?}", new.metadata.name)));
            } else if d.metadata.annotations.get(REVISION).map(String::as_str) != Some(&new.revision().to_string()) {
                let mut annotated = d.clone();
                annotated.metadata.annotations.insert(REVISION.into(), new.revision().to_string());
                plan.actions.push(Action::Apply(Object::Deployment(annotated)));
            }
            let old_active: i32 = old.iter().map(|rs| spec_replicas(rs)).sum();
            if paused {
                // Paused: no rollout, but a scale with nothing old in the way still applies.
                if old_active == 0 {
                    plan.scale(new, desired);
                }
            } else if is_recreate(d) {
                if old_active > 0 {
                    for rs in &old {
                        plan.scale(rs, 0);
                    }
                } else if set_pods
                    .iter()
                    .any(|p| pods::controller_uid(p) != Some(new.metadata.uid.as_str()) && !pods::is_terminal(p))
                {
                    // Old pods are still stopping: the new ones wait for them.
                } else {
                    plan.scale(new, desired);
                }
            } else if old_active == 0 {
                plan.scale(new, desired);
            } else {
                // Pods count as they are, not only as the sets ask: an old set scaled down still
                // has its pods until its controller removes them, and they must not be exceeded.
                let active = |rs: &ReplicaSet| {
                    let uid = rs.metadata.uid.as_str();
                    set_pods.iter().filter(|p| pods::controller_uid(p) == Some(uid) && pods::is_active(p)).count()
                        as i32
                };
                let total: i32 = sets.iter().map(|rs| spec_replicas(rs).max(active(rs))).sum();
                let grown = new_set_replicas(desired, max_surge, total, spec_replicas(new));
                if grown != spec_replicas(new) {
                    plan.scale(new, grown);
                } else {
                    scale_down_old(&mut plan, new, &old, desired, max_unavailable);
                }
            }
        }
    }

    // Old sets with nothing left, beyond revisionHistoryLimit, oldest first.
    let limit = d.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let empty: Vec<&&ReplicaSet> = old
        .iter()
        .filter(|rs| plan.replicas(rs) == 0 && rs.status.as_ref().map(|s| s.replicas).unwrap_or(0) == 0)
        .collect();
    for rs in empty.iter().take(empty.len().saturating_sub(limit)) {
        plan.actions.push(Action::Delete(Object::ReplicaSet((**rs).clone())));
    }

    // Status.
    let mut status = counts(d, new, &sets);
    let before = d.status.as_ref();
    let (_, unavailable_allowed) = (max_surge, max_unavailable);
    if status.available_replicas.unwrap_or(0) >= desired - unavailable_allowed {
        set_condition(
            &mut status,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            now,
        );
    } else {
        set_condition(
            &mut status,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            now,
        );
    }
    let set_name = new.map(|rs| rs.metadata.name.clone()).unwrap_or_else(|| format!("{}-{hash}", d.metadata.name));
    let deadline = d.spec.progress_deadline_seconds.unwrap_or(600);
    let mut rollback_to: Option<&ReplicaSet> = None;
    if paused {
        set_condition(&mut status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused".into(), now);
    } else if let Some((reason, message)) = progress_reason {
        set_condition(&mut status, "Progressing", "True", reason, message, now);
        requeue_after = Some(Duration::from_secs(deadline.max(0) as u64));
    } else if complete(d, &status) {
        set_condition(
            &mut status,
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet {set_name:?} has successfully progressed."),
            now,
        );
    } else {
        let current = condition(&status, "Progressing").cloned();
        let resumed = current.as_ref().and_then(|c| c.reason.as_deref()) == Some("DeploymentPaused");
        if resumed {
            set_condition(
                &mut status,
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
                now,
            );
        } else if progressed(before, &status) || current.is_none() {
            let message = format!("ReplicaSet {set_name:?} is progressing.");
            let c = status.conditions.iter_mut().find(|c| c.type_ == "Progressing");
            match c {
                Some(c) if c.status == "True" => {
                    c.reason = Some("ReplicaSetUpdated".into());
                    c.message = Some(message);
                    c.last_update_time = Some(now);
                }
                _ => set_condition(&mut status, "Progressing", "True", "ReplicaSetUpdated", message, now),
            }
        }
        let current = condition(&status, "Progressing").cloned();
        let timed_out = current.as_ref().and_then(|c| c.reason.as_deref()) == Some("ProgressDeadlineExceeded");
        if !timed_out {
            let since = current
                .as_ref()
                .and_then(|c| c.last_update_time)
                .map(|t| t.unix_seconds())
                .unwrap_or(now.unix_seconds());
            let left = since + i64::from(deadline) - now.unix_seconds();
            if left < 0 {
                set_condition(
                    &mut status,
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("ReplicaSet {set_name:?} has timed out progressing."),
                    now,
                );
                plan.event(
                    EventType::Warning,
                    "ProgressDeadlineExceeded",
                    &format!("Deployment {:?} has timed out progressing", d.metadata.name),
                );
                if d.metadata.annotations.get(AUTO_ROLLBACK).map(String::as_str) == Some("true") {
                    rollback_to = old.iter().rev().copied().find(|rs| rs.revision() > 0);
                }
            } else {
                requeue_after = Some(Duration::from_secs(left as u64 + 1));
            }
        }
    }
    // Rolling back writes the template only: a status write of the same resourceVersion beside it
    // could win the race and leave the rollback undone; the next reconcile writes the status.
    if d.status.as_ref() != Some(&status) && rollback_to.is_none() {
        let mut updated = d.clone();
        updated.status = Some(status);
        plan.actions.push(Action::UpdateStatus(Object::Deployment(updated)));
    }
    if let Some(previous) = rollback_to {
        let mut rolled = d.clone();
        rolled.spec.template = unlabelled_template(previous);
        let message =
            format!("Rolled back to revision {} after the progress deadline was exceeded", previous.revision());
        plan.event(EventType::Warning, "RolledBack", &message);
        plan.actions.push(Action::Apply(Object::Deployment(rolled)));
    }
    Reconciled { actions: plan.finish(&sets), requeue_after }
}

pub struct DeploymentController;

impl Controller for DeploymentController {
    fn name(&self) -> &'static str {
        "deployment"
    }

    fn watches(&self) -> Vec<(Kind, Filter)> {
        vec![
            (Kind::Deployment, Filter::default()),
            (Kind::ReplicaSet, Filter::default()),
            (Kind::Pod, Filter::default()),
        ]
    }

    /// A rollout step follows a pod's readiness within this; each reconcile groups every pod by its
    /// set, so at 20 ms it cost the leader a tenth of a core while 30,000 pods were created
    /// (bench/scale's profile).
    fn interval(&self) -> Duration {
        Duration::from_millis(50)
    }

    fn reconcile(&self, state: &State, now: Time) -> Reconciled {
        let mut sets_of: HashMap<&str, Vec<&ReplicaSet>> = HashMap::new();
        for object in state.of(Kind::ReplicaSet) {
            let Object::ReplicaSet(rs) = object.as_ref() else { continue };
            let owner =
                rs.metadata.owner_references.iter().find(|r| r.controller == Some(true) && r.kind == "Deployment");
            if let Some(owner) = owner {
                sets_of.entry(owner.uid.as_str()).or_default().push(rs);
            }
        }
        let mut pods_of: HashMap<&str, Vec<&Pod>> = HashMap::new();
        for pod in pods::of(state.of(Kind::Pod)) {
            if let Some(uid) = pods::controller_uid(pod) {
                pods_of.entry(uid).or_default().push(pod);
            }
        }
        let mut out = Reconciled::default();
        for object in state.of(Kind::Deployment) {
            let Object::Deployment(d) = object.as_ref() else { continue };
            let sets = sets_of.get(d.metadata.uid.as_str()).cloned().unwrap_or_default();
            let set_pods: Vec<&Pod> =
                sets.iter().flat_map(|rs| pods_of.get(rs.metadata.uid.as_str()).cloned().unwrap_or_default()).collect();
            let decided = reconcile_deployment(d, &sets, &set_pods, now);
            out.merge(decided);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::kinds::deployment::{DeploymentStrategy, RollingUpdateDeployment};
    use skiff_api::kinds::replica_set::ReplicaSetStatus;

    fn int(i: i32) -> IntOrString {
        IntOrString::Int(i)
    }

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down_like_kubernetes() {
        let table = [
            // (maxSurge, maxUnavailable, replicas) -> (surge, unavailable)
            (pct("25%"), pct("25%"), 10, (3, 2)),
            (pct("25%"), pct("25%"), 3, (1, 0)),
            (pct("25%"), pct("25%"), 1, (1, 0)),
            (pct("25%"), pct("25%"), 0, (0, 1)),
            (pct("50%"), pct("50%"), 5, (3, 2)),
            (int(0), int(0), 5, (0, 1)),
            (int(0), pct("10%"), 5, (0, 1)),
            (int(2), int(1), 7, (2, 1)),
            (pct("100%"), int(0), 4, (4, 0)),
            (pct("0%"), pct("100%"), 4, (0, 4)),
            (pct("33%"), pct("33%"), 7, (3, 2)),
        ];
        for (surge, unavailable, replicas, expected) in table {
            assert_eq!(fenceposts(&surge, &unavailable, replicas), expected, "{surge} {unavailable} of {replicas}");
        }
    }

    #[test]
    fn the_new_set_grows_only_within_the_surge() {
        assert_eq!(new_set_replicas(10, 3, 10, 0), 3);
        assert_eq!(new_set_replicas(10, 3, 13, 3), 3, "at the ceiling: no growth");
        assert_eq!(new_set_replicas(10, 3, 11, 3), 5);
        assert_eq!(new_set_replicas(3, 1, 3, 2), 3, "never past the desired count");
        assert_eq!(new_set_replicas(3, 0, 2, 2), 3);
    }

    fn deployment(replicas: i32, image: &str, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = "web".into();
        d.metadata.namespace = "default".into();
        d.metadata.uid = "d-uid".into();
        d.metadata.generation = Some(1);
        d.spec.replicas = Some(replicas);
        d.spec.selector.match_labels.insert("app".into(), "web".into());
        d.spec.template.metadata.labels.insert("app".into(), "web".into());
        d.spec.template.spec.containers.push(skiff_api::kinds::pod::Container {
            name: "app".into(),
            image: image.into(),
            ..Default::default()
        });
        d.spec.strategy = Some(DeploymentStrategy {
            type_: Some("RollingUpdate".into()),
            rolling_update: Some(RollingUpdateDeployment {
                max_surge: Some(surge),
                max_unavailable: Some(unavailable),
            }),
        });
        d.spec.progress_deadline_seconds = Some(600);
        d
    }

    /// A cluster of sets where every pod becomes available at once (`ready`) or never.
    struct World {
        d: Deployment,
        sets: Vec<ReplicaSet>,
        /// Templates whose pods never become available.
        broken: Vec<String>,
        now: i64,
    }

    impl World {
        fn new(d: Deployment) -> Self {
            World { d, sets: Vec::new(), broken: Vec::new(), now: 1_800_000_000 }
        }

        /// Pods follow their sets: every set has its replicas, available unless broken.
        fn settle(&mut self) {
            for rs in &mut self.sets {
                let replicas = spec_replicas(rs);
                let image = rs.spec.template.spec.containers[0].image.clone();
                let up = if self.broken.contains(&image) { 0 } else { replicas };
                rs.status = Some(ReplicaSetStatus {
                    replicas,
                    ready_replicas: Some(up),
                    available_replicas: Some(up),
                    ..Default::default()
                });
            }
        }

        fn total(&self) -> i32 {
            self.sets.iter().map(spec_replicas).sum()
        }

        fn available(&self) -> i32 {
            self.sets.iter().map(available).sum()
        }

        /// One reconcile, its actions applied.
        fn step(&mut self) -> Reconciled {
            let sets: Vec<&ReplicaSet> = self.sets.iter().collect();
            let r = reconcile_deployment(&self.d, &sets, &[], Time::from_unix(self.now).expect("time"));
            for action in &r.actions {
                match action {
                    Action::Create(Object::ReplicaSet(rs)) => {
                        let mut rs = rs.clone();
                        rs.metadata.uid = format!("uid-{}", rs.metadata.name);
                        self.sets.push(rs);
                    }
                    Action::Apply(Object::ReplicaSet(rs)) => {
                        if let Some(s) = self.sets.iter_mut().find(|s| s.metadata.name == rs.metadata.name) {
                            s.spec = rs.spec.clone();
                            s.metadata.annotations = rs.metadata.annotations.clone();
                        }
                    }
                    Action::Delete(Object::ReplicaSet(rs)) => self.sets.retain(|s| s.metadata.name != rs.metadata.name),
                    Action::Apply(Object::Deployment(d)) => {
                        if d.spec != self.d.spec {
                            self.d.metadata.generation = Some(self.d.metadata.generation.unwrap_or(1) + 1);
                        }
                        self.d.spec = d.spec.clone();
                        self.d.metadata.annotations = d.metadata.annotations.clone();
                    }
                    Action::UpdateStatus(Object::Deployment(d)) => self.d.status = d.status.clone(),
                    _ => {}
                }
            }
            r
        }

        fn progressing_reason(&self) -> Option<String> {
            self.d.status.as_ref().and_then(|s| condition(s, "Progressing")).and_then(|c| c.reason.clone())
        }
    }

    #[test]
    fn a_rolling_update_stays_within_surge_and_unavailability_at_every_step() {
        for (replicas, surge, unavailable) in [
            (10, pct("25%"), pct("25%")),
            (3, int(1), int(0)),
            (5, int(0), int(1)),
            (7, pct("50%"), pct("10%")),
            (1, int(1), int(0)),
        ] {
            let (max_surge, max_unavailable) = fenceposts(&surge, &unavailable, replicas);
            let mut world = World::new(deployment(replicas, "web:1", surge.clone(), unavailable.clone()));
            for _ in 0..20 {
                world.step();
                world.settle();
            }
            assert_eq!((world.sets.len(), world.available()), (1, replicas), "the first rollout completes");
            world.d.spec.template.spec.containers[0].image = "web:2".into();
            world.d.metadata.generation = Some(2);
            let mut steps = 0;
            loop {
                world.step();
                assert!(
                    world.total() <= replicas + max_surge,
                    "{replicas}/{surge}/{unavailable}: {} pods",
                    world.total()
                );
                world.settle();
                assert!(
                    world.available() >= replicas - max_unavailable,
                    "{replicas}/{surge}/{unavailable}: {} available",
                    world.available()
                );
                let done = world.progressing_reason().as_deref() == Some("NewReplicaSetAvailable");
                if done && world.sets.iter().filter(|rs| spec_replicas(rs) > 0).count() == 1 && steps > 0 {
                    break;
                }
                steps += 1;
                assert!(steps < 100, "the rollout of {replicas}/{surge}/{unavailable} finishes");
            }
            let new = world.sets.iter().find(|rs| spec_replicas(rs) > 0).expect("the new set");
            assert_eq!(new.spec.template.spec.containers[0].image, "web:2");
            assert_eq!(new.revision(), 2);
            assert_eq!(world.d.metadata.annotations.get(REVISION).map(String::as_str), Some("2"));
            let status = world.d.status.clone().expect("status");
            assert_eq!(
                (status.replicas, status.updated_replicas, status.available_replicas, status.unavailable_replicas),
                (Some(replicas), Some(replicas), Some(replicas), Some(0))
            );
        }
    }

    #[test]
    fn a_broken_image_stops_at_max_unavailable_times_out_and_rolls_back_when_asked() {
        let mut d = deployment(4, "web:1", int(1), int(1));
        d.spec.progress_deadline_seconds = Some(60);
        d.metadata.annotations.insert(AUTO_ROLLBACK.into(), "true".into());
        let mut world = World::new(d);
        for _ in 0..10 {
            world.step();
            world.settle();
        }
        world.broken.push("web:2".into());
        world.d.spec.template.spec.containers[0].image = "web:2".into();
        for _ in 0..20 {
            world.step();
            world.settle();
            assert!(world.available() >= 3, "never below replicas - maxUnavailable");
        }
        assert_eq!(world.available(), 3, "stuck: one old pod traded for new ones that never become ready");
        assert_eq!(world.progressing_reason().as_deref(), Some("ReplicaSetUpdated"));
        world.now += 61;
        let r = world.step();
        assert!(r.actions.iter().any(|a| matches!(a, Action::Record(e) if e.reason.as_deref() == Some("RolledBack"))));
        assert_eq!(world.d.spec.template.spec.containers[0].image, "web:1", "rolled back to revision 1's template");
        for _ in 0..20 {
            world.step();
            world.settle();
        }
        assert_eq!(world.available(), 4);
        let live: Vec<(String, i32, i64)> = world
            .sets
            .iter()
            .map(|rs| (rs.spec.template.spec.containers[0].image.clone(), spec_replicas(rs), rs.revision()))
            .collect();
        assert!(live.contains(&("web:1".into(), 4, 3)), "revision 1's set is revision 3 now: {live:?}");
        assert_eq!(world.progressing_reason().as_deref(), Some("NewReplicaSetAvailable"));
    }

    #[test]
    fn recreate_removes_every_old_pod_before_the_new_ones() {
        let mut d = deployment(3, "web:1", int(1), int(1));
        d.spec.strategy = Some(DeploymentStrategy { type_: Some("Recreate".into()), rolling_update: None });
        let mut world = World::new(d);
        for _ in 0..5 {
            world.step();
            world.settle();
        }
        world.d.spec.template.spec.containers[0].image = "web:2".into();
        world.step();
        let replicas: Vec<i32> = world.sets.iter().map(spec_replicas).collect();
        assert_eq!(replicas, [0, 0], "the old set goes to 0 and the new one starts at 0");
        world.settle();
        for _ in 0..3 {
            world.step();
            world.settle();
        }
        let replicas: Vec<i32> = world.sets.iter().map(spec_replicas).collect();
        assert_eq!(replicas, [0, 3]);
    }

    #[test]
    fn paused_deployments_do_not_roll_and_old_revisions_are_pruned_to_the_limit() {
        let mut d = deployment(2, "web:1", int(1), int(0));
        d.spec.revision_history_limit = Some(1);
        let mut world = World::new(d);
        for image in ["web:1", "web:2", "web:3", "web:4"] {
            world.d.spec.template.spec.containers[0].image = image.into();
            for _ in 0..10 {
                world.step();
                world.settle();
            }
        }
        let images: Vec<String> =
            world.sets.iter().map(|rs| rs.spec.template.spec.containers[0].image.clone()).collect();
        assert_eq!(images, ["web:3", "web:4"], "one old revision kept");
        world.d.spec.paused = Some(true);
        world.d.spec.template.spec.containers[0].image = "web:5".into();
        for _ in 0..5 {
            world.step();
            world.settle();
        }
        assert_eq!(world.sets.len(), 2, "no new set while paused");
        assert_eq!(world.progressing_reason().as_deref(), Some("DeploymentPaused"));
        world.d.spec.paused = None;
        for _ in 0..10 {
            world.step();
            world.settle();
        }
        assert!(world
            .sets
            .iter()
            .any(|rs| rs.spec.template.spec.containers[0].image == "web:5" && spec_replicas(rs) == 2));
    }
}
