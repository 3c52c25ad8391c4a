//! Node loss: a three-member cluster runs a 30-replica Deployment (ten pods per member, the
//! scheduler spreads them); one member is killed with SIGKILL. The figure is the time from the
//! kill until 30 pods of the Deployment are Running and Ready on the two members left. Then the
//! member is started again, and the time until its stale containers (still running on the engine
//! while it was dead, their pods deleted meanwhile) are gone is measured too. Odd runs kill a
//! follower, even runs the leader (its successor first has to be elected).
//!
//! There is no reference to run beside it on one engine (a one-node Swarm has no node to lose):
//! the published figures are Kubernetes' about 5 minutes (40 s node monitor grace plus 300 s
//! default toleration), Swarm's about 15 s and Nomad's 20-30 s.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use skiff_proto::api::resources_client::ResourcesClient;
use skiff_proto::api::{ApplyRequest, ListObjectsRequest};

use crate::cluster::{Binaries, Cluster};
use crate::leftovers::Leftovers;
use crate::report::{Figures, Summary, Target};

const LABEL: &str = "skiff.bench.nodeloss";
const IMAGE: &str = "skiff-test/busybox:1";
/// The Docker label with which a member's agent marks its containers (skiff-agent pod_spec.rs).
const NODE_LABEL: &str = "skiff.node";
/// How long the replacements may take before the run fails.
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

fn deployment(replicas: usize) -> Vec<u8> {
    format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"loss"}},"spec":{{"replicas":{replicas},"selector":{{"matchLabels":{{"app":"loss"}}}},"template":{{"metadata":{{"labels":{{"app":"loss"}}}},"spec":{{"terminationGracePeriodSeconds":1,"containers":[{{"name":"app","image":"{IMAGE}","command":["sleep","3600"]}}]}}}}}}}}"#
    )
    .into_bytes()
}

/// A pod of the deployment as the benchmark reads it.
#[derive(Debug)]
struct PodView {
    node: String,
    ready: bool,
    deleting: bool,
}

