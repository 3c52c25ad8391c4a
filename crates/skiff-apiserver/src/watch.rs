//! Store changes as Kubernetes watch events, from this member's replica.
//!
//! An unfiltered watch sees ADDED for a new key, MODIFIED for a changed one and DELETED for a
//! removed one. A watch with a label or field selector sees what a client that listed with the same
//! selector must see to stay right: ADDED when an object starts matching (created, or changed into
//! the selector), MODIFIED while it keeps matching, and DELETED when it is removed or stops
//! matching (with its new state), as Kubernetes' watch cache does. Whether an object matched before
//! a change is read from the value it had at the change's previous revision, once per key; a key
//! whose previous value is no longer in the store's history counts as having matched (a spurious
//! DELETED is harmless to a client, a missing one leaves it a ghost).

use std::collections::HashMap;

use futures::StreamExt;
use skiff_api::api::{Filter, WatchEvent, WatchOptions, WatchStream};
use skiff_api::{ApiError, Kind};
use skiff_store::watch::WatchItem;
use skiff_store::{Change, ChangeKind, KvStore, StoreError};

use crate::error::watch_error;
use crate::keys::{decode_lean, kind_prefix, shaped};

/// Starts a watch of `kind` on `store` (this member's replica).
pub fn start(store: &KvStore, kind: Kind, options: WatchOptions) -> Result<WatchStream, StoreError> {
    let start = if options.resource_version == 0 { store.applied_revision() } else { options.resource_version };
    let prefix = kind_prefix(kind, options.filter.namespace.as_deref());
    let rx = store.watch(&prefix, start, options.bookmark_every)?;
    let translator = Translator::new(store.clone(), options.filter);
    let stream = futures::stream::unfold((rx, translator, false), |(mut rx, mut translator, ended)| async move {
        if ended {
            return None;
        }
        loop {
            let item = rx.recv().await?;
            match item {
                Ok(WatchItem::Progress(revision)) => {
                    return Some((Ok(WatchEvent::Bookmark(revision)), (rx, translator, false)))
                }
                Ok(WatchItem::Change(change)) => match translator.translate(&change) {
                    Ok(None) => continue,
                    Ok(Some(event)) => return Some((Ok(event), (rx, translator, false))),
                    Err(e) => return Some((Err(e), (rx, translator, true))),
                },
                Err(e) => return Some((Err(watch_error(e)), (rx, translator, true))),
            }
        }
    });
    Ok(stream.boxed())
}

/// Turns one watch's store changes into events.
pub struct Translator {
    store: KvStore,
    filter: Filter,
    /// Whether the selector matched each key the last time this watch saw it.
    matched: HashMap<String, bool>,
}

impl Translator {
    pub fn new(store: KvStore, filter: Filter) -> Self {
        Translator { store, filter, matched: HashMap::new() }
    }

    fn selects_all(&self) -> bool {
        self.filter.labels.requirements.is_empty() && self.filter.fields.is_empty()
    }

    /// The event for `change`, if this watch sees one.
    pub fn translate(&mut self, change: &Change) -> Result<Option<WatchEvent>, ApiError> {
        let mut object = decode_lean(&change.kv, &self.filter)?;
        if change.kind == ChangeKind::Delete {
            // A deletion's value is the object's last state, with the revision of the deletion.
            object.meta_mut().resource_version = change.revision.to_string();
            self.matched.remove(&change.kv.key);
            let selected = self.filter.matches(&object);
            return Ok(selected.then(|| WatchEvent::Deleted(shaped(&self.filter, object))));
        }
        if self.selects_all() {
            let created = change.kv.create_revision == change.kv.mod_revision;
            return Ok(Some(if created { WatchEvent::Added(object) } else { WatchEvent::Modified(object) }));
        }
        let now = self.filter.matches(&object);
        let before = self.matched_before(change)?;
        self.matched.insert(change.kv.key.clone(), now);
        let object = shaped(&self.filter, object);
        Ok(match (before, now) {
            (true, true) => Some(WatchEvent::Modified(object)),
            (false, true) => Some(WatchEvent::Added(object)),
            (true, false) => Some(WatchEvent::Deleted(object)),
            (false, false) => None,
        })
    }

    /// Whether the key matched before `change`: as this watch last saw it, else by its previous value.
    fn matched_before(&self, change: &Change) -> Result<bool, ApiError> {
        if let Some(matched) = self.matched.get(&change.kv.key) {
            return Ok(*matched);
        }
        let Some(prev) = change.prev_revision else {
            return Ok(true); // not recorded: assume it did
        };
        if prev == 0 {
            return Ok(false); // the change created it
        }
        let value = self.store.value_at(&change.kv.key, prev).map_err(crate::error::store_error)?;
        Ok(match value {
            Some(kv) => self.filter.matches(&decode_lean(&kv, &self.filter)?),
            None => true, // no longer in the history: assume it did
        })
    }
}
