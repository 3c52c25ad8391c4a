//! The garbage collector: deletes objects whose owners (by `ownerReferences` uid) are all gone,
//! such as a pod created while its deployment was being deleted. Kubernetes' collector does the
//! same; the cascade of a normal delete covers the rest. The runner confirms with a linearizable
//! read that no owner exists before it deletes (`Action::DeleteOrphan`).

use std::collections::BTreeSet;
use std::time::Duration;

use skiff_api::api::Filter;
use skiff_api::meta::Time;
use skiff_api::{Kind, Object};

use crate::runner::{Action, Controller, Reconciled, State};

pub struct GarbageCollector;

/// The objects among `objects` that name an owner by uid and none of whose owners is among them.
pub fn orphans<'a>(objects: impl Iterator<Item = &'a Object> + Clone) -> Vec<&'a Object> {
    let uids: BTreeSet<&str> = objects.clone().map(|o| o.meta().uid.as_str()).collect();
    objects
        .filter(|o| {
            let owners = &o.meta().owner_references;
            !owners.is_empty() && owners.iter().all(|r| !uids.contains(r.uid.as_str()))
        })
        .collect()
}

impl Controller for GarbageCollector {
    fn name(&self) -> &'static str {
        "garbage-collector"
    }

    /// Every kind an owner or a dependant may be (events are neither), metadata only: owner
    /// references and uids are all it reads, and the leader keeps every object of the cluster.
    fn watches(&self) -> Vec<(Kind, Filter)> {
        let metadata = Filter { metadata_only: true, ..Default::default() };
        Kind::ALL.into_iter().filter(|k| *k != Kind::Event).map(|k| (k, metadata.clone())).collect()
    }

    /// Orphans are rare (a dependant created while its owner was deleted): looking for them
    /// every few seconds keeps a busy cluster's leader from reading every object at each change.
    fn interval(&self) -> Duration {
        Duration::from_secs(5)
    }

    fn reconcile(&self, state: &State, _now: Time) -> Reconciled {
        let actions = orphans(state.all())
            .into_iter()
            .filter(|o| o.meta().deletion_timestamp.is_none())
            .map(|o| Action::DeleteOrphan(o.clone()))
            .collect();
        Reconciled { actions, requeue_after: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::kinds::{ConfigMap, Pod};
    use skiff_api::meta::OwnerReference;

    fn with_owner(object: &mut skiff_api::meta::ObjectMeta, name: &str, uid: &str, owner: Option<&str>) {
        object.name = name.into();
        object.namespace = "default".into();
        object.uid = uid.into();
        if let Some(owner) = owner {
            object.owner_references.push(OwnerReference {
                kind: "ConfigMap".into(),
                uid: owner.into(),
                ..Default::default()
            });
        }
    }

    #[test]
    fn only_objects_whose_every_owner_is_gone_are_deleted() {
        let mut owner = ConfigMap::default();
        with_owner(&mut owner.metadata, "owner", "u1", None);
        let mut owned = Pod::default();
        with_owner(&mut owned.metadata, "owned", "u2", Some("u1"));
        let mut orphan = Pod::default();
        with_owner(&mut orphan.metadata, "orphan", "u3", Some("gone"));
        let mut leaving = Pod::default();
        with_owner(&mut leaving.metadata, "leaving", "u4", Some("gone"));
        leaving.metadata.deletion_timestamp = Time::from_unix(1_800_000_000);
        let mut state = State::default();
        state.insert(Kind::ConfigMap, [Object::ConfigMap(owner)]);
        state.insert(Kind::Pod, [Object::Pod(owned), Object::Pod(orphan.clone()), Object::Pod(leaving)]);
        let reconciled = GarbageCollector.reconcile(&state, Time(jiff::Timestamp::now()));
        assert_eq!(reconciled.actions, vec![Action::DeleteOrphan(Object::Pod(orphan))]);
    }
}
