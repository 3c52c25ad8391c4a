//! Every call a member may have to forward to the leader, as a value: one type per call, each
//! naming whether it needs the leader and how it is served here. [`crate::server::ApiServer`] is the
//! one path that serves them all: here when this member can, forwarded otherwise.

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use skiff_api::api::{ApplyOutcome, Consistency, DeleteOptions, Deleted, Filter, ObjectList, Renewals};
use skiff_api::{ApiError, Kind, Object};
use skiff_store::membership::{Membership, MembershipError, MembershipView};
use skiff_store::{KeyValue, KvStore, Member};

use crate::error::ServeError;
use crate::kv::{self, KvOp};
use crate::resources::Resources;

/// What serves calls on this member.
pub struct Here {
    pub store: KvStore,
    pub resources: Resources,
    pub membership: Membership,
    /// The nodes' renewals heard while this member leads.
    pub renewals: Renewals,
}

/// A call that may have to be forwarded to the leader.
#[async_trait]
pub trait Call: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    type Reply: Serialize + DeserializeOwned + Send + 'static;
    /// Names the call between members.
    const NAME: &'static str;
    /// A write: if the connection to the leader breaks mid-call, its outcome is unknown.
    const WRITE: bool;

    /// Whether only the leader can serve it (every write, every linearizable read).
    fn needs_leader(&self) -> bool {
        true
    }

    /// Serves the call on this member.
    async fn serve(self, here: &Here) -> Result<Self::Reply, ServeError>;
}

/// An object as its JSON, as it travels: a follower forwards what a client sent without decoding
/// it, and the leader's answer goes back to the client the same way. In-process callers decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawObject(#[serde(with = "serde_bytes")] pub Vec<u8>);

impl RawObject {
    pub fn of(object: &Object) -> Self {
        RawObject(object.to_json())
    }

    /// Decodes what a client sent, strictly (every field known).
    pub fn decode_sent(&self) -> Result<Object, ApiError> {
        Object::from_json(&self.0).map_err(|e| ApiError::bad_request(format!("object: {e}")))
    }

