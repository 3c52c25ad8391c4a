//! A member's certificate and the cluster's security records: the CA made at bootstrap, joins that
//! prove a token's secret, the admin credentials, renewal before expiry.
//!
//! Where things live:
//! - `<data_dir>/tls/{ca,cert,key}.pem`: this member's certificate (naming its node id) and key.
//! - `/skiff/security/cluster` in the replicated store: the CA certificate and key and the join
//!   secret, so that any member can sign a join or its own renewal (as Swarm's managers hold the
//!   CA). Every member's disk is therefore as sensitive as the CA; no client API reaches the key.
//! - `/skiff/security/members/<id>`: one per member holding a certificate. A second certificate for
//!   the same id is refused (a member whose data was wiped cannot come back as a voter that forgot
//!   its vote); removing the member deletes it, and its certificate is refused from then on.
//! - Before the first leader has written the records, the bootstrapping member keeps the CA in
//!   `<data_dir>/tls/pending-ca.bin` and signs only the other initial members, once each.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skiff_apiserver::call::{SecurityWrite, SECURITY_PREFIX};
use skiff_apiserver::ApiServer;
use skiff_proto::api::security_client::SecurityClient;
use skiff_proto::api::{
    IssueCredentialRequest, IssueCredentialResponse, JoinRequest, JoinResponse, JoinTokenRequest, JoinTokenResponse,
};
use skiff_proto::transport::Redirect;
use skiff_store::{KvStore, Op};
use skiff_tls::{token, ClusterCa, Identity, IdentityStore, JoinToken, Role, Subject};
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

use crate::config::NodeConfig;
use crate::node::NodeError;

/// The record of the CA and the join secret.
pub const CLUSTER_RECORD: &str = "/skiff/security/cluster";

/// The record of member `id`'s certificate.
pub fn member_record(id: u64) -> String {
    format!("{SECURITY_PREFIX}members/{id}")
}

const JOIN_REQUEST: &str = "skiff-join-request";
const JOIN_RESPONSE: &str = "skiff-join-response";
/// A CSR is a few hundred bytes.
const MAX_CSR_BYTES: usize = 16 << 10;

#[derive(Clone, Serialize, Deserialize)]
pub struct ClusterRecord {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub join_secret: String,
}

impl ClusterRecord {
    fn ca(&self) -> ClusterCa {
        ClusterCa { cert_pem: self.ca_cert_pem.clone(), key_pem: self.ca_key_pem.clone() }
    }

    fn token(&self) -> Result<JoinToken, Status> {
        let der = self.ca().cert_der().map_err(|e| Status::internal(e.to_string()))?;
        Ok(JoinToken::new(&der, &self.join_secret))
    }
}

/// What the bootstrapping member holds until the first leader has stored it.
#[derive(Clone, Serialize, Deserialize)]
struct Pending {
    record: ClusterRecord,
    /// Initial members that may still get a certificate from it, and those that got one.
    allowed: BTreeSet<u64>,
    issued: BTreeSet<u64>,
}

/// The cluster's record as stored, if this member's replica has it.
pub fn stored_record(store: &KvStore) -> Option<ClusterRecord> {
    let kv = store.get_local(CLUSTER_RECORD).ok()??;
    bincode::deserialize(&kv.value).ok()
}

fn tls_dir(config: &NodeConfig) -> PathBuf {
    config.data_dir.join("tls")
}

fn pending_path(config: &NodeConfig) -> PathBuf {
    tls_dir(config).join("pending-ca.bin")
}

/// Where bootstrap writes the admin credentials.
pub fn admin_credentials_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.conf")
}

/// The join token this member was given: the config's, or `SKIFF_JOIN_TOKEN`.
fn configured_token(config: &NodeConfig) -> Result<Option<JoinToken>, NodeError> {
    let text = std::env::var("SKIFF_JOIN_TOKEN").ok().filter(|t| !t.is_empty()).or(config.security.join_token.clone());
    text.map(|t| {
        JoinToken::parse(&t).map_err(|m| NodeError::Config(format!("security.join_token / SKIFF_JOIN_TOKEN: {m}")))
    })
    .transpose()
}

