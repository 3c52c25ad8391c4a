//! A stand-in for `skiff node` that says it leads and refuses every write: the benchmarks must fail
//! against it (bench/harness/tests/smoke_fails.rs). It takes the same `node --config FILE` arguments
//! and reads `id`, `listen`, `data_dir` and `initial_members` from the file; nothing is stored.
//!
//! It serves over TLS as a member does, so the harness reaches it as it reaches Skiff: each stand-in
//! makes a CA of its own and its member certificate, and the one with the lowest id writes admin
//! credentials for its CA to `<data_dir>/admin.conf`, as a bootstrapping member does. The others'
//! CAs differ, so the harness's channels reach the lowest one only, which answers as the leader:
//! all a run needs to find it and see its writes refused.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use skiff_proto::api::cluster_server::{Cluster, ClusterServer};
use skiff_proto::api::kv_server::{Kv, KvServer};
use skiff_proto::api::{
    AddMemberRequest, AddMemberResponse, ClusterStatus, DeleteRequest, DeleteResponse, GetRequest, GetResponse,
    ListRequest, ListResponse, MemberInfo, MemberStatusRequest, PutRequest, PutResponse, RemoveMemberRequest,
    RemoveMemberResponse, StatusRequest, TxnRequest, TxnResponse, WatchEvent, WatchRequest,
};
use skiff_tls::{ClusterCa, Identity, IdentityStore, Role, Subject};
use tonic::{Request, Response, Status};

/// How long the stand-in's certificates are valid: longer than any run.
const VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// This member as the status calls describe it: always the leader of term 1.
#[derive(Clone)]
struct Refusing {
    id: u64,
    addr: String,
}

impl Refusing {
    fn me(&self) -> MemberInfo {
        MemberInfo {
            id: self.id,
            name: format!("node{}", self.id),
            addr: self.addr.clone(),
            role: "leader".into(),
            voter: true,
            term: 1,
            leader_id: self.id,
            ..Default::default()
        }
    }
}

fn refused() -> Status {
    Status::permission_denied("this member refuses every write (the benchmarks' failing stand-in)")
}

#[tonic::async_trait]
impl Cluster for Refusing {
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<ClusterStatus>, Status> {
        Ok(Response::new(ClusterStatus {
            cluster_id: "refusing".into(),
            leader_id: self.id,
            term: 1,
            members: vec![self.me()],
        }))
    }

    async fn member_status(&self, _: Request<MemberStatusRequest>) -> Result<Response<MemberInfo>, Status> {
        Ok(Response::new(self.me()))
    }

    async fn add_member(&self, _: Request<AddMemberRequest>) -> Result<Response<AddMemberResponse>, Status> {
        Err(refused())
    }

    async fn remove_member(&self, _: Request<RemoveMemberRequest>) -> Result<Response<RemoveMemberResponse>, Status> {
        Err(refused())
    }
}

#[tonic::async_trait]
impl Kv for Refusing {
    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Err(refused())
    }

    async fn get(&self, _: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        Err(Status::not_found("nothing is stored here"))
    }

    async fn list(&self, _: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        Ok(Response::new(ListResponse::default()))
    }

    async fn delete(&self, _: Request<DeleteRequest>) -> Result<Response<DeleteResponse>, Status> {
        Err(refused())
    }

    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Err(refused())
    }

    type WatchStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<WatchEvent, Status>> + Send>>;

    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("no watches here"))
    }
}

/// This stand-in's TLS: a CA of its own and a member certificate for `id`; with `admin`, also admin
/// credentials for that CA written to `admin` (mode 0600).
fn tls(id: u64, listen: &str, admin: Option<&Path>) -> anyhow::Result<Arc<skiff_tls::rustls::ServerConfig>> {
    let ca = ClusterCa::generate("refusing")?;
    let (key_pem, csr) = skiff_tls::ca::new_key_and_csr()?;
    let cert_pem = ca.sign(&csr, &Subject::Member(id), VALIDITY)?;
    if let Some(path) = admin {
        let subject = Subject::Client { name: "admin".into(), role: Role::Admin };
        skiff_tls::credentials::issue(&ca, &subject, VALIDITY, vec![listen.to_string()])?.save(path)?;
    }
    let identity = Identity { ca_pem: ca.cert_pem.clone(), cert_pem, key_pem };
    Ok(skiff_tls::transport::server_config(IdentityStore::new(identity)?)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let config = match args.as_slice() {
        [_, node, flag, path] if node == "node" && flag == "--config" => path.clone(),
        _ => anyhow::bail!("usage: refusing-member node --config FILE"),
    };
    let text = std::fs::read_to_string(&config).with_context(|| format!("reading {config}"))?;
    let table: toml::Table = text.parse().with_context(|| format!("parsing {config}"))?;
    let id = table.get("id").and_then(|v| v.as_integer()).context("id")?;
    let listen = table.get("listen").and_then(|v| v.as_str()).context("listen")?.to_string();
    let id = u64::try_from(id).context("id")?;
    let data_dir = table.get("data_dir").and_then(|v| v.as_str()).context("data_dir")?;
    let lowest = table
        .get("initial_members")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("id").and_then(|i| i.as_integer()))
        .filter_map(|i| u64::try_from(i).ok())
        .min();
    let admin = Path::new(data_dir).join("admin.conf");
    let config = tls(id, &listen, (lowest == Some(id)).then_some(admin.as_path()))?;
    let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("listen address {listen}"))?;
    let member = Refusing { id, addr: listen.clone() };
    tonic::transport::Server::builder()
        .add_service(ClusterServer::new(member.clone()))
        .add_service(KvServer::new(member))
        .serve_with_incoming(skiff_tls::transport::incoming(listener, config))
        .await?;
    Ok(())
}
