//! Services on the real Docker engine: a client sending requests without pause through a node port
//! gets no failed request while the Deployment behind it rolls to a new version, while a replica is
//! deleted and while it scales from 3 to 1. The pods leave the ready endpoints, the proxy stops
//! sending them new connections, and only then do their containers get SIGTERM: no `preStop: sleep`.
//! Once through the userspace proxy (the default data path) and once through the kernel's NAT rules
//! (`data_path = "nftables"`).
//!
//! Two Deployments take the same steps at the same time:
//! - `web`, whose server shuts down the way many do: on SIGTERM it stops serving but keeps its
//!   socket open until it exits (httpd is frozen, so new connections are accepted by the kernel and
//!   never answered). A new connection per request; one sent to a pod after its SIGTERM fails (one
//!   that is refused would only cost the proxy a retry, and would not show whether pods leave the
//!   endpoints first).
//! - `kept`, nginx (Debian's) with its graceful stop (SIGQUIT: finish what is in flight, close idle
//!   connections), under clients that keep their connections open, as a pooling HTTP client does:
//!   a request that finds its reused connection closed before any byte of an answer is sent again
//!   on a new connection (RFC 9110 9.2.2; curl, Go's net/http and urllib3 do so); that is a retry,
//!   not a failure. A failure is an error on a new connection or in the middle of an answer.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{docker_agent, skiff_ok, test_raft, DockerCleanup, TestCluster};
use skiff_server::config::{DataPathSetting, ServiceSettings};
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
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: kept}
spec:
  replicas: 3
  selector: {matchLabels: {app: kept}}
  template:
    metadata: {labels: {app: kept}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: nginx
        image: skiff-bench/nginx:1
        ports: [{name: http, containerPort: 80}]
        readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: kept}
spec:
  type: NodePort
  selector: {app: kept}
  ports: [{port: 80, targetPort: http, nodePort: 31802}]
";

/// Keep-alive clients at once.
const KEEP_ALIVE_CLIENTS: usize = 4;

/// Why an exchange on a kept connection failed.
enum Broken {
    /// Before any byte of the answer: the request may be sent again on a new connection.
    BeforeAnswer(String),
    /// In the middle of an answer, or a wrong answer.
    During(String),
}

/// One request on `conn` and its whole answer (`Content-Length` bodies, as nginx sends).
async fn exchange(conn: &mut tokio::net::TcpStream) -> Result<(), Broken> {
    conn.write_all(b"GET / HTTP/1.1\r\nHost: kept\r\n\r\n")
        .await
        .map_err(|e| Broken::BeforeAnswer(format!("write: {e}")))?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk)).await {
            Err(_) => return Err(Broken::During("no answer in 5 s".into())),
            Ok(Err(e)) if buf.is_empty() => return Err(Broken::BeforeAnswer(format!("read: {e}"))),
            Ok(Err(e)) => return Err(Broken::During(format!("read: {e}"))),
            Ok(Ok(0)) if buf.is_empty() => return Err(Broken::BeforeAnswer("closed".into())),
            Ok(Ok(0)) => return Err(Broken::During("closed in the middle of an answer".into())),
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        let Some(end) = text.find("\r\n\r\n") else { continue };
        if !text.starts_with("HTTP/1.1 200") {
            return Err(Broken::During(format!("answer: {:?}", text.lines().next().unwrap_or_default())));
        }
        let length = text[..end]
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>()))
            .and_then(Result::ok)
            .unwrap_or(0);
        if buf.len() >= end + 4 + length {
            return Ok(());
        }
    }
}