/// This member's certificate: from its data directory, or made now (the member that bootstraps a
/// cluster makes the CA), or asked for with the join token from the members it knows.
pub async fn member_identity(
    config: &NodeConfig,
    redirect: Option<Arc<dyn Redirect>>,
) -> Result<(Arc<IdentityStore>, Option<PendingCa>), NodeError> {
    let tls = tls_dir(config);
    let bad = |e: skiff_tls::TlsError| NodeError::Config(format!("member certificate: {e}"));
    if let Some(identity) = Identity::load_dir(&tls).map_err(bad)? {
        let pending = load_pending(config)?;
        // A member's Raft data holds its vote: without it, it could vote twice in one term.
        if pending.is_none() && !config.data_dir.join("raft-log").exists() {
            return Err(NodeError::Config(format!(
                "{} holds member {}'s certificate but not its Raft data (its vote is lost): remove the member (`skiff cluster remove-member {}`), delete {}, and join it again",
                config.data_dir.display(),
                config.id,
                config.id,
                config.data_dir.display()
            )));
        }
        return Ok((IdentityStore::new(identity).map_err(bad)?, pending));
    }
    if config.data_dir.join("raft-log").exists() {
        return Err(NodeError::Config(format!(
            "{} holds a member's data but no certificate ({}): restore tls/ from a backup, or remove the member (`skiff cluster remove-member {}`) and add it back with a new data directory",
            config.data_dir.display(),
            tls.display(),
            config.id
        )));
    }
    let lowest = config.initial_members.iter().map(|m| m.id).min();
    if config.join.is_none() && lowest == Some(config.id) {
        return bootstrap(config).map(|(store, pending)| (store, Some(pending)));
    }
    let Some(token) = configured_token(config)? else {
        return Err(NodeError::Config(format!(
            "member {} has no certificate yet: give it the join token (`skiff cluster join-token` on a member prints it) in SKIFF_JOIN_TOKEN or `[security] join_token`",
            config.id
        )));
    };
    let addrs: Vec<String> = match &config.join {
        Some(j) => vec![j.clone()],
        None => config.initial_members.iter().filter(|m| m.id != config.id).map(|m| m.addr.clone()).collect(),
    };
    let identity = ask_to_join(config.id, &addrs, &token, redirect).await?;
    identity.save_dir(&tls).map_err(bad)?;
    tracing::info!(id = config.id, "received this member's certificate");
    Ok((IdentityStore::new(identity).map_err(bad)?, None))
}

/// The bootstrapping member: a new CA, its own certificate, the admin credentials.
fn bootstrap(config: &NodeConfig) -> Result<(Arc<IdentityStore>, PendingCa), NodeError> {
    let bad = |e: skiff_tls::TlsError| NodeError::Bootstrap(format!("cluster CA: {e}"));
    let ca = ClusterCa::generate(&config.name).map_err(bad)?;
    let secret = match configured_token(config)? {
        Some(t) => t.secret,
        None => token::new_secret().map_err(NodeError::Bootstrap)?,
    };
    let (key_pem, csr) = skiff_tls::ca::new_key_and_csr().map_err(bad)?;
    let validity = Duration::from_secs(config.security.member_cert_secs);
    let cert_pem = ca.sign(&csr, &Subject::Member(config.id), validity).map_err(bad)?;
    let identity = Identity { ca_pem: ca.cert_pem.clone(), cert_pem, key_pem };
    let admin = Subject::Client { name: "admin".into(), role: Role::Admin };
    let creds = skiff_tls::credentials::issue(
        &ca,
        &admin,
        Duration::from_secs(config.security.client_cert_secs),
        vec![config.advertise_addr().to_string()],
    )
    .map_err(bad)?;
    let pending = Pending {
        record: ClusterRecord { ca_cert_pem: ca.cert_pem.clone(), ca_key_pem: ca.key_pem.clone(), join_secret: secret },
        allowed: config.initial_members.iter().map(|m| m.id).filter(|id| *id != config.id).collect(),
        issued: BTreeSet::new(),
    };
    // The pending CA first: a crash after it leaves a member that restarts with a CA it can use.
    save_pending(config, &pending)?;
    identity.save_dir(&tls_dir(config)).map_err(bad)?;
    let admin_path = admin_credentials_path(&config.data_dir);
    creds.save(&admin_path).map_err(bad)?;
    tracing::info!(credentials = %admin_path.display(), "created the cluster CA and the admin credentials");
    let store = IdentityStore::new(identity).map_err(bad)?;
    Ok((store, PendingCa { path: pending_path(config), pending: Arc::new(Mutex::new(Some(pending))) }))
}

