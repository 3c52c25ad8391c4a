//! Join tokens, as Docker Swarm's: `SKIFF-1-<sha256 of the CA certificate, hex>-<secret>`. The
//! digest lets a joining member pin the CA before it trusts any answer; the secret proves to the
//! cluster that the joiner was given the token. Neither side sends the secret: each sends an HMAC
//! of what it sends, keyed by the secret, so a man in the middle learns nothing it can reuse.
//!
//! The members of a new cluster start from a bootstrap secret alone (no CA exists yet): the same
//! exchange, without the pin.

use std::fmt;

use ring::hmac;

const PREFIX: &str = "SKIFF-1-";

/// A token as a joining member holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the CA certificate (DER), when the token pins it.
    pub ca_digest: Option<[u8; 32]>,
    pub secret: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken").field("ca_digest", &self.ca_digest.map(hex)).finish_non_exhaustive()
    }
}

/// The shortest secret accepted: 128 bits in hex.
pub const MIN_SECRET_LEN: usize = 32;

impl JoinToken {
    /// Reads `SKIFF-1-<digest>-<secret>`, or a bare bootstrap secret.
    pub fn parse(text: &str) -> Result<JoinToken, String> {
        let text = text.trim();
        let (ca_digest, secret) = match text.strip_prefix(PREFIX) {
            Some(rest) => {
                let (digest, secret) = rest.split_once('-').ok_or(
                    "a join token reads SKIFF-1-<CA digest>-<secret>: print one with `skiff cluster join-token`",
                )?;
                (Some(unhex32(digest).ok_or("the CA digest of the join token is not 64 hex digits")?), secret)
            }
            None => (None, text),
        };
        check_secret(secret)?;
        Ok(JoinToken { ca_digest, secret: secret.to_string() })
    }

    pub fn new(ca_der: &[u8], secret: &str) -> JoinToken {
        JoinToken { ca_digest: Some(digest(ca_der)), secret: secret.to_string() }
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ca_digest {
            Some(d) => write!(f, "{PREFIX}{}-{}", hex(d), self.secret),
            None => f.write_str(&self.secret),
        }
    }
}

/// A secret: at least [`MIN_SECRET_LEN`] characters of `[A-Za-z0-9]`.
pub fn check_secret(secret: &str) -> Result<(), String> {
    if secret.len() < MIN_SECRET_LEN || !secret.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!(
            "a join secret is at least {MIN_SECRET_LEN} letters or digits (e.g. `openssl rand -hex 16`)"
        ));
    }
    Ok(())
}

/// A new random secret: 128 bits, hex.
pub fn new_secret() -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| "the system has no random source".to_string())?;
    Ok(hex(bytes))
}

/// SHA-256 of `data`.
pub fn digest(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// What each side of a join sends beside its message: HMAC-SHA256 keyed by the secret over a
/// label (which side) and the message.
pub fn proof(secret: &str, label: &str, parts: &[&[u8]]) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::sign(&key, &proven_message(label, parts)).as_ref().to_vec()
}

/// Checks a proof in constant time.
pub fn verify_proof(secret: &str, label: &str, parts: &[&[u8]], proof: &[u8]) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, &proven_message(label, parts), proof).is_ok()
}

/// The label, then each part after its length (so parts cannot be shifted into each other).
fn proven_message(label: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut message = label.as_bytes().to_vec();
    for part in parts {
        message.extend_from_slice(&(part.len() as u64).to_be_bytes());
        message.extend_from_slice(part);
    }
    message
}

/// Lowercase hex.
pub fn hex(bytes: impl AsRef<[u8]>) -> String {
    bytes.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_prints_and_parses_back() {
        let secret = new_secret().expect("secret");
        let token = JoinToken::new(b"a CA", &secret);
        assert_eq!(JoinToken::parse(&token.to_string()), Ok(token.clone()));
        assert!(!format!("{token:?}").contains(&secret), "Debug must not print the secret");
        let bare = JoinToken::parse(&secret).expect("a bare secret");
        assert_eq!(bare.ca_digest, None);
    }

    #[test]
    fn short_or_malformed_tokens_are_refused() {
        for bad in [
            "",
            "short",
            "SKIFF-1-abc-0123456789abcdef0123456789abcdef",
            "SKIFF-1-nodash",
            "has spaces in it and is long enough ok",
        ] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_proof_holds_only_for_the_same_secret_label_and_message() {
        let p = proof("s1", "request", &[b"csr"]);
        assert!(verify_proof("s1", "request", &[b"csr"], &p));
        assert!(!verify_proof("s2", "request", &[b"csr"], &p));
        assert!(!verify_proof("s1", "response", &[b"csr"], &p));
        assert!(!verify_proof("s1", "request", &[b"cs", b"r"], &p));
    }
}
