//! `skiff get KIND [NAME...]`: tables, `-o wide|yaml|json|name`, selectors, all namespaces, and
//! `-w` to keep printing changes (resuming on another member if the one serving the watch goes).

use std::io::Write;

use anyhow::Context;
use skiff_api::{Kind, Object};
use skiff_client::Client;
use skiff_proto::api::{object_event, ListObjectsRequest, WatchObjectsRequest};
use tonic::Code;

use crate::api_client;
use crate::members::MembersArgs;
use crate::printers::{format_list, format_one, table, Output, TableOptions};

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// What to get: a kind (`pods`, `po`, `deployment`...), `KIND/NAME`, or a comma-separated list of kinds.
    pub what: String,
    /// Names of the objects (all of them when none is given).
    pub names: Vec<String>,
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Label selector, e.g. `app=web,tier!=db,env in (prod,qa)`.
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Field selector, e.g. `spec.nodeName=node1`.
    #[arg(long)]
    pub field_selector: Option<String>,
    #[arg(short, long, value_enum)]
    pub output: Option<Output>,
    /// After listing, print every change as it happens.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// Print only changes, not the initial list.
    #[arg(long)]
    pub watch_only: bool,
    /// With --watch-only: resume after this resourceVersion (as printed by a list).
    #[arg(long)]
    pub resource_version: Option<u64>,
    /// With -o json or yaml in watch mode: print each change as {type, object}.
    #[arg(long)]
    pub output_watch_events: bool,
    #[arg(long)]
    pub show_labels: bool,
    #[arg(long)]
    pub no_headers: bool,
    /// Read the asked member's replica without a leader round trip (may be behind).
    #[arg(long)]
    pub stale: bool,
}

/// `pods`, `pod/web` or `pods,services` into kinds and names.
pub fn parse_what(what: &str, names: &[String]) -> anyhow::Result<Vec<(Kind, Vec<String>)>> {
    if let Some((kind, name)) = what.split_once('/') {
        let kind = kind_arg(kind)?;
        let mut all = vec![name.to_string()];
        for extra in names {
            let (k, n) = extra.split_once('/').with_context(|| format!("{extra:?}: use KIND/NAME like {what:?}"))?;
            if kind_arg(k)? != kind {
                anyhow::bail!("{extra:?}: name objects of one kind per command");
            }
            all.push(n.to_string());
        }
        return Ok(vec![(kind, all)]);
    }
    let kinds = what.split(',').map(kind_arg).collect::<anyhow::Result<Vec<_>>>()?;
    if kinds.len() > 1 && !names.is_empty() {
        anyhow::bail!("names can only be given with a single kind");
    }
    Ok(kinds.into_iter().map(|k| (k, names.to_vec())).collect())
}

pub fn kind_arg(text: &str) -> anyhow::Result<Kind> {
    Kind::lookup(text).with_context(|| {
        format!(
            "the server doesn't have a resource type {text:?}: use one of {} (see `skiff api-resources`)",
            Kind::list_names()
        )
    })
}

pub async fn run(args: GetArgs, members: &MembersArgs) -> anyhow::Result<()> {
    let client = members.client()?;
    let targets = parse_what(&args.what, &args.names)?;
    if args.all_namespaces && targets.iter().any(|(_, names)| !names.is_empty()) {
        anyhow::bail!("an object cannot be retrieved by name across all namespaces: give -n NAMESPACE instead of -A");
    }
    let namespace = args.namespace.clone().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    let opts = TableOptions {
        wide: args.output == Some(Output::Wide),
        namespace_column: args.all_namespaces,
        show_labels: args.show_labels,
        no_headers: args.no_headers,
    };
    let structured = matches!(args.output, Some(Output::Yaml | Output::Json | Output::Name));
    let mut missing = Vec::new();
    let mut last_rv = 0;
    let mut collected: Vec<Object> = Vec::new();
    let mut header_printed = false;
    for (i, (kind, names)) in targets.iter().enumerate() {
        if args.watch_only {
            break;
        }
        let objects = if names.is_empty() {
            let req = ListObjectsRequest {
                kind: kind.name().into(),
                namespace: namespace.clone(),
                all_namespaces: args.all_namespaces,
                label_selector: args.selector.clone().unwrap_or_default(),
                field_selector: args.field_selector.clone().unwrap_or_default(),
                stale: args.stale,
            };
            let (objects, rv) = api_client::list(&client, req).await?;
            last_rv = rv;
            if objects.is_empty() && !structured && targets.len() == 1 && !args.watch {
                let scope = if args.all_namespaces || !kind.namespaced() {
                    String::new()
                } else {
                    format!(" in {} namespace", if namespace.is_empty() { "default" } else { &namespace })
                };
                eprintln!("No resources found{scope}.");
            }
            objects
        } else {
            let mut found = Vec::new();
            for name in names {
                match api_client::get(&client, *kind, &namespace, name, args.stale).await {
                    Ok(o) => {
                        // A watch that follows starts after what was printed.
                        last_rv = last_rv.max(o.meta().resource_version.parse().unwrap_or(0));
                        found.push(o)
                    }
                    Err(e) if is_not_found(&e) => missing.push(e.to_string()),
                    Err(e) => return Err(e),
                }
            }
            found
        };
        if structured {
            collected.extend(objects);
        } else if !objects.is_empty() {
            if i > 0 {
                writeln!(out)?;
            }
            out.write_all(table(*kind, &objects, opts).as_bytes())?;
            header_printed = true;
        }
    }
    if let Some(output) = args.output.filter(|_| structured) {
        let single = targets.len() == 1 && targets[0].1.len() == 1 && collected.len() == 1;
        if single {
            out.write_all(format_one(&collected[0], output)?.as_bytes())?;
        } else if !args.watch_only {
            out.write_all(format_list(&collected, last_rv, output)?.as_bytes())?;
        }
    }
    out.flush()?;
    for m in &missing {
        eprintln!("Error from server (NotFound): {m}");
    }
    if args.watch || args.watch_only {
        if targets.len() != 1 {
            anyhow::bail!("watch one kind at a time");
        }
        let from = if args.watch_only { args.resource_version.unwrap_or(0) } else { last_rv };
        return watch(&client, &args, targets[0].0, from, opts, header_printed).await;
    }
    if !missing.is_empty() {
        anyhow::bail!("{} object(s) not found", missing.len());
    }
    Ok(())
}

