//! Services on an in-process cluster: cluster IPs and node ports allocated in the write that
//! creates a Service, never twice, kept across applies, released on delete; bad addresses refused
//! with the field and the holder named.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{skiff, skiff_ok, test_raft, TestCluster};

fn members(cluster: &TestCluster) -> String {
    cluster.nodes.keys().map(|id| cluster.addr(*id)).collect::<Vec<_>>().join(",")
}

async fn skiff_err(members: &str, args: &[&str]) -> String {
    let out = skiff(members, args).await;
    assert!(!out.status.success(), "skiff {args:?} should fail:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn service(dir: &Path, name: &str, extra_spec: &str) -> String {
    let text = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector: {{app: {name}}}\n  ports:\n  - port: 80\n{extra_spec}"
    );
    let path = dir.join(format!("{name}-{}.yaml", text.len()));
    std::fs::write(&path, text).expect("write manifest");
    path.display().to_string()
}

/// A field of Service `name`, by JSON pointer (`/spec/clusterIP`), as text.
async fn field(m: &str, name: &str, pointer: &str) -> String {
    let json = skiff_ok(m, &["get", "svc", name, "-o", "json"]).await;
    let value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    match value.pointer(pointer) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => panic!("Service {name} has no {pointer}: {json}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ips_and_node_ports_are_allocated_once_kept_across_applies_and_released_on_delete() {
    let cluster = TestCluster::start_without_controllers(3, test_raft()).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = members(&cluster);
    let dir = tempfile::tempdir().expect("tempdir");

    let a = service(dir.path(), "a", "");
    let b = service(dir.path(), "b", "    nodePort: 30080\n  type: NodePort\n");
    let c = service(dir.path(), "c", "  type: NodePort\n");
    let headless = service(dir.path(), "db", "  clusterIP: None\n");
    for file in [&a, &b, &c, &headless] {
        skiff_ok(&m, &["apply", "-f", file]).await;
    }
    let ip_a = field(&m, "a", "/spec/clusterIP").await;
    let ip_b = field(&m, "b", "/spec/clusterIP").await;
    let ip_c = field(&m, "c", "/spec/clusterIP").await;
    for ip in [&ip_a, &ip_b, &ip_c] {
        assert!(ip.starts_with("10.96."), "{ip} is not in 10.96.0.0/16");
    }
    assert!(ip_a != ip_b && ip_b != ip_c && ip_a != ip_c, "{ip_a} {ip_b} {ip_c}");
    assert_eq!(field(&m, "db", "/spec/clusterIP").await, "None");
    assert_eq!(field(&m, "b", "/spec/ports/0/nodePort").await, "30080");
    let port_c: u16 = field(&m, "c", "/spec/ports/0/nodePort").await.parse().expect("a node port");
    assert!((30000..=32767).contains(&port_c) && port_c != 30080, "{port_c}");

    // The same manifest again changes nothing: the address and the node port stay.
    assert_eq!(skiff_ok(&m, &["apply", "-f", &a]).await, "service/a unchanged\n");
    assert_eq!(skiff_ok(&m, &["apply", "-f", &c]).await, "service/c unchanged\n");
    assert_eq!(field(&m, "a", "/spec/clusterIP").await, ip_a);
    let table = skiff_ok(&m, &["get", "svc", "c", "--no-headers"]).await;
    let table = table.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(table.contains(&format!("NodePort {ip_c} <none> 80:{port_c}/TCP")), "{table}");

    // Bad addresses are refused with the field and who holds them; nothing is stored.
    let taken_ip = service(dir.path(), "d", &format!("  clusterIP: {ip_a}\n"));
    let err = skiff_err(&m, &["apply", "-f", &taken_ip]).await;
    assert!(err.contains("spec.clusterIP") && err.contains("already allocated to Service default/a"), "{err}");
    let outside = service(dir.path(), "d", "  clusterIP: 10.97.0.1\n");
    let err = skiff_err(&m, &["apply", "-f", &outside]).await;
    assert!(err.contains("not in the cluster's service range 10.96.0.0/16"), "{err}");
    let taken_port = service(dir.path(), "d", "    nodePort: 30080\n  type: NodePort\n");
    let err = skiff_err(&m, &["apply", "-f", &taken_port]).await;
    assert!(err.contains("spec.ports[0].nodePort") && err.contains("already allocated to Service default/b"), "{err}");
    let out_of_range = service(dir.path(), "d", "    nodePort: 40000\n  type: NodePort\n");
    let err = skiff_err(&m, &["apply", "-f", &out_of_range]).await;
    assert!(err.contains("nodePort") && err.contains("between 30000 and 32767"), "{err}");
    let headless_node_port = service(dir.path(), "d", "  clusterIP: None\n  type: NodePort\n");
    let err = skiff_err(&m, &["apply", "-f", &headless_node_port]).await;
    assert!(err.contains("spec.clusterIP"), "{err}");
    let moved = service(dir.path(), "a", "  clusterIP: 10.96.200.200\n");
    let err = skiff_err(&m, &["apply", "-f", &moved]).await;
    assert!(err.contains("cannot change"), "{err}");
    let err = skiff_err(&m, &["get", "svc", "d"]).await;
    assert!(err.contains("not found"), "{err}");

    // Deleting frees the address and the node port for the next Service.
    skiff_ok(&m, &["delete", "svc", "a", "b"]).await;
    skiff_ok(&m, &["apply", "-f", &taken_ip]).await;
    assert_eq!(field(&m, "d", "/spec/clusterIP").await, ip_a);
    let e = service(dir.path(), "e", "    nodePort: 30080\n  type: NodePort\n");
    skiff_ok(&m, &["apply", "-f", &e]).await;

    // A namespace takes its Services' addresses along.
    let ns = dir.path().join("ns.yaml");
    std::fs::write(&ns, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n").expect("write");
    skiff_ok(&m, &["apply", "-f", &ns.display().to_string()]).await;
    let in_prod = service(dir.path(), "f", "  clusterIP: 10.96.7.7\n");
    skiff_ok(&m, &["apply", "-f", &in_prod, "-n", "prod"]).await;
    let err = skiff_err(&m, &["apply", "-f", &in_prod]).await;
    assert!(err.contains("already allocated to Service prod/f"), "{err}");
    skiff_ok(&m, &["delete", "ns", "prod"]).await;
    skiff_ok(&m, &["apply", "-f", &in_prod]).await;

    // Every claim in the store belongs to a Service that exists.
    let store = cluster.nodes.values().next().expect("member").store();
    let (claims, _) = store.list("/allocations/", skiff_store::ReadConsistency::Linearizable).await.expect("list");
    let mut holders: Vec<String> = claims.iter().map(|kv| String::from_utf8_lossy(&kv.value).into_owned()).collect();
    holders.sort();
    // c: IP and node port; d: IP; e: IP and node port; f: IP (db is headless).
    assert_eq!(holders, ["default/c", "default/c", "default/d", "default/e", "default/e", "default/f"]);
    cluster.shutdown().await;
}

/// A backend on `ip:port` that answers every connection with its name and a newline.
async fn backend(ip: &str, port: u16, name: &'static str) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind((ip, port)).await.expect("bind backend");
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = conn.write_all(format!("{name}\n").as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    })
}

/// Which backend a new connection to `addr` reaches (`None`: it was closed without an answer).
async fn reach(addr: std::net::SocketAddr) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut conn =
        tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr)).await.ok()?.ok()?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(3), conn.read_to_string(&mut answer)).await.ok()?.ok()?;
    let name = answer.trim().to_string();
    (!name.is_empty()).then_some(name)
}

