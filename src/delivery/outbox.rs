//! The outbox worker: sends what is due, in order per queue, and decides what happens to
//! each entry after an attempt.
//!
//! Exactly once, as far as kefu can tell: an entry is marked "sending" and the mark flushed
//! before its call goes out; the mark is cleared with the outcome. A crash in between leaves
//! the mark, and the next start (`recover`) cannot know whether the platform got the call:
//! it makes the entry a dead letter for an agent to check instead of sending it a second
//! time. Delivered entries are deleted and the delete flushed soon after (the next mark's
//! flush covers it at the latest).
//!
//! Dead letters: an entry the platform refuses for good (and has no fallback), or that
//! keeps failing past `delivery.max_attempts` / `delivery.max_age_secs`, moves to the dead
//! letters; its queue (the conversation) goes on with the next reply.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use adapters::Call;
use tokio::sync::{watch, Notify};

use super::record_delivery;
use super::{backoff, SendError, Sender};
use crate::clock::Clock;
use crate::config::DeliveryConfig;
use crate::events::Events;
use crate::lifecycle::TaskGroup;
use crate::metrics::Metrics;
use crate::store::{
    DeadLetter, Delivery, DeliveryState, GroupCommit, OutboxItem, Store, StoreResult,
};

/// Entries looked at per drain round: bounds the work of one round, not what is kept.
const DRAIN_WINDOW: usize = 512;
/// When the "sending" mark cannot be written, try again after this long.
const STORE_RETRY: Duration = Duration::from_secs(1);
/// Calls of one target in flight at once, each from a different queue (conversation).
const WAVE: usize = 8;
/// A woken worker waits this long before it drains, so replies queued together go out
/// together.
const GATHER: Duration = Duration::from_millis(5);

pub struct Outbox {
    store: Arc<dyn Store>,
    commit: Arc<GroupCommit>,
    senders: HashMap<String, Arc<dyn Sender>>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    policy: DeliveryConfig,
    /// One wake-up per target; `notify_one` keeps a permit, so a wake during a drain is not lost.
    wake: HashMap<String, Notify>,
    /// Where delivery-state changes of agent messages are announced.
    events: Arc<Events>,
}

/// What one attempt did to an outbox entry.
enum Step {
    Sent,
    /// Try the (replaced) call again now.
    Again,
    /// Given up on: now a dead letter.
    Dead,
    /// Not now: it waits, and so does the rest of its queue.
    Wait,
}

impl Outbox {
    pub fn new(
        store: Arc<dyn Store>,
        commit: Arc<GroupCommit>,
        senders: HashMap<String, Arc<dyn Sender>>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        policy: DeliveryConfig,
    ) -> Self {
        let wake = senders.keys().map(|k| (k.clone(), Notify::new())).collect();
        Outbox {
            store,
            commit,
            senders,
            clock,
            metrics,
            policy,
            wake,
            events: Arc::new(Events::new()),
        }
    }

    /// Announce delivery-state changes on `events` (the engine's feed).
    pub fn with_events(mut self, events: Arc<Events>) -> Self {
        self.events = events;
        self
    }

    /// Is there a sender for `target`?
    pub fn delivers_to(&self, target: &str) -> bool {
        self.senders.contains_key(target)
    }

    /// Entries for `target` in `queue` (a conversation: order is kept within it), each call
    /// with the calls that replace it if it fails for good; `message`: the agent message
    /// (a seq in conversation `queue`) they deliver, whose delivery state follows them. Not
    /// stored yet: see `push`.
    pub fn items(
        &self,
        target: &str,
        queue: &str,
        message: Option<u64>,
        calls: Vec<(Call, Vec<Call>)>,
    ) -> Vec<OutboxItem> {
        let now = self.clock.now_ms();
        calls
            .into_iter()
            .map(|(call, fallback)| OutboxItem {
                id: 0,
                target: target.to_string(),
                call,
                fallback,
                then: Vec::new(),
                queue: queue.to_string(),
                attempts: 0,
                next_at_ms: now,
                created_ms: now,
                last_error: None,
                sending_since_ms: None,
                resent_after_crash: false,
                held_by: None,
                message,
            })
            .collect()
    }

    /// Store `items` (and drop the inbox entry `answered` in the same write), then wake
    /// their targets' workers.
    pub fn push(&self, items: &[OutboxItem], answered: Option<u64>) -> StoreResult<()> {
        self.store.outbox_push(items, answered)?;
        let targets: HashSet<&str> = items.iter().map(|i| i.target.as_str()).collect();
        for t in targets {
            if let Some(w) = self.wake.get(t) {
                w.notify_one();
            }
        }
        Ok(())
    }

