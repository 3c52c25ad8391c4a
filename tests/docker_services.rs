//! Services on the real Docker engine: a client sending requests without pause through a node port
//! gets no failed request while the Deployment behind it rolls to a new version, while a replica is
//! deleted and while it scales from 3 to 1. The pods leave the ready endpoints, the proxy stops
//! sending them new connections, and only then do their containers get SIGTERM: no `preStop: sleep`.
//!
//! The web server here shuts down the way many do: on SIGTERM it stops serving but keeps its socket
//! open until it exits (httpd is frozen, so new connections are accepted by the kernel and never
//! answered). A connection sent to a pod after its SIGTERM fails; one that is refused would only
//! cost the proxy a retry, and would not show whether pods leave the endpoints first.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{docker_agent, skiff_ok, test_raft, DockerCleanup, TestCluster};
use skiff_server::config::ServiceSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Deadline of each wait; the pods start in seconds.
const T: Duration = Duration::from_secs(90);

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: web
        image: skiff-test/busybox:1
        command:
        - sh
        - -c
        - |
          mkdir -p /www && echo ok > /www/index.html
          httpd -f -p 80 -h /www & pid=$!
          trap 'kill -STOP $pid; sleep 3; exit 0' TERM
          wait
        ports: [{name: http, containerPort: 80}]
        readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: http, nodePort: 31801}]
";

/// One HTTP request on a new connection; `Err` says what failed.
async fn request(addr: &str) -> Result<(), String> {
    let attempt = async {
        let mut conn = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        conn.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n").await.map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        conn.read_to_end(&mut response).await.map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&response);
        if text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!("answer: {:?}", text.lines().next().unwrap_or("<nothing>")))
        }
    };
    tokio::time::timeout(Duration::from_secs(5), attempt).await.map_err(|_| "no answer in 5 s".to_string())?
}

/// Requests sent one after another until stopped, and the failures among them.
struct Load {
    sent: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(addr: String) -> Load {
        let sent = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, f, st) = (sent.clone(), failures.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !st.load(Ordering::Relaxed) {
                let outcome = request(&addr).await;
                s.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = outcome {
                    if let Ok(mut list) = f.lock() {
                        list.push(e);
                    }
                }
            }
        });
        Load { sent, failures, stop, task }
    }

    /// Stops the client; returns how many requests it sent and the failures.
    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let failures = self.failures.lock().map(|f| f.clone()).unwrap_or_default();
        (self.sent.load(Ordering::Relaxed), failures)
    }
}

async fn deployment_json(m: &str) -> Option<serde_json::Value> {
    let out = common::skiff(m, &["get", "deployment", "web", "-o", "json"]).await;
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

/// Waits until `web` has `replicas` available pods of its newest template and no others.
async fn settled(m: &str, replicas: u64) {
    common::eventually(&format!("web settled at {replicas} replicas"), T, || async {
        let d = deployment_json(m).await?;
        let s = &d["status"];
        let done = s["observedGeneration"] == d["metadata"]["generation"]
            && s["updatedReplicas"] == replicas
            && s["availableReplicas"] == replicas
            && s["replicas"] == replicas;
        let pods = common::skiff(m, &["get", "pods", "-l", "app=web", "-o", "name"]).await;
        let count = String::from_utf8_lossy(&pods.stdout).lines().count() as u64;
        (done && count == replicas).then_some(())
    })
    .await;
}

/// Runs `change` while a client sends requests through `addr`; asserts none failed.
async fn no_request_fails(what: &str, addr: &str, change: impl std::future::Future<Output = ()>) {
    let load = Load::start(addr.to_string());
    change.await;
    // More load after the change settled, while the last pods drain and go.
    let after = load.sent.load(Ordering::Relaxed) + 100;
    common::eventually("100 more requests", T, || async { (load.sent.load(Ordering::Relaxed) >= after).then_some(()) })
        .await;
    let (sent, failures) = load.finish().await;
    println!("{what}: {sent} requests, {} failed", failures.len());
    assert!(sent > 50, "{what}: only {sent} requests were sent");
    assert!(failures.is_empty(), "{what}: {} of {sent} requests failed: {failures:?}", failures.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_no_request_fails_through_a_service_during_a_rollout_a_pod_deletion_and_a_scale_down() {
    let run = DockerCleanup::new_run();
    // A loopback service range (no host route needed); node ports from a range of the test's own.
    let services = ServiceSettings {
        cluster_ip_range: "127.96.0.0/16".into(),
        node_port_range: "31800-31899".into(),
        ..Default::default()
    };
    let cluster =
        TestCluster::start_with(1, test_raft(), docker_agent(&run.0), &|c| c.services = services.clone()).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = cluster.addr(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("web.yaml");
    std::fs::write(&file, WEB).expect("write manifest");
    skiff_ok(&m, &["apply", "-f", &file.display().to_string()]).await;
    settled(&m, 3).await;
    let addr = "127.0.0.1:31801";
    common::eventually("the node port answers", T, || async { request(addr).await.ok() }).await;

    no_request_fails("rollout to a new version", addr, async {
        skiff_ok(&m, &["set", "image", "deployment/web", "web=registry.k8s.io/busybox:1.27.2"]).await;
        settled(&m, 3).await;
    })
    .await;

    no_request_fails("a deleted replica", addr, async {
        let pods = skiff_ok(&m, &["get", "pods", "-l", "app=web", "-o", "name"]).await;
        let first = pods.lines().next().expect("a pod").trim_start_matches("pod/").to_string();
        skiff_ok(&m, &["delete", "pod", &first]).await;
        settled(&m, 3).await;
    })
    .await;

    no_request_fails("scale from 3 to 1", addr, async {
        skiff_ok(&m, &["scale", "deployment/web", "--replicas=1"]).await;
        settled(&m, 1).await;
    })
    .await;
    cluster.shutdown().await;
}
