//! The resource API and the kubectl-style CLI end to end against an in-process three-member
//! cluster: apply, get in every output format, watch resuming from a resourceVersion, conflicts on
//! stale updates, graceful and cascading deletion, status and binding, and bad input refused
//! without harm.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{eventually, skiff, skiff_ok, test_raft, TestCluster};
use skiff_api::{Kind, Object};
use skiff_apiserver::keys::object_key;
use skiff_client::{CallKind, Client, ClientError};
use skiff_proto::api::resources_client::ResourcesClient;
use skiff_proto::api::{ApplyRequest, BindRequest, GetObjectRequest, ObjectRequest};
use tokio::io::AsyncBufReadExt;
use tonic::Code;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/k8s-examples")
}

fn members(cluster: &TestCluster) -> String {
    cluster.nodes.keys().map(|id| cluster.addr(*id)).collect::<Vec<_>>().join(",")
}

async fn skiff_err(members: &str, args: &[&str]) -> String {
    let out = skiff(members, args).await;
    assert!(!out.status.success(), "skiff {args:?} should fail:\n{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(1), "exit code of skiff {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write manifest");
    path.display().to_string()
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

async fn api<T, F, Fut>(client: &Client, kind: CallKind, f: F) -> Result<T, ClientError>
where
    F: Fn(ResourcesClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    client.call(kind, |ch| f(ResourcesClient::new(ch))).await.map(|r| r.into_inner())
}

const CONFIG_MAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {app: web}
data:
  mode: fast
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documentation_examples_apply_and_get_in_every_output_format() {
    let cluster = TestCluster::start_without_controllers(3, test_raft()).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = members(&cluster);
    // Two examples define a Deployment "nginx-deployment" with different selectors; a selector is
    // immutable (in Kubernetes too), so the second lives in a folder of its own, which the
    // README's `apply -f tests/data/k8s-examples/` leaves out, and goes to a namespace of its own.
    let scratch = tempfile::tempdir().expect("tempdir");
    let graceful = examples().join("graceful").display().to_string();
    let ns = write(scratch.path(), "ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: graceful\n");
    skiff_ok(&m, &["apply", "-f", &ns]).await;
    let out = skiff_ok(&m, &["apply", "-f", &graceful, "-n", "graceful"]).await;
    assert_eq!(out, "deployment.apps/nginx-deployment created\nservice/nginx-service created\n");
    let dir = examples().display().to_string();
    let out = skiff_ok(&m, &["apply", "-f", &dir]).await;
    for line in [
        "deployment.apps/backend created",
        "service/hello created",
        "pod/liveness-exec created",
        "pod/goproxy created",
        "deployment.apps/my-nginx created",
    ] {
        assert!(out.contains(line), "missing {line:?} in\n{out}");
    }
    // Applying again changes nothing.
    let again =
        skiff_ok(&m, &["apply", "-f", &dir, "-f", &examples().join("nginx-deployment.yaml").display().to_string()])
            .await;
    assert!(again.contains("deployment.apps/backend unchanged"), "{again}");

    // Tables with kubectl's columns.
    let pods = skiff_ok(&m, &["get", "pods"]).await;
    let header: Vec<&str> = pods.lines().next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert!(pods.lines().any(|l| l.starts_with("goproxy ") && l.contains("0/1") && l.contains("Pending")), "{pods}");
    let wide = skiff_ok(&m, &["get", "po", "-o", "wide"]).await;
    let header: Vec<&str> = wide.lines().next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"], "{wide}");
    let goproxy: Vec<&str> =
        wide.lines().find(|l| l.starts_with("goproxy ")).expect("goproxy row").split_whitespace().collect();
    assert_eq!(goproxy[5..], ["<none>", "<none>"], "an unbound pod has neither IP nor node: {wide}");
    let deploy = skiff_ok(&m, &["get", "deploy"]).await;
    assert!(deploy.starts_with("NAME"), "{deploy}");
    assert!(
        deploy.lines().any(|l| l.split_whitespace().collect::<Vec<_>>()
            == ["backend", "0/3", "0", "0", l.split_whitespace().last().unwrap_or("")]),
        "{deploy}"
    );
    let all = skiff_ok(&m, &["get", "svc", "-A"]).await;
    assert!(all.starts_with("NAMESPACE"), "{all}");

    // json: the Kubernetes shape with the server-set fields.
    let obj = json(&skiff_ok(&m, &["get", "deployment", "backend", "-o", "json"]).await);
    assert_eq!(obj["apiVersion"], "apps/v1");
    assert_eq!(obj["kind"], "Deployment");
    assert_eq!(obj["metadata"]["generation"], 1);
    assert!(obj["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(obj["metadata"]["resourceVersion"].as_str().is_some_and(|v| v.parse::<u64>().is_ok()));
    assert!(obj["metadata"]["creationTimestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert_eq!(obj["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], "25%");

    // yaml parses back into the same object.
    let yaml = skiff_ok(&m, &["get", "deploy/backend", "-o", "yaml"]).await;
    let loaded = skiff_api::manifest::load("out.yaml", &yaml, skiff_api::manifest::UnknownFields::Strict)
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(loaded.manifests[0].object.to_value(), obj);

    // A list is a List with its resourceVersion.
    let list = json(&skiff_ok(&m, &["get", "pods", "-o", "json"]).await);
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(3));
    assert!(list["metadata"]["resourceVersion"].as_str().is_some_and(|v| v != "0"));

    let names = skiff_ok(&m, &["get", "pods", "-l", "test=liveness", "-o", "name"]).await;
    assert_eq!(names, "pod/liveness-exec\npod/liveness-http\n");
    let names = skiff_ok(&m, &["get", "svc,deploy", "-o", "name", "--field-selector", "metadata.name=my-nginx"]).await;
    assert_eq!(names, "service/my-nginx\ndeployment.apps/my-nginx\n");

    let described = skiff_ok(&m, &["describe", "pod", "liveness-http"]).await;
    assert!(described.contains("Liveness:") && described.contains("http-get http://:8080/healthz"), "{described}");
    assert!(described.contains("Events:"), "{described}");

    let kinds = skiff_ok(&m, &["api-resources"]).await;
    let rows: Vec<String> = kinds.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).collect();
    assert!(rows.contains(&"deployments deploy apps/v1 true Deployment".to_string()), "{kinds}");
    assert!(rows.contains(&"endpointslices discovery.k8s.io/v1 true EndpointSlice".to_string()), "{kinds}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_keep_server_fields_and_stale_updates_conflict() {
    // The API alone: no deployment controller rewriting the status this test writes.
    let cluster = TestCluster::start_without_controllers(3, test_raft()).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = members(&cluster);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "deploy.yaml",
        &std::fs::read_to_string(examples().join("nginx-deployment.yaml")).expect("read"),
    );
    skiff_ok(&m, &["apply", "-f", &file]).await;
    let first = json(&skiff_ok(&m, &["get", "deploy", "nginx-deployment", "-o", "json"]).await);

    // A controller writes status through its own call.
    let mut with_status = first.clone();
    with_status["status"] = serde_json::json!({"observedGeneration": 1, "replicas": 3, "readyReplicas": 2});
    with_status["spec"]["replicas"] = serde_json::json!(99); // ignored by the status call
    let client = cluster.client();
    let bytes = serde_json::to_vec(&with_status).expect("json");
    api(&client, CallKind::Write, |mut c| {
        let bytes = bytes.clone();
        async move { c.update_status(ObjectRequest { object: bytes }).await }
    })
    .await
    .expect("status update");

    // The user changes the spec: generation moves, uid, creation time and status stay.
    let changed = std::fs::read_to_string(&file).expect("read").replace("replicas: 3", "replicas: 5");
    std::fs::write(&file, changed).expect("write");
    assert!(skiff_ok(&m, &["apply", "-f", &file]).await.contains("configured"));
    let second = json(&skiff_ok(&m, &["get", "deploy", "nginx-deployment", "-o", "json"]).await);
    assert_eq!(second["spec"]["replicas"], 5);
    assert_eq!(second["metadata"]["generation"], 2);
    assert_eq!(second["metadata"]["uid"], first["metadata"]["uid"]);
    assert_eq!(second["metadata"]["creationTimestamp"], first["metadata"]["creationTimestamp"]);
    assert_eq!(second["status"]["readyReplicas"], 2);
    assert_eq!(second["status"]["observedGeneration"], 1);

    // An update based on the first read is stale now.
    let mut stale = first.clone();
    stale["spec"]["replicas"] = serde_json::json!(7);
    let stale_file = write(dir.path(), "stale.json", &stale.to_string());
    let err = skiff_err(&m, &["apply", "-f", &stale_file]).await;
    assert!(err.contains("was modified") && err.contains("read it again"), "{err}");
    let after = json(&skiff_ok(&m, &["get", "deploy", "nginx-deployment", "-o", "json"]).await);
    assert_eq!(after["spec"]["replicas"], 5, "the stale update changed nothing");

    // With the current resourceVersion it goes through.
    let mut fresh = after.clone();
    fresh["spec"]["replicas"] = serde_json::json!(7);
    let fresh_file = write(dir.path(), "fresh.json", &fresh.to_string());
    assert!(skiff_ok(&m, &["apply", "-f", &fresh_file]).await.contains("configured"));

    // What Kubernetes does not let an update change.
    let moved = std::fs::read_to_string(&file).expect("read").replace("app.kubernetes.io/name: nginx", "app: other");
    std::fs::write(&file, moved).expect("write");
    let err = skiff_err(&m, &["apply", "-f", &file]).await;
    assert!(err.contains("spec.selector: field is immutable"), "{err}");
    let pod = write(dir.path(), "pod.yaml", &pod_yaml("web", None, None));
    skiff_ok(&m, &["apply", "-f", &pod]).await;
    std::fs::write(&pod, pod_yaml("web", None, None).replace("nginx:1.14.2", "nginx:1.15")).expect("write");
    assert!(skiff_ok(&m, &["apply", "-f", &pod]).await.contains("pod/web configured"), "a new image is allowed");
    std::fs::write(&pod, pod_yaml("web", None, None).replace("nginx:1.14.2", "nginx")).expect("write");
    assert!(
        skiff_ok(&m, &["apply", "-f", &pod]).await.contains("configured"),
        "also one whose pull policy default differs"
    );
    std::fs::write(&pod, pod_yaml("web", None, None).replace("45", "10")).expect("write");
    let err = skiff_err(&m, &["apply", "-f", &pod]).await;
    assert!(err.contains("a pod's spec cannot change after it is created"), "{err}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_from_a_resource_version_on_any_member() {
    let cluster = TestCluster::start(3, test_raft()).await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let m = members(&cluster);
    let dir = tempfile::tempdir().expect("tempdir");
    let cm = write(dir.path(), "cm.yaml", CONFIG_MAP);
    skiff_ok(&m, &["apply", "-f", &cm]).await;
    let list = json(&skiff_ok(&m, &["get", "cm", "-o", "json"]).await);
    let rv = list["metadata"]["resourceVersion"].as_str().expect("rv").to_string();

    // Changes after the list.
    std::fs::write(&cm, CONFIG_MAP.replace("fast", "slow")).expect("write");
    skiff_ok(&m, &["apply", "-f", &cm]).await;
    let other = write(dir.path(), "other.yaml", &CONFIG_MAP.replace("settings", "other"));
    skiff_ok(&m, &["apply", "-f", &other]).await;
    skiff_ok(&m, &["delete", "cm", "other"]).await;

    // A watch from the list's resourceVersion on a follower sees exactly those, in order.
    let follower = cluster.nodes.keys().copied().find(|id| *id != leader).expect("a follower");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("--credentials")
        .arg(common::credentials_for(&cluster.addr(follower)))
        .args(["--members", &cluster.addr(follower), "get", "configmaps", "--watch-only"])
        .args(["--resource-version", &rv, "-o", "json", "--output-watch-events"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn watch");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("watch event in time")
            .expect("read")
            .expect("a line");
        let event = json(&line);
        seen.push(format!(
            "{} {} {}",
            event["type"].as_str().unwrap_or(""),
            event["object"]["metadata"]["name"].as_str().unwrap_or(""),
            event["object"]["data"]["mode"].as_str().unwrap_or("")
        ));
    }
    assert_eq!(seen, ["MODIFIED settings slow", "ADDED other fast", "DELETED other fast"]);
    child.kill().await.expect("kill watch");

    // A resourceVersion older than the retained history gets a clear error.
    cluster.shutdown().await;
    let mut raft = test_raft();
    raft.watch_history_revisions = 5;
    let cluster = TestCluster::start(1, raft).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = members(&cluster);
    for i in 0..20 {
        let file = write(dir.path(), &format!("cm{i}.yaml"), &CONFIG_MAP.replace("settings", &format!("cm{i}")));
        skiff_ok(&m, &["apply", "-f", &file]).await;
    }
    let err = skiff_err(&m, &["get", "cm", "--watch-only", "--resource-version", "2"]).await;
    assert!(err.contains("older than the retained watch history") && err.contains("list again"), "{err}");
    cluster.shutdown().await;
}

fn pod_yaml(name: &str, node: Option<&str>, owner: Option<(&str, &str)>) -> String {
    let mut text = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: web}}\n");
    if let Some((owner, uid)) = owner {
        text.push_str(&format!(
            "  ownerReferences:\n  - {{apiVersion: apps/v1, kind: Deployment, name: {owner}, uid: {uid}, controller: true}}\n"
        ));
    }
    text.push_str("spec:\n  terminationGracePeriodSeconds: 45\n");
    if let Some(node) = node {
        text.push_str(&format!("  nodeName: {node}\n"));
    }
    text.push_str("  containers:\n  - {name: web, image: 'nginx:1.14.2'}\n");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_owner_deletes_its_dependants_in_one_write_and_bound_pods_gracefully() {
    let cluster = TestCluster::start_without_controllers(3, test_raft()).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = members(&cluster);
    let dir = tempfile::tempdir().expect("tempdir");
    let deploy = examples().join("nginx-deployment.yaml").display().to_string();
    skiff_ok(&m, &["apply", "-f", &deploy]).await;
    let uid = json(&skiff_ok(&m, &["get", "deploy", "nginx-deployment", "-o", "json"]).await)["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let owner = Some(("nginx-deployment", uid.as_str()));
    let mut all = pod_yaml("web-1", None, owner);
    all.push_str("---\n");
    all.push_str(&pod_yaml("web-2", Some("node1"), owner));
    all.push_str("---\n");
    all.push_str(&pod_yaml("standalone", None, None));
    let pods = write(dir.path(), "pods.yaml", &all);
    skiff_ok(&m, &["apply", "-f", &pods]).await;

    let out = skiff_ok(&m, &["delete", "deployment", "nginx-deployment", "--wait=false"]).await;
    assert!(out.contains("Pod \"web-1\" deleted with its owner"), "{out}");
    assert!(out.contains("Pod \"web-2\" deleted with its owner"), "{out}");
    assert!(out.contains("deployment.apps \"nginx-deployment\" deleted"), "{out}");

    // The unbound dependant is gone; the bound one is terminating with the pod's grace period;
    // the pod without an owner is untouched.
    let names = skiff_ok(&m, &["get", "pods", "-o", "name"]).await;
    assert_eq!(names, "pod/standalone\npod/web-2\n");
    let web2 = json(&skiff_ok(&m, &["get", "pod", "web-2", "-o", "json"]).await);
    assert_eq!(web2["metadata"]["deletionGracePeriodSeconds"], 45);
    assert!(web2["metadata"]["deletionTimestamp"].as_str().is_some());
    let table = skiff_ok(&m, &["get", "pods"]).await;
    assert!(table.lines().any(|l| l.starts_with("web-2") && l.contains("Terminating")), "{table}");

    // Everything went in one write: the deletion of web-1 and the marking of web-2 share a revision.
    let store = cluster.nodes.values().next().expect("member").store();
    let rv2: u64 = web2["metadata"]["resourceVersion"].as_str().expect("rv").parse().expect("number");
    assert!(store.get_local(&object_key(Kind::Deployment, "default", "nginx-deployment")).expect("read").is_none());
    let mut watch = store.watch("/pods/", rv2 - 1, Duration::from_secs(5)).expect("watch");
    let mut revisions = Vec::new();
    while revisions.len() < 2 {
        if let Some(Ok(skiff_store::watch::WatchItem::Change(e))) = watch.recv().await {
            revisions.push((e.kv.key.clone(), e.revision));
        }
    }
    assert_eq!(revisions.iter().map(|(_, r)| *r).collect::<Vec<_>>(), [rv2, rv2], "{revisions:?}");

    // A second delete does not restart the grace period; --grace-period=0 needs --force, then removes it.
    // --grace-period=0 without --force is 1 s (as kubectl); with --force the object goes at once.
    let out = skiff(&m, &["delete", "pod", "web-2", "--grace-period=0", "--wait=false"]).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("add --force"), "{out:?}");
    let web2 = json(&skiff_ok(&m, &["get", "pod", "web-2", "-o", "json"]).await);
    assert_eq!(web2["metadata"]["deletionGracePeriodSeconds"], 1, "a shorter grace period applies");
    skiff_ok(&m, &["delete", "pod", "web-2", "--grace-period=0", "--force"]).await;
    assert_eq!(skiff_ok(&m, &["get", "pods", "-o", "name"]).await, "pod/standalone\n");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_happens_once_and_status_writes_leave_the_spec_alone() {
    let cluster = TestCluster::start(3, test_raft()).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = members(&cluster);
    let dir = tempfile::tempdir().expect("tempdir");
    let pod = write(dir.path(), "pod.yaml", &pod_yaml("web", None, None));
    skiff_ok(&m, &["apply", "-f", &pod]).await;
    let client = cluster.client_of(3);
    let bind = |node: &'static str| {
        let client = client.clone();
        async move {
            api(&client, CallKind::Write, |mut c| async move {
                c.bind(BindRequest { namespace: String::new(), name: "web".into(), node_name: node.into() }).await
            })
            .await
        }
    };
    let bound = bind("node2").await.expect("first binding");
    let Object::Pod(p) = Object::from_json(&bound.object).expect("pod") else { panic!("a pod") };
    assert_eq!(p.spec.node_name.as_deref(), Some("node2"));
    assert!(p.status.expect("status").conditions.iter().any(|c| c.type_ == "PodScheduled" && c.status == "True"));
    let second = bind("node3").await.expect_err("second binding");
    assert_eq!(second.code(), Code::FailedPrecondition);
    assert!(second.to_string().contains("already bound to node \"node2\""), "{second}");

    // A user's re-apply keeps the binding.
    assert!(skiff_ok(&m, &["apply", "-f", &pod]).await.contains("pod/web unchanged"));
    let got = api(&client, CallKind::Read, |mut c| async move {
        c.get(GetObjectRequest { kind: "po".into(), namespace: "default".into(), name: "web".into(), stale: false })
            .await
    })
    .await
    .expect("get");
    let Object::Pod(p) = Object::from_json(&got.object).expect("pod") else { panic!("a pod") };
    assert_eq!(p.spec.node_name.as_deref(), Some("node2"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_its_place_and_nothing_is_applied() {
    let cluster = TestCluster::start(3, test_raft()).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = members(&cluster);
    let dir = tempfile::tempdir().expect("tempdir");

    let malformed = write(dir.path(), "malformed.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [x\n");
    let err = skiff_err(&m, &["apply", "-f", &malformed]).await;
    assert!(err.contains(&format!("{malformed}:")) && err.contains("invalid YAML"), "{err}");
    let loc = err.split(&format!("{malformed}:")).nth(1).expect("location");
    let mut parts = loc.split(':');
    assert!(
        parts.next().is_some_and(|l| l.parse::<u32>().is_ok())
            && parts.next().is_some_and(|c| c.parse::<u32>().is_ok()),
        "{err}"
    );

    let secret = write(dir.path(), "secret.yaml", "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n");
    let err = skiff_err(&m, &["apply", "-f", &secret]).await;
    assert!(err.contains("unknown kind \"Secret\": Skiff serves ConfigMap"), "{err}");

    let unknown = write(dir.path(), "unknown.yaml", &CONFIG_MAP.replace("\ndata:", "\nimmutible: true\ndata:"));
    let err = skiff_err(&m, &["apply", "-f", &unknown]).await;
    assert!(err.contains(&format!("{unknown}:6:1: ConfigMap \"settings\": unknown field \"immutible\"")), "{err}");

    // An invalid document in the middle: nothing from the file (or any other file) is applied.
    let good = write(dir.path(), "good.yaml", CONFIG_MAP);
    let middle = format!(
        "{}---\n{}---\n{}",
        CONFIG_MAP.replace("settings", "first"),
        pod_yaml("Bad_Pod", None, None),
        CONFIG_MAP.replace("settings", "last")
    );
    let multi = write(dir.path(), "multi.yaml", &middle);
    let err = skiff_err(&m, &["apply", "-f", &good, "-f", &multi]).await;
    assert!(err.contains("Pod \"Bad_Pod\": metadata.name") && err.contains("nothing was applied"), "{err}");
    let out = skiff(&m, &["get", "cm", "-o", "name"]).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "nothing was applied");

    let big = write(dir.path(), "big.yaml", &format!("{CONFIG_MAP}  blob: {}\n", "x".repeat(1024 * 1024)));
    let err = skiff_err(&m, &["apply", "-f", &big]).await;
    assert!(err.contains("more than the limit of 1048576 bytes"), "{err}");

    // The server validates too: a bad object sent directly never reaches the Raft log.
    let client = cluster.client();
    let leader = cluster.leader(Duration::from_secs(30)).await;
    // The leader's own first writes (cluster id, default namespace, the CA record) are in first.
    let store = cluster.nodes[&leader].store();
    eventually("the leader's first writes", Duration::from_secs(10), || async {
        let keys = ["/skiff/cluster-id", "/namespaces/default", "/skiff/security/cluster"];
        keys.iter().all(|k| store.get_local(k).ok().flatten().is_some()).then_some(())
    })
    .await;
    let last_index = || cluster.nodes[&leader].store().raft().metrics().borrow().last_log_index.unwrap_or(0);
    let before = last_index();
    let bad = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": -2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "x"}]}}}});
    let bytes = serde_json::to_vec(&bad).expect("json");
    let status = api(&client, CallKind::Write, |mut c| {
        let bytes = bytes.clone();
        async move { c.apply(ApplyRequest { object: bytes, dry_run: false }).await }
    })
    .await
    .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.to_string().contains("Deployment \"web\" is invalid: spec.replicas: -2 must be >= 0"), "{status}");
    let unknown_field =
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "extra": 1});
    let bytes = serde_json::to_vec(&unknown_field).expect("json");
    let status = api(&client, CallKind::Write, |mut c| {
        let bytes = bytes.clone();
        async move { c.apply(ApplyRequest { object: bytes, dry_run: false }).await }
    })
    .await
    .expect_err("unknown field");
    assert!(status.to_string().contains("unknown field(s) extra"), "{status}");
    // The next accepted write takes the very next log index: nothing came between.
    let marker = serde_json::to_vec(
        &serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "marker"}}),
    )
    .expect("json");
    let applied = api(&client, CallKind::Write, |mut c| {
        let marker = marker.clone();
        async move { c.apply(ApplyRequest { object: marker, dry_run: false }).await }
    })
    .await
    .expect("the marker is applied");
    let applied: serde_json::Value = serde_json::from_slice(&applied.object).expect("json");
    assert_eq!(
        applied["metadata"]["resourceVersion"].as_str(),
        Some((before + 1).to_string().as_str()),
        "nothing reached the log between index {before} and the marker"
    );
    assert_eq!(last_index(), before + 1);

    // A namespace must exist.
    let elsewhere = write(dir.path(), "elsewhere.yaml", CONFIG_MAP);
    let err = skiff_err(&m, &["apply", "-f", &elsewhere, "-n", "prod"]).await;
    assert!(err.contains("Namespace \"prod\" not found"), "{err}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_store_nothing_and_a_down_member_is_skipped() {
    let mut cluster = TestCluster::start(3, test_raft()).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = members(&cluster);
    let dir = tempfile::tempdir().expect("tempdir");
    let cm = write(dir.path(), "cm.yaml", CONFIG_MAP);
    // Client dry run needs no server at all.
    let out = skiff_ok("127.0.0.1:1", &["apply", "-f", &cm, "--dry-run=client"]).await;
    assert_eq!(out, "configmap/settings valid (client dry run: nothing sent)\n");
    let out = skiff_ok(&m, &["apply", "-f", &cm, "--dry-run=server", "-o", "json"]).await;
    assert_eq!(json(&out)["metadata"]["namespace"], "default", "server defaults applied");
    assert_eq!(skiff_ok(&m, &["get", "cm", "-o", "name"]).await, "");

    // Member 1 goes down; the CLI, given it first, moves on to the next.
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let down = if leader == 1 { 2 } else { 1 };
    let order = format!("{},{},{}", cluster.addr(down), cluster.addr(leader), cluster.addr(6 - down - leader));
    cluster.stop(down).await;
    let out = skiff_ok(&order, &["apply", "-f", &cm]).await;
    assert_eq!(out, "configmap/settings created\n");
    let got = eventually("the object on the remaining members", Duration::from_secs(10), || async {
        let out = skiff(&order, &["get", "cm", "settings", "-o", "name"]).await;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await;
    assert_eq!(got, "configmap/settings\n");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_scope_objects_and_take_them_along_when_deleted() {
    let cluster = TestCluster::start(3, test_raft()).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = members(&cluster);
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = write(dir.path(), "ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: prod\n");
    let cm = write(dir.path(), "cm.yaml", CONFIG_MAP);
    skiff_ok(&m, &["apply", "-f", &ns]).await;
    skiff_ok(&m, &["apply", "-f", &cm, "-n", "prod"]).await;
    skiff_ok(&m, &["apply", "-f", &cm]).await;
    let all = skiff_ok(&m, &["get", "cm", "-A", "--no-headers"]).await;
    let rows: Vec<Vec<&str>> = all.lines().map(|l| l.split_whitespace().take(2).collect()).collect();
    assert_eq!(rows, [["default", "settings"], ["prod", "settings"]]);
    // Cluster-scoped kinds have no namespace in their key.
    let store = cluster.nodes.values().next().expect("member").store();
    eventually("namespace replicated", Duration::from_secs(5), || async {
        store.get_local("/namespaces/prod").ok().flatten().map(|_| ())
    })
    .await;
    assert!(store.get_local("/configmaps/prod/settings").expect("read").is_some());

    let out = skiff_ok(&m, &["delete", "ns", "prod"]).await;
    assert!(out.contains("ConfigMap \"settings\" in namespace \"prod\" deleted with its owner"), "{out}");
    assert_eq!(skiff_ok(&m, &["get", "cm", "-A", "-o", "name"]).await, "configmap/settings\n");
    let err = skiff_err(&m, &["delete", "ns", "default"]).await;
    assert!(err.contains("cannot be deleted"), "{err}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_stdin_watch_and_describe_events() {
    let cluster = TestCluster::start(3, test_raft()).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = members(&cluster);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("nested")).expect("mkdir");
    write(dir.path(), "a.yaml", CONFIG_MAP);
    write(&dir.path().join("nested"), "b.yml", &CONFIG_MAP.replace("settings", "nested"));
    write(dir.path(), "notes.txt", "not a manifest");
    let top = dir.path().display().to_string();
    // Without -R only the directory's own files; with -R its subdirectories too (as kubectl does).
    assert_eq!(skiff_ok(&m, &["apply", "-f", &top]).await, "configmap/settings created\n");
    assert_eq!(
        skiff_ok(&m, &["apply", "-f", &top, "-R"]).await,
        "configmap/settings unchanged\nconfigmap/nested created\n"
    );

    // `-f -` reads stdin; --validate=warn applies and prints the unknown field.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("--credentials")
        .arg(common::credentials_for(&m))
        .args(["--members", &m, "apply", "-f", "-", "--validate=warn"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let input = CONFIG_MAP.replace("settings", "piped").replace("\ndata:", "\nextra: 1\ndata:");
    tokio::io::AsyncWriteExt::write_all(&mut child.stdin.take().expect("stdin"), input.as_bytes())
        .await
        .expect("write");
    let out = child.wait_with_output().await.expect("wait");
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "configmap/piped created\n");
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("Warning: <stdin>:6:1: ConfigMap \"piped\": unknown field \"extra\""));

    // `get -w` prints the table, then a row per change.
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("--credentials")
        .arg(common::credentials_for(&m))
        .args(["--members", &m, "get", "cm", "-w", "-l", "app=web"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn watch");
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().expect("stdout")).lines();
    assert!(next_line(&mut lines).await.starts_with("NAME"));
    let mut names = vec![next_line(&mut lines).await, next_line(&mut lines).await, next_line(&mut lines).await];
    names.sort();
    assert!(
        names[0].starts_with("nested ") && names[1].starts_with("piped ") && names[2].starts_with("settings "),
        "{names:?}"
    );
    let late = write(dir.path(), "late.yaml", &CONFIG_MAP.replace("settings", "late"));
    skiff_ok(&m, &["apply", "-f", &late]).await;
    assert!(next_line(&mut lines).await.starts_with("late "));
    watch.kill().await.expect("kill");

    // describe lists the object's events.
    let pod = write(dir.path(), "pod.yaml", &pod_yaml("web", None, None));
    skiff_ok(&m, &["apply", "-f", &pod]).await;
    let uid = json(&skiff_ok(&m, &["get", "pod", "web", "-o", "json"]).await)["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let event = format!(
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: web.1\ninvolvedObject: {{kind: Pod, name: web, namespace: default, uid: {uid}}}\nreason: Scheduled\nmessage: Successfully assigned default/web to node2\ntype: Normal\nsource: {{component: scheduler}}\nfirstTimestamp: \"2026-11-25T10:00:00Z\"\nlastTimestamp: \"2026-11-25T10:00:00Z\"\ncount: 1\n"
    );
    let event = write(dir.path(), "event.yaml", &event);
    skiff_ok(&m, &["apply", "-f", &event]).await;
    let described = skiff_ok(&m, &["describe", "po/web"]).await;
    let events = described.split("Events:").nth(1).expect("an Events section");
    assert!(events.contains("Normal") && events.contains("Scheduled") && events.contains("scheduler"), "{described}");
    assert!(events.contains("Successfully assigned default/web to node2"), "{described}");
    let table = skiff_ok(&m, &["get", "ev"]).await;
    assert!(table.contains("pod/web") && table.contains("Scheduled"), "{table}");
    cluster.shutdown().await;
}

async fn next_line(lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("a line in time")
        .expect("read")
        .expect("a line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_moves_to_another_member_when_its_member_goes_away() {
    let mut cluster = TestCluster::start(3, test_raft()).await;
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let follower = cluster.nodes.keys().copied().find(|id| *id != leader).expect("a follower");
    let m = members(&cluster);
    let dir = tempfile::tempdir().expect("tempdir");
    let first = write(dir.path(), "first.yaml", CONFIG_MAP);
    skiff_ok(&m, &["apply", "-f", &first]).await;
    // The watch is served by the follower first (listed first), the leader next.
    let order = format!("{},{}", cluster.addr(follower), cluster.addr(leader));
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("--credentials")
        .arg(common::credentials_for(&order))
        .args(["--members", &order, "get", "cm", "-w", "--no-headers"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn watch");
    let mut lines = tokio::io::BufReader::new(watch.stdout.take().expect("stdout")).lines();
    assert!(next_line(&mut lines).await.starts_with("settings "));
    cluster.stop(follower).await;
    let second = write(dir.path(), "second.yaml", &CONFIG_MAP.replace("settings", "second"));
    skiff_ok(&cluster.addr(leader), &["apply", "-f", &second]).await;
    assert!(next_line(&mut lines).await.starts_with("second "), "the change after the member went away");
    watch.kill().await.expect("kill");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_conventions_hold() {
    let cluster = TestCluster::start(3, test_raft()).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = members(&cluster);
    let dir = tempfile::tempdir().expect("tempdir");
    let two = write(dir.path(), "two.yaml", &format!("{CONFIG_MAP}---\n{}", CONFIG_MAP.replace("settings", "more")));
    // Several objects printed by apply are one List.
    let list = json(&skiff_ok(&m, &["apply", "-f", &two, "-o", "json"]).await);
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    let err = skiff_err(&m, &["get", "cm", "settings", "-A"]).await;
    assert!(err.contains("across all namespaces"), "{err}");
    // A namespace on a cluster-scoped object is dropped, as Kubernetes does.
    let ns = write(
        dir.path(),
        "ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n  namespace: default\n",
    );
    skiff_ok(&m, &["apply", "-f", &ns]).await;
    let got = json(&skiff_ok(&m, &["get", "ns", "team", "-o", "json"]).await);
    assert!(got["metadata"].get("namespace").is_none(), "{got}");
    // generateName does not go with apply.
    let generated = write(dir.path(), "gen.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: job-\n");
    let err = skiff_err(&m, &["apply", "-f", &generated]).await;
    assert!(err.contains("apply needs metadata.name"), "{err}");
    // describe without a name describes every object of the kind.
    let described = skiff_ok(&m, &["describe", "cm"]).await;
    assert!(
        described.contains("Name:                   more") && described.contains("Name:                   settings"),
        "{described}"
    );
    // delete -f only needs the names: a file that no longer validates still deletes its objects.
    let broken =
        write(dir.path(), "broken.yaml", &format!("{}  extra: field\n", CONFIG_MAP.replace("fast", "fast\nbogus:")));
    let out = skiff_ok(&m, &["delete", "-f", &broken]).await;
    assert_eq!(out, "configmap \"settings\" deleted\n");
    cluster.shutdown().await;
}

/// A watch of config maps labelled `app=web`, from `from`.
async fn watch_web(api: &skiff_apiserver::ApiServer, from: u64) -> skiff_api::api::WatchStream {
    use skiff_api::api::{Filter, ResourceApi, WatchOptions};
    let filter = Filter {
        namespace: Some("default".into()),
        labels: skiff_api::selector::Selector::parse("app=web").expect("selector"),
        ..Default::default()
    };
    let options = WatchOptions { filter, resource_version: from, bookmark_every: Duration::from_secs(1) };
    api.watch(Kind::ConfigMap, options).await.expect("watch")
}

/// The next `count` events of `events`, as (type, the object's `data.v`).
async fn next_events(events: &mut skiff_api::api::WatchStream, count: usize) -> Vec<(String, String)> {
    use futures::StreamExt;
    use skiff_api::api::WatchEvent;
    let mut seen = Vec::new();
    while seen.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
        let event = next.expect("an event within 10 s").expect("the watch goes on").expect("no error");
        let (kind, object) = match event {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            WatchEvent::Bookmark(_) => continue,
        };
        let Object::ConfigMap(c) = object else { panic!("a config map") };
        seen.push((kind.to_string(), c.data.get("v").cloned().unwrap_or_default()));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_label_selected_watch_sees_objects_enter_and_leave_the_selector() {
    use skiff_api::api::{DeleteOptions, ResourceApi};
    let cluster = TestCluster::start(1, test_raft()).await;
    cluster.leader(Duration::from_secs(10)).await;
    let api = cluster.nodes[&1].api().clone();
    let config_map = |app: &str, v: &str| {
        let mut c = skiff_api::kinds::ConfigMap::default();
        c.metadata.name = "c".into();
        c.metadata.labels.insert("app".into(), app.into());
        c.data.insert("v".into(), v.into());
        Object::ConfigMap(c)
    };
    let (created, _) = api.apply(config_map("web", "1"), false).await.expect("create");
    let from: u64 = created.meta().resource_version.parse().expect("rv");
    // One watch is open before the changes (it sees them live), one opens after (from the history).
    let mut live = watch_web(&api, from).await;
    for (app, v) in [("web", "2"), ("other", "3"), ("other", "4"), ("web", "5")] {
        api.apply(config_map(app, v), false).await.expect("apply");
    }
    api.delete(Kind::ConfigMap, "default", "c", &DeleteOptions::default()).await.expect("delete");
    let expected: Vec<(String, String)> = [("MODIFIED", "2"), ("DELETED", "3"), ("ADDED", "5"), ("DELETED", "5")]
        .iter()
        .map(|(t, v)| (t.to_string(), v.to_string()))
        .collect();
    assert_eq!(next_events(&mut live, 4).await, expected, "leaving the selector is a DELETED, entering an ADDED");
    let mut replayed = watch_web(&api, from).await;
    assert_eq!(next_events(&mut replayed, 4).await, expected, "the same from the history");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_only_list_and_watch_carry_the_metadata_and_nothing_else() {
    use futures::StreamExt;
    use skiff_api::api::{Consistency, Filter, ResourceApi, WatchEvent, WatchOptions};
    let cluster = TestCluster::start(1, test_raft()).await;
    cluster.leader(Duration::from_secs(10)).await;
    let api = cluster.nodes[&1].api().clone();
    let config_map = |name: &str, app: &str| {
        let mut c = skiff_api::kinds::ConfigMap::default();
        c.metadata.name = name.into();
        c.metadata.labels.insert("app".into(), app.into());
        c.data.insert("v".into(), "payload".into());
        Object::ConfigMap(c)
    };
    let (created, _) = api.apply(config_map("a", "web"), false).await.expect("create a");
    api.apply(config_map("b", "db"), false).await.expect("create b");
    let from: u64 = created.meta().resource_version.parse().expect("rv");

    let only_web = Filter {
        labels: skiff_api::selector::Selector::parse("app=web").expect("selector"),
        metadata_only: true,
        ..Default::default()
    };
    let listed = api.list(Kind::ConfigMap, &only_web, Consistency::Linearizable).await.expect("list");
    assert_eq!(listed.items.len(), 1, "the label selector still applies");
    let Object::ConfigMap(c) = &listed.items[0] else { panic!("a config map") };
    assert_eq!((c.metadata.name.as_str(), c.metadata.uid.as_str()), ("a", created.meta().uid.as_str()));
    assert_eq!(c.metadata.resource_version, created.meta().resource_version);
    assert!(c.data.is_empty(), "no data in a metadata-only list: {c:?}");

    // A field selector needs the whole object to match, but the reader still gets metadata only.
    let by_field = Filter {
        fields: skiff_api::fields::FieldSelector::parse("metadata.name=a").expect("fields"),
        metadata_only: true,
        ..Default::default()
    };
    let options = WatchOptions { filter: by_field, resource_version: from - 1, bookmark_every: Duration::from_secs(1) };
    let mut events = api.watch(Kind::ConfigMap, options).await.expect("watch");
    let event = loop {
        let next = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
        match next.expect("an event within 10 s").expect("the watch goes on").expect("no error") {
            WatchEvent::Bookmark(_) => continue,
            event => break event,
        }
    };
    let WatchEvent::Added(Object::ConfigMap(c)) = event else { panic!("ADDED a config map: {event:?}") };
    assert_eq!(c.metadata.name, "a");
    assert!(c.data.is_empty(), "no data in a metadata-only watch: {c:?}");
    cluster.shutdown().await;
}

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: web:1
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_scale_set_image_undo_pause_cordon_and_drain_from_the_cli() {
    use skiff_server::config::{AgentSettings, RuntimeKind};
    let agent = AgentSettings { runtime: RuntimeKind::Memory, heartbeat_ms: 500, ..AgentSettings::default() };
    let cluster = TestCluster::start_with_agent(3, test_raft(), agent).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = members(&cluster);
    eventually("three nodes", Duration::from_secs(30), || async {
        let out = skiff(&m, &["get", "nodes", "-o", "name"]).await;
        (String::from_utf8_lossy(&out.stdout).lines().count() == 3).then_some(())
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "web.yaml", WEB);
    skiff_ok(&m, &["apply", "-f", &file]).await;
    let status = skiff_ok(&m, &["rollout", "status", "deployment/web", "--wait-timeout", "60"]).await;
    assert!(status.ends_with("deployment \"web\" successfully rolled out\n"), "{status}");

    // Bad input changes nothing.
    let e = skiff_err(&m, &["scale", "deployment/web", "--replicas=-1"]).await;
    assert!(e.contains("--replicas=-1: the count must be 0 or more"), "{e}");
    let e = skiff_err(&m, &["cordon", "no-such-node"]).await;
    assert!(e.contains("no-such-node") && e.contains("not found"), "{e}");
    let e = skiff_err(&m, &["set", "image", "deployment/web", "nope=web:9"]).await;
    assert!(e.contains("has no container \"nope\" (it has app)"), "{e}");
    // Bad deployments are refused by the CLI and, sent as they are (--validate=ignore), by the
    // server, naming the file, the object and the field; none is stored.
    let bad = |name: &str, from: &str, to: &str| {
        let text = WEB.replace("name: web\n", &format!("name: {name}\n")).replace(from, to);
        assert_ne!(text, WEB.replace("name: web\n", &format!("name: {name}\n")), "{from} is in the manifest");
        write(dir.path(), &format!("{name}.yaml"), &text)
    };
    let cases = [
        (bad("mismatch", "labels: {app: web}", "labels: {app: other}"), "spec.template.metadata.labels"),
        (bad("negative", "replicas: 3", "replicas: -3"), "spec.replicas: -3 must be >= 0"),
        (
            bad(
                "frozen",
                "replicas: 3\n",
                "replicas: 3\n  strategy:\n    rollingUpdate: {maxSurge: 0, maxUnavailable: 0}\n",
            ),
            "maxSurge and maxUnavailable may not both be 0",
        ),
    ];
    for (file, says) in &cases {
        for validate in ["--validate=strict", "--validate=ignore"] {
            let e = skiff_err(&m, &["apply", "-f", file, validate]).await;
            assert!(e.contains(says), "{validate} {file}: {e}");
        }
    }
    let stored = skiff_ok(&m, &["get", "deployments", "-o", "name"]).await;
    assert_eq!(stored, "deployment.apps/web\n", "nothing bad was stored");

    assert_eq!(skiff_ok(&m, &["scale", "deployment/web", "--replicas=4"]).await, "deployment.apps/web scaled\n");
    assert_eq!(
        skiff_ok(&m, &["set", "image", "deployment/web", "app=web:2"]).await,
        "deployment.apps/web image updated\n"
    );
    let status = skiff_ok(&m, &["rollout", "status", "deployment/web", "--wait-timeout", "60"]).await;
    assert!(status.ends_with("deployment \"web\" successfully rolled out\n"), "{status}");
    let history = skiff_ok(&m, &["rollout", "history", "deployment/web"]).await;
    assert!(history.contains("web:1") && history.contains("web:2"), "{history}");
    assert_eq!(skiff_ok(&m, &["rollout", "undo", "deployment/web"]).await, "deployment.apps/web rolled back\n");
    skiff_ok(&m, &["rollout", "status", "deployment/web", "--wait-timeout", "60"]).await;
    let image = skiff_ok(&m, &["get", "deploy", "web", "-o", "json"]).await;
    assert_eq!(json(&image)["spec"]["template"]["spec"]["containers"][0]["image"], "web:1");

    // Paused: a new image waits for resume.
    assert_eq!(skiff_ok(&m, &["rollout", "pause", "deployment/web"]).await, "deployment.apps/web paused\n");
    skiff_ok(&m, &["set", "image", "deployment/web", "app=web:3"]).await;
    common::consistently("no rollout while paused", Duration::from_secs(1), || async {
        let sets = skiff(&m, &["get", "rs", "-o", "json"]).await;
        !String::from_utf8_lossy(&sets.stdout).contains("web:3")
    })
    .await;
    assert_eq!(skiff_ok(&m, &["rollout", "resume", "deployment/web"]).await, "deployment.apps/web resumed\n");
    skiff_ok(&m, &["rollout", "status", "deployment/web", "--wait-timeout", "60"]).await;

    // Drain a node: its pods are evicted and come back elsewhere; it stays cordoned.
    let out = skiff_ok(&m, &["drain", "node2", "--wait-timeout", "30"]).await;
    assert!(out.starts_with("node/node2 cordoned\n") && out.ends_with("node/node2 drained\n"), "{out}");
    skiff_ok(&m, &["rollout", "status", "deployment/web", "--wait-timeout", "60"]).await;
    let wide = skiff_ok(&m, &["get", "pods", "-o", "wide"]).await;
    assert!(!wide.contains("node2"), "nothing runs on the drained node:\n{wide}");
    let nodes = skiff_ok(&m, &["get", "nodes"]).await;
    assert!(nodes.lines().any(|l| l.starts_with("node2") && l.contains("SchedulingDisabled")), "{nodes}");
    assert_eq!(skiff_ok(&m, &["uncordon", "node2"]).await, "node/node2 uncordoned\n");
    cluster.shutdown().await;
}

/// Issue 12, defect 6: deleting a namespace (or an owner) put every dependant in one write, whose
/// deletion events carry every object's last state: a namespace of many large objects made one
/// Raft entry as large as all of them. Dependants now go in bounded writes first, the namespace
/// last, and the cluster keeps its leader throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_of_many_large_objects_is_deleted_in_bounded_writes() {
    use skiff_apiserver::resources::MAX_CASCADE_BYTES;
    const OBJECTS: usize = 60;
    let cluster = TestCluster::start(3, test_raft()).await;
    cluster.leader(Duration::from_secs(10)).await;
    let m = members(&cluster);
    let dir = tempfile::tempdir().expect("tempdir");
    let ns = write(dir.path(), "ns.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bulk\n");
    skiff_ok(&m, &["apply", "-f", &ns]).await;
    let manifests = dir.path().join("bulk");
    std::fs::create_dir(&manifests).expect("mkdir");
    let blob = "x".repeat(200 << 10);
    for i in 0..OBJECTS {
        let text = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big-{i}\ndata:\n  blob: {blob}\n");
        write(&manifests, &format!("cm-{i}.yaml"), &text);
    }
    skiff_ok(&m, &["apply", "-f", &manifests.display().to_string(), "-n", "bulk"]).await;
    let store = cluster.nodes.values().next().expect("member").store();
    let term = || store.raft().metrics().borrow().current_term;
    let term_before = term();
    let mut watch = store.watch("/configmaps/bulk/", store.applied_revision(), Duration::from_secs(60)).expect("watch");

    let out = skiff_ok(&m, &["delete", "ns", "bulk"]).await;
    assert_eq!(out.matches("deleted with its owner").count(), OBJECTS, "{out}");
    // Every deletion event arrives; no revision carries more than the bound.
    let mut per_revision = std::collections::BTreeMap::<u64, usize>::new();
    let mut deleted = 0;
    while deleted < OBJECTS {
        let item = tokio::time::timeout(Duration::from_secs(10), watch.recv()).await.expect("event in time");
        if let Some(Ok(skiff_store::watch::WatchItem::Change(change))) = item {
            *per_revision.entry(change.revision).or_default() += change.kv.value.len();
            deleted += 1;
        }
    }
    let largest = per_revision.values().max().copied().unwrap_or(0);
    assert!(largest <= MAX_CASCADE_BYTES, "one write removed {largest} bytes of objects");
    assert!(per_revision.len() >= OBJECTS / 2, "{} writes for {OBJECTS} objects", per_revision.len());
    assert_eq!(skiff_ok(&m, &["get", "cm", "-n", "bulk", "-o", "name"]).await, "");
    assert!(skiff_err(&m, &["get", "ns", "bulk"]).await.contains("not found"));
    assert_eq!(term(), term_before, "no election while the namespace went");
    // The largest write the API takes (MAX_TXN_BYTES: three objects of 1 MiB) goes out alone in
    // one entry and commits on all members, without an election either.
    let leader = cluster.leader(Duration::from_secs(10)).await;
    let big = vec![b'v'; 1 << 20];
    let ops = (0..3).map(|i| skiff_store::Op::Put { key: format!("/kv/big/{i}"), value: big.clone(), expect: None });
    let written = cluster.nodes[&leader].store().write(ops.collect()).await.expect("a 3 MiB write");
    for node in cluster.nodes.values() {
        eventually("the 3 MiB write applied everywhere", Duration::from_secs(10), || async {
            (node.store().applied_revision() >= written.revision).then_some(())
        })
        .await;
    }
    assert_eq!(term(), term_before, "no election for the largest write");
    skiff_ok(&m, &["apply", "-f", &ns]).await;
    cluster.shutdown().await;
}
