//! Replies: `kf/send_msg` text (path/96427) and `kf/send_msg_on_event` (path/96428).
//!
//! Limits (wecom-kf.md §3): `text.content` ≤ 2048 bytes; at most 5 messages within 48 h of
//! the customer's last message (the server counts them); `msgid` ≤ 32 bytes of
//! `[0-9a-zA-Z_-]`, unique per kf account, so a retry with the same msgid cannot deliver
//! twice. Omit `msgid` rather than send it empty (silenceper PR #563).

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use super::route;
use crate::{split_utf8, Call, CallAuth, EncodeError, Outbound};

/// Byte limit of `text.content`; longer replies are split.
pub const MAX_TEXT_BYTES: usize = 2048;
/// What a reply cut to fit the allowance ends with.
const CUT_MARK: &str = "…";

/// The `msgid` of part `part` of the reply `reply_id` on `channel`: `kefu-` and 24 hex
/// digits (29 bytes). The same reply always gets the same ids, so a replayed turn cannot
/// send its answer again (the API refuses a msgid it has seen).
pub fn msgid(channel: &str, reply_id: &str, part: usize) -> String {
    let mut h = Sha1::new();
    h.update(channel.as_bytes());
    h.update([0]);
    h.update(reply_id.as_bytes());
    h.update([0]);
    h.update(part.to_string().as_bytes());
    let digest = h.finalize();
    let mut id = String::with_capacity(29);
    id.push_str("kefu-");
    for b in &digest[..12] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

/// A reply fitted into the messages it may use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fitted {
    /// Each ≤ [`MAX_TEXT_BYTES`].
    pub parts: Vec<String>,
    /// Text was left out (it ends with `…`), or nothing could be sent at all.
    pub truncated: bool,
}

/// `text` in at most `budget` parts of ≤ 2048 bytes: split at natural breaks when that fits,
/// else packed into full parts (cut only at character boundaries), else cut after the last
/// part that fits, marked with `…`. Blank text → no parts.
pub fn fit(text: &str, budget: usize) -> Fitted {
    if text.trim().is_empty() {
        return Fitted {
            parts: Vec::new(),
            truncated: false,
        };
    }
    let natural = split_utf8(text, MAX_TEXT_BYTES);
    if natural.len() <= budget {
        return Fitted {
            parts: natural,
            truncated: false,
        };
    }
    if budget == 0 {
        return Fitted {
            parts: Vec::new(),
            truncated: true,
        };
    }
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() && parts.len() < budget {
        let last = parts.len() + 1 == budget;
        if rest.len() <= MAX_TEXT_BYTES {
            parts.push(rest.to_string());
            rest = "";
            break;
        }
        let room = if last {
            MAX_TEXT_BYTES - CUT_MARK.len()
        } else {
            MAX_TEXT_BYTES
        };
        let mut cut = room;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let mut part = rest[..cut].to_string();
        rest = &rest[cut..];
        if last {
            part.push_str(CUT_MARK);
        }
        parts.push(part);
    }
    Fitted {
        parts,
        truncated: !rest.is_empty(),
    }
}

#[derive(Serialize)]
struct Text<'a> {
    content: &'a str,
}

/// Body of one `kf/send_msg` text (field order as in the official example, V5).
pub fn send_text_body(touser: &str, open_kfid: &str, msgid: Option<&str>, content: &str) -> String {
    #[derive(Serialize)]
    struct Send<'a> {
        touser: &'a str,
        open_kfid: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        msgid: Option<&'a str>,
        msgtype: &'static str,
        text: Text<'a>,
    }
    to_json(&Send {
        touser,
        open_kfid,
        msgid,
        msgtype: "text",
        text: Text { content },
    })
}

/// Body of one `kf/send_msg_on_event` text with an event's one-time `code` (V7).
pub fn on_event_text_body(code: &str, msgid: Option<&str>, content: &str) -> String {
    #[derive(Serialize)]
    struct OnEvent<'a> {
        code: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        msgid: Option<&'a str>,
        msgtype: &'static str,
        text: Text<'a>,
    }
    to_json(&OnEvent {
        code,
        msgid,
        msgtype: "text",
        text: Text { content },
    })
}

/// A `kf/send_msg_on_event` call: the welcome on `enter_session`, or a notice with the
/// `msg_code` of a transfer. The content is cut to one message.
pub fn on_event_call(code: &str, msgid: Option<&str>, content: &str) -> Call {
    let content = fit(content, 1).parts.into_iter().next().unwrap_or_default();
    Call {
        method: "POST".into(),
        url: super::SEND_ON_EVENT_PATH.into(),
        body: on_event_text_body(code, msgid, &content),
        auth: CallAuth::WeComToken,
    }
}

/// Answer of `send_msg` / `send_msg_on_event`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct SendReply {
    pub errcode: i64,
    #[serde(default)]
    pub errmsg: String,
    #[serde(default)]
    pub msgid: Option<String>,
}

/// The `send_msg` calls answering `out` on `channel`, at most `budget`; `true` when text
/// had to be left out. The customer comes from the conversation key
/// (`{open_kfid}:{external_userid}`), else from the route.
pub fn reply_calls(
    channel: &str,
    out: &Outbound,
    budget: usize,
) -> Result<(Vec<Call>, bool), EncodeError> {
    let (open_kfid, touser) = super::split_conversation(&out.conversation)
        .map(|(k, u)| (k.to_string(), u.to_string()))
        .or_else(|| {
            Some((
                out.route.get(route::OPEN_KFID)?.clone(),
                out.route.get(route::EXTERNAL_USERID)?.clone(),
            ))
        })
        .ok_or_else(|| {
            EncodeError::Invalid(format!(
                "kf reply without an account and customer (conversation {:?})",
                out.conversation
            ))
        })?;
    let fitted = fit(&out.text, budget);
    let reply_id = match out.route.get(route::REPLY_ID) {
        Some(id) if !id.is_empty() => id.clone(),
        // No id from the server: the text itself, so at least an identical retry is caught.
        _ => format!("text:{}", msgid(&out.conversation, &out.text, 0)),
    };
    let calls = fitted
        .parts
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let id = msgid(channel, &reply_id, i);
            Call {
                method: "POST".into(),
                url: super::SEND_MSG_PATH.into(),
                body: send_text_body(&touser, &open_kfid, Some(&id), part),
                auth: CallAuth::WeComToken,
            }
        })
        .collect();
    Ok((calls, fitted.truncated))
}

pub(super) fn to_json<T: Serialize>(v: &T) -> String {
    // Plain structs of strings and integers: serializing cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}