fn save_pending(config: &NodeConfig, pending: &Pending) -> Result<(), NodeError> {
    let bytes = bincode::serialize(pending).map_err(|e| NodeError::Bootstrap(e.to_string()))?;
    std::fs::create_dir_all(tls_dir(config)).map_err(|e| NodeError::Bootstrap(e.to_string()))?;
    write_file(&pending_path(config), &bytes).map_err(NodeError::Bootstrap)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    skiff_tls::identity::write_private(path, bytes).map_err(|e| e.to_string())
}

fn load_pending(config: &NodeConfig) -> Result<Option<PendingCa>, NodeError> {
    let path = pending_path(config);
    match std::fs::read(&path) {
        Ok(bytes) => {
            let pending: Pending = bincode::deserialize(&bytes)
                .map_err(|e| NodeError::Config(format!("{}: cannot be read ({e})", path.display())))?;
            Ok(Some(PendingCa { path, pending: Arc::new(Mutex::new(Some(pending))) }))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NodeError::Config(format!("{}: {e}", path.display()))),
    }
}

/// Asks `addrs` in turn for a certificate until one answers with a valid proof.
async fn ask_to_join(
    id: u64,
    addrs: &[String],
    token: &JoinToken,
    redirect: Option<Arc<dyn Redirect>>,
) -> Result<Identity, NodeError> {
    let join_err = |message: String| NodeError::Join { addr: addrs.join(","), message };
    let (key_pem, csr_pem) = skiff_tls::ca::new_key_and_csr().map_err(|e| join_err(e.to_string()))?;
    let proof = token::proof(&token.secret, JOIN_REQUEST, &[&id.to_be_bytes(), csr_pem.as_bytes()]);
    let connector = Arc::new(skiff_tls::TlsConnector::unverified().with_redirect(redirect));
    let mut client = skiff_client::Client::with_connector(addrs, connector).map_err(join_err)?;
    // The members of a new cluster start together: wait for the one that holds the CA.
    client.deadline = Duration::from_secs(300);
    client.round_pause = Duration::from_millis(500);
    let req = JoinRequest { node_id: id, csr_pem, proof };
    tracing::info!(?addrs, "asking for this member's certificate");
    let resp = client
        .call(skiff_client::CallKind::Read, |ch| {
            let req = req.clone();
            async move { SecurityClient::new(ch).join(req).await.map(|r| r.into_inner()) }
        })
        .await
        .map_err(|e| join_err(e.to_string()))?;
    let parts: [&[u8]; 3] = [&id.to_be_bytes(), resp.ca_pem.as_bytes(), resp.cert_pem.as_bytes()];
    if !token::verify_proof(&token.secret, JOIN_RESPONSE, &parts, &resp.proof) {
        return Err(join_err("the answer does not prove the token's secret: not this cluster, or a forgery".into()));
    }
    let ca_der = skiff_tls::pem::first_cert_der(&resp.ca_pem).map_err(|e| join_err(e.to_string()))?;
    if let Some(pinned) = token.ca_digest {
        if token::digest(&ca_der) != pinned {
            return Err(join_err("the cluster's CA is not the one the join token names".into()));
        }
    }
    Ok(Identity { ca_pem: resp.ca_pem, cert_pem: resp.cert_pem, key_pem })
}

/// The CA of a cluster being bootstrapped, until the first leader stores it.
#[derive(Clone)]
pub struct PendingCa {
    path: PathBuf,
    pending: Arc<Mutex<Option<Pending>>>,
}

impl PendingCa {
    /// Stores the CA, the join secret and the records of every certificate signed so far, once a
    /// leader can take the write; then forgets the file.
    pub async fn publish(self, api: Arc<ApiServer>, node_id: u64) {
        loop {
            let mut guard = self.pending.lock().await;
            let Some(pending) = guard.as_ref() else { return };
            if let Some(stored) = stored_record(api.store()) {
                if stored.ca_cert_pem != pending.record.ca_cert_pem {
                    tracing::error!("the cluster already has another CA: this member's pending CA is dropped");
                }
                *guard = None;
                let _ = std::fs::remove_file(&self.path);
                return;
            }
            let mut ops = Vec::new();
            match bincode::serialize(&pending.record) {
                Ok(value) => ops.push(Op::Put { key: CLUSTER_RECORD.into(), value, expect: Some(0) }),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode the cluster CA");
                    return;
                }
            }
            for id in pending.issued.iter().copied().chain([node_id]) {
                ops.push(Op::Put { key: member_record(id), value: Vec::new(), expect: None });
            }
            match api.call(SecurityWrite { ops }).await {
                Ok(_) => {
                    tracing::info!("stored the cluster CA");
                    *guard = None;
                    let _ = std::fs::remove_file(&self.path);
                    return;
                }
                Err(e) => tracing::debug!(error = %e, "cannot store the cluster CA yet"),
            }
            drop(guard);
            tokio::time::sleep(Duration::from_millis(300)).await; // retry pause until a leader takes the write
        }
    }
}

