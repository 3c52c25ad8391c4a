//! Deployments: the time from applying an N-replica Deployment to a three-member Skiff cluster
//! (agents on the local Docker engine) until all N pods are Running and Ready, against N plain
//! Docker pods (a sandbox and the container joined to it, created and started 8 at a time through
//! the API) and an N-replica Docker Swarm service on the same engine; then a rolling update of a
//! smaller Deployment to a new template, against `docker service update` of a service of the same
//! size with the same parallelism.
//!
//! Beside them, for the record (no target): N plain `docker run`s of the container alone, 8 at a
//! time, as Swarm runs a task: one container per replica. Swarm over that is the most any
//! orchestrator of sandboxed pods on this engine could reach against Swarm.
//!
//! Every side runs the same image and command with no readiness probe or health check: a pod is
//! Ready, and a task running, once its container has started.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use bollard::Docker;
use serde_json::{json, Value};
use skiff_proto::api::resources_client::ResourcesClient;
use skiff_proto::api::{
    object_event, ApplyRequest, GetObjectRequest, ListObjectsRequest, ObjectEvent, WatchObjectsRequest,
};
use tonic::transport::Channel;

use crate::cluster::{Binaries, Cluster};
use crate::leftovers::Leftovers;
use crate::report::{Figures, Summary, Target};
use crate::swarm;

/// The label on everything this benchmark creates (value: `<pid>-<run>`), besides `skiff.test`.
const LABEL: &str = "skiff.bench.deploy";
const TEST_LABEL: (&str, &str) = ("skiff.test", "bench-deploy");
const IMAGE: &str = "skiff-test/busybox:1";
/// Skiff's pod sandbox image (the agent's default), also the plain Docker pods' sandbox.
const SANDBOX: &str = "skiff-pause:1";
/// The command on every side. It exits at once on SIGTERM: a bare `sleep` as PID 1 ignores the
/// signal, and every stop (old pods of a rollout, clean-up) would wait out the grace period.
const SCRIPT: &str = "trap 'exit 0' TERM; sleep 3600 & wait";
/// Seconds a stopped container gets before it is killed (Skiff's terminationGracePeriodSeconds,
/// Swarm's stop grace period).
const GRACE_SECONDS: u64 = 10;
/// Plain Docker pods created and started at a time (`docker run` from 8 shells).
const DOCKER_PARALLEL: usize = 8;
/// The longest any side may take to bring its replicas up or to finish an update.
const DEADLINE: Duration = Duration::from_secs(120);
/// How often a wait asks Skiff for the rollout's state (Swarm's waits ask as often).
const POLL: Duration = Duration::from_millis(50);
/// The Deployment (and Swarm service) of the scale-up and of the rolling update.
const SCALE: &str = "bench-scale";
const ROLL: &str = "bench-roll";

fn command() -> Vec<String> {
    vec!["sh".into(), "-c".into(), SCRIPT.into()]
}

/// Replica counts of one run.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Replicas of the scale-up (default 50, smoke 10).
    pub replicas: usize,
    /// Replicas of the rolling update (default 10, smoke 4).
    pub update_replicas: usize,
}

pub fn sizes(smoke: bool, replicas: Option<usize>, update_replicas: Option<usize>) -> Sizes {
    Sizes {
        replicas: replicas.unwrap_or(if smoke { 10 } else { 50 }).max(1),
        update_replicas: update_replicas.unwrap_or(if smoke { 4 } else { 10 }).max(1),
    }
}

/// Skiff's default maxSurge and maxUnavailable (25% each) as pods for `replicas`: surge rounds up,
/// unavailable down, and when both come to 0 one pod may be unavailable (Kubernetes' fenceposts,
/// as skiff-control's deployment controller resolves them).
pub fn fenceposts(replicas: usize) -> (usize, usize) {
    let surge = replicas.div_ceil(4);
    let unavailable = replicas / 4;
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// Swarm's update parallelism for `replicas`: as many tasks at a time as Skiff's rollout has new
/// pods starting at once (maxSurge + maxUnavailable: 5 of 10).
pub fn swarm_parallelism(replicas: usize) -> usize {
    let (surge, unavailable) = fenceposts(replicas);
    surge + unavailable
}

/// The Deployment: `replicas` pods of the benchmark's container, `VERSION=<version>` in its
/// environment (a new version is a new template), Skiff's default strategy (RollingUpdate 25%/25%)
/// and minReadySeconds (0).
fn deployment(name: &str, replicas: usize, version: u32) -> Vec<u8> {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": GRACE_SECONDS,
                    "containers": [{
                        "name": "app",
                        "image": IMAGE,
                        "command": command(),
                        "env": [{"name": "VERSION", "value": version.to_string()}],
                    }],
                },
            },
        },
    })
    .to_string()
    .into_bytes()
}

