//! The resource API under load: latency of apply (create and update) and get at 100 concurrent
//! clients spread over the three members, and watch delivery latency (the write sent through one
//! member to the event received on another). The reference is etcd storing the same object bytes
//! under Kubernetes' key layout with the same concurrency: what the API layer costs on top of a
//! replicated store.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_proto::api::resources_client::ResourcesClient;
use skiff_proto::api::{object_event, ApplyRequest, GetObjectRequest, WatchObjectsRequest};
use tonic::transport::Channel;

use crate::cluster::{Binaries, Cluster};
use crate::report::{self, Figures, Summary, Target};
use crate::system::{etcdpb, Dialer, System};

/// The object every client writes: a ConfigMap holding the Kubernetes documentation's nginx
/// Deployment manifest and a replica count, renamed. A ConfigMap, not the Deployment itself: the
/// leader's controllers would turn every Deployment into a ReplicaSet and pods, and this benchmark
/// measures the API against etcd storing the same bytes.
fn object(name: &str, replicas: u32) -> Vec<u8> {
    let manifest = "apiVersion: apps/v1\\nkind: Deployment\\nmetadata:\\n  name: nginx-deployment\\nspec:\\n  selector:\\n    matchLabels:\\n      app: nginx\\n  template:\\n    metadata:\\n      labels:\\n        app: nginx\\n    spec:\\n      containers:\\n      - name: nginx\\n        image: nginx:1.14.2\\n        ports:\\n        - containerPort: 80\\n";
    format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","labels":{{"app.kubernetes.io/name":"nginx"}}}},"data":{{"replicas":"{replicas}","deployment.yaml":"{manifest}"}}}}"#
    )
    .into_bytes()
}

fn etcd_key(name: &str) -> Vec<u8> {
    format!("/registry/configmaps/default/{name}").into_bytes()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Update,
    Get,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Create => "apply (create)",
            Op::Update => "apply (update)",
            Op::Get => "get",
        }
    }
}

/// The replica count an object has after `round` passes of updates (creates write 2).
fn replicas_after(round: u32) -> u32 {
    3 + round
}

/// One call. `Ok(false)`: the call succeeded but did not do what it was for (an apply that
/// changed nothing, or a create that found the object already there).
async fn call(system: System, channel: Channel, op: Op, name: &str, round: u32) -> Result<bool, tonic::Status> {
    use skiff_proto::api::apply_response::Outcome;
    let replicas = if op == Op::Create { 2 } else { replicas_after(round) };
    match (system, op) {
        (System::Skiff, Op::Create | Op::Update) => {
            let req = ApplyRequest { object: object(name, replicas), dry_run: false };
            let outcome = ResourcesClient::new(channel).apply(req).await?.into_inner().outcome();
            Ok(match op {
                Op::Create => outcome == Outcome::Created,
                _ => outcome == Outcome::Configured,
            })
        }
        (System::Skiff, Op::Get) => {
            let req = GetObjectRequest {
                kind: "ConfigMap".into(),
                namespace: "default".into(),
                name: name.into(),
                stale: false,
            };
            let object = ResourcesClient::new(channel).get(req).await?.into_inner().object;
            Ok(!object.is_empty())
        }
        (System::Etcd, Op::Create | Op::Update) => {
            let req = etcdpb::PutRequest { key: etcd_key(name), value: object(name, replicas), ..Default::default() };
            etcdpb::kv_client::KvClient::new(channel).put(req).await?;
            Ok(true)
        }
        (System::Etcd, Op::Get) => {
            let req = etcdpb::RangeRequest { key: etcd_key(name), ..Default::default() };
            let r = etcdpb::kv_client::KvClient::new(channel).range(req).await?.into_inner();
            Ok(!r.kvs.is_empty())
        }
    }
}

