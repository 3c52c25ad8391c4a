//! The pod worker against the in-memory runtime (a control-plane test: nothing runs): a pod reaches
//! Running with a pod IP, a crash is restarted at once and then after a back-off (shown as
//! CrashLoopBackOff), a missing image gives a reason naming the image and the node, and a deleted pod
//! has its containers stopped and removed before the object is let go.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use skiff_agent::backoff::BackoffConfig;
use skiff_agent::memory::{MemoryProber, MemoryRuntime};
use skiff_agent::pod_spec::{LABEL_CONTAINER, LABEL_POD_UID};
use skiff_agent::runtime::{ContainerRuntime, ContainerState};
use skiff_agent::worker::{PodWorker, WorkerConfig};
use skiff_api::api::{Consistency, ResourceApi};
use skiff_api::kinds::pod::{Container, PodStatus};
use skiff_api::kinds::Pod;
use skiff_api::memory::MemoryApi;
use skiff_api::meta::Time;
use skiff_api::{Kind, Object};
use skiff_testkit::eventually;
use tokio::sync::watch;

const T: Duration = Duration::from_secs(10);

/// The pod's status as the worker last wrote it.
async fn status(api: &MemoryApi) -> PodStatus {
    match api.get(Kind::Pod, "default", "web", Consistency::Stale).await {
        Ok(Object::Pod(p)) => p.status.unwrap_or_default(),
        _ => PodStatus::default(),
    }
}

/// Stores `pod` in `api` (which gives it its uid) and starts a worker for it.
async fn start(rt: &Arc<MemoryRuntime>, api: &MemoryApi, pod: Pod) -> (Pod, watch::Sender<Option<Pod>>) {
    let created = api.create(Object::Pod(pod)).await.expect("create the pod");
    let Object::Pod(pod) = created else { panic!("a pod") };
    let (tx, rx) = watch::channel(Some(pod.clone()));
    let worker = PodWorker::new(rt.clone(), Arc::new(MemoryProber::new()), Arc::new(api.clone()), config());
    tokio::spawn(worker.run(rx));
    (pod, tx)
}

