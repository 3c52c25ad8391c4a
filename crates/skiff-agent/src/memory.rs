//! A container runtime in memory: containers are records whose state tests (and simulated nodes)
//! drive. Nothing runs. [`MemoryProber`] answers TCP and HTTP probes the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use futures::stream::BoxStream;

use crate::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, ExecOutput, LogOptions, RuntimeError, RuntimeInfo,
};

#[derive(Default)]
struct State {
    next_id: u64,
    containers: BTreeMap<String, (ContainerSpec, ContainerInfo)>,
    images: BTreeSet<String>,
    /// Every command run by `exec`, in order, so tests can tell which probes ran.
    execs: Vec<Vec<String>>,
}

/// See the module docs. Every image is present unless [`MemoryRuntime::with_images`] says otherwise.
#[derive(Default)]
pub struct MemoryRuntime {
    state: Mutex<State>,
    /// `None`: every image is present.
    only_images: Option<BTreeSet<String>>,
    /// `Some`: each stop returns only once this many stops are in flight together (a test that
    /// containers are stopped in parallel; stopped one after another, they would wait for ever).
    stops_together: Option<tokio::sync::Barrier>,
}

impl MemoryRuntime {
    pub fn new() -> Self {
        Self::default()
    }

    /// A runtime on which only `images` are present.
    pub fn with_images(images: &[&str]) -> Self {
        Self { only_images: Some(images.iter().map(|s| s.to_string()).collect()), ..Self::default() }
    }

