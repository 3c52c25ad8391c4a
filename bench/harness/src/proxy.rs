//! The service proxy: requests per second and p50/p99 latency of small HTTP requests through a
//! Service's cluster IP and through its node port, against the same requests straight to the pod,
//! with the same load generator (wrk, one thread, 16 connections) in the same run, over keep-alive
//! connections and over a new connection per request (`Connection: close`).
//!
//! One member runs on the host as `skiff node` would (its proxy on the host, the pod on Docker's
//! bridge), with a loopback service range (127.96.0.0/16, local without a route) so that the load
//! generator on the host reaches cluster IPs the way a pod does through its route. The backend is
//! one nginx pod (Debian's nginx, bench/proxy/build-image.sh) answering `200 ok`; all three sides
//! reach the same pod. The sides take turns in every run, in a different order each run.
//!
//! Both data paths are measured, each on a cluster of its own in every run: `userspace` (the
//! proxy's listeners, the default) and `nftables` (the kernel rewrites connections, [services]
//! data_path = "nftables"), each against the direct side measured beside it.

use std::time::Duration;

use skiff_proto::api::resources_client::ResourcesClient;
use skiff_proto::api::{ApplyRequest, GetObjectRequest, ListObjectsRequest};

use crate::cluster::{Binaries, Cluster};
use crate::cpu;
use crate::leftovers::Leftovers;
use crate::report::{check_failures, Figures, Summary, Target};

const LABEL: &str = "skiff.bench.proxy";
const IMAGE: &str = "skiff-bench/nginx:1";
const NODE_PORT: u16 = 31901;
const CONNECTIONS: usize = 16;

/// The two ways clients use connections.
const MODES: [(&str, bool); 2] = [("keep-alive", false), ("new connections", true)];

fn seconds(smoke: bool, asked: Option<u64>) -> u64 {
    asked.unwrap_or(if smoke { 2 } else { 10 })
}

pub fn describe(smoke: bool, asked: Option<u64>) {
    println!(
        "proxy benchmark: wrk -t1 -c{CONNECTIONS} -d{}s against one nginx pod: straight to the pod, through the Service's cluster IP, through its node port",
        seconds(smoke, asked)
    );
    println!("one member on the host (its proxy there, the pod on Docker's bridge); keep-alive and a new connection per request");
}

fn manifests() -> [String; 2] {
    let deployment = format!(
        r#"{{"apiVersion":"apps/v1","kind":"Deployment","metadata":{{"name":"echo"}},"spec":{{"replicas":1,"selector":{{"matchLabels":{{"app":"echo"}}}},"template":{{"metadata":{{"labels":{{"app":"echo"}}}},"spec":{{"terminationGracePeriodSeconds":1,"containers":[{{"name":"nginx","image":"{IMAGE}","ports":[{{"name":"http","containerPort":80}}],"readinessProbe":{{"httpGet":{{"path":"/","port":"http"}},"periodSeconds":1}}}}]}}}}}}}}"#
    );
    let service = format!(
        r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"echo"}},"spec":{{"type":"NodePort","selector":{{"app":"echo"}},"ports":[{{"port":80,"targetPort":"http","nodePort":{NODE_PORT}}}]}}}}"#
    );
    [deployment, service]
}

/// What one wrk run reports, and the CPU it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// Socket errors, timeouts and non-2xx answers.
    pub errors: u64,
    /// CPU microseconds per request: the whole machine's, the member's (its proxy) and the nginx
    /// container's.
    pub machine_us: f64,
    pub member_us: f64,
    pub backend_us: f64,
}

/// `126.00us`, `1.20ms`, `2.00s` in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => value / 1000.0,
        "ms" => value,
        "s" => value * 1000.0,
        "m" => value * 60_000.0,
        _ => return None,
    })
}

/// Reads wrk's report (`--latency`).
pub fn parse_wrk(out: &str) -> anyhow::Result<Load> {
    let mut load = Load {
        requests_per_second: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        requests: 0,
        errors: 0,
        machine_us: f64::NAN,
        member_us: f64::NAN,
        backend_us: f64::NAN,
    };
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", d] => load.p50_ms = duration_ms(d).unwrap_or(f64::NAN),
            ["99%", d] => load.p99_ms = duration_ms(d).unwrap_or(f64::NAN),
            ["Requests/sec:", r] => load.requests_per_second = r.parse().unwrap_or(f64::NAN),
            [n, "requests", "in", ..] => load.requests = n.parse().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                load.errors += rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>()
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => load.errors += n.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    if !load.requests_per_second.is_finite() || !load.p99_ms.is_finite() {
        anyhow::bail!("wrk's report could not be read:\n{out}");
    }
    Ok(load)
}

