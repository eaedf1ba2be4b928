//! Pulling: `kf/sync_msg` (path/94670, wecom-kf.md §2).
//!
//! The caller keeps one cursor per account, pulls while `has_more` is 1 (even when a page is
//! empty), and stores `next_cursor` only after the page's messages are stored. Each item of
//! `msg_list` becomes a [`KfItem`]; an item that cannot be read is reported, never fatal:
//! unknown message types and events must not break the loop.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::send::to_json;
use super::{conversation_key, route, Origin};
use crate::wecom::api::BadReply;
use crate::{ChannelKind, ContentKind, Inbound, UserRef};

/// Most messages one page may carry (also the default).
pub const MAX_LIMIT: u32 = 1000;
/// A description longer than this (an unknown type's payload) is cut in the stored text.
const MAX_DESCRIPTION_CHARS: usize = 1000;

/// Body of one `sync_msg` (V2 field order). `cursor` absent: from the earliest message of
/// the last 3 days. `token` absent: allowed, under a stricter rate limit. `open_kfid` is
/// always sent (required in the 2024 page).
pub fn sync_request_body(
    cursor: Option<&str>,
    token: Option<&str>,
    limit: u32,
    open_kfid: &str,
) -> String {
    #[derive(Serialize)]
    struct Sync<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        cursor: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<&'a str>,
        limit: u32,
        voice_format: u32,
        open_kfid: &'a str,
    }
    to_json(&Sync {
        cursor: cursor.filter(|c| !c.is_empty()),
        token: token.filter(|t| !t.is_empty()),
        limit: limit.clamp(1, MAX_LIMIT),
        voice_format: 0,
        open_kfid,
    })
}

/// One page, read.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncPage {
    pub next_cursor: String,
    pub has_more: bool,
    pub items: Vec<KfItem>,
}

/// What `sync_msg` answered.
#[derive(Clone, Debug, PartialEq)]
pub enum SyncReply {
    Page(SyncPage),
    Refused { errcode: i64, errmsg: String },
}

#[derive(Deserialize)]
struct RawPage {
    errcode: i64,
    #[serde(default)]
    errmsg: String,
    #[serde(default)]
    next_cursor: String,
    #[serde(default)]
    has_more: Value,
    #[serde(default)]
    msg_list: Vec<Value>,
}

/// Read a `sync_msg` answer; `account` is the `open_kfid` asked for (items that omit it
/// belong to it). Not JSON or no `errcode`: `BadReply`.
pub fn parse_sync_reply(body: &[u8], channel: &str, account: &str) -> Result<SyncReply, BadReply> {
    let raw: RawPage = serde_json::from_slice(body).map_err(|e| BadReply(e.to_string()))?;
    if raw.errcode != 0 {
        return Ok(SyncReply::Refused {
            errcode: raw.errcode,
            errmsg: raw.errmsg,
        });
    }
    // Documented as the integer 0/1; a boolean is read the same way.
    let has_more = match &raw.has_more {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_i64().unwrap_or(0) != 0,
        _ => false,
    };
    Ok(SyncReply::Page(SyncPage {
        next_cursor: raw.next_cursor,
        has_more,
        items: raw
            .msg_list
            .iter()
            .map(|m| classify(channel, account, m))
            .collect(),
    }))
}

/// One item of `msg_list`, ready for the server.
#[derive(Clone, Debug, PartialEq)]
pub enum KfItem {
    /// A customer message (origin 3), a servicer message (origin 5) or an event about one
    /// customer's session (origin 4). The conversation is `{open_kfid}:{external_userid}`;
    /// `id` is `{open_kfid}:{msgid}` (dedupe scope: the account, since msgid uniqueness
    /// across accounts is not documented); `route` carries the kf fields (see
    /// [`super::route`]) and, for events, every scalar field of `event`.
    Message(Box<Inbound>),
    /// An event about the account, not a customer (`servicer_status_change`, …).
    AccountEvent {
        msgid: String,
        open_kfid: String,
        event_type: String,
        fields: BTreeMap<String, String>,
    },
    /// An item without the fields to place it; logged and skipped.
    Unreadable { msgid: Option<String>, why: String },
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
        _ => None,
    }
}

fn field(obj: &Value, key: &str) -> Option<String> {
    obj.get(key).and_then(text_of).filter(|s| !s.is_empty())
}

fn cut(s: String) -> String {
    if s.chars().count() <= MAX_DESCRIPTION_CHARS {
        s
    } else {
        let mut c: String = s.chars().take(MAX_DESCRIPTION_CHARS).collect();
        c.push('…');
        c
    }
}

