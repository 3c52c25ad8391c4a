//! The probe pods of the Kubernetes documentation (`tests/data/k8s-examples`, unmodified), run by the
//! agent on the real Docker engine with local stand-in images of the same names
//! (scripts/build-test-images.sh), behave as the documentation describes: `liveness-exec` is
//! restarted within 75 s, `liveness-http` within 40 s, and `goproxy` is not Ready before 15 s and is
//! Ready by 30 s. The pods are bound to the node through the Bind call, as the scheduler will.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{docker_agent, test_raft, DockerCleanup, TestCluster};

async fn pod(members: &str, name: &str) -> Option<serde_json::Value> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("--credentials")
        .arg(common::credentials_for(members))
        .args(["--members", members, "get", "pod", name, "-o", "json"])
        .output()
        .await
        .ok()?;
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

fn restarts(pod: &serde_json::Value) -> i64 {
    pod["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0)
}

fn ready(pod: &serde_json::Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_documentation_probe_pods_behave_as_documented() {
    let cleanup = DockerCleanup::new_run();
    let run = cleanup.0.clone();
    let agent = docker_agent(&run);
    let cluster = TestCluster::start_with_agent(1, test_raft(), agent).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = cluster.addr(1);
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/k8s-examples");
    let names = ["exec-liveness.yaml", "http-liveness.yaml", "tcp-liveness-readiness.yaml"];
    let creds = common::credentials_for(&m).display().to_string();
    let mut args = vec!["--credentials".to_string(), creds, "--members".to_string(), m.clone(), "apply".to_string()];
    for n in names {
        args.push("-f".into());
        args.push(examples.join(n).display().to_string());
    }
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_skiff")).args(&args).output().await.expect("apply");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // The scheduler binds them (node1 is the only node).
    for name in ["liveness-exec", "liveness-http", "goproxy"] {
        common::eventually(&format!("{name} scheduled to node1"), Duration::from_secs(20), || async {
            pod(&m, name).await.filter(|p| p["spec"]["nodeName"] == "node1").map(|_| ())
        })
        .await;
    }
    let bound = Instant::now();

    let (mut exec_restarted, mut http_restarted, mut goproxy_ready) = (None, None, None);
    let mut goproxy_ready_early = false;
    while bound.elapsed() < Duration::from_secs(80) {
        let t = bound.elapsed();
        if exec_restarted.is_none() && pod(&m, "liveness-exec").await.is_some_and(|p| restarts(&p) >= 1) {
            exec_restarted = Some(t);
        }
        if http_restarted.is_none() && pod(&m, "liveness-http").await.is_some_and(|p| restarts(&p) >= 1) {
            http_restarted = Some(t);
        }
        if goproxy_ready.is_none() {
            if let Some(p) = pod(&m, "goproxy").await {
                if ready(&p) {
                    goproxy_ready = Some(t);
                    // Readiness starts after initialDelaySeconds: 15, counted from the container start.
                    goproxy_ready_early = t < Duration::from_secs(15);
                }
            }
        }
        if exec_restarted.is_some() && http_restarted.is_some() && goproxy_ready.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("liveness-exec restarted at {exec_restarted:?}, liveness-http at {http_restarted:?}, goproxy Ready at {goproxy_ready:?}");
    assert!(
        exec_restarted.is_some_and(|t| t <= Duration::from_secs(75)),
        "liveness-exec restarted within 75 s: {exec_restarted:?}"
    );
    assert!(
        http_restarted.is_some_and(|t| t <= Duration::from_secs(40)),
        "liveness-http restarted within 40 s: {http_restarted:?}"
    );
    assert!(!goproxy_ready_early, "goproxy was Ready before 15 s: {goproxy_ready:?}");
    assert!(goproxy_ready.is_some_and(|t| t <= Duration::from_secs(30)), "goproxy Ready by 30 s: {goproxy_ready:?}");
    cluster.shutdown().await;
}