/// CPU seconds the container `id` has used so far (cgroup v1's cpuacct, Docker's cgroupfs layout).
fn container_seconds(id: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/sys/fs/cgroup/cpuacct/docker/{id}/cpuacct.usage")).ok()?;
    Some(text.trim().parse::<f64>().ok()? / 1e9)
}

/// The full id of the nginx container of this run's pod.
fn backend_container(tag: &str) -> Option<String> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label={LABEL}={tag}"),
            "--filter",
            "label=skiff.container=nginx",
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().map(str::to_string)
}

/// Runs wrk against `url` for `seconds`, counting the CPU time the machine, `member` and the
/// `backend` container spent.
async fn measured(
    url: &str,
    seconds: u64,
    new_connections: bool,
    member: u32,
    backend: Option<&str>,
) -> anyhow::Result<Load> {
    let member_pid = member.to_string();
    let backend_seconds = || backend.and_then(container_seconds);
    let before = (cpu::machine_busy_seconds(), cpu::process_seconds(&member_pid), backend_seconds());
    let mut load = wrk(url, seconds, new_connections).await?;
    let after = (cpu::machine_busy_seconds(), cpu::process_seconds(&member_pid), backend_seconds());
    let per_request = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if load.requests > 0 => (b - a) * 1e6 / load.requests as f64,
        _ => f64::NAN,
    };
    load.machine_us = per_request(before.0, after.0);
    load.member_us = per_request(before.1, after.1);
    load.backend_us = per_request(before.2, after.2);
    Ok(load)
}

