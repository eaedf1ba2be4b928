//! The robot callback body (dingtalk.md §2) → [`Inbound`].
//!
//! The same JSON arrives over HTTP (`POST /dingtalk/{name}`) and as the `data` of a Stream
//! mode CALLBACK frame, so this parser knows nothing about either transport.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::route;
use crate::{ChannelKind, ContentKind, DecodeError, Decoded, Inbound, UserRef};

/// Descriptions put in `Inbound::text` for content the engine cannot read. Chinese, as the
/// DingTalk client itself previews them.
pub const IMAGE_NOTE: &str = "[图片]";
pub const VOICE_NOTE: &str = "[语音]";
pub const VIDEO_NOTE: &str = "[视频]";
pub const FILE_NOTE: &str = "[文件]";

/// A number DingTalk may also send as a string (`createAt`, `conversationType`, ...).
#[derive(Deserialize)]
#[serde(untagged)]
enum Loose {
    Int(u64),
    Str(String),
}

impl Loose {
    fn into_string(self) -> String {
        match self {
            Loose::Int(n) => n.to_string(),
            Loose::Str(s) => s,
        }
    }
    fn as_u64(&self) -> Option<u64> {
        match self {
            Loose::Int(n) => Some(*n),
            Loose::Str(s) => s.trim().parse().ok(),
        }
    }
}

#[derive(Deserialize)]
struct TextPart {
    #[serde(default)]
    content: Option<String>,
}

/// The fields kefu reads; everything else (chatbotUserId, atUsers, isAdmin, ...) is ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Callback {
    msgtype: Option<String>,
    text: Option<TextPart>,
    /// Object for picture / richText / audio / video / file (a JSON string is tolerated).
    content: Option<Value>,
    msg_id: Option<String>,
    create_at: Option<Loose>,
    conversation_type: Option<Loose>,
    conversation_id: Option<String>,
    sender_staff_id: Option<String>,
    sender_id: Option<String>,
    sender_nick: Option<String>,
    robot_code: Option<String>,
    session_webhook: Option<String>,
    session_webhook_expired_time: Option<Loose>,
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.trim().is_empty())
}

