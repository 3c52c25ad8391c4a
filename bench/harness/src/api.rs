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
use crate::system::{connect, etcdpb, System};

/// The object every client writes: the Kubernetes documentation's nginx Deployment, renamed.
fn deployment(name: &str, replicas: u32) -> Vec<u8> {
    format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"{name}","labels":{{"app.kubernetes.io/name":"nginx"}}}},"spec":{{"replicas":{replicas},"selector":{{"matchLabels":{{"app.kubernetes.io/name":"nginx"}}}},"template":{{"metadata":{{"labels":{{"app.kubernetes.io/name":"nginx"}}}},"spec":{{"containers":[{{"name":"nginx","image":"nginx:1.14.2","ports":[{{"containerPort":80}}]}}]}}}}}}}}"#
    )
    .into_bytes()
}

fn etcd_key(name: &str) -> Vec<u8> {
    format!("/registry/deployments/default/{name}").into_bytes()
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

async fn call(system: System, channel: Channel, op: Op, name: &str, round: u32) -> Result<(), tonic::Status> {
    match (system, op) {
        (System::Skiff, Op::Create | Op::Update) => {
            let req = ApplyRequest { object: deployment(name, 2 + round % 3), dry_run: false };
            ResourcesClient::new(channel).apply(req).await.map(|_| ())
        }
        (System::Skiff, Op::Get) => {
            let req = GetObjectRequest {
                kind: "Deployment".into(),
                namespace: "default".into(),
                name: name.into(),
                stale: false,
            };
            ResourcesClient::new(channel).get(req).await.map(|_| ())
        }
        (System::Etcd, Op::Create | Op::Update) => {
            let req = etcdpb::PutRequest {
                key: etcd_key(name),
                value: deployment(name, 2 + round % 3),
                ..Default::default()
            };
            etcdpb::kv_client::KvClient::new(channel).put(req).await.map(|_| ())
        }
        (System::Etcd, Op::Get) => {
            let req = etcdpb::RangeRequest { key: etcd_key(name), ..Default::default() };
            etcdpb::kv_client::KvClient::new(channel).range(req).await.map(|_| ())
        }
    }
}

/// Latencies of one phase.
#[derive(Debug, Default, Clone)]
struct Figures {
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    errors: u64,
}

fn figures(mut lat: Vec<Duration>, seconds: f64, errors: u64) -> Figures {
    lat.sort();
    let pct = |p: f64| {
        if lat.is_empty() {
            Duration::ZERO
        } else {
            lat[((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1]
        }
    };
    Figures {
        ops_per_sec: lat.len() as f64 / seconds,
        p50: pct(0.5),
        p99: pct(0.99),
        max: lat.last().copied().unwrap_or_default(),
        errors,
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

/// `clients` clients run `op` for the warm-up and the measured time over `channels` (spread over the members).
/// Client `c` works on its own objects `c<c>-<i>`; updates and gets cycle through the first
/// `created[c]` of them.
async fn phase(
    system: System,
    channels: &[Channel],
    op: Op,
    clients: usize,
    timing: Timing,
    created: &[u32],
    sent: &SendTimes,
) -> (Figures, Vec<u32>) {
    let begin = Instant::now() + timing.warmup;
    let end = begin + timing.measure;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let channel = channels[c % channels.len()].clone();
        let known = created.get(c).copied().unwrap_or(0);
        let sent = sent.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut i, mut round) = (Vec::new(), 0u64, 0u32, 0u32);
            let mut messages: HashMap<String, u64> = HashMap::new();
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let n = if op == Op::Create { i } else { i % known.max(1) };
                if op != Op::Create && n == 0 && i > 0 {
                    round += 1;
                }
                let name = format!("c{c}-{n}");
                if op == Op::Create {
                    if let Ok(mut s) = sent.lock() {
                        s.insert(name.clone(), started);
                    }
                }
                match call(system, channel.clone(), op, &name, round).await {
                    Ok(()) if started >= begin => lat.push(started.elapsed()),
                    Ok(()) => {}
                    Err(status) => {
                        errors += 1;
                        *messages.entry(format!("{:?}: {}", status.code(), status.message())).or_default() += 1;
                    }
                }
                i += 1;
            }
            (lat, errors, i, messages)
        }));
    }
    let (mut all, mut errors, mut counts) = (Vec::new(), 0, Vec::new());
    let mut messages: HashMap<String, u64> = HashMap::new();
    for t in tasks {
        if let Ok((lat, e, i, m)) = t.await {
            all.extend(lat);
            errors += e;
            counts.push(i);
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
    (figures(all, timing.measure.as_secs_f64(), errors), counts)
}

/// Receives the watch events of deployments on `endpoint` and records, for every create with a
/// send time, how long after sending its event arrived (into `out`).
fn watch_latencies(
    system: System,
    endpoint: String,
    sent: SendTimes,
    out: Arc<Mutex<Vec<Duration>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(channel) = connect(&endpoint).await else { return };
        let record = |body: &[u8]| {
            let now = Instant::now();
            let Some(name) = name_of(body) else { return };
            let sent_at = sent.lock().ok().and_then(|mut s| s.remove(&name));
            if let (Some(t), Ok(mut out)) = (sent_at, out.lock()) {
                out.push(now - t);
            }
        };
        match system {
            System::Skiff => {
                let req = WatchObjectsRequest {
                    kind: "Deployment".into(),
                    namespace: "default".into(),
                    ..Default::default()
                };
                let Ok(resp) = ResourcesClient::new(channel).watch(req).await else { return };
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
                            key: b"/registry/deployments/".to_vec(),
                            range_end: b"/registry/deployments0".to_vec(),
                            ..Default::default()
                        },
                    )),
                };
                let requests =
                    tokio_stream::StreamExt::chain(tokio_stream::iter(vec![create]), tokio_stream::pending());
                let Ok(resp) = etcdpb::watch_client::WatchClient::new(channel).watch(requests).await else { return };
                let mut stream = resp.into_inner();
                while let Ok(Some(r)) = stream.message().await {
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
    phases: Vec<(Op, Figures)>,
    watch: Figures,
}

