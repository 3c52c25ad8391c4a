//! Failover: four clients write continuously (each write tries the members in turn, 100 ms per
//! attempt); the leader is killed with SIGKILL; the figure is the time from the kill to the first
//! accepted write that was invoked after it. The killed member is restarted from its data, and the
//! next kill waits until every member has caught up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::{Binaries, Cluster};
use crate::report::{self, Figures, Summary, Target};
use crate::system::{Dialer, System};

const WRITERS: usize = 4;
/// How long one attempt of a write may take before the writer tries the next member. A write to a
/// member that still follows the dead leader waits (etcd holds it until its own request timeout), so
/// this bounds how late a writer notices the new leader: short against the failover times compared.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(100);

/// `(invoked, accepted)` of every accepted write.
type Accepted = Arc<Mutex<Vec<(Instant, Instant)>>>;

fn start_writers(
    dialer: &Dialer,
    endpoints: &[String],
    stop: Arc<AtomicBool>,
    accepted: Accepted,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let system = dialer.system();
    let channels = endpoints.iter().map(|e| dialer.lazy(e)).collect::<anyhow::Result<Vec<_>>>()?;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (channels, stop, accepted) = (channels.clone(), stop.clone(), accepted.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            let mut next = w;
            while !stop.load(Ordering::Relaxed) {
                let invoked = Instant::now();
                let key = format!("failover/{w}/{i}");
                i += 1;
                // One write: try members in turn until one accepts it (or we are told to stop).
                loop {
                    let ch = channels[next % channels.len()].clone();
                    let attempt =
                        tokio::time::timeout(ATTEMPT_TIMEOUT, system.put(ch, key.clone(), vec![b'f'; 64])).await;
                    if let Ok(Ok(())) = attempt {
                        if let Ok(mut a) = accepted.lock() {
                            a.push((invoked, Instant::now()));
                        }
                        break;
                    }
                    next += 1;
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }));
    }
    Ok(tasks)
}

/// When the first write invoked at or after `t` was accepted, if one was.
fn first_accepted_after(accepted: &Accepted, t: Instant) -> anyhow::Result<Option<Instant>> {
    let accepted = accepted.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    Ok(accepted.iter().filter(|(invoked, _)| *invoked >= t).map(|(_, done)| *done).min())
}

/// One system under test: what it is called, and how its cluster starts.
#[derive(Debug, Clone, Copy)]
struct Contender {
    label: &'static str,
    system: System,
    /// Extra etcd flags (none for Skiff, which runs with its defaults: 30 ms heartbeat, 80-160 ms
    /// election timeout).
    etcd_flags: &'static [&'static str],
}

/// Skiff with its defaults; etcd with its defaults (100 ms heartbeat, 1000 ms election timeout);
/// and etcd with Skiff's election timeout. etcd draws its election timeout from [E, 2E), which with
/// E = 80 ms is Skiff's 80-160 ms; etcd refuses an election timeout under five heartbeats, so its
/// heartbeat is 16 ms, not Skiff's 30 ms.
const CONTENDERS: [Contender; 3] = [
    Contender { label: "skiff", system: System::Skiff, etcd_flags: &[] },
    Contender { label: "etcd (defaults)", system: System::Etcd, etcd_flags: &[] },
    Contender {
        label: "etcd (skiff's timers)",
        system: System::Etcd,
        etcd_flags: &["--heartbeat-interval=16", "--election-timeout=80"],
    },
];

