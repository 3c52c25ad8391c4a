//! Store throughput and latency: each client writes 256-byte values to distinct keys, one write at
//! a time, against the leader, for a fixed time; Skiff and etcd in the same run.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::{Binaries, Cluster};
use crate::cpu::{self, Usage};
use crate::system::{connect, System};

const VALUE_BYTES: usize = 256;

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

/// Runs `clients` writers against `endpoint` for `warmup` (not measured) then `measure`.
async fn load(
    system: System,
    endpoint: &str,
    clients: usize,
    warmup: Duration,
    measure: Duration,
    tag: &str,
) -> anyhow::Result<(Vec<Duration>, u64)> {
    let mut channels = Vec::new();
    for _ in 0..clients.min(16) {
        channels.push(connect(endpoint).await?);
    }
    let begin = Instant::now() + warmup;
    let end = begin + measure;
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let channel = channels[c % channels.len()].clone();
        let (latencies, errors, tag) = (latencies.clone(), errors.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut i = 0u64;
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let key = format!("bench/{tag}/{c}/{i}");
                i += 1;
                match system.put(channel.clone(), key, vec![b'v'; VALUE_BYTES]).await {
                    Ok(()) if started >= begin => mine.push(started.elapsed()),
                    Ok(()) => {}
                    Err(_) => {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            if let Ok(mut all) = latencies.lock() {
                all.extend(mine);
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let mut all = std::mem::take(&mut *latencies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    all.sort();
    Ok((all, errors.load(std::sync::atomic::Ordering::Relaxed)))
}

async fn bench_system(
    cluster: &Cluster,
    counts: &[usize],
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Vec<LoadResult>> {
    let mut out = Vec::new();
    for &clients in counts {
        let (leader, term_before) = cluster
            .system
            .status(&cluster.endpoints)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{}: no leader", cluster.system.name()))?;
        let tag = format!("c{clients}");
        let before = cpu::sample(&cluster.pids());
        let (lat, errors) = load(cluster.system, &cluster.endpoints[leader], clients, warmup, measure, &tag).await?;
        let cpu = cpu::usage(&before, &cpu::sample(&cluster.pids()));
        let term_after = cluster.system.status(&cluster.endpoints).await?.map(|(_, t)| t).unwrap_or(0);
        let r = LoadResult {
            clients,
            writes_per_sec: lat.len() as f64 / measure.as_secs_f64(),
            p50: percentile(&lat, 0.50),
            p99: percentile(&lat, 0.99),
            max: lat.last().copied().unwrap_or_default(),
            errors,
            term_before,
            term_after,
            cpu,
        };
        eprintln!(
            "  {:5} {:5} clients: {:9.0} writes/s  p50 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms  errors {}  term {} -> {}  cores: bench {:.2}, other {:.2}",
            cluster.system.name(),
            clients,
            r.writes_per_sec,
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            r.errors,
            r.term_before,
            r.term_after,
            r.cpu.ours,
            r.cpu.other
        );
        out.push(r);
    }
    Ok(out)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub async fn run(bins: &Binaries, smoke: bool, seconds: Option<u64>) -> anyhow::Result<()> {
    let counts: Vec<usize> = if smoke { vec![1, 16] } else { vec![1, 16, 256, 1000] };
    let measure = Duration::from_secs(seconds.unwrap_or(if smoke { 1 } else { 10 }));
    let warmup = if smoke { Duration::from_millis(300) } else { Duration::from_secs(2) };
    println!(
        "store benchmark: 3 members on loopback each, {VALUE_BYTES}-byte values, distinct keys, writes to the leader"
    );
    println!(
        "{} s per client count after {} ms warm-up{}",
        measure.as_secs(),
        warmup.as_millis(),
        if smoke { " (smoke)" } else { "" }
    );

    let skiff = {
        let cluster = Cluster::skiff(bins).await?;
        bench_system(&cluster, &counts, warmup, measure).await?
    };
    let etcd = {
        let cluster = Cluster::etcd(bins).await?;
        bench_system(&cluster, &counts, warmup, measure).await?
    };

    println!();
    println!("| clients | skiff writes/s | skiff p50 / p99 / max ms | etcd writes/s | etcd p50 / p99 / max ms | writes/s ratio | p99 ratio |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
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
    }
    println!();
    let at256 = skiff.iter().find(|r| r.clients == 256).zip(etcd.iter().find(|r| r.clients == 256));
    match at256 {
        Some((s, e)) => {
            let ratio = s.writes_per_sec / e.writes_per_sec.max(1e-9);
            println!(
                "target at 256 clients: writes/s >= 2x etcd: {} ({ratio:.2}x); p99 no worse than etcd's: {} ({:.2} vs {:.2} ms)",
                verdict(ratio >= 2.0),
                verdict(s.p99 <= e.p99),
                ms(s.p99),
                ms(e.p99)
            );
            for (name, r) in [("skiff", s), ("etcd ", e)] {
                println!(
                    "raft term of {} during the 256-client run: {} -> {} ({})",
                    name,
                    r.term_before,
                    r.term_after,
                    if r.term_before == r.term_after { "unchanged" } else { "CHANGED: a leader election" }
                );
            }
        }
        None => println!("(no 256-client run in this mode: targets not evaluated)"),
    }
    let errors = |rs: &[LoadResult]| rs.iter().map(|r| r.errors).sum::<u64>();
    let terms_changed = |rs: &[LoadResult]| rs.iter().filter(|r| r.term_before != r.term_after).count();
    let other = |rs: &[LoadResult]| rs.iter().map(|r| r.cpu.other).fold(0.0, f64::max);
    println!(
        "machine: {} cores; outside the benchmark's processes, at most {:.2} cores busy during a skiff run, {:.2} during an etcd run",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        other(&skiff),
        other(&etcd)
    );
    println!(
        "summary: {} client counts per system, {} s each; failed writes: skiff {}, etcd {}; runs with a term change: skiff {}, etcd {}",
        counts.len(),
        measure.as_secs(),
        errors(&skiff),
        errors(&etcd),
        terms_changed(&skiff),
        terms_changed(&etcd)
    );
    Ok(())
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}