    /// A runtime whose stops return only when `n` of them are in flight at once.
    pub fn with_stops_together(n: usize) -> Self {
        Self { stops_together: Some(tokio::sync::Barrier::new(n)), ..Self::default() }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, RuntimeError> {
        self.state.lock().map_err(|_| RuntimeError::Engine("memory runtime lock poisoned".into()))
    }

    /// Makes a running container exit with `exit_code` (a crash, for tests).
    pub fn exit(&self, id: &str, exit_code: i64) -> Result<(), RuntimeError> {
        let mut state = self.lock()?;
        let (_, info) = state.containers.get_mut(id).ok_or_else(|| RuntimeError::NotFound(id.into()))?;
        let started_at = match &info.state {
            ContainerState::Running { started_at } => started_at.clone(),
            _ => None,
        };
        info.state = ContainerState::Exited { exit_code, oom_killed: false, started_at, finished_at: None };
        Ok(())
    }

    /// Every command `exec` has run so far, in order.
    pub fn execs(&self) -> Vec<Vec<String>> {
        self.lock().map(|s| s.execs.clone()).unwrap_or_default()
    }

    /// How many containers exist.
    pub fn count(&self) -> usize {
        self.lock().map(|s| s.containers.len()).unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for MemoryRuntime {
    async fn info(&self) -> Result<RuntimeInfo, RuntimeError> {
        Ok(RuntimeInfo {
            version: "memory://0".into(),
            cpus: 4,
            memory_bytes: 8 << 30,
            kernel_version: "none".into(),
            os_image: "memory".into(),
            architecture: std::env::consts::ARCH.into(),
        })
    }

    async fn image_present(&self, image: &str) -> Result<bool, RuntimeError> {
        let known = self.lock()?.images.contains(image);
        Ok(known || self.only_images.as_ref().is_none_or(|only| only.contains(image)))
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        if !self.image_present(&spec.image).await? {
            return Err(RuntimeError::ImageNotPresent(spec.image.clone()));
        }
        let mut state = self.lock()?;
        if state.containers.values().any(|(s, _)| s.name == spec.name) {
            return Err(RuntimeError::Engine(format!("the name {:?} is already in use", spec.name)));
        }
        state.next_id += 1;
        let id = format!("mem{:08}", state.next_id);
        let ip = if spec.network_of.is_some() { String::new() } else { format!("10.0.0.{}", state.next_id % 250 + 2) };
        let info = ContainerInfo {
            id: id.clone(),
            name: spec.name.clone(),
            image: spec.image.clone(),
            image_id: format!("sha256:{}", spec.image),
            labels: spec.labels.clone(),
            state: ContainerState::Created,
            ip,
        };
        state.containers.insert(id.clone(), (spec.clone(), info));
        Ok(id)
    }

    async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.lock()?;
        let (_, info) = state.containers.get_mut(id).ok_or_else(|| RuntimeError::NotFound(id.into()))?;
        info.state = ContainerState::Running { started_at: None };
        Ok(())
    }

    async fn stop(&self, id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        if let Some(together) = &self.stops_together {
            together.wait().await;
        }
        let mut state = self.lock()?;
        let (_, info) = state.containers.get_mut(id).ok_or_else(|| RuntimeError::NotFound(id.into()))?;
        if matches!(info.state, ContainerState::Running { .. }) {
            info.state =
                ContainerState::Exited { exit_code: 143, oom_killed: false, started_at: None, finished_at: None };
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        self.lock()?.containers.remove(id).map(|_| ()).ok_or_else(|| RuntimeError::NotFound(id.into()))
    }

    async fn inspect(&self, id: &str) -> Result<ContainerInfo, RuntimeError> {
        let state = self.lock()?;
        state.containers.get(id).map(|(_, info)| info.clone()).ok_or_else(|| RuntimeError::NotFound(id.into()))
    }

    async fn list(&self, labels: &BTreeMap<String, String>) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let state = self.lock()?;
        Ok(state
            .containers
            .values()
            .filter(|(_, info)| labels.iter().all(|(k, v)| info.labels.get(k) == Some(v)))
            .map(|(_, info)| info.clone())
            .collect())
    }

    async fn exec(&self, id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput, RuntimeError> {
        let info = self.inspect(id).await?;
        if !matches!(info.state, ContainerState::Running { .. }) {
            return Err(RuntimeError::Engine(format!("container {id} is not running")));
        }
        self.lock()?.execs.push(command.to_vec());
        // `sleep N` takes N seconds, and times out as a real one would.
        if let (Some("sleep"), Some(secs)) = (command.first().map(String::as_str), command.get(1)) {
            let wanted = Duration::from_secs_f64(secs.parse::<f64>().unwrap_or(0.0).max(0.0));
            if wanted > timeout {
                tokio::time::sleep(timeout).await;
                return Err(RuntimeError::TimedOut(format!(
                    "command {command:?} ran and did not finish within {timeout:?}"
                )));
            }
            tokio::time::sleep(wanted).await;
        }
        // `false` fails, like the real one; anything else succeeds and echoes itself.
        let exit_code = i64::from(command.first().map(String::as_str) == Some("false"));
        Ok(ExecOutput { exit_code, output: command.join(" ").into_bytes() })
    }

    async fn logs(
        &self,
        id: &str,
        _options: &LogOptions,
    ) -> Result<BoxStream<'static, Result<Vec<u8>, RuntimeError>>, RuntimeError> {
        self.inspect(id).await?;
        Ok(Box::pin(futures::stream::empty()))
    }
}

/// TCP and HTTP probes answered from a table: `(host, port)` to the HTTP status code an HTTP
/// probe gets (a TCP probe succeeds when the pair is there). Everything else gets the default
/// answer: none, or 200 for a prober made [`MemoryProber::healthy`].
#[derive(Default)]
pub struct MemoryProber {
    answers: Mutex<BTreeMap<(String, u16), u16>>,
    otherwise: Option<u16>,
}

impl MemoryProber {
    /// Nothing answers until told to.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything answers 200 unless told otherwise (simulated nodes whose pods are healthy).
    pub fn healthy() -> Self {
        Self { otherwise: Some(200), ..Self::default() }
    }

    /// `host:port` answers with `code` from now on.
    pub fn answer(&self, host: &str, port: u16, code: u16) {
        if let Ok(mut a) = self.answers.lock() {
            a.insert((host.to_string(), port), code);
        }
    }

    /// `host:port` no longer answers.
    pub fn silence(&self, host: &str, port: u16) {
        if let Ok(mut a) = self.answers.lock() {
            a.remove(&(host.to_string(), port));
        }
    }

    fn code(&self, host: &str, port: u16) -> Option<u16> {
        self.answers.lock().ok()?.get(&(host.to_string(), port)).copied().or(self.otherwise)
    }
}

#[async_trait::async_trait]
impl crate::probe::Prober for MemoryProber {
    async fn tcp(&self, host: &str, port: u16, _timeout: Duration) -> bool {
        self.code(host, port).is_some()
    }

    async fn http_get(
        &self,
        host: &str,
        port: u16,
        _get: &skiff_api::kinds::pod::HttpGetAction,
        _timeout: Duration,
    ) -> Option<u16> {
        self.code(host, port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn containers_are_created_listed_by_label_and_removed() {
        let rt = MemoryRuntime::with_images(&["web:1"]);
        let mut spec = ContainerSpec { name: "a".into(), image: "web:1".into(), ..Default::default() };
        spec.labels.insert("skiff.node".into(), "n1".into());
        let id = rt.create(&spec).await.expect("create");
        rt.start(&id).await.expect("start");
        let only_n1 = BTreeMap::from([("skiff.node".to_string(), "n1".to_string())]);
        assert_eq!(rt.list(&only_n1).await.expect("list").len(), 1);
        let only_n2 = BTreeMap::from([("skiff.node".to_string(), "n2".to_string())]);
        assert!(rt.list(&only_n2).await.expect("list").is_empty());
        rt.exit(&id, 1).expect("exit");
        assert!(matches!(rt.inspect(&id).await.expect("inspect").state, ContainerState::Exited { exit_code: 1, .. }));
        let missing = ContainerSpec { name: "b".into(), image: "nginx:1".into(), ..Default::default() };
        assert!(matches!(rt.create(&missing).await, Err(RuntimeError::ImageNotPresent(_))));
        rt.remove(&id).await.expect("remove");
        assert_eq!(rt.count(), 0);
    }
}
