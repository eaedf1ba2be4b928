//! DingTalk Stream mode (dingtalk.md §7): the robot's messages over a WebSocket kefu opens,
//! so no public URL, TLS or signature is needed. Pure helpers only: the server's stream
//! client owns the socket, reconnects, and hands robot messages to
//! [`DingTalk::decode_stream`](super::DingTalk::decode_stream).
//!
//! 1. [`open_connection_request`] → `POST {api_base}/v1.0/gateway/connections/open`;
//! 2. [`parse_open_connection`] → [`StreamEndpoint::websocket_url`] (`endpoint?ticket=…`;
//!    the ticket is single-use and lives 90 s);
//! 3. per text frame: [`parse_frame`], handle it, send [`StreamFrame::response`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::{AnswerError, CredentialRequest};
use crate::{DecodeError, Secret};

/// `POST {api_base}/v1.0/gateway/connections/open`.
pub const OPEN_CONNECTION_PATH: &str = "/v1.0/gateway/connections/open";
/// The CALLBACK topic robot messages arrive on.
pub const ROBOT_TOPIC: &str = "/v1.0/im/bot/messages/get";

#[derive(Serialize)]
struct Subscription<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    topic: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OpenBody<'a> {
    client_id: &'a str,
    client_secret: &'a str,
    subscriptions: [Subscription<'a>; 1],
    ua: &'a str,
    local_ip: &'a str,
}

/// The open-connection request: `{clientId, clientSecret, subscriptions:[{type:"CALLBACK",
/// topic:"/v1.0/im/bot/messages/get"}], ua, localIp}` (dingtalk.md §7). `client_id` /
/// `client_secret` are the app's AppKey / AppSecret; `ua` names the client
/// (e.g. `kefu/0.1`); `local_ip` may be empty.
pub fn open_connection_request(
    client_id: &Secret,
    client_secret: &Secret,
    ua: &str,
    local_ip: &str,
) -> CredentialRequest {
    let body = OpenBody {
        client_id: client_id.expose(),
        client_secret: client_secret.expose(),
        subscriptions: [Subscription {
            kind: "CALLBACK",
            topic: ROBOT_TOPIC,
        }],
        ua,
        local_ip,
    };
    CredentialRequest {
        method: "POST",
        path: OPEN_CONNECTION_PATH,
        body: Secret::new(serde_json::to_string(&body).unwrap_or_default()),
    }
}

/// Where to connect: the open-connection answer `{endpoint, ticket}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEndpoint {
    pub endpoint: String,
    /// Single-use, 90 s: a credential, so kept out of `Debug`.
    pub ticket: Secret,
}

impl StreamEndpoint {
    /// `endpoint?ticket=URLENCODED` (a `Secret`: it carries the ticket).
    pub fn websocket_url(&self) -> Secret {
        let ticket: String =
            url::form_urlencoded::byte_serialize(self.ticket.expose().as_bytes()).collect();
        let sep = if self.endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        Secret::new(format!("{}{sep}ticket={ticket}", self.endpoint))
    }
}

/// Read the open-connection answer. The endpoint must be a `ws://` or `wss://` URL.
pub fn parse_open_connection(status: u16, body: &[u8]) -> Result<StreamEndpoint, AnswerError> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let bad = |reason: &str| AnswerError::Malformed {
        status,
        reason: reason.to_string(),
    };
    if !(200..300).contains(&status) {
        return Err(match v.get("code") {
            Some(code) => AnswerError::OpenApi {
                status,
                code: code
                    .as_str()
                    .map_or_else(|| code.to_string(), str::to_string),
                message: v
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            },
            None => bad("no code in error answer"),
        });
    }
    let field = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let endpoint = field("endpoint").ok_or_else(|| bad("no endpoint"))?;
    let ticket = field("ticket").ok_or_else(|| bad("no ticket"))?;
    let ws = url::Url::parse(&endpoint)
        .ok()
        .is_some_and(|u| matches!(u.scheme(), "ws" | "wss"));
    if !ws {
        return Err(bad("endpoint is not a ws:// or wss:// URL"));
    }
    Ok(StreamEndpoint {
        endpoint,
        ticket: Secret::new(ticket),
    })
}

/// One frame received on the stream, by what kefu does with it. Every frame is answered
/// with [`StreamFrame::response`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamFrame {
    /// SYSTEM `ping`: answer with the echo.
    Ping { message_id: String, data: String },
    /// SYSTEM `disconnect`: ack, close, reconnect with a new ticket.
    Disconnect { message_id: String },
    /// CALLBACK on [`ROBOT_TOPIC`]: `data` is the robot callback JSON (dingtalk.md §2).
    RobotMessage { message_id: String, data: String },
    /// Any other type or topic (EVENT, other callbacks): ack and ignore.
    Other {
        kind: String,
        topic: String,
        message_id: String,
    },
}

