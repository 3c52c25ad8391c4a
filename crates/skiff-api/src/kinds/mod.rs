//! The kinds Skiff serves, each in its own module, and [`Object`]: any one of them with its
//! `apiVersion` and `kind`.

/// `metadata()` and `metadata_mut()` of a [`Resource`] whose metadata is its `metadata` field.
macro_rules! metadata_field {
    () => {
        fn metadata(&self) -> &ObjectMeta {
            &self.metadata
        }

        fn metadata_mut(&mut self) -> &mut ObjectMeta {
            &mut self.metadata
        }
    };
}

pub mod config_map;
pub mod deployment;
pub mod endpoint_slice;
pub mod event;
pub mod namespace;
pub mod node;
pub mod pod;
pub mod replica_set;
pub mod service;

use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Value;

pub use config_map::ConfigMap;
pub use deployment::Deployment;
pub use endpoint_slice::EndpointSlice;
pub use event::Event;
pub use namespace::Namespace;
pub use node::Node;
pub use pod::Pod;
pub use replica_set::ReplicaSet;
pub use service::Service;

use crate::meta::ObjectMeta;
use crate::path::FieldPath;
use crate::validate::Errors;

/// What every kind is and does: its [`Kind`] (name, plural, namespaced), its metadata, which part
/// of it is the desired state, its status, Kubernetes' defaults and its own validation. Each
/// `kinds/<kind>.rs` implements it beside the kind's types; [`Object`] dispatches to it.
pub trait Resource: Clone + PartialEq {
    const KIND: Kind;
    /// Whether the kind has a `status` written through the status call.
    const HAS_STATUS: bool;

    fn metadata(&self) -> &ObjectMeta;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;

    /// Whether the user-declared parts (everything but `metadata` and `status`) are equal: a
    /// change here bumps `metadata.generation`.
    fn same_desired_state(&self, other: &Self) -> bool;

    /// Replaces this object's status with `other`'s (nothing for kinds without one).
    fn copy_status_from(&mut self, _other: &Self) {}

    /// Fills in the kind's defaults (the namespace is done for every kind).
    fn apply_defaults(&mut self) {}

    /// The kind's own checks (the metadata and the size are checked for every kind), errors
    /// added to `errs` with paths under `root`.
    fn validate(&self, _errs: &mut Errors, _root: &FieldPath) {}
}

/// A kind Skiff knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    Namespace,
    Node,
    Pod,
    Deployment,
    ReplicaSet,
    Service,
    ConfigMap,
    Event,
    EndpointSlice,
}

/// How a kind is named and where it lives: what `skiff api-resources` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    pub kind: &'static str,
    pub api_version: &'static str,
    /// Lower-case plural: the resource name in URLs, store keys and `skiff get pods`.
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    /// Namespaced kinds have a namespace in their key; cluster-scoped ones (Node, Namespace) do not.
    pub namespaced: bool,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::ConfigMap,
        Kind::EndpointSlice,
        Kind::Event,
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::Service,
        Kind::Deployment,
        Kind::ReplicaSet,
    ];

    pub fn info(self) -> KindInfo {
        let (kind, api_version, plural, singular, short_names, namespaced): (_, _, _, _, &'static [&'static str], _) =
            match self {
                Kind::Namespace => ("Namespace", "v1", "namespaces", "namespace", &["ns"], false),
                Kind::Node => ("Node", "v1", "nodes", "node", &["no"], false),
                Kind::Pod => ("Pod", "v1", "pods", "pod", &["po"], true),
                Kind::Deployment => ("Deployment", "apps/v1", "deployments", "deployment", &["deploy"], true),
                Kind::ReplicaSet => ("ReplicaSet", "apps/v1", "replicasets", "replicaset", &["rs"], true),
                Kind::Service => ("Service", "v1", "services", "service", &["svc"], true),
                Kind::ConfigMap => ("ConfigMap", "v1", "configmaps", "configmap", &["cm"], true),
                Kind::Event => ("Event", "v1", "events", "event", &["ev"], true),
                Kind::EndpointSlice => {
                    ("EndpointSlice", "discovery.k8s.io/v1", "endpointslices", "endpointslice", &[], true)
                }
            };
        KindInfo { kind, api_version, plural, singular, short_names, namespaced }
    }

    pub fn name(self) -> &'static str {
        self.info().kind
    }

    pub fn namespaced(self) -> bool {
        self.info().namespaced
    }

    /// Finds a kind by what users type: `Pod`, `pod`, `pods`, `po`, or `deployments.apps`.
    pub fn lookup(text: &str) -> Option<Kind> {
        let lower = text.to_ascii_lowercase();
        let bare = lower.strip_suffix(".apps").or_else(|| lower.strip_suffix(".discovery.k8s.io")).unwrap_or(&lower);
        Kind::ALL.into_iter().find(|k| {
            let i = k.info();
            i.kind.eq_ignore_ascii_case(bare) || i.plural == bare || i.singular == bare || i.short_names.contains(&bare)
        })
    }

    /// Finds a kind by `apiVersion` and `kind` as a manifest writes them.
    pub fn from_manifest(api_version: &str, kind: &str) -> Result<Kind, String> {
        let found = Kind::ALL.into_iter().find(|k| k.info().kind == kind).ok_or_else(|| {
            format!("unknown kind {kind:?}: Skiff serves {}", Kind::ALL.map(|k| k.info().kind).join(", "))
        })?;
        let expected = found.info().api_version;
        if api_version != expected {
            return Err(format!("{kind} is served as apiVersion {expected:?}, not {api_version:?}"));
        }
        Ok(found)
    }

    /// Finds a kind by its plural, as in store keys and URLs (`pods`).
    pub fn from_plural(plural: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.info().plural == plural)
    }

    /// The kinds a user can type, for error messages.
    pub fn list_names() -> String {
        Kind::ALL.map(|k| k.info().plural).join(", ")
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An object of any kind.
// Variants differ in size (a Deployment is larger than a Namespace); objects are built once per
// request and matched everywhere, so plain variants read better than boxes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    Node(Node),
    Pod(Pod),
    Deployment(Deployment),
    ReplicaSet(ReplicaSet),
    Service(Service),
    ConfigMap(ConfigMap),
    Event(Event),
    EndpointSlice(EndpointSlice),
}

