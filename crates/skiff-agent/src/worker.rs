//! A pod worker: one task per pod bound to this node. It observes the pod's containers, asks
//! [`crate::plan::plan`] what to do, does it through the runtime, runs the probes, and writes the
//! pod's status through the API when it changed. It ends when the pod is finalized or gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use skiff_api::api::{Consistency, DeleteOptions, Filter, ResourceApi};
use skiff_api::kinds::pod::Container;
use skiff_api::kinds::{ConfigMap, Pod, Service};
use skiff_api::meta::Time;
use skiff_api::{Kind, Object, Reason};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::backoff::BackoffConfig;
use crate::events;
use crate::metrics::AgentMetrics;
use crate::plan::{plan, Action, Memory, Observed, Run, StopReason};
use crate::pod_spec::{
    container_spec, sandbox_spec, PodContext, LABEL_ATTEMPT, LABEL_CLUSTER, LABEL_CONTAINER, LABEL_NODE, LABEL_POD_UID,
    SANDBOX,
};
use crate::probe::{self, ProbeSchedule, Prober, Verdict};
use crate::runtime::{ContainerInfo, ContainerRuntime, ContainerState, RuntimeError};
use crate::status::{container_report, pod_status, ContainerReport, Placement, ProbeState, Waiting};

/// The node's settings every worker shares.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub cluster_id: String,
    pub node: String,
    pub host_ip: Option<String>,
    pub extra_labels: BTreeMap<String, String>,
    pub sandbox_image: String,
    pub network: Option<String>,
    /// How pods reach Services (`None`: this member runs no proxy).
    pub service_access: Option<crate::pod_spec::ServiceAccess>,
    pub backoff: BackoffConfig,
    /// The longest the worker sleeps without looking at its containers.
    pub resync: Duration,
    /// Pods that create and start containers at once, shared by the node's workers: the engine
    /// starts containers faster a few at a time than all at once.
    pub starts: Arc<tokio::sync::Semaphore>,
}

/// How long a deleted pod waits, after its member's replica shows it out of the ready endpoints,
/// for every other member's proxy to apply the same change (they apply one Raft log, tens of
/// milliseconds apart; a proxy that still sends a connection to a stopped pod retries another).
pub const ENDPOINT_PROPAGATION: Duration = Duration::from_secs(1);
/// The longest a deleted pod waits to leave its Services' endpoints.
pub const MAX_ENDPOINT_WAIT: Duration = Duration::from_secs(10);

/// Pods starting containers at once on one node, by default.
pub const PARALLEL_STARTS: usize = 4;

pub struct PodWorker {
    runtime: Arc<dyn ContainerRuntime>,
    prober: Arc<dyn Prober>,
    api: Arc<dyn ResourceApi>,
    config: WorkerConfig,
    memory: BTreeMap<String, Memory>,
    waiting: BTreeMap<String, Waiting>,
    liveness: BTreeMap<String, (u32, ProbeSchedule)>,
    readiness: BTreeMap<String, (u32, ProbeSchedule)>,
    startup: BTreeMap<String, (u32, ProbeSchedule)>,
    start_time: Option<Time>,
    /// The status this worker last wrote, and the resourceVersion it was stored at.
    written: Option<(skiff_api::kinds::pod::PodStatus, u64)>,
    /// The crash count of each container whose back-off was already reported.
    backoff_reported: BTreeMap<String, u32>,
    /// The deleted pod has left its Services' ready endpoints (or waited long enough).
    left_endpoints: bool,
    metrics: AgentMetrics,
}

fn labels_of(config: &WorkerConfig, uid: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_CLUSTER.to_string(), config.cluster_id.clone()),
        (LABEL_NODE.to_string(), config.node.clone()),
        (LABEL_POD_UID.to_string(), uid.to_string()),
    ])
}

impl PodWorker {
    pub fn new(
        runtime: Arc<dyn ContainerRuntime>,
        prober: Arc<dyn Prober>,
        api: Arc<dyn ResourceApi>,
        config: WorkerConfig,
    ) -> Self {
        Self {
            runtime,
            prober,
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
            left_endpoints: false,
            metrics: AgentMetrics::default(),
        }
    }

