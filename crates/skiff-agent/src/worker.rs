//! A pod worker: one task per pod bound to this node. It observes the pod's containers, asks
//! [`crate::plan::plan`] what to do, does it through the runtime, runs the probes, and writes the
//! pod's status through the API when it changed. It ends when the pod is finalized or gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use skiff_api::kinds::pod::{Container, HttpGetAction, Probe};
use skiff_api::kinds::{ConfigMap, Pod};
use skiff_api::meta::{IntOrString, Time};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backoff::BackoffConfig;
use crate::plan::{plan, Action, Memory, Observed, Run, StopReason};
use crate::pod_spec::{
    container_spec, sandbox_spec, PodContext, LABEL_ATTEMPT, LABEL_CLUSTER, LABEL_CONTAINER, LABEL_NODE, LABEL_POD_UID,
    SANDBOX,
};
use crate::probe::{ProbeSchedule, Verdict};
use crate::runtime::{ContainerInfo, ContainerRuntime, ContainerState, RuntimeError};
use crate::status::{pod_status, ContainerReport, Observation, Placement, Termination};

/// What the worker needs from the cluster's API (the agent implements it over gRPC; tests in memory).
#[async_trait::async_trait]
pub trait PodApi: Send + Sync + 'static {
    /// Writes `pod`'s status (only the status).
    async fn update_status(&self, pod: &Pod) -> Result<(), String>;
    /// Removes the pod object once its containers are gone (grace 0, on its uid).
    async fn finalize(&self, pod: &Pod) -> Result<(), String>;
    /// The config maps of a namespace.
    async fn config_maps(&self, namespace: &str) -> Result<BTreeMap<String, ConfigMap>, String>;
    /// Records an event about the pod (`Normal` or `Warning`). Losing one is not an error.
    async fn event(&self, _pod: &Pod, _type: &str, _reason: &str, _message: &str) {}
}

/// The node's settings every worker shares.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub cluster_id: String,
    pub node: String,
    pub host_ip: Option<String>,
    pub extra_labels: BTreeMap<String, String>,
    pub sandbox_image: String,
    pub network: Option<String>,
    pub backoff: BackoffConfig,
    /// The longest the worker sleeps without looking at its containers.
    pub resync: Duration,
}

/// Why a container is not running, when no run of it says so.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Waiting {
    reason: String,
    message: Option<String>,
}

pub struct PodWorker {
    runtime: Arc<dyn ContainerRuntime>,
    api: Arc<dyn PodApi>,
    config: WorkerConfig,
    memory: BTreeMap<String, Memory>,
    waiting: BTreeMap<String, Waiting>,
    liveness: BTreeMap<String, (u32, ProbeSchedule)>,
    readiness: BTreeMap<String, (u32, ProbeSchedule)>,
    startup: BTreeMap<String, (u32, ProbeSchedule)>,
    start_time: Option<Time>,
    written: Option<skiff_api::kinds::pod::PodStatus>,
    /// The crash count of each container whose back-off was already reported.
    backoff_reported: BTreeMap<String, u32>,
}

fn labels_of(config: &WorkerConfig, uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_CLUSTER.to_string(), config.cluster_id.clone()),
        (LABEL_NODE.to_string(), config.node.clone()),
        (LABEL_POD_UID.to_string(), uid.to_string()),
    ])
}

fn time_of(text: &Option<String>) -> Option<Time> {
    text.as_deref().and_then(|t| t.parse::<jiff::Timestamp>().ok()).map(Time)
}

impl PodWorker {
    pub fn new(runtime: Arc<dyn ContainerRuntime>, api: Arc<dyn PodApi>, config: WorkerConfig) -> Self {
        Self {
            runtime,
            api,
            config,
            memory: BTreeMap::new(),
            waiting: BTreeMap::new(),
            liveness: BTreeMap::new(),
            readiness: BTreeMap::new(),
            startup: BTreeMap::new(),
            start_time: None,
            written: None,
            backoff_reported: BTreeMap::new(),
        }
    }

