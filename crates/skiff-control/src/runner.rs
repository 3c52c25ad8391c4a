//! The runner: runs a controller while this member leads, and only then.
//!
//! On becoming leader it starts fresh reflectors of what the controller watches (a full list: it
//! depends on nothing a previous leader kept in memory; controllers that watch the same objects in
//! the same term share one, see [`Reflectors`]) and, once they are synced, feeds their
//! state to the controller's pure `reconcile` whenever something changes or a requeue is due,
//! applying the actions it returns through the `ResourceApi`. Before every write it checks that
//! this member still leads in the same term: a deposed leader stops before its next write. The API
//! it is given serves here only (never forwards), so a write that raced with the loss of
//! leadership fails in Raft instead of being carried to the new leader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::select_all;
use futures::StreamExt;
use skiff_api::api::{Consistency, DeleteOptions, Filter, ResourceApi};
use skiff_api::kinds::Event;
use skiff_api::meta::Time;
use skiff_api::{ApiError, Kind, Object, Reason};
use tokio::sync::watch;

use crate::events::Correlator;
use crate::reflector::{Reflector, Reflectors};

/// Who leads, as the runner needs it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Leadership {
    pub term: u64,
    /// This member leads `term`.
    pub leads: bool,
}

/// What a controller asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create(Object),
    Apply(Object),
    UpdateStatus(Object),
    Bind {
        namespace: String,
        name: String,
        node: String,
    },
    /// Delete exactly this object: its uid and resourceVersion are preconditions.
    Delete(Object),
    /// Delete an object whose owners seem gone, after confirming with a linearizable read that
    /// none of them exists (a reflector of the owner's kind may lag the dependant's).
    DeleteOrphan(Object),
    /// Record an event (a repeated one counts up on the earlier one).
    Record(Event),
}

/// The state a controller decides from: a snapshot of each reflector, by kind.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Shared with the reflectors' caches: taking a snapshot copies pointers, not objects.
    pub objects: BTreeMap<Kind, Vec<Arc<Object>>>,
    /// How long ago each node renewed with this leader (for controllers that read renewals).
    pub renewals: BTreeMap<String, Duration>,
    /// How long this member has led: a node it has not heard from yet has had this long.
    pub leading_for: Duration,
}

impl State {
    /// Every object of `kind`.
    pub fn of(&self, kind: Kind) -> &[Arc<Object>] {
        self.objects.get(&kind).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every object of every kind.
    pub fn all(&self) -> impl Iterator<Item = &Object> + Clone {
        self.objects.values().flatten().map(|o| o.as_ref())
    }

    /// How long `node` has been silent as this leader knows it: since its last renewal, and at
    /// most since this member began to lead (a new leader gives every node a full grace period).
    pub fn silence(&self, node: &str) -> Duration {
        self.renewals.get(node).map_or(self.leading_for, |age| (*age).min(self.leading_for))
    }

    /// Adds `objects` of `kind` (tests build states by hand).
    pub fn insert(&mut self, kind: Kind, objects: impl IntoIterator<Item = Object>) {
        self.objects.entry(kind).or_default().extend(objects.into_iter().map(Arc::new));
    }
}

/// A controller's answer: what to do now, and when to look again if nothing changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reconciled {
    pub actions: Vec<Action>,
    pub requeue_after: Option<Duration>,
}