async fn pods(channel: tonic::transport::Channel) -> anyhow::Result<Vec<PodView>> {
    let list = ResourcesClient::new(channel)
        .list(ListObjectsRequest {
            kind: "Pod".into(),
            namespace: "default".into(),
            label_selector: "app=loss".into(),
            stale: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    for raw in list.objects {
        let v: serde_json::Value = serde_json::from_slice(&raw)?;
        let ready = v["status"]["phase"] == "Running"
            && v["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        out.push(PodView {
            node: v["spec"]["nodeName"].as_str().unwrap_or_default().to_string(),
            ready,
            deleting: !v["metadata"]["deletionTimestamp"].is_null(),
        });
    }
    Ok(out)
}

/// The Ready condition of node `name`, as a member sees it.
async fn node_ready(channel: tonic::transport::Channel, name: &str) -> anyhow::Result<String> {
    let list = ResourcesClient::new(channel)
        .list(ListObjectsRequest { kind: "Node".into(), stale: true, ..Default::default() })
        .await?
        .into_inner();
    for raw in list.objects {
        let v: serde_json::Value = serde_json::from_slice(&raw)?;
        if v["metadata"]["name"] == name {
            let ready = v["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .and_then(|c| c["status"].as_str())
                .unwrap_or("-");
            return Ok(ready.to_string());
        }
    }
    Ok("-".into())
}

/// The running containers of this run on `node`.
async fn containers_on(docker: &Docker, run: &str, node: &str) -> anyhow::Result<usize> {
    let filters =
        HashMap::from([("label".to_string(), vec![format!("{LABEL}={run}"), format!("{NODE_LABEL}={node}")])]);
    let options = ListContainersOptionsBuilder::default().all(false).filters(&filters).build();
    Ok(docker.list_containers(Some(options)).await?.len())
}

/// Polls `check` every [`POLL`] until it answers, at most `limit`.
async fn until<T, F, Fut>(what: &str, limit: Duration, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    crate::wait::until(what, limit, POLL, check).await
}

fn replicas_of(smoke: bool) -> usize {
    if smoke {
        6
    } else {
        30
    }
}

pub fn describe(smoke: bool) {
    let replicas = replicas_of(smoke);
    println!(
        "nodeloss benchmark: a {replicas}-replica Deployment over a three-member cluster ({} pods per member), Docker engine, local images",
        replicas / 3
    );
    println!("kill -9 of one member (odd runs a follower, even runs the leader); figure: kill -> {replicas} pods Running and Ready on the other two");
    println!("then the member is restarted: time until its stale containers are gone");
}

async fn skiff_run(bins: &Binaries, docker: &Docker, smoke: bool, run: usize, tag: &str) -> anyhow::Result<Figures> {
    let replicas = replicas_of(smoke);
    let agent = format!(
        "[agent]\nruntime = \"docker\"\n[agent.container_labels]\n\"{LABEL}\" = \"{tag}\"\n\"skiff.test\" = \"1\"\n"
    );
    let mut cluster = Cluster::skiff_with(bins, &agent).await?;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    let victim = if run.is_multiple_of(2) { leader } else { (leader + 1) % 3 };
    let watcher = (0..3).find(|i| *i != victim && *i != leader).unwrap_or((victim + 1) % 3);
    let victim_name = format!("node{}", victim + 1);
    let channel = cluster.connect(watcher).await?;
    until("three nodes Ready", Duration::from_secs(30), || {
        let channel = channel.clone();
        async move {
            for n in 1..=3 {
                if node_ready(channel.clone(), &format!("node{n}")).await? != "True" {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        }
    })
    .await?;
    ResourcesClient::new(channel.clone()).apply(ApplyRequest { object: deployment(replicas), dry_run: false }).await?;
    let placed = until("every pod Running and Ready", DEADLINE, || {
        let channel = channel.clone();
        async move {
            let pods = pods(channel).await?;
            let ready = pods.iter().filter(|p| p.ready && !p.deleting).count() == replicas;
            Ok((pods.len() == replicas && ready).then_some(pods))
        }
    })
    .await?;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in &placed {
        *per_node.entry(p.node.clone()).or_default() += 1;
    }
    let on_victim = per_node.get(&victim_name).copied().unwrap_or(0);
    println!(
        "placed: {per_node:?}; killing {victim_name} ({}) with {on_victim} pods",
        if victim == leader { "the leader" } else { "a follower" }
    );

    let killed = Instant::now();
    cluster.kill(victim);
    let mut not_ready = None;
    let mut most_active = 0;
    let deadline = killed + DEADLINE;
    let replaced = loop {
        // A member may refuse while the cluster elects a new leader: the poll goes on.
        if not_ready.is_none() && node_ready(channel.clone(), &victim_name).await.is_ok_and(|r| r != "True") {
            not_ready = Some(killed.elapsed());
        }
        if let Ok(pods) = pods(channel.clone()).await {
            most_active = most_active.max(pods.iter().filter(|p| !p.deleting).count());
            let elsewhere = pods.iter().filter(|p| p.ready && !p.deleting && p.node != victim_name).count();
            if elsewhere == replicas {
                break killed.elapsed();
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("the lost member's pods were not replaced within {} s", DEADLINE.as_secs());
        }
        tokio::time::sleep(POLL).await;
    };
    let stale_before = containers_on(docker, tag, &victim_name).await?;
    println!(
        "NotReady after {:.2} s; {replicas} pods Ready elsewhere after {:.2} s; at most {most_active} active pods; {stale_before} stale containers still running on the dead member's behalf",
        not_ready.map_or(f64::NAN, |d| d.as_secs_f64()),
        replaced.as_secs_f64()
    );
    if most_active > replicas {
        anyhow::bail!("{most_active} active pods for {replicas} replicas: the lost member's pods were counted twice");
    }

    let restarted = Instant::now();
    cluster.restart(victim)?;
    let cleared = until("the returned member's stale containers removed", DEADLINE, || async {
        Ok((containers_on(docker, tag, &victim_name).await? == 0).then(|| restarted.elapsed()))
    })
    .await?;
    let after = pods(channel.clone()).await?;
    let active = after.iter().filter(|p| !p.deleting).count();
    println!("member back: its stale containers gone after {:.2} s; {active} active pods", cleared.as_secs_f64());
    if active != replicas {
        anyhow::bail!("{active} active pods after the member returned, for {replicas} replicas");
    }
    drop(cluster);
    let mut f = Figures::default();
    f.add("replaced (s)", replaced.as_secs_f64());
    if let Some(nr) = not_ready {
        f.add("NotReady (s)", nr.as_secs_f64());
    }
    f.add("stale containers gone after return (s)", cleared.as_secs_f64());
    Ok(f)
}

pub async fn run_once(bins: &Binaries, smoke: bool, run: usize) -> anyhow::Result<Figures> {
    let docker = Docker::connect_with_local_defaults()?.negotiate_version().await?;
    let tag = format!("{}-{run}", std::process::id());
    // Declared before the cluster: removes every container of this run, also when the run fails.
    let leftovers = Leftovers::guard(LABEL, &tag);
    let outcome = skiff_run(bins, &docker, smoke, run, &tag).await;
    leftovers.remove();
    outcome
}

pub fn targets(summary: &Summary) -> Vec<Target> {
    let worst = summary.max("replaced (s)").unwrap_or(f64::NAN);
    let median = summary.median("replaced (s)").unwrap_or(f64::NAN);
    vec![Target {
        what: format!(
            "kill -> replacements Running and Ready at most 10 s in every run (median {median:.2} s, max {worst:.2} s; Kubernetes about 300 s, Swarm about 15 s, Nomad 20-30 s)"
        ),
        met: worst <= 10.0,
    }]
}