/// The stored replica count of `name` (linearizable read), to check that updates were stored.
async fn stored_replicas(system: System, channel: Channel, name: &str) -> anyhow::Result<u64> {
    let body = match system {
        System::Skiff => {
            let req = GetObjectRequest {
                kind: "ConfigMap".into(),
                namespace: "default".into(),
                name: name.into(),
                stale: false,
            };
            ResourcesClient::new(channel).get(req).await?.into_inner().object
        }
        System::Etcd => {
            let req = etcdpb::RangeRequest { key: etcd_key(name), ..Default::default() };
            let r = etcdpb::kv_client::KvClient::new(channel).range(req).await?.into_inner();
            r.kvs.into_iter().next().map(|kv| kv.value).unwrap_or_default()
        }
    };
    let value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| anyhow::anyhow!("{}: {name} is not stored as JSON: {e}", system.name()))?;
    value["data"]["replicas"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("{}: {name} has no data.replicas", system.name()))
}

/// Latencies of one phase.
#[derive(Debug, Default, Clone)]
struct Phase {
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// Calls that failed or did not do their work.
    errors: u64,
    /// Calls made, for the failure share.
    calls: u64,
}

fn figures(mut lat: Vec<Duration>, seconds: f64, errors: u64, calls: u64) -> Phase {
    lat.sort();
    let pct = |p: f64| {
        if lat.is_empty() {
            Duration::ZERO
        } else {
            lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1]
        }
    };
    Phase {
        ops_per_sec: lat.len() as f64 / seconds,
        p50: pct(0.5),
        p99: pct(0.99),
        max: lat.last().copied().unwrap_or_default(),
        errors,
        calls,
    }
}

/// Send times of creates, by object name, for the watch latency.
type SendTimes = Arc<Mutex<HashMap<String, Instant>>>;

/// How long each phase runs: a warm-up that is not measured, then the measured time.
#[derive(Debug, Clone, Copy)]
struct Timing {
    warmup: Duration,
    measure: Duration,
}

/// What the clients of one phase did.
struct PhaseRun {
    figures: Phase,
    /// The objects each client created (`c<c>-<n>` for each `n`), in a create phase.
    created: Vec<Vec<u32>>,
    /// Each client's last update, when it and every update before it succeeded: `(object, round)`.
    last_updates: Vec<(String, u32)>,
}

/// `clients` clients run `op` for the warm-up and the measured time over `channels` (spread over the members).
/// Client `c` works on its own objects `c<c>-<i>`; updates and gets cycle through the first
/// objects in `created[c]`, every pass of updates with a new replica count.
async fn phase(
    system: System,
    channels: &[Channel],
    op: Op,
    clients: usize,
    timing: Timing,
    created: &[Vec<u32>],
    sent: &SendTimes,
) -> PhaseRun {
    let begin = Instant::now() + timing.warmup;
    let end = begin + timing.measure;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let channel = channels[c % channels.len()].clone();
        let mine: Vec<u32> = created.get(c).cloned().unwrap_or_default();
        let known = u32::try_from(mine.len()).unwrap_or(u32::MAX).max(1);
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut i) = (Vec::new(), 0u64, 0u32);
            let (mut last_update, mut made) = (None, Vec::new());
            let mut messages: HashMap<String, u64> = HashMap::new();
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let (n, round) = if op == Op::Create {
                    (i, 0)
                } else {
                    (mine.get((i % known) as usize).copied().unwrap_or(0), i / known)
                };
                let name = format!("c{c}-{n}");
                if op == Op::Create {
                    if let Ok(mut s) = sent.lock() {
                        s.insert(name.clone(), started);
                    }
                }
                match call(system, channel.clone(), op, &name, round).await {
                    Ok(true) => {
                        if started >= begin {
                            lat.push(started.elapsed());
                        }
                        match op {
                            Op::Create => made.push(n),
                            Op::Update => last_update = Some((name, round)),
                            Op::Get => {}
                        }
                    }
                    Ok(false) => {
                        errors += 1;
                        last_update = None;
                        forget(&sent, op, &name);
                        *messages.entry(format!("{} did nothing (no change stored)", op.name())).or_default() += 1;
                    }
                    Err(status) => {
                        // A failed update may still have been stored: this client's objects are
                        // not checked against their last acknowledged update.
                        errors += 1;
                        last_update = None;
                        forget(&sent, op, &name);
                        *messages.entry(format!("{:?}: {}", status.code(), status.message())).or_default() += 1;
                    }
                }
                i += 1;
            }
            (lat, errors, i, last_update, made, messages)
        }));
    }
    let (mut all, mut errors, mut counts, mut last_updates) = (Vec::new(), 0, Vec::new(), Vec::new());
    let mut created = Vec::new();
    let mut messages: HashMap<String, u64> = HashMap::new();
    for t in tasks {
        if let Ok((lat, e, i, last, made, m)) = t.await {
            all.extend(lat);
            errors += e;
            counts.push(i);
            created.push(made);
            last_updates.extend(last);
            for (k, v) in m {
                *messages.entry(k).or_default() += v;
            }
        }
    }
    let mut messages: Vec<(String, u64)> = messages.into_iter().collect();
    messages.sort_by_key(|m| std::cmp::Reverse(m.1));
    for (message, n) in messages.iter().take(3) {
        eprintln!("    {n} x {message}");
    }
    let calls = counts.iter().map(|c| u64::from(*c)).sum();
    PhaseRun { figures: figures(all, timing.measure.as_secs_f64(), errors, calls), created, last_updates }
}

