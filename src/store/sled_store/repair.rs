//! At open: finish or undo the multi-record writes a crash cut off (the order each is
//! written in, and what commits it, is in the module doc of `sled_store`).

use super::*;

impl SledStore {
    pub(super) fn repaired(self) -> StoreResult<Self> {
        // The handoff index, for databases from before it.
        if self.kv.get(HANDOFF_INDEX_MARKER)?.is_none() {
            for kv in self.conversations.iter() {
                let (k, v) = kv?;
                let c: Option<Conversation> =
                    self.decode_or_set_aside(&self.conversations, "conversations", &k, &v);
                if c.is_some_and(|c| c.handed_off()) {
                    self.handoffs.insert(k, &[])?;
                }
            }
            self.kv.insert(HANDOFF_INDEX_MARKER, &[])?;
        }
        let mut uncommitted = 0;
        // Inbox entries their dedupe key does not point at: written for a callback that
        // never got its 200 (the platform sends it again), or for a duplicate.
        for kv in self.inbox.iter() {
            let (k, v) = kv?;
            let Some((key, _)) = self.decode_or_set_aside::<(String, adapters::Inbound)>(
                &self.inbox,
                "inbox",
                &k,
                &v,
            ) else {
                continue;
            };
            let commits = match self.dedupe.get(&key)? {
                None => false,
                // A key from before commits existed: its entry counts.
                Some(d) => committed(&d).is_none_or(|id| id == id_of(&k)),
            };
            if !commits {
                self.inbox.remove(&k)?;
                uncommitted += 1;
            }
        }
        // Outbox entries still held by an inbox entry: the reply was being queued when the
        // crash came. Dropped; the inbox replay queues the whole reply again.
        let mut held = 0;
        for kv in self.outbox.iter() {
            let (k, v) = kv?;
            let Some(item) = self.decode_or_set_aside::<OutboxItem>(&self.outbox, "outbox", &k, &v)
            else {
                continue;
            };
            if item
                .held_by
                .is_some_and(|id| self.inbox.contains_key(id.to_be_bytes()).unwrap_or(false))
            {
                self.outbox.remove(&k)?;
                held += 1;
            }
        }
        // Dead letters still in the outbox: the move was cut off after its first half.
        let mut moved = 0;
        for k in self.dead_letters.iter().keys() {
            if self.outbox.remove(k?)?.is_some() {
                moved += 1;
            }
        }
        if uncommitted + held + moved > 0 {
            tracing::warn!(
                uncommitted_inbox_entries = uncommitted,
                half_queued_replies = held,
                half_moved_dead_letters = moved,
                "finished the writes the last stop cut off"
            );
        }
        Ok(self)
    }
}
