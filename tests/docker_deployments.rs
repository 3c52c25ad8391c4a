//! Deployments on the real Docker engine, run by a three-member in-process cluster whose agents share
//! the engine (local images only: scripts/build-test-images.sh): a deployment converges and spreads,
//! `set image` rolls it out one pod at a time gated on readiness, an image that never becomes ready
//! stops the rollout with `ProgressDeadlineExceeded` (and is rolled back automatically when asked),
//! `rollout undo` works, a deleted pod is replaced, and the pods of a stopped member run elsewhere
//! while its old copies are removed when it returns. Also the README's first example: the
//! documentation's manifests applied as a directory converge.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{docker_agent, skiff, skiff_ok, test_raft, DockerCleanup, TestCluster};

/// Deadline of each wait; the pods start in seconds.
const T: Duration = Duration::from_secs(90);

async fn get_json(members: &str, args: &[&str]) -> Option<serde_json::Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = skiff(members, &all).await;
    out.status.success().then(|| serde_json::from_slice(&out.stdout).ok()).flatten()
}

/// A pod of the deployment, as the test reads it.
#[derive(Debug, Clone)]
struct PodView {
    name: String,
    node: String,
    image: String,
    ready: bool,
    deleting: bool,
}

async fn pods(members: &str, selector: &str) -> Vec<PodView> {
    let Some(list) = get_json(members, &["pods", "-l", selector]).await else { return Vec::new() };
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|p| PodView {
                    name: p["metadata"]["name"].as_str().unwrap_or_default().into(),
                    node: p["spec"]["nodeName"].as_str().unwrap_or_default().into(),
                    image: p["spec"]["containers"][0]["image"].as_str().unwrap_or_default().into(),
                    ready: p["status"]["conditions"]
                        .as_array()
                        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True")),
                    deleting: !p["metadata"]["deletionTimestamp"].is_null(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The deployment `web`'s status condition `type` as (status, reason).
fn condition(d: &serde_json::Value, type_: &str) -> Option<(String, String)> {
    let c = d["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_)?;
    Some((c["status"].as_str()?.into(), c["reason"].as_str().unwrap_or_default().into()))
}

/// Waits until `web` runs `replicas` Ready pods of `image`, all of its newest template.
async fn rolled_out(m: &str, image: &str, replicas: usize) {
    common::eventually(&format!("web rolled out to {image}"), T, || async {
        let d = get_json(m, &["deployment", "web"]).await?;
        let s = &d["status"];
        let done = s["observedGeneration"] == d["metadata"]["generation"]
            && s["updatedReplicas"] == replicas
            && s["availableReplicas"] == replicas
            && s["replicas"] == replicas
            && d["spec"]["template"]["spec"]["containers"][0]["image"] == image;
        let pods = pods(m, "app=web").await;
        let live: Vec<&PodView> = pods.iter().filter(|p| !p.deleting).collect();
        (done && live.len() == replicas && live.iter().all(|p| p.ready && p.image == image)).then_some(())
    })
    .await;
}

const WEB: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  progressDeadlineSeconds: 10
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: web
        image: nginx:1.14.2
        ports:
        - containerPort: 80
        readinessProbe:
          httpGet:
            path: /
            port: 80
          periodSeconds: 1
"#;

async fn three_member_docker_cluster(run: &str) -> (TestCluster, String) {
    let cluster = TestCluster::start_with_agent(3, test_raft(), docker_agent(run)).await;
    cluster.leader(Duration::from_secs(20)).await;
    let m = cluster.nodes.keys().map(|id| cluster.addr(*id)).collect::<Vec<_>>().join(",");
    common::eventually("three nodes Ready", T, || async {
        let nodes = get_json(&m, &["nodes"]).await?;
        let ready = nodes["items"].as_array()?.iter().filter(|n| {
            n["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
        });
        (ready.count() == 3).then_some(())
    })
    .await;
    (cluster, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_a_deployment_rolls_out_gated_on_readiness_stops_on_a_broken_image_and_rolls_back() {
    let cleanup = DockerCleanup::new_run();
    let (cluster, m) = three_member_docker_cluster(&cleanup.0).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("web.yaml");
    std::fs::write(&manifest, WEB).expect("write");
    skiff_ok(&m, &["apply", "-f", &manifest.display().to_string()]).await;

    // Converges, one pod per member.
    rolled_out(&m, "nginx:1.14.2", 3).await;
    let nodes: std::collections::BTreeSet<String> = pods(&m, "app=web").await.into_iter().map(|p| p.node).collect();
    assert_eq!(nodes.len(), 3, "spread over the three members: {nodes:?}");

    // `set image` rolls one pod at a time (maxSurge 1, maxUnavailable 0): never more than four pods,
    // never fewer than three Ready, as seen at every poll.
    skiff_ok(&m, &["set", "image", "deployment/web", "web=nginx:latest"]).await;
    let status = tokio::spawn({
        let m = m.clone();
        async move { skiff(&m, &["rollout", "status", "deployment/web", "--wait-timeout", "90"]).await }
    });
    let started = Instant::now();
    let (mut most, mut fewest_ready, mut polls) = (0, usize::MAX, 0);
    loop {
        let now = pods(&m, "app=web").await;
        let live: Vec<&PodView> = now.iter().filter(|p| !p.deleting).collect();
        most = most.max(live.len());
        fewest_ready = fewest_ready.min(now.iter().filter(|p| p.ready).count());
        polls += 1;
        if live.len() == 3 && live.iter().all(|p| p.image == "nginx:latest" && p.ready) {
            break;
        }
        assert!(started.elapsed() < T, "the rollout did not finish: {now:?}");
    }
    assert!(most <= 4, "at most replicas + maxSurge pods: saw {most}");
    assert!(fewest_ready >= 3, "never below replicas - maxUnavailable Ready: saw {fewest_ready} ({polls} polls)");
    let status = status.await.expect("rollout status task");
    let printed = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "rollout status: {printed}{}", String::from_utf8_lossy(&status.stderr));
    assert!(printed.contains("Waiting for deployment \"web\" rollout to finish"), "{printed}");
    assert!(printed.trim_end().ends_with("deployment \"web\" successfully rolled out"), "{printed}");
    rolled_out(&m, "nginx:latest", 3).await;

    // An image that is not there never becomes ready: the rollout stops with one surge pod, the three
    // old pods keep serving, and the deadline is reported; `rollout status` fails.
    skiff_ok(&m, &["set", "image", "deployment/web", "web=nginx:does-not-exist"]).await;
    common::eventually("ProgressDeadlineExceeded", T, || async {
        let d = get_json(&m, &["deployment", "web"]).await?;
        (condition(&d, "Progressing")? == ("False".to_string(), "ProgressDeadlineExceeded".to_string())).then_some(())
    })
    .await;
    let now = pods(&m, "app=web").await;
    let ready_old = now.iter().filter(|p| p.ready && p.image == "nginx:latest").count();
    let broken = now.iter().filter(|p| !p.deleting && p.image == "nginx:does-not-exist").count();
    assert_eq!((ready_old, broken), (3, 1), "stopped at maxSurge with the old pods serving: {now:?}");
    let failed = skiff(&m, &["rollout", "status", "deployment/web", "--wait-timeout", "30"]).await;
    assert!(!failed.status.success(), "rollout status must fail on an exceeded deadline");
    assert!(String::from_utf8_lossy(&failed.stderr).contains("exceeded its progress deadline"), "{failed:?}");

    // `rollout undo` goes back to nginx:latest.
    skiff_ok(&m, &["rollout", "undo", "deployment/web"]).await;
    rolled_out(&m, "nginx:latest", 3).await;

    // With automatic rollback on (the manifest again, annotated: back to nginx:1.14.2), the same
    // broken update returns to the last good revision by itself.
    let annotated = WEB.replace(
        "  name: web\nspec:",
        "  name: web\n  annotations:\n    deployment.skiff.io/auto-rollback: \"true\"\nspec:",
    );
    assert_ne!(annotated, WEB);
    std::fs::write(&manifest, annotated).expect("write");
    skiff_ok(&m, &["apply", "-f", &manifest.display().to_string()]).await;
    rolled_out(&m, "nginx:1.14.2", 3).await;
    skiff_ok(&m, &["set", "image", "deployment/web", "web=nginx:does-not-exist"]).await;
    common::eventually("the broken template is applied", T, || async {
        let d = get_json(&m, &["deployment", "web"]).await?;
        (d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:does-not-exist").then_some(())
    })
    .await;
    rolled_out(&m, "nginx:1.14.2", 3).await;
    let events = skiff_ok(&m, &["get", "events"]).await;
    assert!(events.contains("RolledBack"), "{events}");

    // A deleted pod is replaced.
    let victim = pods(&m, "app=web").await.into_iter().find(|p| !p.deleting).expect("a pod").name;
    skiff_ok(&m, &["delete", "pod", &victim]).await;
    common::eventually("a replacement", T, || async {
        let now = pods(&m, "app=web").await;
        let live: Vec<&PodView> = now.iter().filter(|p| !p.deleting).collect();
        (live.len() == 3 && live.iter().all(|p| p.ready && p.name != victim)).then_some(())
    })
    .await;
    cluster.shutdown().await;
}

/// Running containers of this test run on `node`, by pod uid.
fn containers_on(run: &str, node: &str) -> BTreeMap<String, usize> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "--filter",
            &format!("label=skiff.test.run={run}"),
            "--filter",
            &format!("label=skiff.node={node}"),
            "--format",
            "{{.Label \"skiff.pod.uid\"}}",
        ])
        .output()
        .expect("docker ps");
    let mut by_uid = BTreeMap::new();
    for uid in String::from_utf8_lossy(&out.stdout).lines() {
        *by_uid.entry(uid.to_string()).or_insert(0) += 1;
    }
    by_uid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_a_stopped_member_s_pods_run_elsewhere_and_its_old_copies_go_when_it_returns() {
    let cleanup = DockerCleanup::new_run();
    let run = cleanup.0.clone();
    let (mut cluster, m) = three_member_docker_cluster(&run).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifest = dir.path().join("web.yaml");
    std::fs::write(&manifest, WEB.replace("replicas: 3", "replicas: 6")).expect("write");
    skiff_ok(&m, &["apply", "-f", &manifest.display().to_string()]).await;
    rolled_out(&m, "nginx:1.14.2", 6).await;

    let leader = cluster.leader(T).await;
    let lost = (1..=3).find(|id| *id != leader).expect("a follower");
    let lost_name = format!("node{lost}");
    let before = pods(&m, "app=web").await;
    let on_lost: Vec<String> = before.iter().filter(|p| p.node == lost_name).map(|p| p.name.clone()).collect();
    assert_eq!(on_lost.len(), 2, "two pods per member: {before:?}");
    assert!(!containers_on(&run, &lost_name).is_empty(), "the member runs containers");

    // The member stops; its containers keep running on the engine, as a dead machine's would be
    // unreachable. Its pods are replaced on the two members left.
    let stopped = Instant::now();
    cluster.stop(lost).await;
    let m_left = cluster.nodes.keys().map(|id| cluster.addr(*id)).collect::<Vec<_>>().join(",");
    println!("member stopped after {:.1} s", stopped.elapsed().as_secs_f64());
    let mut most = 0;
    let (mut not_ready, mut evicted) = (None, None);
    loop {
        if not_ready.is_none() {
            let node = get_json(&m_left, &["node", &lost_name]).await;
            if node.is_some_and(|n| condition(&n, "Ready").is_some_and(|(s, _)| s != "True")) {
                not_ready = Some(stopped.elapsed());
            }
        }
        let now = pods(&m_left, "app=web").await;
        if evicted.is_none() && now.iter().any(|p| p.deleting && on_lost.contains(&p.name)) {
            evicted = Some(stopped.elapsed());
        }
        most = most.max(now.iter().filter(|p| !p.deleting).count());
        let elsewhere = now.iter().filter(|p| p.ready && !p.deleting && p.node != lost_name).count();
        if elsewhere == 6 {
            break;
        }
        assert!(stopped.elapsed() < T, "the lost member's pods were not replaced: {now:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let replaced = stopped.elapsed();
    println!(
        "replaced {} pods of a stopped member in {:.1} s (NotReady at {:?}, evicted at {:?})",
        on_lost.len(),
        replaced.as_secs_f64(),
        not_ready,
        evicted
    );
    assert!(most <= 6, "never more than the replicas counted: saw {most}");
    assert!(!containers_on(&run, &lost_name).is_empty(), "the stopped member's copies still run");

    // It returns: its old copies are stopped and removed, and six pods remain.
    cluster.restart(lost).await;
    common::eventually("the returned member's old copies removed", T, || async {
        containers_on(&run, &lost_name).is_empty().then_some(())
    })
    .await;
    let after = common::eventually("the evicted pods finalized", T, || async {
        let after = pods(&m, "app=web").await;
        after.iter().all(|p| !on_lost.contains(&p.name)).then_some(after)
    })
    .await;
    assert_eq!(after.iter().filter(|p| !p.deleting).count(), 6, "{after:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_the_readme_example_converges() {
    let cleanup = DockerCleanup::new_run();
    let (cluster, m) = three_member_docker_cluster(&cleanup.0).await;
    let examples = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/k8s-examples/");
    let out = skiff(&m, &["apply", "-f", &examples.display().to_string()]).await;
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    for line in printed.lines() {
        assert!(line.ends_with(" created") || line.ends_with(" unchanged"), "{line:?} in\n{printed}");
    }
    // Every deployment Available with all its replicas.
    for (name, replicas) in [("nginx-deployment", 3), ("backend", 3), ("my-nginx", 2)] {
        common::eventually(&format!("{name} Available"), T, || async {
            let d = get_json(&m, &["deployment", name]).await?;
            let available = condition(&d, "Available")? == ("True".to_string(), "MinimumReplicasAvailable".to_string());
            (available && d["status"]["availableReplicas"] == replicas).then_some(())
        })
        .await;
    }
    // The probe pods run (their probes' timings are docker_examples.rs's).
    for name in ["liveness-exec", "liveness-http", "goproxy"] {
        common::eventually(&format!("{name} Running"), T, || async {
            let p = get_json(&m, &["pod", name]).await?;
            (p["status"]["phase"] == "Running").then_some(())
        })
        .await;
    }
    let rollout = skiff_ok(&m, &["rollout", "status", "deployment/nginx-deployment", "--wait-timeout", "30"]).await;
    assert!(rollout.contains("successfully rolled out"), "{rollout}");
    cluster.shutdown().await;
}