    /// Counts this worker's actions into `metrics` (the agent's, shared by its workers).
    pub fn counting(mut self, metrics: AgentMetrics) -> Self {
        self.metrics = metrics;
        self
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
        let starts = |a: &Action| matches!(a, Action::StartSandbox { .. } | Action::StartContainer { .. });
        // Owned: the permit is held across the actions, which borrow the worker mutably.
        let _starting = if decided.actions.iter().any(starts) {
            self.config.starts.clone().acquire_owned().await.ok()
        } else {
            None
        };
        // A deleted pod's containers stop together, as the kubelet stops them: their preStop hooks
        // and SIGTERMs run at once, within one grace period, after the pod left the Services.
        let (deleted, actions): (Vec<Action>, Vec<Action>) =
            decided.actions.into_iter().partition(|a| matches!(a, Action::Stop { reason: StopReason::Deleted, .. }));
        if let Some(Action::Stop { grace, .. }) = deleted.first() {
            let started = Instant::now();
            if !self.left_endpoints {
                self.leave_endpoints(pod, *grace).await;
                self.left_endpoints = true;
            }
            let stops = deleted.iter().filter_map(|a| match a {
                Action::Stop { id, name, grace, reason } => {
                    self.metrics.count("stop");
                    Some(self.stop_container(pod, id, name, *grace, *reason, started))
                }
                _ => None,
            });
            for stopped in futures::future::join_all(stops).await {
                stopped?;
            }
        }
        for action in actions {
            self.metrics.count(match &action {
                Action::StartSandbox { .. } => "start-sandbox",
                Action::StartContainer { .. } => "start-container",
                Action::Stop { .. } => "stop",
                Action::Remove { .. } => "remove",
                Action::Finalize => "finalize",
            });
            match action {
                Action::StartSandbox { attempt } => {
                    let none = BTreeMap::new();
                    let ctx = self.context(pod, &none, &[], None);
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
                    self.stop_container(pod, &id, &name, grace, reason, Instant::now()).await?;
                }
                Action::Remove { id } => match self.runtime.remove(&id).await {
                    Ok(()) | Err(RuntimeError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                },
                Action::Finalize => {
                    if let Err(e) = self.finalize(pod).await {
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
                self.event(pod, "Warning", "BackOff", &message).await;
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
        services: &'a [Service],
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
            service_access: self.config.service_access.as_ref(),
            services,
        }
    }

    /// Stops container `name` (runtime id `id`) for `reason`: an event, its preStop hook (not for a
    /// lost sandbox), then SIGTERM and what is left of `grace` since `started` (at least 2 s).
    async fn stop_container(
        &self,
        pod: &Pod,
        id: &str,
        name: &str,
        grace: Duration,
        reason: StopReason,
        started: Instant,
    ) -> Result<(), RuntimeError> {
        let message = match reason {
            StopReason::Unhealthy => format!("Container {name} failed its liveness probe, will be restarted"),
            StopReason::Deleted => format!("Stopping container {name}"),
            StopReason::SandboxLost => "Pod sandbox changed, it will be killed and re-created".to_string(),
        };
        self.event(pod, "Normal", "Killing", &message).await;
        if reason != StopReason::SandboxLost {
            if let Some(c) = pod.spec.containers.iter().find(|c| c.name == name) {
                self.pre_stop(c, id, grace).await;
            }
        }
        let left = grace.saturating_sub(started.elapsed()).max(Duration::from_secs(2).min(grace));
        self.runtime.stop(id, left).await
    }

    /// Before a deleted pod's containers get SIGTERM, waits until no proxy sends it new
    /// connections: until this member's replica shows it in no EndpointSlice as ready, and then
    /// [`ENDPOINT_PROPAGATION`] more for the other members' proxies, which apply the same change
    /// from their own replicas. A pod behind no Service does not wait. Bounded by half the grace
    /// period, so the containers keep the rest to drain open connections.
    async fn leave_endpoints(&self, pod: &Pod, grace: Duration) {
        let bound = Instant::now() + (grace / 2).min(MAX_ENDPOINT_WAIT);
        let mut listed = false;
        let in_namespace = Filter::namespace(&pod.metadata.namespace);
        loop {
            let items = match self.api.list(Kind::EndpointSlice, &in_namespace, Consistency::Stale).await {
                Ok(list) => list.items,
                Err(_) => return, // without endpoints to read, no proxy can be waited for
            };
            let mut ready = false;
            for object in &items {
                let Object::EndpointSlice(slice) = object else { continue };
                for e in &slice.endpoints {
                    if e.target_ref.as_ref().and_then(|t| t.uid.as_deref()) == Some(pod.metadata.uid.as_str()) {
                        listed = true;
                        ready |= e.conditions.is_ready();
                    }
                }
            }
            if !ready || Instant::now() >= bound {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if listed {
            tokio::time::sleep_until((Instant::now() + ENDPOINT_PROPAGATION).min(bound.max(Instant::now()))).await;
        }
    }

    /// Records an event about the pod.
    async fn event(&self, pod: &Pod, type_: &str, reason: &str, message: &str) {
        events::record(self.api.as_ref(), pod, type_, reason, message).await;
    }

    /// Removes the pod object once its containers are gone (at once, and only this pod: its uid).
    async fn finalize(&self, pod: &Pod) -> Result<(), skiff_api::ApiError> {
        let options = DeleteOptions {
            grace_period_seconds: Some(0),
            force: true,
            uid: Some(pod.metadata.uid.clone()),
            ..Default::default()
        };
        match self.api.delete(Kind::Pod, &pod.metadata.namespace, &pod.metadata.name, &options).await {
            Ok(_) => Ok(()),
            Err(e) if e.is(Reason::NotFound) => Ok(()), // already gone
            Err(e) => Err(e),
        }
    }

    /// The config maps of the pod's namespace, from this member's replica.
    async fn config_maps(&self, namespace: &str) -> Result<BTreeMap<String, ConfigMap>, String> {
        let list = self.api.list(Kind::ConfigMap, &Filter::namespace(namespace), Consistency::Stale).await;
        let list = list.map_err(|e| e.to_string())?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|o| if let Object::ConfigMap(c) = o { Some((c.metadata.name.clone(), c)) } else { None })
            .collect())
    }

    /// The Services of the pod's namespace, from this member's replica (for their environment
    /// variables; a pod that cannot read them starts without).
    async fn services(&self, namespace: &str) -> Vec<Service> {
        let list = self.api.list(Kind::Service, &Filter::namespace(namespace), Consistency::Stale).await;
        let items = list.map(|l| l.items).unwrap_or_default();
        items.into_iter().filter_map(|o| if let Object::Service(s) = o { Some(s) } else { None }).collect()
    }

    async fn start_container(&mut self, pod: &Pod, container: &Container, sandbox: &str, attempt: u32) {
        let config_maps = match self.config_maps(&pod.metadata.namespace).await {
            Ok(c) => c,
            Err(e) => {
                self.set_waiting(&container.name, "CreateContainerConfigError", e);
                return;
            }
        };
        let services = self.services(&pod.metadata.namespace).await;
        let ip = self.runtime.inspect(sandbox).await.ok().map(|i| i.ip);
        let ctx = self.context(pod, &config_maps, &services, ip.as_deref());
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
                    self.event(pod, "Warning", "ImageNotPulled", &message).await;
                }
                self.event(pod, "Normal", "Created", &format!("Created container {name}")).await;
                self.event(pod, "Normal", "Started", &format!("Started container {name}")).await;
            }
            Err(RuntimeError::ImageNotPresent(image)) => {
                let message = format!(
                    "image {image:?} is not present on node {:?} and Skiff never pulls images: build or load it on that node's engine",
                    self.config.node
                );
                if self.waiting.get(name).map(|w| w.reason.as_str()) != Some("ErrImageNeverPull") {
                    self.event(pod, "Warning", "Failed", &message).await;
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
                        let ok =
                            probe::run(self.runtime.as_ref(), self.prober.as_ref(), probe, c, &run.id, pod_ip, timeout)
                                .await;
                        if entry.1.record(ok, Instant::now()) == Verdict::Failure {
                            self.event(
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
                    let ok =
                        probe::run(self.runtime.as_ref(), self.prober.as_ref(), probe, c, &run.id, pod_ip, timeout)
                            .await;
                    let verdict = entry.1.record(ok, Instant::now());
                    if !readiness && !ok {
                        self.event(
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
            let verdict = |schedules: &BTreeMap<String, (u32, ProbeSchedule)>, probe: bool| match runs.first() {
                _ if !probe => true,
                Some(run) => schedules
                    .get(&c.name)
                    .is_some_and(|(attempt, s)| *attempt == run.attempt && s.verdict() == Verdict::Success),
                None => false,
            };
            let probes = ProbeState {
                started: verdict(&self.startup, c.startup_probe.is_some()),
                ready: verdict(&self.readiness, c.readiness_probe.is_some()),
            };
            let memory = self.memory.get(&c.name);
            let backing_off = memory.and_then(|m| m.not_before).is_some();
            let (now, last) =
                container_report(c, &runs, self.waiting.get(&c.name), probes, backing_off, &pod.metadata.name);
            let info = runs.first().and_then(|r| infos.get(&r.id));
            reports.push(ContainerReport {
                name: c.name.clone(),
                now,
                last,
                restart_count: memory.map_or(0, |m| m.restarts),
                image: c.image.clone(),
                image_id: info.map(|i| i.image_id.clone()).unwrap_or_default(),
                container_id: runs.first().map(|r| format!("docker://{}", r.id)),
            });
        }
        let placement = Placement { pod_ip, host_ip: self.config.host_ip.clone(), start_time: self.start_time };
        // The status this worker last wrote is the one to build on while the pod it sees predates
        // that write (the member's replica may lag by a moment): otherwise transition times would
        // move at every round until the write shows. A newer pod with another status was changed
        // by someone else (the leader marks the pods of a silent node not Ready): it is built on,
        // and the agent's view written again.
        let rv = |v: &str| v.parse::<u64>().unwrap_or(0);
        let seen = rv(&pod.metadata.resource_version);
        let base = match &self.written {
            Some((written, at)) if seen < *at => {
                let mut p = pod.clone();
                p.status = Some(written.clone());
                std::borrow::Cow::Owned(p)
            }
            _ => std::borrow::Cow::Borrowed(pod),
        };
        let status = pod_status(&base, &reports, &placement, Time(jiff::Timestamp::now()));
        if base.status.as_ref() == Some(&status) {
            return;
        }
        let mut updated = pod.clone();
        updated.status = Some(status.clone());
        updated.metadata.resource_version.clear();
        match self.api.update_status(Object::Pod(updated)).await {
            Ok(stored) => self.written = Some((status, rv(&stored.meta().resource_version))),
            Err(e) => tracing::debug!(pod = %pod.metadata.name, error = %e, "status update (retried next round)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use skiff_api::memory::MemoryApi;

    use super::*;
    use crate::memory::{MemoryProber, MemoryRuntime};

    fn config() -> WorkerConfig {
        WorkerConfig {
            cluster_id: "c".into(),
            node: "n1".into(),
            host_ip: None,
            extra_labels: BTreeMap::new(),
            sandbox_image: "pause".into(),
            network: None,
            service_access: None,
            backoff: BackoffConfig::default(),
            resync: Duration::from_secs(10),
            starts: Arc::new(tokio::sync::Semaphore::new(PARALLEL_STARTS)),
        }
    }

    /// Issue 12, defect 14: a deleted pod's containers were stopped one after another, each with
    /// the whole grace period (two containers that ignore SIGTERM took two grace periods).
    #[tokio::test]
    async fn a_deleted_pods_containers_stop_together() {
        let runtime = Arc::new(MemoryRuntime::with_stops_together(2));
        let api = Arc::new(MemoryApi::new());
        let mut pod = Pod::default();
        pod.metadata.name = "two".into();
        pod.metadata.namespace = "default".into();
        pod.spec.node_name = Some("n1".into());
        for name in ["a", "b"] {
            pod.spec.containers.push(Container { name: name.into(), image: "web:1".into(), ..Default::default() });
        }
        let Ok(Object::Pod(mut pod)) = api.create(Object::Pod(pod)).await else { panic!("create the pod") };
        let mut worker = PodWorker::new(runtime.clone(), Arc::new(MemoryProber::new()), api, config());
        worker.step(&pod).await.expect("start the pod");
        let running = runtime.list(&BTreeMap::new()).await.expect("list");
        assert_eq!(running.iter().filter(|c| matches!(c.state, ContainerState::Running { .. })).count(), 3);
        pod.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        pod.metadata.deletion_grace_period_seconds = Some(30);
        let stopped = tokio::time::timeout(Duration::from_secs(5), worker.step(&pod)).await;
        assert!(stopped.is_ok(), "both containers' stops were in flight at once");
        let left = runtime.list(&BTreeMap::new()).await.expect("list");
        let app_running = left.iter().filter(|c| c.labels.get(LABEL_CONTAINER).is_some_and(|n| n != SANDBOX));
        assert!(app_running.clone().all(|c| !matches!(c.state, ContainerState::Running { .. })), "{left:?}");
    }
}
