//! A pod's status from what the agent observed of its containers, as the kubelet computes it:
//! phase, conditions, per-container state, ready, restart count and last state. Pure.

use skiff_api::kinds::pod::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    Pod, PodCondition, PodStatus,
};
use skiff_api::meta::{Time, CONDITION_FALSE, CONDITION_TRUE};

use crate::plan::Run;
use crate::runtime;

/// What one container is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Not running: not created yet, backing off, or unable to start (`reason` says why).
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Option<Time>,
        ready: bool,
    },
    Terminated(Termination),
}

/// How a container run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`.
    pub reason: String,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    pub container_id: Option<String>,
}

/// Everything the agent knows of one container of the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerReport {
    pub name: String,
    pub now: Observation,
    /// The previous run, once there was one.
    pub last: Option<Termination>,
    pub restart_count: i32,
    pub image: String,
    pub image_id: String,
    pub container_id: Option<String>,
}

/// Where the pod runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    pub start_time: Option<Time>,
}

/// Why a container is not running when no run of it says so (its image is missing, its config
/// cannot be built).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub reason: String,
    pub message: Option<String>,
}

/// What the probes say of a container's current run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeState {
    /// Its startup probe succeeded (or it has none).
    pub started: bool,
    /// Its readiness probe succeeded (or it has none).
    pub ready: bool,
}

fn time_of(text: &Option<String>) -> Option<Time> {
    text.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok()).map(Time)
}

/// How a finished run ended, if it has.
pub fn termination(run: &Run) -> Option<Termination> {
    match &run.state {
        runtime::ContainerState::Exited { exit_code, oom_killed, started_at, finished_at } => Some(Termination {
            exit_code: i32::try_from(*exit_code).unwrap_or(-1),
            reason: if *oom_killed {
                "OOMKilled"
            } else if *exit_code == 0 {
                "Completed"
            } else {
                "Error"
            }
            .into(),
            started_at: time_of(started_at),
            finished_at: time_of(finished_at),
            container_id: Some(format!("docker://{}", run.id)),
        }),
        _ => None,
    }
}

/// One container's report from its runs (newest first), what blocks it, its probes and whether it
/// is backing off: what it is doing now and how its previous run ended.
pub fn container_report(
    c: &Container,
    runs: &[&Run],
    waiting: Option<&Waiting>,
    probes: ProbeState,
    backing_off: bool,
    pod_name: &str,
) -> (Observation, Option<Termination>) {
    let now = match (runs.first(), waiting) {
        (_, Some(w)) => Observation::Waiting { reason: w.reason.clone(), message: w.message.clone() },
        (None, None) => Observation::Waiting { reason: "ContainerCreating".into(), message: None },
        (Some(run), None) => match &run.state {
            runtime::ContainerState::Running { started_at } => {
                Observation::Running { started_at: time_of(started_at), ready: probes.started && probes.ready }
            }
            runtime::ContainerState::Created => {
                Observation::Waiting { reason: "ContainerCreating".into(), message: None }
            }
            runtime::ContainerState::Exited { .. } if backing_off => Observation::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!("back-off restarting failed container {} in pod {pod_name}", c.name)),
            },
            runtime::ContainerState::Exited { .. } => termination(run).map_or(
                Observation::Waiting { reason: "ContainerCreating".into(), message: None },
                Observation::Terminated,
            ),
        },
    };
    let last = match &now {
        Observation::Terminated(_) => runs.get(1).and_then(|r| termination(r)),
        _ => runs
            .iter()
            .find(|r| !matches!(r.state, runtime::ContainerState::Running { .. } | runtime::ContainerState::Created))
            .and_then(|r| termination(r)),
    };
    (now, last)
}

fn terminated(t: &Termination) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: t.exit_code,
            reason: Some(t.reason.clone()),
            started_at: t.started_at,
            finished_at: t.finished_at,
            container_id: t.container_id.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The phase, by the kubelet's rules: any container never started yet: Pending; any running:
