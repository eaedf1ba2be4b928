//! WeCom server API, pure parts: request paths and bodies, and reading the JSON answers.
//!
//! gettoken: developer.work.weixin.qq.com/document/path/91039; message/send: path/90236;
//! error codes: path/90313; group robot: path/91770. Every answer is HTTP 200, errors too:
//! decide on `errcode`, never on `errmsg` (wecom.md §7).

use serde::{Deserialize, Serialize};
use url::form_urlencoded::byte_serialize;

use crate::{split_utf8, Secret};

/// `message/send` (relative to `api_base`; the sender appends `?access_token=`).
pub const MESSAGE_SEND_PATH: &str = "/cgi-bin/message/send";
/// Byte limit of `text.content` and `markdown.content` in `message/send`, and of a passive
/// text reply; WeCom truncates longer content.
pub const MAX_CONTENT_BYTES: usize = 2048;
/// Byte limit of a group-robot text message.
pub const WEBHOOK_TEXT_MAX_BYTES: usize = 2048;
/// Byte limit of a group-robot markdown message (over → errcode 40058).
pub const WEBHOOK_MARKDOWN_MAX_BYTES: usize = 4096;

/// errcode -1: system busy, retry with backoff (≤ 3 times).
pub const ERR_BUSY: i64 = -1;
/// errcode 40014: invalid access_token (also returned for expired ones).
pub const ERR_INVALID_TOKEN: i64 = 40014;
/// errcode 41001: access_token missing.
pub const ERR_MISSING_TOKEN: i64 = 41001;
/// errcode 42001: access_token expired.
pub const ERR_EXPIRED_TOKEN: i64 = 42001;
/// errcode 45009: API rate limit; WeCom blocks for 60 s (minute) or 60 min (hour).
pub const ERR_RATE_LIMIT: i64 = 45009;
/// errcode 45033: concurrency limit.
pub const ERR_CONCURRENCY_LIMIT: i64 = 45033;
/// errcode 60020: caller IP not in the app's trusted-IP list.
pub const ERR_UNTRUSTED_IP: i64 = 60020;
/// errcode 81013: every recipient invalid.
pub const ERR_ALL_RECIPIENTS_INVALID: i64 = 81013;

/// `GET /cgi-bin/gettoken?corpid=…&corpsecret=…` (relative to `api_base`), both values
/// percent-encoded. The result holds the secret: never log it.
pub fn gettoken_path(corp_id: &str, secret: &Secret) -> String {
    format!(
        "/cgi-bin/gettoken?corpid={}&corpsecret={}",
        enc(corp_id),
        enc(secret.expose())
    )
}

/// `POST /cgi-bin/webhook/send?key=…` for a group robot (the key is its only credential:
/// never log the result). Relative to `https://qyapi.weixin.qq.com`.
pub fn webhook_path(key: &Secret) -> String {
    format!("/cgi-bin/webhook/send?key={}", enc(key.expose()))
}

fn enc(s: &str) -> String {
    byte_serialize(s.as_bytes()).collect()
}

/// Any WeCom JSON answer (gettoken, message/send, webhook/send). Fields a call does not
/// return stay `None`/empty.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ApiReply {
    pub errcode: i64,
    #[serde(default)]
    pub errmsg: String,
    /// gettoken: up to 512 bytes; `Debug` shows `Secret(***)`.
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// gettoken: seconds of validity (normally 7200).
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// message/send: `|`-joined recipients WeCom refused (errcode still 0 on partial failure).
    #[serde(default)]
    pub invaliduser: Option<String>,
    /// message/send: the message id (can recall it).
    #[serde(default)]
    pub msgid: Option<String>,
}

impl ApiReply {
    pub fn is_ok(&self) -> bool {
        self.errcode == 0
    }

    pub fn is_token_error(&self) -> bool {
        is_token_error(self.errcode)
    }

    pub fn is_retryable(&self) -> bool {
        is_retryable(self.errcode)
    }
}

/// Why a WeCom answer could not be read (not JSON, or no `errcode`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable WeCom API answer: {0}")]
pub struct BadReply(pub String);

/// Parse a WeCom JSON answer. An answer without `errcode` is refused rather than taken as
/// success: it did not come from the API (a proxy page, a truncated body).
pub fn parse_reply(body: &[u8]) -> Result<ApiReply, BadReply> {
    serde_json::from_slice(body).map_err(|e| BadReply(e.to_string()))
}

