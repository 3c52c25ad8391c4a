//! Object metadata as Kubernetes writes it (`metav1.ObjectMeta`), timestamps and the small shared
//! value types (`IntOrString`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `metadata` of every object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Kubernetes accepts it and ignores it on create with a name; Skiff stores it and generates a
    /// name from it when `name` is empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub generate_name: String,
    /// Empty for cluster-scoped kinds; the server fills in `default` for namespaced ones.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Set by the server on create; never changes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    /// The store revision that last wrote the object, as a decimal string (Kubernetes' shape). Sent
    /// back on an update, it makes the update conditional.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_version: String,
    /// Bumped by the server when the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<Time>,
    /// Set when a graceful deletion starts: the time by which the object should be gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_grace_period_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finalizers: Vec<String>,
}

/// Ties a dependant (a pod) to its owner (a deployment): deleting the owner deletes the dependant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_owner_deletion: Option<bool>,
}

/// A point in time with second precision, written as RFC 3339 in UTC (`2026-11-25T14:07:00Z`), as
/// `metav1.Time` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub jiff::Timestamp);

impl Time {
    /// Seconds since the Unix epoch.
    pub fn from_unix(seconds: i64) -> Option<Self> {
        jiff::Timestamp::from_second(seconds).ok().map(Time)
    }

    pub fn unix_seconds(&self) -> i64 {
        self.0.as_second()
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = jiff::Timestamp::from_second(self.0.as_second()).unwrap_or(self.0);
        write!(f, "{whole}")
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<jiff::Timestamp>().map(Time).map_err(|e| {
            serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time such as 2026-11-25T14:07:00Z: {e}"))
        })
    }
}

/// A number or a name: `targetPort: 8080` or `targetPort: http`, `maxSurge: 1` or `maxSurge: 25%`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i32),
    String(String),
}

impl fmt::Display for IntOrString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IntOrString::Int(i) => write!(f, "{i}"),
            IntOrString::String(s) => f.write_str(s),
        }
    }
}

impl IntOrString {
    /// Resolves an absolute number or a percentage of `total`, rounding percentages up or down as
    /// Kubernetes does for maxSurge (up) and maxUnavailable (down).
    pub fn scaled(&self, total: i32, round_up: bool) -> Result<i32, String> {
        match self {
            IntOrString::Int(i) => Ok(*i),
            IntOrString::String(s) => {
                let pct: i64 = s
                    .strip_suffix('%')
                    .and_then(|p| p.parse().ok())
                    .filter(|p| (-1_000_000..=1_000_000).contains(p))
                    .ok_or_else(|| format!("{s:?} must be a number or a percentage such as 25%"))?;
                let product = pct * i64::from(total);
                let value = if round_up { (product + 99) / 100 } else { product / 100 };
                i32::try_from(value).map_err(|_| format!("{s:?} of {total} is out of range"))
            }
        }
    }
}

/// `status: "True" | "False" | "Unknown"` of a condition.
pub const CONDITION_TRUE: &str = "True";
pub const CONDITION_FALSE: &str = "False";