macro_rules! each_kind {
    ($obj:expr, $inner:ident => $body:expr) => {
        match $obj {
            Object::Namespace($inner) => $body,
            Object::Node($inner) => $body,
            Object::Pod($inner) => $body,
            Object::Deployment($inner) => $body,
            Object::ReplicaSet($inner) => $body,
            Object::Service($inner) => $body,
            Object::ConfigMap($inner) => $body,
            Object::Event($inner) => $body,
            Object::EndpointSlice($inner) => $body,
        }
    };
}

/// Runs `$body` with `$a` and `$b` bound to two objects of the same kind, `$other` otherwise.
macro_rules! each_pair {
    ($x:expr, $y:expr, ($a:ident, $b:ident) => $body:expr, $other:expr) => {
        match ($x, $y) {
            (Object::Namespace($a), Object::Namespace($b)) => $body,
            (Object::Node($a), Object::Node($b)) => $body,
            (Object::Pod($a), Object::Pod($b)) => $body,
            (Object::Deployment($a), Object::Deployment($b)) => $body,
            (Object::ReplicaSet($a), Object::ReplicaSet($b)) => $body,
            (Object::Service($a), Object::Service($b)) => $body,
            (Object::ConfigMap($a), Object::ConfigMap($b)) => $body,
            (Object::Event($a), Object::Event($b)) => $body,
            (Object::EndpointSlice($a), Object::EndpointSlice($b)) => $body,
            _ => $other,
        }
    };
}

/// The wire shape: `apiVersion` and `kind` beside the object's own fields.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Typed<'a, T> {
    api_version: &'static str,
    kind: &'static str,
    #[serde(flatten)]
    inner: &'a T,
}

impl Serialize for Object {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let info = self.kind().info();
        each_kind!(self, o => Typed { api_version: info.api_version, kind: info.kind, inner: o }.serialize(s))
    }
}

impl Object {
    pub fn kind(&self) -> Kind {
        fn kind_of<R: Resource>(_: &R) -> Kind {
            R::KIND
        }
        each_kind!(self, o => kind_of(o))
    }

    pub fn meta(&self) -> &ObjectMeta {
        each_kind!(self, o => o.metadata())
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        each_kind!(self, o => o.metadata_mut())
    }

    /// `Pod "web"` or `Pod "web" in namespace "prod"`, for messages.
    pub fn describe(&self) -> String {
        let m = self.meta();
        let name =
            if m.name.is_empty() { format!("(generateName {:?})", m.generate_name) } else { format!("{:?}", m.name) };
        if self.kind().namespaced() && !m.namespace.is_empty() && m.namespace != "default" {
            format!("{} {name} in namespace {:?}", self.kind(), m.namespace)
        } else {
            format!("{} {name}", self.kind())
        }
    }