/// Parse a callback body. `fallback_ms` stands in for a missing `createAt`.
///
/// Malformed JSON or a body without `msgId`, `conversationId`, `msgtype` or any sender id is
/// [`DecodeError::Malformed`] with the reason; a text message left empty after trimming is
/// [`Decoded::Ignored`]. Never panics.
pub fn parse_callback(
    channel: &str,
    body: &[u8],
    fallback_ms: u64,
) -> Result<Decoded, DecodeError> {
    // serde would also fill a struct from a JSON array; DingTalk only sends objects.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(DecodeError::Malformed(
            "dingtalk callback: expected a JSON object".into(),
        ));
    }
    let cb: Callback = serde_json::from_slice(body)
        .map_err(|e| DecodeError::Malformed(format!("dingtalk callback: {e}")))?;
    let missing = |field: &str| DecodeError::Malformed(format!("dingtalk callback: no {field}"));
    let id = nonempty(cb.msg_id).ok_or_else(|| missing("msgId"))?;
    let conversation = nonempty(cb.conversation_id).ok_or_else(|| missing("conversationId"))?;
    let msgtype = nonempty(cb.msgtype).ok_or_else(|| missing("msgtype"))?;
    let staff_id = nonempty(cb.sender_staff_id);
    let user_id = staff_id
        .clone()
        .or(nonempty(cb.sender_id))
        .ok_or_else(|| missing("senderStaffId or senderId"))?;
    let conversation_type = cb
        .conversation_type
        .map(Loose::into_string)
        .unwrap_or_else(|| route::SINGLE.to_string());
    let group = conversation_type == route::GROUP;

    let content = cb.content.map(|c| match c {
        Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        other => other,
    });
    let field = |name: &str| -> Option<String> {
        content
            .as_ref()
            .and_then(|c| c.get(name))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };

    let (kind, text) = match msgtype.as_str() {
        "text" => {
            let raw = cb.text.and_then(|t| t.content).unwrap_or_default();
            (ContentKind::Text, clean_text(&raw, group))
        }
        "richText" => (
            ContentKind::RichText,
            clean_text(&rich_text(content.as_ref()), group),
        ),
        "picture" => (ContentKind::Image, IMAGE_NOTE.to_string()),
        "audio" => (
            ContentKind::Voice,
            field("recognition").unwrap_or_else(|| VOICE_NOTE.to_string()),
        ),
        "video" => (ContentKind::Video, VIDEO_NOTE.to_string()),
        "file" => (
            ContentKind::File,
            match field("fileName") {
                Some(name) => format!("{FILE_NOTE} {name}"),
                None => FILE_NOTE.to_string(),
            },
        ),
        other => (ContentKind::Other(other.to_string()), format!("[{other}]")),
    };
    if text.is_empty() {
        return Ok(Decoded::Ignored("dingtalk: empty text"));
    }

    let mut r = BTreeMap::new();
    r.insert(route::CONVERSATION_TYPE.to_string(), conversation_type);
    r.insert(route::CONVERSATION_ID.to_string(), conversation.clone());
    // Present (maybe empty) whenever the message came from DingTalk: encode tells "no staff
    // id" apart from "no route at all".
    r.insert(
        route::SENDER_STAFF_ID.to_string(),
        staff_id.unwrap_or_default(),
    );
    if let Some(code) = nonempty(cb.robot_code) {
        r.insert(route::ROBOT_CODE.to_string(), code);
    }
    if let Some(hook) = nonempty(cb.session_webhook) {
        r.insert(route::SESSION_WEBHOOK.to_string(), hook);
    }
    if let Some(exp) = cb
        .session_webhook_expired_time
        .as_ref()
        .and_then(Loose::as_u64)
    {
        r.insert(
            route::SESSION_WEBHOOK_EXPIRES_MS.to_string(),
            exp.to_string(),
        );
    }

    Ok(Decoded::Message(Box::new(Inbound {
        channel: channel.to_string(),
        kind: ChannelKind::DingTalk,
        conversation,
        user: UserRef {
            id: user_id,
            name: nonempty(cb.sender_nick),
        },
        id,
        content: kind,
        text,
        sent_at_ms: cb
            .create_at
            .as_ref()
            .and_then(Loose::as_u64)
            .unwrap_or(fallback_ms),
        route: r,
    })))
}

/// `content.richText` is a list of parts: `{"text": …}` or a picture
/// (`{"type":"picture","downloadCode":…}`). Text parts are joined as they are; each picture
/// becomes [`IMAGE_NOTE`].
fn rich_text(content: Option<&Value>) -> String {
    let parts = content
        .and_then(|c| c.get("richText"))
        .and_then(Value::as_array);
    let mut out = String::new();
    for part in parts.into_iter().flatten() {
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            out.push_str(t);
        } else if part.get("type").and_then(Value::as_str) == Some("picture")
            || part.get("downloadCode").is_some()
            || part.get("pictureDownloadCode").is_some()
        {
            out.push_str(IMAGE_NOTE);
        }
    }
    out
}

