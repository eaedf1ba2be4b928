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
pub mod wecom_api;
pub mod wecom_kf;

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

    /// Whether `call`, cut off by a crash mid-send, may simply be sent again because the
    /// platform itself refuses a second copy (WeCom kf: a repeated `msgid`). Otherwise it
    /// becomes a dead letter for a person to check (`Outbox::recover`).
    fn resend_safe(&self, _call: &Call) -> bool {
        false
    }

    /// Send a [`Sender::resend_safe`] call again after a crash cut its first send off.
    /// The first send may have reached the platform, which then refuses this one as a
    /// repeat: a sender that can tell such a refusal reads it as delivered, so the message
    /// is neither sent twice nor turned into a dead letter. By default, a plain send.
    async fn resend(&self, call: &Call) -> Result<(), SendError> {
        self.send(call).await
    }
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
