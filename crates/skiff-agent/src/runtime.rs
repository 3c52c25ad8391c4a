//! The container runtime: the one door through which the agent touches containers. Docker
//! implements it for real (`docker.rs`); [`crate::memory::MemoryRuntime`] implements it in memory
//! for control-plane tests and simulated nodes.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::stream::BoxStream;

/// What to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The runtime's name for it (unique on the engine).
    pub name: String,
    pub image: String,
    /// Replaces the image's entrypoint when set.
    pub command: Option<Vec<String>>,
    /// Replaces the image's cmd when set.
    pub args: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Join the network namespace of this container (the pod's sandbox) instead of getting one.
    pub network_of: Option<String>,
    /// The network to attach a sandbox to (`None`: the engine's default bridge).
    pub network: Option<String>,
    /// CPU limit in millicores.
    pub cpu_millis: Option<i64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// Capabilities added inside the container's own namespaces (a sandbox's `NET_ADMIN`, to
    /// route the service range).
    pub cap_add: Vec<String>,
    /// The resolver, search list and options of the container's `/etc/resolv.conf`.
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    pub dns_options: Vec<String>,
}

/// The state of a container as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running { started_at: Option<String> },
    Exited { exit_code: i64, oom_killed: bool, started_at: Option<String>, finished_at: Option<String> },
}

/// A container as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
    /// The IP of its own network namespace (empty for containers that share another's).
    pub ip: String,
}

/// The engine's facts, for the node's status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// `docker://20.10.24`.
    pub version: String,
    pub cpus: i64,
    pub memory_bytes: i64,
    pub kernel_version: String,
    pub os_image: String,
    pub architecture: String,
}

/// The result of a command run inside a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    /// stdout and stderr, interleaved as they came.
    pub output: Vec<u8>,
}

/// Which logs to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    /// Only the last N lines.
    pub tail: Option<u64>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error("no such container {0}")]
    NotFound(String),
    #[error("image {0:?} is not present on this node's engine (images are never pulled)")]
    ImageNotPresent(String),
    #[error("container engine: {0}")]
    Engine(String),
    /// A command ran (its effects may have happened) and did not finish in time: not to be run
    /// again elsewhere.
    #[error("{0}")]
    TimedOut(String),
}

/// Processes one container may run at once (a fork bomb in one pod stays in it). Docker sets no
/// limit by default.
pub const PIDS_LIMIT: i64 = 4096;

/// The most output an exec keeps (a probe's, or one a user asked for): beyond it the rest is
/// dropped and the output says so, so no command can make a member hold more.
pub const MAX_EXEC_OUTPUT: usize = 16 << 20;

/// The longest an exec may run.
pub const MAX_EXEC_TIMEOUT: Duration = Duration::from_secs(600);

/// Appends `chunk` to `output` up to [`MAX_EXEC_OUTPUT`]; `false` once the limit is reached (the
/// output then ends with a note saying so).
pub fn collect_exec_output(output: &mut Vec<u8>, chunk: &[u8]) -> bool {
    const NOTE: &[u8] = b"\n[skiff: output truncated at 16 MiB]\n";
    let room = MAX_EXEC_OUTPUT.saturating_sub(output.len());
    if chunk.len() <= room {
        output.extend_from_slice(chunk);
        return true;
    }
    output.extend_from_slice(&chunk[..room]);
    output.extend_from_slice(NOTE);
    false
}

/// Everything the agent asks of a container engine.
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    async fn info(&self) -> Result<RuntimeInfo, RuntimeError>;
    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError>;
    /// Creates (does not start) a container; returns its id.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError>;
    async fn start(&self, id: &str) -> Result<(), RuntimeError>;
    /// SIGTERM, then SIGKILL after `grace`.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;
    /// Removes a container, running or not.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError>;
    /// Every container (running or not) that carries all of `labels`.
    async fn list(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerInfo>, RuntimeError>;
    /// Runs `command` in a running container, up to `timeout`.
    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput, RuntimeError>;
    async fn logs(
        &self,
        id: &str,
        options: &LogOptions,
    ) -> Result<BoxStream<'static, Result<Vec<u8>, RuntimeError>>, RuntimeError>;
    /// The gateway of the network sandboxes join (`None`: the engine's default bridge), if the
    /// engine has one: the host's address on that network. An in-memory runtime has none.
    async fn network_gateway(&self, _network: Option<&str>) -> Result<Option<std::net::IpAddr>, RuntimeError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_output_stops_at_the_limit_and_says_so() {
        let mut output = Vec::new();
        let chunk = vec![b'x'; 1 << 20];
        let mut taken = 0;
        while collect_exec_output(&mut output, &chunk) {
            taken += 1;
            assert!(taken <= 16, "more than 16 MiB taken");
        }
        assert_eq!(taken, 16);
        assert!(output.len() <= MAX_EXEC_OUTPUT + 64);
        assert!(output.ends_with(b"\n[skiff: output truncated at 16 MiB]\n"));
    }
}
