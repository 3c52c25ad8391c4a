//! `skiff node`: runs one cluster member until SIGTERM or Ctrl-C.

use std::path::PathBuf;

use anyhow::Context;
use skiff_server::config::NodeConfig;
use skiff_server::Node;

#[derive(clap::Args, Debug)]
pub struct NodeArgs {
    /// The member's TOML config. Without one, a single-member cluster on 127.0.0.1:7420 with its
    /// data in ./skiff-data.
    #[arg(long, short, env = "SKIFF_NODE_CONFIG")]
    config: Option<PathBuf>,
    /// Join an existing cluster through this member (overrides `initial_members` and `join`).
    #[arg(long)]
    join: Option<String>,
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,sled=warn")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let mut config = match &args.config {
        Some(path) => NodeConfig::load(path)?,
        None => NodeConfig::single_member(),
    };
    if let Some(join) = args.join {
        config.initial_members.clear();
        config.join = Some(join);
        let file = args.config.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "--join".into());
        config.validate(&file)?;
    }
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (field `listen`)", config.listen))?;
    let pods = skiff_server::agent_api::PodRuntime::from_settings(&config.agent);
    let node = Node::start(config, listener, None, pods).await?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the member");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
