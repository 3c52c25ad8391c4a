//! Pod start latency: the time from binding a pod to a node to the pod being Running, for N pods
//! bound at once, against plain Docker creating and starting the same containers (a sandbox and
//! one container joined to it, per pod) with the same parallelism, in the same run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use skiff_proto::api::resources_client::ResourcesClient;
use skiff_proto::api::{object_event, ApplyRequest, BindRequest, WatchObjectsRequest};

use crate::cluster::{Binaries, Cluster};
use crate::report::{Figures, Summary, Target};

const LABEL: &str = "skiff.bench.podstart";
const IMAGE: &str = "skiff-test/busybox:1";
const SANDBOX: &str = "skiff-pause:1";

/// A pod the scheduler leaves alone (its nodeSelector matches no node), so that the benchmark binds
/// all of them at once itself: what is measured is the agent, from binding to Running.
fn pod(name: &str) -> Vec<u8> {
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{"nodeSelector":{{"skiff.bench/held":"true"}},"terminationGracePeriodSeconds":1,"containers":[{{"name":"app","image":"{IMAGE}","command":["sleep","3600"]}}]}}}}"#
    )
    .into_bytes()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Removes every container this benchmark created (both sides), running or not.
async fn cleanup(docker: &Docker, run: &str) {
    let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL}={run}")])]);
    let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
    if let Ok(list) = docker.list_containers(Some(options)).await {
        for c in list {
            if let Some(id) = c.id {
                let rm = RemoveContainerOptionsBuilder::default().force(true).build();
                let _ = docker.remove_container(&id, Some(rm)).await;
            }
        }
    }
}

/// Per pod: (bind sent -> Running seen), and the wall time of the whole batch.
async fn skiff_run(bins: &Binaries, pods: usize, run: &str) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let agent = format!(
        "[agent]\nruntime = \"docker\"\n[agent.container_labels]\n\"{LABEL}\" = \"{run}\"\n\"skiff.test\" = \"1\"\n"
    );
    let cluster = Cluster::skiff_with(bins, &agent).await?;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await?;
    let channel = cluster.connect(leader).await?;
    let mut api = ResourcesClient::new(channel.clone());
    for i in 0..pods {
        api.apply(ApplyRequest { object: pod(&format!("p{i}")), dry_run: false }).await?;
    }
    // Watch on node1 (where the pods run), then bind them all at once.
    let mut watch = ResourcesClient::new(cluster.connect(0).await?)
        .watch(WatchObjectsRequest { kind: "Pod".into(), namespace: "default".into(), ..Default::default() })
        .await?
        .into_inner();
    let started = Instant::now();
    let mut bound_at = HashMap::new();
    let mut binds = Vec::new();
    for i in 0..pods {
        let mut api = ResourcesClient::new(channel.clone());
        let name = format!("p{i}");
        bound_at.insert(name.clone(), Instant::now());
        binds.push(tokio::spawn(async move {
            api.bind(BindRequest { namespace: "default".into(), name, node_name: "node1".into() }).await
        }));
    }
    for b in binds {
        b.await??;
    }
    let mut running = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while running.len() < pods {
        let next = tokio::time::timeout_at(deadline.into(), watch.message()).await;
        let Ok(Ok(Some(event))) = next else {
            anyhow::bail!("only {} of {pods} pods became Running within 120 s", running.len())
        };
        if event.r#type == object_event::Type::Bookmark as i32 {
            continue;
        }
        let value: serde_json::Value = serde_json::from_slice(&event.object)?;
        let name = value["metadata"]["name"].as_str().unwrap_or_default().to_string();
        if value["status"]["phase"] == "Running" && !running.contains_key(&name) {
            if let Some(t) = bound_at.get(&name) {
                running.insert(name, t.elapsed());
            }
        }
    }
    let wall = started.elapsed();
    drop(cluster);
    Ok((running.into_values().collect(), wall))
}

