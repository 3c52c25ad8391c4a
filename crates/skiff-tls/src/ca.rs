//! The cluster's certificate authority: made once by the member that bootstraps the cluster, kept in
//! the replicated store (so any leader can sign a join or a renewal), and used to sign member and
//! client certificates from certificate signing requests: private keys never leave their holder.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::subject::{Subject, MEMBER_SERVER_NAME};
use crate::TlsError;

/// How long the CA certificate is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The CA's certificate and key, PEM.
#[derive(Clone)]
pub struct ClusterCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A new CA named after the cluster.
    pub fn generate(cluster: &str) -> Result<ClusterCa, TlsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name.push(DnType::CommonName, format!("skiff cluster CA {cluster}"));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + CA_VALIDITY;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(ClusterCa { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> Result<Vec<u8>, TlsError> {
        crate::pem::first_cert_der(&self.cert_pem)
    }

    /// Signs `csr_pem` for `subject`, valid for `validity`. Only the CSR's public key is used: the
    /// names, usages and validity are the CA's choice, never the requester's.
    pub fn sign(&self, csr_pem: &str, subject: &Subject, validity: Duration) -> Result<String, TlsError> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, key)?;
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| TlsError::Invalid(format!("the certificate signing request cannot be read: {e}")))?;
        csr.params = leaf_params(subject, validity)?;
        Ok(csr.signed_by(&issuer)?.pem())
    }
}

fn leaf_params(subject: &Subject, validity: Duration) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, subject.common_name());
    let uri = subject
        .uri()
        .try_into()
        .map_err(|_| TlsError::Invalid(format!("{subject} cannot be named in a certificate")))?;
    params.subject_alt_names.push(SanType::URI(uri));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    match subject {
        Subject::Member(_) => {
            let dns = MEMBER_SERVER_NAME.try_into().map_err(|_| TlsError::Invalid("member server name".into()))?;
            params.subject_alt_names.push(SanType::DnsName(dns));
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        }
        Subject::Client { .. } => params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth],
    }
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + validity;
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .map_err(|_| TlsError::Invalid("the system has no random source".into()))?;
    serial[0] &= 0x7f; // positive
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    Ok(params)
}

/// A new private key and a signing request for it, PEM: what a member or client sends to be
/// certified. The request names nothing the CA keeps.
pub fn new_key_and_csr() -> Result<(String, String), TlsError> {
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(Vec::<String>::new())?;
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject::Role;

    #[test]
    fn a_signed_member_certificate_names_its_node_and_not_what_the_request_asked() {
        let ca = ClusterCa::generate("test").expect("CA");
        let (_key, csr) = new_key_and_csr().expect("CSR");
        let cert = ca.sign(&csr, &Subject::Member(3), Duration::from_secs(3600)).expect("sign");
        let der = crate::pem::first_cert_der(&cert).expect("DER");
        assert_eq!(Subject::from_cert_der(&der), Some(Subject::Member(3)));
        let client = ca
            .sign(&csr, &Subject::Client { name: "ro".into(), role: Role::ReadOnly }, Duration::from_secs(60))
            .expect("sign");
        let der = crate::pem::first_cert_der(&client).expect("DER");
        assert_eq!(Subject::from_cert_der(&der), Some(Subject::Client { name: "ro".into(), role: Role::ReadOnly }));
    }

    #[test]
    fn garbage_is_not_a_signing_request() {
        let ca = ClusterCa::generate("test").expect("CA");
        let err = ca.sign("not a CSR", &Subject::Member(1), Duration::from_secs(1)).expect_err("refused");
        assert!(err.to_string().contains("signing request"), "{err}");
    }
}
