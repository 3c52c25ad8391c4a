//! Label selectors, as `kubectl -l` writes them (`app=web,tier!=db,env in (prod,qa),!legacy,gpu`)
//! and as objects hold them (`matchLabels` plus `matchExpressions` with `In`, `NotIn`, `Exists`,
//! `DoesNotExist`). Both become one [`Selector`]: a list of requirements that must all hold.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::name::{check_label_key, check_label_value};

/// A label selector as objects hold it (`spec.selector` of a Deployment), in Kubernetes' JSON shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// The selector's requirements, checked. `field` (e.g. `spec.selector`) prefixes error paths.
    pub fn to_selector(&self, field: &str) -> Result<Selector, String> {
        let mut selector = Selector::default();
        for (k, v) in &self.match_labels {
            check_label_key(k).map_err(|e| format!("{field}.matchLabels: {e}"))?;
            check_label_value(v).map_err(|e| format!("{field}.matchLabels.{k}: {e}"))?;
            selector.requirements.push(Requirement { key: k.clone(), op: Operator::In(vec![v.clone()]) });
        }
        for (i, r) in self.match_expressions.iter().enumerate() {
            let path = format!("{field}.matchExpressions[{i}]");
            check_label_key(&r.key).map_err(|e| format!("{path}.key: {e}"))?;
            for (j, v) in r.values.iter().enumerate() {
                check_label_value(v).map_err(|e| format!("{path}.values[{j}]: {e}"))?;
            }
            let needs_values = matches!(r.operator.as_str(), "In" | "NotIn");
            if needs_values && r.values.is_empty() {
                return Err(format!("{path}.values: operator {} needs at least one value", r.operator));
            }
            if !needs_values && !r.values.is_empty() {
                return Err(format!("{path}.values: operator {} takes no values", r.operator));
            }
            let op = match r.operator.as_str() {
                "In" => Operator::In(r.values.clone()),
                "NotIn" => Operator::NotIn(r.values.clone()),
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(format!("{path}.operator: {other:?} is not one of In, NotIn, Exists, DoesNotExist"))
                }
            };
            selector.requirements.push(Requirement { key: r.key.clone(), op });
        }
        Ok(selector)
    }
}

/// How a requirement compares a label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    /// The label is present and its value is one of the values (`=`, `==`, `in`).
    In(Vec<String>),
    /// The label is absent or its value is none of the values (`!=`, `notin`).
    NotIn(Vec<String>),
    /// The label is present, whatever its value.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One condition on one label key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    pub key: String,
    pub op: Operator,
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            Operator::In(values) => value.is_some_and(|v| values.contains(v)),
            Operator::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// All requirements must hold. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
}

/// A selector that cannot be used; the message says where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("label selector {selector:?}: {message}")]
pub struct SelectorError {
    pub selector: String,
    pub message: String,
}

impl Selector {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// `matchLabels`: every key equals its value.
    pub fn from_match_labels(labels: &BTreeMap<String, String>) -> Self {
        let requirements =
            labels.iter().map(|(k, v)| Requirement { key: k.clone(), op: Operator::In(vec![v.clone()]) }).collect();
        Selector { requirements }
    }

    /// Parses the `kubectl -l` syntax.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let fail = |message: String| SelectorError { selector: text.to_string(), message };
        let mut requirements = Vec::new();
        for term in split_terms(text).map_err(fail)? {
            requirements.push(parse_term(term).map_err(fail)?);
        }
        Ok(Selector { requirements })
    }
}

/// Splits on commas that are not inside parentheses.
fn split_terms(text: &str) -> Result<Vec<&str>, String> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(format!("unexpected ')' at position {i}"));
        }
    }
    if depth != 0 {
        return Err("unclosed '('".into());
    }
    terms.push(&text[start..]);
    if terms.len() == 1 && terms[0].trim().is_empty() {
        return Ok(Vec::new());
    }
    Ok(terms)
}

fn key(k: &str) -> Result<String, String> {
    let k = k.trim();
    check_label_key(k)?;
    Ok(k.to_string())
}

