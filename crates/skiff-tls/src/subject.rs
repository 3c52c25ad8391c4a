//! Who a certificate names: a member by its node id, or a client with a role. The name travels as a
//! URI subject alternative name (`skiff://member/7`, `skiff://client/admin/alice`), which only the
//! cluster CA can put into a certificate the listener accepts.

use std::fmt;

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything.
    Admin,
    /// Get, list, watch and logs; nothing that changes state or runs anything.
    ReadOnly,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
        }
    }

    pub fn parse(text: &str) -> Result<Role, String> {
        match text {
            "admin" => Ok(Role::Admin),
            "read-only" => Ok(Role::ReadOnly),
            other => Err(format!("unknown role {other:?}: use admin or read-only")),
        }
    }
}

/// The holder of a certificate signed by the cluster CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Member(u64),
    Client { name: String, role: Role },
}

const MEMBER_PREFIX: &str = "skiff://member/";
const CLIENT_PREFIX: &str = "skiff://client/";

/// The DNS name every member certificate carries and every client checks: members are reached at
/// addresses that change (Docker, published ports), their identity is the node id.
pub const MEMBER_SERVER_NAME: &str = "skiff-member";

impl Subject {
    pub fn uri(&self) -> String {
        match self {
            Subject::Member(id) => format!("{MEMBER_PREFIX}{id}"),
            Subject::Client { name, role } => format!("{CLIENT_PREFIX}{}/{name}", role.as_str()),
        }
    }

    pub fn common_name(&self) -> String {
        match self {
            Subject::Member(id) => format!("member-{id}"),
            Subject::Client { name, .. } => name.clone(),
        }
    }

    /// Reads the subject from a URI SAN written by [`Subject::uri`].
    pub fn from_uri(uri: &str) -> Option<Subject> {
        if let Some(id) = uri.strip_prefix(MEMBER_PREFIX) {
            return id.parse().ok().filter(|id| *id > 0).map(Subject::Member);
        }
        let rest = uri.strip_prefix(CLIENT_PREFIX)?;
        let (role, name) = rest.split_once('/')?;
        let role = Role::parse(role).ok()?;
        check_client_name(name).ok()?;
        Some(Subject::Client { name: name.to_string(), role })
    }

    /// The subject of a DER certificate (already verified against the cluster CA by the TLS
    /// handshake): its first `skiff://` URI SAN.
    pub fn from_cert_der(der: &[u8]) -> Option<Subject> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        san.value.general_names.iter().find_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Subject::from_uri(uri),
            _ => None,
        })
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Member(id) => write!(f, "member {id}"),
            Subject::Client { name, role } => write!(f, "client {name} ({})", role.as_str()),
        }
    }
}

/// A client name: 1-63 of `[a-z0-9.-]`, like a Kubernetes user name kept simple.
pub fn check_client_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!("client name {name:?}: use 1-63 lowercase letters, digits, '-' or '.'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip_through_their_uri() {
        for s in [
            Subject::Member(7),
            Subject::Client { name: "alice".into(), role: Role::ReadOnly },
            Subject::Client { name: "admin".into(), role: Role::Admin },
        ] {
            assert_eq!(Subject::from_uri(&s.uri()), Some(s));
        }
    }

    #[test]
    fn malformed_uris_name_no_one() {
        for uri in [
            "skiff://member/0",
            "skiff://member/x",
            "skiff://client/root/alice",
            "skiff://client/admin/",
            "skiff://client/admin/a/b",
            "https://member/1",
        ] {
            assert_eq!(Subject::from_uri(uri), None, "{uri}");
        }
    }
}