/// The same containers through the Docker API, `pods` at once.
async fn docker_run(docker: &Docker, pods: usize, run: &str) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..pods {
        let docker = docker.clone();
        let run = run.to_string();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let labels = HashMap::from([(LABEL.to_string(), run.clone()), ("skiff.test".to_string(), "1".to_string())]);
            let create = |name: String, body: ContainerCreateBody| {
                let docker = docker.clone();
                async move {
                    let options = CreateContainerOptionsBuilder::default().name(&name).build();
                    let id = docker.create_container(Some(options), body).await?.id;
                    docker.start_container(&id, None).await?;
                    Ok::<String, bollard::errors::Error>(id)
                }
            };
            let sandbox = create(
                format!("bench-{run}-{i}-sandbox"),
                ContainerCreateBody { image: Some(SANDBOX.into()), labels: Some(labels.clone()), ..Default::default() },
            )
            .await?;
            create(
                format!("bench-{run}-{i}-app"),
                ContainerCreateBody {
                    image: Some(IMAGE.into()),
                    entrypoint: Some(vec!["sleep".into(), "3600".into()]),
                    labels: Some(labels),
                    host_config: Some(HostConfig {
                        network_mode: Some(format!("container:{sandbox}")),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await?;
            Ok::<Duration, bollard::errors::Error>(t.elapsed())
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.push(t.await??);
    }
    Ok((lat, started.elapsed()))
}

fn pods_of(smoke: bool, pods: Option<usize>) -> usize {
    pods.unwrap_or(if smoke { 5 } else { 50 })
}

/// Prints what the benchmark does.
pub fn describe(smoke: bool, pods: Option<usize>) {
    let pods = pods_of(smoke, pods);
    println!("podstart benchmark: {pods} pods bound at once to one node of a three-member cluster (Docker engine, local images)");
    println!("skiff: bind -> Running seen on a watch; docker: create+start a sandbox and a container joined to it, {pods} at once");
    println!(
        "odd runs start with plain docker, even runs with skiff (the engine warms up: whoever goes second may gain)"
    );
}

/// One run; `run` (from 1) decides which side goes first.
pub async fn run_once(bins: &Binaries, smoke: bool, pods: Option<usize>, run: usize) -> anyhow::Result<Figures> {
    let pods = pods_of(smoke, pods);
    let docker = Docker::connect_with_local_defaults()?.negotiate_version().await?;
    let tag = format!("{}-{run}", std::process::id());
    let docker_first = run % 2 == 1;
    println!("{} goes first", if docker_first { "plain docker" } else { "skiff" });
    cleanup(&docker, &tag).await;
    let (docker_side, skiff_side) = if docker_first {
        let d = docker_run(&docker, pods, &tag).await;
        cleanup(&docker, &tag).await;
        let s = skiff_run(bins, pods, &tag).await;
        (d, s)
    } else {
        let s = skiff_run(bins, pods, &tag).await;
        cleanup(&docker, &tag).await;
        let d = docker_run(&docker, pods, &tag).await;
        (d, s)
    };
    cleanup(&docker, &tag).await;
    let (mut d, d_wall) = docker_side?;
    let (mut s, s_wall) = skiff_side?;
    if s.len() != pods || d.len() != pods {
        anyhow::bail!("only {} skiff pods and {} docker pods of {pods} were measured", s.len(), d.len());
    }
    d.sort();
    s.sort();
    println!();
    println!("| | p50 ms | p99 ms | max ms | all {pods} Running after ms |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| skiff | {:.0} | {:.0} | {:.0} | {:.0} |",
        ms(pct(&s, 0.5)),
        ms(pct(&s, 0.99)),
        ms(pct(&s, 1.0)),
        ms(s_wall)
    );
    println!(
        "| docker | {:.0} | {:.0} | {:.0} | {:.0} |",
        ms(pct(&d, 0.5)),
        ms(pct(&d, 0.99)),
        ms(pct(&d, 1.0)),
        ms(d_wall)
    );
    let ratio = s_wall.as_secs_f64() / d_wall.as_secs_f64().max(1e-9);
    let p50_ratio = ms(pct(&s, 0.5)) / ms(pct(&d, 0.5)).max(1e-9);
    println!("ratio skiff/docker: all Running {ratio:.2}x, per-pod p50 {p50_ratio:.2}x");
    let order = if docker_first { "docker first" } else { "skiff first" };
    let mut figures = Figures::default();
    figures.add("skiff all Running s", s_wall.as_secs_f64());
    figures.add("docker all Running s", d_wall.as_secs_f64());
    figures.add("all-Running ratio skiff/docker", ratio);
    figures.add(format!("all-Running ratio skiff/docker, {order}"), ratio);
    figures.add("skiff per-pod p50 ms", ms(pct(&s, 0.5)));
    figures.add("docker per-pod p50 ms", ms(pct(&d, 0.5)));
    figures.add("per-pod p50 ratio skiff/docker", p50_ratio);
    figures.add(format!("per-pod p50 ratio skiff/docker, {order}"), p50_ratio);
    Ok(figures)
}

/// The target, judged on the median of the runs (both orders together).
pub fn targets(m: &Summary) -> Vec<Target> {
    let ratio = m.median("all-Running ratio skiff/docker").unwrap_or(f64::NAN);
    let p50 = m.median("per-pod p50 ratio skiff/docker").unwrap_or(f64::NAN);
    vec![Target {
        what: format!(
            "all pods Running within 1.15x of plain docker ({ratio:.2}x; per-pod p50 {p50:.2}x, not a target)"
        ),
        met: ratio <= 1.15,
    }]
}
