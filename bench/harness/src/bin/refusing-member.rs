//! A stand-in for `skiff node` that says it leads and refuses every write: the benchmarks must fail
//! against it (bench/harness/tests/smoke_fails.rs). It takes the same `node --config FILE` arguments
//! and reads `id` and `listen` from the file; nothing is stored.

use std::pin::Pin;

use anyhow::Context;
use skiff_proto::api::cluster_server::{Cluster, ClusterServer};
use skiff_proto::api::kv_server::{Kv, KvServer};
use skiff_proto::api::{
    AddMemberRequest, AddMemberResponse, ClusterStatus, DeleteRequest, DeleteResponse, GetRequest, GetResponse,
    ListRequest, ListResponse, MemberInfo, MemberStatusRequest, PutRequest, PutResponse, RemoveMemberRequest,
    RemoveMemberResponse, StatusRequest, TxnRequest, TxnResponse, WatchEvent, WatchRequest,
};
use tonic::{Request, Response, Status};

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
    let member = Refusing { id: u64::try_from(id).context("id")?, addr: listen.clone() };
    tonic::transport::Server::builder()
        .add_service(ClusterServer::new(member.clone()))
        .add_service(KvServer::new(member))
        .serve(listen.parse().with_context(|| format!("listen address {listen}"))?)
        .await?;
    Ok(())
}
