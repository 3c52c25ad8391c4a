//! Failover: four clients write continuously (each write tries the members in turn, 500 ms per
//! attempt); the leader is killed with SIGKILL; the figure is the time from the kill to the first
//! accepted write that was invoked after it. The killed member is restarted from its data, and the
//! next kill waits until every member has caught up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::{Binaries, Cluster};
use crate::system::{lazy, System};

const WRITERS: usize = 4;
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// `(invoked, accepted)` of every accepted write.
type Accepted = Arc<Mutex<Vec<(Instant, Instant)>>>;

fn start_writers(
    system: System,
    endpoints: &[String],
    stop: Arc<AtomicBool>,
    accepted: Accepted,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let channels = endpoints.iter().map(|e| lazy(e)).collect::<anyhow::Result<Vec<_>>>()?;
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

async fn measure(system: System, bins: &Binaries, kills: usize) -> anyhow::Result<Vec<Duration>> {
    let mut cluster = match system {
        System::Skiff => Cluster::skiff(bins).await?,
        System::Etcd => Cluster::etcd(bins).await?,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let accepted: Accepted = Arc::new(Mutex::new(Vec::new()));
    let writers = start_writers(system, &cluster.endpoints, stop.clone(), accepted.clone())?;
    let mut times = Vec::new();
    for k in 0..kills {
        let leader = cluster.wait_leader(Duration::from_secs(30)).await?;
        // Let writes flow through the current leader first.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let killed_at = Instant::now();
        cluster.kill(leader);
        let deadline = killed_at + Duration::from_secs(30);
        let first = loop {
            if first_accepted_after(&accepted, killed_at)?.is_some() {
                // Writes invoked later may still finish earlier: wait a moment for them.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if let Some(done) = first_accepted_after(&accepted, killed_at)? {
                    break done;
                }
            }
            if Instant::now() >= deadline {
                anyhow::bail!("{}: no write accepted within 30 s of killing the leader", system.name());
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
            "  {:5} kill {:2}: member {} killed, first accepted write after {:4.0} ms; restarted, caught up after {:4.0} ms",
            system.name(),
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
    Ok(times)
}

fn stats(times: &[Duration]) -> (f64, f64, f64) {
    let mut s: Vec<f64> = times.iter().map(|d| d.as_secs_f64()).collect();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let median = if s.len() % 2 == 1 { s[s.len() / 2] } else { (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0 };
    let p90 = s[((s.len() as f64 * 0.9).ceil() as usize).clamp(1, s.len()) - 1];
    (median, p90, s[s.len() - 1])
}

pub async fn run(bins: &Binaries, smoke: bool, kills: Option<usize>) -> anyhow::Result<()> {
    let kills = kills.unwrap_or(if smoke { 2 } else { 20 });
    println!(
        "failover benchmark: 3 members each, {WRITERS} writers, kill -9 of the leader {kills} times{}",
        if smoke { " (smoke)" } else { "" }
    );
    let skiff = measure(System::Skiff, bins, kills).await?;
    let etcd = measure(System::Etcd, bins, kills).await?;
    let (sm, sp, sx) = stats(&skiff);
    let (em, ep, ex) = stats(&etcd);
    println!();
    println!("| system | kills | median s | p90 s | max s |");
    println!("|---|---:|---:|---:|---:|");
    println!("| skiff | {} | {sm:.3} | {sp:.3} | {sx:.3} |", skiff.len());
    println!("| etcd | {} | {em:.3} | {ep:.3} | {ex:.3} |", etcd.len());
    println!();
    println!("ratio skiff/etcd: median {:.2}, max {:.2}", sm / em.max(1e-9), sx / ex.max(1e-9));
    println!(
        "target: skiff median <= 0.4 s: {}; skiff max <= 1 s: {}",
        if sm <= 0.4 { "met" } else { "NOT met" },
        if sx <= 1.0 { "met" } else { "NOT met" }
    );
    println!("summary: {} kills per system", kills);
    Ok(())
}