async fn measure(who: Contender, bins: &Binaries, kills: usize) -> anyhow::Result<Vec<Duration>> {
    let system = who.system;
    let mut cluster = match system {
        System::Skiff => Cluster::skiff(bins).await?,
        System::Etcd => Cluster::etcd_with(bins, who.etcd_flags).await?,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let accepted: Accepted = Arc::new(Mutex::new(Vec::new()));
    let writers = start_writers(&cluster.dialer, &cluster.endpoints, stop.clone(), accepted.clone())?;
    let mut times = Vec::new();
    for k in 0..kills {
        let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
        // Let writes flow through the current leader first: until a write invoked FLOWING from now
        // has been accepted.
        let flowing = Instant::now() + FLOWING;
        let deadline = flowing + Duration::from_secs(30);
        while first_accepted_after(&accepted, flowing)?.is_none() {
            if Instant::now() >= deadline {
                anyhow::bail!("{}: writes did not flow through leader {} within 30 s", who.label, leader + 1);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let killed_at = Instant::now();
        cluster.kill(leader);
        let deadline = killed_at + Duration::from_secs(30);
        let first = loop {
            if first_accepted_after(&accepted, killed_at)?.is_some() {
                // Writes invoked later may still finish earlier: wait for those in flight to settle.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Some(done) = first_accepted_after(&accepted, killed_at)? {
                    break done;
                }
            }
            if Instant::now() >= deadline {
                anyhow::bail!("{}: no write accepted within 30 s of killing the leader", who.label);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        let took = first.duration_since(killed_at);
        times.push(took);
        // Restart it from the same data and let it catch up before the next kill.
        let restarted_at = Instant::now();
        cluster.restart(leader)?;
        cluster.wait_caught_up(Duration::from_secs(60)).await?;
        eprintln!(
            "  {:22} kill {:2}: member {} killed, first accepted write after {:4.0} ms; restarted, caught up after {:4.0} ms",
            who.label,
            k + 1,
            leader + 1,
            took.as_secs_f64() * 1000.0,
            restarted_at.elapsed().as_secs_f64() * 1000.0
        );
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    if times.len() != kills {
        anyhow::bail!("{}: {} of {kills} kills measured", who.label, times.len());
    }
    Ok(times)
}

/// Writes must have been accepted for this long through the current leader before it is killed.
const FLOWING: Duration = Duration::from_millis(500);

fn stats(times: &[Duration]) -> (f64, f64, f64) {
    let mut s: Vec<f64> = times.iter().map(|d| d.as_secs_f64()).collect();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let p90 = s[((s.len() as f64 * 0.9).ceil() as usize).clamp(1, s.len()) - 1];
    (report::median(&s), p90, s[s.len() - 1])
}

fn kills_of(smoke: bool, kills: Option<usize>) -> usize {
    kills.unwrap_or(if smoke { 2 } else { 20 })
}

/// Prints what the benchmark does.
pub fn describe(smoke: bool, kills: Option<usize>) {
    println!(
        "failover benchmark: 3 members each, {WRITERS} writers, kill -9 of the leader {} times per system{}",
        kills_of(smoke, kills),
        if smoke { " (smoke)" } else { "" }
    );
    for c in CONTENDERS {
        println!(
            "  {}: {}",
            c.label,
            match (c.system, c.etcd_flags.is_empty()) {
                (System::Skiff, _) =>
                    "defaults: heartbeat 30 ms, election timeout 80-160 ms (openraft adds the leader lease, 160 ms)"
                        .to_string(),
                (System::Etcd, true) => "defaults: heartbeat 100 ms, election timeout 1000-2000 ms".to_string(),
                (System::Etcd, false) => format!("{} (election timeout 80-160 ms, as skiff's)", c.etcd_flags.join(" ")),
            }
        );
    }
}

/// One run: every contender in turn.
pub async fn run_once(bins: &Binaries, smoke: bool, kills: Option<usize>) -> anyhow::Result<Figures> {
    let kills = kills_of(smoke, kills);
    let mut results = Vec::new();
    for who in CONTENDERS {
        results.push((who, measure(who, bins, kills).await?));
    }
    println!();
    println!("| system | kills | median s | p90 s | max s |");
    println!("|---|---:|---:|---:|---:|");
    let mut figures = Figures::default();
    for (who, times) in &results {
        let (m, p90, max) = stats(times);
        println!("| {} | {} | {m:.3} | {p90:.3} | {max:.3} |", who.label, times.len());
        figures.add(format!("{} median s", who.label), m);
        figures.add(format!("{} p90 s", who.label), p90);
        figures.add(format!("{} max s", who.label), max);
    }
    let (sm, _, sx) = stats(&results[0].1);
    for (who, times) in &results[1..] {
        let (m, _, x) = stats(times);
        println!("ratio skiff / {}: median {:.2}, max {:.2}", who.label, sm / m.max(1e-9), sx / x.max(1e-9));
        figures.add(format!("median ratio skiff / {}", who.label), sm / m.max(1e-9));
    }
    Ok(figures)
}

/// The targets, judged on the medians of the runs (and the worst max).
pub fn targets(m: &Summary) -> Vec<Target> {
    let median = m.median("skiff median s").unwrap_or(f64::NAN);
    let max = m.max("skiff max s").unwrap_or(f64::NAN);
    vec![
        Target { what: format!("skiff median <= 0.4 s ({median:.3} s)"), met: median <= 0.4 },
        Target { what: format!("skiff max <= 1 s in every run (worst {max:.3} s)"), met: max <= 1.0 },
    ]
}
