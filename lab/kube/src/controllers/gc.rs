//! The garbage collector: deletes objects all of whose owners (by
//! `ownerReferences[].uid`) are gone (background propagation).

use std::collections::HashSet;

use crate::error::ApiError;
use crate::meta;
use crate::store::{DeleteOptions, Store};

/// Errors of this module are API errors.
pub type GcError = ApiError;

/// One collection pass over every resource.
pub fn reconcile(store: &Store) {
    let keys = store.keys();
    let mut uids: HashSet<String> = HashSet::new();
    let mut dependents = Vec::new();
    for key in &keys {
        let (items, _) = store.list(key, "");
        for item in items {
            uids.insert(meta::uid(&item).to_owned());
            if item["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| !o.is_empty())
            {
                dependents.push((key.clone(), item));
            }
        }
    }
    for (key, item) in dependents {
        if meta::is_terminating(&item) {
            continue;
        }
        let orphaned = item["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|refs| {
                refs.iter()
                    .all(|r| r["uid"].as_str().is_none_or(|u| !uids.contains(u)))
            });
        if orphaned {
            // Gone meanwhile is fine.
            let _ = store.delete(
                &key,
                meta::namespace(&item),
                meta::name(&item),
                &DeleteOptions::default(),
            );
        }
    }
}