/// Turn one `msg_list` item into a [`KfItem`]. Never panics on any JSON.
pub fn classify(channel: &str, account: &str, item: &Value) -> KfItem {
    let Some(msgid) = field(item, "msgid") else {
        return KfItem::Unreadable {
            msgid: None,
            why: "no msgid".into(),
        };
    };
    let unreadable = |why: &str| KfItem::Unreadable {
        msgid: Some(msgid.clone()),
        why: why.to_string(),
    };
    let msgtype = field(item, "msgtype").unwrap_or_default();
    let origin = item
        .get("origin")
        .and_then(Value::as_i64)
        .and_then(Origin::from_code)
        .or((msgtype == "event").then_some(Origin::Event));
    let Some(origin) = origin else {
        return unreadable("unknown origin");
    };
    let send_time = item.get("send_time").and_then(Value::as_u64).unwrap_or(0);

    let mut r = BTreeMap::new();
    r.insert(route::MSGID.to_string(), msgid.clone());
    r.insert(route::ORIGIN.to_string(), origin.code().to_string());

    // Events carry the ids inside `event` (the top-level ones are absent, per the docs).
    let (content, text, kfid, user) = if msgtype == "event" || origin == Origin::Event {
        let ev = item.get("event").cloned().unwrap_or(Value::Null);
        let Some(event_type) = field(&ev, "event_type") else {
            return unreadable("event without event_type");
        };
        let kfid = field(&ev, "open_kfid")
            .or_else(|| field(item, "open_kfid"))
            .unwrap_or_else(|| account.to_string());
        let mut fields = BTreeMap::new();
        if let Value::Object(o) = &ev {
            for (k, v) in o {
                let value = text_of(v).unwrap_or_else(|| cut(v.to_string()));
                fields.insert(k.clone(), value);
            }
        }
        let Some(user) = field(&ev, "external_userid") else {
            return KfItem::AccountEvent {
                msgid,
                open_kfid: kfid,
                event_type,
                fields,
            };
        };
        r.extend(fields);
        r.insert(route::EVENT_TYPE.to_string(), event_type.clone());
        (
            ContentKind::Event(event_type.clone()),
            format!("[{event_type}]"),
            kfid,
            user,
        )
    } else {
        let kfid = field(item, "open_kfid").unwrap_or_else(|| account.to_string());
        let Some(user) = field(item, "external_userid") else {
            return unreadable("message without external_userid");
        };
        if origin == Origin::Servicer {
            if let Some(s) = field(item, "servicer_userid") {
                r.insert(route::SERVICER.to_string(), s);
            }
        }
        let payload = item.get(msgtype.as_str()).cloned().unwrap_or(Value::Null);
        let (content, text) = describe(&msgtype, &payload, &mut r);
        (content, text, kfid, user)
    };
    r.insert(route::OPEN_KFID.to_string(), kfid.clone());
    r.insert(route::EXTERNAL_USERID.to_string(), user.clone());
    KfItem::Message(Box::new(Inbound {
        channel: channel.to_string(),
        kind: ChannelKind::WeComKf,
        conversation: conversation_key(&kfid, &user),
        user: UserRef {
            id: user,
            name: None,
        },
        id: format!("{kfid}:{msgid}"),
        content,
        text,
        sent_at_ms: send_time.saturating_mul(1000),
        route: r,
    }))
}

/// The stored text and kind of a message's payload; media ids and fields go to the route.
/// Non-text descriptions start with `[` (the engine then treats them as non-text).
fn describe(msgtype: &str, p: &Value, r: &mut BTreeMap<String, String>) -> (ContentKind, String) {
    let mut keep = |keys: &[&str]| {
        for k in keys {
            if let Some(v) = field(p, k) {
                r.insert((*k).to_string(), v);
            }
        }
    };
    let f = |k: &str| field(p, k).unwrap_or_default();
    let join = |head: &str, parts: &[String]| {
        let body: Vec<&str> = parts
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        if body.is_empty() {
            format!("[{head}]")
        } else {
            cut(format!("[{head}] {}", body.join(" ")))
        }
    };
    match msgtype {
        "text" => {
            keep(&["menu_id"]);
            (ContentKind::Text, f("content"))
        }
        "image" | "voice" | "video" | "file" => {
            keep(&["media_id"]);
            let kind = match msgtype {
                "image" => ContentKind::Image,
                "voice" => ContentKind::Voice,
                "video" => ContentKind::Video,
                _ => ContentKind::File,
            };
            (kind, join(msgtype, &[f("media_id")]))
        }
        "location" => {
            keep(&["latitude", "longitude", "name", "address"]);
            let at = match (field(p, "latitude"), field(p, "longitude")) {
                (Some(la), Some(lo)) => format!("({la},{lo})"),
                _ => String::new(),
            };
            (
                ContentKind::Location,
                join("location", &[f("name"), f("address"), at]),
            )
        }
        "link" => {
            keep(&["title", "desc", "url", "pic_url"]);
            (ContentKind::Link, join("link", &[f("title"), f("url")]))
        }
        "business_card" => {
            keep(&["userid"]);
            (
                ContentKind::Other(msgtype.into()),
                join(msgtype, &[f("userid")]),
            )
        }
        "miniprogram" => {
            keep(&["title", "appid", "pagepath", "thumb_media_id"]);
            (
                ContentKind::Other(msgtype.into()),
                join(msgtype, &[f("title"), f("appid"), f("pagepath")]),
            )
        }
        "" => (ContentKind::Other("unknown".into()), "[unknown]".into()),
        other => {
            // msgmenu, 视频号 products and orders, merged chat records, …: kept as sent.
            let payload = if p.is_null() {
                String::new()
            } else {
                p.to_string()
            };
            (ContentKind::Other(other.into()), join(other, &[payload]))
        }
    }
}