    /// Runs until the pod is finalized, or removed without waiting for us (then its containers go).
    pub async fn run(mut self, mut pod: watch::Receiver<Option<Pod>>) {
        let mut last_uid: Option<String> = None;
        loop {
            let current = pod.borrow_and_update().clone();
            let Some(current) = current else {
                if let Some(uid) = &last_uid {
                    self.remove_all(uid).await;
                }
                return;
            };
            last_uid = Some(current.metadata.uid.clone());
            self.start_time.get_or_insert_with(|| Time(jiff::Timestamp::now()));
            let wake = match self.step(&current).await {
                Ok(Some(wake)) => wake,
                Ok(None) => return, // finalized
                Err(e) => {
                    tracing::warn!(pod = %current.metadata.name, error = %e, "pod worker step failed");
                    Instant::now() + Duration::from_secs(1)
                }
            };
            tokio::select! {
                changed = pod.changed() => {
                    if changed.is_err() {
                        // The agent stopped (the member shuts down): the containers keep running
                        // and are adopted when it starts again.
                        return;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    async fn remove_all(&self, uid: &str) {
        if let Ok(containers) = self.runtime.list(&labels_of(&self.config, uid)).await {
            for c in containers {
                if let Err(e) = self.runtime.remove(&c.id).await {
                    tracing::warn!(container = %c.id, error = %e, "removing a container of a gone pod");
                }
            }
        }
    }

    async fn observe(&self, uid: &str) -> Result<(Observed, BTreeMap<String, ContainerInfo>), RuntimeError> {
        let mut observed = Observed::default();
        let mut infos = BTreeMap::new();
        for c in self.runtime.list(&labels_of(&self.config, uid)).await? {
            let attempt = c.labels.get(LABEL_ATTEMPT).and_then(|a| a.parse().ok()).unwrap_or(0);
            let run = Run { id: c.id.clone(), attempt, state: c.state.clone() };
            match c.labels.get(LABEL_CONTAINER).map(String::as_str) {
                Some(SANDBOX) => observed.sandbox.push(run),
                Some(name) => observed.containers.entry(name.to_string()).or_default().push(run),
                None => continue,
            }
            infos.insert(c.id.clone(), c);
        }
        Ok((observed, infos))
    }

    /// One round: observe, act, probe, report. `Ok(None)` once the pod is finalized.
    async fn step(&mut self, pod: &Pod) -> Result<Option<Instant>, RuntimeError> {
        let uid = pod.metadata.uid.clone();
        let (observed, infos) = self.observe(&uid).await?;
        let now = Instant::now();
        let decided = plan(pod, &observed, &mut self.memory, self.config.backoff, now);
        let mut sandbox_id = observed
            .sandbox
            .iter()
            .filter(|r| matches!(r.state, ContainerState::Running { .. }))
            .max_by_key(|r| r.attempt)
            .map(|r| r.id.clone());
        let acted = !decided.actions.is_empty();
        for action in decided.actions {
            match action {
                Action::StartSandbox { attempt } => {
                    let none = BTreeMap::new();
                    let ctx = self.context(pod, &none, None);
                    let spec = sandbox_spec(pod, &ctx, attempt);
                    let id = self.runtime.create(&spec).await?;
                    self.runtime.start(&id).await?;
                    sandbox_id = Some(id);
                }
                Action::StartContainer { name, attempt } => {
                    let Some(sandbox) = sandbox_id.clone() else { continue };
                    let Some(container) = pod.spec.containers.iter().find(|c| c.name == name) else { continue };
                    self.start_container(pod, container, &sandbox, attempt).await;
                }
                Action::Stop { id, name, grace, reason } => {
                    let message = match reason {
                        StopReason::Unhealthy => {
                            format!("Container {name} failed its liveness probe, will be restarted")
                        }
                        StopReason::Deleted => format!("Stopping container {name}"),
                        StopReason::SandboxLost => "Pod sandbox changed, it will be killed and re-created".to_string(),
                    };
                    self.api.event(pod, "Normal", "Killing", &message).await;
                    // The grace period covers the preStop hook and the SIGTERM wait together, as in
                    // Kubernetes (with at least 2 s left for SIGTERM).
                    let started = Instant::now();
                    if reason != StopReason::SandboxLost {
                        if let Some(c) = pod.spec.containers.iter().find(|c| c.name == name) {
                            self.pre_stop(c, &id, grace).await;
                        }
                    }
                    let left = grace.saturating_sub(started.elapsed()).max(Duration::from_secs(2).min(grace));
                    self.runtime.stop(&id, left).await?;
                }
                Action::Remove { id } => match self.runtime.remove(&id).await {
                    Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                },
                Action::Finalize => {
                    if let Err(e) = self.api.finalize(pod).await {
                        tracing::warn!(pod = %pod.metadata.name, error = %e, "finalizing");
                        return Ok(Some(Instant::now() + Duration::from_secs(1)));
                    }
                    return Ok(None);
                }
            }
        }
        // Look again only when something changed the containers.
        let (observed, infos) = if acted { self.observe(&uid).await? } else { (observed, infos) };
        let sandbox_ip = observed
            .sandbox
            .iter()
            .max_by_key(|r| r.attempt)
            .and_then(|r| infos.get(&r.id))
            .map(|i| i.ip.clone())
            .filter(|ip| !ip.is_empty());
        for (name, mem) in &self.memory {
            let backing_off = mem.not_before.is_some_and(|t| t > now);
            if backing_off && self.backoff_reported.get(name) != Some(&mem.backoff.crashes()) {
                self.backoff_reported.insert(name.clone(), mem.backoff.crashes());
                let message = format!("Back-off restarting failed container {name} in pod {}", pod.metadata.name);
                self.api.event(pod, "Warning", "BackOff", &message).await;
            }
        }
        let mut wake = decided.wake_at.unwrap_or(now + self.config.resync).min(now + self.config.resync);
        if pod.metadata.deletion_timestamp.is_none() {
            wake = wake.min(self.probe(pod, &observed, sandbox_ip.as_deref()).await);
        }
        self.report(pod, &observed, &infos, sandbox_ip).await;
        Ok(Some(wake.max(Instant::now() + Duration::from_millis(50))))
    }

    fn context<'a>(
        &'a self,
        _pod: &Pod,
        config_maps: &'a BTreeMap<String, ConfigMap>,
        pod_ip: Option<&'a str>,
    ) -> PodContext<'a> {
        PodContext {
            cluster_id: &self.config.cluster_id,
            node: &self.config.node,
            extra_labels: &self.config.extra_labels,
            sandbox_image: &self.config.sandbox_image,
            network: self.config.network.as_deref(),
            config_maps,
            pod_ip,
            host_ip: self.config.host_ip.as_deref(),
        }
    }

    async fn start_container(&mut self, pod: &Pod, container: &Container, sandbox: &str, attempt: u32) {
        let config_maps = match self.api.config_maps(&pod.metadata.namespace).await {
            Ok(c) => c,
            Err(e) => {
                self.set_waiting(&container.name, "CreateContainerConfigError", e);
                return;
            }
        };
        let ip = self.runtime.inspect(sandbox).await.ok().map(|i| i.ip);
        let ctx = self.context(pod, &config_maps, ip.as_deref());
        let spec = match container_spec(pod, container, &ctx, sandbox, attempt) {
            Ok(s) => s,
            Err(e) => {
                self.set_waiting(&container.name, "CreateContainerConfigError", e.0);
                return;
            }
        };
        let result = match self.runtime.create(&spec).await {
            Ok(id) => self.runtime.start(&id).await,
            Err(e) => Err(e),
        };
        let name = &container.name;
        match result {
            Ok(()) => {
                self.waiting.remove(name);
                if container.image_pull_policy.as_deref() == Some("Always") {
                    let message = format!(
                        "imagePullPolicy is Always but no registry is reachable: running the local image {:?} as it is on node {:?}",
                        container.image, self.config.node
                    );
                    self.api.event(pod, "Warning", "ImageNotPulled", &message).await;
                }
                self.api.event(pod, "Normal", "Created", &format!("Created container {name}")).await;
                self.api.event(pod, "Normal", "Started", &format!("Started container {name}")).await;
            }
            Err(RuntimeError::ImageNotPresent(image)) => {
                let message = format!(
                    "image {image:?} is not present on node {:?} and Skiff never pulls images: build or load it on that node's engine",
                    self.config.node
                );
                if self.waiting.get(name).map(|w| w.reason.as_str()) != Some("ErrImageNeverPull") {
                    self.api.event(pod, "Warning", "Failed", &message).await;
                }
                self.set_waiting(name, "ErrImageNeverPull", message);
            }
            Err(e) => self.set_waiting(name, "RunContainerError", e.to_string()),
        }
    }

    fn set_waiting(&mut self, name: &str, reason: &str, message: String) {
        self.waiting.insert(name.to_string(), Waiting { reason: reason.into(), message: Some(message) });
    }

    /// Runs the preStop exec hook, within the grace period.
    async fn pre_stop(&self, c: &Container, id: &str, grace: Duration) {
        let Some(exec) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()).and_then(|h| h.exec.as_ref()) else {
            return;
        };
        if let Err(e) = self.runtime.exec(id, &exec.command, grace).await {
            tracing::debug!(container = %c.name, error = %e, "preStop hook");
        }
    }

    /// Runs the probes that are due; returns when the next one is due.
    async fn probe(&mut self, pod: &Pod, observed: &Observed, pod_ip: Option<&str>) -> Instant {
        let now = Instant::now();
        let mut next = now + self.config.resync;
        for c in &pod.spec.containers {
            let Some(run) = observed.containers.get(&c.name).and_then(|runs| runs.iter().max_by_key(|r| r.attempt))
            else {
                continue;
            };
            if !matches!(run.state, ContainerState::Running { .. }) {
                continue;
            }
            // A startup probe holds back liveness and readiness until it succeeds; failing, it
            // restarts the container as a failed liveness probe does.
            if let Some(probe) = &c.startup_probe {
                let entry = self
                    .startup
                    .entry(c.name.clone())
                    .or_insert_with(|| (run.attempt, ProbeSchedule::new(probe, now, Verdict::Unknown)));
                if entry.0 != run.attempt {
                    *entry = (run.attempt, ProbeSchedule::new(probe, now, Verdict::Unknown));
                }
                if entry.1.verdict() != Verdict::Success {
                    if entry.1.due(now) {
                        let timeout = entry.1.timeout;
                        let ok = run_probe(self.runtime.as_ref(), probe, c, &run.id, pod_ip, timeout).await;
                        if entry.1.record(ok, Instant::now()) == Verdict::Failure {
                            self.api
                                .event(
                                    pod,
                                    "Warning",
                                    "Unhealthy",
                                    &format!("Startup probe failed for container {}", c.name),
                                )
                                .await;
                            if let Some(m) = self.memory.get_mut(&c.name) {
                                m.liveness_failed = Some(run.attempt);
                            }
                            next = now;
                        }
                    }
                    if let Some((_, s)) = self.startup.get(&c.name) {
                        if s.verdict() != Verdict::Success {
                            next = next.min(s.next_due());
                            continue;
                        }
                    }
                }
            }
            for (probe, readiness) in [(&c.liveness_probe, false), (&c.readiness_probe, true)] {
                let Some(probe) = probe else { continue };
                let schedules = if readiness { &mut self.readiness } else { &mut self.liveness };
                let initial = if readiness { Verdict::Failure } else { Verdict::Success };
                let entry = schedules
                    .entry(c.name.clone())
                    .or_insert_with(|| (run.attempt, ProbeSchedule::new(probe, now, initial)));
                if entry.0 != run.attempt {
                    *entry = (run.attempt, ProbeSchedule::new(probe, now, initial));
                }
                if entry.1.due(now) {
                    let timeout = entry.1.timeout;
                    let ok = run_probe(self.runtime.as_ref(), probe, c, &run.id, pod_ip, timeout).await;
                    let verdict = entry.1.record(ok, Instant::now());
                    if !readiness && !ok {
                        self.api
                            .event(
                                pod,
                                "Warning",
                                "Unhealthy",
                                &format!("Liveness probe failed for container {}", c.name),
                            )
                            .await;
                    }
                    if !readiness && verdict == Verdict::Failure {
                        if let Some(m) = self.memory.get_mut(&c.name) {
                            m.liveness_failed = Some(run.attempt);
                        }
                        next = now;
                    }
                }
                let schedules = if readiness { &self.readiness } else { &self.liveness };
                if let Some((_, s)) = schedules.get(&c.name) {
                    next = next.min(s.next_due());
                }
            }
        }
        next
    }

    async fn report(
        &mut self,
        pod: &Pod,
        observed: &Observed,
        infos: &BTreeMap<String, ContainerInfo>,
        pod_ip: Option<String>,
    ) {
        let mut reports = Vec::new();
        for c in &pod.spec.containers {
            let mut runs: Vec<&Run> = observed.containers.get(&c.name).map(|r| r.iter().collect()).unwrap_or_default();
            runs.sort_by_key(|r| std::cmp::Reverse(r.attempt));
            let termination = |run: &Run| match &run.state {
                ContainerState::Exited { exit_code, oom_killed, started_at, finished_at } => Some(Termination {
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
            };
            let memory = self.memory.get(&c.name);
            let now_obs = match (runs.first(), self.waiting.get(&c.name)) {
                (_, Some(w)) => Observation::Waiting { reason: w.reason.clone(), message: w.message.clone() },
                (None, None) => Observation::Waiting { reason: "ContainerCreating".into(), message: None },
                (Some(run), None) => match &run.state {
                    ContainerState::Running { started_at } => {
                        let started = match (&c.startup_probe, self.startup.get(&c.name)) {
                            (None, _) => true,
                            (Some(_), Some((attempt, s))) => *attempt == run.attempt && s.verdict() == Verdict::Success,
                            (Some(_), None) => false,
                        };
                        let ready = started
                            && match (&c.readiness_probe, self.readiness.get(&c.name)) {
                                (None, _) => true,
                                (Some(_), Some((attempt, s))) => {
                                    *attempt == run.attempt && s.verdict() == Verdict::Success
                                }
                                (Some(_), None) => false,
                            };
                        Observation::Running { started_at: time_of(started_at), ready }
                    }
                    ContainerState::Created => {
                        Observation::Waiting { reason: "ContainerCreating".into(), message: None }
                    }
                    ContainerState::Exited { .. } => match memory.and_then(|m| m.not_before) {
                        Some(_) => Observation::Waiting {
                            reason: "CrashLoopBackOff".into(),
                            message: Some(format!(
                                "back-off restarting failed container {} in pod {}",
                                c.name, pod.metadata.name
                            )),
                        },
                        None => termination(run).map_or(
                            Observation::Waiting { reason: "ContainerCreating".into(), message: None },
                            Observation::Terminated,
                        ),
                    },
                },
            };
            let last = match &now_obs {
                Observation::Terminated(_) => runs.get(1).and_then(|r| termination(r)),
                _ => runs
                    .iter()
                    .find(|r| !matches!(r.state, ContainerState::Running { .. } | ContainerState::Created))
                    .and_then(|r| termination(r)),
            };
            let info = runs.first().and_then(|r| infos.get(&r.id));
            reports.push(ContainerReport {
                name: c.name.clone(),
                now: now_obs,
                last,
                restart_count: memory.map_or(0, |m| m.restarts),
                image: c.image.clone(),
                image_id: info.map(|i| i.image_id.clone()).unwrap_or_default(),
                container_id: runs.first().map(|r| format!("docker://{}", r.id)),
            });
        }
        let placement = Placement { pod_ip, host_ip: self.config.host_ip.clone(), start_time: self.start_time };
        let status = pod_status(pod, &reports, &placement, Time(jiff::Timestamp::now()));
        let unchanged = self.written.as_ref() == Some(&status) || pod.status.as_ref() == Some(&status);
        if unchanged {
            return;
        }
        let mut updated = pod.clone();
        updated.status = Some(status.clone());
        updated.metadata.resource_version.clear();
        match self.api.update_status(&updated).await {
            Ok(()) => self.written = Some(status),
            Err(e) => tracing::debug!(pod = %pod.metadata.name, error = %e, "status update (retried next round)"),
        }
    }
}

/// Runs one probe: exec in the container, or TCP / HTTP against the pod IP.
async fn run_probe(
    runtime: &dyn ContainerRuntime,
    probe: &Probe,
    c: &Container,
    id: &str,
    pod_ip: Option<&str>,
    timeout: Duration,
) -> bool {
    if let Some(exec) = &probe.exec {
        return matches!(runtime.exec(id, &exec.command, timeout).await, Ok(out) if out.exit_code == 0);
    }
    let Some(ip) = pod_ip else { return false };
    let port = |p: &IntOrString| match p {
        IntOrString::Int(n) => u16::try_from(*n).ok(),
        IntOrString::String(name) => c
            .ports
            .iter()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok()),
    };
    if let Some(tcp) = &probe.tcp_socket {
        let Some(port) = port(&tcp.port) else { return false };
        let host = tcp.host.clone().unwrap_or_else(|| ip.to_string());
        return matches!(
            tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host.as_str(), port))).await,
            Ok(Ok(_))
        );
    }
    if let Some(get) = &probe.http_get {
        let Some(port) = port(&get.port) else { return false };
        return matches!(tokio::time::timeout(timeout, http_get(ip, port, get)).await, Ok(Ok(code)) if (200..400).contains(&code));
    }
    false
}

/// A minimal HTTP/1.0 GET (probes need the status code only).
async fn http_get(ip: &str, port: u16, get: &HttpGetAction) -> std::io::Result<u16> {
    let host = get.host.clone().unwrap_or_else(|| ip.to_string());
    let mut stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let path = get.path.clone().unwrap_or_else(|| "/".into());
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: skiff-probe\r\n");
    for h in &get.http_headers {
        request.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 32];
    let n = stream.read(&mut head).await?;
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))
}