/// The cached access token is no good: drop it, fetch a new one, retry the call once
/// (40014 invalid, 41001 missing, 42001 expired).
pub fn is_token_error(errcode: i64) -> bool {
    matches!(
        errcode,
        ERR_INVALID_TOKEN | ERR_MISSING_TOKEN | ERR_EXPIRED_TOKEN
    )
}

/// A transient failure worth retrying with backoff (≤ 3 times): -1 system busy and 45033
/// concurrency limit. Not 45009 (rate limit): WeCom blocks for a minute or an hour and
/// retrying early only extends it; not token errors (see [`is_token_error`]).
pub fn is_retryable(errcode: i64) -> bool {
    matches!(errcode, ERR_BUSY | ERR_CONCURRENCY_LIMIT)
}

#[derive(Serialize)]
struct Content<'a> {
    content: &'a str,
}

#[derive(Serialize)]
struct RobotText<'a> {
    content: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    mentioned_list: &'a [&'a str],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    mentioned_mobile_list: &'a [&'a str],
}

#[derive(Serialize)]
struct RobotBody<'a, T: Serialize> {
    msgtype: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    markdown: Option<Content<'a>>,
}

/// Group-robot text bodies: `content` split into ≤ 2048-byte parts; the mentions (user ids,
/// `@all`; mobile numbers) go with the first part only, so people are notified once.
pub fn webhook_text_bodies(
    content: &str,
    mentioned_list: &[&str],
    mentioned_mobile_list: &[&str],
) -> Vec<String> {
    split_utf8(content, WEBHOOK_TEXT_MAX_BYTES)
        .iter()
        .enumerate()
        .map(|(i, part)| {
            let first = i == 0;
            let body = RobotBody::<RobotText<'_>> {
                msgtype: "text",
                text: Some(RobotText {
                    content: part,
                    mentioned_list: if first { mentioned_list } else { &[] },
                    mentioned_mobile_list: if first { mentioned_mobile_list } else { &[] },
                }),
                markdown: None,
            };
            to_json(&body)
        })
        .collect()
}

/// Group-robot markdown bodies, split into ≤ 4096-byte parts (mention with `<@userid>`).
pub fn webhook_markdown_bodies(content: &str) -> Vec<String> {
    split_utf8(content, WEBHOOK_MARKDOWN_MAX_BYTES)
        .iter()
        .map(|part| {
            to_json(&RobotBody::<RobotText<'_>> {
                msgtype: "markdown",
                text: None,
                markdown: Some(Content { content: part }),
            })
        })
        .collect()
}

/// Body of one `message/send` call (path/90236). `markdown` renders only in the WeCom
/// client (WeChat-plugin readers see "unsupported message type"), so callers default to text.
pub fn message_send_body(touser: &str, agent_id: i64, content: &str, markdown: bool) -> String {
    #[derive(Serialize)]
    struct Send<'a> {
        touser: &'a str,
        msgtype: &'static str,
        agentid: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<Content<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        markdown: Option<Content<'a>>,
    }
    let body = Content { content };
    let (text, markdown_body, msgtype) = if markdown {
        (None, Some(body), "markdown")
    } else {
        (Some(body), None, "text")
    };
    to_json(&Send {
        touser,
        msgtype,
        agentid: agent_id,
        text,
        markdown: markdown_body,
    })
}

