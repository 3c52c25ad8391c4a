//! How busy the machine was, and how much of that was this benchmark, from `/proc` (Linux).
//!
//! The figures are only as good as the machine is quiet: a build running meanwhile takes cores from
//! the members. The store benchmark samples before and after each run and prints both.

use std::time::Instant;

/// `/proc` counts CPU time in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_SEC: f64 = 100.0;

/// CPU time counters at one instant.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    at: Instant,
    /// Ticks the whole machine spent busy (not idle, not waiting for IO).
    machine_busy: u64,
    /// Ticks the given processes (all their threads) spent, user + system.
    ours: u64,
}

/// Average cores used between two samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// By the benchmark's processes (members and the load generator).
    pub ours: f64,
    /// By everything else: other processes and kernel threads (which include some of the members'
    /// disk IO).
    pub other: f64,
}

/// Counters now, for the processes `pids` (the load generator is added).
pub fn sample(pids: &[u32]) -> Sample {
    let mut ours = process_ticks("self").unwrap_or(0);
    for pid in pids {
        ours += process_ticks(&pid.to_string()).unwrap_or(0);
    }
    Sample { at: Instant::now(), machine_busy: machine_busy_ticks().unwrap_or(0), ours }
}

pub fn usage(before: &Sample, after: &Sample) -> Usage {
    let secs = after.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let busy = after.machine_busy.saturating_sub(before.machine_busy) as f64 / TICKS_PER_SEC;
    let ours = after.ours.saturating_sub(before.ours) as f64 / TICKS_PER_SEC;
    Usage { ours: ours / secs, other: (busy - ours).max(0.0) / secs }
}

/// CPU seconds (user + system, all threads) process `pid` has used so far; `"self"` for this one.
pub fn process_seconds(pid: &str) -> Option<f64> {
    Some(process_ticks(pid)? as f64 / TICKS_PER_SEC)
}

/// CPU seconds the whole machine has been busy so far (all cores).
pub fn machine_busy_seconds() -> Option<f64> {
    Some(machine_busy_ticks()? as f64 / TICKS_PER_SEC)
}

/// Busy ticks of the whole machine: the first line of `/proc/stat` minus idle and iowait.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice: already in user and nice]
    let total: u64 = fields.iter().take(8).sum();
    Some(total.saturating_sub(fields.get(3)? + fields.get(4)?))
}

/// utime + stime of a process (fields 14 and 15 of `/proc/<pid>/stat`).
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces: count after its end.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 -> index 11, stime index 12.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_and_machine_counters_are_readable() {
        assert!(process_ticks("self").is_some());
        assert!(machine_busy_ticks().is_some());
        let a = sample(&[]);
        let mut x = 0u64;
        for i in 0..30_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let u = usage(&a, &sample(&[]));
        assert!(u.ours >= 0.0 && u.other >= 0.0);
    }
}
