//! Skiff's cluster security: the cluster CA ([`ca`]), who a certificate names ([`subject`]), join
//! tokens ([`token`]), identities on disk ([`identity`]) and TLS under tonic ([`transport`]).
//! Pure of Skiff's store and API: the member wiring (skiff-server) decides who may do what.

pub mod ca;
pub mod credentials;
pub mod identity;
pub mod pem;
pub mod subject;
pub mod token;
pub mod transport;

pub use ca::ClusterCa;
pub use credentials::Credentials;
pub use identity::{Identity, IdentityStore};
pub use rustls;
pub use subject::{Role, Subject};
pub use token::JoinToken;
pub use transport::TlsConnector;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Invalid(String),
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{}: {error}", .path.display())]
    Io { path: std::path::PathBuf, error: std::io::Error },
}