/// Running; all stopped: Running when they will be restarted, else Succeeded or Failed.
pub fn phase(restart_policy: &str, reports: &[ContainerReport]) -> &'static str {
    let (mut waiting, mut running, mut stopped, mut succeeded, mut failed) = (0, 0, 0, 0, 0);
    for r in reports {
        match &r.now {
            Observation::Running { .. } => running += 1,
            Observation::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                } else {
                    failed += 1;
                }
            }
            Observation::Waiting { .. } => match &r.last {
                Some(t) => {
                    stopped += 1;
                    if t.exit_code == 0 {
                        succeeded += 1;
                    } else {
                        failed += 1;
                    }
                }
                None => waiting += 1,
            },
        }
    }
    if waiting > 0 || reports.is_empty() {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    match restart_policy {
        "Never" if failed > 0 => "Failed",
        "Never" => "Succeeded",
        "OnFailure" if stopped == succeeded => "Succeeded",
        "OnFailure" => "Running",
        _ => "Running",
    }
}

/// Sets condition `type_` to `status`, keeping its transition time when it did not change.
fn condition(previous: &[PodCondition], type_: &str, status: bool, now: Time) -> PodCondition {
    let status = if status { CONDITION_TRUE } else { CONDITION_FALSE }.to_string();
    let last_transition_time = match previous.iter().find(|c| c.type_ == type_) {
        Some(c) if c.status == status => c.last_transition_time.or(Some(now)),
        _ => Some(now),
    };
    PodCondition { type_: type_.into(), status, last_transition_time, ..Default::default() }
}

