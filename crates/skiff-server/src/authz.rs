//! Who may call what on a member's listener, decided from the caller's certificate (verified
//! against the cluster CA by the TLS handshake) before the request reaches any service.
//!
//! - Raft and forwarding between members: member certificates only.
//! - `Security/Join`: anyone (the join token's proof is checked by the service).
//! - Reads (status, get, list, watch, logs): any client certificate, or a member's.
//! - Everything else: an admin client certificate, or a member's.
//!
//! A member certificate counts while its id has a record (`/skiff/security/members/<id>`) in this
//! member's replica, or while the replica holds no security records at all (a cluster being
//! bootstrapped, a member still catching up): only the CA can sign one either way. Removing a
//! member deletes its record, and its certificate is refused from then on.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rustls_pki_types::CertificateDer;
use skiff_store::KvStore;
use skiff_tls::{Role, Subject};
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use crate::security::{member_record, CLUSTER_RECORD};

/// What a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Anyone,
    Members,
    Read,
    Write,
}

/// The access `path` (`/package.Service/Method`) needs.
pub fn access(path: &str) -> Access {
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    match (service, method) {
        ("skiff.raft.v1.Raft", _) | ("skiff.member.v1.Members", _) => Access::Members,
        ("skiff.v1.Security", "Join") => Access::Anyone,
        ("skiff.v1.Cluster", "Status" | "MemberStatus")
        | ("skiff.v1.Kv", "Get" | "List" | "Watch")
        | ("skiff.v1.Resources", "Get" | "List" | "Watch")
        | ("skiff.v1.Containers", "Logs") => Access::Read,
        _ => Access::Write,
    }
}

/// Decides on one call.
#[derive(Clone)]
pub struct Authorizer {
    store: KvStore,
    /// Who each certificate seen names, by its DER: parsing a certificate on every call cost 3%
    /// of a loaded leader's CPU (bench/results/tls-cost-2026-11-30.md). Bounded: emptied when full.
    subjects: Arc<Mutex<HashMap<Vec<u8>, Option<Subject>>>>,
}

/// Certificates whose subjects are remembered at once.
const SUBJECT_CACHE: usize = 4096;

impl Authorizer {
    pub fn new(store: KvStore) -> Self {
        Self { store, subjects: Arc::default() }
    }

    /// Who `der` names, if a member or a client of this cluster.
    fn subject(&self, der: &[u8]) -> Option<Subject> {
        let Ok(mut subjects) = self.subjects.lock() else {
            return Subject::from_cert_der(der);
        };
        if let Some(known) = subjects.get(der) {
            return known.clone();
        }
        let subject = Subject::from_cert_der(der);
        if subjects.len() >= SUBJECT_CACHE {
            subjects.clear();
        }
        subjects.insert(der.to_vec(), subject.clone());
        subject
    }

    pub fn check(&self, path: &str, certs: Option<&[CertificateDer<'static>]>) -> Result<(), Status> {
        let needs = access(path);
        if needs == Access::Anyone {
            return Ok(());
        }
        let Some(leaf) = certs.and_then(|c| c.first()) else {
            return Err(Status::unauthenticated(
                "this call needs a client certificate signed by the cluster CA: pass the credentials file with --credentials (bootstrap writes <data_dir>/admin.conf; `skiff cluster credentials` makes more)",
            ));
        };
        let Some(subject) = self.subject(leaf.as_ref()) else {
            return Err(Status::permission_denied(
                "the certificate names neither a member nor a client of this cluster",
            ));
        };
        match (&subject, needs) {
            (Subject::Member(id), _) => {
                if self.is_member(*id) {
                    Ok(())
                } else {
                    Err(Status::permission_denied(format!(
                        "member {id} is no longer a member of this cluster: its certificate is refused"
                    )))
                }
            }
            (Subject::Client { .. }, Access::Members) => {
                Err(Status::permission_denied(format!("{path} is for members of the cluster only, not clients")))
            }
            (Subject::Client { .. }, Access::Read) | (Subject::Client { role: Role::Admin, .. }, _) => Ok(()),
            (Subject::Client { name, role }, _) => Err(Status::permission_denied(format!(
                "{path} changes the cluster or runs something; the {} credentials of {name} only read",
                role.as_str()
            ))),
        }
    }

    fn is_member(&self, id: u64) -> bool {
        match self.store.get_local(&member_record(id)) {
            Ok(Some(_)) => true,
            Ok(None) => matches!(self.store.get_local(CLUSTER_RECORD), Ok(None)),
            Err(_) => false,
        }
    }
}

/// The tower layer in front of every service of the listener.
#[derive(Clone)]
pub struct AuthLayer(pub Arc<Authorizer>);

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authorized<S>;

    fn layer(&self, inner: S) -> Authorized<S> {
        Authorized { inner, auth: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct Authorized<S> {
    inner: S,
    auth: Arc<Authorizer>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> tower_service::Service<http::Request<Body>> for Authorized<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let certs = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|info| info.peer_certs());
        match self.auth.check(req.uri().path(), certs.as_deref().map(Vec::as_slice)) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(status) => {
                tracing::debug!(path = req.uri().path(), code = ?status.code(), "call refused");
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_the_access_it_should() {
        assert_eq!(access("/skiff.raft.v1.Raft/AppendEntries"), Access::Members);
        assert_eq!(access("/skiff.member.v1.Members/Forward"), Access::Members);
        assert_eq!(access("/skiff.v1.Security/Join"), Access::Anyone);
        assert_eq!(access("/skiff.v1.Security/JoinToken"), Access::Write);
        assert_eq!(access("/skiff.v1.Kv/Watch"), Access::Read);
        assert_eq!(access("/skiff.v1.Kv/Put"), Access::Write);
        assert_eq!(access("/skiff.v1.Containers/Logs"), Access::Read);
        assert_eq!(access("/skiff.v1.Containers/Exec"), Access::Write);
        assert_eq!(access("/skiff.v1.Cluster/AddMember"), Access::Write);
        assert_eq!(access("/unknown"), Access::Write);
    }
}