/// Keep-alive clients sending requests one after another until stopped: requests answered,
/// requests sent again after a closed idle connection, and failures.
struct KeptLoad {
    answered: Arc<AtomicU64>,
    retried: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl KeptLoad {
    fn start(addr: String) -> KeptLoad {
        let answered = Arc::new(AtomicU64::new(0));
        let retried = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..KEEP_ALIVE_CLIENTS)
            .map(|_| {
                let (addr, answered, retried, failures, stop) =
                    (addr.clone(), answered.clone(), retried.clone(), failures.clone(), stop.clone());
                tokio::spawn(async move {
                    let fail = |e: String| {
                        if let Ok(mut list) = failures.lock() {
                            list.push(e);
                        }
                    };
                    let mut conn: Option<tokio::net::TcpStream> = None;
                    let mut reused = false;
                    while !stop.load(Ordering::Relaxed) {
                        let c = match conn.as_mut() {
                            Some(c) => c,
                            None => match tokio::net::TcpStream::connect(&addr).await {
                                Ok(c) => {
                                    reused = false;
                                    conn.insert(c)
                                }
                                Err(e) => {
                                    fail(format!("connect: {e}"));
                                    continue;
                                }
                            },
                        };
                        match exchange(c).await {
                            Ok(()) => {
                                answered.fetch_add(1, Ordering::Relaxed);
                                reused = true;
                            }
                            Err(Broken::BeforeAnswer(_)) if reused => {
                                retried.fetch_add(1, Ordering::Relaxed);
                                conn = None;
                            }
                            Err(Broken::BeforeAnswer(e) | Broken::During(e)) => {
                                fail(e);
                                conn = None;
                            }
                        }
                    }
                })
            })
            .collect();
        KeptLoad { answered, retried, failures, stop, tasks }
    }

    /// Stops the clients; returns requests answered, sent again, and the failures.
    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let failures = self.failures.lock().map(|f| f.clone()).unwrap_or_default();
        (self.answered.load(Ordering::Relaxed), self.retried.load(Ordering::Relaxed), failures)
    }
}

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

async fn deployment_json(m: &str, name: &str) -> Option<serde_json::Value> {
    let out = common::skiff(m, &["get", "deployment", name, "-o", "json"]).await;
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

/// Waits until both Deployments have `replicas` available pods of their newest template and no others.
async fn settled(m: &str, replicas: u64) {
    for name in ["web", "kept"] {
        common::eventually(&format!("{name} settled at {replicas} replicas"), T, || async {
            let d = deployment_json(m, name).await?;
            let s = &d["status"];
            let done = s["observedGeneration"] == d["metadata"]["generation"]
                && s["updatedReplicas"] == replicas
                && s["availableReplicas"] == replicas
                && s["replicas"] == replicas;
            let pods = common::skiff(m, &["get", "pods", "-l", &format!("app={name}"), "-o", "name"]).await;
            let count = String::from_utf8_lossy(&pods.stdout).lines().count() as u64;
            (done && count == replicas).then_some(())
        })
        .await;
    }
}

/// Runs `change` while clients send requests through both Services (new connections to `web`,
/// keep-alive to `kept`); asserts none failed.
async fn no_request_fails(what: &str, host: &str, change: impl std::future::Future<Output = ()>) {
    let load = Load::start(format!("{host}:{WEB_PORT}"));
    let kept = KeptLoad::start(format!("{host}:{KEPT_PORT}"));
    change.await;
    // More load after the change settled, while the last pods drain and go.
    let after = load.sent.load(Ordering::Relaxed) + 100;
    common::eventually("100 more requests", T, || async { (load.sent.load(Ordering::Relaxed) >= after).then_some(()) })
        .await;
    let (sent, failures) = load.finish().await;
    let (answered, retried, kept_failures) = kept.finish().await;
    println!("{what}: new connections: {sent} requests, {} failed", failures.len());
    println!(
        "{what}: keep-alive: {answered} answered, {retried} sent again on a new connection, {} failed",
        kept_failures.len()
    );
    assert!(sent > 50, "{what}: only {sent} requests were sent");
    assert!(answered > 50, "{what}: only {answered} keep-alive requests were answered");
    assert!(failures.is_empty(), "{what}: {} of {sent} requests failed: {failures:?}", failures.len());
    assert!(kept_failures.is_empty(), "{what}: {} keep-alive requests failed: {kept_failures:?}", kept_failures.len());
}

const WEB_PORT: u16 = 31801;
const KEPT_PORT: u16 = 31802;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_no_request_fails_through_a_service_during_a_rollout_a_pod_deletion_and_a_scale_down() {
    no_request_fails_on(DataPathSetting::Userspace, "127.0.0.1").await;
}

/// The same through the kernel data path (nftables NAT on the host, as root). Its node ports are
/// reached at the Docker bridge's gateway, an address of the host that is not loopback (the kernel
/// does not NAT connections from loopback addresses to other hosts). The rules go with the member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_no_request_fails_through_the_nftables_data_path_either() {
    let gateway = docker_bridge_gateway().await;
    no_request_fails_on(DataPathSetting::Nftables, &gateway).await;
    let listed = tokio::process::Command::new("nft").args(["list", "table", "ip", skiff_net::NAT_TABLE]).output().await;
    let left = listed.is_ok_and(|out| out.status.success());
    assert!(!left, "the member's nftables table {} outlived it", skiff_net::NAT_TABLE);
}

