//! The pod worker against the in-memory runtime (a control-plane test: nothing runs): a pod reaches
//! Running with a pod IP, a crash is restarted at once and then after a back-off (shown as
//! CrashLoopBackOff), a missing image gives a reason naming the image and the node, and a deleted pod
//! has its containers stopped and removed before the object is let go.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_agent::backoff::BackoffConfig;
use skiff_agent::memory::MemoryRuntime;
use skiff_agent::pod_spec::{LABEL_CONTAINER, LABEL_POD_UID};
use skiff_agent::runtime::{ContainerRuntime, ContainerState};
use skiff_agent::worker::{PodApi, PodWorker, WorkerConfig};
use skiff_api::kinds::pod::{Container, PodStatus};
use skiff_api::kinds::{ConfigMap, Pod};
use skiff_api::meta::Time;
use tokio::sync::watch;

#[derive(Default)]
struct FakeApi {
    status: Mutex<Option<PodStatus>>,
    finalized: Mutex<bool>,
}

#[async_trait::async_trait]
impl PodApi for FakeApi {
    async fn update_status(&self, pod: &Pod) -> Result<(), String> {
        *self.status.lock().map_err(|e| e.to_string())? = pod.status.clone();
        Ok(())
    }
    async fn finalize(&self, _pod: &Pod) -> Result<(), String> {
        *self.finalized.lock().map_err(|e| e.to_string())? = true;
        Ok(())
    }
    async fn config_maps(&self, _namespace: &str) -> Result<BTreeMap<String, ConfigMap>, String> {
        Ok(BTreeMap::new())
    }
}

impl FakeApi {
    fn status(&self) -> PodStatus {
        self.status.lock().ok().and_then(|s| s.clone()).unwrap_or_default()
    }
}

fn pod(image: &str) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = "web".into();
    p.metadata.namespace = "default".into();
    p.metadata.uid = "11111111-2222-3333-4444-555555555555".into();
    p.spec.node_name = Some("node1".into());
    p.spec.restart_policy = Some("Always".into());
    p.spec.termination_grace_period_seconds = Some(5);
    p.spec.containers.push(Container { name: "app".into(), image: image.into(), ..Default::default() });
    p
}

fn config() -> WorkerConfig {
    WorkerConfig {
        cluster_id: "c1".into(),
        node: "node1".into(),
        host_ip: Some("192.168.0.1".into()),
        extra_labels: BTreeMap::new(),
        sandbox_image: "skiff-pause:1".into(),
        network: None,
        backoff: BackoffConfig {
            base: Duration::from_millis(300),
            cap: Duration::from_secs(2),
            reset_after: Duration::from_secs(60),
        },
        resync: Duration::from_millis(100),
    }
}

