//! Store throughput and latency: each client writes values (256 bytes unless asked) to distinct
//! keys, one write at a time, against the leader, for a fixed time; Skiff and etcd in the same run.

use std::time::{Duration, Instant};

use crate::cluster::{Binaries, Cluster};
use crate::cpu::{self, Usage};
use crate::report::{self, Figures, Summary, Target};
use crate::system::Dialer;

/// What one run at one client count measured.
#[derive(Debug, Clone)]
pub struct LoadResult {
    pub clients: usize,
    pub writes_per_sec: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub errors: u64,
    pub term_before: u64,
    pub term_after: u64,
    /// Cores used during the run (warm-up included) by the benchmark and by everything else.
    pub cpu: Usage,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// What the writers of one load did: accepted latencies in the measured window, calls made and
/// failed, and each client's last acknowledged write (key, value) to read back.
struct Load {
    latencies: Vec<Duration>,
    calls: u64,
    errors: u64,
    last: Vec<(String, Vec<u8>)>,
}

/// The value of `key`: its own name, padded to `bytes`, so a read-back proves which write it is.
fn value_of(key: &str, bytes: usize) -> Vec<u8> {
    let mut v = key.as_bytes().to_vec();
    v.resize(bytes.max(v.len()), b'.');
    v
}

/// Runs `clients` writers against `endpoint` for `warmup` (not measured) then `measure`.
async fn load(
    dialer: &Dialer,
    endpoint: &str,
    clients: usize,
    warmup: Duration,
    measure: Duration,
    tag: &str,
    value_bytes: usize,
) -> anyhow::Result<Load> {
    let system = dialer.system();
    let mut channels = Vec::new();
    for _ in 0..clients.min(16) {
        channels.push(dialer.connect(endpoint).await?);
    }
    let begin = Instant::now() + warmup;
    let end = begin + measure;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let channel = channels[c % channels.len()].clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let (mut mine, mut calls, mut errors, mut last) = (Vec::new(), 0u64, 0u64, None);
            let mut i = 0u64;
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let key = format!("bench/{tag}/{c}/{i}");
                i += 1;
                calls += 1;
                let value = value_of(&key, value_bytes);
                match system.put(channel.clone(), key.clone(), value.clone()).await {
                    Ok(()) => {
                        if started >= begin {
                            mine.push(started.elapsed());
                        }
                        last = Some((key, value));
                    }
                    Err(_) => errors += 1,
                }
            }
            (mine, calls, errors, last)
        }));
    }
    let mut out = Load { latencies: Vec::new(), calls: 0, errors: 0, last: Vec::new() };
    for t in tasks {
        let (mine, calls, errors, last) = t.await?;
        out.latencies.extend(mine);
        out.calls += calls;
        out.errors += errors;
        out.last.extend(last);
    }
    out.latencies.sort();
    Ok(out)
}

/// Reads back every client's last acknowledged write (linearizable) and fails unless each is there
/// with its value: the writes counted were really stored.
async fn read_back(dialer: &Dialer, endpoint: &str, written: &[(String, Vec<u8>)]) -> anyhow::Result<()> {
    let system = dialer.system();
    let channel = dialer.connect(endpoint).await?;
    for (key, value) in written {
        let got = system
            .get(channel.clone(), key.clone())
            .await
            .map_err(|s| anyhow::anyhow!("{}: reading back {key} failed: {}", system.name(), s.message()))?;
        if got.as_deref() != Some(value.as_slice()) {
            anyhow::bail!("{}: acknowledged write {key} does not read back with its value", system.name());
        }
    }
    Ok(())
}