    /// `items` + `push`, for callers with nothing to answer.
    pub fn enqueue(
        &self,
        target: &str,
        queue: &str,
        calls: Vec<(Call, Vec<Call>)>,
    ) -> StoreResult<()> {
        self.enqueue_message(target, queue, None, calls)
    }

    /// `enqueue` for the calls that deliver agent message `message` (a seq in conversation
    /// `queue` of channel `target`): its delivery state follows them.
    pub fn enqueue_message(
        &self,
        target: &str,
        queue: &str,
        message: Option<u64>,
        calls: Vec<(Call, Vec<Call>)>,
    ) -> StoreResult<()> {
        self.push(&self.items(target, queue, message, calls), None)
    }

    /// At start, before the workers: entries still marked "sending" were cut off by a crash.
    /// Whether the platform got them is unknown, so they become dead letters rather than
    /// second messages, unless their sender says the platform refuses a second copy
    /// (`Sender::resend_safe`): those are simply sent again. Returns how many became dead
    /// letters.
    pub fn recover(&self) -> usize {
        let mut moved = 0;
        for (target, sender) in &self.senders {
            let items = match self.store.outbox_items(target, usize::MAX) {
                Ok(items) => items,
                Err(e) => {
                    tracing::error!(error = %e, "outbox unreadable");
                    continue;
                }
            };
            for mut item in items.into_iter().filter(|i| i.sending_since_ms.is_some()) {
                item.sending_since_ms = None;
                if sender.resend_safe(&item.call) {
                    item.resent_after_crash = true;
                    tracing::info!(target = %item.target, queue = %item.queue, id = item.id, "interrupted send queued again: the platform refuses a second copy");
                    if let Err(e) = self.store.outbox_update(&item) {
                        tracing::error!(error = %e, "outbox write failed");
                    }
                    continue;
                }
                let why = "interrupted: kefu stopped while sending this, so the platform may \
                           or may not have delivered it; not sent again automatically";
                tracing::warn!(target = %item.target, queue = %item.queue, id = item.id, "{why}");
                if self.bury(target, item, why).is_ok() {
                    moved += 1;
                }
            }
        }
        moved
    }

    /// Send what is due for `target`. Within a queue the order is kept: an entry that must
    /// wait holds back the later entries of its queue, not those of other queues. Returns
    /// how many calls were delivered.
    pub async fn drain_target(&self, target: &str) -> usize {
        let never = watch::channel(false).1;
        self.drain_target_until(target, &never).await
    }