/// Serves `Security`.
pub struct SecurityService {
    api: Arc<ApiServer>,
    pending: Option<PendingCa>,
    member_validity: Duration,
    client_validity: Duration,
}

impl SecurityService {
    pub fn new(api: Arc<ApiServer>, pending: Option<PendingCa>, config: &NodeConfig) -> Self {
        Self {
            api,
            pending,
            member_validity: Duration::from_secs(config.security.member_cert_secs),
            client_validity: Duration::from_secs(config.security.client_cert_secs),
        }
    }

    /// The record as this member's replica has it (a rotation elsewhere arrives with replication;
    /// a rotation here compares and swaps, so a stale read cannot undo another).
    async fn record(&self) -> Result<(ClusterRecord, u64), Status> {
        let kv = self.api.store().get_local(CLUSTER_RECORD).map_err(|e| Status::internal(e.to_string()))?;
        let kv = kv.ok_or_else(|| Status::unavailable("this member does not have the cluster CA yet: retry"))?;
        let record =
            bincode::deserialize(&kv.value).map_err(|e| Status::internal(format!("the cluster CA record: {e}")))?;
        Ok((record, kv.mod_revision))
    }
}

fn check_csr(csr: &str) -> Result<(), Status> {
    if csr.is_empty() || csr.len() > MAX_CSR_BYTES {
        return Err(Status::invalid_argument(format!(
            "csr_pem: a PEM signing request of at most {MAX_CSR_BYTES} bytes"
        )));
    }
    Ok(())
}

fn sign_status(e: skiff_tls::TlsError) -> Status {
    Status::invalid_argument(format!("csr_pem: {e}"))
}

