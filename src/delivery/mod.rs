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
pub mod wecom_api;
pub mod wecom_kf;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use adapters::Call;
use async_trait::async_trait;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::store::{OutboxItem, Store, StoreResult};

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
        }
    }

    /// Queue calls for `target` in `queue` (a conversation: order is kept within it), each
    /// with the calls that replace it if it fails for good.
    pub fn enqueue(
        &self,
        target: &str,
        queue: &str,
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
                        break;
                    }
                    Step::Wait => {
                        let _ = self.store.outbox_update(&item);
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

/// One sender per `[[notify]]` target, by name (channels' senders come from the channel
/// registry, server/channels).
pub fn notify_senders(
    config: &crate::config::Config,
    http: &reqwest::Client,
    clock: &Arc<dyn Clock>,
) -> HashMap<String, Arc<dyn Sender>> {
    use crate::config::NotifyConfig;
    let mut out: HashMap<String, Arc<dyn Sender>> = HashMap::new();
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
    out
}

#[cfg(test)]
mod tests;