/// The backends `count` new connections to `addr` reach.
async fn reached(addr: std::net::SocketAddr, count: usize) -> Vec<Option<String>> {
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push(reach(addr).await);
    }
    out
}

fn web_pod(name: &str, port: u16) -> skiff_api::Object {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: web}}\nspec:\n  containers:\n  - name: web\n    image: web:1\n    ports:\n    - name: http\n      containerPort: {port}\n"
    );
    let loaded = skiff_api::manifest::load("pod.yaml", &yaml, skiff_api::manifest::UnknownFields::Strict);
    loaded.expect("pod manifest").manifests.remove(0).object
}

async fn set_pod_status(api: &skiff_apiserver::ApiServer, name: &str, ip: &str, ready: bool) {
    use skiff_api::kinds::pod::{PodCondition, PodStatus};
    use skiff_api::ResourceApi;
    let current = api.get(skiff_api::Kind::Pod, "default", name, skiff_api::api::Consistency::Linearizable);
    let skiff_api::Object::Pod(mut pod) = current.await.expect("get pod") else { panic!("a pod") };
    pod.status = Some(PodStatus {
        phase: Some("Running".into()),
        pod_ip: Some(ip.into()),
        conditions: vec![PodCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    pod.metadata.resource_version.clear();
    api.update_status(skiff_api::Object::Pod(pod)).await.expect("update status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_sends_cluster_ip_and_node_port_connections_to_ready_endpoints_only() {
    use skiff_api::ResourceApi;
    // A loopback service range: every 127/8 address is local, so the test needs no route.
    let services = skiff_server::config::ServiceSettings {
        cluster_ip_range: "127.96.0.0/16".into(),
        node_port_range: "31700-31799".into(),
        ..Default::default()
    };
    let cluster = TestCluster::start_with_services(1, test_raft(), services).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = members(&cluster);
    let api = cluster.nodes.values().next().expect("member").api().clone();

    // Three pods, each a backend on its own loopback address and the same port.
    let first = tokio::net::TcpListener::bind("127.0.0.2:0").await.expect("bind");
    let port = first.local_addr().expect("addr").port();
    drop(first);
    let mut backends = Vec::new();
    for (name, ip) in [("a", "127.0.0.2"), ("b", "127.0.0.3"), ("c", "127.0.0.4")] {
        backends.push(backend(ip, port, name).await);
        api.apply(web_pod(name, port), false).await.expect("create pod");
        set_pod_status(&api, name, ip, true).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let web = service(dir.path(), "web", "    targetPort: http\n  type: NodePort\n");
    skiff_ok(&m, &["apply", "-f", &web]).await;
    let ip = field(&m, "web", "/spec/clusterIP").await;
    let node_port: u16 = field(&m, "web", "/spec/ports/0/nodePort").await.parse().expect("node port");
    let cluster_addr: std::net::SocketAddr = format!("{ip}:80").parse().expect("addr");
    let node_addr: std::net::SocketAddr = format!("127.0.0.1:{node_port}").parse().expect("addr");

    let all = |seen: &[Option<String>]| {
        let mut names: Vec<String> = seen.iter().flatten().cloned().collect();
        names.sort();
        names.dedup();
        names
    };
    common::eventually("the cluster IP reaches all three pods", Duration::from_secs(5), || async {
        (all(&reached(cluster_addr, 9).await) == ["a", "b", "c"]).then_some(())
    })
    .await;
    let by_node_port = reached(node_addr, 9).await;
    assert_eq!(all(&by_node_port), ["a", "b", "c"], "{by_node_port:?}");
    assert!(by_node_port.iter().all(Option::is_some), "{by_node_port:?}");

    // A pod that turns unready leaves the endpoints within a second, and gets no new connection.
    let turned = std::time::Instant::now();
    set_pod_status(&api, "b", "127.0.0.3", false).await;
    common::eventually("b leaves the ready endpoints", Duration::from_secs(1), || async {
        let out = skiff_ok(&m, &["get", "endpointslices", "-l", "kubernetes.io/service-name=web", "-o", "json"]).await;
        let list: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        let ready_b = list["items"][0]["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["addresses"][0] == "127.0.0.3" && e["conditions"]["ready"] == true);
        (!ready_b).then_some(())
    })
    .await;
    println!("b left the ready endpoints {:?} after it turned unready", turned.elapsed());
    common::eventually("the proxy stops sending to b", Duration::from_secs(1), || async {
        (all(&reached(cluster_addr, 6).await) == ["a", "c"]).then_some(())
    })
    .await;
    let after = reached(cluster_addr, 12).await;
    assert_eq!(all(&after), ["a", "c"], "{after:?}");
    set_pod_status(&api, "b", "127.0.0.3", true).await;
    common::eventually("b joins again", Duration::from_secs(2), || async {
        (all(&reached(cluster_addr, 9).await) == ["a", "b", "c"]).then_some(())
    })
    .await;

    // A pod that died before the endpoints said so costs a retry, not a failed connection.
    backends[2].abort();
    let _ = (&mut backends[2]).await;
    let retried = reached(cluster_addr, 12).await;
    assert!(retried.iter().all(Option::is_some), "every connection is answered: {retried:?}");
    assert_eq!(all(&retried), ["a", "b"], "{retried:?}");

    // With no ready endpoint, serving-and-terminating ones take the connections while they drain.
    set_pod_status(&api, "c", "127.0.0.4", false).await;
    set_pod_status(&api, "a", "127.0.0.2", false).await;
    api.bind("default", "b", "node1").await.expect("bind b");
    api.delete(skiff_api::Kind::Pod, "default", "b", &Default::default()).await.expect("delete b");
    common::eventually("b is the terminating fallback", Duration::from_secs(2), || async {
        let seen = reached(cluster_addr, 3).await;
        (seen.iter().all(|s| s.as_deref() == Some("b"))).then_some(())
    })
    .await;

    // A Service whose selector matches nothing exists with one empty slice.
    let nothing = service(dir.path(), "nothing", "");
    skiff_ok(&m, &["apply", "-f", &nothing]).await;
    common::eventually("an empty slice", Duration::from_secs(2), || async {
        let out =
            skiff_ok(&m, &["get", "endpointslices", "-l", "kubernetes.io/service-name=nothing", "--no-headers"]).await;
        out.contains("<unset>").then_some(())
    })
    .await;
    let described = skiff_ok(&m, &["describe", "svc", "nothing"]).await;
    assert!(described.contains("no pod matches the selector"), "{described}");
    let described = skiff_ok(&m, &["describe", "svc", "web"]).await;
    let rows: Vec<String> = described.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert!(rows.contains(&"Endpoints: <none> (3 pods match the selector, none is ready)".to_string()), "{described}");
    assert!(rows.contains(&format!("127.0.0.3 {port} false true true node1 b")), "{described}");
    assert!(rows.contains(&format!("127.0.0.2 {port} false false false <none> a")), "{described}");
    cluster.shutdown().await;
}