#[tonic::async_trait]
impl skiff_proto::api::security_server::Security for SecurityService {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let req = req.into_inner();
        check_csr(&req.csr_pem)?;
        if req.node_id == 0 {
            return Err(Status::invalid_argument("node_id: must be a positive integer"));
        }
        let id_bytes = req.node_id.to_be_bytes();
        let proven =
            |secret: &str| token::verify_proof(secret, JOIN_REQUEST, &[&id_bytes, req.csr_pem.as_bytes()], &req.proof);
        let refused = || {
            Status::permission_denied("the join token is not valid (wrong, or rotated since): print the current one with `skiff cluster join-token`")
        };
        let answer = |record: &ClusterRecord, cert_pem: String| {
            let parts: [&[u8]; 3] = [&id_bytes, record.ca_cert_pem.as_bytes(), cert_pem.as_bytes()];
            let proof = token::proof(&record.join_secret, JOIN_RESPONSE, &parts);
            Response::new(JoinResponse { ca_pem: record.ca_cert_pem.clone(), cert_pem, proof })
        };
        // A cluster being bootstrapped: only its initial members, once each.
        if let Some(pending) = &self.pending {
            let mut guard = pending.pending.lock().await;
            if let Some(p) = guard.as_mut() {
                if !proven(&p.record.join_secret) {
                    return Err(refused());
                }
                if !p.allowed.contains(&req.node_id) || p.issued.contains(&req.node_id) {
                    return Err(Status::already_exists(format!(
                        "member {} is not an initial member waiting for its certificate: join it with `skiff cluster join-token` once the cluster runs",
                        req.node_id
                    )));
                }
                let cert = p.record.ca().sign(&req.csr_pem, &Subject::Member(req.node_id), self.member_validity);
                let cert = cert.map_err(sign_status)?;
                p.issued.insert(req.node_id);
                let bytes = bincode::serialize(&*p).map_err(|e| Status::internal(e.to_string()))?;
                write_file(&pending.path, &bytes).map_err(Status::internal)?;
                tracing::info!(member = req.node_id, "signed an initial member's certificate");
                return Ok(answer(&p.record, cert));
            }
        }
        let (record, _) = self.record().await?;
        if !proven(&record.join_secret) {
            return Err(refused());
        }
        let cert = record.ca().sign(&req.csr_pem, &Subject::Member(req.node_id), self.member_validity);
        let cert = cert.map_err(sign_status)?;
        // One certificate per member id: claimed before it is handed out.
        let claim = Op::Put { key: member_record(req.node_id), value: Vec::new(), expect: Some(0) };
        match self.api.call(SecurityWrite { ops: vec![claim] }).await {
            Ok(_) => {}
            Err(e) if e.is(skiff_api::Reason::Conflict) => {
                return Err(Status::already_exists(format!(
                    "member {} already holds a certificate: a member whose data was lost is removed first (`skiff cluster remove-member {}`), then joins again",
                    req.node_id, req.node_id
                )))
            }
            Err(e) => return Err(crate::rpc_error::api_status(e)),
        }
        tracing::info!(member = req.node_id, "signed a joining member's certificate");
        Ok(answer(&record, cert))
    }

    async fn join_token(&self, req: Request<JoinTokenRequest>) -> Result<Response<JoinTokenResponse>, Status> {
        let (mut record, revision) = self.record().await?;
        if req.into_inner().rotate {
            record.join_secret = token::new_secret().map_err(Status::internal)?;
            let value = bincode::serialize(&record).map_err(|e| Status::internal(e.to_string()))?;
            let op = Op::Put { key: CLUSTER_RECORD.into(), value, expect: Some(revision) };
            self.api.call(SecurityWrite { ops: vec![op] }).await.map_err(crate::rpc_error::api_status)?;
            tracing::info!("rotated the join token");
        }
        Ok(Response::new(JoinTokenResponse { token: record.token()?.to_string() }))
    }

    async fn issue_credential(
        &self,
        req: Request<IssueCredentialRequest>,
    ) -> Result<Response<IssueCredentialResponse>, Status> {
        let req = req.into_inner();
        check_csr(&req.csr_pem)?;
        let role = Role::parse(&req.role).map_err(|m| Status::invalid_argument(format!("role: {m}")))?;
        skiff_tls::subject::check_client_name(&req.name).map_err(|m| Status::invalid_argument(format!("name: {m}")))?;
        let (record, _) = self.record().await?;
        let subject = Subject::Client { name: req.name.clone(), role };
        let cert_pem = record.ca().sign(&req.csr_pem, &subject, self.client_validity).map_err(sign_status)?;
        tracing::info!(client = %req.name, role = role.as_str(), "issued a client certificate");
        Ok(Response::new(IssueCredentialResponse { ca_pem: record.ca_cert_pem, cert_pem }))
    }
}

/// Renews this member's certificate after two thirds of its life, signed with the CA from its own
/// replica, and swaps it into the listener and every channel (their next handshakes use it).
pub async fn renew_before_expiry(
    store: KvStore,
    identity: Arc<IdentityStore>,
    data_dir: PathBuf,
    id: u64,
    validity: Duration,
) {
    loop {
        let current = identity.identity();
        let wait = match skiff_tls::pem::validity(&current.cert_pem) {
            Ok((not_after, lifetime)) => {
                let renew_at = not_after - lifetime / 3;
                renew_at.duration_since(std::time::SystemTime::now()).unwrap_or(Duration::ZERO)
            }
            Err(e) => {
                tracing::error!(error = %e, "this member's certificate cannot be read: it is not renewed");
                return;
            }
        };
        tokio::time::sleep(wait.max(Duration::from_secs(1))).await;
        let Some(record) = stored_record(&store) else {
            tracing::debug!("the cluster CA is not in this replica yet: renewal waits");
            tokio::time::sleep(Duration::from_secs(5)).await; // retry pause while the replica catches up
            continue;
        };
        let renewed = skiff_tls::ca::new_key_and_csr().and_then(|(key_pem, csr)| {
            let cert_pem = record.ca().sign(&csr, &Subject::Member(id), validity)?;
            Ok(Identity { ca_pem: record.ca_cert_pem.clone(), cert_pem, key_pem })
        });
        let saved = renewed.and_then(|new| {
            new.save_dir(&data_dir.join("tls"))?;
            identity.replace(new)
        });
        match saved {
            Ok(()) => tracing::info!("renewed this member's certificate"),
            Err(e) => {
                tracing::warn!(error = %e, "renewing this member's certificate failed; retrying in a minute");
                tokio::time::sleep(Duration::from_secs(60)).await; // retry pause after a failed renewal
            }
        }
    }
}
