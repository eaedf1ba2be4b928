//! Per-conversation queues for platform messages: one customer is answered in order,
//! customers never wait on each other, and no queue grows without bound.
//!
//! A callback first reserves room in its conversation's queue (`reserve`), then writes to
//! the store, then sends into the reserved slot. A full queue is refused before anything is
//! written, so the platform's retry finds nothing half done. Each queue has one worker,
//! started on demand and gone when idle; a queue with a reservation outstanding never
//! counts as idle, so a reserved slot always has a worker to receive it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use adapters::Inbound;
use tokio::sync::mpsc;

/// `(channel, conversation)`.
pub type ConversationKey = (String, String);

/// A platform message on its way to the engine.
#[derive(Debug)]
pub struct Queued {
    /// Its inbox entry: removed when the reply is queued.
    pub inbox_id: u64,
    pub message: Inbound,
    /// Replayed from the inbox at start (its turn may already be recorded).
    pub replayed: bool,
}

/// One conversation's queue as the producers see it.
struct Lane {
    tx: mpsc::UnboundedSender<Queued>,
    /// Reserved or queued messages not finished by the worker yet.
    depth: Arc<AtomicUsize>,
}

pub struct Queues {
    lanes: Mutex<HashMap<ConversationKey, Lane>>,
    limit: usize,
}

/// What the worker of a new queue gets.
pub struct WorkerParts {
    pub conv: ConversationKey,
    pub rx: mpsc::UnboundedReceiver<Queued>,
    pub depth: Arc<AtomicUsize>,
}

/// Why no slot was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The conversation already has `limit` messages waiting.
    Full,
    /// No worker can be started: kefu is stopping.
    Stopping,
}

/// Room for one message in a queue; freed again if dropped unused.
pub struct Slot {
    tx: mpsc::UnboundedSender<Queued>,
    depth: Arc<AtomicUsize>,
    used: bool,
}

impl Slot {
    /// Hand the message to the worker. False when the worker is gone (kefu is stopping):
    /// the message stays in the inbox for the next start.
    pub fn send(mut self, q: Queued) -> bool {
        self.used = true;
        if self.tx.send(q).is_ok() {
            true
        } else {
            self.depth.fetch_sub(1, Ordering::SeqCst);
            false
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.used {
            self.depth.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Queues {
    pub fn new(limit: usize) -> Self {
        Queues {
            lanes: Mutex::new(HashMap::new()),
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConversationKey, Lane>> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserve room in `conv`'s queue; `bounded = false` ignores the limit (replay: the
    /// messages are stored already). `spawn` starts the worker of a new queue and says
    /// whether it could.
    pub fn reserve(
        &self,
        conv: &ConversationKey,
        bounded: bool,
        spawn: impl FnOnce(WorkerParts) -> bool,
    ) -> Result<Slot, Refused> {
        let mut lanes = self.lock();
        if let Some(lane) = lanes.get(conv) {
            if !lane.tx.is_closed() {
                if bounded && lane.depth.load(Ordering::SeqCst) >= self.limit {
                    return Err(Refused::Full);
                }
                lane.depth.fetch_add(1, Ordering::SeqCst);
                return Ok(Slot {
                    tx: lane.tx.clone(),
                    depth: lane.depth.clone(),
                    used: false,
                });
            }
            // Its worker stopped (kefu is stopping, or it ended): start over below.
            lanes.remove(conv);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let depth = Arc::new(AtomicUsize::new(1));
        let started = spawn(WorkerParts {
            conv: conv.clone(),
            rx,
            depth: depth.clone(),
        });
        if !started {
            return Err(Refused::Stopping);
        }
        lanes.insert(
            conv.clone(),
            Lane {
                tx: tx.clone(),
                depth: depth.clone(),
            },
        );
        Ok(Slot {
            tx,
            depth,
            used: false,
        })
    }

    /// The worker of `conv` has been idle: true (and the queue is gone) when nothing is
    /// queued or reserved, so the worker may exit; a producer then starts a new one.
    pub fn retire_if_idle(&self, conv: &ConversationKey, depth: &Arc<AtomicUsize>) -> bool {
        let mut lanes = self.lock();
        if depth.load(Ordering::SeqCst) > 0 {
            return false;
        }
        if lanes
            .get(conv)
            .is_some_and(|lane| Arc::ptr_eq(&lane.depth, depth))
        {
            lanes.remove(conv);
        }
        true
    }

    /// Messages waiting or in hand, over all conversations.
    pub fn waiting(&self) -> usize {
        self.lock()
            .values()
            .map(|l| l.depth.load(Ordering::SeqCst))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv() -> ConversationKey {
        ("support".into(), "u1".into())
    }

    fn queued(id: u64) -> Queued {
        Queued {
            inbox_id: id,
            message: crate::testing::web_message("u1", &id.to_string(), "hi"),
            replayed: false,
        }
    }

    #[test]
    fn a_full_queue_refuses_until_the_worker_catches_up() {
        let q = Queues::new(2);
        let mut parts = None;
        let a = q
            .reserve(&conv(), true, |p| {
                parts = Some(p);
                true
            })
            .unwrap();
        let b = q.reserve(&conv(), true, |_| unreachable!()).unwrap();
        assert!(matches!(
            q.reserve(&conv(), true, |_| unreachable!()),
            Err(Refused::Full)
        ));
        assert!(
            q.reserve(&conv(), false, |_| unreachable!()).is_ok(),
            "replay is not refused"
        );
        assert!(a.send(queued(1)));
        drop(b); // an unused slot frees its room
        let mut parts = parts.unwrap();
        assert_eq!(parts.rx.try_recv().unwrap().inbox_id, 1);
        // The worker finished message 1; the replay slot above was dropped too.
        parts.depth.fetch_sub(1, Ordering::SeqCst);
        assert_eq!(q.waiting(), 0);
        assert!(q.reserve(&conv(), true, |_| unreachable!()).is_ok());
    }

    #[test]
    fn an_idle_worker_leaves_only_without_reservations() {
        let q = Queues::new(8);
        let mut parts = None;
        let slot = q
            .reserve(&conv(), true, |p| {
                parts = Some(p);
                true
            })
            .unwrap();
        let parts = parts.unwrap();
        assert!(
            !q.retire_if_idle(&parts.conv, &parts.depth),
            "a reservation is outstanding"
        );
        assert!(slot.send(queued(7)));
        parts.depth.fetch_sub(1, Ordering::SeqCst);
        assert!(q.retire_if_idle(&parts.conv, &parts.depth));
        let mut started = false;
        q.reserve(&conv(), true, |_| {
            started = true;
            true
        })
        .unwrap();
        assert!(started, "a new worker for the next message");
    }

    #[test]
    fn no_worker_no_slot_when_stopping() {
        let q = Queues::new(8);
        assert!(matches!(
            q.reserve(&conv(), true, |_| false),
            Err(Refused::Stopping)
        ));
    }
}
