//! What a pod worker does next: the pure decision of the agent. From the pod, what the runtime
//! shows of its containers and the worker's memory (back-off, probe verdicts), `plan` returns the
//! actions to take now and when to look again. The worker (IO) executes them.

use std::collections::BTreeMap;
use std::time::Duration;

use skiff_api::kinds::Pod;
use tokio::time::Instant;

use crate::backoff::{Backoff, BackoffConfig};
use crate::runtime::ContainerState;

/// One run of a container (or of the sandbox) as the runtime shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub id: String,
    /// Which start of the container this is (the `skiff.attempt` label).
    pub attempt: u32,
    pub state: ContainerState,
}

/// The pod's containers on this node, by spec name, each with its runs (any order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    pub sandbox: Vec<Run>,
    pub containers: BTreeMap<String, Vec<Run>>,
}

/// What the worker remembers of one container between plans.
#[derive(Debug, Clone)]
pub struct Memory {
    pub backoff: Backoff,
    /// The attempt whose exit was counted (each exit is counted once).
    pub counted_exit: Option<u32>,
    /// The restart may not happen before this.
    pub not_before: Option<Instant>,
    /// The liveness probe found the running attempt dead: kill it.
    pub liveness_failed: Option<u32>,
    /// Restarts so far (the status' restartCount).
    pub restarts: i32,
}

