//! [`ApiServer`]: the one path every call takes. A call that needs the leader is served here when
//! this member leads, and forwarded to the leader otherwise (also when leadership moved while it
//! was being served: nothing was applied then). Reads that need no leader and watches are always
//! served here. The leader serves a forwarded call itself and never forwards it again, so a stale
//! view of who leads cannot make calls loop.
//!
//! The transport between members is a [`Forward`] the server is given (gRPC in skiff-server, a
//! direct call in tests).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use skiff_api::api::{
    ApplyOutcome, Consistency, DeleteOptions, Deleted, Filter, ObjectList, Renewals, ResourceApi, WatchOptions,
    WatchStream,
};
use skiff_api::network::ServiceNetwork;
use skiff_api::{ApiError, Kind, Object};
use skiff_store::membership::Membership;
use skiff_store::{KeyValue, KvStore, Member, StoreError};

use crate::call::{self, Call, Here, RawObject};
use crate::error::ServeError;
use crate::kv;
use crate::metrics::ApiMetrics;
use crate::resources::{namespace_of, Resources};

/// Sends an encoded call to the leader and brings back its encoded answer (or the leader's error).
#[async_trait]
pub trait Forward: Send + Sync {
    /// `write` says whether the call changes state: a connection that breaks mid-call then leaves
    /// its outcome unknown, which the error must say.
    async fn forward(&self, leader: &Member, call: &str, payload: Vec<u8>, write: bool) -> Result<Vec<u8>, ApiError>;
}