async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn app_id(rt: &MemoryRuntime, uid: &str) -> Option<String> {
    let labels = BTreeMap::from([
        (LABEL_POD_UID.to_string(), uid.to_string()),
        (LABEL_CONTAINER.to_string(), "app".to_string()),
    ]);
    rt.list(&labels)
        .await
        .ok()?
        .into_iter()
        .filter(|c| matches!(c.state, ContainerState::Running { .. }))
        .map(|c| c.id)
        .next()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_runs_restarts_with_back_off_and_goes_when_deleted() {
    let rt = Arc::new(MemoryRuntime::new());
    let api = Arc::new(FakeApi::default());
    let p = pod("web:1");
    let (tx, rx) = watch::channel(Some(p.clone()));
    let worker = tokio::spawn(PodWorker::new(rt.clone(), api.clone(), config()).run(rx));

    let status = until("Running", || Some(api.status()).filter(|s| s.phase.as_deref() == Some("Running"))).await;
    assert!(status.pod_ip.as_deref().is_some_and(|ip| ip.starts_with("10.0.0.")), "{status:?}");
    assert_eq!(status.host_ip.as_deref(), Some("192.168.0.1"));
    assert!(status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));

    // First crash: restarted at once (restartCount 1, lastState exit 1).
    let first = app_id(&rt, &p.metadata.uid).await.expect("running app");
    rt.exit(&first, 1).expect("crash");
    until("the first restart", || {
        let s = api.status();
        let c = s.container_statuses.first()?;
        (c.restart_count == 1 && c.state.as_ref()?.running.is_some()).then_some(())
    })
    .await;
    // Second crash: CrashLoopBackOff for the back-off, then running again.
    let second = until("the restarted container", || {
        futures::executor::block_on(app_id(&rt, &p.metadata.uid)).filter(|id| *id != first)
    })
    .await;
    rt.exit(&second, 2).expect("crash");
    let waiting = until("CrashLoopBackOff", || {
        let s = api.status();
        let c = s.container_statuses.first()?.clone();
        let backing_off =
            c.state.as_ref()?.waiting.as_ref().is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"));
        backing_off.then_some(c)
    })
    .await;
    assert_eq!(waiting.last_state.and_then(|s| s.terminated).map(|t| t.exit_code), Some(2));
    until("the second restart", || {
        let s = api.status();
        let c = s.container_statuses.first()?;
        (c.restart_count == 2 && c.state.as_ref()?.running.is_some()).then_some(())
    })
    .await;

    // Deletion: containers stopped and removed, then the object is let go.
    let mut deleted = p.clone();
    deleted.metadata.deletion_timestamp = Time::from_unix(jiff::Timestamp::now().as_second() + 5);
    deleted.metadata.deletion_grace_period_seconds = Some(5);
    tx.send_replace(Some(deleted));
    until("finalized", || api.finalized.lock().ok().filter(|f| **f).map(|_| ())).await;
    tokio::time::timeout(Duration::from_secs(5), worker).await.expect("the worker ends").expect("no panic");
    assert_eq!(rt.count(), 0, "every container is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_a_waiting_reason_naming_image_and_node() {
    let rt = Arc::new(MemoryRuntime::with_images(&["skiff-pause:1"]));
    let api = Arc::new(FakeApi::default());
    let (_tx, rx) = watch::channel(Some(pod("nginx:1.14.2")));
    let _worker = tokio::spawn(PodWorker::new(rt.clone(), api.clone(), config()).run(rx));
    let waiting = until("a waiting reason", || {
        api.status().container_statuses.first()?.state.as_ref()?.waiting.clone().filter(|w| w.reason.is_some())
    })
    .await;
    assert_eq!(waiting.reason.as_deref(), Some("ErrImageNeverPull"));
    let message = waiting.message.unwrap_or_default();
    assert!(message.contains("\"nginx:1.14.2\"") && message.contains("node \"node1\""), "{message}");
    assert_eq!(api.status().phase.as_deref(), Some("Pending"));
}

/// An exec probe whose command is `command` followed by a word that names it in the runtime's log.
fn exec_probe(command: &str, name: &str) -> skiff_api::kinds::pod::Probe {
    use skiff_api::kinds::pod::{ExecAction, Probe};
    Probe {
        exec: Some(ExecAction { command: vec![command.into(), name.into()] }),
        period_seconds: Some(1),
        failure_threshold: Some(2),
        ..Default::default()
    }
}

/// How many execs so far ran the probe named `name`.
fn runs_of(rt: &MemoryRuntime, name: &str) -> usize {
    rt.execs().iter().filter(|c| c.get(1).map(String::as_str) == Some(name)).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_startup_probe_restarts_the_container_and_keeps_it_unready() {
    let rt = Arc::new(MemoryRuntime::new());
    let api = Arc::new(FakeApi::default());
    let mut p = pod("web:1");
    p.spec.containers[0].startup_probe = Some(exec_probe("false", "startup"));
    // Liveness and readiness would pass; neither may run before the startup probe succeeds.
    p.spec.containers[0].liveness_probe = Some(exec_probe("true", "liveness"));
    p.spec.containers[0].readiness_probe = Some(exec_probe("true", "readiness"));
    let (_tx, rx) = watch::channel(Some(p));
    let _worker = tokio::spawn(PodWorker::new(rt.clone(), api.clone(), config()).run(rx));
    let status = until("a restart after the startup probe failed", || {
        let s = api.status();
        (s.container_statuses.first()?.restart_count >= 1).then_some(s)
    })
    .await;
    assert!(status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "False"), "{status:?}");
    assert!(!status.container_statuses[0].ready);
    assert!(runs_of(&rt, "startup") >= 2, "the startup probe ran until its failure threshold: {:?}", rt.execs());
    assert_eq!(runs_of(&rt, "liveness"), 0, "liveness waited for the startup probe: {:?}", rt.execs());
    assert_eq!(runs_of(&rt, "readiness"), 0, "readiness waited for the startup probe: {:?}", rt.execs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_and_readiness_start_only_after_the_startup_probe_succeeds() {
    let rt = Arc::new(MemoryRuntime::new());
    let api = Arc::new(FakeApi::default());
    let mut p = pod("web:1");
    p.spec.containers[0].startup_probe = Some(exec_probe("true", "startup"));
    p.spec.containers[0].liveness_probe = Some(exec_probe("true", "liveness"));
    p.spec.containers[0].readiness_probe = Some(exec_probe("true", "readiness"));
    let (_tx, rx) = watch::channel(Some(p));
    let _worker = tokio::spawn(PodWorker::new(rt.clone(), api.clone(), config()).run(rx));
    until("Ready after the startup probe passed", || {
        api.status().conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
    })
    .await;
    until("liveness probing", || (runs_of(&rt, "liveness") >= 1).then_some(())).await;
    let execs = rt.execs();
    let first = |name: &str| execs.iter().position(|c| c.get(1).map(String::as_str) == Some(name));
    let startup = first("startup").expect("the startup probe ran");
    assert!(first("liveness").is_some_and(|l| l > startup), "liveness only after startup succeeded: {execs:?}");
    assert!(first("readiness").is_some_and(|r| r > startup), "readiness only after startup succeeded: {execs:?}");
    assert_eq!(api.status().container_statuses[0].restart_count, 0);
}