impl Memory {
    pub fn new(config: BackoffConfig) -> Self {
        Self { backoff: Backoff::new(config), counted_exit: None, not_before: None, liveness_failed: None, restarts: 0 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create and start the sandbox (attempt `attempt`).
    StartSandbox {
        attempt: u32,
    },
    /// Create and start the container `name` (attempt `attempt`), in the current sandbox.
    StartContainer {
        name: String,
        attempt: u32,
    },
    /// SIGTERM (after the preStop hook of `name`, if any), SIGKILL after `grace`.
    Stop {
        id: String,
        name: String,
        grace: Duration,
        reason: StopReason,
    },
    Remove {
        id: String,
    },
    /// Every container of a deleted pod is gone: let the object go.
    Finalize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The pod is being deleted.
    Deleted,
    /// The liveness probe failed.
    Unhealthy,
    /// The sandbox is gone: its containers go with it.
    SandboxLost,
}

/// The actions to take now, and when to plan again at the latest (`None`: on the next change).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub wake_at: Option<Instant>,
}

fn latest(runs: &[Run]) -> Option<&Run> {
    runs.iter().max_by_key(|r| r.attempt)
}

fn is_running(run: &Run) -> bool {
    matches!(run.state, ContainerState::Running { .. } | ContainerState::Created)
}

fn grace_of(pod: &Pod) -> Duration {
    let seconds =
        pod.metadata.deletion_grace_period_seconds.or(pod.spec.termination_grace_period_seconds).unwrap_or(30).max(0);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// Decides the next actions for `pod` (see the module docs). `memory` gets an entry per container.
pub fn plan(
    pod: &Pod,
    observed: &Observed,
    memory: &mut BTreeMap<String, Memory>,
    config: BackoffConfig,
    now: Instant,
) -> Plan {
    let mut plan = Plan::default();
    if pod.metadata.deletion_timestamp.is_some() {
        return terminate(pod, observed);
    }
    let sandbox = latest(&observed.sandbox);
    let sandbox_ok = sandbox.is_some_and(|s| matches!(s.state, ContainerState::Running { .. }));
    if !sandbox_ok {
        // No sandbox (first start, or it died): every container restarts in a new one.
        for runs in observed.containers.values() {
            for run in runs.iter().filter(|r| is_running(r)) {
                plan.actions.push(Action::Stop {
                    id: run.id.clone(),
                    name: String::new(),
                    grace: Duration::from_secs(2),
                    reason: StopReason::SandboxLost,
                });
            }
        }
        for old in &observed.sandbox {
            plan.actions.push(Action::Remove { id: old.id.clone() });
        }
        plan.actions.push(Action::StartSandbox { attempt: sandbox.map_or(0, |s| s.attempt + 1) });
    }
    let policy = pod.spec.restart_policy.as_deref().unwrap_or("Always");
    for container in &pod.spec.containers {
        let name = &container.name;
        let runs = observed.containers.get(name).map(Vec::as_slice).unwrap_or_default();
        // A worker that adopts running containers (the agent restarted) counts the restarts their
        // attempts show: attempt n is the n-th restart.
        let mem = memory.entry(name.clone()).or_insert_with(|| Memory {
            restarts: i32::try_from(runs.iter().map(|r| r.attempt).max().unwrap_or(0)).unwrap_or(i32::MAX),
            ..Memory::new(config)
        });
        // Keep the latest run and the one before it (for `logs --previous`); remove older ones.
        let mut by_attempt: Vec<&Run> = runs.iter().collect();
        by_attempt.sort_by_key(|r| std::cmp::Reverse(r.attempt));
        for old in by_attempt.iter().skip(2).filter(|r| !is_running(r)) {
            plan.actions.push(Action::Remove { id: old.id.clone() });
        }
        let Some(current) = by_attempt.first() else {
            mem.backoff.started(now);
            plan.actions.push(Action::StartContainer { name: name.clone(), attempt: 0 });
            continue;
        };
        if !sandbox_ok {
            mem.backoff.started(now);
            plan.actions.push(Action::StartContainer { name: name.clone(), attempt: current.attempt + 1 });
            continue;
        }
        match &current.state {
            ContainerState::Running { .. } | ContainerState::Created => {
                if mem.liveness_failed == Some(current.attempt) {
                    plan.actions.push(Action::Stop {
                        id: current.id.clone(),
                        name: name.clone(),
                        grace: Duration::from_secs(
                            u64::try_from(pod.spec.termination_grace_period_seconds.unwrap_or(30).max(0)).unwrap_or(0),
                        ),
                        reason: StopReason::Unhealthy,
                    });
                }
            }
            ContainerState::Exited { exit_code, .. } => {
                let restart = match policy {
                    "Never" => false,
                    "OnFailure" => *exit_code != 0 || mem.liveness_failed == Some(current.attempt),
                    _ => true,
                };
                if !restart {
                    continue;
                }
                if mem.counted_exit != Some(current.attempt) {
                    mem.counted_exit = Some(current.attempt);
                    mem.not_before = Some(now + mem.backoff.crashed(now));
                }
                match mem.not_before {
                    Some(t) if t > now => {
                        plan.wake_at = Some(plan.wake_at.map_or(t, |w| w.min(t)));
                    }
                    _ => {
                        mem.restarts += 1;
                        mem.not_before = None;
                        // From here a long enough run forgets the crashes (the back-off resets).
                        mem.backoff.started(now);
                        plan.actions.push(Action::StartContainer { name: name.clone(), attempt: current.attempt + 1 });
                    }
                }
            }
        }
    }
    plan
}

/// A deleted pod: stop what runs (each container with the pod's grace period, the sandbox last),
/// remove what stopped, and let the object go when nothing is left.
fn terminate(pod: &Pod, observed: &Observed) -> Plan {
    let mut plan = Plan::default();
    let grace = grace_of(pod);
    let mut containers_running = false;
    for (name, runs) in &observed.containers {
        for run in runs {
            if is_running(run) {
                containers_running = true;
                plan.actions.push(Action::Stop {
                    id: run.id.clone(),
                    name: name.clone(),
                    grace,
                    reason: StopReason::Deleted,
                });
            } else {
                plan.actions.push(Action::Remove { id: run.id.clone() });
            }
        }
    }
    if containers_running {
        return plan;
    }
    for run in &observed.sandbox {
        plan.actions.push(Action::Remove { id: run.id.clone() });
    }
    plan.actions.push(Action::Finalize);
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::kinds::pod::Container;
    use skiff_api::meta::Time;

    fn pod(policy: &str) -> Pod {
        let mut p = Pod::default();
        p.spec.restart_policy = Some(policy.into());
        p.spec.termination_grace_period_seconds = Some(30);
        p.spec.containers.push(Container { name: "app".into(), image: "web:1".into(), ..Default::default() });
        p
    }

    fn run(id: &str, attempt: u32, state: ContainerState) -> Run {
        Run { id: id.into(), attempt, state }
    }

    fn up() -> ContainerState {
        ContainerState::Running { started_at: None }
    }

    fn exited(code: i64) -> ContainerState {
        ContainerState::Exited { exit_code: code, oom_killed: false, started_at: None, finished_at: None }
    }

    fn observed(app: Vec<Run>) -> Observed {
        Observed { sandbox: vec![run("s0", 0, up())], containers: BTreeMap::from([("app".to_string(), app)]) }
    }

    const FAST: BackoffConfig = BackoffConfig {
        base: Duration::from_secs(10),
        cap: Duration::from_secs(300),
        reset_after: Duration::from_secs(600),
    };

    #[tokio::test(start_paused = true)]
    async fn a_new_pod_gets_a_sandbox_then_its_containers() {
        let mut memory = BTreeMap::new();
        let p = plan(&pod("Always"), &Observed::default(), &mut memory, FAST, Instant::now());
        assert_eq!(
            p.actions,
            [Action::StartSandbox { attempt: 0 }, Action::StartContainer { name: "app".into(), attempt: 0 }]
        );
        let steady = plan(&pod("Always"), &observed(vec![run("a0", 0, up())]), &mut memory, FAST, Instant::now());
        assert_eq!(steady, Plan::default(), "a running pod needs nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_crash_is_restarted_at_once_then_with_growing_back_off() {
        let mut memory = BTreeMap::new();
        let p0 = pod("Always");
        let t0 = Instant::now();
        let first = plan(&p0, &observed(vec![run("a0", 0, exited(1))]), &mut memory, FAST, t0);
        assert_eq!(first.actions, [Action::StartContainer { name: "app".into(), attempt: 1 }]);
        // The second crash waits 10 s.
        let runs = vec![run("a0", 0, exited(1)), run("a1", 1, exited(1))];
        let waiting = plan(&p0, &observed(runs.clone()), &mut memory, FAST, t0);
        assert!(waiting.actions.is_empty());
        assert_eq!(waiting.wake_at, Some(t0 + Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(10)).await;
        let restarted = plan(&p0, &observed(runs), &mut memory, FAST, Instant::now());
        assert_eq!(restarted.actions, [Action::StartContainer { name: "app".into(), attempt: 2 }]);
        assert_eq!(memory["app"].restarts, 2);
        // Old runs beyond the previous one are removed.
        let runs = vec![run("a0", 0, exited(1)), run("a1", 1, exited(1)), run("a2", 2, up())];
        let cleaned = plan(&p0, &observed(runs), &mut memory, FAST, Instant::now());
        assert_eq!(cleaned.actions, [Action::Remove { id: "a0".into() }]);
    }

    /// Issue 12, defect 13: the back-off never reset, because nothing told it when a container
    /// started; a container that ran well for 10 minutes kept its 5-minute delay.
    #[tokio::test(start_paused = true)]
    async fn ten_minutes_of_running_resets_the_back_off() {
        let mut memory = BTreeMap::new();
        let p0 = pod("Always");
        let starts = |p: &Plan| -> Vec<Action> {
            p.actions.iter().filter(|a| matches!(a, Action::StartContainer { .. })).cloned().collect()
        };
        let mut runs = vec![run("a0", 0, exited(1))];
        // Crash loop: each restart after its delay; the delay grows.
        for attempt in 1..=4u32 {
            let p = plan(&p0, &observed(runs.clone()), &mut memory, FAST, Instant::now());
            if starts(&p).is_empty() {
                tokio::time::advance(p.wake_at.expect("a wake-up") - Instant::now()).await;
            }
            let p = plan(&p0, &observed(runs.clone()), &mut memory, FAST, Instant::now());
            assert_eq!(starts(&p), [Action::StartContainer { name: "app".into(), attempt }]);
            runs.push(run(&format!("a{attempt}"), attempt, exited(1)));
        }
        let waiting = plan(&p0, &observed(runs.clone()), &mut memory, FAST, Instant::now());
        assert_eq!(waiting.wake_at, Some(Instant::now() + Duration::from_secs(80)), "the fifth crash waits 80 s");
        tokio::time::advance(Duration::from_secs(80)).await;
        let restarted = plan(&p0, &observed(runs.clone()), &mut memory, FAST, Instant::now());
        assert_eq!(starts(&restarted).len(), 1);
        // Attempt 5 runs for ten minutes, then exits: restarted at once.
        runs.push(run("a5", 5, up()));
        plan(&p0, &observed(runs.clone()), &mut memory, FAST, Instant::now());
        tokio::time::advance(Duration::from_secs(600)).await;
        runs.pop();
        runs.push(run("a5", 5, exited(1)));
        let after_a_good_run = plan(&p0, &observed(runs), &mut memory, FAST, Instant::now());
        assert_eq!(starts(&after_a_good_run), [Action::StartContainer { name: "app".into(), attempt: 6 }]);
        assert_eq!(after_a_good_run.wake_at, None, "no back-off after ten good minutes");
    }

    /// Issue 12, defect 20: after an agent restart the adopted containers' restart counts started
    /// again at 0.
    #[tokio::test(start_paused = true)]
    async fn adopted_containers_keep_their_restart_count() {
        let mut memory = BTreeMap::new();
        let runs = vec![run("a2", 2, exited(1)), run("a3", 3, up())];
        let adopted = plan(&pod("Always"), &observed(runs), &mut memory, FAST, Instant::now());
        assert!(adopted.actions.is_empty(), "{adopted:?}");
        assert_eq!(memory["app"].restarts, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn restart_policies_decide_who_comes_back() {
        let now = Instant::now();
        let mut memory = BTreeMap::new();
        let done = observed(vec![run("a0", 0, exited(0))]);
        assert!(plan(&pod("OnFailure"), &done, &mut memory, FAST, now).actions.is_empty(), "OnFailure, exit 0: done");
        let failed = observed(vec![run("a0", 0, exited(2))]);
        let mut memory = BTreeMap::new();
        assert_eq!(
            plan(&pod("OnFailure"), &failed, &mut memory, FAST, now).actions.len(),
            1,
            "OnFailure, exit 2: again"
        );
        let mut memory = BTreeMap::new();
        assert!(plan(&pod("Never"), &failed, &mut memory, FAST, now).actions.is_empty(), "Never: never");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_liveness_probe_stops_the_container_with_the_pods_grace() {
        let mut memory = BTreeMap::new();
        let p0 = pod("Always");
        plan(&p0, &observed(vec![run("a0", 0, up())]), &mut memory, FAST, Instant::now());
        memory.get_mut("app").expect("memory").liveness_failed = Some(0);
        let p = plan(&p0, &observed(vec![run("a0", 0, up())]), &mut memory, FAST, Instant::now());
        assert_eq!(
            p.actions,
            [Action::Stop {
                id: "a0".into(),
                name: "app".into(),
                grace: Duration::from_secs(30),
                reason: StopReason::Unhealthy
            }]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_pod_stops_its_containers_then_the_sandbox_then_finalizes() {
        let mut p0 = pod("Always");
        p0.metadata.deletion_timestamp = Time::from_unix(1_000);
        p0.metadata.deletion_grace_period_seconds = Some(120);
        let mut memory = BTreeMap::new();
        let stopping = plan(&p0, &observed(vec![run("a0", 0, up())]), &mut memory, FAST, Instant::now());
        assert_eq!(
            stopping.actions,
            [Action::Stop {
                id: "a0".into(),
                name: "app".into(),
                grace: Duration::from_secs(120),
                reason: StopReason::Deleted
            }]
        );
        let stopped = plan(&p0, &observed(vec![run("a0", 0, exited(0))]), &mut memory, FAST, Instant::now());
        assert_eq!(
            stopped.actions,
            [Action::Remove { id: "a0".into() }, Action::Remove { id: "s0".into() }, Action::Finalize]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_sandbox_brings_the_containers_back_in_a_new_one() {
        let mut memory = BTreeMap::new();
        let obs = Observed {
            sandbox: vec![run("s0", 0, exited(137))],
            containers: BTreeMap::from([("app".to_string(), vec![run("a0", 0, up())])]),
        };
        let p = plan(&pod("Always"), &obs, &mut memory, FAST, Instant::now());
        assert_eq!(
            p.actions,
            [
                Action::Stop {
                    id: "a0".into(),
                    name: String::new(),
                    grace: Duration::from_secs(2),
                    reason: StopReason::SandboxLost
                },
                Action::Remove { id: "s0".into() },
                Action::StartSandbox { attempt: 1 },
                Action::StartContainer { name: "app".into(), attempt: 1 },
            ]
        );
    }
}