/// Runs wrk against `url` for `seconds`.
async fn wrk(url: &str, seconds: u64, new_connections: bool) -> anyhow::Result<Load> {
    let mut cmd = tokio::process::Command::new("wrk");
    cmd.args(["-t1", &format!("-c{CONNECTIONS}"), &format!("-d{seconds}s"), "--latency"]);
    if new_connections {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(url).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(seconds + 30), cmd.output())
        .await
        .map_err(|_| anyhow::anyhow!("wrk {url} did not finish"))?
        .map_err(|e| anyhow::anyhow!("cannot run wrk (apt-get install wrk): {e}"))?;
    if !out.status.success() {
        anyhow::bail!("wrk {url} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

/// Polls `check` every 100 ms until it answers, at most `limit`.
async fn until<T, F, Fut>(what: &str, limit: Duration, check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    crate::wait::until(what, limit, Duration::from_millis(100), check).await
}

/// The pod's IP once it is Ready and listed as a ready endpoint, and the Service's cluster IP.
async fn addresses(channel: tonic::transport::Channel) -> anyhow::Result<(String, String)> {
    let pod_ip = until("the nginx pod ready behind the Service", Duration::from_secs(60), || {
        let channel = channel.clone();
        async move {
            let list = ResourcesClient::new(channel)
                .list(ListObjectsRequest {
                    kind: "EndpointSlice".into(),
                    namespace: "default".into(),
                    label_selector: "kubernetes.io/service-name=echo".into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            for raw in list.objects {
                let v: serde_json::Value = serde_json::from_slice(&raw)?;
                for e in v["endpoints"].as_array().into_iter().flatten() {
                    if e["conditions"]["ready"] == true {
                        return Ok(e["addresses"][0].as_str().map(str::to_string));
                    }
                }
            }
            Ok(None)
        }
    })
    .await?;
    let raw = ResourcesClient::new(channel)
        .get(GetObjectRequest {
            kind: "Service".into(),
            namespace: "default".into(),
            name: "echo".into(),
            stale: false,
        })
        .await?
        .into_inner()
        .object;
    let svc: serde_json::Value = serde_json::from_slice(&raw)?;
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap_or_default().to_string();
    Ok((pod_ip, cluster_ip))
}

/// The data paths measured, each on a cluster of its own: `[services] data_path`, how its sides
/// are named, and the service range. The userspace proxy listens on a loopback range (local
/// without a route); the kernel's NAT cannot send a connection from a loopback address out to a
/// pod, so the nftables cluster gets 10.250.0.0/16, which its member makes local on the host for
/// the run (the route is removed after).
const DATA_PATHS: [(&str, &str, &str); 2] =
    [("userspace", "", "127.96.0.0/16"), ("nftables", " (nftables)", "10.250.0.0/16")];

/// What a member leaves on the host when it is killed (the benchmark kills its members): the local
/// route it made for a service range that is not loopback, and the nftables table of the kernel
/// data path (a member removes it only when it stops cleanly). Removed before a cluster starts (a
/// killed run may have left them) and after it.
struct HostLeftovers(&'static str);

impl HostLeftovers {
    fn guard(range: &'static str) -> Self {
        let guard = HostLeftovers(range);
        guard.remove();
        guard
    }

    fn remove(&self) {
        if !self.0.starts_with("127.") {
            let _ = std::process::Command::new("ip")
                .args(["route", "del", "local", self.0, "dev", "lo", "table", "local"])
                .output();
        }
        let _ = std::process::Command::new("nft").args(["delete", "table", "ip", "skiff_services"]).output();
    }
}

impl Drop for HostLeftovers {
    fn drop(&mut self) {
        self.remove();
    }
}

pub async fn run_once(bins: &Binaries, smoke: bool, asked: Option<u64>, run: usize) -> anyhow::Result<Figures> {
    let mut figures = Figures::default();
    for (data_path, suffix, range) in DATA_PATHS {
        let _host = HostLeftovers::guard(range);
        figures.0.extend(one_data_path(bins, smoke, asked, run, (data_path, suffix, range)).await?.0);
    }
    Ok(figures)
}

/// This host's address towards `ip` (no packet is sent).
fn host_address_towards(ip: &str) -> anyhow::Result<String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    socket.connect((ip, 9))?;
    Ok(socket.local_addr()?.ip().to_string())
}

async fn one_data_path(
    bins: &Binaries,
    smoke: bool,
    asked: Option<u64>,
    run: usize,
    (data_path, suffix, range): (&str, &str, &str),
) -> anyhow::Result<Figures> {
    let seconds = seconds(smoke, asked);
    let tag = format!("{}-{run}-{data_path}", std::process::id());
    let _leftovers = Leftovers::guard(LABEL, &tag);
    let sections = format!(
        "[agent]\nruntime = \"docker\"\n[agent.container_labels]\n\"{LABEL}\" = \"{tag}\"\n\"skiff.test\" = \"1\"\n\n[services]\ncluster_ip_range = \"{range}\"\nnode_port_range = \"31900-31999\"\ndata_path = \"{data_path}\"\n"
    );
    let cluster = Cluster::skiff_of(bins, 1, &sections).await?;
    let member = cluster.pids().first().copied().ok_or_else(|| anyhow::anyhow!("the member has no process"))?;
    let channel = cluster.connect(0).await?;
    for manifest in manifests() {
        ResourcesClient::new(channel.clone())
            .apply(ApplyRequest { object: manifest.into_bytes(), dry_run: false })
            .await?;
    }
    let (pod_ip, cluster_ip) = addresses(channel).await?;
    // The node port on the host's own address (the one towards the outside; NAT cannot send a
    // connection from 127.0.0.1 to a pod): not its address on the bridge, which direct connections
    // to the pod use as their source too, so their TIME_WAIT sockets in the pod would collide.
    let host = host_address_towards("192.0.2.1").or_else(|_| host_address_towards(&pod_ip))?;
    let sides = [
        (format!("direct{suffix}"), format!("http://{pod_ip}:80/")),
        (format!("cluster IP{suffix}"), format!("http://{cluster_ip}:80/")),
        (format!("node port{suffix}"), format!("http://{host}:{NODE_PORT}/")),
    ];
    // Each side answers before anything is measured (the proxy may still be binding).
    for (side, url) in &sides {
        until(&format!("{side} answers"), Duration::from_secs(20), || async {
            Ok(wrk(url, 1, false).await.ok().filter(|l| l.errors == 0 && l.requests > 0))
        })
        .await?;
    }
    let backend = backend_container(&tag);
    let mut figures = Figures::default();
    println!();
    println!("data path: {data_path}");
    println!("| connections | side | req/s | p50 ms | p99 ms | requests | errors | CPU µs/req: machine | member (proxy) | nginx |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (mode, new_connections) in MODES {
        let mut loads = Vec::new();
        // A different side goes first each run. With a new connection per request the direct
        // side always goes first: nginx closes each connection, so the pod keeps thousands of
        // TIME_WAIT sockets from the host's address afterwards, and the NATed sides (masqueraded
        // to that same address) leave enough of them that new direct connections then stall on
        // SYN retransmits (seen: 5,792 req/s instead of 14,000-15,000).
        let order: Vec<usize> = if new_connections {
            std::iter::once(0).chain((1..sides.len()).map(|i| 1 + (i - 1 + run) % (sides.len() - 1))).collect()
        } else {
            (0..sides.len()).map(|i| (i + run) % sides.len()).collect()
        };
        for i in order {
            let (side, url) = &sides[i];
            let load = measured(url, seconds, new_connections, member, backend.as_deref()).await?;
            println!(
                "| {mode} | {side} | {:.0} | {:.3} | {:.3} | {} | {} | {:.1} | {:.1} | {:.1} |",
                load.requests_per_second,
                load.p50_ms,
                load.p99_ms,
                load.requests,
                load.errors,
                load.machine_us,
                load.member_us,
                load.backend_us
            );
            check_failures(&format!("{side} ({mode})"), "requests", load.errors, load.requests)?;
            loads.push((i, load));
        }
        loads.sort_by_key(|(i, _)| *i);
        let direct = loads[0].1;
        for (i, load) in &loads {
            let side = &sides[*i].0;
            figures.add(format!("{mode} {side} req/s"), load.requests_per_second);
            figures.add(format!("{mode} {side} p50 ms"), load.p50_ms);
            figures.add(format!("{mode} {side} p99 ms"), load.p99_ms);
            figures.add(format!("{mode} {side} machine CPU us/request"), load.machine_us);
            figures.add(format!("{mode} {side} member CPU us/request"), load.member_us);
            figures.add(format!("{mode} {side} nginx CPU us/request"), load.backend_us);
            if *i > 0 {
                figures.add(
                    format!("ratio {mode} {side}/direct req/s"),
                    load.requests_per_second / direct.requests_per_second,
                );
                figures.add(format!("ratio {mode} {side}/direct p99"), load.p99_ms / direct.p99_ms);
            }
        }
    }
    Ok(figures)
}

pub fn targets(summary: &Summary) -> Vec<Target> {
    let mut targets = Vec::new();
    for (mode, _) in MODES {
        let sides =
            DATA_PATHS.iter().flat_map(|(_, suffix, _)| [format!("cluster IP{suffix}"), format!("node port{suffix}")]);
        for side in sides {
            if let Some(r) = summary.median(&format!("ratio {mode} {side}/direct req/s")) {
                targets.push(Target {
                    what: format!("{mode} through the {side}: throughput at least 0.8x straight to the pod ({r:.2}x)"),
                    met: r >= 0.8,
                });
            }
            if let Some(r) = summary.median(&format!("ratio {mode} {side}/direct p99")) {
                targets.push(Target {
                    what: format!("{mode} through the {side}: p99 at most 1.5x straight to the pod ({r:.2}x)"),
                    met: r <= 1.5,
                });
            }
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 3s test @ http://172.17.0.2/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   394.11us  283.53us   4.92ms   74.51%
    Req/Sec    15.04k   849.87    15.89k    90.32%
  Latency Distribution
     50%  337.00us
     75%  567.00us
     90%  697.00us
     99%    1.11ms
  46357 requests in 3.10s, 6.41MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  14954.30
Transfer/sec:      2.07MB
";

    #[test]
    fn wrk_reports_are_read_with_their_units_and_errors() {
        let load = parse_wrk(REPORT).expect("parse");
        assert_eq!(load.requests, 46357);
        assert_eq!(load.errors, 7);
        assert!((load.requests_per_second - 14954.30).abs() < 1e-6);
        assert!((load.p50_ms - 0.337).abs() < 1e-9);
        assert!((load.p99_ms - 1.11).abs() < 1e-9);
        assert!(parse_wrk("nothing").is_err());
    }
}