/// When the benchmark first saw a pod at each step, from the apply.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Steps {
    created: Option<Duration>,
    bound: Option<Duration>,
    running: Option<Duration>,
    ready: Option<Duration>,
}

fn pod_ready(pod: &Value) -> bool {
    let ready = pod["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    pod["status"]["phase"] == "Running" && ready && pod["metadata"]["deletionTimestamp"].is_null()
}

/// Records what `pod` shows at `at` into its steps; returns whether it is Running and Ready now.
fn observe(steps: &mut Steps, pod: &Value, at: Duration) -> bool {
    steps.created.get_or_insert(at);
    if pod["spec"]["nodeName"].as_str().is_some_and(|n| !n.is_empty()) {
        steps.bound.get_or_insert(at);
    }
    if pod["status"]["phase"] == "Running" {
        steps.running.get_or_insert(at);
    }
    let ready = pod_ready(pod);
    if ready {
        steps.ready.get_or_insert(at);
    }
    ready
}

/// The latest of each step over `pods`: when the last pod was created, bound, Running, Ready.
fn last_steps<'a>(pods: impl Iterator<Item = &'a Steps>) -> Steps {
    let mut all = Steps::default();
    for s in pods {
        all.created = all.created.max(s.created);
        all.bound = all.bound.max(s.bound);
        all.running = all.running.max(s.running);
        all.ready = all.ready.max(s.ready);
    }
    all
}