/// The host's address on Docker's default bridge network: the first of its subnet (the default
/// bridge names no gateway in its IPAM config).
async fn docker_bridge_gateway() -> String {
    let out = tokio::process::Command::new("docker")
        .args(["network", "inspect", "-f", "{{range .IPAM.Config}}{{.Subnet}}{{end}}", "bridge"])
        .output()
        .await
        .expect("docker");
    let subnet = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let network: Option<std::net::Ipv4Addr> = subnet.split('/').next().and_then(|a| a.parse().ok());
    let network = network.unwrap_or_else(|| panic!("no IPv4 subnet of the bridge network: {out:?}"));
    std::net::Ipv4Addr::from(u32::from(network) + 1).to_string()
}

/// One member on the host with `data_path`, two Deployments behind node ports reached at `host`:
/// a rollout, a deleted replica and a scale-down, each under load, fail no request.
async fn no_request_fails_on(data_path: DataPathSetting, host: &str) {
    let run = DockerCleanup::new_run();
    // A loopback service range (no host route needed); node ports from a range of the test's own.
    let services = ServiceSettings {
        cluster_ip_range: "127.96.0.0/16".into(),
        node_port_range: "31800-31899".into(),
        data_path,
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
    let (web, kept_addr) = (format!("{host}:{WEB_PORT}"), format!("{host}:{KEPT_PORT}"));
    common::eventually("the node ports answer", T, || async {
        let mut kept = tokio::net::TcpStream::connect(&kept_addr).await.ok()?;
        (request(&web).await.is_ok() && exchange(&mut kept).await.is_ok()).then_some(())
    })
    .await;

    no_request_fails("rollout to a new version", host, async {
        skiff_ok(&m, &["set", "image", "deployment/web", "web=registry.k8s.io/busybox:1.27.2"]).await;
        skiff_ok(&m, &["set", "image", "deployment/kept", "nginx=skiff-bench/nginx:2"]).await;
        settled(&m, 3).await;
    })
    .await;

    no_request_fails("a deleted replica", host, async {
        for app in ["web", "kept"] {
            let pods = skiff_ok(&m, &["get", "pods", "-l", &format!("app={app}"), "-o", "name"]).await;
            let first = pods.lines().next().expect("a pod").trim_start_matches("pod/").to_string();
            skiff_ok(&m, &["delete", "pod", &first]).await;
        }
        settled(&m, 3).await;
    })
    .await;

    no_request_fails("scale from 3 to 1", host, async {
        skiff_ok(&m, &["scale", "deployment/web", "--replicas=1"]).await;
        skiff_ok(&m, &["scale", "deployment/kept", "--replicas=1"]).await;
        settled(&m, 1).await;
    })
    .await;
    cluster.shutdown().await;
}
