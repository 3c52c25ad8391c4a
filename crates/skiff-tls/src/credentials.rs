//! A client's credentials file, as kubeconfig or k3s' `k3s.yaml`: where the members are, the CA to
//! trust and a client certificate with its key. Bootstrap writes an admin one into the data
//! directory (mode 0600); `skiff cluster credentials` makes more.

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Identity, IdentityStore, TlsConnector, TlsError};

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Members to reach (`host:port`), used when the CLI is given none.
    #[serde(default)]
    pub members: Vec<String>,
    /// The cluster CA (PEM).
    pub ca: String,
    /// The client certificate (PEM).
    pub cert: String,
    /// Its private key (PEM).
    pub key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("members", &self.members).finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn load(path: &Path) -> Result<Credentials, TlsError> {
        let text = std::fs::read_to_string(path).map_err(|error| TlsError::Io { path: path.to_path_buf(), error })?;
        let creds: Credentials = toml::from_str(&text)
            .map_err(|e| TlsError::Invalid(format!("{}: not a Skiff credentials file: {e}", path.display())))?;
        creds.identity().certified_key().map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))?;
        Ok(creds)
    }

    pub fn save(&self, path: &Path) -> Result<(), TlsError> {
        let text = toml::to_string(self).map_err(|e| TlsError::Invalid(format!("credentials: {e}")))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|error| TlsError::Io { path: dir.to_path_buf(), error })?;
        }
        crate::identity::write_private(path, &text)
    }

    pub fn identity(&self) -> Identity {
        Identity { ca_pem: self.ca.clone(), cert_pem: self.cert.clone(), key_pem: self.key.clone() }
    }

    /// A connector that trusts the CA and presents the certificate.
    pub fn connector(&self) -> Result<TlsConnector, TlsError> {
        Ok(TlsConnector::new(IdentityStore::new(self.identity())?))
    }
}

/// Makes a client certificate for `subject` with `ca` (in-process: bootstrap).
pub fn issue(
    ca: &crate::ClusterCa,
    subject: &crate::Subject,
    validity: std::time::Duration,
    members: Vec<String>,
) -> Result<Credentials, TlsError> {
    let (key, csr) = crate::ca::new_key_and_csr()?;
    let cert = ca.sign(&csr, subject, validity)?;
    Ok(Credentials { members, ca: ca.cert_pem.clone(), cert, key })
}

/// The same as an `Arc<dyn Connector>` for [`skiff_proto`]'s users.
pub fn connector(creds: &Credentials) -> Result<Arc<dyn skiff_proto::transport::Connector>, TlsError> {
    Ok(Arc::new(creds.connector()?))
}