/// A create that failed is not waited for on the watch.
fn forget(sent: &SendTimes, op: Op, name: &str) {
    if op == Op::Create {
        if let Ok(mut s) = sent.lock() {
            s.remove(name);
        }
    }
}

/// Receives the watch events of the config maps on `endpoint` and records, for every create with a
/// send time, how long after sending its event arrived (into `out`).
fn watch_latencies(
    dialer: Dialer,
    endpoint: String,
    sent: SendTimes,
    out: Arc<Mutex<Vec<Duration>>>,
    established: tokio::sync::oneshot::Sender<()>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut established = Some(established);
        let Ok(channel) = dialer.connect(&endpoint).await else { return };
        let record = |body: &[u8]| {
            let now = Instant::now();
            let Some(name) = name_of(body) else { return };
            let sent_at = sent.lock().ok().and_then(|mut s| s.remove(&name));
            if let (Some(t), Ok(mut out)) = (sent_at, out.lock()) {
                out.push(now - t);
            }
        };
        match dialer.system() {
            System::Skiff => {
                let req =
                    WatchObjectsRequest { kind: "ConfigMap".into(), namespace: "default".into(), ..Default::default() };
                let Ok(resp) = ResourcesClient::new(channel).watch(req).await else { return };
                // The member answers the watch call once the watch is registered.
                if let Some(tx) = established.take() {
                    let _ = tx.send(());
                }
                let mut stream = resp.into_inner();
                while let Ok(Some(e)) = stream.message().await {
                    if e.r#type == object_event::Type::Added as i32 {
                        record(&e.object);
                    }
                }
            }
            System::Etcd => {
                let create = etcdpb::WatchRequest {
                    request_union: Some(etcdpb::watch_request::RequestUnion::CreateRequest(
                        etcdpb::WatchCreateRequest {
                            key: b"/registry/configmaps/".to_vec(),
                            range_end: b"/registry/configmaps0".to_vec(),
                            ..Default::default()
                        },
                    )),
                };
                let requests =
                    tokio_stream::StreamExt::chain(tokio_stream::iter(vec![create]), tokio_stream::pending());
                let Ok(resp) = etcdpb::watch_client::WatchClient::new(channel).watch(requests).await else { return };
                let mut stream = resp.into_inner();
                while let Ok(Some(r)) = stream.message().await {
                    if r.created {
                        if let Some(tx) = established.take() {
                            let _ = tx.send(());
                        }
                    }
                    for e in r.events {
                        if let Some(kv) = e.kv.filter(|kv| kv.create_revision == kv.mod_revision) {
                            record(&kv.value);
                        }
                    }
                }
            }
        }
    })
}