/// The `VERSION` a ReplicaSet's (or Deployment's) template sets.
fn version_of(object: &Value) -> Option<&str> {
    object["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == "VERSION")
        .and_then(|e| e["value"].as_str())
}

fn count(value: &Value) -> i64 {
    value.as_i64().unwrap_or(0)
}

/// Whether the rollout to `version` is complete, as `kubectl rollout status` has it and more:
/// the Deployment's status is of `generation` or later, and updated, ready, available and all
/// replicas are `replicas`; every ReplicaSet of another version asks for no pods and has none.
fn rollout_done(d: &Value, sets: &[Value], generation: i64, replicas: usize, version: &str) -> bool {
    let s = &d["status"];
    let n = replicas as i64;
    let status = count(&s["observedGeneration"]) >= generation
        && [&s["updatedReplicas"], &s["readyReplicas"], &s["availableReplicas"], &s["replicas"]]
            .iter()
            .all(|v| count(v) == n);
    let old_gone = sets
        .iter()
        .filter(|rs| version_of(rs) != Some(version))
        .all(|rs| count(&rs["spec"]["replicas"]) == 0 && count(&rs["status"]["replicas"]) == 0);
    let new_there = sets.iter().any(|rs| version_of(rs) == Some(version));
    status && old_gone && new_there
}

fn labels(tag: &str) -> HashMap<String, String> {
    HashMap::from([(LABEL.to_string(), tag.to_string()), (TEST_LABEL.0.to_string(), TEST_LABEL.1.to_string())])
}

/// A three-member Skiff cluster with its agents on the local engine (default settings, every
/// container labelled), once all three nodes are Ready; and a channel to its leader.
async fn skiff_cluster(bins: &Binaries, tag: &str) -> anyhow::Result<(Cluster, Channel)> {
    let agent = format!(
        "[agent]\nruntime = \"docker\"\n[agent.container_labels]\n\"{LABEL}\" = \"{tag}\"\n\"{}\" = \"{}\"\n",
        TEST_LABEL.0, TEST_LABEL.1
    );
    let cluster = Cluster::skiff_with(bins, &agent).await?;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    let channel = cluster.connect(leader).await?;
    let mut api = ResourcesClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let nodes = api.list(ListObjectsRequest { kind: "Node".into(), ..Default::default() }).await?.into_inner();
        let mut ready = 0;
        for raw in &nodes.objects {
            let node: Value = serde_json::from_slice(raw)?;
            let conditions = node["status"]["conditions"].as_array().cloned().unwrap_or_default();
            if conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True") {
                ready += 1;
            }
        }
        if ready >= 3 {
            return Ok((cluster, channel));
        }
        if Instant::now() >= deadline {
            anyhow::bail!("skiff: {ready} of 3 nodes Ready within 30 s");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A watch of the pods labelled `app=<app>`, from now: it starts at the resource version of a
/// list, so it misses no change made after this returns.
async fn watch_pods(api: &mut ResourcesClient<Channel>, app: &str) -> anyhow::Result<tonic::Streaming<ObjectEvent>> {
    let selector = format!("app={app}");
    let request = ListObjectsRequest {
        kind: "Pod".into(),
        namespace: "default".into(),
        label_selector: selector.clone(),
        ..Default::default()
    };
    let listed = api.list(request).await.context("listing pods")?.into_inner();
    let request = WatchObjectsRequest {
        kind: "Pod".into(),
        namespace: "default".into(),
        label_selector: selector,
        resource_version: listed.resource_version,
        ..Default::default()
    };
    Ok(api.watch(request).await.context("watching pods")?.into_inner())
}

/// What the Skiff side measured of the scale-up.
struct SkiffScale {
    /// When the last pod was created, bound, Running, Ready (Ready: the figure).
    all: Steps,
    /// Per pod: apply -> Running and Ready.
    ready: Vec<Duration>,
    /// Apply -> the Deployment's status says every replica is ready.
    status: Duration,
}

/// Applies the scale-up Deployment and watches its pods until all are Running and Ready.
async fn skiff_scale(bins: &Binaries, replicas: usize, tag: &str) -> anyhow::Result<SkiffScale> {
    // Before the cluster: dropped after it, once its agents are dead (see Leftovers).
    let _leftovers = Leftovers::guard(LABEL, tag);
    let (cluster, channel) = skiff_cluster(bins, tag).await?;
    let mut api = ResourcesClient::new(channel.clone());
    let mut watch = watch_pods(&mut api, SCALE).await?;
    let started = Instant::now();
    api.apply(ApplyRequest { object: deployment(SCALE, replicas, 1), dry_run: false }).await?;
    let deadline = started + DEADLINE;
    let mut steps: HashMap<String, Steps> = HashMap::new();
    let mut ready_now: HashSet<String> = HashSet::new();
    while ready_now.len() < replicas {
        let next = tokio::time::timeout_at(deadline.into(), watch.message()).await;
        let event = match next {
            Ok(Ok(Some(event))) => event,
            Ok(Ok(None)) => anyhow::bail!("skiff: the watch of pods ended"),
            Ok(Err(status)) => anyhow::bail!("skiff: the watch of pods failed: {status}"),
            Err(_) => {
                let all = last_steps(steps.values());
                let with = |f: fn(&Steps) -> bool| steps.values().filter(|s| f(s)).count();
                anyhow::bail!(
                    "skiff: only {} of {replicas} pods Running and Ready within {DEADLINE:?} ({} created, {} bound, {} Running; the last created at {:.2} s, bound at {:.2} s, Running at {:.2} s)",
                    ready_now.len(),
                    steps.len(),
                    with(|s| s.bound.is_some()),
                    with(|s| s.running.is_some()),
                    secs(all.created),
                    secs(all.bound),
                    secs(all.running),
                )
            }
        };
        let at = started.elapsed();
        if event.r#type == object_event::Type::Bookmark as i32 {
            continue;
        }
        let pod: Value = serde_json::from_slice(&event.object)?;
        let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let ready = event.r#type != object_event::Type::Deleted as i32
            && observe(steps.entry(name.clone()).or_default(), &pod, at);
        if ready {
            ready_now.insert(name);
        } else {
            ready_now.remove(&name);
        }
    }
    let mut all = last_steps(steps.values().filter(|s| s.ready.is_some()));
    all.ready = Some(started.elapsed());
    let ready = steps.values().filter_map(|s| s.ready).collect();
    // The Deployment's own account: status.readyReplicas (through its ReplicaSet's status).
    loop {
        let d = get(&mut api, "Deployment", SCALE).await?;
        if count(&d["status"]["readyReplicas"]) == replicas as i64 {
            break;
        }
        if Instant::now() >= deadline {
            anyhow::bail!("skiff: all pods are Ready but the Deployment's status says {}", d["status"]);
        }
        tokio::time::sleep(POLL).await;
    }
    let status = started.elapsed();
    drop(cluster);
    Ok(SkiffScale { all, ready, status })
}

async fn get(api: &mut ResourcesClient<Channel>, kind: &str, name: &str) -> anyhow::Result<Value> {
    let request = GetObjectRequest { kind: kind.into(), namespace: "default".into(), name: name.into(), stale: false };
    let object = api.get(request).await.with_context(|| format!("getting {kind} {name}"))?.into_inner().object;
    Ok(serde_json::from_slice(&object)?)
}

/// Polls until the rollout of `ROLL` to `version` (of `generation`) is complete; see [`rollout_done`].
async fn wait_rollout(
    api: &mut ResourcesClient<Channel>,
    replicas: usize,
    version: u32,
    generation: i64,
    deadline: Instant,
) -> anyhow::Result<()> {
    let version = version.to_string();
    loop {
        let d = get(api, "Deployment", ROLL).await?;
        let request = ListObjectsRequest {
            kind: "ReplicaSet".into(),
            namespace: "default".into(),
            label_selector: format!("app={ROLL}"),
            ..Default::default()
        };
        let sets = api.list(request).await.context("listing ReplicaSets")?.into_inner().objects;
        let sets: Vec<Value> = sets.iter().map(|raw| serde_json::from_slice(raw)).collect::<Result<_, _>>()?;
        if rollout_done(&d, &sets, generation, replicas, &version) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let sets: Vec<String> = sets
                .iter()
                .map(|rs| {
                    format!(
                        "{} (VERSION={}): spec {}, status {}",
                        rs["metadata"]["name"].as_str().unwrap_or("?"),
                        version_of(rs).unwrap_or("?"),
                        rs["spec"]["replicas"],
                        rs["status"]["replicas"]
                    )
                })
                .collect();
            anyhow::bail!(
                "skiff: the rollout of {ROLL} to VERSION={version} did not complete within {DEADLINE:?}: status {}; sets: {}",
                d["status"],
                sets.join("; ")
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn generation_of(applied: &[u8]) -> anyhow::Result<i64> {
    let object: Value = serde_json::from_slice(applied)?;
    object["metadata"]["generation"].as_i64().context("the applied Deployment has no metadata.generation")
}

/// What the benchmark saw of the rolling update's pods on a watch, from the apply.
#[derive(Debug, Default)]
struct RolloutLog {
    /// Pods of the new template, by name.
    new: HashMap<String, Steps>,
    /// Pods of the old template, by name: when they were first seen deleted or being deleted.
    old_deleted: HashMap<String, Duration>,
}

/// The `VERSION` of a pod's container.
fn pod_version(pod: &Value) -> Option<&str> {
    pod["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == "VERSION")
        .and_then(|e| e["value"].as_str())
}

/// Records every event of `watch` into `log` until the watch ends (or the task is aborted).
async fn record_rollout(
    mut watch: tonic::Streaming<ObjectEvent>,
    started: Instant,
    version: String,
    log: Arc<Mutex<RolloutLog>>,
) {
    while let Ok(Some(event)) = watch.message().await {
        let at = started.elapsed();
        if event.r#type == object_event::Type::Bookmark as i32 {
            continue;
        }
        let Ok(pod) = serde_json::from_slice::<Value>(&event.object) else { continue };
        let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let deleted =
            event.r#type == object_event::Type::Deleted as i32 || !pod["metadata"]["deletionTimestamp"].is_null();
        let Ok(mut log) = log.lock() else { return };
        if pod_version(&pod) == Some(version.as_str()) {
            observe(log.new.entry(name).or_default(), &pod, at);
        } else if deleted {
            log.old_deleted.entry(name).or_insert(at);
        }
    }
}

/// The Skiff side of the rolling update.
struct SkiffUpdate {
    /// Apply -> the rollout is complete (see [`rollout_done`]): the figure.
    took: Duration,
    /// When the last pod of the new template was created, bound, Running, Ready.
    new: Steps,
    /// When the last pod of the old template was seen deleted (or being deleted).
    old_deleted: Option<Duration>,
}

/// Rolls a `replicas`-replica Deployment out, then to a new template (VERSION=2); the time of the
/// second rollout, from the apply until it is complete.
async fn skiff_update(bins: &Binaries, replicas: usize, tag: &str) -> anyhow::Result<SkiffUpdate> {
    let _leftovers = Leftovers::guard(LABEL, tag);
    let (cluster, channel) = skiff_cluster(bins, tag).await?;
    let mut api = ResourcesClient::new(channel);
    let first = api.apply(ApplyRequest { object: deployment(ROLL, replicas, 1), dry_run: false }).await?;
    let generation = generation_of(&first.into_inner().object)?;
    wait_rollout(&mut api, replicas, 1, generation, Instant::now() + DEADLINE).await?;
    let watch = watch_pods(&mut api, ROLL).await?;
    let log = Arc::new(Mutex::new(RolloutLog::default()));
    let started = Instant::now();
    let recorder = tokio::spawn(record_rollout(watch, started, "2".into(), log.clone()));
    let second = api.apply(ApplyRequest { object: deployment(ROLL, replicas, 2), dry_run: false }).await;
    let done = match second {
        Ok(second) => match generation_of(&second.into_inner().object) {
            Ok(generation) => wait_rollout(&mut api, replicas, 2, generation, started + DEADLINE).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e.into()),
    };
    let took = started.elapsed();
    recorder.abort();
    done?;
    drop(cluster);
    let log = log.lock().map_err(|_| anyhow::anyhow!("the rollout recorder panicked"))?;
    Ok(SkiffUpdate { took, new: last_steps(log.new.values()), old_deleted: log.old_deleted.values().max().copied() })
}

/// Creates and starts one plain Docker pod: the sandbox, then the container in its network; or,
/// without `sandbox`, the container alone on the default bridge (`docker run`).
async fn docker_pod(docker: &Docker, tag: &str, i: usize, sandbox: bool) -> anyhow::Result<()> {
    let create = |name: String, body: ContainerCreateBody| async move {
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let id = docker.create_container(Some(options), body).await.with_context(|| format!("creating {name}"))?.id;
        docker.start_container(&id, None).await.with_context(|| format!("starting {name}"))?;
        anyhow::Ok(id)
    };
    let network_mode = if sandbox {
        let sandbox = create(
            format!("bench-deploy-{tag}-{i}-sandbox"),
            ContainerCreateBody { image: Some(SANDBOX.into()), labels: Some(labels(tag)), ..Default::default() },
        )
        .await?;
        Some(format!("container:{sandbox}"))
    } else {
        None
    };
    create(
        format!("bench-deploy-{tag}-{i}-app"),
        ContainerCreateBody {
            image: Some(IMAGE.into()),
            entrypoint: Some(command()),
            env: Some(vec!["VERSION=1".into()]),
            labels: Some(labels(tag)),
            stop_timeout: Some(GRACE_SECONDS as i64),
            host_config: Some(HostConfig { network_mode, ..Default::default() }),
            ..Default::default()
        },
    )
    .await?;
    Ok(())
}

/// `replicas` plain Docker pods, [`DOCKER_PARALLEL`] at a time: per pod, the time from the start
/// until it was started; and the time until all were.
async fn docker_scale(
    docker: &Docker,
    replicas: usize,
    tag: &str,
    sandbox: bool,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let _leftovers = Leftovers::guard(LABEL, tag);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..DOCKER_PARALLEL.min(replicas) {
        let (docker, next, tag) = (docker.clone(), next.clone(), tag.to_string());
        workers.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= replicas {
                    return anyhow::Ok(done);
                }
                docker_pod(&docker, &tag, i, sandbox).await?;
                done.push(started.elapsed());
            }
        }));
    }
    let mut each = Vec::new();
    for w in workers {
        each.extend(w.await.context("a plain docker worker panicked")??);
    }
    Ok((each, started.elapsed()))
}

