//! Names and labels as Kubernetes validates them. Each check returns the reason a value is wrong,
//! for an error that also names the object and the field.

/// A DNS-1123 label (namespaces, node and member names): 1-63 lowercase letters, digits and `-`,
/// starting and ending with a letter or digit.
pub fn check_dns1123_label(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 63 {
        return Err(format!("{value:?} must be 1-63 characters long"));
    }
    if !value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(format!("{value:?} may only contain lowercase letters, digits and '-'"));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(format!("{value:?} must start and end with a letter or digit"));
    }
    Ok(())
}

/// A DNS-1123 subdomain (most object names): at most 253 characters, dot-separated DNS-1123 labels.
pub fn check_dns1123_subdomain(value: &str) -> Result<(), String> {
    if value.is_empty() || value.len() > 253 {
        return Err(format!("{value:?} must be 1-253 characters long"));
    }
    for part in value.split('.') {
        check_dns1123_label(part).map_err(|_| {
            format!("{value:?} must be lowercase letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit")
        })?;
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters of letters, digits, `-`, `_` and `.`, starting and
/// ending with a letter or digit.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if value.len() > 63 {
        return Err(format!("{value:?} must be at most 63 characters"));
    }
    let inner = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    let bytes = value.as_bytes();
    let edges = bytes[0].is_ascii_alphanumeric() && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    if !bytes.iter().all(|b| inner(*b)) || !edges {
        return Err(format!(
            "{value:?} must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A label key: an optional DNS-1123 subdomain prefix and `/`, then a name like a label value
/// (but not empty).
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        check_dns1123_subdomain(p).map_err(|e| format!("prefix of label key {key:?}: {e}"))?;
    }
    if name.is_empty() {
        return Err(format!("label key {key:?} has an empty name"));
    }
    check_label_value(name).map_err(|e| format!("name of label key {key:?}: {e}"))
}

/// A member address is `host:port` with a non-empty host and a port in 1..=65535.
pub fn check_address(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("{addr:?} is not host:port"));
    };
    if host.is_empty() {
        return Err(format!("{addr:?} has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{addr:?} has no valid port (1-65535)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns1123_names() {
        assert!(check_dns1123_label("nginx-deployment").is_ok());
        assert!(check_dns1123_label("Nginx").is_err());
        assert!(check_dns1123_label("-a").is_err());
        assert!(check_dns1123_label(&"a".repeat(64)).is_err());
        assert!(check_dns1123_subdomain("my-app.example.com").is_ok());
        assert!(check_dns1123_subdomain("a..b").is_err());
    }

    #[test]
    fn labels_follow_kubernetes_syntax() {
        assert!(check_label_key("app").is_ok());
        assert!(check_label_key("app.kubernetes.io/name").is_ok());
        assert!(check_label_key("bad prefix/x").is_err());
        assert!(check_label_key("example.com/").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("v1.2_x-y").is_ok());
        let msg = check_label_value("-x").expect_err("edge");
        assert!(msg.contains("\"-x\""), "{msg}");
    }
}
