//! The docker-compose cluster end to end, driven from the host like a user would: `docker-compose
//! up`, writes through the CLI, `docker kill` of the leader's container, writes go on, `docker-compose
//! start` brings it back, and all three members converge on the same applied index and data; then a
//! pod bound to one member runs on the compose network, serves HTTP that the test reaches from the
//! host and through `skiff exec` via another member, and is deleted.
//!
//! Runs in the `docker` nextest group (one at a time, .config/nextest.toml). It uses its own compose
//! project name and free host ports, so a cluster left running on the engine does not collide, and it
//! labels every container, volume and network `skiff.test` (tests/compose.test.yml), so whatever a
//! killed run leaves behind can be found (scripts/test.sh removes it). The node image comes from
//! scripts/build-node-image.sh: scripts/test.sh builds it first; this test builds it only if it is
//! missing (and the pod images with scripts/build-test-images.sh). The members' configs are
//! cluster-configs/ with the test project's network and container labels (`SKIFF_CONFIG_DIR`), so
//! the pods carry `skiff.test` and are removed with the project. Every wait polls against a
//! deadline, every command has a time limit, and the whole cluster part of the test is bounded by
//! `BUDGET`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const IMAGE: &str = "skiff-node:dev";
/// Images the test pod needs (scripts/build-test-images.sh).
const POD_IMAGES: [&str; 2] = ["skiff-test/busybox:1", "skiff-pause:1"];
/// Everything from `docker-compose up` to the last check (the image build is not counted).
const BUDGET: Duration = Duration::from_secs(240);
/// Keys written before and after the kill.
const KEYS: usize = 20;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What a finished command printed; `code` is `None` if it was killed at its time limit.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `cmd` with no stdin, killing it after `limit`. `Err` only if it could not be started.
fn run(cmd: &mut Command, limit: Duration) -> Result<Ran, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + limit;
    let code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let mut stderr = stderr.join().unwrap_or_default();
    if code.is_none() {
        stderr.push_str(&format!("\n(killed after {limit:?}: {what})"));
    }
    Ok(Ran { code, stdout, stderr })
}

/// Polls `check` until it returns `Some`, failing with `what` after `timeout` or at `end`.
fn eventually<T>(what: &str, timeout: Duration, end: Instant, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = (Instant::now() + timeout).min(end);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Six distinct free ports (the members' API and metrics): all listeners are held until each has
/// its port.
fn free_ports() -> ([u16; 3], [u16; 3]) {
    let listeners: Vec<std::net::TcpListener> =
        (0..6).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0")).collect();
    let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().expect("local addr").port()).collect();
    ([ports[0], ports[1], ports[2]], [ports[3], ports[4], ports[5]])
}

fn ensure_image() {
    let inspect = run(Command::new("docker").args(["image", "inspect", IMAGE]), Duration::from_secs(30))
        .expect("the docker CLI is needed for this test");
    if inspect.ok() {
        return;
    }
    eprintln!("{IMAGE} is missing: running scripts/build-node-image.sh");
    let built = run(
        Command::new("bash").arg(root().join("scripts/build-node-image.sh")).current_dir(root()),
        Duration::from_secs(1800),
    )
    .expect("bash");
    assert!(built.ok(), "building the node image failed:\n{}\n{}", built.stdout, built.stderr);
}

fn ensure_pod_images() {
    let missing = POD_IMAGES.iter().any(|image| {
        let inspect = run(Command::new("docker").args(["image", "inspect", image]), Duration::from_secs(30));
        !inspect.is_ok_and(|r| r.ok())
    });
    if !missing {
        return;
    }
    eprintln!("a pod image is missing: running scripts/build-test-images.sh");
    let built = run(
        Command::new("bash").arg(root().join("scripts/build-test-images.sh")).current_dir(root()),
        Duration::from_secs(600),
    )
    .expect("bash");
    assert!(built.ok(), "building the test images failed:\n{}\n{}", built.stdout, built.stderr);
}

/// The member whose Services take the kernel data path in this test; the others keep the default
/// (the userspace proxy), so one cluster shows both.
const NFTABLES_MEMBER: &str = "node3";

/// cluster-configs/node1..3.toml for project `name`: pods join the project's own network and carry
/// the test labels (`skiff.test`, and `skiff.test.run` = the project, which clean-up looks for);
/// [`NFTABLES_MEMBER`] serves Services with `data_path = "nftables"`.
fn test_configs(dir: &std::path::Path, name: &str) {
    for n in 1..=3 {
        let file = format!("node{n}.toml");
        let text = std::fs::read_to_string(root().join("cluster-configs").join(&file)).expect("cluster config");
        assert!(text.contains("network = \"skiff_default\""), "{file} names the compose network");
        assert!(!text.contains("[services]"), "{file} leaves [services] at its defaults");
        let mut text = text.replace("network = \"skiff_default\"", &format!("network = \"{name}_default\""));
        if format!("node{n}") == NFTABLES_MEMBER {
            text += "\n[services]\ndata_path = \"nftables\"\n";
        }
        let labels =
            format!("\n[agent.container_labels]\n\"skiff.test\" = \"compose\"\n\"skiff.test.run\" = \"{name}\"\n");
        std::fs::write(dir.join(&file), text + &labels).expect("write test config");
    }
}

/// Removes every container labelled `skiff.test.run=<run>` (the pods the members started).
fn remove_pods_of(run: &str) {
    let listed = run_docker(&["ps", "-aq", "--filter", &format!("label=skiff.test.run={run}")]);
    let ids: Vec<&str> = listed.split_whitespace().collect();
    if !ids.is_empty() {
        let mut args = vec!["rm", "-f"];
        args.extend(ids);
        run_docker(&args);
    }
}

/// `docker ARGS`' standard output ("" if it failed).
fn run_docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args), Duration::from_secs(60)).map(|r| r.stdout).unwrap_or_default()
}

