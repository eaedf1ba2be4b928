//! Delivery: a reply is a record before it is a request.
//!
//! Every outbound call (WeCom message/send, DingTalk sessionWebhook or OpenAPI, robot
//! notices) is written to the sled outbox, then sent by one worker per target (a channel or
//! a `[[notify]]` target) with retry, backoff and the platform's rate limit; it leaves the
//! outbox only when the platform confirms it. A restart drains what is left. Channels
//! contribute a `Sender`, not their own queue.
//!
//! Guarantee: in order per queue (a conversation), never sent twice by kefu: a call cut off
//! by a crash becomes a dead letter rather than a second message (see `outbox.rs`). A call
//! the platform keeps refusing becomes a dead letter too, and its queue goes on.

pub mod dingtalk;
mod outbox;
pub mod rate;
pub mod token;
pub mod wecom;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use adapters::Call;
use async_trait::async_trait;

use crate::clock::Clock;
use crate::events::{EventKind, Events};
use crate::store::{Delivery, DeliveryState, Store, StoreResult};

pub use outbox::Outbox;

/// Why a send did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Try again after the usual backoff (network error, 5xx, "system busy").
    #[error("retry: {0}")]
    Retry(String),
    /// Try again no sooner than this (rate limited).
    #[error("retry after {0:?}: {1}")]
    RetryAfter(Duration, String),
    /// Will never work as is (bad request, unknown user): use the fallback calls, else it
    /// becomes a dead letter.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// Sends one stored call to its platform: adds `api_base`, tokens, signatures.
#[async_trait]
pub trait Sender: Send + Sync {
    async fn send(&self, call: &Call) -> Result<(), SendError>;
}

/// Backoff after `attempts` failures: 1 s, 2 s, 4 s … capped at 5 minutes. A call that keeps
/// failing becomes a dead letter after `delivery.max_attempts` / `delivery.max_age_secs`.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(1u64 << attempts.saturating_sub(1).min(8)).min(Duration::from_secs(300))
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
