//! `skiff kv`: the low-level key-value commands on the store's `kv` prefix. Used by the chaos tests
//! and the benchmarks; the resource API never goes through here.

use std::future::Future;
use std::io::{Read, Write};

use anyhow::Context;
use skiff_api::limits::MAX_VALUE_BYTES;
use skiff_client::{CallKind, Client, ClientError};
use skiff_proto::api::kv_client::KvClient;
use skiff_proto::api::{watch_event, DeleteRequest, GetRequest, KeyValue, ListRequest, PutRequest, WatchRequest};
use skiff_proto::limits::MAX_RESPONSE_BYTES;
use tonic::transport::Channel;

use crate::members::MembersArgs;

#[derive(clap::Subcommand, Debug)]
pub enum KvCommand {
    /// Write a value. `-` reads it from stdin.
    Put {
        key: String,
        value: String,
        /// Compare-and-swap: only if the key's revision is this (0: only if it does not exist).
        #[arg(long)]
        expect_revision: Option<u64>,
    },
    /// Print a key's value.
    Get {
        key: String,
        /// Read the asked member's replica without a leader round trip (may be behind).
        #[arg(long)]
        stale: bool,
        #[arg(short, long, value_enum, default_value_t = Format::Value)]
        output: Format,
    },
    /// List the keys under a prefix, one `key<TAB>value` per line.
    List {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long)]
        stale: bool,
        #[arg(short, long, value_enum, default_value_t = Format::Value)]
        output: Format,
    },
    /// Delete a key.
    Del {
        key: String,
        #[arg(long)]
        expect_revision: Option<u64>,
    },
    /// Print changes under a prefix as they happen.
    Watch {
        #[arg(default_value = "")]
        prefix: String,
        /// Start after this revision (e.g. the revision a `list -o json` printed); default: now.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Stop after this many changes.
        #[arg(long)]
        count: Option<u64>,
        /// Also print progress events.
        #[arg(long)]
        progress: bool,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Value,
    Json,
}

fn kv_json(kv: &KeyValue) -> serde_json::Value {
    serde_json::json!({
        "key": kv.key,
        "value": String::from_utf8_lossy(&kv.value),
        "createRevision": kv.create_revision,
        "modRevision": kv.mod_revision,
    })
}

/// Calls one `Kv` RPC through the member list (see `Client::call`), accepting responses as large as
/// a member may send.
async fn kv_call<Req, Resp, F, Fut>(client: &Client, kind: CallKind, req: Req, rpc: F) -> Result<Resp, ClientError>
where
    Req: Clone,
    F: Fn(KvClient<Channel>, Req) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    client
        .call(kind, |ch| rpc(KvClient::new(ch).max_decoding_message_size(MAX_RESPONSE_BYTES), req.clone()))
        .await
        .map(|r| r.into_inner())
}

pub async fn run(cmd: KvCommand, members: &MembersArgs) -> anyhow::Result<()> {
    let client = members.client()?;
    let mut out = std::io::stdout().lock();
    match cmd {
        KvCommand::Put { key, value, expect_revision } => {
            let value = if value == "-" {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf).context("reading the value from stdin")?;
                buf
            } else {
                value.into_bytes()
            };
            if value.len() > MAX_VALUE_BYTES {
                anyhow::bail!("value of key {key:?} is {} bytes, over the limit of {MAX_VALUE_BYTES} bytes (1 MiB); nothing was written", value.len());
            }
            let req = PutRequest { key, value, expected_revision: expect_revision };
            let resp = kv_call(&client, CallKind::Write, req, |mut kv, req| async move { kv.put(req).await }).await?;
            writeln!(out, "revision {}", resp.revision)?;
        }
        KvCommand::Get { key, stale, output } => {
            let req = GetRequest { key, stale };
            let resp = kv_call(&client, CallKind::Read, req, |mut kv, req| async move { kv.get(req).await }).await?;
            let kv = resp.kv.unwrap_or_default();
            match output {
                Format::Value => {
                    out.write_all(&kv.value)?;
                    writeln!(out)?;
                }
                Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&kv_json(&kv))?)?,
            }
        }
        KvCommand::List { prefix, stale, output } => {
            let req = ListRequest { prefix, stale };
            let resp = kv_call(&client, CallKind::Read, req, |mut kv, req| async move { kv.list(req).await }).await?;
            match output {
                Format::Value => {
                    for kv in &resp.kvs {
                        writeln!(out, "{}\t{}", kv.key, String::from_utf8_lossy(&kv.value))?;
                    }
                }
                Format::Json => {
                    let items: Vec<_> = resp.kvs.iter().map(kv_json).collect();
                    let doc = serde_json::json!({ "revision": resp.revision, "items": items });
                    writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
                }
            }
        }
        KvCommand::Del { key, expect_revision } => {
            let req = DeleteRequest { key: key.clone(), expected_revision: expect_revision };
            let resp =
                kv_call(&client, CallKind::Write, req, |mut kv, req| async move { kv.delete(req).await }).await?;
            writeln!(out, "deleted {key} (revision {})", resp.revision)?;
        }
        KvCommand::Watch { prefix, from, count, progress } => {
            let req = WatchRequest { prefix, start_revision: from, progress_interval_ms: 0 };
            let mut stream =
                kv_call(&client, CallKind::Read, req, |mut kv, req| async move { kv.watch(req).await }).await?;
            let mut seen = 0u64;
            while let Some(event) = stream.message().await? {
                let kv = event.kv.unwrap_or_default();
                match watch_event::Kind::try_from(event.kind) {
                    Ok(watch_event::Kind::Put) => {
                        writeln!(out, "PUT {} {} {}", event.revision, kv.key, String::from_utf8_lossy(&kv.value))?
                    }
                    Ok(watch_event::Kind::Delete) => writeln!(out, "DELETE {} {}", event.revision, kv.key)?,
                    Ok(watch_event::Kind::Progress) => {
                        if progress {
                            writeln!(out, "PROGRESS {}", event.revision)?;
                        }
                        out.flush()?;
                        continue;
                    }
                    Err(_) => continue,
                }
                out.flush()?;
                seen += 1;
                if count.is_some_and(|c| seen >= c) {
                    break;
                }
            }
        }
    }
    Ok(())
}
