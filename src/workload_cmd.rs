//! The commands that change a workload or a node in place, as kubectl's do: `scale`, `set image`,
//! `rollout status|history|undo|pause|resume|restart`, `cordon`, `uncordon` and `drain`. Each reads
//! the object, changes it and writes it back with its resourceVersion, reading again on a conflict.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use skiff_api::kinds::replica_set::{POD_TEMPLATE_HASH, REVISION};
use skiff_api::kinds::{Deployment, ReplicaSet};
use skiff_api::{Kind, Object};
use skiff_client::Client;
use skiff_proto::api::{DeleteObjectRequest, ListObjectsRequest};

use crate::api_client::{self, resource_name};
use crate::get_cmd::kind_arg;
use crate::members::MembersArgs;
use crate::printers::render;

#[derive(clap::Args, Debug)]
pub struct ScaleArgs {
    /// `deployment/web`, `rs/web-5d8f`, or a kind and a name.
    pub what: String,
    pub name: Option<String>,
    /// The new number of replicas (0 or more).
    #[arg(long)]
    pub replicas: i64,
    #[arg(short, long)]
    pub namespace: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
pub enum SetCommand {
    /// Change container images: `skiff set image deployment/web app=nginx:1.16.1`.
    Image {
        what: String,
        /// `CONTAINER=IMAGE` pairs (`*=IMAGE`: every container).
        #[arg(required = true)]
        images: Vec<String>,
        #[arg(short, long)]
        namespace: Option<String>,
    },
}

#[derive(clap::Subcommand, Debug)]
pub enum RolloutCommand {
    /// Follow a rollout until it finishes; exits non-zero when it fails (progress deadline).
    Status {
        what: String,
        #[arg(short, long)]
        namespace: Option<String>,
        /// Give up after this many seconds (0: never).
        #[arg(long, default_value_t = 0)]
        wait_timeout: u64,
    },
    /// The revisions of a deployment.
    History {
        what: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Roll back to the previous revision (or `--to-revision`).
    Undo {
        what: String,
        #[arg(long)]
        to_revision: Option<i64>,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Stop rolling out template changes.
    Pause {
        what: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Roll out again what changed while paused.
    Resume {
        what: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Replace every pod, one step at a time, by a new template annotation.
    Restart {
        what: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
}

#[derive(clap::Args, Debug)]
pub struct DrainArgs {
    pub node: String,
    /// Also evict pods that no controller will replace.
    #[arg(long)]
    pub force: bool,
    /// Give up waiting for the pods to go after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub wait_timeout: u64,
}

/// `KIND/NAME` or `KIND NAME`.
fn target(what: &str, name: Option<&str>) -> anyhow::Result<(Kind, String)> {
    match (what.split_once('/'), name) {
        (Some((kind, name)), None) => Ok((kind_arg(kind)?, name.to_string())),
        (None, Some(name)) => Ok((kind_arg(what)?, name.to_string())),
        (Some(_), Some(_)) => bail!("name the object once: KIND/NAME or KIND NAME"),
        (None, None) => bail!("{what:?}: name the object, as deployment/web"),
    }
}

fn deployment_target(what: &str) -> anyhow::Result<String> {
    let (kind, name) = target(what, None)?;
    if kind != Kind::Deployment {
        bail!("{what:?}: this command works on deployments (deployment/NAME)");
    }
    Ok(name)
}

/// Reads the object, lets `change` edit it, writes it back; again on a conflict. `change` returns
/// false when there is nothing to do (then nothing is written).
async fn update(
    client: &Client,
    kind: Kind,
    namespace: &str,
    name: &str,
    mut change: impl FnMut(&mut Object) -> anyhow::Result<bool>,
) -> anyhow::Result<(Object, bool)> {
    for _ in 0..5 {
        let mut object = api_client::get(client, kind, namespace, name, false).await?;
        if !change(&mut object)? {
            return Ok((object, false));
        }
        match api_client::apply(client, &object, false).await {
            Ok(_) => return Ok((object, true)),
            // A conflict (someone wrote in between, a controller perhaps): read again.
            Err(e) if e.code() == tonic::Code::FailedPrecondition => continue,
            Err(e) => return Err(e).with_context(|| format!("writing {}", object.describe())),
        }
    }
    bail!("{kind} {name:?} kept changing under this command: try again")
}

fn say(line: &str) -> anyhow::Result<()> {
    writeln!(std::io::stdout().lock(), "{line}")?;
    Ok(())
}

pub async fn scale(args: ScaleArgs, members: &MembersArgs) -> anyhow::Result<()> {
    let client = members.client()?;
    let (kind, name) = target(&args.what, args.name.as_deref())?;
    let Ok(replicas) = i32::try_from(args.replicas).map_err(drop).and_then(|r| if r < 0 { Err(()) } else { Ok(r) })
    else {
        bail!("--replicas={}: the count must be 0 or more", args.replicas);
    };
    let ns = args.namespace.unwrap_or_default();
    let (object, _) = update(&client, kind, &ns, &name, |o| {
        match o {
            Object::Deployment(d) => d.spec.replicas = Some(replicas),
            Object::ReplicaSet(rs) => rs.spec.replicas = Some(replicas),
            other => bail!("{} cannot be scaled: scale deployments or replica sets", other.describe()),
        }
        Ok(true)
    })
    .await?;
    say(&format!("{} scaled", resource_name(&object)))
}

pub async fn set(cmd: SetCommand, members: &MembersArgs) -> anyhow::Result<()> {
    let client = members.client()?;
    let SetCommand::Image { what, images, namespace } = cmd;
    let (kind, name) = target(&what, None)?;
    let pairs: Vec<(String, String)> = images
        .iter()
        .map(|p| {
            p.split_once('=')
                .filter(|(c, i)| !c.is_empty() && !i.is_empty())
                .map(|(c, i)| (c.to_string(), i.to_string()))
                .with_context(|| format!("{p:?}: write CONTAINER=IMAGE"))
        })
        .collect::<anyhow::Result<_>>()?;
    let ns = namespace.unwrap_or_default();
    let (object, changed) = update(&client, kind, &ns, &name, |o| {
        let spec = match o {
            Object::Deployment(d) => &mut d.spec.template.spec,
            Object::ReplicaSet(rs) => &mut rs.spec.template.spec,
            Object::Pod(p) => &mut p.spec,
            other => bail!("{} has no containers to set an image of", other.describe()),
        };
        let mut changed = false;
        for (container, image) in &pairs {
            let mut found = false;
            for c in spec.containers.iter_mut().filter(|c| container == "*" || c.name == *container) {
                found = true;
                changed |= c.image != *image;
                c.image = image.clone();
            }
            if !found {
                let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
                bail!("{name:?} has no container {container:?} (it has {})", names.join(", "));
            }
        }
        Ok(changed)
    })
    .await?;
    if changed {
        say(&format!("{} image updated", resource_name(&object)))
    } else {
        say(&format!("{} image unchanged", resource_name(&object)))
    }
}

/// The replica sets a deployment controls, by revision.
async fn sets_of(client: &Client, d: &Deployment) -> anyhow::Result<Vec<ReplicaSet>> {
    let req = ListObjectsRequest {
        kind: Kind::ReplicaSet.name().into(),
        namespace: d.metadata.namespace.clone(),
        ..Default::default()
    };
    let (objects, _) = api_client::list(client, req).await?;
    let mut sets: Vec<ReplicaSet> = objects
        .into_iter()
        .filter_map(|o| match o {
            Object::ReplicaSet(rs)
                if rs
                    .metadata
                    .owner_references
                    .iter()
                    .any(|r| r.controller == Some(true) && r.uid == d.metadata.uid) =>
            {
                Some(rs)
            }
            _ => None,
        })
        .collect();
    sets.sort_by_key(|rs| rs.revision());
    Ok(sets)
}

/// kubectl's rollout status line for `d`, and whether the rollout is over (Err: it failed).
pub fn rollout_line(d: &Deployment) -> Result<(String, bool), String> {
    let name = &d.metadata.name;
    let Some(status) = &d.status else {
        return Ok(("Waiting for deployment spec update to be observed...".into(), false));
    };
    if status.observed_generation < d.metadata.generation {
        return Ok(("Waiting for deployment spec update to be observed...".into(), false));
    }
    let progressing = status.conditions.iter().find(|c| c.type_ == "Progressing");
    if progressing.and_then(|c| c.reason.as_deref()) == Some("ProgressDeadlineExceeded") {
        return Err(format!("deployment {name:?} exceeded its progress deadline"));
    }
    let desired = d.spec.replicas.unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let waiting = |what: String| Ok((format!("Waiting for deployment {name:?} rollout to finish: {what}..."), false));
    if updated < desired {
        return waiting(format!("{updated} out of {desired} new replicas have been updated"));
    }
    if replicas > updated {
        return waiting(format!("{} old replicas are pending termination", replicas - updated));
    }
    if available < updated {
        return waiting(format!("{available} of {updated} updated replicas are available"));
    }
    Ok((format!("deployment {name:?} successfully rolled out"), true))
}

pub async fn rollout(cmd: RolloutCommand, members: &MembersArgs) -> anyhow::Result<()> {
    let client = members.client()?;
    match cmd {
        RolloutCommand::Status { what, namespace, wait_timeout } => {
            let name = deployment_target(&what)?;
            let ns = namespace.unwrap_or_default();
            let started = tokio::time::Instant::now();
            let mut last = String::new();
            loop {
                let Object::Deployment(d) = api_client::get(&client, Kind::Deployment, &ns, &name, false).await? else {
                    bail!("deployment {name:?}: the server answered with another kind");
                };
                let (line, done) = rollout_line(&d).map_err(anyhow::Error::msg)?;
                if line != last {
                    say(&line)?;
                    last = line;
                }
                if done {
                    return Ok(());
                }
                if wait_timeout > 0 && started.elapsed() > Duration::from_secs(wait_timeout) {
                    bail!("timed out after {wait_timeout} s waiting for deployment {name:?} to roll out");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        RolloutCommand::History { what, namespace } => {
            let name = deployment_target(&what)?;
            let ns = namespace.unwrap_or_default();
            let Object::Deployment(d) = api_client::get(&client, Kind::Deployment, &ns, &name, false).await? else {
                bail!("deployment {name:?}: the server answered with another kind");
            };
            let rows: Vec<Vec<String>> = sets_of(&client, &d)
                .await?
                .iter()
                .filter(|rs| rs.revision() > 0)
                .map(|rs| {
                    let cause = rs.metadata.annotations.get("kubernetes.io/change-cause").cloned();
                    let images: Vec<&str> = rs.spec.template.spec.containers.iter().map(|c| c.image.as_str()).collect();
                    vec![rs.revision().to_string(), cause.unwrap_or_else(|| "<none>".into()), images.join(",")]
                })
                .collect();
            say(&format!("deployment.apps/{name}"))?;
            let table = render(&["REVISION", "CHANGE-CAUSE", "IMAGES"], rows, false);
            write!(std::io::stdout().lock(), "{table}")?;
            Ok(())
        }
        RolloutCommand::Undo { what, to_revision, namespace } => {
            let name = deployment_target(&what)?;
            let ns = namespace.unwrap_or_default();
            let Object::Deployment(d) = api_client::get(&client, Kind::Deployment, &ns, &name, false).await? else {
                bail!("deployment {name:?}: the server answered with another kind");
            };
            let sets = sets_of(&client, &d).await?;
            let current = d.metadata.annotations.get(REVISION).and_then(|r| r.parse::<i64>().ok()).unwrap_or(0);
            let target = match to_revision {
                Some(r) => sets.iter().find(|rs| rs.revision() == r).with_context(|| {
                    let known: Vec<String> = sets.iter().map(|rs| rs.revision().to_string()).collect();
                    format!("deployment {name:?} has no revision {r} (it has {})", known.join(", "))
                })?,
                None => sets
                    .iter()
                    .rev()
                    .find(|rs| rs.revision() > 0 && rs.revision() != current)
                    .with_context(|| format!("deployment {name:?} has no previous revision to roll back to"))?,
            };
            let mut template = target.spec.template.clone();
            template.metadata.labels.remove(POD_TEMPLATE_HASH);
            let (object, changed) = update(&client, Kind::Deployment, &ns, &name, |o| {
                let Object::Deployment(d) = o else { bail!("not a deployment") };
                if d.spec.template == template {
                    return Ok(false);
                }
                d.spec.template = template.clone();
                Ok(true)
            })
            .await?;
            if changed {
                say(&format!("{} rolled back", resource_name(&object)))
            } else {
                say(&format!(
                    "{} skipped rollback (current template already matches revision {})",
                    resource_name(&object),
                    target.revision()
                ))
            }
        }
        RolloutCommand::Pause { what, namespace } => set_paused(&client, &what, namespace, true).await,
        RolloutCommand::Resume { what, namespace } => set_paused(&client, &what, namespace, false).await,
        RolloutCommand::Restart { what, namespace } => {
            let name = deployment_target(&what)?;
            let ns = namespace.unwrap_or_default();
            let now = jiff::Timestamp::now().to_string();
            let (object, _) = update(&client, Kind::Deployment, &ns, &name, |o| {
                let Object::Deployment(d) = o else { bail!("not a deployment") };
                d.spec.template.metadata.annotations.insert("kubectl.kubernetes.io/restartedAt".into(), now.clone());
                Ok(true)
            })
            .await?;
            say(&format!("{} restarted", resource_name(&object)))
        }
    }
}

async fn set_paused(client: &Client, what: &str, namespace: Option<String>, paused: bool) -> anyhow::Result<()> {
    let name = deployment_target(what)?;
    let ns = namespace.unwrap_or_default();
    let (object, changed) = update(client, Kind::Deployment, &ns, &name, |o| {
        let Object::Deployment(d) = o else { bail!("not a deployment") };
        if d.spec.paused.unwrap_or(false) == paused {
            return Ok(false);
        }
        d.spec.paused = paused.then_some(true);
        Ok(true)
    })
    .await?;
    let word = if paused { "paused" } else { "resumed" };
    if changed {
        say(&format!("{} {word}", resource_name(&object)))
    } else {
        say(&format!("{} already {word}", resource_name(&object)))
    }
}

/// `skiff cordon NODE` / `skiff uncordon NODE`.
pub async fn cordon(node: &str, unschedulable: bool, members: &MembersArgs) -> anyhow::Result<()> {
    let client = members.client()?;
    set_cordon(&client, node, unschedulable).await
}

async fn set_cordon(client: &Client, node: &str, unschedulable: bool) -> anyhow::Result<()> {
    let (_, changed) = update(client, Kind::Node, "", node, |o| {
        let Object::Node(n) = o else { bail!("not a node") };
        if n.spec.unschedulable.unwrap_or(false) == unschedulable {
            return Ok(false);
        }
        n.spec.unschedulable = unschedulable.then_some(true);
        Ok(true)
    })
    .await?;
    let word = if unschedulable { "cordoned" } else { "uncordoned" };
    if changed {
        say(&format!("node/{node} {word}"))
    } else {
        say(&format!("node/{node} already {word}"))
    }
}

/// `skiff drain NODE`: cordons the node, evicts its pods and waits until they are gone.
pub async fn drain(args: DrainArgs, members: &MembersArgs) -> anyhow::Result<()> {
    let client = members.client()?;
    set_cordon(&client, &args.node, true).await?;
    let on_node = || ListObjectsRequest {
        kind: Kind::Pod.name().into(),
        field_selector: format!("spec.nodeName={}", args.node),
        ..Default::default()
    };
    let (pods, _) = api_client::list(&client, on_node()).await?;
    let unmanaged: Vec<String> = pods
        .iter()
        .filter(|p| !p.meta().owner_references.iter().any(|r| r.controller == Some(true)))
        .map(|p| format!("{}/{}", p.meta().namespace, p.meta().name))
        .collect();
    if !unmanaged.is_empty() && !args.force {
        bail!(
            "cannot drain node/{}: these pods are not managed by a controller and would not come back elsewhere: {} (use --force to delete them anyway)",
            args.node,
            unmanaged.join(", ")
        );
    }
    for pod in &pods {
        let m = pod.meta();
        say(&format!("evicting pod {}/{}", m.namespace, m.name))?;
        let req = DeleteObjectRequest {
            kind: Kind::Pod.name().into(),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            ..Default::default()
        };
        if let Err(e) = api_client::delete(&client, req).await {
            if !e.to_string().contains("not found") {
                return Err(e).with_context(|| format!("evicting pod {}/{}", m.namespace, m.name));
            }
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_timeout);
    loop {
        let (left, _) = api_client::list(&client, on_node()).await?;
        if left.is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let names: Vec<String> = left.iter().map(|p| p.meta().name.clone()).collect();
            bail!(
                "node/{}: {} pod(s) still stopping after {} s: {}",
                args.node,
                left.len(),
                args.wait_timeout,
                names.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for pod in &pods {
        say(&format!("pod/{} evicted", pod.meta().name))?;
    }
    say(&format!("node/{} drained", args.node))
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::kinds::deployment::{DeploymentCondition, DeploymentStatus};

    fn deployment(generation: i64, status: DeploymentStatus) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = "web".into();
        d.metadata.generation = Some(generation);
        d.spec.replicas = Some(3);
        d.status = Some(status);
        d
    }

    #[test]
    fn rollout_status_lines_follow_kubectl() {
        let status = |observed: i64, replicas: i32, updated: i32, available: i32| DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            ..Default::default()
        };
        let line = |d: Deployment| rollout_line(&d).expect("not failed");
        assert_eq!(line(deployment(2, status(1, 3, 3, 3))).0, "Waiting for deployment spec update to be observed...");
        assert_eq!(
            line(deployment(2, status(2, 4, 1, 3))).0,
            "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated..."
        );
        assert_eq!(
            line(deployment(2, status(2, 4, 3, 3))).0,
            "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination..."
        );
        assert_eq!(
            line(deployment(2, status(2, 3, 3, 2))).0,
            "Waiting for deployment \"web\" rollout to finish: 2 of 3 updated replicas are available..."
        );
        assert_eq!(
            line(deployment(2, status(2, 3, 3, 3))),
            ("deployment \"web\" successfully rolled out".into(), true)
        );
        let mut failed = status(2, 4, 1, 3);
        failed.conditions.push(DeploymentCondition {
            type_: "Progressing".into(),
            status: "False".into(),
            reason: Some("ProgressDeadlineExceeded".into()),
            ..Default::default()
        });
        assert_eq!(
            rollout_line(&deployment(2, failed)),
            Err("deployment \"web\" exceeded its progress deadline".into())
        );
    }
}