    /// The object as Kubernetes' JSON.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes an object of a known kind from its JSON fields (`apiVersion` and `kind` may be
    /// present or not). Fields the kind does not have are reported to `unknown` as paths
    /// (`spec.containers[0].volumeMounts`) and skipped.
    pub fn decode(kind: Kind, mut value: Value, unknown: &mut Vec<FieldPath>) -> Result<Object, DecodeError> {
        if let Value::Object(map) = &mut value {
            map.remove("apiVersion");
            map.remove("kind");
        }
        fn typed<T: serde::de::DeserializeOwned>(value: Value, unknown: &mut Vec<FieldPath>) -> Result<T, DecodeError> {
            let mut record = |path: serde_ignored::Path<'_>| unknown.push(crate::path::from_ignored(&path));
            let ignoring = serde_ignored::Deserializer::new(value, &mut record);
            serde_path_to_error::deserialize(ignoring).map_err(|e| DecodeError {
                path: crate::path::from_path_to_error(e.path()),
                message: e.inner().to_string(),
            })
        }
        Ok(match kind {
            Kind::Namespace => Object::Namespace(typed(value, unknown)?),
            Kind::Node => Object::Node(typed(value, unknown)?),
            Kind::Pod => Object::Pod(typed(value, unknown)?),
            Kind::Deployment => Object::Deployment(typed(value, unknown)?),
            Kind::ReplicaSet => Object::ReplicaSet(typed(value, unknown)?),
            Kind::Service => Object::Service(typed(value, unknown)?),
            Kind::ConfigMap => Object::ConfigMap(typed(value, unknown)?),
            Kind::Event => Object::Event(typed(value, unknown)?),
            Kind::EndpointSlice => Object::EndpointSlice(typed(value, unknown)?),
        })
    }

