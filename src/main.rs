//! `skiff`: a cluster member (`skiff node`) and the client for it (every other command).
//!
//! # Layout
//!
//! - `node_cmd`: `skiff node`, one cluster member.
//! - `cluster_cmd`: `skiff cluster status | add-member | remove-member`.
//! - `kv_cmd`: `skiff kv put | get | list | del | watch`, the low-level store commands.
//! - `apply_cmd`, `get_cmd`, `describe_cmd`, `delete_cmd`: the kubectl-style resource commands
//!   (`get_cmd` also has `api-resources`).
//! - `container_cmd`: `skiff logs` and `skiff exec`.
//! - `api_client`: the resource API calls through the member list.
//! - `manifest_files`: reading `-f` files, directories and stdin.
//! - `printers`: tables, ages, and the yaml, json and name formats.
//! - `members`: which member addresses the client talks to (flag, environment, config file).
//!
//! Exit codes: 0 success, 1 failure, 2 bad usage, 3 a write whose outcome is unknown.

mod api_client;
mod apply_cmd;
mod cluster_cmd;
mod container_cmd;
mod delete_cmd;
mod describe_cmd;
mod get_cmd;
mod kv_cmd;
mod manifest_files;
mod members;
mod node_cmd;
mod printers;
mod workload_cmd;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use skiff_client::ClientError;

/// Skiff: a container orchestrator whose every node is a Raft member.
#[derive(Parser)]
#[command(name = "skiff", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    members: members::MembersArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a cluster member (Raft, API and, later, the agent).
    Node(node_cmd::NodeArgs),
    /// Inspect and change the cluster's membership.
    #[command(subcommand)]
    Cluster(cluster_cmd::ClusterCommand),
    /// Create or update the objects of YAML or JSON files (kubectl apply).
    Apply(apply_cmd::ApplyArgs),
    /// List objects or get some by name, as a table or in yaml, json or name form.
    Get(get_cmd::GetArgs),
    /// Show an object in detail, with its recent events.
    Describe(describe_cmd::DescribeArgs),
    /// Delete objects by kind and name, by selector, or as files describe them.
    Delete(delete_cmd::DeleteArgs),
    /// List the kinds of objects Skiff serves, with their short names.
    ApiResources,
    /// Print a container's output (through any member, whichever node runs the pod).
    Logs(container_cmd::LogsArgs),
    /// Run a command in a container and print its output; exits with the command's exit code.
    Exec(container_cmd::ExecArgs),
    /// Set a deployment's or replica set's number of replicas.
    Scale(workload_cmd::ScaleArgs),
    /// Change part of an object in place (`set image`).
    #[command(subcommand)]
    Set(workload_cmd::SetCommand),
    /// Follow, list, undo, pause, resume or restart a deployment's rollout.
    #[command(subcommand)]
    Rollout(workload_cmd::RolloutCommand),
    /// Mark a node unschedulable: no new pods go there.
    Cordon { node: String },
    /// Mark a node schedulable again.
    Uncordon { node: String },
    /// Cordon a node and evict its pods, waiting until they are gone.
    Drain(workload_cmd::DrainArgs),
    /// Low-level key-value access to the replicated store (its own key prefix).
    #[command(subcommand)]
    Kv(kv_cmd::KvCommand),
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    Completion { shell: clap_complete::Shell },
}

/// glibc's malloc spent a quarter of a loaded leader's CPU in contended allocation of gRPC request
/// and response buffers (perf, 256 clients); mimalloc's thread-local heaps avoid that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a write whose outcome is unknown.
const EXIT_OUTCOME_UNKNOWN: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Node(args) => node_cmd::run(args).await,
            Command::Cluster(cmd) => cluster_cmd::run(cmd, &cli.members).await,
            Command::Kv(cmd) => kv_cmd::run(cmd, &cli.members).await,
            Command::Apply(args) => apply_cmd::run(args, &cli.members).await,
            Command::Get(args) => get_cmd::run(args, &cli.members).await,
            Command::Describe(args) => describe_cmd::run(args, &cli.members).await,
            Command::Delete(args) => delete_cmd::run(args, &cli.members).await,
            Command::ApiResources => get_cmd::api_resources(),
            Command::Logs(args) => container_cmd::logs(args, &cli.members).await,
            Command::Exec(args) => container_cmd::exec(args, &cli.members).await,
            Command::Scale(args) => workload_cmd::scale(args, &cli.members).await,
            Command::Set(cmd) => workload_cmd::set(cmd, &cli.members).await,
            Command::Rollout(cmd) => workload_cmd::rollout(cmd, &cli.members).await,
            Command::Cordon { node } => workload_cmd::cordon(&node, true, &cli.members).await,
            Command::Uncordon { node } => workload_cmd::cordon(&node, false, &cli.members).await,
            Command::Drain(args) => workload_cmd::drain(args, &cli.members).await,
            Command::Completion { shell } => {
                clap_complete::generate(shell, &mut Cli::command(), "skiff", &mut std::io::stdout());
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `skiff ... | head`: the reader went away; that is not a failure of ours.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) => {
            ExitCode::SUCCESS
        }
        Err(e) if e.downcast_ref::<container_cmd::CommandExit>().is_some() => {
            let code = e.downcast_ref::<container_cmd::CommandExit>().map_or(1, |c| c.0);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            match e.downcast_ref::<ClientError>() {
                Some(ClientError::OutcomeUnknown { .. }) => ExitCode::from(EXIT_OUTCOME_UNKNOWN),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