async fn bench_system(
    cluster: &Cluster,
    counts: &[usize],
    warmup: Duration,
    measure: Duration,
    value_bytes: usize,
) -> anyhow::Result<Vec<LoadResult>> {
    let mut out = Vec::new();
    for &clients in counts {
        let name = cluster.system().name();
        let (leader, term_before) = cluster.status().await.ok_or_else(|| anyhow::anyhow!("{name}: no leader"))?;
        let tag = format!("c{clients}");
        let before = cpu::sample(&cluster.pids());
        let done =
            load(&cluster.dialer, &cluster.endpoints[leader], clients, warmup, measure, &tag, value_bytes).await?;
        let cpu = cpu::usage(&before, &cpu::sample(&cluster.pids()));
        let term_after = cluster.status().await.map(|(_, t)| t).unwrap_or(0);
        let lat = &done.latencies;
        let r = LoadResult {
            clients,
            writes_per_sec: lat.len() as f64 / measure.as_secs_f64(),
            p50: percentile(lat, 0.50),
            p99: percentile(lat, 0.99),
            max: lat.last().copied().unwrap_or_default(),
            errors: done.errors,
            term_before,
            term_after,
            cpu,
        };
        eprintln!(
            "  {:5} {:5} clients: {:9.0} writes/s  p50 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms  failed {} of {}  term {} -> {}  cores: bench {:.2}, other {:.2}",
            name,
            clients,
            r.writes_per_sec,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            r.errors,
            done.calls,
            r.term_before,
            r.term_after,
            r.cpu.ours,
            r.cpu.other
        );
        report::check_failures(name, &format!("writes at {clients} clients"), done.errors, done.calls)?;
        let reader = cluster.status().await.map(|(l, _)| l).unwrap_or(leader);
        read_back(&cluster.dialer, &cluster.endpoints[reader], &done.last).await?;
        out.push(r);
    }
    Ok(out)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Prints what the benchmark does.
pub fn describe(smoke: bool, seconds: Option<u64>, value_bytes: usize) {
    let (measure, warmup) = timing(smoke, seconds);
    println!(
        "store benchmark: 3 members on loopback each, {value_bytes}-byte values, distinct keys, writes to the leader"
    );
    println!(
        "{} s per client count after {} ms warm-up{}; each client's last acknowledged write is read back",
        measure.as_secs(),
        warmup.as_millis(),
        if smoke { " (smoke)" } else { "" }
    );
}

fn timing(smoke: bool, seconds: Option<u64>) -> (Duration, Duration) {
    let measure = Duration::from_secs(seconds.unwrap_or(if smoke { 1 } else { 10 }));
    let warmup = if smoke { Duration::from_millis(300) } else { Duration::from_secs(2) };
    (measure, warmup)
}

/// One run: both systems at every client count.
pub async fn run_once(
    bins: &Binaries,
    smoke: bool,
    seconds: Option<u64>,
    clients: Option<Vec<usize>>,
    value_bytes: usize,
) -> anyhow::Result<Figures> {
    let counts: Vec<usize> = clients.unwrap_or_else(|| if smoke { vec![1, 16] } else { vec![1, 16, 256, 1000] });
    let (measure, warmup) = timing(smoke, seconds);
    let skiff = {
        let cluster = Cluster::skiff(bins).await?;
        bench_system(&cluster, &counts, warmup, measure, value_bytes).await?
    };
    let etcd = {
        let cluster = Cluster::etcd(bins).await?;
        bench_system(&cluster, &counts, warmup, measure, value_bytes).await?
    };

    println!();
    println!("| clients | skiff writes/s | skiff p50 / p99 / max ms | etcd writes/s | etcd p50 / p99 / max ms | writes/s ratio | p99 ratio |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut figures = Figures::default();
    for (s, e) in skiff.iter().zip(&etcd) {
        println!(
            "| {} | {:.0} | {:.2} / {:.2} / {:.2} | {:.0} | {:.2} / {:.2} / {:.2} | {:.2}x | {:.2} |",
            s.clients,
            s.writes_per_sec,
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            e.writes_per_sec,
            ms(e.p50),
            ms(e.p99),
            ms(e.max),
            s.writes_per_sec / e.writes_per_sec.max(1e-9),
            ms(s.p99) / ms(e.p99).max(1e-9),
        );
        let c = s.clients;
        figures.add(format!("skiff writes/s at {c} clients"), s.writes_per_sec);
        figures.add(format!("etcd writes/s at {c} clients"), e.writes_per_sec);
        figures.add(format!("writes/s ratio skiff/etcd at {c} clients"), s.writes_per_sec / e.writes_per_sec.max(1e-9));
        figures.add(format!("skiff p50 ms at {c} clients"), ms(s.p50));
        figures.add(format!("etcd p50 ms at {c} clients"), ms(e.p50));
        figures.add(format!("skiff p99 ms at {c} clients"), ms(s.p99));
        figures.add(format!("etcd p99 ms at {c} clients"), ms(e.p99));
    }
    println!();
    for (name, rs) in [("skiff", &skiff), ("etcd", &etcd)] {
        for r in rs.iter() {
            if r.term_before != r.term_after {
                println!(
                    "{name}: raft term changed during the {}-client run ({} -> {}): a leader election",
                    r.clients, r.term_before, r.term_after
                );
            }
        }
        figures.add(
            format!("{name} runs with a term change"),
            rs.iter().filter(|r| r.term_before != r.term_after).count() as f64,
        );
    }
    let other = |rs: &[LoadResult]| rs.iter().map(|r| r.cpu.other).fold(0.0, f64::max);
    println!(
        "machine: {} cores; outside the benchmark's processes, at most {:.2} cores busy during a skiff run, {:.2} during an etcd run",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        other(&skiff),
        other(&etcd)
    );
    Ok(figures)
}

/// The targets, judged on the medians of the runs (only full runs have 256 clients).
pub fn targets(m: &Summary) -> Vec<Target> {
    let get = |k: &str| m.median(k);
    let (Some(ratio), Some(sp), Some(ep)) = (
        get("writes/s ratio skiff/etcd at 256 clients"),
        get("skiff p99 ms at 256 clients"),
        get("etcd p99 ms at 256 clients"),
    ) else {
        return Vec::new();
    };
    vec![
        Target { what: format!("at 256 clients, writes/s >= 2x etcd ({ratio:.2}x)"), met: ratio >= 2.0 },
        Target { what: format!("at 256 clients, p99 no worse than etcd's ({sp:.2} vs {ep:.2} ms)"), met: sp <= ep },
        Target {
            what: "skiff's raft term unchanged under load, in every run".into(),
            met: m.max("skiff runs with a term change").is_some_and(|n| n == 0.0),
        },
    ]
}
