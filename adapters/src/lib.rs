//! Platform protocol codecs for kefu.
//!
//! Everything here is pure: bytes, keys and time in; values or bytes out. No sockets, no
//! runtime, nothing from the `kefu` package. The server does the I/O and the engine never
//! sees a platform detail except through [`Inbound::channel`] / [`Inbound::kind`].

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub mod dingtalk;
pub mod hosts;
pub mod secret;
pub mod web;
pub mod wecom;

pub use hosts::HostAllowlist;
pub use secret::Secret;

/// The kind of platform a channel speaks. Config spells them `web`, `wecom`, `dingtalk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Web,
    WeCom,
    DingTalk,
}

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Web => "web",
            ChannelKind::WeCom => "wecom",
            ChannelKind::DingTalk => "dingtalk",
        }
    }
}

impl std::fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who wrote a message, as the platform names them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRef {
    /// Stable platform id (WeCom UserID, DingTalk senderStaffId, widget session).
    pub id: String,
    /// Display name when the platform gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What an inbound message carries. Non-text kinds keep whatever the platform said about
/// them in `Inbound::text` (a file name, a recognized voice transcript, a link title).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "name")]
pub enum ContentKind {
    Text,
    Image,
    Voice,
    Video,
    File,
    Location,
    Link,
    RichText,
    /// A platform event (WeCom `enter_agent`, `subscribe`, ...); the name is lower-case.
    Event(String),
    Other(String),
}

/// One message from a customer, normalized. Every channel produces this; the engine consumes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inbound {
    /// The config `name` of the channel it came through.
    pub channel: String,
    pub kind: ChannelKind,
    /// The conversation it belongs to, unique within the channel (WeCom: the user,
    /// DingTalk: conversationId, web: session_id).
    pub conversation: String,
    pub user: UserRef,
    /// The platform's id for this message: the dedupe key within the channel.
    pub id: String,
    pub content: ContentKind,
    /// The text the customer wrote (for text and rich text), else a description.
    pub text: String,
    /// Unix milliseconds when the platform says it was sent.
    pub sent_at_ms: u64,
    /// Platform routing facts the adapter needs again to reply (DingTalk sessionWebhook and
    /// its expiry, group or single chat, ...). Opaque to the engine; given back in `Outbound`.
    #[serde(default)]
    pub route: BTreeMap<String, String>,
}

/// One reply to deliver, produced by the server from an engine turn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outbound {
    pub channel: String,
    pub conversation: String,
    pub user: UserRef,
    pub text: String,
    /// The text uses simple markdown (lists, bold, links); channels that render it may say so.
    #[serde(default)]
    pub markdown: bool,
    /// `Inbound::route` of the message this answers.
    #[serde(default)]
    pub route: BTreeMap<String, String>,
}

/// One HTTP call that delivers (part of) an `Outbound`. Stored in the outbox as is; the
/// sender prefixes `api_base` to a relative `url`, and adds the access token when
/// `auth` says so.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub method: String,
    /// A path under the channel's `api_base` (starts with `/`), or an absolute URL received
    /// from the platform (DingTalk's sessionWebhook).
    pub url: String,
    pub body: String,
    pub auth: CallAuth,
}

/// How a call is authenticated when sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallAuth {
    /// Nothing to add (the URL carries its own credential).
    None,
    /// WeCom: `?access_token=` from `gettoken`.
    WeComToken,
    /// DingTalk OpenAPI: `x-acs-dingtalk-access-token` header.
    DingTalkToken,
}

/// What a platform request turned out to be after verification.
#[derive(Clone, Debug, PartialEq)]
pub enum Decoded {
    Message(Box<Inbound>),
    /// A URL-verification challenge: answer this plaintext.
    Challenge(String),
    /// Authentic, but nothing to do (an event we don't handle).
    Ignored(&'static str),
}

/// Why a platform request was refused. `BadSignature`, `StaleTimestamp` and `WrongReceiver`
/// map to 401 (see [`DecodeError::is_auth`]), `Malformed` to 400.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("bad signature")]
    BadSignature,
    #[error("stale or missing timestamp")]
    StaleTimestamp,
    #[error("bad request: {0}")]
    Malformed(String),
    #[error("message for another receiver: {0}")]
    WrongReceiver(String),
}

impl DecodeError {
    /// True when the caller could not prove who they are (HTTP 401). A payload sealed for
    /// another receiver counts: WeCom's SDK rejects it like a bad signature (wecom.md §3).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            DecodeError::BadSignature | DecodeError::StaleTimestamp | DecodeError::WrongReceiver(_)
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("cannot encode reply: {0}")]
    Invalid(String),
}

/// A platform codec. Any input gives `Ok` or `Err`, never a panic.
pub trait Channel: Send + Sync {
    fn kind(&self) -> ChannelKind;
    /// Verify, decrypt, parse.
    fn decode(&self, req: &http::Request<Bytes>, now: SystemTime) -> Result<Decoded, DecodeError>;
    /// The calls that deliver `out`.
    fn encode(
        &self,
        out: &Outbound,
        now: SystemTime,
        rng: &mut dyn rand_core::RngCore,
    ) -> Result<Vec<Call>, EncodeError>;
    /// The calls to try instead when `failed` (one of `encode`'s calls for `out`) fails for
    /// good. DingTalk: the OpenAPI send after an expired sessionWebhook. Default: none.
    fn fallback(&self, out: &Outbound, failed: &Call) -> Vec<Call> {
        let _ = (out, failed);
        Vec::new()
    }
}

/// Unix milliseconds of `t` (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Split `text` into parts of at most `max` bytes, never inside a UTF-8 character,
/// preferring line ends, then sentence ends, then spaces.
pub fn split_utf8(text: &str, max: usize) -> Vec<String> {
    let max = max.max(4);
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let head = &rest[..cut];
        // Prefer a natural break in the last third of the window.
        let floor = cut / 3 * 2;
        let natural = head
            .rfind('\n')
            .filter(|&i| i >= floor)
            .map(|i| i + 1)
            .or_else(|| {
                head.char_indices()
                    .filter(|&(i, c)| {
                        i >= floor && matches!(c, '。' | '！' | '？' | '.' | '!' | '?')
                    })
                    .map(|(i, c)| i + c.len_utf8())
                    .next_back()
            })
            .or_else(|| head.rfind(' ').filter(|&i| i >= floor).map(|i| i + 1));
        let cut = natural.filter(|&i| i > 0).unwrap_or(cut);
        parts.push(rest[..cut].to_string());
        rest = &rest[cut..];
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(rest.to_string());
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn split_keeps_short_text_whole() {
        assert_eq!(split_utf8("hello", 2048), vec!["hello"]);
        assert_eq!(split_utf8("", 2048), vec![""]);
    }

    #[test]
    fn split_never_cuts_a_chinese_character() {
        let s = "退款".repeat(1000);
        let parts = split_utf8(&s, 2048);
        assert!(parts.iter().all(|p| p.len() <= 2048));
        assert_eq!(parts.concat(), s);
    }

    proptest! {
        #[test]
        fn split_parts_fit_and_join_back(s in "\\PC{0,3000}", max in 4usize..3000) {
            let parts = split_utf8(&s, max);
            prop_assert!(parts.iter().all(|p| p.len() <= max));
            prop_assert_eq!(parts.concat(), s);
        }
    }
}
