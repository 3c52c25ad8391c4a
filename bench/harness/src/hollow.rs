//! Simulated nodes: "hollow" nodes, as Kubernetes' kubemark calls them (Nomad's C1M ran simulated
//! clients the same way). Each is a Node object registered through the resource API and kept alive
//! by the benchmark, which renews it with the leader once a second through `Resources/RenewNode`
//! over a connection of its own to one of the members, as a member's agent renews its node. No
//! agent runs their pods: the control plane is what is measured.
//!
//! For the cost of liveness, the nodes can also write their status every second with a new
//! `lastHeartbeatTime`, as Kubernetes' kubelets reported liveness before Leases (1.14).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use skiff_proto::api::resources_client::ResourcesClient;
use skiff_proto::api::{ObjectRequest, RenewNodeRequest};
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::access::SkiffAccess;

/// What every simulated node offers: a large machine, with the kubelet's default pod limit.
pub const CPU: &str = "32";
pub const MEMORY: &str = "128Gi";
pub const MAX_PODS: u32 = 110;

/// A second's renewals are spread over this many slots of 10 ms, as independent agents' would be.
const SLOTS: usize = 100;
/// A call not answered by then counts as failed (renewals are sent every second regardless).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Registrations and capacity reports in flight at once.
const IN_FLIGHT: usize = 64;

/// Calls of one sort: how many succeeded and failed, and why they failed.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    why: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn record<T>(&self, outcome: Result<Result<T, tonic::Status>, tokio::time::error::Elapsed>) {
        let why = match outcome {
            Ok(Ok(_)) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Err(status)) => format!("{:?}: {}", status.code(), status.message()),
            Err(_) => format!("no answer within {} s", CALL_TIMEOUT.as_secs()),
        };
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut w) = self.why.lock() {
            *w.entry(why).or_default() += 1;
        }
    }
}

/// The calls the nodes made so far (snapshots subtract).
#[derive(Debug, Clone, Copy, Default)]
pub struct Calls {
    pub renewals: u64,
    pub renewals_failed: u64,
    pub status_writes: u64,
    pub status_writes_failed: u64,
}

impl std::ops::Sub for Calls {
    type Output = Calls;
    fn sub(self, before: Calls) -> Calls {
        Calls {
            renewals: self.renewals - before.renewals,
            renewals_failed: self.renewals_failed - before.renewals_failed,
            status_writes: self.status_writes - before.status_writes,
            status_writes_failed: self.status_writes_failed - before.status_writes_failed,
        }
    }
}

struct Shared {
    names: Vec<String>,
    /// One connection per node, to member `i % 3`: the renewals reach the leader as they would
    /// from agents on every member (followers forward them).
    channels: Vec<Channel>,
    /// Whether each node is registered: only those are renewed (the leader refuses the others).
    registered: Vec<AtomicBool>,
    /// Whether the nodes also write their status every second (the comparison).
    status_writes: AtomicBool,
    /// The pods each node says it can take (`allocatable.pods`): 0 holds pods from the scheduler.
    pods: AtomicU32,
    /// When the nodes became Ready (`lastTransitionTime` of their Ready condition).
    since: String,
    renewals: Tally,
    writes: Tally,
}

impl Shared {
    fn client(&self, i: usize) -> ResourcesClient<Channel> {
        ResourcesClient::new(self.channels[i].clone())
    }

    async fn renew(&self, i: usize) -> Result<(), tonic::Status> {
        self.client(i).renew_node(RenewNodeRequest { node: self.names[i].clone() }).await.map(|_| ())
    }

    async fn write_status(&self, i: usize) -> Result<(), tonic::Status> {
        let object = status_json(&self.names[i], self.pods.load(Ordering::Relaxed), &self.since, i);
        self.client(i).update_status(ObjectRequest { object }).await.map(|_| ())
    }

