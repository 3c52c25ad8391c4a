//! Three-member clusters of Skiff and of etcd as local processes on loopback ports, killed on drop
//! (also when a benchmark fails). A Skiff cluster's members share a bootstrap secret; the first
//! one makes the cluster CA and the admin credentials every channel to the members presents. An
//! etcd cluster gets a CA and certificates made by the harness in its directory, and serves clients
//! and peers over TLS with client certificates required (unless [`Binaries::etcd_tls`] is off).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use tonic::transport::Channel;

use crate::access::{EtcdAccess, EtcdPki, SkiffAccess};
use crate::system::{Dialer, System};

/// How long the member that bootstraps a Skiff cluster may take to write the admin credentials.
const CREDENTIALS_WAIT: Duration = Duration::from_secs(30);

pub struct Binaries {
    pub skiff: PathBuf,
    pub etcd: PathBuf,
    /// etcd with client and peer TLS (the default), as Skiff always runs; off: plain HTTP.
    pub etcd_tls: bool,
}

/// `n` distinct free ports on 127.0.0.1: all are held open until each has been picked, so the
/// system cannot hand out one port twice (a port freed at once may come back on the next bind).
fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let held = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>()?;
    Ok(held.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<Result<Vec<_>, _>>()?)
}

/// One member process and how to start it again; killed when dropped.
struct Member {
    command: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.command[0]))?;
        self.child = Some(child);
        Ok(())
    }

    /// `kill -9`.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last lines of every member's log (the directory is removed with the cluster).
