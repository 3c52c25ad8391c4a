//! How the harness reaches Skiff's members: they serve their API over TLS only and authorize every
//! call by the client's certificate, so every channel to them presents the cluster's admin
//! credentials, which the member that bootstraps a cluster (the lowest id) writes to
//! `<its data_dir>/admin.conf` shortly after it starts. etcd, the reference, is reached in plain
//! HTTP/2 (`system::Dialer::Etcd`), never through this.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use skiff_proto::api::cluster_client::ClusterClient;
use skiff_proto::api::MemberStatusRequest;
use skiff_proto::transport::Connector;
use skiff_tls::{Credentials, TlsConnector};
use tonic::transport::Channel;

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
