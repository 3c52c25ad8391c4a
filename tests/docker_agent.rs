//! The agent on the real Docker engine, in an in-process one-member cluster: the node registers, a
//! pod bound to it reaches Running with a pod IP, its two containers reach each other on localhost
//! (the second becomes Ready only after it fetched the first's page), and a deleted pod's containers
//! are stopped and removed before the object goes. Every container carries `skiff.test` and a label
//! of this run, and is removed when the test ends, even when it fails.

mod common;

use std::time::Duration;

use common::{docker_agent, eventually, test_raft, DockerCleanup, TestCluster};
use skiff_server::config::AgentSettings;

async fn skiff(members: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["--members", members])
        .arg("--credentials")
        .arg(common::credentials_for(members))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run skiff")
}

async fn pod_json(members: &str) -> Option<serde_json::Value> {
    let out = skiff(members, &["get", "pod", "web", "-o", "json"]).await;
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

const POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeName: node1
  terminationGracePeriodSeconds: 3
  containers:
  - name: server
    image: skiff-test/busybox:1
    command: [sh, -c, "echo pod-local > /tmp/index.html && exec httpd -f -p 8080 -h /tmp"]
    ports:
    - {name: http, containerPort: 8080}
  - name: client
    image: skiff-test/busybox:1
    command: [sh, -c, "until wget -qO /tmp/page http://127.0.0.1:8080/; do sleep 0.2; done; exec sleep 3600"]
    readinessProbe:
      exec: {command: [grep, -q, pod-local, /tmp/page]}
      periodSeconds: 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_agent_runs_a_pod_whose_containers_share_localhost_and_removes_it_on_delete() {
    let cleanup = DockerCleanup::new_run();
    let run = cleanup.0.clone();
    let agent = docker_agent(&run);
    let cluster = TestCluster::start_with_agent(1, test_raft(), agent).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = cluster.addr(1);

    let nodes = eventually("the node registered and Ready", Duration::from_secs(20), || async {
        let out = skiff(&m, &["get", "nodes", "--no-headers"]).await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("node1   Ready").then_some(text)
    })
    .await;
    assert!(nodes.starts_with("node1"), "{nodes}");

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pod.yaml");
    std::fs::write(&file, POD).expect("write");
    let out = skiff(&m, &["apply", "-f", &file.display().to_string()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let pod = eventually("the pod Running and Ready", Duration::from_secs(60), || async {
        let pod = pod_json(&m).await?;
        let ready =
            pod["status"]["conditions"].as_array()?.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
        (pod["status"]["phase"] == "Running" && ready).then_some(pod)
    })
    .await;
    let ip = pod["status"]["podIP"].as_str().unwrap_or_default();
    assert!(ip.split('.').count() == 4, "a pod IP: {pod}");
    let statuses = pod["status"]["containerStatuses"].as_array().cloned().unwrap_or_default();
    assert_eq!(statuses.len(), 2);
    assert!(statuses.iter().all(|c| c["ready"] == true && c["restartCount"] == 0), "{statuses:?}");
    let table = String::from_utf8_lossy(&skiff(&m, &["get", "pods", "-o", "wide"]).await.stdout).into_owned();
    assert!(
        table.lines().any(|l| l.starts_with("web") && l.contains("2/2") && l.contains("Running") && l.contains(ip)),
        "{table}"
    );

    // Every container carries the node's extra labels; the pod's containers are found by label.
    let labelled = std::process::Command::new("docker")
        .args(["ps", "-q", "--filter", &format!("label=skiff.test.run={run}"), "--filter", "label=skiff.pod.name=web"])
        .output()
        .expect("docker ps");
    assert_eq!(String::from_utf8_lossy(&labelled.stdout).lines().count(), 3, "sandbox + two containers");

    // Delete: containers stopped and removed, then the object is gone (the CLI waits for it).
    let out = skiff(&m, &["delete", "pod", "web"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("pod \"web\" deleted"));
    let left = std::process::Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("label=skiff.test.run={run}"), "--filter", "label=skiff.pod.name=web"])
        .output()
        .expect("docker ps");
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "", "no container of the pod is left");
    cluster.shutdown().await;
}

const PODS: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  nodeName: node1
  containers:
  - {name: app, image: "skiff-test/busybox:1", command: [sh, -c, "exit 3"]}
---
apiVersion: v1
kind: Pod
metadata: {name: unhealthy}
spec:
  nodeName: node1
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: skiff-test/busybox:1
    command: [sh, -c, "touch /tmp/alive; sleep 2; rm /tmp/alive; exec sleep 3600"]
    livenessProbe:
      exec: {command: [test, -f, /tmp/alive]}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {name: done}
spec:
  nodeName: node1
  restartPolicy: OnFailure
  containers:
  - {name: app, image: "skiff-test/busybox:1", command: [sh, -c, "exit 0"]}
---
apiVersion: v1
kind: Pod
metadata: {name: missing}
spec:
  nodeName: node1
  containers:
  - {name: app, image: "skiff-test/none:1"}
---
apiVersion: v1
kind: Pod
metadata: {name: steady}
spec:
  nodeName: node1
  containers:
  - {name: app, image: "skiff-test/busybox:1", command: [sleep, "3600"]}
"#;

async fn pod_of(members: &str, name: &str) -> Option<serde_json::Value> {
    let out = skiff(members, &["get", "pod", name, "-o", "json"]).await;
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

fn container_ids(run: &str, pod: &str) -> Vec<String> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--no-trunc",
            "--filter",
            &format!("label=skiff.test.run={run}"),
            "--filter",
            &format!("label=skiff.pod.name={pod}"),
        ])
        .output()
        .expect("docker ps");
    let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().map(str::to_string).collect();
    ids.sort();
    ids
}