fn to_json<T: Serialize>(v: &T) -> String {
    // Plain structs of strings and integers: serializing cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    #[test]
    fn gettoken_path_is_percent_encoded() {
        assert_eq!(
            gettoken_path("ww1436e0e65a779aee", &Secret::new("a+b/c=d&e f")),
            "/cgi-bin/gettoken?corpid=ww1436e0e65a779aee&corpsecret=a%2Bb%2Fc%3Dd%26e+f"
        );
        assert_eq!(
            webhook_path(&Secret::new("693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa")),
            "/cgi-bin/webhook/send?key=693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
        );
    }

    #[test]
    fn parses_gettoken_answer_without_leaking_the_token() {
        let r = parse_reply(
            br#"{"errcode":0,"errmsg":"ok","access_token":"accesstoken000001","expires_in":7200}"#,
        )
        .unwrap();
        assert!(r.is_ok());
        assert_eq!(
            r.access_token.as_ref().map(Secret::expose),
            Some("accesstoken000001")
        );
        assert_eq!(r.expires_in, Some(7200));
        assert!(!format!("{r:?}").contains("accesstoken000001"));
    }

    #[test]
    fn parses_send_answers() {
        let r = parse_reply(br#"{"errcode":0,"errmsg":"ok","invaliduser":"bob","invalidparty":"","invalidtag":"","unlicenseduser":"","msgid":"xxxx","response_code":"xyz"}"#).unwrap();
        assert!(r.is_ok());
        assert_eq!(r.invaliduser.as_deref(), Some("bob"));
        assert_eq!(r.msgid.as_deref(), Some("xxxx"));
        let r = parse_reply(br#"{"errcode":42001,"errmsg":"access_token expired, hint: [x]"}"#)
            .unwrap();
        assert!(!r.is_ok() && r.is_token_error() && !r.is_retryable());
        // errmsg is never consulted: "ok" text with a failing code is a failure
        let r = parse_reply(br#"{"errcode":-1,"errmsg":"ok"}"#).unwrap();
        assert!(!r.is_ok() && r.is_retryable());
    }

    #[test]
    fn unreadable_answers_are_errors() {
        for bad in [
            &b""[..],
            b"<html>502</html>",
            b"{}",
            br#"{"errmsg":"ok"}"#,
            br#"{"errcode":"0"}"#,
        ] {
            assert!(
                parse_reply(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn error_classes() {
        for c in [40014, 41001, 42001] {
            assert!(is_token_error(c) && !is_retryable(c), "{c}");
        }
        for c in [-1, 45033] {
            assert!(is_retryable(c) && !is_token_error(c), "{c}");
        }
        for c in [0, 40001, 40013, 45009, 48002, 60020, 81013, 93000] {
            assert!(!is_retryable(c) && !is_token_error(c), "{c}");
        }
    }

    #[test]
    fn send_bodies() {
        assert_eq!(
            message_send_body("ChenJiaShun", 1000002, "你好\n\"x\"", false),
            r#"{"touser":"ChenJiaShun","msgtype":"text","agentid":1000002,"text":{"content":"你好\n\"x\""}}"#
        );
        assert_eq!(
            message_send_body("ChenJiaShun", 1000002, "**b**", true),
            r#"{"touser":"ChenJiaShun","msgtype":"markdown","agentid":1000002,"markdown":{"content":"**b**"}}"#
        );
    }

    #[test]
    fn robot_bodies() {
        let b = webhook_text_bodies("告警", &["wangqing", "@all"], &["13800001111"]);
        assert_eq!(b.len(), 1);
        let v: Value = serde_json::from_str(&b[0]).unwrap();
        assert_eq!(
            v,
            json!({"msgtype":"text","text":{"content":"告警","mentioned_list":["wangqing","@all"],"mentioned_mobile_list":["13800001111"]}})
        );
        assert_eq!(
            webhook_text_bodies("x", &[], &[]),
            vec![r#"{"msgtype":"text","text":{"content":"x"}}"#]
        );
        let long = "警".repeat(1000); // 3000 bytes
        let b = webhook_text_bodies(&long, &["@all"], &[]);
        assert_eq!(b.len(), 2);
        let second: Value = serde_json::from_str(&b[1]).unwrap();
        assert!(second["text"].get("mentioned_list").is_none());
        assert_eq!(
            webhook_markdown_bodies("**hi** <@li>"),
            vec![r#"{"msgtype":"markdown","markdown":{"content":"**hi** <@li>"}}"#]
        );
        assert_eq!(webhook_markdown_bodies(&"m".repeat(5000)).len(), 2);
    }

    proptest! {
        #[test]
        fn robot_parts_fit_and_join_back(s in "\\PC{0,6000}") {
            for (bodies, key, max) in [
                (webhook_text_bodies(&s, &[], &[]), "text", WEBHOOK_TEXT_MAX_BYTES),
                (webhook_markdown_bodies(&s), "markdown", WEBHOOK_MARKDOWN_MAX_BYTES),
            ] {
                let mut joined = String::new();
                for b in bodies {
                    let v: Value = serde_json::from_str(&b).unwrap();
                    let part = v[key]["content"].as_str().unwrap().to_string();
                    prop_assert!(part.len() <= max);
                    joined.push_str(&part);
                }
                prop_assert_eq!(&joined, &s);
            }
        }

        #[test]
        fn parse_reply_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_reply(&bytes);
        }
    }
}