/// The pod's status from `reports` (one per container of the spec, in spec order).
pub fn pod_status(pod: &Pod, reports: &[ContainerReport], placement: &Placement, now: Time) -> PodStatus {
    let previous = pod.status.clone().unwrap_or_default();
    let policy = pod.spec.restart_policy.as_deref().unwrap_or("Always");
    let container_statuses: Vec<ContainerStatus> = reports
        .iter()
        .map(|r| {
            let (state, ready, started) = match &r.now {
                Observation::Waiting { reason, message } => (
                    ContainerState {
                        waiting: Some(ContainerStateWaiting { reason: Some(reason.clone()), message: message.clone() }),
                        ..Default::default()
                    },
                    false,
                    false,
                ),
                Observation::Running { started_at, ready } => (
                    ContainerState {
                        running: Some(ContainerStateRunning { started_at: *started_at }),
                        ..Default::default()
                    },
                    *ready,
                    true,
                ),
                Observation::Terminated(t) => (terminated(t), false, false),
            };
            ContainerStatus {
                name: r.name.clone(),
                state: Some(state),
                last_state: r.last.as_ref().map(terminated),
                ready,
                restart_count: r.restart_count,
                image: r.image.clone(),
                image_id: r.image_id.clone(),
                container_id: r.container_id.clone(),
                started: Some(started),
            }
        })
        .collect();
    let all_ready = !container_statuses.is_empty() && container_statuses.iter().all(|c| c.ready);
    let conditions = vec![
        condition(&previous.conditions, "PodScheduled", true, now),
        condition(&previous.conditions, "Initialized", true, now),
        condition(&previous.conditions, "ContainersReady", all_ready, now),
        condition(&previous.conditions, "Ready", all_ready, now),
    ];
    PodStatus {
        phase: Some(phase(policy, reports).to_string()),
        conditions,
        host_ip: placement.host_ip.clone(),
        pod_ip: placement.pod_ip.clone(),
        start_time: placement.start_time,
        container_statuses,
        observed_generation: pod.metadata.generation,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(now: Observation, last: Option<i32>) -> ContainerReport {
        ContainerReport {
            name: "app".into(),
            now,
            last: last.map(|code| Termination {
                exit_code: code,
                reason: if code == 0 { "Completed".into() } else { "Error".into() },
                started_at: None,
                finished_at: None,
                container_id: None,
            }),
            restart_count: 0,
            image: "web:1".into(),
            image_id: String::new(),
            container_id: None,
        }
    }

    fn exited(code: i32) -> Observation {
        Observation::Terminated(Termination {
            exit_code: code,
            reason: if code == 0 { "Completed".into() } else { "Error".into() },
            started_at: None,
            finished_at: None,
            container_id: None,
        })
    }

    fn waiting(reason: &str) -> Observation {
        Observation::Waiting { reason: reason.into(), message: None }
    }

    #[test]
    fn phases_follow_the_kubelet() {
        let running = Observation::Running { started_at: None, ready: true };
        assert_eq!(phase("Always", &[report(waiting("ContainerCreating"), None)]), "Pending");
        assert_eq!(phase("Always", &[report(running.clone(), None)]), "Running");
        assert_eq!(phase("Always", &[report(waiting("CrashLoopBackOff"), Some(1))]), "Running");
        assert_eq!(phase("OnFailure", &[report(exited(0), None)]), "Succeeded");
        assert_eq!(phase("OnFailure", &[report(waiting("CrashLoopBackOff"), Some(1))]), "Running");
        assert_eq!(phase("Never", &[report(exited(1), None)]), "Failed");
        assert_eq!(phase("Never", &[report(exited(0), None), report(running, None)]), "Running");
        assert_eq!(phase("Never", &[report(exited(0), None), report(exited(0), None)]), "Succeeded");
    }

    #[test]
    fn status_reports_ready_restarts_last_state_and_keeps_transition_times() {
        let mut pod = Pod::default();
        pod.spec.restart_policy = Some("Always".into());
        let t0 = Time::from_unix(1_000).expect("time");
        let t1 = Time::from_unix(2_000).expect("time");
        let mut r = report(Observation::Running { started_at: Some(t0), ready: false }, Some(137));
        r.restart_count = 3;
        let placement =
            Placement { pod_ip: Some("10.0.0.5".into()), host_ip: Some("192.168.1.2".into()), start_time: Some(t0) };
        let status = pod_status(&pod, std::slice::from_ref(&r), &placement, t0);
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let c = &status.container_statuses[0];
        assert_eq!((c.ready, c.restart_count), (false, 3));
        assert_eq!(c.last_state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code), Some(137));
        let ready = |s: &PodStatus| s.conditions.iter().find(|c| c.type_ == "Ready").cloned().expect("Ready");
        assert_eq!(ready(&status).status, "False");
        pod.status = Some(status.clone());
        // Readiness arrives later: Ready flips (new transition time); PodScheduled keeps its time.
        r.now = Observation::Running { started_at: Some(t0), ready: true };
        let later = pod_status(&pod, &[r], &placement, t1);
        assert_eq!(ready(&later).status, "True");
        assert_eq!(ready(&later).last_transition_time, Some(t1));
        let scheduled = later.conditions.iter().find(|c| c.type_ == "PodScheduled").expect("PodScheduled");
        assert_eq!(scheduled.last_transition_time, Some(t0));
        assert_eq!(later.pod_ip.as_deref(), Some("10.0.0.5"));
    }

    #[test]
    fn a_container_report_says_what_blocks_it_and_how_its_last_run_ended() {
        use crate::runtime::ContainerState as Rt;
        let c = Container { name: "app".into(), ..Default::default() };
        let exited = Run {
            id: "c1".into(),
            attempt: 1,
            state: Rt::Exited { exit_code: 2, oom_killed: false, started_at: None, finished_at: None },
        };
        let running = Run { id: "c2".into(), attempt: 2, state: Rt::Running { started_at: None } };
        let probes = ProbeState { started: true, ready: true };
        let (now, last) = container_report(&c, &[&exited], None, probes, true, "web");
        assert!(matches!(now, Observation::Waiting { ref reason, .. } if reason == "CrashLoopBackOff"), "{now:?}");
        assert_eq!(last.map(|t| (t.exit_code, t.reason)), Some((2, "Error".to_string())));
        let (now, last) = container_report(&c, &[&running, &exited], None, probes, false, "web");
        assert_eq!(now, Observation::Running { started_at: None, ready: true });
        assert_eq!(last.map(|t| t.exit_code), Some(2));
        let not_started = ProbeState { started: false, ready: true };
        let (now, _) = container_report(&c, &[&running], None, not_started, false, "web");
        assert_eq!(now, Observation::Running { started_at: None, ready: false }, "ready only once started");
        let blocked = Waiting { reason: "ErrImageNeverPull".into(), message: None };
        let (now, _) = container_report(&c, &[], Some(&blocked), probes, false, "web");
        assert!(matches!(now, Observation::Waiting { ref reason, .. } if reason == "ErrImageNeverPull"));
    }
}