/// When each container last started (Docker's `State.StartedAt`): a container restarted in place
/// keeps its id but not this.
fn started_at(ids: &[String]) -> Vec<String> {
    if ids.is_empty() {
        return Vec::new();
    }
    let out = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.StartedAt}}"])
        .args(ids)
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_agent_restarts_with_back_off_kills_unhealthy_finishes_and_adopts_after_a_restart() {
    let cleanup = DockerCleanup::new_run();
    let run = cleanup.0.clone();
    let agent = AgentSettings { backoff_base_ms: 500, backoff_cap_ms: 2000, ..docker_agent(&run) };
    let mut cluster = TestCluster::start_with_agent(1, test_raft(), agent).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = cluster.addr(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pods.yaml");
    std::fs::write(&file, PODS).expect("write");
    let out = skiff(&m, &["apply", "-f", &file.display().to_string()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A crashing container: restarted, then backing off, with its last exit code.
    let crash = eventually("crash backing off after restarts", Duration::from_secs(60), || async {
        let pod = pod_of(&m, "crash").await?;
        let c = pod["status"]["containerStatuses"][0].clone();
        let backing_off = c["state"]["waiting"]["reason"] == "CrashLoopBackOff";
        (backing_off && c["restartCount"].as_i64()? >= 2).then_some(c)
    })
    .await;
    assert_eq!(crash["lastState"]["terminated"]["exitCode"], 3, "{crash}");
    let table = String::from_utf8_lossy(&skiff(&m, &["get", "pod", "crash"]).await.stdout).into_owned();
    assert!(table.contains("CrashLoopBackOff"), "{table}");

    // A failing liveness probe restarts the container.
    eventually("unhealthy restarted", Duration::from_secs(40), || async {
        let pod = pod_of(&m, "unhealthy").await?;
        (pod["status"]["containerStatuses"][0]["restartCount"].as_i64()? >= 1).then_some(())
    })
    .await;

    // What happened is recorded as events, shown by describe.
    for (pod, reasons) in
        [("crash", &["Created", "Started", "BackOff"][..]), ("unhealthy", &["Unhealthy", "Killing"][..])]
    {
        let described = eventually("the events", Duration::from_secs(20), || async {
            let out = skiff(&m, &["describe", "pod", pod]).await;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let events = text.split("Events:").nth(1)?.to_string();
            reasons.iter().all(|r| events.contains(r)).then_some(events)
        })
        .await;
        assert!(described.contains("skiff-agent"), "{described}");
    }

    // OnFailure with exit 0 ends Succeeded and is not restarted.
    let done = eventually("done Succeeded", Duration::from_secs(30), || async {
        let pod = pod_of(&m, "done").await?;
        (pod["status"]["phase"] == "Succeeded").then_some(pod)
    })
    .await;
    assert_eq!(done["status"]["containerStatuses"][0]["restartCount"], 0);

    // A missing image: a clear reason naming the image and the node.
    let missing = eventually("missing image reason", Duration::from_secs(30), || async {
        let pod = pod_of(&m, "missing").await?;
        let w = pod["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "ErrImageNeverPull").then_some(w)
    })
    .await;
    let message = missing["message"].as_str().unwrap_or_default();
    assert!(message.contains("skiff-test/none:1") && message.contains("node1"), "{message}");

    // A member restart adopts the running containers (same ids), and removes this node's orphans
    // but not another node's containers.
    eventually("steady running", Duration::from_secs(30), || async {
        (pod_of(&m, "steady").await?["status"]["phase"] == "Running").then_some(())
    })
    .await;
    let before = container_ids(&run, "steady");
    assert_eq!(before.len(), 2, "sandbox + app: {before:?}");
    let started_before = started_at(&before);
    let status = skiff(&m, &["cluster", "status", "-o", "json"]).await;
    let cluster_id = serde_json::from_slice::<serde_json::Value>(&status.stdout).expect("status json")["clusterId"]
        .as_str()
        .expect("cluster id")
        .to_string();
    for (name, node) in [("orphan", "node1"), ("elsewhere", "node9")] {
        let out = std::process::Command::new("docker")
            .args(["create", "--name", &format!("skiff-test-{run}-{name}")])
            .args(["--label", "skiff.test=1", "--label", &format!("skiff.test.run={run}")])
            .args(["--label", &format!("skiff.cluster={cluster_id}"), "--label", &format!("skiff.node={node}")])
            .args(["--label", "skiff.pod.uid=gone", "--label", &format!("skiff.pod.name={name}")])
            .args(["skiff-test/busybox:1", "sleep", "60"])
            .output()
            .expect("docker create");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    cluster.stop(1).await;
    cluster.restart(1).await;
    cluster.leader(Duration::from_secs(10)).await;
    eventually("the orphan removed", Duration::from_secs(30), || async {
        container_ids(&run, "orphan").is_empty().then_some(())
    })
    .await;
    assert_eq!(container_ids(&run, "elsewhere").len(), 1, "another node's container is left alone");
    eventually("steady still running after the restart", Duration::from_secs(30), || async {
        (pod_of(&m, "steady").await?["status"]["phase"] == "Running").then_some(())
    })
    .await;
    // The restarted agent has listed its containers (the orphan is gone); for two seconds of its
    // worker rounds the pod keeps the same containers, never restarted.
    common::consistently("the same containers, adopted, not recreated or restarted", Duration::from_secs(2), || {
        let ids = container_ids(&run, "steady");
        let same = ids == before && started_at(&ids) == started_before;
        async move { same }
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_logs_and_exec_work_through_a_member_that_does_not_run_the_pod() {
    let cleanup = DockerCleanup::new_run();
    let run = cleanup.0.clone();
    let agent = docker_agent(&run);
    let cluster = TestCluster::start_with_agent(2, test_raft(), agent).await;
    cluster.leader(Duration::from_secs(10)).await;
    // The CLI talks to node1 only; the pod runs on node2.
    let m = cluster.addr(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pod.yaml");
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: talker}\nspec:\n  nodeName: node2\n  containers:\n  - {name: app, image: \"skiff-test/busybox:1\", command: [sh, -c, \"echo hello from $(hostname); exec sleep 3600\"]}\n";
    std::fs::write(&file, pod).expect("write");
    let out = skiff(&m, &["apply", "-f", &file.display().to_string()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eventually("talker running", Duration::from_secs(30), || async {
        (pod_of(&m, "talker").await?["status"]["phase"] == "Running").then_some(())
    })
    .await;
    let logs = eventually("the container's output", Duration::from_secs(20), || async {
        let out = skiff(&m, &["logs", "talker"]).await;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && text.contains("hello from")).then_some(text)
    })
    .await;
    assert!(logs.starts_with("hello from"), "{logs:?}");
    let out = skiff(&m, &["exec", "pod/talker", "--", "sh", "-c", "echo from inside; exit 3"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from inside\n");
    assert_eq!(out.status.code(), Some(3), "skiff exec exits with the command's code");
    // Issue 12, defect 5: an exec's output was held whole, however large. 100 MB asked for: the
    // member keeps 16 MiB and says so, and the call returns (the rest is never read).
    let rss = || {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status.lines().find(|l| l.starts_with("VmHWM")).map(str::to_string).unwrap_or_default()
    };
    let before = rss();
    let out = skiff(&m, &["exec", "pod/talker", "--", "head", "-c", "100000000", "/dev/zero"]).await;
    let printed = out.stdout.len();
    assert!(out.status.success() || printed > 0, "exec failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(printed <= (16 << 20) + 64, "{printed} bytes of exec output");
    assert!(printed >= 16 << 20, "{printed} bytes: the first 16 MiB are kept");
    assert!(String::from_utf8_lossy(&out.stdout[printed - 64..]).contains("output truncated at 16 MiB"));
    eprintln!("members' peak memory (this process) before the 100 MB exec: {before}; after: {}", rss());
    let out = skiff(&m, &["logs", "talker", "-c", "nope"]).await;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no container \"nope\""));
    cluster.shutdown().await;
}

const GRACEFUL: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: polite}
spec:
  nodeName: node1
  terminationGracePeriodSeconds: 20
  containers:
  - name: app
    image: skiff-test/busybox:1
    command: [sh, -c, "trap 'exit 0' TERM; sleep 3600 & wait"]
    lifecycle:
      preStop:
        exec: {command: [sh, -c, "sleep 3"]}
---
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  nodeName: node1
  terminationGracePeriodSeconds: 4
  containers:
  - {name: app, image: "skiff-test/busybox:1", command: [sleep, "3600"]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_graceful_deletion_runs_pre_stop_and_honours_the_grace_period() {
    let cleanup = DockerCleanup::new_run();
    let run = cleanup.0.clone();
    let agent = docker_agent(&run);
    let cluster = TestCluster::start_with_agent(1, test_raft(), agent).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = cluster.addr(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pods.yaml");
    std::fs::write(&file, GRACEFUL).expect("write");
    let out = skiff(&m, &["apply", "-f", &file.display().to_string()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for name in ["polite", "stubborn"] {
        eventually("running", Duration::from_secs(30), || async {
            (pod_of(&m, name).await?["status"]["phase"] == "Running").then_some(())
        })
        .await;
    }
    // preStop (3 s) runs before SIGTERM, which the container honours at once.
    let started = std::time::Instant::now();
    let out = skiff(&m, &["delete", "pod", "polite"]).await;
    let took = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(15),
        "preStop ran, no full grace wait: {took:?}"
    );
    // A container that ignores SIGTERM is killed when the 4 s grace period is over.
    let started = std::time::Instant::now();
    let out = skiff(&m, &["delete", "pod", "stubborn"]).await;
    let took = started.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(12),
        "SIGKILL after the grace period: {took:?}"
    );
    assert!(container_ids(&run, "polite").is_empty() && container_ids(&run, "stubborn").is_empty());
    cluster.shutdown().await;
}
