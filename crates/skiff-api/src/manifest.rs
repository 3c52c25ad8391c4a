//! Manifests: the YAML or JSON files users apply. Block and flow YAML, comments, several documents
//! per file (`---`, `...`), JSON, and `kind: List`. Every error names the file, line and column;
//! fields Skiff does not know are reported by path, as errors, warnings or not at all.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::kinds::{Kind, Object};
use crate::path::{FieldPath, Segment};
use crate::validate;

/// What to do with fields Skiff does not know (`--validate`, as kubectl has it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownFields {
    /// An error: nothing from the file is applied (`--validate=strict`, the default).
    #[default]
    Strict,
    /// A warning; the field is dropped (`--validate=warn`).
    Warn,
    /// Dropped silently (`--validate=ignore` or `false`).
    Ignore,
}

impl UnknownFields {
    /// Reads kubectl's `--validate` values.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "strict" | "true" => Ok(Self::Strict),
            "warn" => Ok(Self::Warn),
            "ignore" | "false" => Ok(Self::Ignore),
            other => Err(format!("--validate={other:?}: use strict, warn or ignore")),
        }
    }
}

/// A line and column, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub line: u64,
    pub column: u64,
}

impl From<serde_saphyr::Location> for Location {
    fn from(l: serde_saphyr::Location) -> Self {
        Location { line: l.line(), column: l.column() }
    }
}

/// One object read from a file.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub file: String,
    /// Where the object starts.
    pub location: Location,
    pub object: Object,
}

/// Something wrong in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub file: String,
    pub location: Option<Location>,
    /// `Deployment "web"`, when the object is known.
    pub object: Option<String>,
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.location {
            write!(f, ":{}:{}", l.line, l.column)?;
        }
        if let Some(o) = &self.object {
            write!(f, ": {o}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ManifestError {}

/// The objects of one file and the warnings about them.
#[derive(Debug, Default)]
pub struct Loaded {
    pub manifests: Vec<Manifest>,
    pub warnings: Vec<ManifestError>,
}

/// Reads every document of `text` (named `file` in messages), decodes and validates each object.
/// Any error in any document fails the whole file, with every error found.
pub fn load(file: &str, text: &str, unknown_fields: UnknownFields) -> Result<Loaded, Vec<ManifestError>> {
    load_with(file, text, unknown_fields, true)
}

/// Reads the objects of `text` without validating them or minding unknown fields: enough to name
/// them (what `skiff delete -f` needs from a file that may no longer be valid).
pub fn load_names(file: &str, text: &str) -> Result<Vec<Manifest>, Vec<ManifestError>> {
    load_with(file, text, UnknownFields::Ignore, false).map(|l| l.manifests)
}

fn load_with(file: &str, text: &str, unknown_fields: UnknownFields, check: bool) -> Result<Loaded, Vec<ManifestError>> {
    let at = |location: Option<Location>, object: Option<String>, message: String| ManifestError {
        file: file.to_string(),
        location,
        object,
        message,
    };
    let docs = serde_saphyr::from_multiple::<Spanned<Node>>(text).map_err(|e| {
        let message = e.to_string();
        // saphyr's message has its own "line L column C" and a source snippet: keep the reason.
        let first = message.lines().next().unwrap_or_default().trim_start_matches("error: ");
        let reason = match first.strip_prefix("line ") {
            Some(rest) => rest.split_once(": ").map_or(rest, |(_, r)| r),
            None => first,
        };
        let reason = reason.trim_end_matches(", set DuplicateKeyPolicy in Options if acceptable");
        vec![at(e.location().map(Location::from), None, format!("invalid YAML: {reason}"))]
    })?;
    let mut items = Vec::new();
    for doc in docs {
        expand_lists(doc, &mut items);
    }
    let mut loaded = Loaded::default();
    let mut errors = Vec::new();
    for tree in items {
        let start = Location::from(tree.referenced);
        let value = tree.value.to_json();
        let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_string);
        let (Some(api_version), Some(kind_name)) = (field("apiVersion"), field("kind")) else {
            let missing = if field("apiVersion").is_none() { "apiVersion" } else { "kind" };
            errors.push(at(
                Some(start),
                None,
                format!("the document has no {missing}: every object needs apiVersion and kind"),
            ));
            continue;
        };
        let kind = match Kind::from_manifest(&api_version, &kind_name) {
            Ok(k) => k,
            Err(message) => {
                errors.push(at(locate(&tree, &FieldPath::root().at("kind"), false).or(Some(start)), None, message));
                continue;
            }
        };
        let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let what = Some(format!("{kind} {name:?}"));
        let mut unknown = Vec::new();
        let object = match Object::decode(kind, value.clone(), &mut unknown) {
            Ok(o) => o,
            Err(e) => {
                errors.push(at(locate(&tree, &e.path, false).or(Some(start)), what, e.to_string()));
                continue;
            }
        };
        let what = Some(object.describe());
        for path in unknown {
            let message = format!("unknown field \"{path}\": Skiff does not support it");
            match unknown_fields {
                UnknownFields::Strict => errors.push(at(locate(&tree, &path, true), what.clone(), message)),
                UnknownFields::Warn => {
                    loaded.warnings.push(at(locate(&tree, &path, true), what.clone(), format!("{message} (ignored)")))
                }
                UnknownFields::Ignore => {}
            }
        }
        for e in if check { validate::validate(&object) } else { Vec::new() } {
            errors.push(at(locate(&tree, &e.path, false).or(Some(start)), what.clone(), e.to_string()));
        }
        loaded.manifests.push(Manifest { file: file.to_string(), location: start, object });
    }
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors)
    }
}