async fn bench_system(cluster: &Cluster, clients: usize, timing: Timing) -> anyhow::Result<SystemRun> {
    let measure = timing.measure;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    // Four connections to each member; clients are spread over all three, as users would be.
    let mut channels = Vec::new();
    for _ in 0..4 {
        for e in &cluster.endpoints {
            channels.push(connect(e).await?);
        }
    }
    let watcher = cluster.endpoints[(leader + 1) % cluster.endpoints.len()].clone();
    let sent: SendTimes = Arc::new(Mutex::new(HashMap::new()));
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let watch = watch_latencies(cluster.system, watcher, sent.clone(), delivered.clone());
    tokio::time::sleep(Duration::from_millis(300)).await; // the watch is established
    let mut phases = Vec::new();
    let mut created = Vec::new();
    for op in [Op::Create, Op::Update, Op::Get] {
        let (f, counts) = phase(cluster.system, &channels, op, clients, timing, &created, &sent).await;
        eprintln!(
            "  {:5} {:15} {:8.0} ops/s  p50 {:6.2} ms  p99 {:6.2} ms  max {:7.2} ms  errors {}",
            cluster.system.name(),
            op.name(),
            f.ops_per_sec,
            ms(f.p50),
            ms(f.p99),
            ms(f.max),
            f.errors
        );
        if op == Op::Create {
            created = counts;
        }
        phases.push((op, f));
    }
    watch.abort();
    let lat = delivered.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default();
    let missed = sent.lock().map(|s| s.len()).unwrap_or(0) as u64;
    let watch = figures(lat, measure.as_secs_f64(), missed);
    eprintln!(
        "  {:5} {:15} {:8} events p50 {:6.2} ms  p99 {:6.2} ms  max {:7.2} ms  creates never seen {}",
        cluster.system.name(),
        "watch delivery",
        (watch.ops_per_sec * measure.as_secs_f64()).round(),
        ms(watch.p50),
        ms(watch.p99),
        ms(watch.max),
        watch.errors
    );
    Ok(SystemRun { phases, watch })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub async fn run(bins: &Binaries, smoke: bool, clients: Option<usize>, seconds: Option<u64>) -> anyhow::Result<()> {
    let clients = clients.unwrap_or(if smoke { 10 } else { 100 });
    let measure = Duration::from_secs(seconds.unwrap_or(if smoke { 1 } else { 10 }));
    let warmup = if smoke { Duration::from_millis(300) } else { Duration::from_secs(2) };
    println!("api benchmark: 3 members on loopback each; {clients} concurrent clients spread over the members");
    println!(
        "each phase {} s after {} ms warm-up{}; objects: the nginx Deployment ({} bytes of JSON), renamed per write",
        measure.as_secs(),
        warmup.as_millis(),
        if smoke { " (smoke)" } else { "" },
        deployment("c0-0", 3).len()
    );
    println!("skiff: Resources/Apply and Resources/Get (linearizable); etcd: Put and Range of the same bytes");
    println!("watch delivery: create sent through any member -> ADDED event on a follower's watch");

    let skiff = {
        let cluster = Cluster::skiff(bins).await?;
        bench_system(&cluster, clients, Timing { warmup, measure }).await?
    };
    let etcd = {
        let cluster = Cluster::etcd(bins).await?;
        bench_system(&cluster, clients, Timing { warmup, measure }).await?
    };

    println!();
    println!("| call | skiff ops/s | skiff p50 / p99 / max ms | etcd ops/s | etcd p50 / p99 / max ms | p99 ratio (skiff/etcd) |");
    println!("|---|---:|---:|---:|---:|---:|");
    let row = |name: &str, s: &Figures, e: &Figures| {
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
        )
    };
    for ((op, s), (_, e)) in skiff.phases.iter().zip(&etcd.phases) {
        row(op.name(), s, e);
    }
    row("watch delivery", &skiff.watch, &etcd.watch);
    println!();
    let worst = skiff.phases.iter().filter(|(op, _)| *op != Op::Get).map(|(_, f)| f.p99).max().unwrap_or_default();
    println!(
        "target: p99 of a mutating call under 50 ms at 100 clients: {} (worst mutating p99 {:.2} ms at {clients} clients{})",
        if worst < Duration::from_millis(50) { "met" } else { "NOT met" },
        ms(worst),
        if clients == 100 { "" } else { "; the target is stated for 100" }
    );
    let errors = |r: &SystemRun| r.phases.iter().map(|(_, f)| f.errors).sum::<u64>();
    println!(
        "summary: failed calls: skiff {}, etcd {}; creates whose watch event never arrived: skiff {}, etcd {}",
        errors(&skiff),
        errors(&etcd),
        skiff.watch.errors,
        etcd.watch.errors
    );
    Ok(())
}