fn value(v: &str) -> Result<String, String> {
    let v = v.trim();
    check_label_value(v)?;
    Ok(v.to_string())
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    let t = term.trim();
    if t.is_empty() {
        return Err("empty requirement (two commas in a row?)".into());
    }
    if let Some(k) = t.strip_prefix('!') {
        return Ok(Requirement { key: key(k)?, op: Operator::DoesNotExist });
    }
    if let Some((k, v)) = t.split_once("!=") {
        return Ok(Requirement { key: key(k)?, op: Operator::NotIn(vec![value(v)?]) });
    }
    if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
        return Ok(Requirement { key: key(k)?, op: Operator::In(vec![value(v)?]) });
    }
    if let Some(open) = t.find('(') {
        let head: Vec<&str> = t[..open].split_whitespace().collect();
        let Some(list) = t[open + 1..].strip_suffix(')') else {
            return Err(format!("{t:?}: expected ')' at the end of the value list"));
        };
        let values = list.split(',').map(value).collect::<Result<Vec<_>, _>>()?;
        return match head.as_slice() {
            [k, "in"] => Ok(Requirement { key: key(k)?, op: Operator::In(values) }),
            [k, "notin"] => Ok(Requirement { key: key(k)?, op: Operator::NotIn(values) }),
            _ => Err(format!("{t:?}: expected `KEY in (V1,V2)` or `KEY notin (V1,V2)`")),
        };
    }
    Ok(Requirement { key: key(t)?, op: Operator::Exists })
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match &r.op {
                Operator::In(v) if v.len() == 1 => format!("{}={}", r.key, v[0]),
                Operator::In(v) => format!("{} in ({})", r.key, v.join(",")),
                Operator::NotIn(v) if v.len() == 1 => format!("{}!={}", r.key, v[0]),
                Operator::NotIn(v) => format!("{} notin ({})", r.key, v.join(",")),
                Operator::Exists => r.key.clone(),
                Operator::DoesNotExist => format!("!{}", r.key),
            })
            .collect();
        f.write_str(&terms.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn kubectl_syntax_parses_and_matches() {
        let s = Selector::parse("app=web, tier!=db,env in (prod, qa),!legacy,gpu").expect("valid");
        assert_eq!(s.requirements.len(), 5);
        let ok = labels(&[("app", "web"), ("env", "qa"), ("gpu", "")]);
        assert!(s.matches(&ok));
        let mut with_db = ok.clone();
        with_db.insert("tier".into(), "db".into());
        assert!(!s.matches(&with_db));
        let mut legacy = ok.clone();
        legacy.insert("legacy".into(), "yes".into());
        assert!(!s.matches(&legacy));
        assert!(!s.matches(&labels(&[("app", "web"), ("env", "dev"), ("gpu", "1")])));
        assert_eq!(s.to_string(), "app=web,tier!=db,env in (prod,qa),!legacy,gpu");
    }

    #[test]
    fn notin_matches_absent_labels_and_empty_selector_matches_all() {
        let s = Selector::parse("env notin (prod)").expect("valid");
        assert!(s.matches(&labels(&[])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
        assert!(Selector::parse("").expect("empty").matches(&labels(&[("x", "y")])));
    }

    #[test]
    fn match_labels_become_equality_requirements() {
        let s = Selector::from_match_labels(&labels(&[("app", "nginx")]));
        assert!(s.matches(&labels(&[("app", "nginx"), ("pod-template-hash", "x")])));
        assert!(!s.matches(&labels(&[("app", "other")])));
    }

    #[test]
    fn match_expressions_in_kubernetes_json_shape() {
        let json = r#"{"matchLabels":{"app":"web"},"matchExpressions":[{"key":"tier","operator":"NotIn","values":["db"]},{"key":"gpu","operator":"Exists"}]}"#;
        let ls: LabelSelector = serde_json::from_str(json).expect("parse");
        assert_eq!(serde_json::to_string(&ls).expect("serialize"), json, "round-trips in the same shape");
        let s = ls.to_selector("spec.selector").expect("valid");
        assert!(s.matches(&labels(&[("app", "web"), ("gpu", "1")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("gpu", "1"), ("tier", "db")])));
        let bad = LabelSelector {
            match_expressions: vec![LabelSelectorRequirement {
                key: "x".into(),
                operator: "Maybe".into(),
                values: vec![],
            }],
            ..Default::default()
        };
        let err = bad.to_selector("spec.selector").expect_err("bad operator");
        assert!(err.starts_with("spec.selector.matchExpressions[0].operator"), "{err}");
    }

    #[test]
    fn bad_selectors_say_what_is_wrong() {
        for (bad, hint) in [
            ("app=web,,x", "empty requirement"),
            ("env in (a,b", "unclosed"),
            ("env (a)", "expected `KEY in"),
            ("app=-web", "must be letters"),
            ("bad key=x", "label key"),
        ] {
            let err = Selector::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(hint) && err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }
}