fn name_of(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find(r#""name":""#)? + 8;
    let end = text[start..].find('"')? + start;
    Some(text[start..end].to_string())
}

struct SystemRun {
    phases: Vec<(Op, Phase)>,
    watch: Phase,
    /// Raft terms before and after the three phases: a change means an election under load.
    terms: (u64, u64),
}

async fn bench_system(cluster: &Cluster, clients: usize, timing: Timing) -> anyhow::Result<SystemRun> {
    let system = cluster.system();
    let name = system.name();
    let measure = timing.measure;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    // Four connections to each member; clients are spread over all three, as users would be.
    let mut channels = Vec::new();
    for _ in 0..4 {
        for e in &cluster.endpoints {
            channels.push(cluster.dialer.connect(e).await?);
        }
    }
    let watcher = cluster.endpoints[(leader + 1) % cluster.endpoints.len()].clone();
    let sent: SendTimes = Arc::new(Mutex::new(HashMap::new()));
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let (established_tx, established) = tokio::sync::oneshot::channel();
    let watch = watch_latencies(cluster.dialer.clone(), watcher, sent.clone(), delivered.clone(), established_tx);
    tokio::time::timeout(Duration::from_secs(10), established)
        .await
        .map_err(|_| anyhow::anyhow!("{name}: the watch on a follower was not established within 10 s"))?
        .map_err(|_| anyhow::anyhow!("{name}: the watch on a follower failed"))?;
    let term = |s: Option<(usize, u64)>| s.map(|(_, t)| t).unwrap_or(0);
    let term_before = term(cluster.status().await);
    let mut phases = Vec::new();
    let mut created = Vec::new();
    let mut last_updates = Vec::new();
    for op in [Op::Create, Op::Update, Op::Get] {
        let run = phase(system, &channels, op, clients, timing, &created, &sent).await;
        let f = run.figures;
        eprintln!(
            "  {:5} {:15} {:8.0} ops/s  p50 {:6.2} ms  p99 {:6.2} ms  max {:7.2} ms  failed {} of {}",
            name,
            op.name(),
            f.ops_per_sec,
            ms(f.p50),
            ms(f.p99),
            ms(f.max),
            f.errors,
            f.calls
        );
        report::check_failures(name, &format!("{} calls", op.name()), f.errors, f.calls)?;
        match op {
            Op::Create => created = run.created,
            Op::Update => last_updates = run.last_updates,
            Op::Get => {}
        }
        phases.push((op, f));
    }
    watch.abort();
    let term_after = term(cluster.status().await);
    if term_after != term_before {
        eprintln!("  {name}: the raft term changed under load ({term_before} -> {term_after}): a leader election");
    }
    // The updates were stored: each client's last update reads back with its replica count.
    let channel = cluster.connect(leader).await?;
    for (object, round) in &last_updates {
        let stored = stored_replicas(system, channel.clone(), object).await?;
        if stored != u64::from(replicas_after(*round)) {
            anyhow::bail!(
                "{name}: {object} has {stored} replicas stored, its last acknowledged update wrote {}",
                replicas_after(*round)
            );
        }
    }
    let lat = delivered.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default();
    let missed = sent.lock().map(|s| s.len()).unwrap_or(0) as u64;
    let creates = created.iter().map(|c| c.len() as u64).sum::<u64>();
    let watch = figures(lat, measure.as_secs_f64(), missed, creates);
    eprintln!(
        "  {:5} {:15} {:8} events p50 {:6.2} ms  p99 {:6.2} ms  max {:7.2} ms  creates never seen {}",
        name,
        "watch delivery",
        (watch.ops_per_sec * measure.as_secs_f64()).round(),
        ms(watch.p50),
        ms(watch.p99),
        ms(watch.max),
        watch.errors
    );
    report::check_failures(name, "creates seen on the watch (events)", watch.errors, creates)?;
    Ok(SystemRun { phases, watch, terms: (term_before, term_after) })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn settings(smoke: bool, clients: Option<usize>, seconds: Option<u64>) -> (usize, Timing) {
    let clients = clients.unwrap_or(if smoke { 10 } else { 100 });
    let measure = Duration::from_secs(seconds.unwrap_or(if smoke { 1 } else { 10 }));
    let warmup = if smoke { Duration::from_millis(300) } else { Duration::from_secs(2) };
    (clients, Timing { warmup, measure })
}

/// Prints what the benchmark does.
pub fn describe(smoke: bool, clients: Option<usize>, seconds: Option<u64>) {
    let (clients, timing) = settings(smoke, clients, seconds);
    println!("api benchmark: 3 members on loopback each; {clients} concurrent clients spread over the members");
    println!(
        "each phase {} s after {} ms warm-up{}; objects: a ConfigMap holding the nginx Deployment manifest ({} bytes of JSON), renamed per write",
        timing.measure.as_secs(),
        timing.warmup.as_millis(),
        if smoke { " (smoke)" } else { "" },
        object("c0-0", 3).len()
    );
    println!("skiff: Resources/Apply and Resources/Get (linearizable); etcd: Put and Range of the same bytes");
    println!("every update stores a new replica count (an apply answered 'unchanged' counts as failed); the last update of each client is read back");
    println!("watch delivery: create sent through any member -> ADDED event on a follower's watch");
}

/// One run: Skiff, then etcd.
pub async fn run_once(
    bins: &Binaries,
    smoke: bool,
    clients: Option<usize>,
    seconds: Option<u64>,
) -> anyhow::Result<Figures> {
    let (clients, timing) = settings(smoke, clients, seconds);
    let skiff = {
        let cluster = Cluster::skiff(bins).await?;
        bench_system(&cluster, clients, timing).await?
    };
    let etcd = {
        let cluster = Cluster::etcd(bins).await?;
        bench_system(&cluster, clients, timing).await?
    };

    println!();
    println!("| call | skiff ops/s | skiff p50 / p99 / max ms | etcd ops/s | etcd p50 / p99 / max ms | p99 ratio (skiff/etcd) |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut out = Figures::default();
    let mut row = |name: &str, s: &Phase, e: &Phase| {
        println!(
            "| {name} | {:.0} | {:.2} / {:.2} / {:.2} | {:.0} | {:.2} / {:.2} / {:.2} | {:.2} |",
            s.ops_per_sec,
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            e.ops_per_sec,
            ms(e.p50),
            ms(e.p99),
            ms(e.max),
            ms(s.p99) / ms(e.p99).max(1e-9)
        );
        if name != "watch delivery" {
            out.add(format!("skiff {name} ops/s"), s.ops_per_sec);
            out.add(format!("etcd {name} ops/s"), e.ops_per_sec);
        }
        out.add(format!("skiff {name} p50 ms"), ms(s.p50));
        out.add(format!("etcd {name} p50 ms"), ms(e.p50));
        out.add(format!("skiff {name} p99 ms"), ms(s.p99));
        out.add(format!("etcd {name} p99 ms"), ms(e.p99));
    };
    for ((op, s), (_, e)) in skiff.phases.iter().zip(&etcd.phases) {
        row(op.name(), s, e);
    }
    row("watch delivery", &skiff.watch, &etcd.watch);
    let errors = |r: &SystemRun| r.phases.iter().map(|(_, f)| f.errors).sum::<u64>();
    for (name, r) in [("skiff", &skiff), ("etcd", &etcd)] {
        out.add(format!("{name} term changes under load"), (r.terms.1 - r.terms.0.min(r.terms.1)) as f64);
    }
    println!();
    println!(
        "failed calls: skiff {}, etcd {}; creates whose watch event never arrived: skiff {}, etcd {}",
        errors(&skiff),
        errors(&etcd),
        skiff.watch.errors,
        etcd.watch.errors
    );
    Ok(out)
}

/// The target, judged on the medians of the runs.
pub fn targets(m: &Summary, clients: Option<usize>, smoke: bool) -> Vec<Target> {
    let (clients, _) = settings(smoke, clients, None);
    let worst = [Op::Create, Op::Update]
        .iter()
        .filter_map(|op| m.median(&format!("skiff {} p99 ms", op.name())))
        .fold(f64::NAN, f64::max);
    vec![Target {
        what: format!(
            "p99 of a mutating call under 50 ms at 100 clients (worst median mutating p99 {worst:.2} ms at {clients} clients{})",
            if clients == 100 { "" } else { "; the target is stated for 100" }
        ),
        met: worst < 50.0,
    }]
}