/// A compose project of this test; its pods are removed and `down -v` runs when it is dropped, also
/// when the test fails.
struct Project {
    name: String,
    ports: [u16; 3],
    /// Where each member's `/metrics` is published.
    metrics_ports: [u16; 3],
    /// The members' configs (`SKIFF_CONFIG_DIR`).
    configs: tempfile::TempDir,
    /// The bootstrap secret the members share (`SKIFF_JOIN_TOKEN`).
    token: String,
    /// Node1's admin credentials, copied to the host (see [`Project::fetch_credentials`]).
    home: tempfile::TempDir,
    down: bool,
}

impl Project {
    fn compose(&self, args: &[&str], limit: Duration) -> Result<Ran, String> {
        run(
            Command::new("docker-compose")
                .current_dir(root())
                .args(["-p", &self.name, "-f", "docker-compose.yml", "-f", "tests/compose.test.yml"])
                .args(args)
                .env("SKIFF_PORT1", self.ports[0].to_string())
                .env("SKIFF_PORT2", self.ports[1].to_string())
                .env("SKIFF_PORT3", self.ports[2].to_string())
                .env("SKIFF_METRICS_PORT1", self.metrics_ports[0].to_string())
                .env("SKIFF_METRICS_PORT2", self.metrics_ports[1].to_string())
                .env("SKIFF_METRICS_PORT3", self.metrics_ports[2].to_string())
                // Node ports on loopback addresses of their own: a user's cluster may hold 127.0.0.1-3.
                .env("SKIFF_NODE_PORTS1", "127.0.0.21:30000-30009")
                .env("SKIFF_NODE_PORTS2", "127.0.0.22:30000-30009")
                .env("SKIFF_NODE_PORTS3", "127.0.0.23:30000-30009")
                .env("SKIFF_CONFIG_DIR", self.configs.path())
                .env("SKIFF_JOIN_TOKEN", &self.token)
                .env("SKIFF_NETWORK", format!("{}_default", self.name)),
            limit,
        )
    }

    fn compose_ok(&self, args: &[&str]) -> Ran {
        let out = self.compose(args, Duration::from_secs(120)).expect("docker-compose is needed for this test");
        assert!(out.ok(), "docker-compose {args:?} failed:\n{}", out.stderr);
        out
    }

