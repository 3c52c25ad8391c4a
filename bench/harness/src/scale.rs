//! Scale: 1,000 simulated nodes and 30,000 pods on a three-member cluster whose members run no
//! agent of their own. The nodes are [`HollowNodes`], registered and renewed every second by the
//! benchmark; no agent runs the pods, so what is measured is the control plane: how fast the
//! leader's controllers turn 30 Deployments into 30,000 pods bound to nodes.
//!
//! Each run has two clusters, one after the other:
//!
//! 1. End to end. Liveness first, with the nodes and no pods: the leader's CPU while every node
//!    renews once a second (`Resources/RenewNode`, held in the leader's memory), against the same
//!    with every node also writing its status once a second (Kubernetes' way before Leases), and
//!    idle before any node exists. Then 30 Deployments of 1,000 replicas are applied at once; a
//!    watch of pods on a follower times each pod's first sighting and its first sighting bound,
//!    until all are bound. The leader's memory is read before the pods and after.
//! 2. Scheduler only. The nodes report `allocatable.pods: 0`, so every pod is created and marked
//!    unschedulable (`0/1000 nodes are available: 1000 Too many pods.`) without being bound. Once all
//!    exist and the scheduler is quiet, every node reports room for 110 pods at once (T0), and the
//!    time until all pods are bound is the scheduler's alone (binds and their events). A pod the
//!    first nodes to report cannot take keeps the same message, so nothing is written for it twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use skiff_proto::api::resources_client::ResourcesClient;
use skiff_proto::api::ApplyRequest;
use tokio::task::JoinSet;

use crate::cluster::{Binaries, Cluster};
use crate::follow::{self, Seen};
use crate::hollow::{self, Calls, HollowNodes};
use crate::report::{self, fmt, Figures, Summary, Target};
use crate::{cpu, memory};

/// Replicas of each Deployment; `--pods` makes as many Deployments as it takes (the last one
/// gets the rest).
const PER_DEPLOYMENT: usize = 1000;
/// How often a wait looks at what the watches saw (in memory here: cheap).
const POLL: Duration = Duration::from_millis(20);
/// How often a long wait says how far it got.
const PROGRESS: Duration = Duration::from_secs(10);
/// How long the scheduler must have written nothing before the held pods are released.
const QUIET: Duration = Duration::from_secs(1);
/// Members with no agent of their own: the simulated nodes are the only nodes.
const MEMBERS: &str = "# The nodes are simulated by the benchmark.\n[agent]\nruntime = \"none\"\n";
/// The target, in pods bound per second.
const TARGET: f64 = 5000.0;

struct Settings {
    nodes: usize,
    pods: usize,
    /// Each liveness window: renewals, then renewals and status writes.
    window: Duration,
    /// The idle window, before any node exists.
    idle: Duration,
    /// How long the pods may take to be bound (or, held, to be created) before the run fails.
    deadline: Duration,
}

fn settings(smoke: bool, nodes: Option<usize>, pods: Option<usize>) -> Settings {
    Settings {
        nodes: nodes.unwrap_or(if smoke { 100 } else { 1000 }),
        pods: pods.unwrap_or(if smoke { 2000 } else { 30_000 }),
        window: Duration::from_secs(if smoke { 2 } else { 10 }),
        idle: Duration::from_secs(if smoke { 1 } else { 5 }),
        deadline: Duration::from_secs(if smoke { 60 } else { 300 }),
    }
}

/// The Deployments that make `pods` pods: `(name, replicas)`.
fn deployments(pods: usize) -> Vec<(String, usize)> {
    let count = pods.div_ceil(PER_DEPLOYMENT);
    (0..count).map(|d| (format!("scale-{:02}", d + 1), PER_DEPLOYMENT.min(pods - d * PER_DEPLOYMENT))).collect()
}