fn is_not_found(e: &anyhow::Error) -> bool {
    e.downcast_ref::<skiff_client::ClientError>().is_some_and(|c| c.code() == Code::NotFound)
}

/// Prints changes after `from`, reopening the watch on the next member when the serving one goes.
async fn watch(
    client: &Client,
    args: &GetArgs,
    kind: Kind,
    mut from: u64,
    opts: TableOptions,
    header_printed: bool,
) -> anyhow::Result<()> {
    let names = parse_what(&args.what, &args.names)?.remove(0).1;
    let mut out = std::io::stdout().lock();
    let mut first_row = header_printed;
    loop {
        let req = WatchObjectsRequest {
            kind: kind.name().into(),
            namespace: args.namespace.clone().unwrap_or_default(),
            all_namespaces: args.all_namespaces,
            label_selector: args.selector.clone().unwrap_or_default(),
            field_selector: args.field_selector.clone().unwrap_or_default(),
            resource_version: from,
            bookmark_interval_ms: 1000,
        };
        let mut stream = api_client::watch(client, req).await?;
        loop {
            // The server sends a bookmark every second: silence means a dead connection.
            let event = match tokio::time::timeout(std::time::Duration::from_secs(10), stream.message()).await {
                Err(_) => {
                    tracing::debug!("no bookmark for 10 s; resuming on the next member that answers");
                    break;
                }
                Ok(r) => r,
            };
            let event = match event {
                Ok(Some(e)) => e,
                Ok(None) => break,
                Err(s) if matches!(s.code(), Code::OutOfRange | Code::InvalidArgument | Code::NotFound) => {
                    anyhow::bail!("{}", s.message())
                }
                Err(s) => {
                    tracing::debug!(status = %s, "watch interrupted; resuming");
                    break;
                }
            };
            from = from.max(event.resource_version);
            let Ok(kind_of_event) = object_event::Type::try_from(event.r#type) else { continue };
            if kind_of_event == object_event::Type::Bookmark {
                continue;
            }
            let object = api_client::decode(&event.object)?;
            if !names.is_empty() && !names.contains(&object.meta().name) {
                continue;
            }
            let type_name = kind_of_event.as_str_name();
            match args.output {
                Some(Output::Json) if args.output_watch_events => writeln!(
                    out,
                    "{}",
                    serde_json::to_string(&serde_json::json!({"type": type_name, "object": object.to_value()}))?
                )?,
                Some(o @ (Output::Json | Output::Yaml | Output::Name)) => {
                    if o == Output::Yaml {
                        writeln!(out, "---")?;
                    }
                    out.write_all(format_one(&object, o)?.as_bytes())?
                }
                _ => {
                    let row_opts = TableOptions { no_headers: first_row || opts.no_headers, ..opts };
                    let mut text = table(kind, std::slice::from_ref(&object), row_opts);
                    if args.output_watch_events {
                        text = text.lines().map(|l| format!("{type_name}   {l}\n")).collect();
                    }
                    out.write_all(text.as_bytes())?;
                    first_row = true;
                }
            }
            out.flush()?;
        }
        // The stream ended (the member went away): resume after the last change seen.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `skiff api-resources`.
pub fn api_resources() -> anyhow::Result<()> {
    let rows = Kind::ALL
        .iter()
        .map(|k| {
            let i = k.info();
            vec![
                i.plural.to_string(),
                i.short_names.join(","),
                i.api_version.to_string(),
                i.namespaced.to_string(),
                i.kind.to_string(),
            ]
        })
        .collect();
    let text = crate::printers::render(&["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"], rows, false);
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}