/// `kind: List` (what `kubectl get -o yaml` writes for several objects) stands for its items.
fn expand_lists(doc: Spanned<Node>, out: &mut Vec<Spanned<Node>>) {
    if matches!(&doc.value, Node::Null) {
        return;
    }
    let is_list = doc.value.get("kind").is_some_and(|k| matches!(&k.value, Node::Str(s) if s == "List"));
    if !is_list {
        out.push(doc);
        return;
    }
    if let Node::Map(entries) = doc.value {
        for (key, value) in entries {
            if key.value == "items" {
                if let Node::Seq(items) = value.value {
                    for item in items {
                        expand_lists(item, out);
                    }
                }
            }
        }
    }
}

/// Where `path` is in the document: the value of the last field found on the way (or its key, with
/// `at_key`, for a field that should not be there).
fn locate(tree: &Spanned<Node>, path: &FieldPath, at_key: bool) -> Option<Location> {
    let mut node = tree;
    let mut found = Location::from(tree.referenced);
    for seg in &path.0 {
        match (seg, &node.value) {
            (Segment::Key(k), Node::Map(entries)) => match entries.iter().find(|(key, _)| &key.value == k) {
                Some((key, value)) => {
                    found = Location::from(if at_key { key.referenced } else { value.referenced });
                    node = value;
                }
                None => break,
            },
            (Segment::Index(i), Node::Seq(items)) => match items.get(*i) {
                Some(item) => {
                    found = Location::from(item.referenced);
                    node = item;
                }
                None => break,
            },
            _ => break,
        }
    }
    Some(found)
}

/// A YAML node with the location of every value and key, so that a field path can be traced back
/// to its line and column.
#[derive(Debug)]
enum Node {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Node>>),
    Map(Vec<(Spanned<String>, Spanned<Node>)>),
}

impl Node {
    fn get(&self, key: &str) -> Option<&Spanned<Node>> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k.value == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::from(*i),
            Node::UInt(u) => Value::from(*u),
            Node::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Node::Str(s) => Value::String(s.clone()),
            Node::Seq(items) => Value::Array(items.iter().map(|i| i.value.to_json()).collect()),
            Node::Map(entries) => {
                Value::Object(entries.iter().map(|(k, v)| (k.value.clone(), v.value.to_json())).collect())
            }
        }
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NodeVisitor;
        impl<'de> Visitor<'de> for NodeVisitor {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a YAML value")
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Null)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Node, D2::Error> {
                Node::deserialize(d)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
                Ok(Node::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
                Ok(Node::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
                Ok(Node::UInt(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
                Ok(Node::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Node, E> {
                Ok(Node::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Node, E> {
                Ok(Node::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Node::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
                let mut entries: Vec<(Spanned<String>, Spanned<Node>)> = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    if entries.iter().any(|(k, _)| k.value == key.value) {
                        return Err(serde::de::Error::custom(format!(
                            "key {:?} appears twice in one mapping (line {})",
                            key.value,
                            key.referenced.line()
                        )));
                    }
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(Node::Map(entries))
            }
        }
        d.deserialize_any(NodeVisitor)
    }
}
