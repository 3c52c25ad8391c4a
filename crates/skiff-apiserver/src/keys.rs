//! Where objects live in the key-value store and how they are stored: `/<plural>/<namespace>/<name>`
//! for namespaced kinds, `/<plural>/<name>` for cluster-scoped ones, the object's JSON as the
//! value, and its resourceVersion as the key's revision (never inside the stored JSON).

use skiff_api::api::Filter;
use skiff_api::{ApiError, Kind, Object};
use skiff_store::KeyValue;

/// The store key of an object: `/pods/default/web`, `/nodes/node1`.
pub fn object_key(kind: Kind, namespace: &str, name: &str) -> String {
    if kind.namespaced() {
        format!("/{}/{namespace}/{name}", kind.info().plural)
    } else {
        format!("/{}/{name}", kind.info().plural)
    }
}

/// The key of `object`.
pub fn key_of(object: &Object) -> String {
    let m = object.meta();
    object_key(object.kind(), &m.namespace, &m.name)
}

/// The key prefix of a kind, in one namespace or in all.
pub fn kind_prefix(kind: Kind, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if kind.namespaced() => format!("/{}/{ns}/", kind.info().plural),
        _ => format!("/{}/", kind.info().plural),
    }
}

/// A stored object, with its resourceVersion set from the key's revision.
pub fn decode(kv: &KeyValue) -> Result<Object, ApiError> {
    let decoded = match kind_of_key(&kv.key) {
        Some(kind) => Object::from_trusted_json_of(kind, &kv.value),
        None => Object::from_trusted_json(&kv.value),
    };
    let mut object =
        decoded.map_err(|e| ApiError::internal(format!("stored object {} cannot be read: {e}", kv.key)))?;
    object.meta_mut().resource_version = kv.mod_revision.to_string();
    Ok(object)
}

/// The stored object decoded for a reader with `filter`: its metadata only when that is all the
/// reader asks for and all the filter needs (a field selector needs the whole object).
pub fn decode_lean(kv: &KeyValue, filter: &Filter) -> Result<Object, ApiError> {
    match kind_of_key(&kv.key) {
        Some(kind) if filter.metadata_only && filter.fields.is_empty() => {
            let mut object = Object::metadata_from_trusted_json(kind, &kv.value)
                .map_err(|e| ApiError::internal(format!("stored object {} cannot be read: {e}", kv.key)))?;
            object.meta_mut().resource_version = kv.mod_revision.to_string();
            Ok(object)
        }
        _ => decode(kv),
    }
}

/// An object from [`decode_lean`] as the reader receives it.
pub fn shaped(filter: &Filter, object: Object) -> Object {
    if filter.metadata_only && !filter.fields.is_empty() {
        filter.shape(object)
    } else {
        object
    }
}

/// The stored object as a reader with `filter` receives it, `None` when the filter does not
/// select it.
pub fn decode_for(kv: &KeyValue, filter: &Filter) -> Result<Option<Object>, ApiError> {
    let object = decode_lean(kv, filter)?;
    Ok(filter.matches(&object).then(|| shaped(filter, object)))
}

/// The kind whose objects live under `key` (`/pods/default/web` -> Pod).
pub fn kind_of_key(key: &str) -> Option<Kind> {
    Kind::from_plural(key.strip_prefix('/')?.split('/').next()?)
}

/// The stored form: the resourceVersion is the key's revision, so it is not stored inside.
pub fn encode(object: &Object) -> Vec<u8> {
    let mut stored = object.clone();
    stored.meta_mut().resource_version.clear();
    stored.to_json()
}

/// The resourceVersion a caller sent, if any.
pub fn resource_version(object: &Object) -> Result<Option<u64>, ApiError> {
    let rv = &object.meta().resource_version;
    if rv.is_empty() {
        return Ok(None);
    }
    rv.parse::<u64>().map(Some).map_err(|_| {
        ApiError::bad_request(format!(
            "{}: metadata.resourceVersion {rv:?} is not a resourceVersion this server issued",
            object.describe()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaced_kinds_have_the_namespace_in_their_key_cluster_scoped_ones_do_not() {
        assert_eq!(object_key(Kind::Pod, "default", "web"), "/pods/default/web");
        assert_eq!(object_key(Kind::Node, "ignored", "node1"), "/nodes/node1");
        assert_eq!(kind_prefix(Kind::Pod, Some("prod")), "/pods/prod/");
        assert_eq!(kind_prefix(Kind::Pod, None), "/pods/");
        assert_eq!(kind_prefix(Kind::Namespace, Some("prod")), "/namespaces/");
        assert_eq!(kind_of_key("/pods/default/web"), Some(Kind::Pod));
        assert_eq!(kind_of_key("/nodes/node1"), Some(Kind::Node));
        assert_eq!(kind_of_key("/nothing/x"), None);
    }

    #[test]
    fn the_resource_version_is_the_revision_not_part_of_the_stored_json() {
        let mut cm = skiff_api::kinds::ConfigMap::default();
        cm.metadata.name = "c".into();
        cm.metadata.namespace = "default".into();
        cm.metadata.resource_version = "7".into();
        let stored = encode(&Object::ConfigMap(cm));
        assert!(!String::from_utf8_lossy(&stored).contains("resourceVersion"));
        let kv = KeyValue { key: "/configmaps/default/c".into(), value: stored, create_revision: 3, mod_revision: 9 };
        assert_eq!(decode(&kv).expect("decode").meta().resource_version, "9");
    }
}
