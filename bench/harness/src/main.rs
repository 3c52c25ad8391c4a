//! `skiff-bench`: Skiff measured side by side with etcd, in the same run, on this machine.
//!
//! - `store`: writes/s and latency at several client counts (three members each, on loopback).
//! - `failover`: time from `kill -9` of the leader to the first accepted write invoked after it.
//! - `podstart`: binding to Running for 50 pods against plain docker.
//! - `api`: resource API latency (apply, get) at 100 clients and watch delivery latency.
//! - `nodeloss`: time from `kill -9` of a member hosting 10 pods to their replacements Running.
//! - `deploy`: a 50-replica Deployment until all pods are Ready, against plain docker and Docker
//!   Swarm; a rolling update of 10 replicas against `docker service update`.
//! - `scale`: 1,000 simulated nodes and 30,000 pods: pods bound/s, leader memory, liveness cost.
//! - `proxy`: HTTP through a Service's cluster IP and node port against straight to the pod (wrk).
//!
//! # Layout
//!
//! - `cluster`: starting, killing and restarting three-member Skiff and etcd clusters.
//! - `access`: how channels reach the members: Skiff's over TLS with the cluster's admin
//!   credentials; etcd's over TLS with a CA and certificates the harness makes per cluster.
//! - `cpu`: how much of the machine the benchmark had.
//! - `system`: the one interface the benchmarks use for both: put, get, leader, term; and how
//!   each one's members are dialed (`Dialer`: both over TLS; etcd in plain HTTP/2 with
//!   `--etcd-plain`).
//! - `report`: several runs summed up (median and range), targets, failure checks.
//! - `hollow`, `follow`, `memory`: simulated nodes, list-then-watch of a kind, a process's memory.
//! - `leftovers`: removes what a run left on the Docker engine (by its label), also on failure.
//! - `wait`: waiting for a condition with a deadline.
//! - `swarm`: Docker Swarm as a reference: the swarm, services, their waits.
//! - `store`, `failover`, `api`, `podstart`, `deploy`, `nodeloss`, `scale`, `proxy`: the
//!   benchmarks, each one run at a time
//!   (`run_once`).