    /// Creates node `i`, renews it once (so the leader knows it is alive before it looks) and
    /// writes its status (capacity, Ready), as an agent registers its node.
    async fn register(&self, i: usize) -> anyhow::Result<()> {
        let name = &self.names[i];
        let create = self.client(i).create(ObjectRequest { object: node_json(name) }).await;
        match create {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::AlreadyExists => {}
            Err(s) => anyhow::bail!("registering node {name}: create: {}", s.message()),
        }
        self.renew(i).await.map_err(|s| anyhow::anyhow!("registering node {name}: renew: {}", s.message()))?;
        self.registered[i].store(true, Ordering::Relaxed);
        self.write_status(i).await.map_err(|s| anyhow::anyhow!("registering node {name}: status: {}", s.message()))
    }
}

/// The simulated nodes and the task that renews them; dropping them stops the renewals.
pub struct HollowNodes {
    shared: Arc<Shared>,
    beat: tokio::task::JoinHandle<()>,
}

impl Drop for HollowNodes {
    fn drop(&mut self) {
        self.beat.abort();
    }
}

impl HollowNodes {
    /// `count` nodes `sim-0001`... spread over `endpoints` (reached with `access`), each offering
    /// `pods` pods once registered. Renewals start at once for every node as soon as it is
    /// registered.
    pub fn new(access: &SkiffAccess, endpoints: &[String], count: usize, pods: u32) -> anyhow::Result<Self> {
        anyhow::ensure!(!endpoints.is_empty(), "no members to register nodes with");
        let names: Vec<String> = (1..=count).map(|i| format!("sim-{i:04}")).collect();
        let channels =
            (0..count).map(|i| access.lazy(&endpoints[i % endpoints.len()])).collect::<anyhow::Result<_>>()?;
        let shared = Arc::new(Shared {
            names,
            channels,
            registered: (0..count).map(|_| AtomicBool::new(false)).collect(),
            status_writes: AtomicBool::new(false),
            pods: AtomicU32::new(pods),
            since: rfc3339(SystemTime::now()),
            renewals: Tally::default(),
            writes: Tally::default(),
        });
        let beat = tokio::spawn(beat(shared.clone()));
        Ok(HollowNodes { shared, beat })
    }

    pub fn len(&self) -> usize {
        self.shared.names.len()
    }

    /// Registers every node ([`IN_FLIGHT`] at a time); fails on the first node that cannot be.
    pub async fn register(&self) -> anyhow::Result<()> {
        self.for_each(|shared, i| async move { shared.register(i).await }).await
    }

    /// Every node reports that it takes `pods` pods (a status write each, all at once, through
    /// each node's own member); returns when all are acknowledged.
    pub async fn report_pods(&self, pods: u32) -> anyhow::Result<()> {
        self.shared.pods.store(pods, Ordering::Relaxed);
        self.for_each(|shared, i| async move {
            shared
                .write_status(i)
                .await
                .map_err(|s| anyhow::anyhow!("node {}: status write: {}", shared.names[i], s.message()))
        })
        .await
    }

