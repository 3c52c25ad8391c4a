//! A holder's certificate, key and the cluster CA, on disk and in memory. A member's identity can be
//! replaced while it runs (renewal): the listener and every channel read it at each handshake.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::sign::CertifiedKey;

use crate::TlsError;

/// A certificate and its key, with the CA that signed it; PEM.
#[derive(Clone)]
pub struct Identity {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity").finish_non_exhaustive()
    }
}

const CA_FILE: &str = "ca.pem";
const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";

impl Identity {
    /// Reads `ca.pem`, `cert.pem` and `key.pem` from `dir`; `None` when the directory holds none.
    pub fn load_dir(dir: &Path) -> Result<Option<Identity>, TlsError> {
        let read = |name: &str| -> Result<Option<String>, TlsError> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(Some(text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(TlsError::Io { path, error: e }),
            }
        };
        match (read(CA_FILE)?, read(CERT_FILE)?, read(KEY_FILE)?) {
            (Some(ca_pem), Some(cert_pem), Some(key_pem)) => {
                let identity = Identity { ca_pem, cert_pem, key_pem };
                identity.certified_key()?;
                Ok(Some(identity))
            }
            (None, None, None) => Ok(None),
            _ => Err(TlsError::Invalid(format!(
                "{} holds part of a member identity (ca.pem, cert.pem, key.pem): restore the missing files, or remove the directory with the member's data and add the member anew",
                dir.display()
            ))),
        }
    }

    /// Writes the three files into `dir` (the key readable by its owner only), each replaced whole.
    pub fn save_dir(&self, dir: &Path) -> Result<(), TlsError> {
        std::fs::create_dir_all(dir).map_err(|error| TlsError::Io { path: dir.to_path_buf(), error })?;
        write_private(&dir.join(KEY_FILE), &self.key_pem)?;
        write_private(&dir.join(CA_FILE), &self.ca_pem)?;
        write_private(&dir.join(CERT_FILE), &self.cert_pem)
    }

    /// The certificate and key as rustls signs with them.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let chain = crate::pem::certs(&self.cert_pem)?;
        let key = crate::pem::private_key(&self.key_pem)?;
        let provider = rustls::crypto::ring::default_provider();
        let key = CertifiedKey::from_der(chain, key, &provider)
            .map_err(|e| TlsError::Invalid(format!("the certificate and key do not belong together: {e}")))?;
        Ok(Arc::new(key))
    }

    /// The trust roots: the cluster CA.
    pub fn roots(&self) -> Result<Arc<rustls::RootCertStore>, TlsError> {
        roots(&self.ca_pem)
    }
}

/// Trust roots made of the CA certificates in `ca_pem`.
pub fn roots(ca_pem: &str) -> Result<Arc<rustls::RootCertStore>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in crate::pem::certs(ca_pem)? {
        roots.add(cert).map_err(|e| TlsError::Invalid(format!("the cluster CA cannot be used: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// Writes `bytes` to `path` through a temporary file and a rename, mode 0600.
pub fn write_private(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp: PathBuf = path.with_extension("tmp");
    let io = |error| TlsError::Io { path: path.to_path_buf(), error };
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
    file.write_all(bytes.as_ref()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The identity in use, replaceable while the listener and channels use it.
#[derive(Debug)]
pub struct IdentityStore {
    current: RwLock<(Identity, Arc<CertifiedKey>)>,
    roots: Arc<rustls::RootCertStore>,
}

impl IdentityStore {
    pub fn new(identity: Identity) -> Result<Arc<IdentityStore>, TlsError> {
        let key = identity.certified_key()?;
        let roots = identity.roots()?;
        Ok(Arc::new(IdentityStore { current: RwLock::new((identity, key)), roots }))
    }

    pub fn identity(&self) -> Identity {
        match self.current.read() {
            Ok(g) => g.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }

    /// Replaces the certificate and key (same CA); later handshakes use the new ones.
    pub fn replace(&self, identity: Identity) -> Result<(), TlsError> {
        let key = identity.certified_key()?;
        match self.current.write() {
            Ok(mut g) => *g = (identity, key),
            Err(poisoned) => *poisoned.into_inner() = (identity, key),
        }
        Ok(())
    }

    pub(crate) fn key(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(g) => g.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    pub(crate) fn roots(&self) -> Arc<rustls::RootCertStore> {
        self.roots.clone()
    }
}

#[derive(Debug)]
pub(crate) struct Resolver(pub Arc<IdentityStore>);

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.key())
    }
}

impl rustls::client::ResolvesClientCert for Resolver {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