mod access;
mod api;
mod cluster;
mod cpu;
mod deploy;
mod failover;
mod follow;
mod hollow;
mod leftovers;
mod memory;
mod nodeloss;
mod podstart;
mod proxy;
mod report;
mod scale;
mod store;
mod swarm;
mod system;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "skiff-bench", about = "Skiff against etcd, side by side")]
struct Cli {
    /// The `skiff` binary to benchmark.
    #[arg(long, default_value = "target/release/skiff")]
    skiff: PathBuf,
    /// The `etcd` binary to compare with.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// Run etcd in plain HTTP (clients and peers) instead of mutual TLS, as Skiff runs; also
    /// accepted after the benchmark's name (`bash bench/store/run.sh --etcd-plain`).
    #[arg(long, global = true)]
    etcd_plain: bool,
    /// Short runs that only prove the benchmark works (CI).
    #[arg(long)]
    smoke: bool,
    /// How many times to run the whole benchmark (default 3, smoke 1; podstart 4, smoke 2);
    /// figures are the median.
    #[arg(long)]
    runs: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes/s and p50/p99/max latency at 1, 16, 256 and 1000 concurrent clients.
    Store {
        /// Seconds per client count (default 10, smoke 1).
        #[arg(long)]
        seconds: Option<u64>,
        /// Client counts, comma-separated (default 1,16,256,1000; smoke 1,16).
        #[arg(long, value_delimiter = ',')]
        clients: Option<Vec<usize>>,
        /// Bytes per value (default 256). Over 32 KiB, Skiff keeps each value in a file of its own.
        #[arg(long, default_value_t = 256)]
        value_bytes: usize,
    },
    /// Kill -9 the leader repeatedly while 4 clients write; time to the first accepted write.
    Failover {
        /// Kills per system (default 20, smoke 2).
        #[arg(long)]
        kills: Option<usize>,
    },
    /// Time from binding to Running for 50 pods, against plain docker.
    Podstart {
        /// Pods (default 50, smoke 5).
        #[arg(long)]
        pods: Option<usize>,
    },
    /// Kill -9 a member that hosts 10 pods; time until their replacements are Running and Ready.
    Nodeloss,
    /// Apply and get latency at 100 concurrent clients, and watch delivery latency.
    Api {
        /// Concurrent clients (default 100, smoke 10).
        #[arg(long)]
        clients: Option<usize>,
        /// Seconds per phase (default 10, smoke 1).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// A 50-replica Deployment until all pods are Ready, against plain docker and a Swarm service;
    /// a 10-replica rolling update against `docker service update`.
    Deploy {
        /// Replicas of the scale-up (default 50, smoke 10).
        #[arg(long)]
        replicas: Option<usize>,
        /// Replicas of the rolling update (default 10, smoke 4).
        #[arg(long)]
        update_replicas: Option<usize>,
    },
    /// Requests/s and p50/p99 through a Service's cluster IP and node port against straight to
    /// the pod, keep-alive and new connections (wrk).
    Proxy {
        /// Seconds per side and mode (default 10, smoke 2).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// 1,000 simulated nodes and 30,000 pods: pods bound/s, leader memory, liveness cost.
    Scale {
        /// Simulated nodes (default 1000, smoke 100).
        #[arg(long)]
        nodes: Option<usize>,
        /// Pods, in Deployments of 1,000 replicas (default 30000, smoke 2000).
        #[arg(long)]
        pods: Option<usize>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let bins = cluster::Binaries { skiff: cli.skiff, etcd: cli.etcd, etcd_tls: !cli.etcd_plain };
    // podstart alternates which side goes first, so it runs an even number of times.
    let runs = match (&cli.command, cli.smoke) {
        (Command::Podstart { .. }, true) => cli.runs.unwrap_or(2),
        (Command::Podstart { .. }, false) => cli.runs.unwrap_or(4),
        // Odd runs kill a follower, even runs the leader: an even number sees both alike.
        (Command::Nodeloss, true) => cli.runs.unwrap_or(2),
        (Command::Nodeloss, false) => cli.runs.unwrap_or(4),
        (_, true) => cli.runs.unwrap_or(1),
        (_, false) => cli.runs.unwrap_or(3),
    }
    .max(1);
    let smoke = cli.smoke;
    let command = cli.command;
    let bench = async move {
        match &command {
            Command::Store { seconds, value_bytes, .. } => store::describe(smoke, *seconds, *value_bytes),
            Command::Failover { kills } => failover::describe(smoke, *kills),
            Command::Api { clients, seconds } => api::describe(smoke, *clients, *seconds),
            Command::Podstart { pods } => podstart::describe(smoke, *pods),
            Command::Nodeloss => nodeloss::describe(smoke),
            Command::Deploy { replicas, update_replicas } => {
                deploy::describe(deploy::sizes(smoke, *replicas, *update_replicas))
            }
            Command::Scale { nodes, pods } => scale::describe(smoke, *nodes, *pods),
            Command::Proxy { seconds } => proxy::describe(smoke, *seconds),
        }
        if matches!(command, Command::Store { .. } | Command::Failover { .. } | Command::Api { .. }) {
            println!(
                "{}",
                if bins.etcd_tls {
                    "transport: both over mutual TLS; skiff as always, etcd with client and peer TLS (--client-cert-auth, --peer-client-cert-auth; a CA per cluster)"
                } else {
                    "transport: skiff over mutual TLS, etcd in plain HTTP/2 to clients and plain HTTP between members (--etcd-plain)"
                }
            );
        }
        let mut all = Vec::new();
        for run in 1..=runs {
            println!();
            println!("## run {run} of {runs}");
            let figures = match &command {
                Command::Store { seconds, clients, value_bytes } => {
                    store::run_once(&bins, smoke, *seconds, clients.clone(), *value_bytes).await
                }
                Command::Failover { kills } => failover::run_once(&bins, smoke, *kills).await,
                Command::Api { clients, seconds } => api::run_once(&bins, smoke, *clients, *seconds).await,
                Command::Podstart { pods } => podstart::run_once(&bins, smoke, *pods, run).await,
                Command::Nodeloss => nodeloss::run_once(&bins, smoke, run).await,
                Command::Deploy { replicas, update_replicas } => {
                    deploy::run_once(&bins, deploy::sizes(smoke, *replicas, *update_replicas), run).await
                }
                Command::Scale { nodes, pods } => scale::run_once(&bins, smoke, *nodes, *pods).await,
                Command::Proxy { seconds } => proxy::run_once(&bins, smoke, *seconds, run).await,
            }
            .with_context(|| format!("run {run} of {runs}"))?;
            all.push(figures);
        }
        let summary = report::summarize(&all);
        let targets = match &command {
            Command::Store { .. } => store::targets(&summary),
            Command::Failover { .. } => failover::targets(&summary),
            Command::Api { clients, .. } => api::targets(&summary, *clients, smoke),
            Command::Podstart { .. } => podstart::targets(&summary),
            Command::Nodeloss => nodeloss::targets(&summary),
            Command::Deploy { .. } => deploy::targets(&summary),
            Command::Scale { .. } => scale::targets(&summary),
            Command::Proxy { .. } => proxy::targets(&summary),
        };
        report::print_targets(&targets);
        println!(
            "summary: {runs} run(s), every call and check of Skiff and of the reference within the failure budget"
        );
        anyhow::Ok(())
    };
    // On SIGINT or SIGTERM (`timeout` in bench/run.sh sends it), the benchmark future is dropped, and
    // with it every cluster: their Drop kills the member processes.
    let result = tokio::select! {
        result = bench => result,
        signal = terminated() => match signal {
            Ok(signal) => Err(anyhow::anyhow!("stopped by {signal}; every member process was killed")),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves when the process gets SIGINT or SIGTERM, naming which.
async fn terminated() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}