fn service<'a>(name: &'a str, replicas: usize, tag: &str) -> swarm::Service<'a> {
    swarm::Service {
        name,
        replicas,
        image: IMAGE,
        command: command(),
        env: vec!["VERSION=1".into()],
        labels: labels(tag),
        stop_grace: Duration::from_secs(GRACE_SECONDS),
        update_parallelism: swarm_parallelism(replicas),
        start_first: true,
        // Swarm's default (5 s) watches the updated tasks for that long before it calls the update
        // complete; Skiff's equivalent, minReadySeconds, is 0. The API takes 0 as "the default".
        update_monitor: Duration::from_millis(1),
    }
}

/// A `replicas`-replica Swarm service: from its creation until all its tasks run.
async fn swarm_scale(docker: &Docker, replicas: usize, tag: &str) -> anyhow::Result<Duration> {
    let _leftovers = Leftovers::guard(LABEL, tag);
    let name = format!("{SCALE}-{tag}");
    let started = Instant::now();
    service(&name, replicas, tag).create(docker).await?;
    swarm::wait_running(docker, &name, replicas, started + DEADLINE).await?;
    Ok(started.elapsed())
}

/// A `replicas`-replica Swarm service updated to VERSION=2: from the update until Swarm says it
/// completed.
async fn swarm_update(docker: &Docker, replicas: usize, tag: &str) -> anyhow::Result<Duration> {
    let _leftovers = Leftovers::guard(LABEL, tag);
    let name = format!("{ROLL}-{tag}");
    service(&name, replicas, tag).create(docker).await?;
    swarm::wait_running(docker, &name, replicas, Instant::now() + DEADLINE).await?;
    let started = Instant::now();
    swarm::update_env(docker, &name, vec!["VERSION=2".into()]).await?;
    swarm::wait_updated(docker, &name, started + DEADLINE).await?;
    Ok(started.elapsed())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Docker,
    Skiff,
    Swarm,
}