/// A member's API: the resource calls, the kv calls and membership changes.
pub struct ApiServer {
    here: Arc<Here>,
    forward: Arc<dyn Forward>,
    /// Serve here only, never forward (see [`ApiServer::here_only`]).
    here_only: bool,
    metrics: ApiMetrics,
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    bincode::serialize(value).map_err(|e| ApiError::internal(format!("cannot encode a forwarded call: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    bincode::deserialize(bytes).map_err(|e| ApiError::internal(format!("cannot decode a forwarded call: {e}")))
}

impl ApiServer {
    /// The API with Kubernetes' default service network (10.96.0.0/16, node ports 30000-32767).
    pub fn new(store: KvStore, forward: Arc<dyn Forward>) -> Self {
        Self::with_network(store, forward, ServiceNetwork::default())
    }

    /// The API allocating Services' cluster IPs and node ports from `network`.
    pub fn with_network(store: KvStore, forward: Arc<dyn Forward>, network: ServiceNetwork) -> Self {
        let here = Here {
            resources: Resources::new(store.clone(), network),
            membership: Membership::new(store.clone()),
            store,
            renewals: Renewals::default(),
        };
        ApiServer { here: Arc::new(here), forward, here_only: false, metrics: ApiMetrics::default() }
    }

    /// The same API, but a call is served here or refused, never forwarded: what the leader's
    /// controllers use, so that a deposed leader's decisions are not carried out by the new leader.
    /// Reads and watches are this member's replica, which on the leader is current.
    pub fn here_only(&self) -> ApiServer {
        ApiServer {
            here: self.here.clone(),
            forward: self.forward.clone(),
            here_only: true,
            metrics: self.metrics.clone(),
        }
    }

    pub fn store(&self) -> &KvStore {
        &self.here.store
    }

    /// What the API server counts, for `/metrics`.
    pub fn metrics(&self) -> &ApiMetrics {
        &self.metrics
    }

    /// Serves `call` here or at the leader, and counts it.
    pub async fn call<C: Call>(&self, call: C) -> Result<C::Reply, ApiError> {
        let started = std::time::Instant::now();
        let outcome = self.route(call).await;
        self.metrics.record(C::NAME, started.elapsed(), &outcome);
        outcome
    }

    async fn route<C: Call>(&self, call: C) -> Result<C::Reply, ApiError> {
        if self.here_only {
            return self.call_here(call).await;
        }
        if !call.needs_leader() {
            return call.serve(&self.here).await.map_err(ServeError::into_api);
        }
        // A member that knows it does not lead forwards at once: the leader does the work.
        if let Err(StoreError::NotLeader { leader }) = self.here.store.check_leader() {
            return self.forward_to(leader, call).await;
        }
        match call.clone().serve(&self.here).await {
            Err(ServeError::NotLeader(leader)) => self.forward_to(leader, call).await,
            other => other.map_err(ServeError::into_api),
        }
    }

    /// Serves `call` here only: a member that does not lead refuses it instead of forwarding.
    pub async fn call_here<C: Call>(&self, call: C) -> Result<C::Reply, ApiError> {
        call.serve(&self.here).await.map_err(|e| match e {
            ServeError::NotLeader(_) => {
                ApiError::unavailable("this member no longer leads: its controllers' writes are refused, not forwarded")
            }
            ServeError::Api(e) => e,
        })
    }

    async fn forward_to<C: Call>(&self, leader: Option<(u64, Member)>, call: C) -> Result<C::Reply, ApiError> {
        let Some((_, member)) = leader else {
            return Err(ServeError::NotLeader(None).into_api());
        };
        let reply = self.forward.forward(&member, C::NAME, encode(&call)?, C::WRITE).await?;
        decode(&reply)
    }

    /// Serves a call another member forwarded: here, and never forwarded again.
    pub async fn serve_forwarded(&self, name: &str, payload: &[u8]) -> Result<Vec<u8>, ApiError> {
        async fn here<C: Call>(api: &ApiServer, payload: &[u8]) -> Result<Vec<u8>, ApiError> {
            let call: C = decode(payload)?;
            let reply = call.serve(&api.here).await.map_err(ServeError::into_api)?;
            encode(&reply)
        }
        match name {
            call::Get::NAME => here::<call::Get>(self, payload).await,
            call::List::NAME => here::<call::List>(self, payload).await,
            call::Apply::NAME => here::<call::Apply>(self, payload).await,
            call::Create::NAME => here::<call::Create>(self, payload).await,
            call::UpdateStatus::NAME => here::<call::UpdateStatus>(self, payload).await,
            call::Bind::NAME => here::<call::Bind>(self, payload).await,
            call::Delete::NAME => here::<call::Delete>(self, payload).await,
            call::KvWrite::NAME => here::<call::KvWrite>(self, payload).await,
            call::KvGet::NAME => here::<call::KvGet>(self, payload).await,
            call::KvList::NAME => here::<call::KvList>(self, payload).await,
            call::AddMember::NAME => here::<call::AddMember>(self, payload).await,
            call::RemoveMember::NAME => here::<call::RemoveMember>(self, payload).await,
            call::RenewNode::NAME => here::<call::RenewNode>(self, payload).await,
            call::SecurityWrite::NAME => here::<call::SecurityWrite>(self, payload).await,
            other => {
                Err(ApiError::bad_request(format!("unknown forwarded call {other:?} (a member of another version?)")))
            }
        }
    }

    pub async fn kv_get(&self, key: &str, consistency: Consistency) -> Result<(KeyValue, u64), ApiError> {
        self.call(call::KvGet { key: key.to_string(), consistency }).await
    }

    pub async fn kv_list(&self, prefix: &str, consistency: Consistency) -> Result<(Vec<KeyValue>, u64), ApiError> {
        self.call(call::KvList { prefix: prefix.to_string(), consistency }).await
    }

    /// Watches `kv` keys under `prefix` on this member's replica.
    pub fn kv_watch(
        &self,
        prefix: &str,
        start: u64,
        progress_every: Duration,
    ) -> Result<(skiff_store::watch::WatchReceiver, crate::metrics::WatchGuard), ApiError> {
        let rx = kv::watch(&self.here.store, prefix, start, progress_every)?;
        Ok((rx, self.metrics.watch_opened()))
    }

    pub async fn add_member(&self, id: u64, name: &str, addr: &str) -> Result<call::MembersReply, ApiError> {
        self.call(call::AddMember { id, name: name.to_string(), addr: addr.to_string() }).await
    }

    pub async fn remove_member(&self, id: u64) -> Result<call::MembersReply, ApiError> {
        self.call(call::RemoveMember { id }).await
    }
}

#[async_trait]
impl ResourceApi for ApiServer {
    async fn get(&self, kind: Kind, namespace: &str, name: &str, consistency: Consistency) -> Result<Object, ApiError> {
        let namespace = namespace_of(kind, namespace);
        self.call(call::Get { kind, namespace, name: name.to_string(), consistency }).await?.decode()
    }

    async fn list(&self, kind: Kind, filter: &Filter, consistency: Consistency) -> Result<ObjectList, ApiError> {
        let r = self.call(call::List { kind, filter: filter.clone(), consistency }).await?;
        let items = r.items.iter().map(RawObject::decode).collect::<Result<_, _>>()?;
        Ok(ObjectList { items, resource_version: r.resource_version })
    }

    async fn watch(&self, kind: Kind, options: WatchOptions) -> Result<WatchStream, ApiError> {
        use futures::StreamExt;
        let events = self.here.resources.watch(kind, options).map_err(ServeError::into_api)?;
        let open = self.metrics.watch_opened();
        Ok(events
            .map(move |event| {
                let _counted = &open;
                event
            })
            .boxed())
    }

    async fn apply(&self, object: Object, dry_run: bool) -> Result<(Object, ApplyOutcome), ApiError> {
        let (object, outcome) = self.call(call::Apply { object: RawObject::of(&object), dry_run }).await?;
        Ok((object.decode()?, outcome))
    }

    async fn create(&self, object: Object) -> Result<Object, ApiError> {
        self.call(call::Create { object: RawObject::of(&object) }).await?.decode()
    }

    async fn update_status(&self, object: Object) -> Result<Object, ApiError> {
        self.call(call::UpdateStatus { object: RawObject::of(&object) }).await?.decode()
    }

    async fn bind(&self, namespace: &str, name: &str, node: &str) -> Result<Object, ApiError> {
        let namespace = namespace_of(Kind::Pod, namespace);
        self.call(call::Bind { namespace, name: name.to_string(), node: node.to_string() }).await?.decode()
    }

    async fn delete(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        let namespace = namespace_of(kind, namespace);
        let call = call::Delete { kind, namespace, name: name.to_string(), options: options.clone() };
        self.call(call).await?.decode()
    }

    async fn renew_node(&self, node: &str) -> Result<(), ApiError> {
        self.call(call::RenewNode { node: node.to_string() }).await
    }

    fn renewals(&self) -> std::collections::BTreeMap<String, Duration> {
        self.here.renewals.ages()
    }
}
