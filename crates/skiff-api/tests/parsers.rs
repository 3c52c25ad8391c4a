//! Every parser of user input fed arbitrary text and structures (issue 12): manifests, label and
//! field selectors, quantities. No panic; an error names what is wrong; what parses prints back to
//! the same value.

use proptest::prelude::*;
use skiff_api::fields::FieldSelector;
use skiff_api::manifest::{load, load_names, UnknownFields};
use skiff_api::quantity::Quantity;
use skiff_api::selector::Selector;

/// Text that looks like a manifest often enough to reach the decoders behind the YAML parser.
fn manifest_text() -> impl Strategy<Value = String> {
    let kinds = prop_oneof![
        Just("v1/Pod"),
        Just("v1/Service"),
        Just("apps/v1/Deployment"),
        Just("v1/ConfigMap"),
        Just("discovery.k8s.io/v1/EndpointSlice"),
        Just("v1/Nope"),
    ];
    let value = prop_oneof![
        Just("1".to_string()),
        Just("-1".to_string()),
        Just("\"x\"".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("null".to_string()),
        Just("{a: [1, {b: c}]}".to_string()),
        "[a-zA-Z0-9 :{}\\[\\],\"'-]{0,24}",
    ];
    let name = prop_oneof![
        Just("name".to_string()),
        Just("replicas".to_string()),
        Just("ports".to_string()),
        Just("containers".to_string()),
        Just("selector".to_string()),
        Just("data".to_string()),
        "[a-z]{1,8}",
    ];
    let field = (name, value);
    (kinds, proptest::collection::vec(field, 0..6), any::<bool>()).prop_map(|(kind, fields, spec)| {
        let (api, kind) = kind.rsplit_once('/').unwrap_or(("v1", kind));
        let mut text = format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\n");
        if spec {
            text.push_str("spec:\n");
        }
        for (name, value) in fields {
            text.push_str(&format!("{}{name}: {value}\n", if spec { "  " } else { "" }));
        }
        text
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn manifests_load_or_fail_with_the_file_named(text in prop_oneof![manifest_text(), ".{0,200}"]) {
        if let Err(errors) = load("in.yaml", &text, UnknownFields::Strict) {
            prop_assert!(!errors.is_empty());
            for e in errors {
                prop_assert!(e.to_string().starts_with("in.yaml"), "{e}");
            }
        }
        let _ = load_names("in.yaml", &text);
    }

    #[test]
    fn selectors_parse_or_say_why(text in prop_oneof!["[a-z0-9=!,() .-]{0,40}", ".{0,40}"]) {
        if let Ok(selector) = Selector::parse(&text) {
            // What parsed matches deterministically (and does not panic) on any labels.
            let labels = std::collections::BTreeMap::from([("app".to_string(), "web".to_string())]);
            let first = selector.matches(&labels);
            prop_assert_eq!(first, selector.matches(&labels));
        } else if let Err(e) = Selector::parse(&text) {
            prop_assert!(!e.to_string().is_empty());
        }
        if let Err(e) = FieldSelector::parse(&text) {
            prop_assert!(!e.is_empty());
        }
    }

    #[test]
    fn quantities_parse_or_say_why_and_print_back_to_themselves(
        text in prop_oneof!["[0-9]{0,12}(\\.[0-9]{0,4})?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei|e[0-9]{1,3})?", ".{0,20}"],
    ) {
        match Quantity::parse(&text) {
            Ok(q) => {
                let again = Quantity::parse(&q.to_string());
                prop_assert_eq!(again.map(|a| a.millis()).ok(), Some(q.millis()), "{} printed as {}", text, q);
            }
            Err(e) => prop_assert!(e.to_string().contains(&format!("{text:?}")), "{e}"),
        }
    }
}
