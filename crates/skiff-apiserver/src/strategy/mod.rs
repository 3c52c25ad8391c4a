//! What the server does to an object when it is created, updated and deleted: defaults and names,
//! server-set fields, update rules and immutable fields, graceful deletion. Kind-specific rules live
//! in one module per kind (`pod`, `deployment`); kinds without their own rules follow the general
//! ones here. Pure: the time and the new uid are inputs, so tests assert exact outputs.

pub mod deployment;
pub mod pod;
pub mod service;

use skiff_api::api::DeleteOptions;
use skiff_api::defaults::apply_defaults;
use skiff_api::meta::Time;
use skiff_api::validate::validate;
use skiff_api::{ApiError, Kind, Object};

/// What a decision may not read for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    pub now: Time,
    /// The uid a created object gets (also the source of a `generateName` suffix).
    pub uid: String,
}

impl Context {
    /// The real clock and a random uid.
    pub fn now() -> Self {
        Context { now: Time(jiff::Timestamp::now()), uid: uuid::Uuid::new_v4().to_string() }
    }
}

/// Validates, defaults and names a new or changed object.
pub fn prepare(mut object: Object, ctx: &Context) -> Result<Object, ApiError> {
    apply_defaults(&mut object);
    let m = object.meta_mut();
    if m.name.is_empty() && !m.generate_name.is_empty() {
        m.name = format!("{}{}", m.generate_name, name_suffix(&ctx.uid));
    }
    let errors = validate(&object);
    if !errors.is_empty() {
        return Err(ApiError::invalid(&object, &errors));
    }
    Ok(object)
}

/// Five characters from Kubernetes' alphabet for generated names (no vowels, no look-alikes).
fn name_suffix(uid: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325; // FNV-1a over the uid
    for b in uid.bytes() {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (0..5)
        .map(|i| {
            let digit = (hash >> (i * 12)) as usize % ALPHABET.len();
            ALPHABET[digit] as char
        })
        .collect()
}

/// The object as it is first stored: a new uid, generation 1, the creation time, no deletion and
/// (but for nodes and namespaces, whose creators report their state) no status.
pub fn for_create(mut object: Object, ctx: &Context) -> Object {
    let keeps_status = matches!(object.kind(), Kind::Node | Kind::Namespace);
    let m = object.meta_mut();
    m.uid = ctx.uid.clone();
    m.generation = Some(1);
    m.creation_timestamp = Some(ctx.now);
    m.resource_version.clear();
    m.deletion_timestamp = None;
    m.deletion_grace_period_seconds = None;
    if !keeps_status {
        let empty = match &object {
            Object::Pod(_) => Object::Pod(Default::default()),
            Object::Deployment(_) => Object::Deployment(Default::default()),
            Object::Service(_) => Object::Service(Default::default()),
            other => other.clone(),
        };
        object.copy_status_from(&empty);
    }
    object
}

/// The update of `current` to what the user sent (kubectl apply): the uid, creation time, owners,
/// binding and status stay; `generation` moves when the desired state changes.
pub fn for_update(current: &Object, mut next: Object) -> Result<Object, ApiError> {
    if current.meta().deletion_timestamp.is_some() {
        return Err(ApiError::conflict(format!("{} is being deleted: it cannot be changed", current.describe())));
    }
    match (current, &mut next) {
        (Object::Pod(cur), Object::Pod(new)) => {
            pod::keep_binding(cur, new)?;
            pod::immutable(cur, new)?;
        }
        (Object::Deployment(cur), Object::Deployment(new)) => deployment::immutable(cur, new)?,
        _ => {}
    }
    let spec_changed = !current.same_desired_state(&next);
    let cur = current.meta();
    let m = next.meta_mut();
    m.uid = cur.uid.clone();
    m.creation_timestamp = cur.creation_timestamp;
    m.resource_version = cur.resource_version.clone();
    m.deletion_timestamp = None;
    m.deletion_grace_period_seconds = None;
    m.generation = Some(cur.generation.unwrap_or(1) + i64::from(spec_changed));
    if m.owner_references.is_empty() {
        m.owner_references = cur.owner_references.clone();
    }
    if m.generate_name.is_empty() {
        m.generate_name = cur.generate_name.clone();
    }
    // What controllers record in annotations stays unless the update names it: a user's manifest
    // applied again does not erase the deployment's revision (kubectl's three-way merge keeps it too).
    for (key, value) in &cur.annotations {
        if CONTROLLER_ANNOTATIONS.iter().any(|prefix| key.starts_with(prefix)) && !m.annotations.contains_key(key) {
            m.annotations.insert(key.clone(), value.clone());
        }
    }
    next.copy_status_from(current);
    Ok(next)
}

/// Annotation prefixes that controllers own (`deployment.kubernetes.io/revision`).
pub const CONTROLLER_ANNOTATIONS: [&str; 1] = ["deployment.kubernetes.io/"];

/// How an object goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Deletion {
    /// Removed now.
    Remove,
    /// Marked with `deletionTimestamp` (this object): its node's agent stops it and removes it.
    Graceful(Object),
    /// Already terminating at least as fast as asked: nothing to write.
    AlreadyGraceful(Object),
}

