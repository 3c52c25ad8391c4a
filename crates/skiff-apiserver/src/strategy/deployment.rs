//! A deployment's update rule: its selector is immutable (its pods would be orphaned).

use skiff_api::kinds::Deployment;
use skiff_api::path::FieldPath;
use skiff_api::validate::FieldError;
use skiff_api::{ApiError, Object};

pub fn immutable(current: &Deployment, next: &Deployment) -> Result<(), ApiError> {
    if current.spec.selector == next.spec.selector {
        return Ok(());
    }
    Err(ApiError::invalid(
        &Object::Deployment(current.clone()),
        &[FieldError {
            path: FieldPath::root().at("spec.selector"),
            message: "field is immutable: delete the deployment and create it with the new selector".into(),
        }],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selector_cannot_change() {
        let mut a = Deployment::default();
        a.metadata.name = "web".into();
        a.spec.selector.match_labels.insert("app".into(), "web".into());
        let mut b = a.clone();
        b.spec.replicas = Some(5);
        immutable(&a, &b).expect("replicas may change");
        b.spec.selector.match_labels.insert("app".into(), "other".into());
        let e = immutable(&a, &b).expect_err("refused");
        assert_eq!(e.causes[0].field, "spec.selector");
        assert!(e.message.contains("field is immutable"), "{e}");
    }
}