    async fn for_each<F, Fut>(&self, f: F) -> anyhow::Result<()>
    where
        F: Fn(Arc<Shared>, usize) -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let gate = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        let mut tasks = JoinSet::new();
        for i in 0..self.len() {
            let call = f(self.shared.clone(), i);
            let gate = gate.clone();
            tasks.spawn(async move {
                let _permit = gate.acquire_owned().await?;
                call.await
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        Ok(())
    }

    /// Whether every node also writes its status every second, besides renewing.
    pub fn set_status_writes(&self, on: bool) {
        self.shared.status_writes.store(on, Ordering::Relaxed);
    }

    pub fn calls(&self) -> Calls {
        let s = &self.shared;
        Calls {
            renewals: s.renewals.ok.load(Ordering::Relaxed) + s.renewals.failed.load(Ordering::Relaxed),
            renewals_failed: s.renewals.failed.load(Ordering::Relaxed),
            status_writes: s.writes.ok.load(Ordering::Relaxed) + s.writes.failed.load(Ordering::Relaxed),
            status_writes_failed: s.writes.failed.load(Ordering::Relaxed),
        }
    }

    /// Why calls failed, the most frequent first: `(what, why, how many)`.
    pub fn failures(&self) -> Vec<(&'static str, String, u64)> {
        let mut out = Vec::new();
        for (what, tally) in [("renewal", &self.shared.renewals), ("status write", &self.shared.writes)] {
            if let Ok(why) = tally.why.lock() {
                out.extend(why.iter().map(|(w, n)| (what, w.clone(), *n)));
            }
        }
        out.sort_by_key(|f| std::cmp::Reverse(f.2));
        out
    }
}

/// Renews every registered node once a second, each in its own 10 ms slot, and writes its status
/// too while asked to. Each call runs on its own: a slow answer delays no other node.
async fn beat(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / SLOTS as u32);
    // A late tick (the load generator shares the cores) is made up for: a node renews every second.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for slot in (0..SLOTS).cycle() {
        tick.tick().await;
        let writes = shared.status_writes.load(Ordering::Relaxed);
        for i in (slot..shared.names.len()).step_by(SLOTS) {
            if !shared.registered[i].load(Ordering::Relaxed) {
                continue;
            }
            let s = shared.clone();
            tokio::spawn(async move {
                let outcome = tokio::time::timeout(CALL_TIMEOUT, s.renew(i)).await;
                s.renewals.record(outcome);
            });
            if writes {
                let s = shared.clone();
                tokio::spawn(async move {
                    let outcome = tokio::time::timeout(CALL_TIMEOUT, s.write_status(i)).await;
                    s.writes.record(outcome);
                });
            }
        }
    }
}

fn node_json(name: &str) -> Vec<u8> {
    format!(
        r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}","labels":{{"kubernetes.io/hostname":"{name}","skiff.bench/simulated":"true"}}}}}}"#
    )
    .into_bytes()
}

/// The status a node reports: capacity, allocatable (with `pods`), Ready with a heartbeat of now.
fn status_json(name: &str, pods: u32, since: &str, i: usize) -> Vec<u8> {
    let now = rfc3339(SystemTime::now());
    let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    format!(
        concat!(
            r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"{name}"}},"status":{{"#,
            r#""capacity":{{"cpu":"{cpu}","memory":"{memory}","pods":"{max}"}},"#,
            r#""allocatable":{{"cpu":"{cpu}","memory":"{memory}","pods":"{pods}"}},"#,
            r#""conditions":[{{"type":"Ready","status":"True","lastHeartbeatTime":"{now}","lastTransitionTime":"{since}","#,
            r#""reason":"KubeletReady","message":"a node simulated by skiff-bench"}}],"#,
            r#""addresses":[{{"type":"InternalIP","address":"{ip}"}}],"#,
            r#""nodeInfo":{{"machineID":"","kernelVersion":"6.1.0","osImage":"simulated","containerRuntimeVersion":"none","kubeletVersion":"skiff-bench","operatingSystem":"linux","architecture":"amd64"}}}}}}"#
        ),
        name = name,
        pods = pods,
        now = now,
        since = since,
        ip = ip,
        cpu = CPU,
        memory = MEMORY,
        max = MAX_PODS,
    )
    .into_bytes()
}

/// `t` as RFC 3339 in UTC, to the second (`2026-11-30T03:37:44Z`).
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest / 60 % 60, rest % 60)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], from March
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_rfc3339_utc() {
        let at = |s: u64| rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_800_000_000), "2027-01-15T08:00:00Z");
        assert_eq!(at(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn a_node_reports_its_pods_and_a_ready_heartbeat() {
        let v: serde_json::Value =
            serde_json::from_slice(&status_json("sim-0001", 0, "2026-11-30T00:00:00Z", 258)).expect("json");
        assert_eq!(v["status"]["allocatable"]["pods"], "0");
        assert_eq!(v["status"]["capacity"]["pods"], "110");
        assert_eq!(v["status"]["conditions"][0]["type"], "Ready");
        assert_eq!(v["status"]["conditions"][0]["status"], "True");
        assert_eq!(v["status"]["addresses"][0]["address"], "10.0.1.2");
        let node: serde_json::Value = serde_json::from_slice(&node_json("sim-0001")).expect("json");
        assert_eq!(node["metadata"]["name"], "sim-0001");
    }
}