    /// Decodes what a member wrote.
    pub fn decode(&self) -> Result<Object, ApiError> {
        Object::from_trusted_json(&self.0).map_err(|e| ApiError::internal(format!("a member's answer: {e}")))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Get {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub consistency: Consistency,
}

#[async_trait]
impl Call for Get {
    type Reply = RawObject;
    const NAME: &'static str = "get";
    const WRITE: bool = false;

    fn needs_leader(&self) -> bool {
        self.consistency == Consistency::Linearizable
    }

    async fn serve(self, here: &Here) -> Result<RawObject, ServeError> {
        let object = here.resources.get(self.kind, &self.namespace, &self.name, self.consistency).await?;
        Ok(RawObject::of(&object))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct List {
    pub kind: Kind,
    pub filter: Filter,
    pub consistency: Consistency,
}

/// A list as a reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListReply {
    pub items: Vec<RawObject>,
    pub resource_version: u64,
}

#[async_trait]
impl Call for List {
    type Reply = ListReply;
    const NAME: &'static str = "list";
    const WRITE: bool = false;

    fn needs_leader(&self) -> bool {
        self.consistency == Consistency::Linearizable
    }

    async fn serve(self, here: &Here) -> Result<ListReply, ServeError> {
        let ObjectList { items, resource_version } =
            here.resources.list(self.kind, &self.filter, self.consistency).await?;
        Ok(ListReply { items: items.iter().map(RawObject::of).collect(), resource_version })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Apply {
    pub object: RawObject,
    pub dry_run: bool,
}

#[async_trait]
impl Call for Apply {
    type Reply = (RawObject, ApplyOutcome);
    const NAME: &'static str = "apply";
    const WRITE: bool = true;

    async fn serve(self, here: &Here) -> Result<Self::Reply, ServeError> {
        let (object, outcome) = here.resources.apply(self.object.decode_sent()?, self.dry_run).await?;
        Ok((RawObject::of(&object), outcome))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Create {
    pub object: RawObject,
}

#[async_trait]
impl Call for Create {
    type Reply = RawObject;
    const NAME: &'static str = "create";
    const WRITE: bool = true;

    async fn serve(self, here: &Here) -> Result<RawObject, ServeError> {
        Ok(RawObject::of(&here.resources.create(self.object.decode_sent()?).await?))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateStatus {
    pub object: RawObject,
}

#[async_trait]
impl Call for UpdateStatus {
    type Reply = RawObject;
    const NAME: &'static str = "update-status";
    const WRITE: bool = true;

    async fn serve(self, here: &Here) -> Result<RawObject, ServeError> {
        Ok(RawObject::of(&here.resources.update_status(self.object.decode_sent()?).await?))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bind {
    pub namespace: String,
    pub name: String,
    pub node: String,
}

#[async_trait]
impl Call for Bind {
    type Reply = RawObject;
    const NAME: &'static str = "bind";
    const WRITE: bool = true;

    async fn serve(self, here: &Here) -> Result<RawObject, ServeError> {
        Ok(RawObject::of(&here.resources.bind(&self.namespace, &self.name, &self.node).await?))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delete {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub options: DeleteOptions,
}

/// A delete as a reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteReply {
    pub object: RawObject,
    pub removed: bool,
    pub dependants: Vec<String>,
}

impl DeleteReply {
    pub fn decode(self) -> Result<Deleted, ApiError> {
        Ok(Deleted { object: self.object.decode()?, removed: self.removed, dependants: self.dependants })
    }
}

#[async_trait]
impl Call for Delete {
    type Reply = DeleteReply;
    const NAME: &'static str = "delete";
    const WRITE: bool = true;

    async fn serve(self, here: &Here) -> Result<DeleteReply, ServeError> {
        let d = here.resources.delete(self.kind, &self.namespace, &self.name, &self.options).await?;
        Ok(DeleteReply { object: RawObject::of(&d.object), removed: d.removed, dependants: d.dependants })
    }
}

/// `kv put` and `kv del` (one op), or `kv txn` (ops committed together in one revision).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum KvWrite {
    One(KvOp),
    Txn(Vec<KvOp>),
}

/// The revision of a kv write and, for a single delete, the key's last state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KvWritten {
    pub revision: u64,
    pub prev: Option<KeyValue>,
}

#[async_trait]
impl Call for KvWrite {
    type Reply = KvWritten;
    const NAME: &'static str = "kv-write";
    const WRITE: bool = true;

    async fn serve(self, here: &Here) -> Result<KvWritten, ServeError> {
        match self {
            KvWrite::One(KvOp::Put { key, value, expected_revision }) => {
                let revision = kv::put(&here.store, key, value, expected_revision).await?;
                Ok(KvWritten { revision, prev: None })
            }
            KvWrite::One(KvOp::Delete { key, expected_revision }) => {
                let (revision, prev) = kv::delete(&here.store, key, expected_revision).await?;
                Ok(KvWritten { revision, prev: Some(prev) })
            }
            KvWrite::Txn(ops) => Ok(KvWritten { revision: kv::txn(&here.store, &ops).await?, prev: None }),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KvGet {
    pub key: String,
    pub consistency: Consistency,
}

#[async_trait]
impl Call for KvGet {
    type Reply = (KeyValue, u64);
    const NAME: &'static str = "kv-get";
    const WRITE: bool = false;

    fn needs_leader(&self) -> bool {
        self.consistency == Consistency::Linearizable
    }

    async fn serve(self, here: &Here) -> Result<Self::Reply, ServeError> {
        kv::get(&here.store, &self.key, self.consistency).await
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KvList {
    pub prefix: String,
    pub consistency: Consistency,
}

#[async_trait]
impl Call for KvList {
    type Reply = (Vec<KeyValue>, u64);
    const NAME: &'static str = "kv-list";
    const WRITE: bool = false;

    fn needs_leader(&self) -> bool {
        self.consistency == Consistency::Linearizable
    }

    async fn serve(self, here: &Here) -> Result<Self::Reply, ServeError> {
        kv::list(&here.store, &self.prefix, self.consistency).await
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddMember {
    pub id: u64,
    pub name: String,
    pub addr: String,
}

/// Voters and learners after a membership change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MembersReply {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

impl From<MembershipView> for MembersReply {
    fn from(v: MembershipView) -> Self {
        MembersReply { voters: v.voters.into_iter().collect(), learners: v.learners.into_iter().collect() }
    }
}

fn membership_error(e: MembershipError) -> ServeError {
    match e {
        MembershipError::IdInUse { .. } | MembershipError::NameInUse { .. } => {
            ApiError::new(skiff_api::Reason::AlreadyExists, e.to_string()).into()
        }
        MembershipError::NotFound(_) => ApiError::new(skiff_api::Reason::NotFound, e.to_string()).into(),
        MembershipError::Invalid(m) => ApiError::bad_request(m).into(),
        MembershipError::NotLeader => ServeError::NotLeader(None),
        MembershipError::Raft(m) => ApiError::unavailable(format!("membership change failed: {m}")).into(),
        // The learner was added: the call must not be repeated as if nothing happened.
        MembershipError::NotCaughtUp { .. } => ApiError::conflict(e.to_string()).into(),
    }
}

#[async_trait]
impl Call for AddMember {
    type Reply = MembersReply;
    const NAME: &'static str = "add-member";
    const WRITE: bool = true;

    async fn serve(self, here: &Here) -> Result<MembersReply, ServeError> {
        skiff_api::name::check_dns1123_label(&self.name)
            .map_err(|why| ApiError::bad_request(format!("name: not a valid member name: {why}")))?;
        skiff_api::name::check_address(&self.addr).map_err(|m| ApiError::bad_request(format!("addr: {m}")))?;
        let member = Member { name: self.name, addr: self.addr };
        here.membership.add(self.id, member).await.map(MembersReply::from).map_err(membership_error)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveMember {
    pub id: u64,
}

#[async_trait]
impl Call for RemoveMember {
    type Reply = MembersReply;
    const NAME: &'static str = "remove-member";
    const WRITE: bool = true;

    async fn serve(self, here: &Here) -> Result<MembersReply, ServeError> {
        here.membership.remove(self.id).await.map(MembersReply::from).map_err(membership_error)
    }
}

/// Where the cluster's security records live: the CA, the join secret, one key per member holding a
/// certificate. Outside every prefix a client reaches (`kv` keys and objects have their own).
pub const SECURITY_PREFIX: &str = "/skiff/security/";

/// A write of security records (see [`SECURITY_PREFIX`]), made by a member on behalf of a join or
/// a rotation; anything outside the prefix is refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecurityWrite {
    pub ops: Vec<skiff_store::Op>,
}

#[async_trait]
impl Call for SecurityWrite {
    type Reply = u64;
    const NAME: &'static str = "security-write";
    const WRITE: bool = true;

    async fn serve(self, here: &Here) -> Result<u64, ServeError> {
        for op in &self.ops {
            let key = match op {
                skiff_store::Op::Put { key, .. } | skiff_store::Op::Delete { key, .. } => key,
            };
            if !key.starts_with(SECURITY_PREFIX) {
                return Err(ApiError::bad_request(format!("{key}: not a security record")).into());
            }
        }
        let written = here.store.write(self.ops).await?;
        match written.conflict {
            Some(c) => Err(ApiError::conflict(format!("security record {} changed meanwhile", c.key)).into()),
            None => Ok(written.revision),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RenewNode {
    pub node: String,
}

#[async_trait]
impl Call for RenewNode {
    type Reply = ();
    const NAME: &'static str = "renew-node";
    /// Nothing is written: a renewal that may or may not have arrived is simply sent again.
    const WRITE: bool = false;

    /// Only the leader's controllers read renewals, so only the leader keeps them; it keeps
    /// them for nodes that exist only, so that renewals cannot grow its memory without bound.
    async fn serve(self, here: &Here) -> Result<(), ServeError> {
        here.store.check_leader()?;
        here.resources.must_exist_here(Kind::Node, "", &self.node)?;
        here.renewals.renew(&self.node);
        Ok(())
    }
}
