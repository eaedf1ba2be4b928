//! Delivery: a reply is a record before it is a request.
//!
//! Every outbound call (WeCom message/send, DingTalk sessionWebhook or OpenAPI, robot
//! notices) is written to the sled outbox, then sent by one worker per target (a channel or
//! a `[[notify]]` target) with retry, backoff and the platform's rate limit; it leaves the
//! outbox only when the platform confirms it. A restart drains what is left. Channels
//! contribute a `Sender`, not their own queue.
//!
//! Guarantee: at least once, in order per target. A crash between the platform's "ok" and
//! the outbox delete re-sends that one call after the restart (a window of microseconds).

pub mod dingtalk;
pub mod rate;
pub mod token;
pub mod wecom;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use adapters::Call;
use async_trait::async_trait;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::events::{EventKind, Events};
use crate::metrics::Metrics;
use crate::store::{Delivery, DeliveryState, OutboxItem, Store, StoreResult};

/// Why a send did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Try again after the usual backoff (network error, 5xx, "system busy").
    #[error("retry: {0}")]
    Retry(String),
    /// Try again no sooner than this (rate limited).
    #[error("retry after {0:?}: {1}")]
    RetryAfter(Duration, String),
    /// Will never work as is (bad request, unknown user): use the fallback calls or drop it.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// Sends one stored call to its platform: adds `api_base`, tokens, signatures.
#[async_trait]
pub trait Sender: Send + Sync {
    async fn send(&self, call: &Call) -> Result<(), SendError>;
}

/// Backoff after `attempts` failures: 1 s, 2 s, 4 s … capped at 5 minutes. A call is never
/// given up for being slow to succeed, only for a permanent error.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(8)).min(Duration::from_secs(300))
}

pub struct Outbox {
    store: Arc<dyn Store>,
    senders: HashMap<String, Arc<dyn Sender>>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// One wake-up per target; `notify_one` keeps a permit, so a wake during a drain is not lost.
    wake: HashMap<String, Notify>,
    /// Where delivery-state changes of agent messages are announced.
    events: Arc<Events>,
}

/// Entries looked at per drain round: bounds the work of one round, not what is kept.
const DRAIN_WINDOW: usize = 512;

impl Outbox {
    pub fn new(
        store: Arc<dyn Store>,
        senders: HashMap<String, Arc<dyn Sender>>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let wake = senders.keys().map(|k| (k.clone(), Notify::new())).collect();
        Outbox {
            store,
            senders,
            clock,
            metrics,
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

    /// Queue calls for `target` in `queue` (a conversation: order is kept within it), each
    /// with the calls that replace it if it fails for good.
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
        let now = self.clock.now_ms();
        for (call, fallback) in calls {
            self.store.outbox_push(&OutboxItem {
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
                message,
            })?;
        }
        if let Some(w) = self.wake.get(target) {
            w.notify_one();
        }
        Ok(())
    }

    /// Send what is due for `target`. Within a queue the order is kept: an entry that must
    /// wait holds back the later entries of its queue, not those of other queues. Returns
    /// how many calls were delivered.
    pub async fn drain_target(&self, target: &str) -> usize {
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
        let mut held: std::collections::HashSet<String> = Default::default();
        let mut delivered = 0;
        for mut item in items {
            if held.contains(&item.queue) {
                continue;
            }
            loop {
                let now = self.clock.now_ms();
                if item.next_at_ms > now {
                    held.insert(item.queue.clone());
                    break;
                }
                match self.attempt(sender.as_ref(), target, &mut item, now).await {
                    Step::Sent => {
                        delivered += 1;
                        if item.then.is_empty() {
                            if let Err(e) = self.store.outbox_remove(item.id) {
                                tracing::error!(error = %e, "outbox delete failed");
                                held.insert(item.queue.clone());
                            }
                            self.track(&item, DeliveryState::Sent);
                            break;
                        }
                        // The next part of a multi-part fallback goes right after.
                        item.call = item.then.remove(0);
                        item.attempts = 0;
                        if self.store.outbox_update(&item).is_err() {
                            held.insert(item.queue.clone());
                            break;
                        }
                    }
                    Step::Again => {
                        if self.store.outbox_update(&item).is_err() {
                            held.insert(item.queue.clone());
                            break;
                        }
                    }
                    Step::Dropped => {
                        let _ = self.store.outbox_remove(item.id);
                        self.track(&item, DeliveryState::Failed);
                        break;
                    }
                    Step::Wait => {
                        let _ = self.store.outbox_update(&item);
                        self.track(&item, DeliveryState::Queued);
                        held.insert(item.queue.clone());
                        break;
                    }
                }
            }
        }
        delivered
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
        match sender.send(&item.call).await {
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
                tracing::error!(target, error = %why, "delivery failed for good; dropped");
                outcome("dropped");
                item.last_error = Some(why);
                Step::Dropped
            }
            Err(e) => {
                item.attempts += 1;
                let wait = match &e {
                    SendError::RetryAfter(d, _) => *d,
                    _ => backoff(item.attempts),
                };
                tracing::warn!(target, attempts = item.attempts, error = %e, retry_in = ?wait, "delivery will be retried");
                outcome("retry");
                item.next_at_ms = now + wait.as_millis() as u64;
                item.last_error = Some(e.to_string());
                Step::Wait
            }
        }
    }