/// The order of the scale-up's sides in run `run` (from 1): each side goes first, second and third
/// once in three runs (the engine may be faster for whoever goes later).
fn order(run: usize) -> [Side; 3] {
    let mut sides = [Side::Docker, Side::Skiff, Side::Swarm];
    sides.rotate_left((run.max(1) - 1) % 3);
    sides
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn secs(d: Option<Duration>) -> f64 {
    d.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN)
}

/// Prints what the benchmark does.
pub fn describe(sizes: Sizes) {
    let Sizes { replicas, update_replicas } = sizes;
    let (surge, unavailable) = fenceposts(update_replicas);
    println!(
        "deploy benchmark: a {replicas}-replica Deployment on a three-member Skiff cluster (agents on the local Docker engine), against {replicas} plain Docker pods ({DOCKER_PARALLEL} at a time) and a {replicas}-replica Swarm service on the same engine"
    );
    println!("every side: {IMAGE} running `sh -c \"{SCRIPT}\"`, no readiness probe or health check");
    println!(
        "rolling update: {update_replicas} replicas to a new template (VERSION=1 -> 2); skiff maxSurge {surge}, maxUnavailable {unavailable} (25%/25%), minReadySeconds 0; swarm --update-parallelism {} --update-order start-first --update-delay 0s --update-monitor 1ms",
        swarm_parallelism(update_replicas)
    );
    println!("the scale-up's sides take turns going first; the update alternates skiff and swarm");
}

