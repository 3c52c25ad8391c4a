//! What a benchmark leaves on the Docker engine, removed by its run label: Swarm services and
//! containers (Skiff's pods, plain Docker's, Swarm's tasks). A guard does it when it is dropped, so
//! the removal also happens when a side fails, panics, or the run is stopped by a signal.
//!
//! It calls the `docker` CLI synchronously: a `Drop` cannot await, and the CLI needs no runtime. It
//! runs between measurements only (at the end of each side), never while one is timed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a removal waits for the engine to be rid of the containers (Swarm removes its tasks'
/// containers in the background once their service is gone).
const REMOVAL: Duration = Duration::from_secs(60);

/// Removes every Swarm service and container labelled `key=value` when dropped.
///
/// Declare it before whatever creates them (a Skiff cluster, a service): locals drop in reverse
/// order, so the cluster's members are killed first and cannot recreate a pod behind its back.
pub struct Leftovers {
    /// The label every object of this run carries, e.g. `skiff.bench.deploy=1234-1`.
    label: String,
}

impl Leftovers {
    pub fn guard(key: &str, value: &str) -> Self {
        Self { label: format!("{key}={value}") }
    }

    /// Removes them now (also done on drop) and waits until the engine has none left, so that the
    /// next side is not measured while the engine still tears this one down.
    pub fn remove(&self) {
        let label = format!("label={}", self.label);
        let services = ids(&["service", "ls", "-q", "--filter", &label]);
        if !services.is_empty() {
            docker(&[&["service", "rm"][..], &refs(&services)].concat());
        }
        let deadline = Instant::now() + REMOVAL;
        let mut error = String::new();
        loop {
            let containers = ids(&["ps", "-aq", "--filter", &label]);
            if containers.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "warning: {} container(s) labelled {} are still there after {REMOVAL:?}; docker rm said: {error}",
                    containers.len(),
                    self.label
                );
                return;
            }
            // Swarm may be removing some of them already: "removal ... already in progress" is
            // not a failure, the next listing tells.
            let rm = Command::new("docker").args([&["rm", "-f", "-v"][..], &refs(&containers)].concat()).output();
            error = match rm {
                Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
                Err(e) => e.to_string(),
            };
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        self.remove();
    }
}

fn refs(ids: &[String]) -> Vec<&str> {
    ids.iter().map(String::as_str).collect()
}

/// The ids a listing command prints, one a line (none when the command fails: a `service ls`
/// outside a swarm fails, and then there is nothing to remove).
fn ids(args: &[&str]) -> Vec<String> {
    match Command::new("docker").args(args).stderr(Stdio::null()).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

/// Runs `docker args`, printing its error output when it fails.
pub fn docker(args: &[&str]) -> bool {
    match Command::new("docker").args(args).stdout(Stdio::null()).output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!("warning: docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
            false
        }
        Err(e) => {
            eprintln!("warning: could not run docker {}: {e}", args.join(" "));
            false
        }
    }
}
