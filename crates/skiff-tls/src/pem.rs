//! PEM in and out of rustls' types.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::TlsError;

/// Every certificate in `pem`, in order.
pub fn certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let certs = certs.map_err(|e| TlsError::Invalid(format!("a certificate cannot be read: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid("no certificate found in the PEM text".into()));
    }
    Ok(certs)
}

/// The first certificate in `pem`, DER.
pub fn first_cert_der(pem: &str) -> Result<Vec<u8>, TlsError> {
    Ok(certs(pem)?.remove(0).to_vec())
}

pub fn private_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| TlsError::Invalid(format!("the private key cannot be read: {e}")))
}

/// When the first certificate in `pem` stops being valid, and how long it was valid for in all.
pub fn validity(pem: &str) -> Result<(std::time::SystemTime, std::time::Duration), TlsError> {
    let der = first_cert_der(pem)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| TlsError::Invalid(format!("a certificate cannot be read: {e}")))?;
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let to_time = |secs: i64| std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    let lifetime = std::time::Duration::from_secs((not_after - not_before).max(0) as u64);
    Ok((to_time(not_after), lifetime))
}
