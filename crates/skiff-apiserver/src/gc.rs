//! Cascading deletion by owner reference: which objects go with an owner (its dependants,
//! transitively, and everything in a deleted namespace), in the same write as the owner. Objects
//! that lost their owner otherwise are the garbage collector's (skiff-control). Pure: callers read
//! the candidates and write the deletions.

use std::collections::BTreeSet;

use skiff_api::{Kind, Object};

/// The dependants of `owner` among `candidates` (each with its revision): objects whose
/// `ownerReferences` name it, then theirs, and so on. A namespace owns everything in it.
pub fn dependants<'a>(owner: &Object, candidates: &'a [(Object, u64)]) -> Vec<&'a (Object, u64)> {
    if owner.kind() == Kind::Namespace {
        let ns = &owner.meta().name;
        return candidates.iter().filter(|(o, _)| o.kind().namespaced() && o.meta().namespace == *ns).collect();
    }
    let mut found: Vec<&(Object, u64)> = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut owners = vec![owner.meta().uid.as_str()];
    while let Some(uid) = owners.pop() {
        for candidate in candidates {
            let meta = candidate.0.meta();
            if meta.owner_references.iter().any(|r| r.uid == uid) && seen.insert(meta.uid.as_str()) {
                owners.push(meta.uid.as_str());
                found.push(candidate);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_api::kinds::{ConfigMap, Namespace};
    use skiff_api::meta::OwnerReference;

    fn cm(name: &str, uid: &str, owner: Option<&str>) -> Object {
        let mut c = ConfigMap::default();
        c.metadata.name = name.into();
        c.metadata.namespace = "default".into();
        c.metadata.uid = uid.into();
        if let Some(owner) = owner {
            c.metadata.owner_references.push(OwnerReference { uid: owner.into(), ..Default::default() });
        }
        Object::ConfigMap(c)
    }

    #[test]
    fn dependants_are_found_transitively_once_each() {
        let owner = cm("a", "ua", None);
        let candidates = vec![
            (cm("b", "ub", Some("ua")), 2),
            (cm("c", "uc", Some("ub")), 3),
            (cm("d", "ud", Some("zz")), 4),
            (cm("e", "ue", Some("ua")), 5),
        ];
        let names: Vec<&str> = dependants(&owner, &candidates).iter().map(|(o, _)| o.meta().name.as_str()).collect();
        assert_eq!(names, ["b", "e", "c"]);
    }

    #[test]
    fn a_namespace_owns_everything_in_it() {
        let mut ns = Namespace::default();
        ns.metadata.name = "default".into();
        let candidates = vec![(cm("b", "ub", None), 2)];
        assert_eq!(dependants(&Object::Namespace(ns), &candidates).len(), 1);
    }
}
