//! Validation of objects, as the API server does it before anything is stored: the metadata every
//! kind has, the size limit, and the checks kinds share; each kind's own rules are in its
//! `kinds/<kind>.rs`. Every error names the field; the caller adds the file and the object.

use std::collections::BTreeMap;
use std::fmt;

use crate::kinds::{Kind, Object};
use crate::meta::ObjectMeta;
use crate::name::{check_dns1123_label, check_dns1123_subdomain, check_label_key, check_label_value};
use crate::path::FieldPath;

/// The largest object, serialized as JSON, that the server stores (Kubernetes' limit for etcd
/// values is 1.5 MiB; ours is the store's value limit).
pub const MAX_OBJECT_BYTES: usize = 1024 * 1024;

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: FieldPath,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// The problems found so far; each kind's validation adds to it.
#[derive(Default)]
pub struct Errors(Vec<FieldError>);

impl Errors {
    pub(crate) fn add(&mut self, path: FieldPath, message: impl Into<String>) {
        self.0.push(FieldError { path, message: message.into() });
    }

    pub(crate) fn check(&mut self, path: &FieldPath, result: Result<(), String>) {
        if let Err(message) = result {
            self.add(path.clone(), message);
        }
    }
}

/// Every problem with `object`, in field order. Empty means valid.
pub fn validate(object: &Object) -> Vec<FieldError> {
    let mut errs = Errors::default();
    let root = FieldPath::root();
    meta(&mut errs, object.kind(), object.meta());
    object.validate_kind(&mut errs, &root);
    if let Some(e) = check_size(object) {
        errs.0.push(e);
    }
    errs.0
}

/// The size limit alone: for objects the server assembles (an update with the stored status).
pub fn check_size(object: &Object) -> Option<FieldError> {
    let size = json_size(object);
    (size > MAX_OBJECT_BYTES).then(|| FieldError {
        path: FieldPath::root(),
        message: format!("the object is {size} bytes, more than the limit of {MAX_OBJECT_BYTES} bytes (1 MiB)"),
    })
}

/// The length of the object's JSON, counted without building it.
fn json_size(object: &Object) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, object);
    count.0
}

fn meta(errs: &mut Errors, kind: Kind, m: &ObjectMeta) {
    let path = FieldPath::root().at("metadata");
    if m.name.is_empty() {
        if m.generate_name.is_empty() {
            errs.add(path.at("name"), "required: every object needs a name (or generateName)");
        }
    } else {
        let check = match kind {
            Kind::Namespace => check_dns1123_label(&m.name),
            Kind::Service => check_dns1035_label(&m.name),
            _ => check_dns1123_subdomain(&m.name),
        };
        errs.check(&path.at("name"), check);
    }
    if !m.namespace.is_empty() {
        // A cluster-scoped kind's namespace is cleared by the defaults, as Kubernetes does.
        if kind.namespaced() {
            errs.check(&path.at("namespace"), check_dns1123_label(&m.namespace));
        }
    }
    labels(errs, &path.at("labels"), &m.labels);
    for key in m.annotations.keys() {
        errs.check(&path.at("annotations").key(key), check_label_key(key));
    }
    for (i, owner) in m.owner_references.iter().enumerate() {
        let p = path.at("ownerReferences").index(i);
        for (field, value) in
            [("apiVersion", &owner.api_version), ("kind", &owner.kind), ("name", &owner.name), ("uid", &owner.uid)]
        {
            if value.is_empty() {
                errs.add(p.at(field), "required");
            }
        }
    }
}

pub(crate) fn labels(errs: &mut Errors, path: &FieldPath, labels: &BTreeMap<String, String>) {
    for (k, v) in labels {
        errs.check(&path.key(k), check_label_key(k));
        errs.check(&path.key(k), check_label_value(v));
    }
}

/// Service names must also start with a letter (they become DNS names).
pub(crate) fn check_dns1035_label(value: &str) -> Result<(), String> {
    check_dns1123_label(value)?;
    if !value.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!("{value:?} must start with a lowercase letter"));
    }
    Ok(())
}

/// A port name (IANA service name): 1-15 lowercase letters, digits and '-', with a letter, no
/// leading, trailing or doubled '-'.
pub(crate) fn check_port_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} must be 1-15 lowercase letters, digits and '-', with at least one letter"))
    }
}

pub(crate) fn check_port(port: i32) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("{port} must be between 1 and 65535"))
    }
}

pub(crate) fn check_protocol(protocol: &Option<String>) -> Result<(), String> {
    match protocol.as_deref() {
        None | Some("TCP" | "UDP" | "SCTP") => Ok(()),
        Some(other) => Err(format!("{other:?} must be TCP, UDP or SCTP")),
    }
}

pub(crate) fn one_of(value: &Option<String>, allowed: &[&str]) -> Result<(), String> {
    match value.as_deref() {
        None => Ok(()),
        Some(v) if allowed.contains(&v) => Ok(()),
        Some(v) => Err(format!("{v:?} must be one of {}", allowed.join(", "))),
    }
}

pub(crate) fn non_negative<T: PartialOrd + Default + fmt::Display>(
    errs: &mut Errors,
    path: FieldPath,
    value: Option<T>,
) {
    if let Some(v) = value {
        if v < T::default() {
            errs.add(path, format!("{v} must be >= 0"));
        }
    }
}
