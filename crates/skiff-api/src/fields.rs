//! Field selectors (`--field-selector spec.nodeName=node1,status.phase!=Running`): equality tests on
//! fields of the object's JSON. Kubernetes allows a few fields per kind; Skiff allows any scalar
//! field, which is a superset.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldRequirement {
    /// Dotted path into the object (`metadata.name`, `spec.nodeName`).
    pub field: String,
    pub equal: bool,
    pub value: String,
}

/// All requirements must hold; empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!(
                    "field selector {text:?}: {term:?} must be field=value, field==value or field!=value"
                ));
            };
            let field = field.trim();
            if field.is_empty() || field.split('.').any(str::is_empty) {
                return Err(format!("field selector {text:?}: {field:?} is not a field path such as spec.nodeName"));
            }
            requirements.push(FieldRequirement { field: field.to_string(), equal, value: value.trim().to_string() });
        }
        Ok(Self { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether `object` (its JSON) satisfies every requirement. A missing field reads as "".
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|r| (field_text(object, &r.field) == r.value) == r.equal)
    }
}

fn field_text(object: &Value, path: &str) -> String {
    let mut v = object;
    for part in path.split('.') {
        match v.get(part) {
            Some(next) => v = next,
            None => return String::new(),
        }
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_selectors_test_equality_and_treat_missing_fields_as_empty() {
        let pod = serde_json::json!({"metadata": {"name": "web"}, "spec": {"nodeName": "node1"}, "status": {"phase": "Running"}});
        assert!(FieldSelector::parse("spec.nodeName=node1").expect("parse").matches(&pod));
        assert!(FieldSelector::parse("spec.nodeName==node1,status.phase!=Pending").expect("parse").matches(&pod));
        assert!(!FieldSelector::parse("metadata.name=db").expect("parse").matches(&pod));
        assert!(FieldSelector::parse("spec.missing=").expect("parse").matches(&pod));
        assert!(FieldSelector::parse("").expect("parse").is_empty());
        assert!(FieldSelector::parse("spec.nodeName").is_err());
        assert!(FieldSelector::parse("spec..x=1").is_err());
    }
}
