//! `skiff apply -f FILE|DIR|-`: create or update every object of the files. All files are parsed
//! and validated first; one error anywhere and nothing is sent.

use std::io::Write;

use skiff_api::Kind;
use skiff_client::ClientError;
use skiff_proto::api::apply_response::Outcome;

use crate::api_client::{self, resource_name};
use crate::manifest_files;
use crate::members::MembersArgs;
use crate::printers::{format_list, format_one, Output};

/// `--dry-run`, as kubectl has it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DryRun {
    /// Send and store.
    None,
    /// Parse and validate here; send nothing.
    Client,
    /// Validate on the server and compute the result; store nothing.
    Server,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// Files, directories (their .yaml, .yml and .json files) or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<String>,
    /// Descend into subdirectories of directories given with -f.
    #[arg(short = 'R', long)]
    pub recursive: bool,
    /// Namespace for objects that name none.
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[arg(long, value_enum, default_value_t = DryRun::None, num_args = 0..=1, default_missing_value = "client", require_equals = true)]
    pub dry_run: DryRun,
    /// Fields Skiff does not know: strict (an error), warn, or ignore.
    #[arg(long, default_value = "strict", num_args = 0..=1, default_missing_value = "strict", require_equals = true)]
    pub validate: String,
    #[arg(short, long, value_enum)]
    pub output: Option<Output>,
}

/// Reads every manifest and settles namespaces; the objects in apply order (namespaces first).
/// `validate: None` only names the objects (no validation), for `delete -f`.
pub fn objects_of(
    files: &[String],
    recursive: bool,
    validate: Option<&str>,
    namespace: Option<&str>,
) -> anyhow::Result<Vec<skiff_api::Object>> {
    let manifests = match validate {
        Some(v) => {
            let unknown = skiff_api::manifest::UnknownFields::parse(v).map_err(anyhow::Error::msg)?;
            manifest_files::read_all(files, recursive, unknown)?
        }
        None => manifest_files::read_names(files, recursive)?,
    };
    let mut objects = Vec::with_capacity(manifests.len());
    let mut errors = Vec::new();
    for m in manifests {
        let mut object = m.object;
        if let (Some(ns), true) = (namespace, object.kind().namespaced()) {
            let own = &object.meta().namespace;
            if own.is_empty() {
                object.meta_mut().namespace = ns.to_string();
            } else if own != ns {
                errors.push(format!(
                    "{}:{}:{}: {}: the namespace in the file ({own:?}) does not match --namespace {ns:?}",
                    m.file,
                    m.location.line,
                    m.location.column,
                    object.describe()
                ));
            }
        }
        objects.push(object);
    }
    if !errors.is_empty() {
        anyhow::bail!("{}\nnothing was applied", errors.join("\n"));
    }
    objects.sort_by_key(|o| o.kind() != Kind::Namespace);
    Ok(objects)
}

/// One object as itself, several as a `List` (as kubectl prints them).
fn format_objects(objects: &[skiff_api::Object], output: Output) -> anyhow::Result<String> {
    match objects {
        [one] => format_one(one, output),
        many => format_list(many, 0, output),
    }
}

pub async fn run(args: ApplyArgs, members: &MembersArgs) -> anyhow::Result<()> {
    let objects = objects_of(&args.files, args.recursive, Some(&args.validate), args.namespace.as_deref())?;
    let mut out = std::io::stdout().lock();
    if args.dry_run == DryRun::Client {
        match args.output {
            Some(o) => out.write_all(format_objects(&objects, o)?.as_bytes())?,
            None => {
                for object in &objects {
                    writeln!(out, "{} valid (client dry run: nothing sent)", resource_name(object))?;
                }
            }
        }
        return Ok(());
    }
    let client = members.client()?;
    let dry_run = args.dry_run == DryRun::Server;
    let mut failed = 0;
    let mut unknown: Option<ClientError> = None;
    let mut results = Vec::new();
    for object in &objects {
        match api_client::apply(&client, object, dry_run).await {
            Ok(resp) => {
                let stored = api_client::decode(&resp.object)?;
                match args.output {
                    Some(_) => results.push(stored),
                    None => {
                        let outcome = match Outcome::try_from(resp.outcome) {
                            Ok(Outcome::Created) => "created",
                            Ok(Outcome::Configured) => "configured",
                            _ => "unchanged",
                        };
                        let suffix = if dry_run { " (server dry run)" } else { "" };
                        writeln!(out, "{} {outcome}{suffix}", resource_name(&stored))?;
                    }
                }
            }
            Err(e) => {
                failed += 1;
                let (what, message) = (object.describe(), e.to_string());
                if message.contains(&what) {
                    eprintln!("error: {message}");
                } else {
                    eprintln!("error: {what}: {message}");
                }
                if matches!(e, ClientError::OutcomeUnknown { .. }) {
                    unknown = Some(e);
                }
            }
        }
    }
    if let Some(o) = args.output {
        out.write_all(format_objects(&results, o)?.as_bytes())?;
    }
    out.flush()?;
    if let Some(e) = unknown {
        return Err(e.into());
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} object(s) could not be applied", objects.len());
    }
    Ok(())
}