#[derive(Deserialize)]
struct Frame {
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, Value>,
    data: Option<Value>,
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Parse one text frame `{specVersion, type, headers:{topic, messageId, …}, data:"<json>"}`.
/// Not JSON, or no `type` → [`DecodeError::Malformed`].
pub fn parse_frame(frame: &str) -> Result<StreamFrame, DecodeError> {
    let f: Frame = serde_json::from_str(frame)
        .map_err(|e| DecodeError::Malformed(format!("dingtalk stream frame: {e}")))?;
    let kind = f
        .kind
        .ok_or_else(|| DecodeError::Malformed("dingtalk stream frame: no type".into()))?;
    let header = |k: &str| f.headers.get(k).map(text_of).unwrap_or_default();
    let message_id = header("messageId");
    let topic = header("topic");
    let data = f.data.as_ref().map(text_of).unwrap_or_default();
    Ok(match (kind.as_str(), topic.as_str()) {
        ("SYSTEM", "ping") => StreamFrame::Ping { message_id, data },
        ("SYSTEM", "disconnect") => StreamFrame::Disconnect { message_id },
        ("CALLBACK", ROBOT_TOPIC) => StreamFrame::RobotMessage { message_id, data },
        _ => StreamFrame::Other {
            kind,
            topic,
            message_id,
        },
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AckHeaders<'a> {
    message_id: &'a str,
    content_type: &'static str,
}

#[derive(Serialize)]
struct Ack<'a> {
    code: u16,
    headers: AckHeaders<'a>,
    message: &'static str,
    data: &'a str,
}

fn ack_with(message_id: &str, data: &str) -> String {
    serde_json::to_string(&Ack {
        code: 200,
        headers: AckHeaders {
            message_id,
            content_type: "application/json",
        },
        message: "OK",
        data,
    })
    .unwrap_or_default()
}

/// The ack of a frame: `{"code":200,"headers":{"messageId":…,"contentType":"application/json"},
/// "message":"OK","data":"{\"response\":null}"}` (dingtalk.md §7).
pub fn ack_frame(message_id: &str) -> String {
    ack_with(message_id, r#"{"response":null}"#)
}

/// The answer to a SYSTEM ping: the ack shape with the ping's `data` echoed back.
pub fn pong_frame(message_id: &str, ping_data: &str) -> String {
    ack_with(message_id, ping_data)
}

impl StreamFrame {
    pub fn message_id(&self) -> &str {
        match self {
            StreamFrame::Ping { message_id, .. }
            | StreamFrame::Disconnect { message_id }
            | StreamFrame::RobotMessage { message_id, .. }
            | StreamFrame::Other { message_id, .. } => message_id,
        }
    }

    /// What to send back: the echo for a ping, the ack for everything else. Ack a robot
    /// message once it is stored (like answering the HTTP callback with 200).
    pub fn response(&self) -> String {
        match self {
            StreamFrame::Ping { message_id, data } => pong_frame(message_id, data),
            other => ack_frame(other.message_id()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn open_connection_body_exact() {
        let r = open_connection_request(
            &Secret::new("dingkey"),
            &Secret::new("secret"),
            "kefu/0.1",
            "10.0.0.2",
        );
        assert_eq!(
            (r.method, r.path),
            ("POST", "/v1.0/gateway/connections/open")
        );
        assert_eq!(
            r.body.expose(),
            r#"{"clientId":"dingkey","clientSecret":"secret","subscriptions":[{"type":"CALLBACK","topic":"/v1.0/im/bot/messages/get"}],"ua":"kefu/0.1","localIp":"10.0.0.2"}"#
        );
        assert!(!format!("{r:?}").contains("secret\""));
    }

    #[test]
    fn open_connection_answer_to_url() {
        let ep = parse_open_connection(
            200,
            br#"{"endpoint":"wss://wss-open-connection.dingtalk.com:443/connect","ticket":"a+b/c="}"#,
        )
        .expect("endpoint");
        assert_eq!(
            ep.websocket_url().expose(),
            "wss://wss-open-connection.dingtalk.com:443/connect?ticket=a%2Bb%2Fc%3D"
        );
        assert!(!format!("{ep:?}").contains("a+b"));
        let ep = parse_open_connection(
            200,
            br#"{"endpoint":"ws://127.0.0.1:9/c?x=1","ticket":"t"}"#,
        )
        .expect("local");
        assert_eq!(
            ep.websocket_url().expose(),
            "ws://127.0.0.1:9/c?x=1&ticket=t"
        );
        assert!(parse_open_connection(200, br#"{"endpoint":"https://x","ticket":"t"}"#).is_err());
        assert!(parse_open_connection(200, br#"{"endpoint":"wss://x"}"#).is_err());
        assert!(matches!(
            parse_open_connection(400, br#"{"code":"invalidClientId","message":"bad"}"#),
            Err(AnswerError::OpenApi { status: 400, .. })
        ));
    }

    #[test]
    fn frames_parse() {
        let ping = r#"{"specVersion":"1.0","type":"SYSTEM","headers":{"contentType":"application/json","messageId":"m1","time":"1690362102194","topic":"ping"},"data":"{\"opaque\":\"abc\"}"}"#;
        let f = parse_frame(ping).expect("ping");
        assert_eq!(
            f,
            StreamFrame::Ping {
                message_id: "m1".into(),
                data: r#"{"opaque":"abc"}"#.into()
            }
        );
        assert_eq!(
            f.response(),
            r#"{"code":200,"headers":{"messageId":"m1","contentType":"application/json"},"message":"OK","data":"{\"opaque\":\"abc\"}"}"#
        );

        let disc = r#"{"specVersion":"1.0","type":"SYSTEM","headers":{"messageId":"m2","topic":"disconnect"},"data":"{\"reason\":\"upgrade\"}"}"#;
        assert_eq!(
            parse_frame(disc).expect("disc"),
            StreamFrame::Disconnect {
                message_id: "m2".into()
            }
        );

        let body = crate::dingtalk::SAMPLE_GROUP_TEXT;
        let cb = serde_json::json!({
            "specVersion": "1.0",
            "type": "CALLBACK",
            "headers": {"appId": "a", "connectionId": "c", "contentType": "application/json",
                        "messageId": "m3", "time": 1690362102194u64, "topic": ROBOT_TOPIC},
            "data": body,
        });
        let f = parse_frame(&cb.to_string()).expect("callback");
        assert_eq!(
            f,
            StreamFrame::RobotMessage {
                message_id: "m3".into(),
                data: body.into()
            }
        );
        assert_eq!(
            f.response(),
            r#"{"code":200,"headers":{"messageId":"m3","contentType":"application/json"},"message":"OK","data":"{\"response\":null}"}"#
        );

        let ev = r#"{"type":"EVENT","headers":{"messageId":"m4","topic":"*","eventType":"chat_update"},"data":"{}"}"#;
        assert_eq!(
            parse_frame(ev).expect("event"),
            StreamFrame::Other {
                kind: "EVENT".into(),
                topic: "*".into(),
                message_id: "m4".into()
            }
        );
        let other_cb = r#"{"type":"CALLBACK","headers":{"messageId":"m5","topic":"/v1.0/card/instances/callback"},"data":"{}"}"#;
        assert!(matches!(
            parse_frame(other_cb),
            Ok(StreamFrame::Other { .. })
        ));

        assert!(matches!(
            parse_frame("not json"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            parse_frame(r#"{"headers":{}}"#),
            Err(DecodeError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn parse_frame_never_panics(s in "\\PC{0,256}") {
            let _ = parse_frame(&s).map(|f| f.response());
        }

        /// Well-formed frames with odd values in every field: Ok or Err, never a panic; a
        /// robot message keeps its data as the text it was sent as.
        #[test]
        fn structured_frames_never_panic(
            kind in prop_oneof![Just(Value::from("SYSTEM")), Just(Value::from("CALLBACK")), Just(Value::from("EVENT")), Just(Value::Null), Just(Value::from(5)), Just(Value::from("")), "\\PC{0,10}".prop_map(Value::from)],
            topic in prop_oneof![Just(Value::from(ROBOT_TOPIC)), Just(Value::from("ping")), Just(Value::from("disconnect")), Just(Value::Null), Just(Value::from(1)), Just(serde_json::json!({"a": 1}))],
            id in prop_oneof![Just(Value::Null), "\\PC{0,20}".prop_map(Value::from), Just(Value::from(7)), Just(serde_json::json!([1]))],
            data in prop_oneof![Just(Value::Null), "\\PC{0,80}".prop_map(Value::from), Just(serde_json::json!({"msgId": 1})), Just(Value::from(2.5))],
            headers_null in any::<bool>(),
        ) {
            let headers = if headers_null { Value::Null } else { serde_json::json!({"topic": topic, "messageId": id}) };
            let frame = serde_json::json!({"specVersion": "1.0", "type": kind, "headers": headers, "data": data}).to_string();
            if let Ok(f) = parse_frame(&frame) {
                let v: Value = serde_json::from_str(&f.response()).expect("the answer is JSON");
                prop_assert_eq!(v["headers"]["messageId"].as_str(), Some(f.message_id()));
                if let (StreamFrame::RobotMessage { data: got, .. }, Value::String(sent)) = (&f, &data) {
                    prop_assert_eq!(got, sent);
                }
            }
        }

        #[test]
        fn open_connection_answers_never_panic(status in any::<u16>(), body in "\\PC{0,120}", endpoint in "\\PC{0,40}") {
            let _ = parse_open_connection(status, body.as_bytes());
            let shaped = serde_json::json!({"endpoint": endpoint, "ticket": "t"}).to_string();
            if let Ok(ep) = parse_open_connection(status, shaped.as_bytes()) {
                prop_assert!(ep.endpoint.starts_with("ws"));
                let _ = ep.websocket_url();
            }
        }

        #[test]
        fn ack_is_json_with_the_id(id in "\\PC{0,40}") {
            let v: Value = serde_json::from_str(&ack_frame(&id)).expect("json");
            prop_assert_eq!(v["headers"]["messageId"].as_str(), Some(id.as_str()));
            prop_assert_eq!(v["code"].as_u64(), Some(200));
        }
    }
}
