//! Docker Swarm as a reference, on the local engine: a single-node swarm the benchmark initialises
//! when the engine is in none (and leaves again), replicated services created and updated through
//! the Engine API (bollard, at the negotiated version: 1.41 on Docker 20.10), and the waits until
//! their tasks run or their update completes.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use bollard::models::{
    ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecUpdateConfig,
    ServiceSpecUpdateConfigFailureActionEnum, ServiceSpecUpdateConfigOrderEnum, ServiceUpdateStatusStateEnum, TaskSpec,
    TaskSpecContainerSpec, TaskState,
};
use bollard::query_parameters::{ListTasksOptionsBuilder, UpdateServiceOptionsBuilder};
use bollard::Docker;

use crate::leftovers::docker;

/// How often a wait asks the engine.
const POLL: Duration = Duration::from_millis(50);

/// The engine in a swarm for as long as this lives; it leaves the swarm on drop only if it
/// initialised it (an engine that was already in a swarm stays in it).
pub struct Membership {
    /// Whether `docker swarm init` was ours.
    initialised: bool,
}

/// `docker info`'s Swarm.LocalNodeState: inactive, pending, active, error or locked.
fn local_node_state() -> anyhow::Result<String> {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.Swarm.LocalNodeState}}"])
        .output()
        .context("running docker info")?;
    if !out.status.success() {
        anyhow::bail!("docker info failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl Membership {
    /// Puts the engine in a swarm (`docker swarm init --advertise-addr 127.0.0.1` unless it is in one
    /// already) and waits until its node is ready to run tasks.
    pub async fn join(timeout: Duration) -> anyhow::Result<Self> {
        let state = local_node_state()?;
        let membership = match state.as_str() {
            "active" => Membership { initialised: false },
            "inactive" => {
                if !docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]) {
                    anyhow::bail!("docker swarm init --advertise-addr 127.0.0.1 failed (its error is above)");
                }
                Membership { initialised: true }
            }
            other => anyhow::bail!("the engine's swarm is '{other}'; the Swarm side needs it inactive or active"),
        };
        let deadline = Instant::now() + timeout;
        loop {
            let out =
                Command::new("docker").args(["node", "inspect", "self", "--format", "{{.Status.State}}"]).output();
            if matches!(&out, Ok(o) if o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "ready") {
                return Ok(membership);
            }
            if Instant::now() >= deadline {
                anyhow::bail!("the swarm's node was not ready within {timeout:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn initialised(&self) -> bool {
        self.initialised
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if self.initialised {
            docker(&["swarm", "leave", "--force"]);
        }
    }
}

/// What a replicated service runs and how it is updated.
pub struct Service<'a> {
    pub name: &'a str,
    pub replicas: usize,
    pub image: &'a str,
    pub command: Vec<String>,
    pub env: Vec<String>,
    /// Labels of the service and of each task's container.
    pub labels: HashMap<String, String>,
    pub stop_grace: Duration,
    /// Tasks updated at a time.
    pub update_parallelism: usize,
    /// Start the new task before stopping the old one (else stop first).
    pub start_first: bool,
    /// How long Swarm watches an updated task for failure before it counts the update as done.
    pub update_monitor: Duration,
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Service<'_> {
    fn spec(&self) -> ServiceSpec {
        ServiceSpec {
            name: Some(self.name.to_string()),
            labels: Some(self.labels.clone()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(self.image.to_string()),
                    command: Some(self.command.clone()),
                    env: Some(self.env.clone()),
                    labels: Some(self.labels.clone()),
                    stop_grace_period: Some(nanos(self.stop_grace)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            mode: Some(ServiceSpecMode {
                replicated: Some(ServiceSpecModeReplicated { replicas: Some(self.replicas as i64) }),
                ..Default::default()
            }),
            update_config: Some(ServiceSpecUpdateConfig {
                parallelism: Some(self.update_parallelism as i64),
                delay: Some(0),
                failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::PAUSE),
                monitor: Some(nanos(self.update_monitor)),
                order: Some(if self.start_first {
                    ServiceSpecUpdateConfigOrderEnum::START_FIRST
                } else {
                    ServiceSpecUpdateConfigOrderEnum::STOP_FIRST
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates the service (`docker service create`).
    pub async fn create(&self, docker: &Docker) -> anyhow::Result<()> {
        docker
            .create_service(self.spec(), None)
            .await
            .with_context(|| format!("creating Swarm service {} of {}", self.name, self.image))?;
        Ok(())
    }
}

/// Counts of the service's tasks by state, among those Swarm wants running.
async fn task_states(docker: &Docker, service: &str) -> anyhow::Result<HashMap<String, usize>> {
    let filters = HashMap::from([("service", vec![service]), ("desired-state", vec!["running"])]);
    let options = ListTasksOptionsBuilder::default().filters(&filters).build();
    let tasks = docker.list_tasks(Some(options)).await.with_context(|| format!("listing the tasks of {service}"))?;
    let mut states = HashMap::new();
    for task in tasks {
        let state = task.status.and_then(|s| s.state).map(|s| s.to_string()).unwrap_or_else(|| "unknown".into());
        *states.entry(state).or_insert(0) += 1;
    }
    Ok(states)
}

fn running(states: &HashMap<String, usize>) -> usize {
    states.get(&TaskState::RUNNING.to_string()).copied().unwrap_or(0)
}

/// Waits until `replicas` tasks of `service` are running (`docker service ls` shows n/n).
pub async fn wait_running(docker: &Docker, service: &str, replicas: usize, deadline: Instant) -> anyhow::Result<()> {
    loop {
        let states = task_states(docker, service).await?;
        if running(&states) >= replicas {
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "swarm: service {service} has {} of {replicas} tasks running in time ({states:?})",
                running(&states)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Sets the environment of `service`'s tasks to `env` (`docker service update --env-add`), which
/// starts a rolling update by the service's update settings.
pub async fn update_env(docker: &Docker, service: &str, env: Vec<String>) -> anyhow::Result<()> {
    let current = docker.inspect_service(service, None).await.with_context(|| format!("inspecting {service}"))?;
    let version = current.version.and_then(|v| v.index).context("the service has no version")?;
    let version = i32::try_from(version).context("the service's version does not fit the API's i32")?;
    let mut spec = current.spec.context("the service has no spec")?;
    let container = spec
        .task_template
        .as_mut()
        .and_then(|t| t.container_spec.as_mut())
        .context("the service has no container spec")?;
    container.env = Some(env);
    let options = UpdateServiceOptionsBuilder::default().version(version).build();
    docker.update_service(service, spec, options, None).await.with_context(|| format!("updating {service}"))?;
    Ok(())
}

/// Waits until the update of `service` has completed (`docker service inspect`'s UpdateStatus.State),
/// failing at once if Swarm paused or rolled it back.
pub async fn wait_updated(docker: &Docker, service: &str, deadline: Instant) -> anyhow::Result<()> {
    loop {
        let s = docker.inspect_service(service, None).await.with_context(|| format!("inspecting {service}"))?;
        let status = s.update_status.unwrap_or_default();
        match status.state {
            Some(ServiceUpdateStatusStateEnum::COMPLETED) => return Ok(()),
            Some(ServiceUpdateStatusStateEnum::UPDATING | ServiceUpdateStatusStateEnum::EMPTY) | None => {}
            Some(other) => {
                anyhow::bail!("swarm: the update of {service} ended {other}: {}", status.message.unwrap_or_default())
            }
        }
        if Instant::now() >= deadline {
            let states = task_states(docker, service).await.unwrap_or_default();
            anyhow::bail!("swarm: the update of {service} did not complete in time (tasks: {states:?})");
        }
        tokio::time::sleep(POLL).await;
    }
}