/// How `object` is deleted with `options` at `now`: a pod bound to a node gets its grace period
/// (unless forced or given 0); everything else is removed at once.
pub fn for_delete(object: &Object, options: &DeleteOptions, now: Time) -> Deletion {
    let grace = match object {
        Object::Pod(p) => pod::grace_period(p, options),
        _ => None,
    };
    let Some(grace) = grace else {
        return Deletion::Remove;
    };
    let mut marked = object.clone();
    let deadline = Time::from_unix(now.unix_seconds().saturating_add(grace)).unwrap_or(now);
    let m = marked.meta_mut();
    if let (Some(existing), Some(current_grace)) = (m.deletion_timestamp, m.deletion_grace_period_seconds) {
        if existing <= deadline && current_grace <= grace {
            return Deletion::AlreadyGraceful(marked);
        }
    }
    m.deletion_timestamp = Some(deadline);
    m.deletion_grace_period_seconds = Some(grace);
    Deletion::Graceful(marked)
}

/// An object the server assembled (the user's spec with the stored status) must still fit.
pub fn check_size(object: &Object) -> Result<(), ApiError> {
    match skiff_api::validate::check_size(object) {
        Some(e) => Err(ApiError::invalid(object, &[e])),
        None => Ok(()),
    }
}

/// The error for a write based on a resourceVersion that is no longer current.
pub fn stale(object: &Object, expected: u64, actual: u64) -> ApiError {
    ApiError::conflict(format!(
        "{} was modified: it is at resourceVersion {actual}, the update was based on {expected}; read it again and reapply your change",
        object.describe()
    ))
    .about(object.kind(), &object.meta().name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::kinds::{ConfigMap, Pod};

    fn ctx() -> Context {
        Context { now: Time::from_unix(1_800_000_000).expect("time"), uid: "u-1".into() }
    }

    fn config_map(name: &str) -> Object {
        let mut c = ConfigMap::default();
        c.metadata.name = name.into();
        c.data.insert("k".into(), "v".into());
        Object::ConfigMap(c)
    }

    #[test]
    fn prepare_defaults_names_and_validates() {
        let mut c = ConfigMap::default();
        c.metadata.generate_name = "cfg-".into();
        let prepared = prepare(Object::ConfigMap(c), &ctx()).expect("valid");
        assert_eq!(prepared.meta().namespace, "default");
        assert_eq!(prepared.meta().name.len(), "cfg-".len() + 5);
        assert!(prepared.meta().name.starts_with("cfg-"));
        assert_eq!(prepare(prepared.clone(), &ctx()).expect("again").meta().name, prepared.meta().name);

        let bad = prepare(config_map("Not_A_Name"), &ctx()).expect_err("invalid");
        assert_eq!(bad.reason, skiff_api::Reason::Invalid);
        assert_eq!(bad.causes[0].field, "metadata.name");
    }

    #[test]
    fn create_sets_uid_time_and_generation_and_drops_a_pods_status() {
        let mut pod = Pod::default();
        pod.metadata.name = "web".into();
        pod.metadata.resource_version = "5".into();
        pod.status = Some(skiff_api::kinds::pod::PodStatus { phase: Some("Running".into()), ..Default::default() });
        let created = for_create(Object::Pod(pod), &ctx());
        let m = created.meta();
        assert_eq!((m.uid.as_str(), m.generation, m.creation_timestamp), ("u-1", Some(1), Some(ctx().now)));
        assert!(m.resource_version.is_empty());
        let Object::Pod(p) = created else { panic!("a pod") };
        assert_eq!(p.status, None, "the status a user sent is not stored");
    }

    #[test]
    fn an_update_keeps_server_fields_and_moves_generation_only_on_a_spec_change() {
        let current = for_create(config_map("c"), &ctx());
        let same = for_update(&current, config_map("c")).expect("update");
        assert_eq!(same.meta().generation, Some(1));
        assert_eq!(same.meta().uid, "u-1");
        let Object::ConfigMap(mut changed) = config_map("c") else { unreachable!() };
        changed.data.insert("k".into(), "w".into());
        let next = for_update(&current, Object::ConfigMap(changed)).expect("update");
        assert_eq!(next.meta().generation, Some(2));
        assert_eq!(next.meta().creation_timestamp, Some(ctx().now));
    }

    #[test]
    fn annotations_that_controllers_own_survive_an_update_that_does_not_name_them() {
        let mut current = for_create(config_map("c"), &ctx());
        let annotations = &mut current.meta_mut().annotations;
        annotations.insert("deployment.kubernetes.io/revision".into(), "3".into());
        annotations.insert("team".into(), "web".into());
        let next = for_update(&current, config_map("c")).expect("update");
        let kept: Vec<&str> = next.meta().annotations.keys().map(String::as_str).collect();
        assert_eq!(kept, ["deployment.kubernetes.io/revision"], "the user's own annotation goes, the revision stays");
        let mut named = config_map("c");
        named.meta_mut().annotations.insert("deployment.kubernetes.io/revision".into(), "4".into());
        let next = for_update(&current, named).expect("update");
        assert_eq!(next.meta().annotations["deployment.kubernetes.io/revision"], "4");
    }

    #[test]
    fn an_object_being_deleted_cannot_be_updated() {
        let mut current = for_create(config_map("c"), &ctx());
        current.meta_mut().deletion_timestamp = Some(ctx().now);
        let e = for_update(&current, config_map("c")).expect_err("refused");
        assert_eq!(e.reason, skiff_api::Reason::Conflict);
        assert!(e.message.contains("being deleted"), "{e}");
    }

    #[test]
    fn only_a_bound_pod_is_deleted_gracefully_and_never_slower_than_asked_before() {
        let now = ctx().now;
        assert_eq!(for_delete(&config_map("c"), &DeleteOptions::default(), now), Deletion::Remove);
        let mut pod = Pod::default();
        pod.metadata.name = "web".into();
        assert_eq!(for_delete(&Object::Pod(pod.clone()), &DeleteOptions::default(), now), Deletion::Remove);
        pod.spec.node_name = Some("node1".into());
        pod.spec.termination_grace_period_seconds = Some(10);
        let Deletion::Graceful(marked) = for_delete(&Object::Pod(pod.clone()), &DeleteOptions::default(), now) else {
            panic!("graceful")
        };
        assert_eq!(marked.meta().deletion_grace_period_seconds, Some(10));
        assert_eq!(marked.meta().deletion_timestamp, Time::from_unix(1_800_000_010));
        // Asking again with a longer grace period changes nothing; a shorter one moves the deadline.
        let longer = DeleteOptions { grace_period_seconds: Some(20), ..Default::default() };
        assert_eq!(for_delete(&marked, &longer, now), Deletion::AlreadyGraceful(marked.clone()));
        let shorter = DeleteOptions { grace_period_seconds: Some(2), ..Default::default() };
        let Deletion::Graceful(sooner) = for_delete(&marked, &shorter, now) else { panic!("graceful") };
        assert_eq!(sooner.meta().deletion_grace_period_seconds, Some(2));
        let forced = DeleteOptions { force: true, ..Default::default() };
        assert_eq!(for_delete(&marked, &forced, now), Deletion::Remove);
    }
}
