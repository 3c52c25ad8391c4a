//! How the harness reaches each system's members, both over mutual TLS by default.
//!
//! Skiff's members serve their API over TLS only and authorize every call by the client's
//! certificate, so every channel to them presents the cluster's admin credentials, which the member
//! that bootstraps a cluster (the lowest id) writes to `<its data_dir>/admin.conf` shortly after it
//! starts ([`SkiffAccess`]).
//!
//! etcd, the reference, gets the same: each etcd cluster a benchmark starts has a CA of its own,
//! made in the cluster's temporary directory ([`EtcdPki`]), a certificate per member for its client
//! port and its peer port (both require a client certificate of that CA), and a client certificate
//! that every channel of the harness presents ([`EtcdAccess`]). `--etcd-plain` runs etcd as the
//! harness did before: plain HTTP/2 to clients, plain HTTP between members.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::api::cluster_client::ClusterClient;
use skiff_proto::api::MemberStatusRequest;
use skiff_proto::transport::Connector;
use skiff_tls::{Credentials, TlsConnector};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How long the first call on a new channel may take, the TLS handshake included.
const FIRST_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How often to look for the credentials file while the bootstrapping member writes it.
const POLL: Duration = Duration::from_millis(20);

/// The admin credentials of one Skiff cluster, as channels to its members use them.
#[derive(Clone)]
pub struct SkiffAccess {
    /// Trusts the cluster CA and presents the admin certificate; shared by every channel. Its
    /// connect timeout stays the connector's own (2 s): a member that is down refuses at once on
    /// loopback, and every wait of the harness has a deadline of its own.
    connector: Arc<TlsConnector>,
}

impl SkiffAccess {
    /// Loads the admin credentials at `path` once the bootstrapping member has written them,
    /// waiting at most `limit`.
    pub async fn wait_for(path: PathBuf, limit: Duration) -> anyhow::Result<Self> {
        let what = format!("the admin credentials {}", path.display());
        let credentials = crate::wait::until(&what, limit, POLL, || {
            let path = path.clone();
            // Written to a temporary file and renamed: once it exists, it is whole.
            async move { Ok(if path.exists() { Some(Credentials::load(&path)?) } else { None }) }
        })
        .await?;
        Ok(SkiffAccess { connector: Arc::new(credentials.connector()?) })
    }

    /// A lazily connected channel to `endpoint` (TLS inside; it reconnects by itself).
    pub fn lazy(&self, endpoint: &str) -> anyhow::Result<Channel> {
        Ok(Connector::channel(self.connector.as_ref(), endpoint)?)
    }

    /// A channel to `endpoint` that has connected: a cheap call (`Cluster/MemberStatus`, answered
    /// by the member itself) has gone through, so it fails fast when the member is down or
    /// refuses the credentials.
    pub async fn connect(&self, endpoint: &str) -> anyhow::Result<Channel> {
        let channel = self.lazy(endpoint)?;
        let mut client = ClusterClient::new(channel.clone());
        let ask = client.member_status(MemberStatusRequest {});
        match tokio::time::timeout(FIRST_CALL_TIMEOUT, ask).await {
            Ok(Ok(_)) => Ok(channel),
            Ok(Err(status)) => anyhow::bail!("skiff member {endpoint}: {}", status.message()),
            Err(_) => anyhow::bail!("skiff member {endpoint}: no answer within {FIRST_CALL_TIMEOUT:?}"),
        }
    }
}

/// How long connecting to an etcd member may take (TCP; a member that is down refuses at once on
/// loopback).
const ETCD_CONNECT_TIMEOUT: Duration = Duration::from_millis(300);

/// The certificates of one etcd cluster, in `<its directory>/tls`: a CA of its own, for each member
/// a certificate for serving and for dialing its peers (server and client usage), and the harness's
/// client certificate. Every certificate names `127.0.0.1` and `localhost`; keys are ECDSA P-256,
/// as Skiff's (rcgen's default, as skiff-tls makes them).
pub struct EtcdPki {
    /// The CA's certificate: the trusted CA of the client and of the peer port.
    pub ca: PathBuf,
    /// Each member's certificate and key (PEM files), by member index.
    pub members: Vec<(PathBuf, PathBuf)>,
    /// The harness's client certificate and key (PEM).
    client: (String, String),
    ca_pem: String,
}