    /// Decodes sent JSON strictly: `apiVersion` and `kind` must name a known kind and every field
    /// must be known. Reads the bytes directly (no intermediate JSON tree).
    pub fn from_json(bytes: &[u8]) -> Result<Object, String> {
        let kind = peek_kind(bytes)?;
        let mut unknown = Vec::new();
        let mut record = |path: serde_ignored::Path<'_>| {
            let path = crate::path::from_ignored(&path);
            let at_root = |name: &str| path.0.len() == 1 && path.0[0] == crate::path::Segment::Key(name.into());
            if !at_root("apiVersion") && !at_root("kind") {
                unknown.push(path);
            }
        };
        let object = {
            let mut json = serde_json::Deserializer::from_slice(bytes);
            let ignoring = serde_ignored::Deserializer::new(&mut json, &mut record);
            let decoded = match kind {
                Kind::Namespace => serde_path_to_error::deserialize(ignoring).map(Object::Namespace),
                Kind::Node => serde_path_to_error::deserialize(ignoring).map(Object::Node),
                Kind::Pod => serde_path_to_error::deserialize(ignoring).map(Object::Pod),
                Kind::Deployment => serde_path_to_error::deserialize(ignoring).map(Object::Deployment),
                Kind::ReplicaSet => serde_path_to_error::deserialize(ignoring).map(Object::ReplicaSet),
                Kind::Service => serde_path_to_error::deserialize(ignoring).map(Object::Service),
                Kind::ConfigMap => serde_path_to_error::deserialize(ignoring).map(Object::ConfigMap),
                Kind::Event => serde_path_to_error::deserialize(ignoring).map(Object::Event),
                Kind::EndpointSlice => serde_path_to_error::deserialize(ignoring).map(Object::EndpointSlice),
            };
            decoded.map_err(|e| {
                let name = peek(bytes).map(|p| p.metadata.name).unwrap_or_default();
                let error =
                    DecodeError { path: crate::path::from_path_to_error(e.path()), message: e.inner().to_string() };
                format!("{kind} {name:?}: {error}")
            })?
        };
        if !unknown.is_empty() {
            let list: Vec<String> = unknown.iter().map(|p| p.to_string()).collect();
            return Err(format!("{}: unknown field(s) {}", object.describe(), list.join(", ")));
        }
        Ok(object)
    }

    /// Decodes JSON this server wrote itself (stored objects): the fast path, without tracking
    /// paths or unknown fields.
    pub fn from_trusted_json(bytes: &[u8]) -> Result<Object, String> {
        Object::from_trusted_json_of(peek_kind(bytes)?, bytes)
    }

    /// [`Object::from_trusted_json`] when the kind is known (a stored object's key names it):
    /// one pass over the bytes instead of two.
    pub fn from_trusted_json_of(kind: Kind, bytes: &[u8]) -> Result<Object, String> {
        let decoded = match kind {
            Kind::Namespace => serde_json::from_slice(bytes).map(Object::Namespace),
            Kind::Node => serde_json::from_slice(bytes).map(Object::Node),
            Kind::Pod => serde_json::from_slice(bytes).map(Object::Pod),
            Kind::Deployment => serde_json::from_slice(bytes).map(Object::Deployment),
            Kind::ReplicaSet => serde_json::from_slice(bytes).map(Object::ReplicaSet),
            Kind::Service => serde_json::from_slice(bytes).map(Object::Service),
            Kind::ConfigMap => serde_json::from_slice(bytes).map(Object::ConfigMap),
            Kind::Event => serde_json::from_slice(bytes).map(Object::Event),
            Kind::EndpointSlice => serde_json::from_slice(bytes).map(Object::EndpointSlice),
        };
        decoded.map_err(|e| format!("{kind}: {e}"))
    }

    /// An object of `kind` with `metadata` and nothing else: what a metadata-only read returns.
    pub fn from_metadata(kind: Kind, metadata: ObjectMeta) -> Object {
        fn with<R: Resource + Default>(metadata: ObjectMeta) -> R {
            let mut r = R::default();
            *r.metadata_mut() = metadata;
            r
        }
        match kind {
            Kind::Namespace => Object::Namespace(with(metadata)),
            Kind::Node => Object::Node(with(metadata)),
            Kind::Pod => Object::Pod(with(metadata)),
            Kind::Deployment => Object::Deployment(with(metadata)),
            Kind::ReplicaSet => Object::ReplicaSet(with(metadata)),
            Kind::Service => Object::Service(with(metadata)),
            Kind::ConfigMap => Object::ConfigMap(with(metadata)),
            Kind::Event => Object::Event(with(metadata)),
            Kind::EndpointSlice => Object::EndpointSlice(with(metadata)),
        }
    }

    /// [`Object::from_trusted_json_of`] reading the metadata only (the rest is skipped).
    pub fn metadata_from_trusted_json(kind: Kind, bytes: &[u8]) -> Result<Object, String> {
        #[derive(serde::Deserialize)]
        struct MetadataOnly {
            #[serde(default)]
            metadata: ObjectMeta,
        }
        let only: MetadataOnly = serde_json::from_slice(bytes).map_err(|e| format!("{kind}: {e}"))?;
        Ok(Object::from_metadata(kind, only.metadata))
    }

    /// Whether the user-declared parts (everything but `metadata` and `status`) are equal: a
    /// change here bumps `metadata.generation`. Objects of different kinds never are.
    pub fn same_desired_state(&self, other: &Object) -> bool {
        each_pair!(self, other, (a, b) => a.same_desired_state(b), false)
    }

    /// Whether the kind has a `status` written through the status call.
    pub fn has_status(kind: Kind) -> bool {
        match kind {
            Kind::Namespace => Namespace::HAS_STATUS,
            Kind::Node => Node::HAS_STATUS,
            Kind::Pod => Pod::HAS_STATUS,
            Kind::Deployment => Deployment::HAS_STATUS,
            Kind::ReplicaSet => ReplicaSet::HAS_STATUS,
            Kind::Service => Service::HAS_STATUS,
            Kind::ConfigMap => ConfigMap::HAS_STATUS,
            Kind::Event => Event::HAS_STATUS,
            Kind::EndpointSlice => EndpointSlice::HAS_STATUS,
        }
    }

    /// Replaces this object's status with `other`'s (same kind; otherwise nothing changes).
    pub fn copy_status_from(&mut self, other: &Object) {
        each_pair!(self, other, (a, b) => a.copy_status_from(b), ())
    }

    /// Fills in the defaults of the object's kind.
    pub(crate) fn apply_kind_defaults(&mut self) {
        each_kind!(self, o => o.apply_defaults())
    }

    /// Runs the validation of the object's kind.
    pub(crate) fn validate_kind(&self, errs: &mut Errors, root: &FieldPath) {
        each_kind!(self, o => o.validate(errs, root))
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Peek {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    metadata: PeekMeta,
}

#[derive(serde::Deserialize, Default)]
struct PeekMeta {
    #[serde(default)]
    name: String,
}

fn peek(bytes: &[u8]) -> Result<Peek, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("not a JSON object: {e}"))
}

/// `apiVersion` and `kind` of an object's JSON, read without decoding the rest.
fn peek_kind(bytes: &[u8]) -> Result<Kind, String> {
    let p = peek(bytes)?;
    Kind::from_manifest(&p.api_version, &p.kind)
}

/// A field that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct DecodeError {
    /// Where, as `spec.containers[0].ports[0].containerPort`; empty for the object itself.
    pub path: FieldPath,
    pub message: String,
}