/// A small pod template with requests, so the scheduler's resource filter has work to do.
fn deployment_json(name: &str, replicas: usize) -> Vec<u8> {
    format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"{name}"}},"spec":{{"replicas":{replicas},"selector":{{"matchLabels":{{"app":"{name}"}}}},"template":{{"metadata":{{"labels":{{"app":"{name}"}}}},"spec":{{"containers":[{{"name":"app","image":"registry.k8s.io/pause:3.9","resources":{{"requests":{{"cpu":"10m","memory":"16Mi"}}}}}}]}}}}}}}}"#
    )
    .into_bytes()
}

pub fn describe(smoke: bool, nodes: Option<usize>, pods: Option<usize>) {
    let s = settings(smoke, nodes, pods);
    let d = deployments(s.pods);
    println!(
        "scale benchmark: {} simulated nodes ({} cpu, {} memory, {} pods each) renewed every second by the benchmark over a connection each, spread over three members without agents",
        s.nodes,
        hollow::CPU,
        hollow::MEMORY,
        hollow::MAX_PODS
    );
    println!(
        "liveness: leader CPU idle ({} s, no nodes), with every node renewing (RenewNode, {} s), and renewing and writing its status (UpdateStatus, {} s)",
        s.idle.as_secs(),
        s.window.as_secs(),
        s.window.as_secs()
    );
    println!(
        "end to end: {} Deployment(s) of up to {PER_DEPLOYMENT} replicas ({} pods, requests 10m cpu / 16Mi) applied at once; a watch of pods on a follower until all are bound (at most {} s)",
        d.len(),
        s.pods,
        s.deadline.as_secs()
    );
    println!("scheduler only: the same pods created while every node offers 0 pods, then every node reports room at once: time until all are bound");
}

/// The pods as the watch on a follower saw them.
#[derive(Default)]
struct Pods {
    /// When each pod (`namespace/name`) was first seen.
    created: HashMap<String, Instant>,
    /// When each pod was first seen bound, and to which node.
    bound: HashMap<String, (Instant, String)>,
    /// Pods seen marked unschedulable (`PodScheduled` False).
    held: HashSet<String>,
    /// Pods deleted (nothing in this benchmark deletes one).
    deleted: u64,
    /// When the watch last saw any change to a pod.
    last_change: Option<Instant>,
}

impl Pods {
    fn see(&mut self, seen: Seen) {
        let now = Instant::now();
        self.last_change = Some(now);
        let body = match seen {
            Seen::Listed(b) | Seen::Added(b) | Seen::Modified(b) => b,
            Seen::Deleted => {
                self.deleted += 1;
                return;
            }
        };
        let Ok(pod) = serde_json::from_slice::<serde_json::Value>(body) else { return };
        let (Some(namespace), Some(name)) = (pod["metadata"]["namespace"].as_str(), pod["metadata"]["name"].as_str())
        else {
            return;
        };
        let key = format!("{namespace}/{name}");
        if let Some(node) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
            self.bound.entry(key.clone()).or_insert_with(|| (now, node.to_string()));
        }
        let unschedulable = pod["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "PodScheduled" && c["status"] == "False"));
        if unschedulable {
            self.held.insert(key.clone());
        }
        self.created.entry(key).or_insert(now);
    }
}

/// The nodes as the watch on a follower saw them.
#[derive(Default)]
struct Nodes {
    /// Each node's last state: in service (Ready, untainted, not cordoned), and its allocatable pods.
    state: HashMap<String, (bool, String)>,
    /// Nodes seen out of service after they had been in service (the leader found them silent).
    lost: HashSet<String>,
}

