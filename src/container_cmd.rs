//! `skiff logs POD` and `skiff exec POD -- CMD`: through any member, whichever node runs the pod.

use std::io::Write;

use skiff_client::CallKind;
use skiff_proto::api::containers_client::ContainersClient;
use skiff_proto::api::{ExecRequest, LogsRequest};
use skiff_proto::limits::MAX_RESPONSE_BYTES;

use crate::members::MembersArgs;

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// The pod (`web` or `pod/web`).
    pub pod: String,
    /// The container (needed when the pod has several).
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Keep printing new output.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only the last N lines (-1: all).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    pub tail: i64,
    /// The previous run of the container (after a restart).
    #[arg(short = 'p', long)]
    pub previous: bool,
}

#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// The pod (`web` or `pod/web`).
    pub pod: String,
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// The exit code of a command run by `skiff exec`, passed on as skiff's own.
#[derive(Debug, thiserror::Error)]
#[error("the command exited with {0}")]
pub struct CommandExit(pub i64);

fn pod_name(arg: &str) -> anyhow::Result<String> {
    match arg.split_once('/') {
        Some((kind, name)) if skiff_api::Kind::lookup(kind) == Some(skiff_api::Kind::Pod) => Ok(name.to_string()),
        Some((kind, _)) => anyhow::bail!("{arg:?}: only pods have logs and exec (got {kind:?})"),
        None => Ok(arg.to_string()),
    }
}

pub async fn logs(args: LogsArgs, members: &MembersArgs) -> anyhow::Result<()> {
    let client = members.client()?;
    let req = LogsRequest {
        namespace: args.namespace.unwrap_or_default(),
        pod: pod_name(&args.pod)?,
        container: args.container.unwrap_or_default(),
        follow: args.follow,
        tail: u64::try_from(args.tail).unwrap_or(0),
        previous: args.previous,
    };
    let mut stream = client
        .call(CallKind::Read, |ch| {
            let req = req.clone();
            async move { ContainersClient::new(ch).max_decoding_message_size(MAX_RESPONSE_BYTES).logs(req).await }
        })
        .await?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.message().await? {
        out.write_all(&chunk.data)?;
        out.flush()?;
    }
    Ok(())
}

pub async fn exec(args: ExecArgs, members: &MembersArgs) -> anyhow::Result<()> {
    let client = members.client()?;
    let req = ExecRequest {
        namespace: args.namespace.unwrap_or_default(),
        pod: pod_name(&args.pod)?,
        container: args.container.unwrap_or_default(),
        command: args.command,
        timeout_seconds: 0,
    };
    // A command may change state: never run it twice because a connection broke.
    let resp = client
        .call(CallKind::Write, |ch| {
            let req = req.clone();
            async move { ContainersClient::new(ch).max_decoding_message_size(MAX_RESPONSE_BYTES).exec(req).await }
        })
        .await?
        .into_inner();
    let mut out = std::io::stdout().lock();
    out.write_all(&resp.output)?;
    out.flush()?;
    if resp.exit_code != 0 {
        return Err(CommandExit(resp.exit_code).into());
    }
    Ok(())
}