impl EtcdPki {
    /// Makes the CA and the certificates of `members` members and of the harness under `dir/tls`.
    pub fn generate(dir: &Path, members: usize) -> anyhow::Result<EtcdPki> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
            KeyUsagePurpose,
        };
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls)?;
        let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
            let path = tls.join(name);
            std::fs::write(&path, text)?;
            Ok(path)
        };
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.distinguished_name.push(DnType::CommonName, "skiff-bench etcd CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_key = KeyPair::generate()?;
        let ca_pem = ca.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |name: &str| -> anyhow::Result<(String, String)> {
            let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            params.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate()?;
            Ok((params.signed_by(&key, &issuer)?.pem(), key.serialize_pem()))
        };
        let mut paths = Vec::new();
        for i in 1..=members {
            let (cert, key) = leaf(&format!("e{i}"))?;
            paths.push((write(&format!("e{i}.pem"), &cert)?, write(&format!("e{i}-key.pem"), &key)?));
        }
        Ok(EtcdPki { ca: write("ca.pem", &ca_pem)?, members: paths, client: leaf("skiff-bench")?, ca_pem })
    }

    /// The TLS flags of member `i`: its certificate on the client and on the peer port, each
    /// requiring a client certificate of the CA.
    pub fn flags(&self, i: usize) -> Vec<String> {
        let (cert, key) = &self.members[i];
        let (cert, key, ca) = (cert.display(), key.display(), self.ca.display());
        vec![
            format!("--cert-file={cert}"),
            format!("--key-file={key}"),
            format!("--trusted-ca-file={ca}"),
            "--client-cert-auth".into(),
            format!("--peer-cert-file={cert}"),
            format!("--peer-key-file={key}"),
            format!("--peer-trusted-ca-file={ca}"),
            "--peer-client-cert-auth".into(),
        ]
    }
}

/// How channels reach one etcd cluster's members: TLS trusting its CA and presenting the harness's
/// client certificate, or plain HTTP/2 (`--etcd-plain`).
#[derive(Clone)]
pub struct EtcdAccess {
    tls: Option<ClientTlsConfig>,
}

impl EtcdAccess {
    /// Plain HTTP/2.
    pub fn plain() -> Self {
        EtcdAccess { tls: None }
    }

    /// TLS with the certificates of `pki`.
    pub fn tls(pki: &EtcdPki) -> Self {
        let (cert, key) = &pki.client;
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&pki.ca_pem))
            .identity(Identity::from_pem(cert, key));
        EtcdAccess { tls: Some(config) }
    }

    /// `https` or `http`: the scheme of the members' URLs.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn endpoint(&self, endpoint: &str) -> anyhow::Result<Endpoint> {
        let mut e = Endpoint::from_shared(format!("{}://{endpoint}", self.scheme()))?
            .connect_timeout(ETCD_CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            e = e.tls_config(tls.clone())?;
        }
        Ok(e)
    }

    /// A connected channel to `endpoint` (the TLS handshake done), failing fast when it is down.
    pub async fn connect(&self, endpoint: &str) -> anyhow::Result<Channel> {
        let e = self.endpoint(endpoint)?;
        match tokio::time::timeout(FIRST_CALL_TIMEOUT, e.connect()).await {
            Ok(channel) => Ok(channel?),
            Err(_) => anyhow::bail!("etcd member {endpoint}: not connected within {FIRST_CALL_TIMEOUT:?}"),
        }
    }

    /// A lazily connected channel to `endpoint` (reconnects by itself).
    pub fn lazy(&self, endpoint: &str) -> anyhow::Result<Channel> {
        Ok(self.endpoint(endpoint)?.connect_lazy())
    }
}