    /// Follow an agent message's delivery: `Sent` once its last part is confirmed, `Failed`
    /// when a part is refused for good, `Queued` (with the reason) while a part waits.
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

    /// Run one worker per target until `stop` fires. Each wakes on new work or every second.
    pub fn spawn_workers(self: &Arc<Self>, stop: tokio::sync::watch::Receiver<bool>) {
        for target in self.senders.keys() {
            let target = target.clone();
            let me = self.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                loop {
                    me.drain_target(&target).await;
                    let wake = me.wake.get(&target).expect("a wake per sender");
                    tokio::select! {
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.changed() => break,
                    }
                    if *stop.borrow() {
                        break;
                    }
                }
            });
        }
    }
}

/// What one attempt did to an outbox entry.
enum Step {
    Sent,
    /// Try the (replaced) call again now.
    Again,
    Dropped,
    /// Not now: it waits, and so does the rest of its queue.
    Wait,
}

/// Write an agent message's new delivery state and announce it. A final state (sent,
/// failed) is not taken back by a late `Queued`. Failures are logged: the message itself
/// is safe, only its status line would be stale.
pub fn record_delivery(
    store: &dyn Store,
    events: &Events,
    channel: &str,
    conversation: &str,
    seq: u64,
    delivery: Delivery,
) {
    let result = (|| -> StoreResult<bool> {
        let Some(mut m) = store.message(channel, conversation, seq)? else {
            return Ok(false);
        };
        let settled = m
            .delivery
            .as_ref()
            .is_some_and(|d| d.state != DeliveryState::Queued);
        if settled && delivery.state == DeliveryState::Queued {
            return Ok(false);
        }
        m.delivery = Some(delivery);
        store.append_message(channel, conversation, &m)?;
        Ok(true)
    })();
    match result {
        Ok(true) => events.publish(EventKind::Delivery, channel, conversation, Some(seq), None),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %e, channel, "delivery state not recorded"),
    }
}

/// The web widget fetched `m`: an agent message still queued is delivered now (the web
/// channel has no outbox; the widget fetching it is the confirmation).
pub fn fetched_by_widget(
    store: &dyn Store,
    events: &Events,
    channel: &str,
    conversation: &str,
    m: &crate::store::Message,
    now_ms: u64,
) {
    let queued = m
        .delivery
        .as_ref()
        .is_some_and(|d| d.state == DeliveryState::Queued);
    if m.role == crate::store::Role::Agent && queued {
        let sent = Delivery {
            state: DeliveryState::Sent,
            error: None,
            attempts: 0,
            at_ms: now_ms,
        };
        record_delivery(store, events, channel, conversation, m.seq, sent);
    }
}

/// A notice for a `[[notify]]` robot: the body is the plain text; the robot's sender wraps
/// it in its platform's JSON (and splits it) when it sends.
pub fn notify_calls(text: &str) -> Vec<Call> {
    vec![Call {
        method: "POST".into(),
        url: String::new(),
        body: text.to_string(),
        auth: adapters::CallAuth::None,
    }]
}

/// One sender per channel and per `[[notify]]` target, by name.
pub fn build_senders(
    config: &crate::config::Config,
    http: &reqwest::Client,
    store: &Arc<dyn Store>,
    clock: &Arc<dyn Clock>,
) -> anyhow::Result<HashMap<String, Arc<dyn Sender>>> {
    use crate::config::{ChannelConfig, NotifyConfig};
    let mut out: HashMap<String, Arc<dyn Sender>> = HashMap::new();
    for c in &config.channels {
        let s: Arc<dyn Sender> = match c {
            ChannelConfig::Web(_) => continue,
            ChannelConfig::WeCom(w) => Arc::new(wecom::WeComSender::new(
                w,
                http.clone(),
                store.clone(),
                clock.clone(),
            )),
            ChannelConfig::DingTalk(d) => Arc::new(
                dingtalk::DingTalkSender::new(d, http.clone(), store.clone(), clock.clone())
                    .with_webhook_hosts(
                        adapters::HostAllowlist::new(d.webhook_hosts(&config.server)).map_err(
                            |e| anyhow::anyhow!("channel {}: allowed_webhook_hosts: {e}", d.name),
                        )?,
                    ),
            ),
        };
        out.insert(c.name().to_string(), s);
    }
    for n in &config.notify {
        let s: Arc<dyn Sender> = match n {
            NotifyConfig::WeComRobot(r) => {
                Arc::new(wecom::WeComRobotSender::new(r, http.clone(), clock.clone()))
            }
            NotifyConfig::DingTalkRobot(r) => Arc::new(dingtalk::DingTalkRobotSender::new(
                r,
                http.clone(),
                clock.clone(),
            )),
        };
        out.insert(n.name().to_string(), s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