/// One run of every side.
pub async fn run_once(bins: &Binaries, sizes: Sizes, run: usize) -> anyhow::Result<Figures> {
    let Sizes { replicas, update_replicas } = sizes;
    let docker = Docker::connect_with_local_defaults()?.negotiate_version().await?;
    let tag = format!("{}-{run}", std::process::id());
    let swarm_membership = swarm::Membership::join(Duration::from_secs(30)).await?;
    if swarm_membership.initialised() {
        println!("the engine was in no swarm: initialised one (it leaves it at the end of the run)");
    }
    let order = order(run);
    println!("order: {order:?}");
    let (mut skiff, mut plain, mut swarm_took) = (None, None, None);
    let mut single = Duration::ZERO;
    for side in order {
        match side {
            Side::Docker => {
                plain = Some(docker_scale(&docker, replicas, &tag, true).await.context("plain docker")?);
                single = docker_scale(&docker, replicas, &tag, false).await.context("plain docker, no sandbox")?.1;
            }
            Side::Skiff => skiff = Some(skiff_scale(bins, replicas, &tag).await?),
            Side::Swarm => swarm_took = Some(swarm_scale(&docker, replicas, &tag).await.context("swarm")?),
        }
    }
    let (Some(skiff), Some((mut plain_each, plain_wall)), Some(swarm_wall)) = (skiff, plain, swarm_took) else {
        anyhow::bail!("a side did not run");
    };
    let (rollout, swarm_roll) = if run % 2 == 1 {
        let s = skiff_update(bins, update_replicas, &tag).await?;
        (s, swarm_update(&docker, update_replicas, &tag).await.context("swarm")?)
    } else {
        let w = swarm_update(&docker, update_replicas, &tag).await.context("swarm")?;
        (skiff_update(bins, update_replicas, &tag).await?, w)
    };
    drop(swarm_membership);

    let mut skiff_each = skiff.ready;
    skiff_each.sort();
    plain_each.sort();
    let skiff_wall = secs(skiff.all.ready);
    let plain_wall = plain_wall.as_secs_f64();
    let swarm_wall = swarm_wall.as_secs_f64();
    println!();
    println!("| {replicas} replicas | all up after s | per-pod p50 s |");
    println!("|---|---:|---:|");
    println!("| skiff (Running and Ready) | {skiff_wall:.2} | {:.2} |", pct(&skiff_each, 0.5).as_secs_f64());
    println!("| plain docker (started) | {plain_wall:.2} | {:.2} |", pct(&plain_each, 0.5).as_secs_f64());
    println!("| swarm (tasks running) | {swarm_wall:.2} | - |");
    let single = single.as_secs_f64();
    println!("| for the record: plain docker, the container alone (started) | {single:.2} | - |");
    println!(
        "skiff, when the last pod was: created {:.2} s, bound {:.2} s, Running {:.2} s, Ready {skiff_wall:.2} s; the Deployment's status said {replicas} ready at {:.2} s",
        secs(skiff.all.created),
        secs(skiff.all.bound),
        secs(skiff.all.running),
        skiff.status.as_secs_f64()
    );
    let skiff_docker = skiff_wall / plain_wall.max(1e-9);
    let swarm_skiff = swarm_wall / skiff_wall.max(1e-9);
    println!("ratio skiff/docker {skiff_docker:.2}x (target <= 1.15x); swarm/skiff {swarm_skiff:.2}x (target >= 2x)");
    let ceiling = swarm_wall / single.max(1e-9);
    println!("for the record: swarm / plain docker with one container per replica {ceiling:.2}x");
    let (skiff_roll, swarm_roll) = (rollout.took.as_secs_f64(), swarm_roll.as_secs_f64());
    let update_ratio = swarm_roll / skiff_roll.max(1e-9);
    println!(
        "rolling update of {update_replicas} replicas: skiff {skiff_roll:.2} s, swarm {swarm_roll:.2} s, swarm/skiff {update_ratio:.2}x"
    );
    println!(
        "skiff's rollout, when the last new pod was: created {:.2} s, bound {:.2} s, Running {:.2} s, Ready {:.2} s; the last old pod deleted {:.2} s; complete {skiff_roll:.2} s",
        secs(rollout.new.created),
        secs(rollout.new.bound),
        secs(rollout.new.running),
        secs(rollout.new.ready),
        secs(rollout.old_deleted)
    );

    let mut figures = Figures::default();
    figures.add("skiff all Ready s", skiff_wall);
    figures.add("docker all started s", plain_wall);
    figures.add("swarm all running s", swarm_wall);
    figures.add("docker, container alone, all started s", single);
    figures.add("ratio swarm/docker container alone", ceiling);
    figures.add("ratio skiff/docker", skiff_docker);
    figures.add("ratio swarm/skiff", swarm_skiff);
    figures.add("skiff last pod created s", secs(skiff.all.created));
    figures.add("skiff last pod bound s", secs(skiff.all.bound));
    figures.add("skiff last pod Running s", secs(skiff.all.running));
    figures.add("skiff deployment status ready s", skiff.status.as_secs_f64());
    figures.add("skiff per-pod Ready p50 s", pct(&skiff_each, 0.5).as_secs_f64());
    figures.add("docker per-pod started p50 s", pct(&plain_each, 0.5).as_secs_f64());
    figures.add("skiff rolling update s", skiff_roll);
    figures.add("swarm rolling update s", swarm_roll);
    figures.add("rolling update ratio swarm/skiff", update_ratio);
    figures.add("skiff rollout last new pod Ready s", secs(rollout.new.ready));
    figures.add("skiff rollout last old pod deleted s", secs(rollout.old_deleted));
    Ok(figures)
}