fn pod(image: &str) -> Pod {
    let mut p = Pod::default();
    p.metadata.name = "web".into();
    p.metadata.namespace = "default".into();
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
        service_access: None,
        backoff: BackoffConfig {
            base: Duration::from_millis(300),
            cap: Duration::from_secs(2),
            reset_after: Duration::from_secs(60),
        },
        resync: Duration::from_millis(100),
        starts: Arc::new(tokio::sync::Semaphore::new(skiff_agent::worker::PARALLEL_STARTS)),
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

/// The first container's status, once `check` accepts it.
async fn container_when(
    api: &MemoryApi,
    what: &str,
    check: impl Fn(&skiff_api::kinds::pod::ContainerStatus) -> bool,
) -> skiff_api::kinds::pod::ContainerStatus {
    eventually(what, T, || async { status(api).await.container_statuses.first().filter(|c| check(c)).cloned() }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_runs_restarts_with_back_off_and_goes_when_deleted() {
    let rt = Arc::new(MemoryRuntime::new());
    let api = MemoryApi::new();
    let (p, tx) = start(&rt, &api, pod("web:1")).await;

    let running = eventually("Running", T, || async {
        Some(status(&api).await).filter(|s| s.phase.as_deref() == Some("Running"))
    })
    .await;
    assert!(running.pod_ip.as_deref().is_some_and(|ip| ip.starts_with("10.0.0.")), "{running:?}");
    assert_eq!(running.host_ip.as_deref(), Some("192.168.0.1"));
    assert!(running.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));

    // First crash: restarted at once (restartCount 1, lastState exit 1).
    let first = app_id(&rt, &p.metadata.uid).await.expect("running app");
    rt.exit(&first, 1).expect("crash");
    container_when(&api, "the first restart", |c| {
        c.restart_count == 1 && c.state.as_ref().is_some_and(|s| s.running.is_some())
    })
    .await;
    // Second crash: CrashLoopBackOff for the back-off, then running again.
    let second = eventually("the restarted container", T, || async {
        app_id(&rt, &p.metadata.uid).await.filter(|id| *id != first)
    })
    .await;
    rt.exit(&second, 2).expect("crash");
    let waiting = container_when(&api, "CrashLoopBackOff", |c| {
        c.state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .is_some_and(|w| w.reason.as_deref() == Some("CrashLoopBackOff"))
    })
    .await;
    assert_eq!(waiting.last_state.and_then(|s| s.terminated).map(|t| t.exit_code), Some(2));
    container_when(&api, "the second restart", |c| {
        c.restart_count == 2 && c.state.as_ref().is_some_and(|s| s.running.is_some())
    })
    .await;

    // Deletion: containers stopped and removed, then the object is let go.
    let mut deleted = p.clone();
    deleted.metadata.deletion_timestamp = Time::from_unix(jiff::Timestamp::now().as_second() + 5);
    deleted.metadata.deletion_grace_period_seconds = Some(5);
    tx.send_replace(Some(deleted));
    eventually("finalized: the pod object removed", T, || async {
        api.get(Kind::Pod, "default", "web", Consistency::Stale).await.is_err().then_some(())
    })
    .await;
    eventually("every container removed", T, || async { (rt.count() == 0).then_some(()) }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_a_waiting_reason_naming_image_and_node() {
    let rt = Arc::new(MemoryRuntime::with_images(&["skiff-pause:1"]));
    let api = MemoryApi::new();
    let (_p, _tx) = start(&rt, &api, pod("nginx:1.14.2")).await;
    let waiting = eventually("a waiting reason", T, || async {
        status(&api).await.container_statuses.first()?.state.as_ref()?.waiting.clone().filter(|w| w.reason.is_some())
    })
    .await;
    assert_eq!(waiting.reason.as_deref(), Some("ErrImageNeverPull"));
    let message = waiting.message.unwrap_or_default();
    assert!(message.contains("\"nginx:1.14.2\"") && message.contains("node \"node1\""), "{message}");
    assert_eq!(status(&api).await.phase.as_deref(), Some("Pending"));
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
    let api = MemoryApi::new();
    let mut p = pod("web:1");
    p.spec.containers[0].startup_probe = Some(exec_probe("false", "startup"));
    // Liveness and readiness would pass; neither may run before the startup probe succeeds.
    p.spec.containers[0].liveness_probe = Some(exec_probe("true", "liveness"));
    p.spec.containers[0].readiness_probe = Some(exec_probe("true", "readiness"));
    let (_p, _tx) = start(&rt, &api, p).await;
    let restarted = eventually("a restart after the startup probe failed", T, || async {
        let s = status(&api).await;
        (s.container_statuses.first()?.restart_count >= 1).then_some(s)
    })
    .await;
    assert!(restarted.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "False"), "{restarted:?}");
    assert!(!restarted.container_statuses[0].ready);
    assert!(runs_of(&rt, "startup") >= 2, "the startup probe ran until its failure threshold: {:?}", rt.execs());
    assert_eq!(runs_of(&rt, "liveness"), 0, "liveness waited for the startup probe: {:?}", rt.execs());
    assert_eq!(runs_of(&rt, "readiness"), 0, "readiness waited for the startup probe: {:?}", rt.execs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_and_readiness_start_only_after_the_startup_probe_succeeds() {
    let rt = Arc::new(MemoryRuntime::new());
    let api = MemoryApi::new();
    let mut p = pod("web:1");
    p.spec.containers[0].startup_probe = Some(exec_probe("true", "startup"));
    p.spec.containers[0].liveness_probe = Some(exec_probe("true", "liveness"));
    p.spec.containers[0].readiness_probe = Some(exec_probe("true", "readiness"));
    let (_p, _tx) = start(&rt, &api, p).await;
    eventually("Ready after the startup probe passed", T, || async {
        status(&api).await.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
    })
    .await;
    eventually("liveness probing", T, || async { (runs_of(&rt, "liveness") >= 1).then_some(()) }).await;
    let execs = rt.execs();
    let first = |name: &str| execs.iter().position(|c| c.get(1).map(String::as_str) == Some(name));
    let startup = first("startup").expect("the startup probe ran");
    assert!(first("liveness").is_some_and(|l| l > startup), "liveness only after startup succeeded: {execs:?}");
    assert!(first("readiness").is_some_and(|r| r > startup), "readiness only after startup succeeded: {execs:?}");
    assert_eq!(status(&api).await.container_statuses[0].restart_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_tcp_probes_go_through_the_prober() {
    use skiff_api::kinds::pod::{HttpGetAction, Probe, TcpSocketAction};
    use skiff_api::meta::IntOrString;
    let rt = Arc::new(MemoryRuntime::new());
    let api = MemoryApi::new();
    let prober = Arc::new(MemoryProber::new());
    let mut p = pod("web:1");
    p.spec.containers[0].readiness_probe = Some(Probe {
        http_get: Some(HttpGetAction {
            path: None,
            port: IntOrString::Int(8080),
            host: None,
            scheme: None,
            http_headers: Vec::new(),
        }),
        period_seconds: Some(1),
        ..Default::default()
    });
    p.spec.containers[0].liveness_probe = Some(Probe {
        tcp_socket: Some(TcpSocketAction { port: IntOrString::Int(8081), host: None }),
        period_seconds: Some(1),
        failure_threshold: Some(1),
        ..Default::default()
    });
    let created = api.create(Object::Pod(p)).await.expect("create");
    let Object::Pod(p) = created else { panic!("a pod") };
    let (_tx, rx) = watch::channel(Some(p));
    let worker = PodWorker::new(rt.clone(), prober.clone(), Arc::new(api.clone()), config());
    tokio::spawn(worker.run(rx));
    // The pod IP is known once it runs; until its ports answer it is not ready.
    let ip = eventually("a pod IP", T, || async { status(&api).await.pod_ip }).await;
    prober.answer(&ip, 8081, 200);
    assert!(!status(&api).await.container_statuses.first().is_some_and(|c| c.ready), "8080 does not answer yet");
    prober.answer(&ip, 8080, 200);
    eventually("ready once the HTTP probe passes", T, || async {
        status(&api).await.container_statuses.first().filter(|c| c.ready).map(|_| ())
    })
    .await;
    // The TCP liveness probe fails: the container is restarted.
    prober.silence(&ip, 8081);
    container_when(&api, "a restart after the TCP probe failed", |c| c.restart_count >= 1).await;
}