impl Nodes {
    fn see(&mut self, seen: Seen) {
        let body = match seen {
            Seen::Listed(b) | Seen::Added(b) | Seen::Modified(b) => b,
            Seen::Deleted => return,
        };
        let Ok(node) = serde_json::from_slice::<serde_json::Value>(body) else { return };
        let Some(name) = node["metadata"]["name"].as_str() else { return };
        let ready = node["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        let tainted = node["spec"]["taints"].as_array().is_some_and(|t| !t.is_empty());
        let cordoned = node["spec"]["unschedulable"] == true;
        let in_service = ready && !tainted && !cordoned;
        let pods = node["status"]["allocatable"]["pods"].as_str().unwrap_or("").to_string();
        let was = self.state.insert(name.to_string(), (in_service, pods));
        if was.is_some_and(|(before, _)| before) && !in_service {
            self.lost.insert(name.to_string());
        }
    }

    fn in_service_with(&self, pods: u32) -> usize {
        let pods = pods.to_string();
        self.state.values().filter(|(ok, p)| *ok && *p == pods).count()
    }
}

/// Polls `check` until it gives a value; past `limit` fails with what it last said it waits for.
/// A long wait prints that every [`PROGRESS`].
async fn until<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Result<T, String>) -> anyhow::Result<T> {
    let started = Instant::now();
    let deadline = started + limit;
    let mut told = started;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(progress) if Instant::now() >= deadline => {
                anyhow::bail!("{what}: not within {} s ({progress})", limit.as_secs())
            }
            Err(progress) => {
                if told.elapsed() >= PROGRESS {
                    told = Instant::now();
                    println!("  waiting for {what}, {:.0} s: {progress}", started.elapsed().as_secs_f64());
                }
                tokio::time::sleep(POLL).await
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A cluster with its simulated nodes registered, renewing and seen in service on a follower.
struct Simulated {
    cluster: Cluster,
    leader: usize,
    /// The member whose replica the watches read (a follower).
    follower: usize,
    nodes: HollowNodes,
    seen: Arc<Mutex<Nodes>>,
    _watch: follow::Follower,
    /// The cluster's cost before any node existed, when asked for.
    idle: Option<Load>,
}

impl Simulated {
    /// With `idle`, first measures the cluster's CPU for that long before any node exists.
    async fn start(bins: &Binaries, s: &Settings, pods: u32, idle: Option<Duration>) -> anyhow::Result<Self> {
        let cluster = Cluster::skiff_with(bins, MEMBERS).await?;
        let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
        let follower = (leader + 1) % cluster.endpoints.len();
        let pids = cluster.pids();
        println!("leader: node{} (pid {}); watches on node{}", leader + 1, pids[leader], follower + 1);
        let idle = match idle {
            Some(window) => {
                let before = Sample::take(&pids, pids[leader], Calls::default());
                tokio::time::sleep(window).await; // the measured window itself
                Some(Load::between(&before, &Sample::take(&pids, pids[leader], Calls::default())))
            }
            None => None,
        };
        let seen = Arc::new(Mutex::new(Nodes::default()));
        let into = seen.clone();
        let access = cluster.skiff_access()?;
        let watch = follow::start(access, &cluster.endpoints[follower], "Node", move |n| lock(&into).see(n)).await?;
        let nodes = HollowNodes::new(access, &cluster.endpoints, s.nodes, pods)?;
        let started = Instant::now();
        nodes.register().await?;
        let registered = started.elapsed();
        let want = s.nodes;
        until("every simulated node in service", Duration::from_secs(60), || {
            let n = lock(&seen).in_service_with(pods);
            if n == want {
                Ok(())
            } else {
                Err(format!("{n} of {want} Ready, untainted and offering {pods} pods"))
            }
        })
        .await?;
        println!(
            "{want} simulated nodes registered in {:.2} s (create, renew, status each), all in service on node{} after {:.2} s",
            registered.as_secs_f64(),
            follower + 1,
            started.elapsed().as_secs_f64()
        );
        Ok(Simulated { cluster, leader, follower, nodes, seen, _watch: watch, idle })
    }

    fn leader_pid(&self) -> u32 {
        self.cluster.pids()[self.leader]
    }

    /// The Raft term now (0 when no leader answers): a change means elections.
    async fn term(&self) -> u64 {
        self.cluster.status().await.map(|(_, term)| term).unwrap_or(0)
    }

    /// The current leader's pid, saying so when it is no longer the first one.
    async fn current_leader_pid(&self) -> anyhow::Result<u32> {
        let now = self.cluster.wait_leader(Duration::from_secs(20)).await?;
        if now != self.leader {
            println!("the leader changed: node{} -> node{}", self.leader + 1, now + 1);
        }
        Ok(self.cluster.pids()[now])
    }

    /// [`until`], and the number of Raft term changes meanwhile; a failure prints the members' last
    /// log lines and says how the term moved.
    async fn until<T>(
        &self,
        what: &str,
        limit: Duration,
        check: impl FnMut() -> Result<T, String>,
    ) -> anyhow::Result<(T, u64)> {
        let before = self.term().await;
        let outcome = until(what, limit, check).await;
        let after = self.term().await;
        if outcome.is_err() {
            println!("{}", self.cluster.log_tails());
        }
        let value = outcome.with_context(|| format!("raft term {before} before, {after} now (0: no leader)"))?;
        if after != before {
            println!("the raft term changed while waiting for {what}: {before} -> {after}");
        }
        Ok((value, after.saturating_sub(before)))
    }

    /// Waits until the watch has seen `want` pods bound; the Raft term changes meanwhile.
    async fn until_bound(&self, pods: &Mutex<Pods>, want: usize, limit: Duration) -> anyhow::Result<u64> {
        let ((), elections) = self
            .until("every pod bound", limit, || {
                let p = lock(pods);
                if p.bound.len() >= want {
                    Ok(())
                } else {
                    Err(format!("{} of {want} pods created, {} bound", p.created.len(), p.bound.len()))
                }
            })
            .await?;
        Ok(elections)
    }

    /// Follows the pods on the follower.
    async fn watch_pods(&self) -> anyhow::Result<(Arc<Mutex<Pods>>, follow::Follower)> {
        let pods = Arc::new(Mutex::new(Pods::default()));
        let into = pods.clone();
        let access = self.cluster.skiff_access()?;
        let watch =
            follow::start(access, &self.cluster.endpoints[self.follower], "Pod", move |p| lock(&into).see(p)).await?;
        Ok((pods, watch))
    }

    /// Applies every Deployment at once, spread over the members; fails if any apply fails.
    async fn apply(&self, pods: usize) -> anyhow::Result<()> {
        let mut channels = Vec::new();
        for i in 0..self.cluster.endpoints.len() {
            channels.push(self.cluster.connect(i).await?);
        }
        let mut tasks = JoinSet::new();
        for (d, (name, replicas)) in deployments(pods).into_iter().enumerate() {
            let channel = channels[d % channels.len()].clone();
            tasks.spawn(async move {
                let req = ApplyRequest { object: deployment_json(&name, replicas), dry_run: false };
                ResourcesClient::new(channel)
                    .apply(req)
                    .await
                    .map_err(|s| anyhow::anyhow!("applying Deployment {name}: {}", s.message()))
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    }

    /// Fails when more than the budget of the nodes' calls failed; prints why any failed.
    fn check_calls(&self, label: &str) -> anyhow::Result<Calls> {
        let calls = self.nodes.calls();
        for (what, why, n) in self.nodes.failures().iter().take(3) {
            println!("  {label}: {n} x {what} failed: {why}");
        }
        report::check_failures("skiff", &format!("node renewals ({label})"), calls.renewals_failed, calls.renewals)?;
        if calls.status_writes > 0 {
            report::check_failures(
                "skiff",
                &format!("node status writes ({label})"),
                calls.status_writes_failed,
                calls.status_writes,
            )?;
        }
        Ok(calls)
    }

    fn lost_nodes(&self) -> usize {
        lock(&self.seen).lost.len()
    }
}

/// CPU counters and the nodes' calls at one instant.
struct Sample {
    at: Instant,
    leader: f64,
    members: f64,
    harness: f64,
    calls: Calls,
}

impl Sample {
    fn take(pids: &[u32], leader: u32, calls: Calls) -> Self {
        let seconds = |pid: u32| cpu::process_seconds(&pid.to_string()).unwrap_or(0.0);
        Sample {
            at: Instant::now(),
            leader: seconds(leader),
            members: pids.iter().map(|p| seconds(*p)).sum(),
            harness: cpu::process_seconds("self").unwrap_or(0.0),
            calls,
        }
    }
}

/// What a window cost: CPU as % of one core, and the calls made.
struct Load {
    leader_pct: f64,
    members_pct: f64,
    harness_pct: f64,
    calls: Calls,
    seconds: f64,
}

impl Load {
    fn between(a: &Sample, b: &Sample) -> Self {
        let seconds = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
        let pct = |x: f64, y: f64| (y - x) / seconds * 100.0;
        Load {
            leader_pct: pct(a.leader, b.leader),
            members_pct: pct(a.members, b.members),
            harness_pct: pct(a.harness, b.harness),
            calls: b.calls - a.calls,
            seconds,
        }
    }

    fn print(&self, what: &str) {
        let c = &self.calls;
        println!(
            "| {what} | {:.1} | {:.1} | {:.0} ({} failed) | {:.0} ({} failed) | {:.1} |",
            self.leader_pct,
            self.members_pct,
            c.renewals as f64 / self.seconds,
            c.renewals_failed,
            c.status_writes as f64 / self.seconds,
            c.status_writes_failed,
            self.harness_pct
        );
    }
}

fn mib(pid: u32) -> (f64, f64) {
    memory::of(pid).map_or((f64::NAN, f64::NAN), |m| (m.rss_mib, m.peak_mib))
}

/// Pods bound per 1 s bucket after `t0`.
fn per_second(times: impl Iterator<Item = Instant>, t0: Instant) -> Vec<u64> {
    let mut buckets: Vec<u64> = Vec::new();
    for t in times {
        let b = t.saturating_duration_since(t0).as_secs() as usize;
        if buckets.len() <= b {
            buckets.resize(b + 1, 0);
        }
        buckets[b] += 1;
    }
    buckets
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// What the watch saw of the binding: time until all were bound, the overall and peak rate, and
/// the most pods on one node (which must not exceed its limit).
struct Binding {
    all_bound: Duration,
    rate: f64,
    peak: u64,
    buckets: Vec<u64>,
    most_on_a_node: usize,
}

fn binding(pods: &Pods, t0: Instant) -> Binding {
    let last = pods.bound.values().map(|(t, _)| *t).max().unwrap_or(t0);
    let all_bound = last.saturating_duration_since(t0);
    let buckets = per_second(pods.bound.values().map(|(t, _)| *t), t0);
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for (_, node) in pods.bound.values() {
        *per_node.entry(node.as_str()).or_default() += 1;
    }
    Binding {
        all_bound,
        rate: pods.bound.len() as f64 / all_bound.as_secs_f64().max(1e-3),
        peak: buckets.iter().copied().max().unwrap_or(0),
        buckets,
        most_on_a_node: per_node.values().copied().max().unwrap_or(0),
    }
}

/// Fails when a node holds more pods than its limit; else adds the phase's binding figures.
fn record_binding(phase: &str, b: &Binding, out: &mut Figures) -> anyhow::Result<()> {
    if b.most_on_a_node > hollow::MAX_PODS as usize {
        anyhow::bail!("{} pods bound to one node, whose limit is {}", b.most_on_a_node, hollow::MAX_PODS);
    }
    out.add(format!("{phase}: all bound (s)"), b.all_bound.as_secs_f64());
    out.add(format!("{phase}: pods bound/s"), b.rate);
    out.add(format!("{phase}: peak pods bound in 1 s"), b.peak as f64);
    Ok(())
}

fn buckets_line(buckets: &[u64]) -> String {
    buckets.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(" ")
}

/// Liveness, then every pod end to end, on one cluster.
async fn end_to_end(bins: &Binaries, s: &Settings, out: &mut Figures) -> anyhow::Result<()> {
    println!();
    println!("### cluster 1: liveness, then end to end");
    println!();
    let sim = Simulated::start(bins, s, hollow::MAX_PODS, Some(s.idle)).await?;
    let pids = sim.cluster.pids();
    let leader = sim.leader_pid();
    // Renewals alone, then with status writes, over the same nodes and connections.
    let mut windows = Vec::new();
    for writes in [false, true] {
        sim.nodes.set_status_writes(writes);
        let before = Sample::take(&pids, leader, sim.nodes.calls());
        tokio::time::sleep(s.window).await; // the measured window itself
        windows.push(Load::between(&before, &Sample::take(&pids, leader, sim.nodes.calls())));
    }
    sim.nodes.set_status_writes(false);
    let (renew, write) = (&windows[0], &windows[1]);
    println!();
    println!(
        "| load | leader CPU % of a core | three members CPU % | renewals/s | status writes/s | load generator CPU % |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let idle_pct = sim.idle.as_ref().map_or(0.0, |idle| {
        idle.print("idle, no nodes");
        idle.leader_pct
    });
    renew.print(&format!("{} nodes renewing (RenewNode 1/s each)", s.nodes));
    write.print(&format!("{} nodes renewing and writing status (UpdateStatus 1/s each)", s.nodes));
    let per_call = |load: &Load, calls: u64| {
        (load.leader_pct - idle_pct).max(0.0) / 100.0 * load.seconds / calls.max(1) as f64 * 1e6
    };
    println!();
    println!(
        "liveness: over idle, the leader spends {:.0} µs of CPU per renewal; with status writes {:.0} µs per node-second ({:.1}x)",
        per_call(renew, renew.calls.renewals),
        per_call(write, write.calls.renewals),
        (write.leader_pct - idle_pct) / (renew.leader_pct - idle_pct).max(1e-9)
    );
    if let Some(idle) = &sim.idle {
        out.add("idle: leader CPU % of a core", idle.leader_pct);
        out.add("idle: three members CPU %", idle.members_pct);
    }
    out.add("renewals: leader CPU % of a core", renew.leader_pct);
    out.add("renewals: three members CPU %", renew.members_pct);
    out.add("renewals + status writes: leader CPU % of a core", write.leader_pct);
    out.add("renewals + status writes: three members CPU %", write.members_pct);
    out.add("renewals + status writes: status writes failed", write.calls.status_writes_failed as f64);

    let (idle_rss, _) = mib(leader);
    println!("leader memory with {} nodes and no pods: {idle_rss:.0} MiB resident", s.nodes);
    out.add("leader RSS MiB, nodes and no pods", idle_rss);

    let (pods, watch) = sim.watch_pods().await?;
    let t0 = Instant::now();
    sim.apply(s.pods).await?;
    let applied = t0.elapsed();
    let want = s.pods;
    let elections = sim.until_bound(&pods, want, s.deadline).await?;
    let (rss, peak) = mib(sim.current_leader_pid().await?);
    let p = lock(&pods);
    let b = binding(&p, t0);
    let created_last = p.created.values().max().copied().unwrap_or(t0).saturating_duration_since(t0);
    let mut lag: Vec<Duration> =
        p.bound.iter().filter_map(|(k, (at, _))| p.created.get(k).map(|c| at.saturating_duration_since(*c))).collect();
    lag.sort();
    let (lag50, lag99) = (percentile(&lag, 0.5), percentile(&lag, 0.99));
    println!(
        "end to end: {} Deployment(s) applied in {:.0} ms; all {want} pods seen created after {:.2} s ({:.0}/s), all bound after {:.2} s",
        deployments(want).len(),
        applied.as_secs_f64() * 1000.0,
        created_last.as_secs_f64(),
        want as f64 / created_last.as_secs_f64().max(1e-3),
        b.all_bound.as_secs_f64()
    );
    println!(
        "end to end: {:.0} pods bound/s overall, peak {} in one second; created -> bound p50 {:.0} ms, p99 {:.0} ms; most pods on one node {}",
        b.rate,
        b.peak,
        lag50.as_secs_f64() * 1000.0,
        lag99.as_secs_f64() * 1000.0,
        b.most_on_a_node
    );
    println!("end to end: bound per second: {}", buckets_line(&b.buckets));
    println!(
        "leader memory with {want} pods bound: {rss:.0} MiB resident, peak {peak:.0} MiB (idle {idle_rss:.0} MiB); pod watch restarted {} time(s), {} pod(s) deleted",
        watch.restarts(),
        p.deleted
    );
    record_binding("end to end", &b, out)?;
    out.add("end to end: pods created/s", want as f64 / created_last.as_secs_f64().max(1e-3));
    out.add("end to end: created -> bound p50 ms", lag50.as_secs_f64() * 1000.0);
    out.add("end to end: created -> bound p99 ms", lag99.as_secs_f64() * 1000.0);
    out.add("end to end: raft term changes", elections as f64);
    out.add("leader RSS MiB, all bound", rss);
    out.add("leader peak RSS MiB", peak);
    drop(p);
    let lost = sim.lost_nodes();
    let calls = sim.check_calls("cluster 1")?;
    println!(
        "cluster 1: {} renewals ({} failed), {} status writes ({} failed); nodes taken out of service: {lost}",
        calls.renewals, calls.renewals_failed, calls.status_writes, calls.status_writes_failed
    );
    out.add("nodes taken out of service (cluster 1)", lost as f64);
    Ok(())
}

/// The pods created while no node has room, then released at once: the scheduler alone.
async fn scheduler_only(bins: &Binaries, s: &Settings, out: &mut Figures) -> anyhow::Result<()> {
    println!();
    println!("### cluster 2: scheduler only");
    println!();
    let sim = Simulated::start(bins, s, 0, None).await?;
    let (pods, watch) = sim.watch_pods().await?;
    let started = Instant::now();
    sim.apply(s.pods).await?;
    let want = s.pods;
    sim.until("every pod created and marked unschedulable", s.deadline, || {
        let p = lock(&pods);
        if p.created.len() >= want && p.held.len() >= want && p.bound.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} of {want} pods created, {} marked unschedulable, {} bound",
                p.created.len(),
                p.held.len(),
                p.bound.len()
            ))
        }
    })
    .await?;
    let held = started.elapsed();
    until("the scheduler quiet", Duration::from_secs(30), || {
        let since = lock(&pods).last_change.map_or(Duration::MAX, |t| t.elapsed());
        if since >= QUIET {
            Ok(())
        } else {
            Err(format!("the last pod change {} ms ago", since.as_millis()))
        }
    })
    .await?;
    println!("all {want} pods created and marked unschedulable after {:.2} s; releasing them", held.as_secs_f64());
    let t0 = Instant::now();
    sim.nodes.report_pods(hollow::MAX_PODS).await?;
    let reported = t0.elapsed();
    let elections = sim.until_bound(&pods, want, s.deadline).await?;
    let (rss, peak) = mib(sim.current_leader_pid().await?);
    let p = lock(&pods);
    let b = binding(&p, t0);
    println!(
        "scheduler only: every node reported room within {:.0} ms; all {want} pods bound after {:.2} s: {:.0} pods bound/s, peak {} in one second; most pods on one node {}",
        reported.as_secs_f64() * 1000.0,
        b.all_bound.as_secs_f64(),
        b.rate,
        b.peak,
        b.most_on_a_node
    );
    println!("scheduler only: bound per second: {}", buckets_line(&b.buckets));
    println!(
        "leader memory: {rss:.0} MiB resident, peak {peak:.0} MiB; pod watch restarted {} time(s), {} pod(s) deleted",
        watch.restarts(),
        p.deleted
    );
    record_binding("scheduler only", &b, out)?;
    out.add("scheduler only: raft term changes", elections as f64);
    drop(p);
    let lost = sim.lost_nodes();
    let calls = sim.check_calls("cluster 2")?;
    println!(
        "cluster 2: {} renewals ({} failed); nodes taken out of service: {lost}",
        calls.renewals, calls.renewals_failed
    );
    out.add("nodes taken out of service (cluster 2)", lost as f64);
    Ok(())
}

pub async fn run_once(
    bins: &Binaries,
    smoke: bool,
    nodes: Option<usize>,
    pods: Option<usize>,
) -> anyhow::Result<Figures> {
    let s = settings(smoke, nodes, pods);
    let room = s.nodes * hollow::MAX_PODS as usize;
    anyhow::ensure!(s.pods <= room, "{} pods do not fit on {} nodes of {} pods", s.pods, s.nodes, hollow::MAX_PODS);
    anyhow::ensure!(s.nodes > 0 && s.pods > 0, "--nodes and --pods must be at least 1");
    let mut out = Figures::default();
    end_to_end(bins, &s, &mut out).await?;
    scheduler_only(bins, &s, &mut out).await?;
    Ok(out)
}

pub fn targets(m: &Summary) -> Vec<Target> {
    let get = |name: &str| m.median(name).unwrap_or(f64::NAN);
    let e2e = get("end to end: pods bound/s");
    let alone = get("scheduler only: pods bound/s");
    vec![Target {
        what: format!(
            "at least {TARGET:.0} pods bound/s end to end (median {}; scheduler only {}; Kubernetes' scheduler about 100/s at 5,000 nodes, Nomad's C1M 3,750/s)",
            fmt(e2e),
            fmt(alone)
        ),
        met: e2e >= TARGET,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pods_are_split_into_deployments_of_a_thousand() {
        assert_eq!(deployments(30_000).len(), 30);
        assert_eq!(deployments(2000), vec![("scale-01".to_string(), 1000), ("scale-02".to_string(), 1000)]);
        assert_eq!(deployments(2500).last(), Some(&("scale-03".to_string(), 500)));
    }

    #[test]
    fn a_pod_counts_as_bound_once_at_its_first_sighting() {
        let mut pods = Pods::default();
        let pending = br#"{"metadata":{"namespace":"default","name":"a"},"spec":{},"status":{"conditions":[{"type":"PodScheduled","status":"False"}]}}"#;
        let bound = br#"{"metadata":{"namespace":"default","name":"a"},"spec":{"nodeName":"sim-0001"}}"#;
        pods.see(Seen::Added(pending));
        assert!(pods.bound.is_empty());
        assert_eq!(pods.held.len(), 1);
        pods.see(Seen::Modified(bound));
        let first = pods.bound["default/a"].0;
        pods.see(Seen::Listed(bound));
        assert_eq!(pods.bound.len(), 1);
        assert_eq!(pods.bound["default/a"], (first, "sim-0001".to_string()));
        assert_eq!(pods.created.len(), 1);
    }

    #[test]
    fn a_node_that_leaves_service_is_counted_once_it_had_been_in_service() {
        let mut nodes = Nodes::default();
        let ready = br#"{"metadata":{"name":"n"},"spec":{},"status":{"allocatable":{"pods":"110"},"conditions":[{"type":"Ready","status":"True"}]}}"#;
        let tainted = br#"{"metadata":{"name":"n"},"spec":{"taints":[{"key":"k","effect":"NoSchedule"}]},"status":{"allocatable":{"pods":"110"},"conditions":[{"type":"Ready","status":"True"}]}}"#;
        nodes.see(Seen::Added(tainted));
        assert!(nodes.lost.is_empty());
        nodes.see(Seen::Modified(ready));
        assert_eq!(nodes.in_service_with(110), 1);
        assert_eq!(nodes.in_service_with(0), 0);
        nodes.see(Seen::Modified(tainted));
        assert_eq!(nodes.lost.len(), 1);
    }

    #[test]
    fn binding_rates_come_from_one_second_buckets() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(
            per_second([at(10), at(900), at(1100), at(2500), at(2600), at(2700)].into_iter(), t0),
            vec![2, 1, 3]
        );
        let lat: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&lat, 0.99), Duration::from_millis(99));
    }
}