    fn all_members(&self) -> String {
        self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    fn credentials(&self) -> PathBuf {
        self.home.path().join("admin.conf")
    }

    /// Copies the admin credentials node1 wrote at bootstrap to the host, as scripts/cluster-up.sh does.
    fn fetch_credentials(&self, end: Instant) {
        eventually("node1's admin credentials", Duration::from_secs(60), end, || {
            let id = self.container("node1")?;
            let from = format!("{id}:/var/lib/skiff/admin.conf");
            let copied =
                run(Command::new("docker").args(["cp", &from]).arg(self.credentials()), Duration::from_secs(20));
            copied.ok().filter(Ran::ok).and_then(|_| skiff_tls::Credentials::load(&self.credentials()).ok())
        });
    }

    /// The CLI against `members` as the admin, giving up on them after 3 s (so a poll never outlives
    /// its deadline).
    fn skiff(&self, members: &str, args: &[&str]) -> Ran {
        self.skiff_as(&self.credentials(), members, args)
    }

    fn skiff_as(&self, credentials: &std::path::Path, members: &str, args: &[&str]) -> Ran {
        run(
            Command::new(env!("CARGO_BIN_EXE_skiff"))
                .args(["--members", members, "--timeout", "3", "--credentials"])
                .arg(credentials)
                .args(args),
            Duration::from_secs(20),
        )
        .expect("the skiff binary")
    }

    fn status(&self) -> Option<serde_json::Value> {
        let out = self.skiff(&self.all_members(), &["cluster", "status", "-o", "json"]);
        if !out.ok() {
            return None;
        }
        serde_json::from_str(&out.stdout).ok()
    }

    /// The container id of a service (`None` if it has none).
    fn container(&self, service: &str) -> Option<String> {
        let out = self.compose_ok(&["ps", "-q", service]);
        Some(out.stdout.trim().to_string()).filter(|id| !id.is_empty())
    }

    /// `docker-compose down -v --remove-orphans`; `false` if it failed.
    fn down(&mut self) -> bool {
        self.down = true;
        // Pods are the members' containers, not compose's: they go before the network they hold,
        // and after the members have stopped, so that no agent starts one again meanwhile.
        if let Err(e) = self.compose(&["stop", "-t", "5"], Duration::from_secs(120)) {
            eprintln!("{e}");
        }
        remove_pods_of(&self.name);
        match self.compose(&["down", "-v", "--remove-orphans", "-t", "5"], Duration::from_secs(120)) {
            Ok(out) if out.ok() => true,
            Ok(out) => {
                eprintln!("docker-compose down failed:\n{}", out.stderr);
                false
            }
            Err(e) => {
                eprintln!("{e}");
                false
            }
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(logs) = self.compose(&["logs", "--no-color", "--tail", "60"], Duration::from_secs(30)) {
                eprintln!("--- docker-compose logs of {}:\n{}", self.name, logs.stdout);
            }
        }
        if !self.down {
            self.down();
        }
    }
}

/// The leader all three members agree on, when every member answers.
fn agreed_leader(status: &serde_json::Value) -> Option<u64> {
    let leader = status["leaderId"].as_u64().filter(|l| *l > 0)?;
    let members = status["members"].as_array()?;
    let healthy = members.len() == 3
        && members.iter().all(|m| m["error"].as_str() == Some("") && m["leaderId"].as_u64() == Some(leader));
    healthy.then_some(leader)
}

/// The compose service of member `id`: its name in the cluster status (`node1`..`node3`).
fn service_of(status: &serde_json::Value, id: u64) -> String {
    let members = status["members"].as_array().expect("members in the cluster status");
    let member = members.iter().find(|m| m["id"].as_u64() == Some(id)).expect("the leader among the members");
    member["name"].as_str().expect("member name").to_string()
}

#[derive(Debug, PartialEq)]
enum Write {
    Acked,
    /// The CLI exited 3: the write may or may not have been applied.
    Unknown,
}

/// Writes `key` through the CLI, retrying failures (no leader yet, member down) until acknowledged or
/// reported unknown. An unknown outcome is not retried: the key is "maybe written".
fn write(project: &Project, key: &str, value: &str, end: Instant) -> Write {
    eventually(&format!("a write of {key} to be acknowledged"), Duration::from_secs(30), end, || {
        let out = project.skiff(&project.all_members(), &["kv", "put", key, value]);
        match out.code {
            Some(0) => Some(Write::Acked),
            Some(3) => Some(Write::Unknown),
            _ => None,
        }
    })
}

/// Parses `kv list` output (`key<TAB>value` lines).
fn parse_list(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(|line| {
            let (k, v) = line.split_once('\t').unwrap_or_else(|| panic!("kv list line without a tab: {line:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn compose_cluster_survives_docker_kill_of_the_leader_converges_and_runs_a_pod() {
    ensure_image();
    ensure_pod_images();
    let started = Instant::now();
    let end = started + BUDGET;
    let name = format!("skiff-test-{}", std::process::id());
    let configs = tempfile::tempdir().expect("tempdir");
    test_configs(configs.path(), &name);
    let (ports, metrics_ports) = free_ports();
    let token = skiff_tls::token::new_secret().expect("a bootstrap secret");
    let home = tempfile::tempdir().expect("tempdir");
    let mut project = Project { name, ports, metrics_ports, configs, token, home, down: false };
    project.compose_ok(&["up", "-d"]);
    project.fetch_credentials(end);

    let (leader, status) = eventually("a leader and three healthy members", Duration::from_secs(60), end, || {
        let s = project.status()?;
        Some((agreed_leader(&s)?, s))
    });
    eprintln!("leader {leader} after {:?}", started.elapsed());

    // acked: acknowledged writes, which must all be there. maybe: writes of unknown outcome.
    let mut acked = BTreeMap::new();
    let mut maybe = BTreeMap::new();
    let record =
        |acked: &mut BTreeMap<String, String>, maybe: &mut BTreeMap<String, String>, k, v, outcome| match outcome {
            Write::Acked => acked.insert(k, v),
            Write::Unknown => maybe.insert(k, v),
        };
    for i in 0..KEYS {
        let (k, v) = (format!("before/{i:02}"), format!("v{i}"));
        let outcome = write(&project, &k, &v, end);
        record(&mut acked, &mut maybe, k, v, outcome);
    }

    // The cluster is healthy and no member was touched: every write is acknowledged.
    assert_eq!(acked.len(), KEYS, "writes to a healthy cluster are all acknowledged; unknown: {maybe:?}");
    only_credentials_get_in(&project, leader);

    let service = service_of(&status, leader);
    let id = project.container(&service).unwrap_or_else(|| panic!("no container for {service}"));
    let killed = run(Command::new("docker").args(["kill", &id]), Duration::from_secs(30)).expect("docker");
    assert!(killed.ok(), "docker kill {service}: {}", killed.stderr);
    let killed_at = Instant::now();
    eprintln!("killed the leader's container ({service})");

    // Writes go on through the other members once a new leader is elected.
    for i in 0..KEYS {
        let (k, v) = (format!("after/{i:02}"), format!("w{i}"));
        let outcome = write(&project, &k, &v, end);
        if i == 0 {
            eprintln!("first write after the kill: {outcome:?} after {:?}", killed_at.elapsed());
        }
        record(&mut acked, &mut maybe, k, v, outcome);
    }
    let new_leader = eventually("a new leader", Duration::from_secs(30), end, || {
        project.status()?["leaderId"].as_u64().filter(|l| *l > 0 && *l != leader)
    });
    eprintln!("new leader {new_leader}; {} writes acknowledged, {} unknown", acked.len(), maybe.len());
    // Only writes in flight when the leader died may have an unknown outcome.
    assert!(acked.len() >= 2 * KEYS - 2, "{} of {} writes acknowledged; unknown: {maybe:?}", acked.len(), 2 * KEYS);

    // Bring it back: within 30 s every member reports the same applied index and the same data.
    project.compose_ok(&["start", &service]);
    let restarted_at = Instant::now();
    let list = eventually("all members to converge", Duration::from_secs(30), end, || {
        let s = project.status()?;
        let members = s["members"].as_array()?;
        let applied: Vec<u64> = members
            .iter()
            .filter(|m| m["error"].as_str() == Some(""))
            .filter_map(|m| m["appliedIndex"].as_u64())
            .collect();
        if applied.len() != 3 || applied.iter().any(|a| *a == 0 || *a != applied[0]) {
            return None;
        }
        let mut lists = Vec::new();
        for port in project.ports {
            let out = project.skiff(&format!("127.0.0.1:{port}"), &["kv", "list", "--stale"]);
            if !out.ok() {
                return None;
            }
            lists.push(out.stdout);
        }
        lists.iter().all(|l| *l == lists[0]).then(|| lists.swap_remove(0))
    });
    eprintln!("converged {:?} after the restart", restarted_at.elapsed());

    let data = parse_list(&list);
    for (k, v) in &acked {
        assert_eq!(data.get(k), Some(v), "acknowledged key {k} is missing or wrong");
    }
    for (k, v) in &data {
        let expected = acked.get(k).or_else(|| maybe.get(k));
        assert_eq!(expected, Some(v), "key {k}={v} was never written");
    }

    run_a_pod_and_reach_it(&project, end);
    reach_a_service_from_pods_and_the_host(&project, end);

    // Every container of the project carries the test label.
    let ids = project.compose_ok(&["ps", "-q"]).stdout;
    for id in ids.split_whitespace() {
        let label = run(
            Command::new("docker").args(["inspect", "-f", "{{index .Config.Labels \"skiff.test\"}}", id]),
            Duration::from_secs(30),
        )
        .expect("docker");
        assert_eq!(label.stdout.trim(), "compose", "container {id} is labelled skiff.test");
    }

    // scripts/cluster-down.sh leaves nothing of the project behind, its pods included (issue 12,
    // defect 19: it used to leave them running).
    let pods = run_docker(&["ps", "-q", "--filter", &format!("label=skiff.test.run={}", project.name)]);
    assert!(pods.split_whitespace().count() >= 6, "greet's three pods run before the cluster goes: {pods}");
    let down = run(
        Command::new("bash")
            .current_dir(root())
            .args(["scripts/cluster-down.sh", "-v", "-t", "5"])
            .env("COMPOSE_PROJECT_NAME", &project.name)
            .env("COMPOSE_FILE", "docker-compose.yml:tests/compose.test.yml")
            .env("SKIFF_NETWORK", format!("{}_default", project.name))
            .env("SKIFF_CONFIG_DIR", project.configs.path()),
        Duration::from_secs(180),
    )
    .expect("bash");
    assert!(down.ok(), "scripts/cluster-down.sh: {}{}", down.stdout, down.stderr);
    let pods = run_docker(&["ps", "-aq", "--filter", &format!("label=skiff.test.run={}", project.name)]);
    assert!(pods.trim().is_empty(), "pods left running after scripts/cluster-down.sh: {pods}");
    project.down = true;
    let project_label = format!("label=com.docker.compose.project={}", project.name);
    for kind in [&["ps", "-aq"][..], &["volume", "ls", "-q"], &["network", "ls", "-q"]] {
        let out = run(Command::new("docker").args(kind).args(["--filter", &project_label]), Duration::from_secs(30))
            .expect("docker");
        assert!(out.ok() && out.stdout.trim().is_empty(), "docker {kind:?} still lists: {}", out.stdout);
    }
    eprintln!("whole test {:?}", started.elapsed());
}

/// A pod that serves HTTP, bound to node2: Running and Ready (the agent's readiness probe reached
/// it), reached from the host at its pod IP on the compose network, and through `skiff exec` via
/// node1; then deleted, its containers gone.
/// Issue 12 on the compose cluster: without credentials, with read-only credentials, with a forged
/// Raft message from a non-member, with another CA's credentials: refused, and nothing changes.
fn only_credentials_get_in(project: &Project, leader: u64) {
    use skiff_proto::transport::Connector;
    let members = project.all_members();
    let ro = project.home.path().join("auditor.conf");
    let issued =
        project.skiff(&members, &["cluster", "credentials", "--name", "auditor", "-o", &ro.display().to_string()]);
    assert!(issued.ok(), "read-only credentials: {}", issued.stderr);
    let read = project.skiff_as(&ro, &members, &["kv", "get", "before/00"]);
    assert_eq!(read.stdout, "v0\n", "a read-only client reads: {}", read.stderr);
    let write = project.skiff_as(&ro, &members, &["kv", "put", "before/00", "forged"]);
    assert!(!write.ok() && write.stderr.contains("read-only"), "a read-only client cannot write: {}", write.stderr);

    let admin = skiff_tls::Credentials::load(&project.credentials()).expect("admin credentials");
    let auditor = skiff_tls::Credentials::load(&ro).expect("read-only credentials");
    let anonymous = skiff_tls::TlsConnector::anonymous(&admin.ca).expect("anonymous connector");
    let auditor = auditor.connector().expect("read-only connector");
    let addr = format!("127.0.0.1:{}", project.ports[0]);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let put = skiff_proto::api::PutRequest {
            key: "before/00".into(),
            value: b"forged".to_vec(),
            expected_revision: None,
        };
        let channel = anonymous.channel(&addr).expect("channel");
        let err = skiff_proto::api::kv_client::KvClient::new(channel).put(put).await.expect_err("no credentials");
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
        let vote = openraft::raft::VoteRequest::<u64>::new(openraft::Vote::new(1 << 40, 99), None);
        let data = skiff_store::codec::encode(&vote).expect("encode");
        let channel = auditor.channel(&addr).expect("channel");
        let forged = skiff_proto::raft::RaftMessage { data, error: Vec::new() };
        let err =
            skiff_proto::raft::raft_client::RaftClient::new(channel).vote(forged).await.expect_err("not a member");
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        // Another CA's admin: the member refuses the handshake, nothing is sent.
        let other = skiff_tls::ClusterCa::generate("another").expect("a CA");
        let admin = skiff_tls::Subject::Client { name: "admin".into(), role: skiff_tls::Role::Admin };
        let foreign =
            skiff_tls::credentials::issue(&other, &admin, Duration::from_secs(600), Vec::new()).expect("creds");
        let channel = foreign.connector().expect("connector").channel(&addr).expect("channel");
        let put = skiff_proto::api::PutRequest {
            key: "before/00".into(),
            value: b"forged".to_vec(),
            expected_revision: None,
        };
        let err = skiff_proto::api::kv_client::KvClient::new(channel).put(put).await.expect_err("another CA");
        assert!(skiff_proto::transport::is_connect_error(&err), "refused before anything is sent: {err}");
    });
    let kept = project.skiff(&members, &["kv", "get", "before/00"]);
    assert_eq!(kept.stdout, "v0\n", "nothing changed: {}", kept.stderr);
    let status = project.status().expect("the cluster answers");
    assert_eq!(agreed_leader(&status), Some(leader), "the leader is the same: {status}");
}

fn run_a_pod_and_reach_it(project: &Project, end: Instant) {
    let manifest = "apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  nodeName: node2
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: skiff-test/busybox:1
    command: [sh, -c, 'mkdir -p /www && echo \"hello from $(hostname)\" > /www/index.html && exec httpd -f -p 8080 -h /www']
    ports: [{containerPort: 8080}]
    readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
";
    let file = project.configs.path().join("web.yaml");
    std::fs::write(&file, manifest).expect("write pod manifest");
    let members = project.all_members();
    let applied = project.skiff(&members, &["apply", "-f", &file.display().to_string()]);
    assert!(applied.ok(), "apply the pod: {}", applied.stderr);
    let started = Instant::now();
    let pod_ip = eventually("the pod Running and Ready on node2", Duration::from_secs(60), end, || {
        let out = project.skiff(&members, &["get", "pod", "web", "-o", "json"]);
        let pod: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
        let ready =
            pod["status"]["conditions"].as_array()?.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
        (pod["status"]["phase"] == "Running" && ready).then(|| pod["status"]["podIP"].as_str().map(str::to_string))?
    });
    eprintln!("pod web Ready at {pod_ip} after {:?}", started.elapsed());

    // From the host, as a client on the compose network's bridge would.
    let body = eventually("an HTTP answer from the pod", Duration::from_secs(20), end, || http_get(&pod_ip, 8080));
    assert!(body.contains("hello from"), "the pod's page: {body:?}");

    // Through a member that does not run it.
    let node1 = format!("127.0.0.1:{}", project.ports[0]);
    let exec = project.skiff(&node1, &["exec", "web", "--", "wget", "-qO-", "http://127.0.0.1:8080/"]);
    assert!(exec.ok() && exec.stdout.contains("hello from"), "exec via node1: {}{}", exec.stdout, exec.stderr);

    // node2's metrics, from the host: the figures of its Raft member, its API server and its agent.
    let metrics = eventually("node2's metrics", Duration::from_secs(20), end, || {
        http_get_path("127.0.0.1", project.metrics_ports[1], "/metrics")
    });
    for figure in [
        "skiff_raft_term ",
        "skiff_raft_leader ",
        "skiff_raft_is_leader ",
        "skiff_raft_last_log_index ",
        "skiff_raft_applied_index ",
        "skiff_raft_proposals_total ",
        "skiff_raft_proposal_batch_size_bucket",
        "skiff_api_calls_total{call=",
        "skiff_api_call_seconds_bucket{",
        "skiff_api_open_watches ",
        "skiff_node_pods{phase=\"Running\"} 1",
        "skiff_agent_actions_total{action=\"start-container\"}",
    ] {
        assert!(metrics.contains(figure), "{figure} missing from node2's /metrics:\n{metrics}");
    }

    let deleted = project.skiff(&members, &["delete", "pod", "web"]);
    assert!(deleted.ok(), "delete the pod: {}", deleted.stderr);
    eventually("the pod's containers removed", Duration::from_secs(30), end, || {
        run_docker(&["ps", "-aq", "--filter", &format!("label=skiff.test.run={}", project.name)])
            .trim()
            .is_empty()
            .then_some(())
    });
}

/// Ready endpoints of Service `name`.
fn ready_endpoints(project: &Project, members: &str, name: &str) -> Option<usize> {
    let selector = format!("kubernetes.io/service-name={name}");
    let out = project.skiff(members, &["get", "endpointslices", "-l", &selector, "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out.stdout).ok()?;
    let ready = list["items"]
        .as_array()?
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .count();
    Some(ready)
}

/// What `url` answers when fetched from inside `pod` (through `skiff exec` and busybox wget).
fn fetch_in_pod(project: &Project, members: &str, pod: &str, url: &str) -> Option<String> {
    let out = project.skiff(members, &["exec", pod, "--", "wget", "-qO-", url]);
    if !out.ok() {
        eprintln!("wget {url} in {pod}: {}{}", out.stdout, out.stderr);
        return None;
    }
    Some(out.stdout.trim().to_string())
}

/// A three-replica web Deployment behind a NodePort Service: by cluster IP and DNS name from
/// inside a pod, and by node port from the host through every member, requests reach all three.
/// Pods started after the Service get its environment variables. Then the documentation's
/// backend example (`targetPort: http` by name) is reached by its DNS name `hello`.
fn reach_a_service_from_pods_and_the_host(project: &Project, end: Instant) {
    let service = "apiVersion: v1
kind: Service
metadata: {name: greet}
spec:
  type: NodePort
  selector: {app: greet}
  ports: [{port: 80, targetPort: http, nodePort: 30001}]
";
    let deployment = "apiVersion: apps/v1
kind: Deployment
metadata: {name: greet}
spec:
  replicas: 3
  selector: {matchLabels: {app: greet}}
  template:
    metadata: {labels: {app: greet}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: skiff-test/busybox:1
        command: [sh, -c, 'mkdir -p /www && echo \"$(hostname)\" > /www/index.html && exec httpd -f -p 8080 -h /www']
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 1}
";
    let members = project.all_members();
    let mut files = Vec::new();
    // The Service first: pods started after it get its environment variables.
    for (name, text) in [("greet-svc.yaml", service), ("greet-deploy.yaml", deployment)] {
        let file = project.configs.path().join(name);
        std::fs::write(&file, text).expect("write manifest");
        let applied = project.skiff(&members, &["apply", "-f", &file.display().to_string()]);
        assert!(applied.ok(), "apply {name}: {}", applied.stderr);
        files.push(file);
    }
    let started = Instant::now();
    eventually("three ready endpoints of greet", Duration::from_secs(90), end, || {
        (ready_endpoints(project, &members, "greet")? == 3).then_some(())
    });
    eprintln!("service greet has three ready endpoints after {:?}", started.elapsed());
    let svc = project.skiff(&members, &["get", "svc", "greet", "-o", "json"]);
    let svc: serde_json::Value = serde_json::from_str(&svc.stdout).expect("service JSON");
    let cluster_ip = svc["spec"]["clusterIP"].as_str().expect("a cluster IP").to_string();

    // From the host, by node port through every member.
    for member in ["127.0.0.21", "127.0.0.22", "127.0.0.23"] {
        let seen =
            eventually(&format!("all three replicas through {member}:30001"), Duration::from_secs(20), end, || {
                let mut seen = std::collections::BTreeSet::new();
                for _ in 0..12 {
                    seen.insert(http_get(member, 30001)?.trim().to_string());
                }
                (seen.len() == 3).then_some(seen)
            });
        eprintln!("through {member}:30001: {seen:?}");
    }

    // The kernel data path's member holds the Service in its NAT rules; the others have none.
    let rules = |service: &str| {
        let id = project.container(service).unwrap_or_else(|| panic!("no container for {service}"));
        run_docker(&["exec", &id, "nft", "list", "table", "ip", "skiff_services"])
    };
    let nat = eventually("the Service in the nftables member's rules", Duration::from_secs(20), end, || {
        let listed = rules(NFTABLES_MEMBER);
        listed.contains(&format!("ip daddr {cluster_ip} tcp dport 80")).then_some(listed)
    });
    assert!(nat.contains("30001"), "the node port is in the rules too:\n{nat}");
    assert!(!rules("node1").contains("skiff_services"), "node1 keeps the userspace data path");

    // From inside a pod on every member (the pod's own member forwards: userspace on two, the
    // kernel on one), by cluster IP and by DNS name.
    let pods = project.skiff(&members, &["get", "pods", "-l", "app=greet", "-o", "json"]);
    let pods: serde_json::Value = serde_json::from_str(&pods.stdout).expect("pods JSON");
    let mut by_node = BTreeMap::new();
    for p in pods["items"].as_array().expect("a pod list") {
        let (Some(name), Some(node)) = (p["metadata"]["name"].as_str(), p["spec"]["nodeName"].as_str()) else {
            continue;
        };
        by_node.entry(node.to_string()).or_insert_with(|| name.to_string());
    }
    assert!(by_node.contains_key(NFTABLES_MEMBER), "a greet pod on {NFTABLES_MEMBER}: {by_node:?}");
    for (node, pod) in &by_node {
        for target in [cluster_ip.as_str(), "greet", "greet.default.svc.cluster.local"] {
            let url = format!("http://{target}/");
            let what = format!("all three replicas at {url} from pod {pod} on {node}");
            let seen = eventually(&what, Duration::from_secs(20), end, || {
                let mut seen = std::collections::BTreeSet::new();
                for _ in 0..12 {
                    seen.insert(fetch_in_pod(project, &members, pod, &url)?);
                }
                (seen.len() == 3).then_some(seen)
            });
            eprintln!("{url} from {pod} on {node}: {seen:?}");
        }
    }
    let pod = by_node.values().next().expect("a greet pod").clone();
    let env = project.skiff(&members, &["exec", &pod, "--", "env"]);
    for variable in [
        format!("GREET_SERVICE_HOST={cluster_ip}"),
        "GREET_SERVICE_PORT=80".to_string(),
        format!("GREET_PORT_80_TCP=tcp://{cluster_ip}:80"),
    ] {
        assert!(
            env.stdout.lines().any(|l| l == variable),
            "{variable} missing from the pod's environment:\n{}",
            env.stdout
        );
    }

    // The documentation's backend: a Service whose targetPort names the pods' port `http`.
    let examples = root().join("tests/data/k8s-examples");
    for example in ["backend-deployment.yaml", "backend-service.yaml"] {
        let applied = project.skiff(&members, &["apply", "-f", &examples.join(example).display().to_string()]);
        assert!(applied.ok(), "apply {example}: {}", applied.stderr);
    }
    eventually("three ready endpoints of hello", Duration::from_secs(90), end, || {
        (ready_endpoints(project, &members, "hello")? == 3).then_some(())
    });
    let page = eventually("hello by its DNS name from a pod", Duration::from_secs(20), end, || {
        fetch_in_pod(project, &members, &pod, "http://hello/")
    });
    assert!(page.contains("skiff stand-in"), "hello answered {page:?}");
    for example in ["backend-service.yaml", "backend-deployment.yaml"] {
        let deleted = project.skiff(&members, &["delete", "-f", &examples.join(example).display().to_string()]);
        assert!(deleted.ok(), "delete {example}: {}", deleted.stderr);
    }
    // greet stays: scripts/cluster-down.sh must take its pods along.
    drop(files);
}

/// The body of `GET /` at `ip:port`, if it answered.
fn http_get(ip: &str, port: u16) -> Option<String> {
    http_get_path(ip, port, "/")
}

/// The body of `GET path` at `ip:port`, if it answered.
fn http_get_path(ip: &str, port: u16, path: &str) -> Option<String> {
    use std::io::Write;
    let addr: std::net::SocketAddr = format!("{ip}:{port}").parse().ok()?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n").as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// Issue 12, defect 21: started from a folder not named `skiff`, the compose network was named
/// after that folder while the members' configs put pods on `skiff_default`. The network is named
/// in the compose file now, whatever the project is called.
#[test]
fn the_compose_network_is_skiff_default_whatever_the_project_is_called() {
    let out = run(
        Command::new("docker-compose")
            .current_dir(root())
            .args(["-p", "elsewhere", "-f", "docker-compose.yml", "config"])
            .env_remove("SKIFF_NETWORK"),
        Duration::from_secs(60),
    )
    .expect("docker-compose is needed for this test");
    assert!(out.ok(), "docker-compose config: {}", out.stderr);
    let config: serde_json::Value = serde_saphyr::from_str(&out.stdout).expect("the resolved config");
    let network = config["networks"]["default"]["name"].as_str().unwrap_or_default().to_string();
    assert_eq!(network, "skiff_default", "{}", out.stdout);
    for n in 1..=3 {
        let text = std::fs::read_to_string(root().join(format!("cluster-configs/node{n}.toml"))).expect("config");
        assert!(text.contains(&format!("network = \"{network}\"")), "node{n}.toml puts pods on {network}");
    }
}
