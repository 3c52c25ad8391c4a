//! `skiff delete KIND NAME... | -f FILE`: graceful by default for pods on a node (the command
//! waits until they are gone), at once with `--grace-period=0 --force`; dependants go with their owner.

use std::io::Write;
use std::time::Duration;

use skiff_api::Kind;
use skiff_client::{Client, ClientError};
use skiff_proto::api::{object_event, DeleteObjectRequest, ListObjectsRequest, WatchObjectsRequest};
use tonic::Code;

use crate::api_client::{self, qualified_singular};
use crate::apply_cmd::DryRun;
use crate::get_cmd::parse_what;
use crate::members::MembersArgs;

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// A kind and names (`pod web db`), or `KIND/NAME`.
    pub what: Option<String>,
    pub names: Vec<String>,
    /// Delete the objects the files describe.
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<String>,
    #[arg(short = 'R', long)]
    pub recursive: bool,
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Delete every object of the kind that matches this label selector.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Delete every object of the kind in the namespace.
    #[arg(long)]
    pub all: bool,
    /// Seconds the pod's containers get to stop (-1, the default: the pod's
    /// terminationGracePeriodSeconds). 0 with --force removes the object at once.
    #[arg(long, allow_hyphen_values = true)]
    pub grace_period: Option<i64>,
    /// Remove at once, without waiting for containers to stop.
    #[arg(long)]
    pub force: bool,
    /// Same as --grace-period=1.
    #[arg(long)]
    pub now: bool,
    /// Wait until objects being deleted gracefully are gone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub wait: bool,
    #[arg(long, value_enum, default_value_t = DryRun::None, num_args = 0..=1, default_missing_value = "client", require_equals = true)]
    pub dry_run: DryRun,
    /// Treat a missing object as success.
    #[arg(long)]
    pub ignore_not_found: bool,
}

pub async fn run(args: DeleteArgs, members: &MembersArgs) -> anyhow::Result<()> {
    // As kubectl: -1 is the object's own grace period; 0 without --force means 1 (0 would skip the
    // containers' stop, which needs --force).
    let mut grace = args.grace_period.filter(|g| *g >= 0);
    if args.now {
        grace = Some(1);
    }
    if grace == Some(0) && !args.force {
        eprintln!(
            "warning: --grace-period=0 without --force waits 1 s for the containers (add --force to remove at once)"
        );
        grace = Some(1);
    }
    if args.grace_period.is_some_and(|g| g < -1) {
        anyhow::bail!("--grace-period: must be -1 (the object's own), 0 or more");
    }
    let client = members.client()?;
    let namespace = args.namespace.clone().unwrap_or_default();
    let mut targets: Vec<(Kind, String, String)> = Vec::new();
    if !args.files.is_empty() {
        if args.what.is_some() {
            anyhow::bail!("give either -f FILE or KIND NAME, not both");
        }
        let objects = crate::apply_cmd::objects_of(&args.files, args.recursive, None, args.namespace.as_deref())?;
        for o in objects.iter().rev() {
            targets.push((o.kind(), o.meta().namespace.clone(), o.meta().name.clone()));
        }
    } else {
        let Some(what) = &args.what else {
            anyhow::bail!("say what to delete: KIND NAME..., KIND/NAME, KIND -l SELECTOR, KIND --all, or -f FILE");
        };
        for (kind, names) in parse_what(what, &args.names)? {
            if names.is_empty() {
                if args.selector.is_none() && !args.all {
                    anyhow::bail!("name the {} to delete, or use -l SELECTOR or --all", kind.info().plural);
                }
                let req = ListObjectsRequest {
                    kind: kind.name().into(),
                    namespace: namespace.clone(),
                    label_selector: args.selector.clone().unwrap_or_default(),
                    ..Default::default()
                };
                let (objects, _) = api_client::list(&client, req).await?;
                for o in objects {
                    targets.push((kind, o.meta().namespace.clone(), o.meta().name.clone()));
                }
            } else {
                for n in names {
                    targets.push((kind, namespace.clone(), n));
                }
            }
        }
        if targets.is_empty() {
            eprintln!("No resources found");
            return Ok(());
        }
    }
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    let mut waiting = Vec::new();
    for (kind, ns, name) in targets {
        let display = format!("{} {name:?}", qualified_singular(kind));
        if args.dry_run == DryRun::Client {
            writeln!(out, "{display} deleted (dry run)")?;
            continue;
        }
        let req = DeleteObjectRequest {
            kind: kind.name().into(),
            namespace: ns.clone(),
            name: name.clone(),
            grace_period_seconds: grace,
            force: args.force,
            dry_run: args.dry_run == DryRun::Server,
            ..Default::default()
        };
        match api_client::delete(&client, req).await {
            Ok(resp) => {
                let suffix = if args.dry_run == DryRun::Server { " (server dry run)" } else { "" };
                for d in &resp.dependants {
                    writeln!(out, "{d} deleted with its owner{suffix}")?;
                }
                if resp.removed || !args.wait || args.dry_run == DryRun::Server {
                    let how = if resp.removed { "deleted" } else { "deletion started (terminating)" };
                    writeln!(out, "{display} {how}{suffix}")?;
                } else {
                    let object = api_client::decode(&resp.object)?;
                    let grace = object.meta().deletion_grace_period_seconds.unwrap_or(30);
                    waiting.push((kind, ns, name, display, object.meta().resource_version.clone(), grace));
                }
            }
            Err(e) if e.code() == Code::NotFound && args.ignore_not_found => {}
            Err(e) => {
                failed += 1;
                eprintln!("Error: {e}");
                if matches!(e, ClientError::OutcomeUnknown { .. }) {
                    return Err(e.into());
                }
            }
        }
    }
    out.flush()?;
    for (kind, ns, name, display, rv, grace) in waiting {
        wait_gone(&client, kind, &ns, &name, &rv, grace).await?;
        writeln!(out, "{display} deleted")?;
        out.flush()?;
    }
    if failed > 0 {
        anyhow::bail!("{failed} object(s) could not be deleted");
    }
    Ok(())
}

/// Waits until a gracefully deleted object is removed, up to its grace period plus 30 s.
async fn wait_gone(client: &Client, kind: Kind, ns: &str, name: &str, rv: &str, grace: i64) -> anyhow::Result<()> {
    let limit = Duration::from_secs(u64::try_from(grace).unwrap_or(0) + 30);
    let req = WatchObjectsRequest {
        kind: kind.name().into(),
        namespace: ns.into(),
        field_selector: format!("metadata.name={name}"),
        resource_version: rv.parse().unwrap_or(0),
        bookmark_interval_ms: 1000,
        ..Default::default()
    };
    let waited = tokio::time::timeout(limit, async {
        let mut stream = api_client::watch(client, req).await?;
        while let Some(event) = stream.message().await? {
            if event.r#type == object_event::Type::Deleted as i32 {
                return Ok(());
            }
        }
        anyhow::bail!("the watch ended before {kind} {name:?} was gone: check with `skiff get`")
    })
    .await;
    match waited {
        Ok(r) => r,
        Err(_) => anyhow::bail!(
            "{kind} {name:?} is still terminating after {}s: its node has not stopped it yet (use --force --grace-period=0 to remove it now)",
            limit.as_secs()
        ),
    }
}
