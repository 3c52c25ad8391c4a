//! The container runtime on a Docker engine, through bollard. The API version is negotiated with
//! the engine (20.10 here speaks 1.41); nothing newer is asked for. Images are never pulled.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::Docker;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::runtime::{
    collect_exec_output, ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, ExecOutput, LogOptions,
    RuntimeError, RuntimeInfo, MAX_EXEC_TIMEOUT, PIDS_LIMIT,
};

/// A Docker engine, reached on first use (and again after a failed attempt), so a member starts
/// even while its engine is down and its agent works as soon as the engine answers.
#[derive(Clone)]
pub struct DockerRuntime {
    /// The unix socket; `None`: `DOCKER_HOST` or the default socket.
    socket: Option<String>,
    /// The client, once the API version was negotiated.
    docker: std::sync::Arc<tokio::sync::OnceCell<Docker>>,
}

fn engine(e: bollard::errors::Error) -> RuntimeError {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code: 404, message } => {
            RuntimeError::NotFound(message)
        }
        other => RuntimeError::Engine(other.to_string()),
    }
}

impl DockerRuntime {
    /// The engine at `socket` (a unix socket path; `None`: `DOCKER_HOST` or the default socket), not
    /// contacted yet.
    pub fn new(socket: Option<&str>) -> Self {
        Self { socket: socket.map(str::to_string), docker: Default::default() }
    }

    /// The engine at `socket`, contacted now (the API version negotiated).
    pub async fn connect(socket: Option<&str>) -> Result<Self, RuntimeError> {
        let runtime = Self::new(socket);
        runtime.docker().await?;
        Ok(runtime)
    }

    /// The client, connecting and negotiating the API version on first use.
    async fn docker(&self) -> Result<&Docker, RuntimeError> {
        self.docker
            .get_or_try_init(|| async {
                let docker = match &self.socket {
                    Some(path) => Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION),
                    None => Docker::connect_with_local_defaults(),
                }
                .map_err(|e| RuntimeError::Engine(format!("cannot reach the Docker engine: {e}")))?;
                docker
                    .negotiate_version()
                    .await
                    .map_err(|e| RuntimeError::Engine(format!("cannot reach the Docker engine: {e}")))
            })
            .await
    }
}