fn log_tails(members: &[Member]) -> String {
    let mut out = String::new();
    for m in members {
        let text = std::fs::read_to_string(&m.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("--- last lines of {}\n", m.log.display()));
        for line in &lines[lines.len().saturating_sub(15)..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A running three-member cluster.
pub struct Cluster {
    /// How channels reach the members: which system, and for Skiff the admin credentials.
    pub dialer: Dialer,
    /// Client endpoints, `127.0.0.1:port`, by member index.
    pub endpoints: Vec<String>,
    /// Killed on drop, before the directory goes (fields drop in order).
    members: Vec<Member>,
    /// Configs, data and logs; removed on drop.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a three-member Skiff cluster with default settings (agents off: the store is measured).
    pub async fn skiff(bins: &Binaries) -> anyhow::Result<Self> {
        Self::skiff_with(bins, "# The store is measured, not pods.\n[agent]\nruntime = \"none\"\n").await
    }

    /// Starts a three-member Skiff cluster with `agent` as each member's `[agent]` TOML section.
    pub async fn skiff_with(bins: &Binaries, agent: &str) -> anyhow::Result<Self> {
        Self::skiff_of(bins, 3, agent).await
    }

    /// Starts a Skiff cluster of `size` members with `sections` (TOML: `[agent]`, `[services]`...)
    /// in each member's config. Without a `[services]` section the members run no service proxy:
    /// several members on one host would contend for the same addresses, and a benchmark of
    /// something else must not make the host's 10.96.0.0/16 local.
    pub async fn skiff_of(bins: &Binaries, size: usize, sections: &str) -> anyhow::Result<Self> {
        let agent = if sections.contains("[services]") {
            sections.to_string()
        } else {
            format!("{sections}\n[services]\nproxy = false\n")
        };
        // The members of a new cluster prove to each other that they were given this secret
        // before the first one signs the others' certificates.
        let secret = skiff_tls::token::new_secret().map_err(anyhow::Error::msg)?;
        let security = format!("\n[security]\njoin_token = \"{secret}\"\n");
        let dir = tempfile::tempdir()?;
        let data_dir = |i: usize| dir.path().join(format!("data{}", i + 1));
        let ports = free_ports(size)?;
        let initial: String = (0..size)
            .map(|i| format!("  {{ id = {}, name = \"node{}\", addr = \"127.0.0.1:{}\" }},\n", i + 1, i + 1, ports[i]))
            .collect();
        let mut members = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let config = dir.path().join(format!("node{}.toml", i + 1));
            let text = format!(
                "id = {}\nname = \"node{}\"\nlisten = \"127.0.0.1:{}\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ninitial_members = [\n{initial}]\n\n{agent}{security}",
                i + 1,
                i + 1,
                port,
                data_dir(i).display()
            );
            std::fs::write(&config, text)?;
            members.push(Member {
                command: vec![
                    bins.skiff.display().to_string(),
                    "node".into(),
                    "--config".into(),
                    config.display().to_string(),
                ],
                log: dir.path().join(format!("node{}.log", i + 1)),
                child: None,
            });
        }
        let endpoints = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        for m in &mut members {
            m.start()?;
        }
        // Member 1, the lowest id, bootstraps the cluster and writes the admin credentials.
        let admin = data_dir(0).join("admin.conf");
        let access = SkiffAccess::wait_for(admin, CREDENTIALS_WAIT)
            .await
            .map_err(|e| anyhow::anyhow!("skiff: {e:#}\n{}", log_tails(&members)))?;
        Self::ready(Dialer::Skiff(access), endpoints, members, dir).await
    }

    /// Starts a three-member etcd cluster with default settings (and TLS, see [`Binaries::etcd_tls`]).
    pub async fn etcd(bins: &Binaries) -> anyhow::Result<Self> {
        Self::etcd_with(bins, &[]).await
    }

    /// Starts a three-member etcd cluster with `flags` added to each member's command line.
    pub async fn etcd_with(bins: &Binaries, flags: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ports = free_ports(6)?;
        let (client, peer) = ports.split_at(3);
        let pki = if bins.etcd_tls { Some(EtcdPki::generate(dir.path(), 3)?) } else { None };
        let access = match &pki {
            Some(pki) => EtcdAccess::tls(pki),
            None => EtcdAccess::plain(),
        };
        let scheme = access.scheme();
        let initial: Vec<String> = (0..3).map(|i| format!("e{}={scheme}://127.0.0.1:{}", i + 1, peer[i])).collect();
        let initial = initial.join(",");
        let mut members = Vec::new();
        for i in 0..3 {
            let data = dir.path().join(format!("e{}", i + 1));
            let tls = pki.as_ref().map(|p| p.flags(i)).unwrap_or_default();
            members.push(Member {
                command: vec![
                    bins.etcd.display().to_string(),
                    format!("--name=e{}", i + 1),
                    format!("--data-dir={}", data.display()),
                    format!("--listen-client-urls={scheme}://127.0.0.1:{}", client[i]),
                    format!("--advertise-client-urls={scheme}://127.0.0.1:{}", client[i]),
                    format!("--listen-peer-urls={scheme}://127.0.0.1:{}", peer[i]),
                    format!("--initial-advertise-peer-urls={scheme}://127.0.0.1:{}", peer[i]),
                    format!("--initial-cluster={initial}"),
                    "--initial-cluster-state=new".into(),
                ]
                .into_iter()
                .chain(tls)
                .chain(flags.iter().map(|f| f.to_string()))
                .collect(),
                log: dir.path().join(format!("e{}.log", i + 1)),
                child: None,
            });
        }
        let endpoints = client.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        for m in &mut members {
            m.start()?;
        }
        Self::ready(Dialer::Etcd(access), endpoints, members, dir).await
    }

    /// The cluster of the started `members`, once they have elected a leader.
    async fn ready(
        dialer: Dialer,
        endpoints: Vec<String>,
        members: Vec<Member>,
        dir: tempfile::TempDir,
    ) -> anyhow::Result<Self> {
        let cluster = Cluster { dialer, endpoints, members, _dir: dir };
        cluster.wait_leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    pub fn system(&self) -> System {
        self.dialer.system()
    }

    /// A connected channel to member `i`, failing fast when it is down.
    pub async fn connect(&self, i: usize) -> anyhow::Result<Channel> {
        self.dialer.connect(&self.endpoints[i]).await
    }

    /// `(leader index, term)` as the leader reports them, if the members agree on one.
    pub async fn status(&self) -> Option<(usize, u64)> {
        self.dialer.status(&self.endpoints).await
    }

    /// The admin credentials of a Skiff cluster (the benchmarks of Skiff alone need them).
    pub fn skiff_access(&self) -> anyhow::Result<&SkiffAccess> {
        match &self.dialer {
            Dialer::Skiff(access) => Ok(access),
            Dialer::Etcd(_) => anyhow::bail!("{} is not a Skiff cluster", self.system().name()),
        }
    }

    /// The index of the member that leads, once every running member agrees.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(leader) = self.dialer.leader(&self.endpoints).await {
                return Ok(leader);
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("{}: no leader within {timeout:?}\n{}", self.system().name(), self.log_tails());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every member answers, all agree on one leader, and every member has applied at
    /// least what the leader had in its log when they first agreed (writes may go on meanwhile).
    pub async fn wait_caught_up(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut target: Option<(u64, u64)> = None; // (leader id, its last log index then)
        loop {
            let states = self.dialer.members(&self.endpoints).await;
            let all: Option<Vec<_>> = states.into_iter().collect();
            if let Some(all) = all {
                let leader = all.iter().find(|m| m.is_leader).map(|m| (m.leader, m.last_index));
                if let Some((id, last)) = leader {
                    if all.iter().all(|m| m.leader == id) {
                        let (target_id, index) = *target.get_or_insert((id, last));
                        if target_id != id {
                            target = Some((id, last));
                        } else if all.iter().all(|m| m.applied >= index) {
                            return Ok(());
                        }
                    }
                }
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "{}: members not caught up within {timeout:?}\n{}",
                    self.system().name(),
                    self.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines of every member's log (the directory is removed with the cluster).
    pub fn log_tails(&self) -> String {
        log_tails(&self.members)
    }

    /// Process ids of the running members.
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().filter_map(|m| m.child.as_ref().map(|c| c.id())).collect()
    }

    /// `kill -9` of member `i`.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Starts member `i` again from its data.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.members[i].start()
    }
}