/// Trim; in groups also drop leading `@name` tokens DingTalk may leave (the robot's own
/// mention is usually removed already, other mentions are not). A token is removed only
/// when whitespace follows it, so `@2023年订单` without a space stays a question.
pub fn clean_text(raw: &str, group: bool) -> String {
    let mut text = raw.trim();
    if group {
        while let Some(rest) = text.strip_prefix('@') {
            match rest.find(char::is_whitespace) {
                Some(end) if end > 0 => text = rest[end..].trim_start(),
                _ => break,
            }
        }
    }
    text.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::dingtalk::SAMPLE_GROUP_TEXT as GROUP_TEXT;

    fn parse(body: &str) -> Inbound {
        match parse_callback("helpdesk", body.as_bytes(), 42) {
            Ok(Decoded::Message(m)) => *m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    fn with(field: &str, value: Value) -> String {
        let mut v: Value = serde_json::from_str(GROUP_TEXT).expect("json");
        v[field] = value;
        v.to_string()
    }

    #[test]
    fn group_text_becomes_inbound() {
        let m = parse(GROUP_TEXT);
        assert_eq!(m.channel, "helpdesk");
        assert_eq!(m.kind, ChannelKind::DingTalk);
        assert_eq!(m.conversation, "cidp8R+kAtw8hBL+bUYbQbu9A==");
        assert_eq!(m.user.id, "manager4711");
        assert_eq!(m.user.name.as_deref(), Some("张三"));
        assert_eq!(m.id, "msgSz7QmWcu8tG9Mx7Z1Zm8ew==");
        assert_eq!(m.content, ContentKind::Text);
        assert_eq!(m.text, "怎么申请退款？");
        assert_eq!(m.sent_at_ms, 1577262236757);
        let r = |k: &str| m.route.get(k).map(String::as_str);
        assert_eq!(r(route::CONVERSATION_TYPE), Some("2"));
        assert_eq!(
            r(route::CONVERSATION_ID),
            Some("cidp8R+kAtw8hBL+bUYbQbu9A==")
        );
        assert_eq!(r(route::SENDER_STAFF_ID), Some("manager4711"));
        assert_eq!(r(route::ROBOT_CODE), Some("dingrobot1"));
        assert_eq!(
            r(route::SESSION_WEBHOOK),
            Some("https://oapi.dingtalk.com/robot/sendBySession?session=abc")
        );
        assert_eq!(r(route::SESSION_WEBHOOK_EXPIRES_MS), Some("1577265836757"));
    }

    #[test]
    fn group_mention_residue_is_stripped() {
        for (raw, want) in [
            ("@客服机器人 怎么退款", "怎么退款"),
            ("@客服机器人\u{2005}怎么退款", "怎么退款"),
            (" @张三 @李四  发票呢", "发票呢"),
            ("@2023年订单", "@2023年订单"),
            ("退款 @张三", "退款 @张三"),
        ] {
            let m = parse(&with("text", serde_json::json!({ "content": raw })));
            assert_eq!(m.text, want, "{raw:?}");
        }
        // Single chat: only trimmed.
        let mut v: Value = serde_json::from_str(GROUP_TEXT).expect("json");
        v["conversationType"] = "1".into();
        v["text"] = serde_json::json!({"content": " @张三 在吗 "});
        assert_eq!(parse(&v.to_string()).text, "@张三 在吗");
    }

    #[test]
    fn empty_text_is_ignored() {
        let body = with("text", serde_json::json!({"content": "  "}));
        assert!(matches!(
            parse_callback("c", body.as_bytes(), 0),
            Ok(Decoded::Ignored(_))
        ));
    }

    #[test]
    fn staff_id_falls_back_to_sender_id() {
        let m = parse(&with("senderStaffId", Value::Null));
        assert_eq!(m.user.id, "$:LWCP_v1:$sender");
        assert_eq!(
            m.route.get(route::SENDER_STAFF_ID).map(String::as_str),
            Some("")
        );
    }

    #[test]
    fn numbers_as_strings_are_accepted() {
        let mut v: Value = serde_json::from_str(GROUP_TEXT).expect("json");
        v["createAt"] = "1577262236757".into();
        v["conversationType"] = 1.into();
        v["sessionWebhookExpiredTime"] = "1577265836757".into();
        let m = parse(&v.to_string());
        assert_eq!(m.sent_at_ms, 1577262236757);
        assert_eq!(m.route[route::CONVERSATION_TYPE], "1");
        assert_eq!(m.route[route::SESSION_WEBHOOK_EXPIRES_MS], "1577265836757");
        let m = parse(&with("createAt", Value::Null));
        assert_eq!(m.sent_at_ms, 42);
    }

    #[test]
    fn media_kinds_are_described() {
        let mut v: Value = serde_json::from_str(GROUP_TEXT).expect("json");
        v.as_object_mut().expect("object").remove("text");
        let case = |msgtype: &str, content: Value| {
            let mut v = v.clone();
            v["msgtype"] = msgtype.into();
            v["content"] = content;
            parse(&v.to_string())
        };
        let m = case(
            "picture",
            serde_json::json!({"downloadCode": "dc", "pictureDownloadCode": "p"}),
        );
        assert_eq!(
            (m.content, m.text.as_str()),
            (ContentKind::Image, IMAGE_NOTE)
        );
        let m = case(
            "audio",
            serde_json::json!({"duration": 4000, "downloadCode": "dc", "recognition": "我要退款"}),
        );
        assert_eq!(
            (m.content, m.text.as_str()),
            (ContentKind::Voice, "我要退款")
        );
        let m = case("audio", serde_json::json!({"downloadCode": "dc"}));
        assert_eq!(m.text, VOICE_NOTE);
        let m = case(
            "video",
            serde_json::json!({"duration": 5, "downloadCode": "dc", "videoType": "mp4"}),
        );
        assert_eq!(
            (m.content, m.text.as_str()),
            (ContentKind::Video, VIDEO_NOTE)
        );
        let m = case(
            "file",
            serde_json::json!({"downloadCode": "dc", "fileName": "发票.pdf"}),
        );
        assert_eq!(
            (m.content, m.text.as_str()),
            (ContentKind::File, "[文件] 发票.pdf")
        );
        // content as a JSON string is tolerated
        let m = case("file", Value::String(r#"{"fileName":"a.txt"}"#.into()));
        assert_eq!(m.text, "[文件] a.txt");
        let m = case(
            "richText",
            serde_json::json!({"richText": [
                {"text": "@客服 这个订单"},
                {"pictureDownloadCode": "p", "downloadCode": "d", "type": "picture"},
                {"text": "\n怎么退？"}
            ]}),
        );
        assert_eq!(
            (m.content, m.text.as_str()),
            (ContentKind::RichText, "这个订单[图片]\n怎么退？")
        );
        let m = case("chatRecord", serde_json::json!({}));
        assert_eq!(m.content, ContentKind::Other("chatRecord".into()));
        assert_eq!(m.text, "[chatRecord]");
    }

    #[test]
    fn malformed_bodies_say_why() {
        for (body, needle) in [
            ("", "EOF"),
            ("{", "EOF"),
            ("[]", "object"),
            ("5", "invalid type"),
            (r#"{"msgId": 5}"#, "invalid type"),
        ] {
            match parse_callback("c", body.as_bytes(), 0) {
                Err(DecodeError::Malformed(why)) => assert!(why.contains(needle), "{why}"),
                other => panic!("{body:?}: {other:?}"),
            }
        }
        for field in ["msgId", "conversationId", "msgtype"] {
            let body = with(field, Value::Null);
            match parse_callback("c", body.as_bytes(), 0) {
                Err(DecodeError::Malformed(why)) => assert!(why.contains(field), "{why}"),
                other => panic!("{field}: {other:?}"),
            }
        }
        let mut v: Value = serde_json::from_str(GROUP_TEXT).expect("json");
        v["senderStaffId"] = Value::Null;
        v["senderId"] = "".into();
        assert!(matches!(
            parse_callback("c", v.to_string().as_bytes(), 0),
            Err(DecodeError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_callback("c", &body, 0);
        }

        #[test]
        fn parse_never_panics_on_odd_fields(
            text in "\\PC{0,64}",
            ctype in prop_oneof![Just(Value::from("1")), Just(Value::from("2")), Just(Value::from(2)), Just(Value::Null), Just(Value::from(-1)), Just(Value::from(true))],
            content in prop_oneof![Just(Value::Null), Just(Value::from("x")), Just(serde_json::json!({"richText": 5})), Just(serde_json::json!({"richText": [1, null, {"text": 3}]}))],
            msgtype in prop_oneof![Just("text"), Just("richText"), Just("picture"), Just("audio"), Just("file"), Just("x")],
        ) {
            let mut v: Value = serde_json::from_str(GROUP_TEXT).expect("json");
            v["text"] = serde_json::json!({"content": text});
            v["conversationType"] = ctype;
            v["content"] = content;
            v["msgtype"] = msgtype.into();
            let _ = parse_callback("c", v.to_string().as_bytes(), 0);
        }

        #[test]
        fn clean_text_is_trimmed(raw in "\\PC{0,64}", group in any::<bool>()) {
            let t = clean_text(&raw, group);
            prop_assert_eq!(t.trim(), t.as_str());
        }
    }
}