fn state_of(state: Option<&bollard::models::ContainerState>) -> ContainerState {
    let Some(s) = state else { return ContainerState::Created };
    let started_at = s.started_at.clone().filter(|t| !t.starts_with("0001-"));
    if s.running == Some(true) {
        return ContainerState::Running { started_at };
    }
    match s.status.map(|st| st.to_string()).as_deref() {
        Some("created") => ContainerState::Created,
        _ => ContainerState::Exited {
            exit_code: s.exit_code.unwrap_or(0),
            oom_killed: s.oom_killed.unwrap_or(false),
            started_at,
            finished_at: s.finished_at.clone().filter(|t| !t.starts_with("0001-")),
        },
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn info(&self) -> Result<RuntimeInfo, RuntimeError> {
        let info = self.docker().await?.info().await.map_err(engine)?;
        Ok(RuntimeInfo {
            version: format!("docker://{}", info.server_version.unwrap_or_default()),
            cpus: info.ncpu.unwrap_or(0),
            memory_bytes: info.mem_total.unwrap_or(0),
            kernel_version: info.kernel_version.unwrap_or_default(),
            os_image: info.operating_system.unwrap_or_default(),
            architecture: info.architecture.unwrap_or_default(),
        })
    }

    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        match self.docker().await?.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(false),
            Err(e) => Err(engine(e)),
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        if !self.image_present(&spec.image).await? {
            return Err(RuntimeError::ImageNotPresent(spec.image.clone()));
        }
        let network_mode = match (&spec.network_of, &spec.network) {
            (Some(sandbox), _) => Some(format!("container:{sandbox}")),
            (None, Some(network)) => Some(network.clone()),
            (None, None) => None,
        };
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let host_config = HostConfig {
            network_mode,
            cap_add: list(&spec.cap_add),
            dns: list(&spec.dns),
            dns_search: list(&spec.dns_search),
            dns_options: list(&spec.dns_options),
            nano_cpus: spec.cpu_millis.map(|m| m.saturating_mul(1_000_000)),
            memory: spec.memory_bytes,
            // Safe defaults for every container of every pod: no privilege gained through setuid
            // or file capabilities, and a bounded number of processes. Capabilities stay the
            // engine's defaults plus only what `cap_add` names (a sandbox's NET_ADMIN); nothing
            // runs privileged, and no host namespace, device or mount is ever shared.
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            pids_limit: Some(PIDS_LIMIT),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: spec.command.clone(),
            cmd: spec.args.clone(),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: spec.working_dir.clone(),
            labels: Some(spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<HashMap<_, _>>()),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&spec.name).build();
        let created = self.docker().await?.create_container(Some(options), body).await.map_err(engine)?;
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.docker().await?.start_container(id, None).await.map_err(engine)
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        // Whole seconds, rounded up: 3.99 s of grace left must not become 3.
        let seconds = i32::try_from(grace.as_millis().div_ceil(1000)).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(seconds).build();
        match self.docker().await?.stop_container(id, Some(options)).await {
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304, .. }) => Ok(()),
            other => other.map_err(engine),
        }
    }

    async fn network_gateway(&self, network: Option<&str>) -> Result<Option<std::net::IpAddr>, RuntimeError> {
        let name = network.unwrap_or("bridge");
        let inspected = self.docker().await?.inspect_network(name, None).await.map_err(engine)?;
        let configs = inspected.ipam.and_then(|i| i.config).unwrap_or_default();
        // The default bridge names only its subnet: its gateway is the subnet's first address, as
        // Docker's IPAM gives it (docker0 is 172.17.0.1 in 172.17.0.0/16).
        let first_of = |subnet: &str| {
            let (base, _) = subnet.split_once('/')?;
            let base: std::net::Ipv4Addr = base.parse().ok()?;
            Some(std::net::IpAddr::V4(std::net::Ipv4Addr::from(u32::from(base) + 1)))
        };
        Ok(configs.iter().find_map(|c| match &c.gateway {
            Some(g) if !g.is_empty() => g.parse().ok(),
            _ => c.subnet.as_deref().and_then(first_of),
        }))
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        self.docker().await?.remove_container(id, Some(options)).await.map_err(engine)
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        let c = self.docker().await?.inspect_container(id, None).await.map_err(engine)?;
        let config = c.config.unwrap_or_default();
        let network = c.network_settings.unwrap_or_default();
        let ip = network
            .networks
            .unwrap_or_default()
            .values()
            .filter_map(|n| n.ip_address.clone())
            .find(|ip| !ip.is_empty())
            .unwrap_or_default();
        Ok(ContainerInfo {
            id: c.id.unwrap_or_default(),
            name: c.name.unwrap_or_default().trim_start_matches('/').to_string(),
            image: config.image.unwrap_or_default(),
            image_id: c.image.unwrap_or_default(),
            labels: config.labels.unwrap_or_default().into_iter().collect(),
            state: state_of(c.state.as_ref()),
            ip,
        })
    }

    async fn list(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let filters: HashMap<String, Vec<String>> =
            HashMap::from([("label".to_string(), labels.iter().map(|(k, v)| format!("{k}={v}")).collect())]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let summaries = self.docker().await?.list_containers(Some(options)).await.map_err(engine)?;
        let mut out = Vec::with_capacity(summaries.len());
        for s in summaries {
            let Some(id) = s.id else { continue };
            match self.inspect(&id).await {
                Ok(info) => out.push(info),
                Err(RuntimeError::NotFound(_)) => {} // removed meanwhile
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput, RuntimeError> {
        let options = CreateExecOptions {
            cmd: Some(command.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let run = async {
            let exec = self.docker().await?.create_exec(id, options).await.map_err(engine)?;
            let mut output = Vec::new();
            if let StartExecResults::Attached { output: mut stream, .. } =
                self.docker().await?.start_exec(&exec.id, None).await.map_err(engine)?
            {
                while let Some(chunk) = stream.next().await {
                    if !collect_exec_output(&mut output, &chunk.map_err(engine)?.into_bytes()) {
                        break; // the rest is not read: the command may go on, its output is dropped
                    }
                }
            }
            let inspected = self.docker().await?.inspect_exec(&exec.id).await.map_err(engine)?;
            Ok(ExecOutput { exit_code: inspected.exit_code.unwrap_or(-1), output })
        };
        let timeout = timeout.min(MAX_EXEC_TIMEOUT);
        tokio::time::timeout(timeout, run).await.map_err(|_| {
            RuntimeError::TimedOut(format!("command {command:?} ran and did not finish within {timeout:?}"))
        })?
    }

    async fn logs(
        &self,
        id: &str,
        options: &LogOptions,
    ) -> Result<BoxStream<'static, Result<Vec<u8>, RuntimeError>>, RuntimeError> {
        self.docker().await?.inspect_container(id, None).await.map_err(engine)?;
        let tail = options.tail.map_or_else(|| "all".to_string(), |n| n.to_string());
        let query = LogsOptionsBuilder::default().stdout(true).stderr(true).follow(options.follow).tail(&tail).build();
        let stream = self
            .docker()
            .await?
            .logs(id, Some(query))
            .map(|chunk| chunk.map(|c| c.into_bytes().to_vec()).map_err(engine));
        Ok(Box::pin(stream))
    }
}
