//! Undecodable records: skipped, counted, and moved to the `corrupt` tree for a person to
//! look at, so one bad record never blocks the records behind it.

use serde::de::DeserializeOwned;

use super::*;

impl SledStore {
    /// Decode `v`, or move the record aside and say nothing more about it.
    pub(super) fn decode_or_set_aside<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        name: &'static str,
        k: &[u8],
        v: &[u8],
    ) -> Option<T> {
        match serde_json::from_slice(v) {
            Ok(t) => Some(t),
            Err(e) => {
                self.set_aside(tree, name, k, v, &e.to_string());
                None
            }
        }
    }

    /// Copy the record to `corrupt`, then remove it (only if unchanged meanwhile): a crash
    /// in between leaves a copy, never nothing.
    pub(super) fn set_aside(
        &self,
        tree: &sled::Tree,
        name: &'static str,
        k: &[u8],
        v: &[u8],
        why: &str,
    ) {
        tracing::error!(
            tree = name,
            key = %printable(k),
            error = why,
            "corrupt record moved to the `corrupt` tree and skipped"
        );
        *self
            .corrupt_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name)
            .or_default() += 1;
        let mut aside = name.as_bytes().to_vec();
        aside.push(0);
        aside.extend_from_slice(k);
        if let Err(e) = self.corrupt.insert(aside, v) {
            tracing::error!(error = %e, "cannot set the corrupt record aside; skipped only");
            return;
        }
        if tree.compare_and_swap(k, Some(v), None::<&[u8]>).is_ok() && name == "conversations" {
            self.set_aside_messages(k);
        }
    }

    /// A conversation whose record was set aside starts over at seq 1: its old messages go
    /// aside too (under `messages`), or the new ones would overwrite them.
    pub(super) fn set_aside_messages(&self, conv: &[u8]) {
        let mut prefix = conv.to_vec();
        prefix.push(0);
        for (k, v) in self.messages.scan_prefix(&prefix).flatten() {
            let mut aside = b"messages\0".to_vec();
            aside.extend_from_slice(&k);
            if self.corrupt.insert(aside, v).is_ok() {
                let _ = self.messages.remove(k);
            }
        }
    }

    /// Decode every record of `tree`, setting aside those that don't.
    pub(super) fn scan<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        name: &'static str,
        mut keep: impl FnMut(T) -> bool,
    ) -> StoreResult<()> {
        for kv in tree.iter() {
            let (k, v) = kv?;
            if let Some(t) = self.decode_or_set_aside(tree, name, &k, &v) {
                if !keep(t) {
                    break;
                }
            }
        }
        Ok(())
    }
}