    /// `drain_target`, stopping between calls once `stop` is true (the calls in hand are
    /// finished and their outcomes recorded).
    ///
    /// Calls go out in waves: the head of every queue that is due (up to `WAVE`), sent
    /// concurrently, then the next heads. One flush covers a wave's "sending" marks, and
    /// one the outcomes that must be on disk before the entry moves on.
    pub async fn drain_target_until(&self, target: &str, stop: &watch::Receiver<bool>) -> usize {
        let Some(sender) = self.senders.get(target) else {
            return 0;
        };
        let items = match self.store.outbox_items(target, DRAIN_WINDOW) {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, "outbox unreadable");
                return 0;
            }
        };
        // The queues in the order their oldest entry was queued, each in its own order.
        let mut queues: Vec<(String, VecDeque<OutboxItem>)> = Vec::new();
        for item in items {
            match queues.iter_mut().find(|(q, _)| *q == item.queue) {
                Some((_, entries)) => entries.push_back(item),
                None => queues.push((item.queue.clone(), VecDeque::from([item]))),
            }
        }
        let mut held: HashSet<String> = HashSet::new();
        let mut delivered = 0;
        while !*stop.borrow() {
            let now = self.clock.now_ms();
            let mut wave: Vec<OutboxItem> = Vec::new();
            for (queue, entries) in queues.iter_mut() {
                if wave.len() >= WAVE || held.contains(queue) {
                    continue;
                }
                match entries.front() {
                    Some(head) if head.next_at_ms > now => {
                        held.insert(queue.clone());
                    }
                    Some(_) => wave.extend(entries.pop_front()),
                    None => {}
                }
            }
            if wave.is_empty() {
                break;
            }
            if !self.mark_sending(&mut wave, now).await {
                for item in &wave {
                    held.insert(item.queue.clone());
                }
                continue;
            }
            let steps = futures::future::join_all(
                wave.iter_mut()
                    .map(|item| self.attempt(sender.as_ref(), target, item, now)),
            )
            .await;
            // Outcomes reach the disk before an entry moves on: a stale "sending" mark
            // would make it a dead letter at the next start, a stale call would be sent
            // twice. While the store refuses, the worker waits (nothing else could be
            // recorded either).
            let mut rewrite: Vec<OutboxItem> = Vec::new();
            let mut remove: Vec<u64> = Vec::new();
            let mut sent: Vec<OutboxItem> = Vec::new();
            for (mut item, step) in wave.into_iter().zip(steps) {
                item.sending_since_ms = None;
                let queue = item.queue.clone();
                let back_to_front = |queues: &mut Vec<(String, VecDeque<OutboxItem>)>,
                                     item: OutboxItem| {
                    if let Some((_, entries)) = queues.iter_mut().find(|(q, _)| *q == item.queue) {
                        entries.push_front(item);
                    }
                };
                match step {
                    // Flushed with the next wave's marks, or at the end of the round:
                    // until then a crash would only make it a dead letter.
                    Step::Sent if item.then.is_empty() => {
                        delivered += 1;
                        remove.push(item.id);
                        sent.push(item);
                    }
                    Step::Sent => {
                        delivered += 1;
                        // The next part of a multi-part fallback goes right after.
                        item.call = item.then.remove(0);
                        item.attempts = 0;
                        rewrite.push(item.clone());
                        back_to_front(&mut queues, item);
                    }
                    Step::Again => {
                        rewrite.push(item.clone());
                        back_to_front(&mut queues, item);
                    }
                    Step::Dead => {}
                    Step::Wait => {
                        self.track(&item, DeliveryState::Queued);
                        rewrite.push(item);
                        held.insert(queue);
                    }
                }
            }
            let recorded = self
                .persist(stop, !rewrite.is_empty(), || {
                    for id in &remove {
                        self.store.outbox_remove(*id)?;
                    }
                    for item in &rewrite {
                        self.store.outbox_update(item)?;
                    }
                    Ok(())
                })
                .await;
            if !recorded {
                return delivered;
            }
            for item in &sent {
                self.track(item, DeliveryState::Sent);
            }
        }
        if delivered > 0 {
            self.commit.soon();
        }
        delivered
    }

    /// Mark `wave` as being sent and wait until the marks are on disk. False: they could
    /// not be written (the entries wait a moment; nothing was sent).
    async fn mark_sending(&self, wave: &mut [OutboxItem], now: u64) -> bool {
        let mut written = Ok(());
        for item in wave.iter_mut() {
            item.sending_since_ms = Some(now);
            written = written.and_then(|()| self.store.outbox_update(item));
        }
        let written = match written {
            Ok(()) => self.commit.durable().await,
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "cannot mark outbox entries as sending; they wait");
                self.commit.health().failed(&e.to_string());
                for item in wave.iter_mut() {
                    // The store rejects writes: the marks (where they landed) are undone
                    // with the first write that works, by the retry's outcome.
                    item.sending_since_ms = None;
                    item.next_at_ms = now + STORE_RETRY.as_millis() as u64;
                }
                false
            }
        }
    }

    /// Run `write` (and, if `flush`, wait for the disk), again every second while the
    /// store refuses, until it works (true) or the worker is told to stop (false).
    async fn persist(
        &self,
        stop: &watch::Receiver<bool>,
        flush: bool,
        write: impl Fn() -> StoreResult<()>,
    ) -> bool {
        loop {
            let written = match write() {
                Ok(()) if flush => self.commit.durable().await,
                other => other,
            };
            match written {
                Ok(()) => return true,
                Err(e) => {
                    tracing::error!(error = %e, "outbox write failed; trying again");
                    self.commit.health().failed(&e.to_string());
                }
            }
            if *stop.borrow() {
                return false;
            }
            tokio::time::sleep(STORE_RETRY).await;
        }
    }

    /// Move `item` to the dead letters.
    fn bury(&self, target: &str, item: OutboxItem, reason: &str) -> StoreResult<()> {
        let letter = DeadLetter {
            item,
            reason: reason.to_string(),
            dead_ms: self.clock.now_ms(),
        };
        let r = self.store.dead_letter(&letter);
        match &r {
            Ok(()) => {
                self.metrics.inc(
                    "kefu_deliveries_total",
                    &[("target", target), ("outcome", "dead_letter")],
                );
                self.track(&letter.item, DeliveryState::Failed);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot move an outbox entry to the dead letters");
                self.commit.health().failed(&e.to_string());
            }
        }
        self.commit.soon();
        r
    }

    /// Send `item.call` once and decide what happens to the entry.
    async fn attempt(
        &self,
        sender: &dyn Sender,
        target: &str,
        item: &mut OutboxItem,
        now: u64,
    ) -> Step {
        let outcome = |o: &str| {
            self.metrics.inc(
                "kefu_deliveries_total",
                &[("target", target), ("outcome", o)],
            )
        };
        let sent = if item.resent_after_crash {
            sender.resend(&item.call).await
        } else {
            sender.send(&item.call).await
        };
        match sent {
            Ok(()) => {
                outcome("sent");
                Step::Sent
            }
            Err(SendError::Permanent(why)) if !item.fallback.is_empty() => {
                tracing::warn!(target, error = %why, "delivery failed; trying the fallback");
                outcome("fallback");
                let mut fallback = std::mem::take(&mut item.fallback);
                item.call = fallback.remove(0);
                item.then = fallback;
                item.attempts = 0;
                item.last_error = Some(why);
                Step::Again
            }
            Err(SendError::Permanent(why)) => {
                tracing::error!(target, error = %why, "delivery refused for good; now a dead letter");
                item.sending_since_ms = None;
                item.last_error = Some(why.clone());
                let reason = format!("refused by the platform: {why}");
                if self.bury(target, item.clone(), &reason).is_err() {
                    item.next_at_ms = now + STORE_RETRY.as_millis() as u64;
                    return Step::Wait;
                }
                Step::Dead
            }
            Err(e) => {
                item.attempts += 1;
                item.last_error = Some(e.to_string());
                let age = Duration::from_millis(now.saturating_sub(item.created_ms));
                let too_many = item.attempts >= self.policy.max_attempts;
                let too_old = age >= Duration::from_secs(self.policy.max_age_secs);
                if too_many || too_old {
                    let reason = if too_many {
                        format!("failed {} times; last: {e}", item.attempts)
                    } else {
                        format!("still failing after {} s; last: {e}", age.as_secs())
                    };
                    tracing::error!(target, attempts = item.attempts, error = %e, "delivery given up; now a dead letter");
                    item.sending_since_ms = None;
                    if self.bury(target, item.clone(), &reason).is_ok() {
                        return Step::Dead;
                    }
                }
                // A platform's Retry-After is obeyed up to a cap: one throttled answer
                // must not park a conversation for hours.
                let cap = Duration::from_secs(self.policy.max_retry_after_secs);
                let wait = match &e {
                    SendError::RetryAfter(d, _) => (*d).min(cap),
                    _ => backoff(item.attempts).min(cap),
                };
                tracing::warn!(target, attempts = item.attempts, error = %e, retry_in = ?wait, "delivery will be retried");
                outcome("retry");
                item.next_at_ms = now + wait.as_millis() as u64;
                Step::Wait
            }
        }
    }

    /// Put a dead letter back at the end of its queue, as a new entry with a fresh count.
    pub fn requeue(&self, letter: DeadLetter) -> StoreResult<u64> {
        let now = self.clock.now_ms();
        let mut item = letter.item;
        item.id = 0;
        item.attempts = 0;
        item.next_at_ms = now;
        item.created_ms = now;
        item.sending_since_ms = None;
        item.held_by = None;
        let target = item.target.clone();
        let ids = self.store.outbox_push(std::slice::from_ref(&item), None)?;
        if let Some(w) = self.wake.get(&target) {
            w.notify_one();
        }
        Ok(ids[0])
    }

    /// Follow an agent message's delivery: `Sent` once its last part is confirmed, `Failed`
    /// when a part becomes a dead letter, `Queued` (with the reason) while a part waits.
    fn track(&self, item: &OutboxItem, state: DeliveryState) {
        let Some(seq) = item.message else {
            return;
        };
        if state == DeliveryState::Sent {
            let more_parts = self
                .store
                .outbox_items(&item.target, DRAIN_WINDOW)
                .map(|rest| {
                    rest.iter()
                        .any(|o| o.queue == item.queue && o.message == Some(seq))
                })
                .unwrap_or(false);
            if more_parts {
                return;
            }
        }
        let delivery = Delivery {
            state,
            error: match state {
                DeliveryState::Sent => None,
                _ => item.last_error.clone(),
            },
            attempts: item.attempts,
            at_ms: self.clock.now_ms(),
        };
        record_delivery(
            self.store.as_ref(),
            &self.events,
            &item.target,
            &item.queue,
            seq,
            delivery,
        );
    }

    /// Run one worker per target until `group` stops. Each wakes on new work or every
    /// second, and finishes the call in hand before it stops.
    pub fn spawn_workers(self: &Arc<Self>, group: &TaskGroup) {
        for target in self.senders.keys() {
            let Some(mut task) = group.handle() else {
                return;
            };
            let target = target.clone();
            let me = self.clone();
            tokio::spawn(async move {
                loop {
                    me.drain_target_until(&target, &task.stop).await;
                    let wake = me.wake.get(&target).expect("a wake per sender");
                    tokio::select! {
                        _ = wake.notified() => {
                            // Let the replies of a busy moment gather: one wave (and one
                            // flush of its marks) for many, at the cost of a few ms.
                            tokio::select! {
                                _ = tokio::time::sleep(GATHER) => {}
                                _ = task.stopped() => {}
                            }
                        }
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = task.stopped() => {}
                    }
                    if task.stopping() {
                        break;
                    }
                }
            });
        }
    }
}