/// The targets, judged on the medians of the runs.
pub fn targets(m: &Summary) -> Vec<Target> {
    let skiff_docker = m.median("ratio skiff/docker").unwrap_or(f64::NAN);
    let swarm_skiff = m.median("ratio swarm/skiff").unwrap_or(f64::NAN);
    let update = m.median("rolling update ratio swarm/skiff").unwrap_or(f64::NAN);
    vec![
        Target {
            what: format!("all replicas Running and Ready within 1.15x of plain docker ({skiff_docker:.2}x)"),
            met: skiff_docker <= 1.15,
        },
        Target {
            what: format!(
                "Swarm takes at least 2x as long as Skiff ({swarm_skiff:.2}x; rolling update {update:.2}x, not a target)"
            ),
            met: swarm_skiff >= 2.0,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarm_updates_as_many_tasks_at_a_time_as_skiff_starts_new_pods() {
        assert_eq!(fenceposts(10), (3, 2));
        assert_eq!(swarm_parallelism(10), 5);
        assert_eq!(fenceposts(4), (1, 1));
        assert_eq!(swarm_parallelism(4), 2);
        assert_eq!(fenceposts(1), (1, 0));
        assert_eq!(fenceposts(0), (0, 1));
    }

    #[test]
    fn a_pod_counts_once_running_and_ready_and_each_step_keeps_its_first_time() {
        let mut steps = Steps::default();
        let s = Duration::from_secs;
        let pending = json!({"metadata": {"name": "p"}, "spec": {}, "status": {"phase": "Pending"}});
        assert!(!observe(&mut steps, &pending, s(1)));
        let bound = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "node2"}, "status": {"phase": "Pending"}});
        assert!(!observe(&mut steps, &bound, s(2)));
        let running = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "node2"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}});
        assert!(!observe(&mut steps, &running, s(3)));
        let ready = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "node2"},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
        assert!(observe(&mut steps, &ready, s(4)));
        assert!(observe(&mut steps, &ready, s(5)));
        assert_eq!(steps, Steps { created: Some(s(1)), bound: Some(s(2)), running: Some(s(3)), ready: Some(s(4)) });
        let mut leaving = ready.clone();
        leaving["metadata"]["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
        assert!(!observe(&mut steps, &leaving, s(6)), "a pod being deleted is not counted");
        let other = Steps { created: Some(s(2)), bound: Some(s(7)), running: None, ready: None };
        let all = last_steps([steps, other].iter());
        assert_eq!((all.created, all.bound, all.running, all.ready), (Some(s(2)), Some(s(7)), Some(s(3)), Some(s(4))));
    }

    fn set(version: &str, spec: i64, status: i64) -> Value {
        json!({"spec": {"replicas": spec, "template": {"spec": {"containers": [{"env": [{"name": "VERSION", "value": version}]}]}}},
            "status": {"replicas": status}})
    }

    #[test]
    fn a_rollout_is_done_when_the_status_is_current_and_the_old_set_is_empty() {
        let done = json!({"metadata": {"generation": 2}, "status": {"observedGeneration": 2, "replicas": 10,
            "updatedReplicas": 10, "readyReplicas": 10, "availableReplicas": 10}});
        let sets = [set("1", 0, 0), set("2", 10, 10)];
        assert!(rollout_done(&done, &sets, 2, 10, "2"));
        assert!(!rollout_done(&done, &sets, 3, 10, "2"), "a status of an older generation");
        assert!(!rollout_done(&done, &[set("1", 0, 1), set("2", 10, 10)], 2, 10, "2"), "an old pod left");
        assert!(!rollout_done(&done, &[set("1", 0, 0)], 2, 10, "2"), "no set of the new version");
        let mut short = done.clone();
        short["status"]["availableReplicas"] = json!(9);
        assert!(!rollout_done(&short, &sets, 2, 10, "2"));
    }

    #[test]
    fn each_side_goes_first_once_in_three_runs() {
        let firsts: HashSet<_> = (1..=3).map(|run| order(run)[0] as u8).collect();
        assert_eq!(firsts.len(), 3);
        assert_eq!(order(1), [Side::Docker, Side::Skiff, Side::Swarm]);
        assert_eq!(order(4), order(1));
    }
}
