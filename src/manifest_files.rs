//! The `-f` arguments of `apply` and `delete`: files, directories (`-R` to descend) and `-` for
//! stdin, read and parsed in full before anything is sent.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use skiff_api::manifest::{load, Manifest, UnknownFields};

const EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Every object of every file, in order. Any error anywhere fails the whole set: all errors are
/// printed and nothing is returned. Warnings (`--validate=warn`) are printed to stderr.
pub fn read_all(paths: &[String], recursive: bool, unknown: UnknownFields) -> anyhow::Result<Vec<Manifest>> {
    read(paths, recursive, Some(unknown))
}

/// The objects the files name, without validating them (for `delete -f`).
pub fn read_names(paths: &[String], recursive: bool) -> anyhow::Result<Vec<Manifest>> {
    read(paths, recursive, None)
}

/// `unknown: None` reads names only (no validation).
fn read(paths: &[String], recursive: bool, unknown: Option<UnknownFields>) -> anyhow::Result<Vec<Manifest>> {
    let mut files = Vec::new();
    for p in paths {
        if p == "-" {
            files.push(None);
            continue;
        }
        let path = PathBuf::from(p);
        let meta = std::fs::metadata(&path).with_context(|| format!("{p}: cannot read"))?;
        if meta.is_dir() {
            let before = files.len();
            collect_dir(&path, recursive, &mut files)?;
            if files.len() == before {
                anyhow::bail!(
                    "{p}: no .yaml, .yml or .json files in this directory{}",
                    if recursive { "" } else { " (use -R to descend into subdirectories)" }
                );
            }
        } else {
            files.push(Some(path));
        }
    }
    let mut manifests = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        let (name, text) = match file {
            None => {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).context("reading manifests from stdin")?;
                ("<stdin>".to_string(), text)
            }
            Some(path) => {
                let name = path.display().to_string();
                let text = std::fs::read_to_string(&path).with_context(|| format!("{name}: cannot read"))?;
                (name, text)
            }
        };
        let loaded = match unknown {
            Some(unknown) => load(&name, &text, unknown),
            None => skiff_api::manifest::load_names(&name, &text)
                .map(|manifests| skiff_api::manifest::Loaded { manifests, warnings: Vec::new() }),
        };
        match loaded {
            Ok(loaded) => {
                for w in loaded.warnings {
                    eprintln!("Warning: {w}");
                }
                manifests.extend(loaded.manifests);
            }
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        let n = errors.len();
        let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        anyhow::bail!("{}\n{n} error(s); nothing was applied", list.join("\n"));
    }
    if manifests.is_empty() {
        anyhow::bail!("no objects passed to the command: the files hold no documents");
    }
    Ok(manifests)
}

fn collect_dir(dir: &Path, recursive: bool, out: &mut Vec<Option<PathBuf>>) -> anyhow::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if recursive {
                collect_dir(&path, recursive, out)?;
            }
        } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.contains(&e)) {
            out.push(Some(path));
        }
    }
    Ok(())
}