impl Reconciled {
    /// Adds another object's answer: both sets of actions, the sooner requeue.
    pub fn merge(&mut self, other: Reconciled) {
        self.actions.extend(other.actions);
        self.requeue_after = match (self.requeue_after, other.requeue_after) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// A controller: what it watches and a pure decision over it.
pub trait Controller: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// The kinds (with filters) it decides from; the runner keeps a reflector of each.
    fn watches(&self) -> Vec<(Kind, Filter)>;
    /// The actions that move the cluster toward what it should be. No IO.
    fn reconcile(&self, state: &State, now: Time) -> Reconciled;
    /// The least time between the starts of two reconciles: changes that arrive meanwhile are
    /// decided together. A reconcile reads the whole state, so this bounds what a stream of
    /// changes costs the leader.
    fn interval(&self) -> Duration {
        INTERVAL
    }
    /// Whether it decides from the nodes' renewals ([`State::renewals`]).
    fn reads_renewals(&self) -> bool {
        false
    }
}

/// The default least time between two reconciles.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// How often a controller reconciles when nothing changes.
const RESYNC: Duration = Duration::from_secs(30);

/// Runs `controller` whenever `leadership` says this member leads, until the leadership channel
/// closes (the member stops).
pub async fn run(
    controller: Arc<dyn Controller>,
    api: Arc<dyn ResourceApi>,
    mut leadership: watch::Receiver<Leadership>,
    reflectors: Reflectors,
) {
    loop {
        let term = loop {
            let now = *leadership.borrow_and_update();
            if now.leads {
                break now.term;
            }
            if leadership.changed().await.is_err() {
                return;
            }
        };
        tracing::info!(controller = controller.name(), term, "leading: the controller starts");
        lead(&controller, &api, &mut leadership, term, &reflectors).await;
        tracing::info!(controller = controller.name(), term, "no longer leading: the controller stopped");
        if leadership.has_changed().is_err() {
            return; // the member stops
        }
    }
}

fn still_leads(leadership: &watch::Receiver<Leadership>, term: u64) -> bool {
    let now = *leadership.borrow();
    now.leads && now.term == term
}

/// One term of leadership: from fresh reflectors until it is lost.
async fn lead(
    controller: &Arc<dyn Controller>,
    api: &Arc<dyn ResourceApi>,
    leadership: &mut watch::Receiver<Leadership>,
    term: u64,
    shared: &Reflectors,
) {
    let led_since = tokio::time::Instant::now();
    let reflectors: Vec<(Kind, Reflector)> =
        controller.watches().into_iter().map(|(kind, filter)| (kind, shared.get(api, term, kind, filter))).collect();
    // Wait until every cache is filled (or leadership is lost meanwhile).
    for (_, r) in &reflectors {
        tokio::select! {
            _ = r.synced() => {}
            changed = leadership.changed() => if changed.is_err() { return },
        }
        if !still_leads(leadership, term) {
            return;
        }
    }
    let mut changes: Vec<watch::Receiver<u64>> = reflectors.iter().map(|(_, r)| r.changes()).collect();
    let mut events = Correlator::default();
    loop {
        if !still_leads(leadership, term) {
            return;
        }
        let started = tokio::time::Instant::now();
        let mut state = State::default();
        for (kind, r) in &reflectors {
            state.objects.entry(*kind).or_default().extend(r.list());
        }
        if controller.reads_renewals() {
            state.renewals = api.renewals();
            state.leading_for = led_since.elapsed();
        }
        for c in &mut changes {
            c.borrow_and_update();
        }
        // A reconcile reads the whole state (tens of milliseconds at 30,000 pods): it runs on a
        // blocking thread, so that it never holds up a runtime worker that Raft's heartbeats and
        // appends need (openraft gives them 30 ms).
        let decide = controller.clone();
        let now = Time(jiff::Timestamp::now());
        let reconciled = match tokio::task::spawn_blocking(move || decide.reconcile(&state, now)).await {
            Ok(reconciled) => reconciled,
            // A panicking reconcile is a bug: it ends this runner as it would have inline.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return, // the runtime shuts down
        };
        // The actions of one reconcile are independent: they run together, so that their writes
        // share Raft entries, and each checks leadership just before it is sent.
        let lead = &*leadership;
        let actions = events.correlate(reconciled.actions, now);
        let done: Vec<Option<Expectation>> = futures::stream::iter(actions)
            .map(|action| async move {
                if !still_leads(lead, term) {
                    return None;
                }
                match execute(api.as_ref(), &action).await {
                    Ok(written) => written,
                    Err(e) => {
                        tracing::debug!(controller = controller.name(), ?action, error = %e, "action failed; the next reconcile decides again");
                        None
                    }
                }
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        if !still_leads(leadership, term) {
            return;
        }
        // Decide next from a state that includes these writes, or it would do them again.
        let expected: Vec<Expectation> = done.into_iter().flatten().collect();
        if !caught_up(&reflectors, &expected, &mut changes, leadership).await {
            return;
        }
        // Having written, decide again: the state changed (and waiting for the writes to show
        // may have taken the news of other changes with it). Otherwise wait for news.
        if expected.is_empty() {
            let wait = reconciled.requeue_after.unwrap_or(RESYNC);
            let changed = select_all(changes.iter_mut().map(|c| Box::pin(c.changed())));
            tokio::select! {
                changed = leadership.changed() => if changed.is_err() { return },
                _ = changed => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        // Let changes gather until the interval since this reconcile started has passed.
        tokio::select! {
            changed = leadership.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(started + controller.interval()) => {}
        }
    }
}

/// How many actions of one reconcile are in flight at once.
const IN_FLIGHT: usize = 256;
/// How long the runner waits for its reflectors to show its own writes before deciding again.
const CATCH_UP: Duration = Duration::from_secs(2);

/// A write the reflectors must show before the next reconcile.
#[derive(Debug, Clone, PartialEq)]
pub enum Expectation {
    /// The object at this resourceVersion or later.
    Written { kind: Kind, namespace: String, name: String, resource_version: u64 },
    /// The object gone, or changed since this resourceVersion (a graceful deletion).
    Deleted { kind: Kind, namespace: String, name: String, resource_version: u64 },
}

impl Expectation {
    fn written(object: &Object) -> Self {
        let m = object.meta();
        Expectation::Written {
            kind: object.kind(),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            resource_version: m.resource_version.parse().unwrap_or(0),
        }
    }

    fn deleted(object: &Object) -> Self {
        let m = object.meta();
        Expectation::Deleted {
            kind: object.kind(),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            resource_version: m.resource_version.parse().unwrap_or(0),
        }
    }

    /// Whether `reflectors` show it (a kind nobody reflects never will: it is not waited for).
    fn met(&self, reflectors: &[(Kind, Reflector)]) -> bool {
        let rv = |o: &Object| o.meta().resource_version.parse::<u64>().unwrap_or(0);
        let (Expectation::Written { kind, namespace, name, .. } | Expectation::Deleted { kind, namespace, name, .. }) =
            self;
        let Some((_, r)) = reflectors.iter().find(|(k, _)| k == kind) else { return true };
        let cached = r.get(namespace, name);
        match self {
            Expectation::Written { resource_version, .. } => cached.is_some_and(|o| rv(&o) >= *resource_version),
            Expectation::Deleted { resource_version, .. } => cached.is_none_or(|o| rv(&o) > *resource_version),
        }
    }
}

/// Waits until the reflectors show every expected write, at most [`CATCH_UP`]. False when the
/// member stops meanwhile.
async fn caught_up(
    reflectors: &[(Kind, Reflector)],
    expected: &[Expectation],
    changes: &mut [watch::Receiver<u64>],
    leadership: &mut watch::Receiver<Leadership>,
) -> bool {
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    loop {
        if expected.iter().all(|e| e.met(reflectors)) {
            return true;
        }
        let changed = select_all(changes.iter_mut().map(|c| Box::pin(c.changed())));
        tokio::select! {
            changed = leadership.changed() => if changed.is_err() { return false },
            _ = changed => {}
            _ = tokio::time::sleep_until(deadline) => {
                tracing::debug!(?expected, "the reflectors did not show this controller's writes in time");
                return true;
            }
        }
    }
}

/// Performs one action; what the reflectors will show of it, if anything.
pub async fn execute(api: &dyn ResourceApi, action: &Action) -> Result<Option<Expectation>, ApiError> {
    let written = |o: Object| Some(Expectation::written(&o));
    match action {
        Action::Create(o) => api.create(o.clone()).await.map(written),
        Action::Apply(o) => api.apply(o.clone(), false).await.map(|(o, _)| written(o)),
        Action::UpdateStatus(o) => api.update_status(o.clone()).await.map(written),
        Action::Bind { namespace, name, node } => api.bind(namespace, name, node).await.map(written),
        Action::Delete(o) => delete_exactly(api, o).await,
        Action::Record(event) => crate::events::record(api, event).await.map(|_| None),
        Action::DeleteOrphan(o) => {
            for owner in &o.meta().owner_references {
                let Some(kind) = Kind::lookup(&owner.kind) else { continue };
                let namespace = if kind.namespaced() { o.meta().namespace.as_str() } else { "" };
                match api.get(kind, namespace, &owner.name, Consistency::Linearizable).await {
                    Ok(found) if found.meta().uid == owner.uid => return Ok(None), // the owner lives
                    Ok(_) => {}
                    Err(e) if e.is(Reason::NotFound) => {}
                    Err(e) => return Err(e),
                }
            }
            delete_exactly(api, o).await
        }
    }
}

/// Deletes `object` only if it is still the same object at the same resourceVersion.
async fn delete_exactly(api: &dyn ResourceApi, object: &Object) -> Result<Option<Expectation>, ApiError> {
    let m = object.meta();
    let options = DeleteOptions {
        uid: Some(m.uid.clone()),
        resource_version: m.resource_version.parse().ok(),
        ..Default::default()
    };
    match api.delete(object.kind(), &m.namespace, &m.name, &options).await {
        Ok(_) => Ok(Some(Expectation::deleted(object))),
        Err(e) if e.is(Reason::NotFound) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::api::{ApplyOutcome, Deleted, ObjectList, WatchOptions, WatchStream};
    use skiff_api::kinds::ConfigMap;
    use skiff_api::memory::MemoryApi;

    /// Wants config maps `a` and `b` to exist.
    struct WantsTwo;

    impl Controller for WantsTwo {
        fn name(&self) -> &'static str {
            "wants-two"
        }
        fn watches(&self) -> Vec<(Kind, Filter)> {
            vec![(Kind::ConfigMap, Filter::default())]
        }
        fn reconcile(&self, state: &State, _now: Time) -> Reconciled {
            let have: Vec<&str> = state.of(Kind::ConfigMap).iter().map(|o| o.meta().name.as_str()).collect();
            let actions = ["a", "b"]
                .into_iter()
                .filter(|n| !have.contains(n))
                .map(|n| {
                    let mut c = ConfigMap::default();
                    c.metadata.name = n.into();
                    Action::Create(Object::ConfigMap(c))
                })
                .collect();
            Reconciled { actions, requeue_after: None }
        }
    }

    /// The cluster, but the first write also deposes this member.
    struct DeposedOnFirstWrite {
        api: MemoryApi,
        leadership: std::sync::Mutex<Option<watch::Sender<Leadership>>>,
    }

    #[async_trait::async_trait]
    impl ResourceApi for DeposedOnFirstWrite {
        async fn get(&self, k: Kind, ns: &str, n: &str, c: Consistency) -> Result<Object, ApiError> {
            self.api.get(k, ns, n, c).await
        }
        async fn list(&self, k: Kind, f: &Filter, c: Consistency) -> Result<ObjectList, ApiError> {
            self.api.list(k, f, c).await
        }
        async fn watch(&self, k: Kind, o: WatchOptions) -> Result<WatchStream, ApiError> {
            self.api.watch(k, o).await
        }
        async fn apply(&self, o: Object, d: bool) -> Result<(Object, ApplyOutcome), ApiError> {
            self.api.apply(o, d).await
        }
        async fn create(&self, o: Object) -> Result<Object, ApiError> {
            let created = self.api.create(o).await;
            if let Some(deposing) = self.leadership.lock().ok().and_then(|mut l| l.take()) {
                deposing.send_modify(|l| l.leads = false);
            }
            created
        }
        async fn update_status(&self, o: Object) -> Result<Object, ApiError> {
            self.api.update_status(o).await
        }
        async fn bind(&self, ns: &str, n: &str, node: &str) -> Result<Object, ApiError> {
            self.api.bind(ns, n, node).await
        }
        async fn delete(&self, k: Kind, ns: &str, n: &str, o: &DeleteOptions) -> Result<Deleted, ApiError> {
            self.api.delete(k, ns, n, o).await
        }
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        skiff_testkit::eventually(what, Duration::from_secs(10), || async { check().then_some(()) }).await
    }

    #[tokio::test]
    async fn a_controller_runs_only_while_leading_and_stops_before_its_next_write() {
        let memory = MemoryApi::new();
        let (tx, rx) = watch::channel(Leadership { term: 1, leads: false });
        let api =
            Arc::new(DeposedOnFirstWrite { api: memory.clone(), leadership: std::sync::Mutex::new(Some(tx.clone())) });
        let runner = tokio::spawn(run(Arc::new(WantsTwo), api, rx, Reflectors::default()));
        skiff_testkit::consistently("a follower does nothing", Duration::from_millis(200), || async {
            memory.writes().is_empty()
        })
        .await;

        // It leads: the first create deposes it, and the second is never sent.
        tx.send_replace(Leadership { term: 2, leads: true });
        until("the first create", || !memory.writes().is_empty()).await;
        skiff_testkit::consistently("stopped before its next write", Duration::from_millis(200), || async {
            memory.writes() == ["create ConfigMap default/a"]
        })
        .await;

        // Leading again (a new term), it starts from a fresh list and finishes the job.
        tx.send_replace(Leadership { term: 3, leads: true });
        until("the second create", || memory.writes().len() == 2).await;
        assert_eq!(memory.writes()[1], "create ConfigMap default/b");
        drop(tx);
        tokio::time::timeout(Duration::from_secs(5), runner)
            .await
            .expect("ends with its leadership channel")
            .expect("no panic");
    }
}
