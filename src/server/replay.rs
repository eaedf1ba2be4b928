//! DingTalk callbacks beyond the codec's checks: one signature, one message; and a word in
//! the log when a callback names a reply URL kefu will not call.
//!
//! DingTalk's `sign` header covers only the `timestamp` header, never the body
//! (dingtalk.md §1), and a timestamp is accepted for an hour either way. A leaked pair would
//! let anyone inject any message for up to two hours; dedupe on `msgId` stops only replays
//! of the same message. So a timestamp (for one channel's secret the timestamp fixes the
//! sign) is bound to the first `msgId` it carried: the same message again is a retry (the
//! dedupe answers it); another message under that signature is accepted only while the
//! signature is under [`REUSE_WINDOW_MS`] old — DingTalk signing two messages in the same
//! millisecond, which a busy robot does — and refused with 401 after. A leaked pair is thus
//! good for seconds, not hours. Both keys live in the store's dedupe tree, so the binding
//! survives a restart for the two hours a timestamp can be valid.

use adapters::dingtalk::{route, sign};
use adapters::{Decoded, HostAllowlist};
use axum::http::HeaderMap;

use super::{ApiError, AppState};
use crate::config::ChannelConfig;

/// How long after its own timestamp a signature may still carry a second, different message.
pub const REUSE_WINDOW_MS: u64 = 30_000;

/// How long a timestamp is remembered: it is valid from `ts - 1 h` to `ts + 1 h` on our
/// clock, so first seen no earlier than the start, last accepted no later than the end.
const BINDING_TTL_MS: u64 = 2 * sign::WINDOW_MS + 60_000;

/// For a DingTalk HTTP callback that passed the signature check: refuse another message
/// under a signature already used, once that signature is older than [`REUSE_WINDOW_MS`].
pub fn dingtalk_signature_once(
    s: &AppState,
    channel: &str,
    headers: &HeaderMap,
    decoded: &Decoded,
) -> Result<(), ApiError> {
    let Some(ts) = headers
        .get(sign::TIMESTAMP_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(()); // the codec refused it already
    };
    let now = s.app.clock.now_ms();
    // A failed write is a 503 (the platform retries) and marks the store failing, as the
    // message's own writes do.
    let remember = |key: String| {
        crate::store::watch(
            s.app.commit.health(),
            s.app.store.check_and_remember(&key, now, BINDING_TTL_MS),
        )
    };
    let first_use = !remember(format!("dingtalk-sign:{channel}:{ts}"))?;
    let Decoded::Message(m) = decoded else {
        return Ok(());
    };
    let same_message = remember(format!("dingtalk-sign:{channel}:{ts}:{}", m.id))?;
    let fresh = ts
        .parse::<u64>()
        .is_ok_and(|t| t.abs_diff(now) <= REUSE_WINDOW_MS);
    if first_use || same_message || fresh {
        return Ok(());
    }
    s.app.metrics.inc(
        "kefu_callbacks_total",
        &[("channel", channel), ("outcome", "replayed")],
    );
    tracing::warn!(
        channel,
        "dingtalk callback refused: its signature was already used for another message more than 30 s ago (a captured timestamp/sign pair?)"
    );
    Err(ApiError::Unauthorized(
        "this signature was already used for another message".into(),
    ))
}

/// Log (once per callback) a `sessionWebhook` off the channel's allowlist: kefu answers
/// through the OpenAPI instead, and the operator should know why, or that someone tried.
pub fn warn_foreign_webhook(s: &AppState, channel: &str, decoded: &Decoded) {
    let Decoded::Message(m) = decoded else {
        return;
    };
    let Some(hook) = m.route.get(route::SESSION_WEBHOOK) else {
        return;
    };
    let cfg = &s.app.config;
    let patterns = cfg.channels.iter().find_map(|c| match c {
        ChannelConfig::DingTalk(d) if d.name == channel => Some(d.webhook_hosts(&cfg.server)),
        _ => None,
    });
    let Some(Ok(allow)) = patterns.map(HostAllowlist::new) else {
        return;
    };
    if let Err(why) = allow.check_url(hook) {
        tracing::warn!(
            channel,
            reason = %why,
            "dingtalk sessionWebhook not on allowed_webhook_hosts: replying through the OpenAPI instead"
        );
    }
}
