//! The docker-compose cluster end to end, driven from the host like a user would: `docker-compose
//! up`, writes through the CLI, `docker kill` of the leader's container, writes go on, `docker-compose
//! start` brings it back, and all three members converge on the same applied index and data.
//!
//! Runs in the `docker` nextest group (one at a time). It uses its own compose project name and free
//! host ports, so a cluster left running on the engine does not collide, and it labels everything
//! `skiff.test` (tests/compose.test.yml). The node image comes from scripts/build-node-image.sh
//! (scripts/test.sh builds it first; this test builds it only if it is missing).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Polls `check` until it returns `Some`, failing with `what` after `timeout`.
fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A compose project of this test; `down -v` runs when it is dropped, also when the test fails.
struct Project {
    name: String,
    ports: [u16; 3],
}

impl Project {
    fn compose(&self, args: &[&str]) -> Output {
        Command::new("docker-compose")
            .current_dir(root())
            .args(["-p", &self.name, "-f", "docker-compose.yml", "-f", "tests/compose.test.yml"])
            .args(args)
            .env("SKIFF_PORT1", self.ports[0].to_string())
            .env("SKIFF_PORT2", self.ports[1].to_string())
            .env("SKIFF_PORT3", self.ports[2].to_string())
            .output()
            .expect("run docker-compose")
    }

    fn compose_ok(&self, args: &[&str]) {
        let out = self.compose(args);
        assert!(out.status.success(), "docker-compose {args:?}: {}", text(&out.stderr));
    }

    fn members(&self) -> String {
        self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    /// Runs the CLI against `members`.
    fn skiff(&self, members: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(["--members", members, "--timeout", "5"])
            .args(args)
            .output()
            .expect("run skiff")
    }

    fn status(&self, members: &str) -> Option<serde_json::Value> {
        let out = self.skiff(members, &["cluster", "status", "-o", "json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let out = self.compose(&["down", "-v", "--remove-orphans", "-t", "5"]);
        if !out.status.success() {
            eprintln!("docker-compose down failed: {}", text(&out.stderr));
        }
    }
}

fn ensure_image() {
    let present = Command::new("docker").args(["image", "inspect", "skiff-node:dev"]).output().expect("docker");
    if !present.status.success() {
        let out = Command::new("bash").arg(root().join("scripts/build-node-image.sh")).output().expect("build image");
        assert!(out.status.success(), "building the node image: {}", text(&out.stderr));
    }
}

/// Writes `key` through the CLI until it is acknowledged; `false` if its outcome stayed unknown.
fn write(project: &Project, key: &str, value: &str) -> bool {
    eventually(&format!("writing {key}"), Duration::from_secs(30), || {
        let out = project.skiff(&project.members(), &["kv", "put", key, value]);
        match out.status.code() {
            Some(0) => Some(true),
            Some(3) => Some(false), // outcome unknown: may or may not be there, never retried blindly
            _ => None,
        }
    })
}

#[test]
fn compose_cluster_survives_docker_kill_of_the_leader_and_converges() {
    ensure_image();
    let project =
        Project { name: format!("skiff-test-{}", std::process::id()), ports: [free_port(), free_port(), free_port()] };
    project.compose_ok(&["up", "-d"]);
    let all = project.members();
    let leader = eventually("a leader", Duration::from_secs(60), || {
        let s = project.status(&all)?;
        let leader = s["leaderId"].as_u64().filter(|l| *l > 0)?;
        (s["members"].as_array()?.len() == 3).then_some(leader)
    });

    let mut acked = BTreeMap::new();
    for i in 0..20 {
        let (k, v) = (format!("before/{i:02}"), format!("v{i}"));
        if write(&project, &k, &v) {
            acked.insert(k, v);
        }
    }

    // docker kill the leader's container.
    let service = format!("node{leader}");
    let id = text(&project.compose(&["ps", "-q", &service]).stdout).trim().to_string();
    assert!(!id.is_empty(), "container of {service}");
    let out = Command::new("docker").args(["kill", &id]).output().expect("docker kill");
    assert!(out.status.success(), "docker kill: {}", text(&out.stderr));

    // Writes go on through the other members.
    for i in 0..20 {
        let (k, v) = (format!("after/{i:02}"), format!("w{i}"));
        if write(&project, &k, &v) {
            acked.insert(k, v);
        }
    }
    let new_leader = eventually("a new leader", Duration::from_secs(30), || {
        project.status(&all)?["leaderId"].as_u64().filter(|l| *l > 0 && *l != leader)
    });
    assert_ne!(new_leader, leader);

    // Bring it back: within 30 s every member reports the same applied index and the same data.
    project.compose_ok(&["start", &service]);
    let expected: String = acked.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect();
    eventually("all members to converge", Duration::from_secs(30), || {
        let s = project.status(&all)?;
        let applied: Vec<u64> =
            s["members"].as_array()?.iter().map(|m| m["appliedIndex"].as_u64().unwrap_or(0)).collect();
        if applied.len() != 3 || applied.iter().any(|a| *a == 0 || *a != applied[0]) {
            return None;
        }
        let lists: Vec<String> = project
            .ports
            .iter()
            .map(|p| text(&project.skiff(&format!("127.0.0.1:{p}"), &["kv", "list", "--stale"]).stdout))
            .collect();
        (lists.iter().all(|l| *l == lists[0]) && lists[0] == expected).then_some(())
    });

    // Every container of the project carries the test label.
    let ids = text(&project.compose(&["ps", "-q"]).stdout);
    for id in ids.split_whitespace() {
        let label = Command::new("docker")
            .args(["inspect", "-f", "{{index .Config.Labels \"skiff.test\"}}", id])
            .output()
            .expect("docker inspect");
        assert_eq!(text(&label.stdout).trim(), "compose", "container {id} is labelled skiff.test");
    }
}
