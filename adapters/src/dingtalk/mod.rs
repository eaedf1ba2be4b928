//! DingTalk (钉钉) enterprise-internal app robot. `dingtalk.md §n` in comments are the sections
//! of the shared protocol notes (`protocols/dingtalk.md`); the operator guide is
//! `docs/channels/dingtalk.md`.
//!
//! - [`DingTalk`] is the [`Channel`]: `decode` checks the `timestamp`/`sign` headers and turns
//!   the callback JSON into an [`Inbound`](crate::Inbound); `encode` turns an [`Outbound`] into
//!   calls to the message's `sessionWebhook` while it lives, else to the OpenAPI robot send
//!   endpoints.
//! - [`sign`]: callback verification and custom group robot URL signing.
//! - [`payload`]: the callback body. [`reply`]: message bodies and size limits.
//! - [`api`]: access token, reading DingTalk's answers. [`stream`]: Stream mode frames.

use std::time::SystemTime;

use bytes::Bytes;

use crate::{
    unix_ms, Call, CallAuth, Channel, ChannelKind, DecodeError, Decoded, EncodeError,
    HostAllowlist, Outbound, Secret,
};

pub mod api;
pub mod payload;
pub mod reply;
pub mod sign;
pub mod stream;

pub use api::{AccessToken, AnswerError, CredentialRequest, SendReceipt};
pub use stream::{StreamEndpoint, StreamFrame};

/// Keys of `Inbound::route` / `Outbound::route` this channel writes and reads.
pub mod route {
    /// `"1"` single chat, `"2"` group.
    pub const CONVERSATION_TYPE: &str = "conversation_type";
    /// The callback's `sessionWebhook`, as received.
    pub const SESSION_WEBHOOK: &str = "session_webhook";
    /// `sessionWebhookExpiredTime`, Unix ms.
    pub const SESSION_WEBHOOK_EXPIRES_MS: &str = "session_webhook_expires_ms";
    /// `senderStaffId`; present but empty when DingTalk gave none.
    pub const SENDER_STAFF_ID: &str = "sender_staff_id";
    /// The callback's `robotCode`.
    pub const ROBOT_CODE: &str = "robot_code";
    /// `conversationId` (the group's `openConversationId`).
    pub const CONVERSATION_ID: &str = "conversation_id";

    /// [`CONVERSATION_TYPE`] of a single chat.
    pub const SINGLE: &str = "1";
    /// [`CONVERSATION_TYPE`] of a group.
    pub const GROUP: &str = "2";
}

/// Stop using a sessionWebhook this long before its stated expiry: integrators report it
/// dying early (dingtalk.md §3.1). The sender also falls back to OpenAPI on any error.
pub const SESSION_WEBHOOK_MARGIN_MS: u64 = 60_000;

/// What a DingTalk channel needs from config.
#[derive(Clone, Debug)]
pub struct DingTalkParams {
    /// The config `name` (`/dingtalk/{name}`).
    pub name: String,
    /// AppKey / ClientId.
    pub app_key: Secret,
    /// AppSecret / ClientSecret: the callback signing key.
    pub app_secret: Secret,
    /// The robot's code, for OpenAPI sends. Empty = the code the callback carried.
    pub robot_code: String,
}

/// A DingTalk channel config that can't work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("dingtalk channel {name:?}: {reason}")]
pub struct ParamsError {
    pub name: String,
    pub reason: &'static str,
}

/// The DingTalk robot codec. Holds keys, no connections.
#[derive(Clone, Debug)]
pub struct DingTalk {
    name: String,
    app_key: Secret,
    app_secret: Secret,
    robot_code: String,
    /// Hosts a callback's `sessionWebhook` may point at: it arrives in a request, so it is
    /// used only when allowed ([`HostAllowlist`]); otherwise the reply goes through the
    /// OpenAPI under the configured `api_base`.
    webhook_hosts: HostAllowlist,
}

impl DingTalk {
    pub fn new(params: DingTalkParams) -> Result<Self, ParamsError> {
        let fail = |reason| {
            Err(ParamsError {
                name: params.name.clone(),
                reason,
            })
        };
        if params.name.trim().is_empty() {
            return fail("name is empty");
        }
        if params.app_key.expose().trim().is_empty() {
            return fail("app_key is empty");
        }
        if params.app_secret.expose().trim().is_empty() {
            return fail("app_secret is empty");
        }
        Ok(DingTalk {
            name: params.name,
            app_key: params.app_key,
            app_secret: params.app_secret,
            robot_code: params.robot_code.trim().to_string(),
            webhook_hosts: HostAllowlist::dingtalk(),
        })
    }

    /// Replace the sessionWebhook host allowlist (default: `*.dingtalk.com`). Tests and
    /// private deployments add their own hosts.
    pub fn with_webhook_hosts(mut self, hosts: HostAllowlist) -> Self {
        self.webhook_hosts = hosts;
        self
    }

    /// The sessionWebhook host allowlist.
    pub fn webhook_hosts(&self) -> &HostAllowlist {
        &self.webhook_hosts
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A robot message from a Stream mode CALLBACK frame ([`StreamFrame::RobotMessage`]'s
    /// `data`). No signature: the WebSocket itself was opened with the app's credentials.
    pub fn decode_stream(&self, data: &str, now: SystemTime) -> Result<Decoded, DecodeError> {
        payload::parse_callback(&self.name, data.as_bytes(), unix_ms(now))
    }

    /// `POST {api_base}/v1.0/oauth2/accessToken` for this app.
    pub fn access_token_request(&self) -> CredentialRequest {
        api::access_token_request(&self.app_key, &self.app_secret)
    }

    /// `POST {api_base}/v1.0/gateway/connections/open` for this app (Stream mode).
    pub fn open_connection_request(&self, ua: &str, local_ip: &str) -> CredentialRequest {
        stream::open_connection_request(&self.app_key, &self.app_secret, ua, local_ip)
    }

    /// The `sessionWebhook` to answer `out` through, if it was given, is an http(s) URL on an
    /// allowed host (SSRF guard, see [`with_webhook_hosts`](Self::with_webhook_hosts)) and
    /// lives past `now` + [`SESSION_WEBHOOK_MARGIN_MS`]. A missing expiry counts as expired.
    pub fn live_session_webhook<'a>(&self, out: &'a Outbound, now: SystemTime) -> Option<&'a str> {
        let url = out.route.get(route::SESSION_WEBHOOK)?;
        let expires: u64 = out
            .route
            .get(route::SESSION_WEBHOOK_EXPIRES_MS)?
            .parse()
            .ok()?;
        (self.webhook_hosts.allows_url(url)
            && unix_ms(now).saturating_add(SESSION_WEBHOOK_MARGIN_MS) < expires)
            .then_some(url.as_str())
    }

    /// Calls that post `out` to `webhook` as received (no token, [`CallAuth::None`]), split to
    /// fit [`reply::MAX_BODY_BYTES`]. Groups @-mention the sender.
    pub fn webhook_calls(&self, out: &Outbound, webhook: &str) -> Vec<Call> {
        let text = out.text.trim();
        if text.is_empty() {
            return Vec::new();
        }
        let at = is_group(out).then(|| staff_id(out)).flatten();
        reply::fit_bodies(text, out.markdown, &|md, part| {
            if md {
                reply::markdown(&reply::markdown_title(part), part, at)
            } else {
                reply::text(part, at)
            }
        })
        .into_iter()
        .map(|body| Call {
            method: "POST".into(),
            url: webhook.to_string(),
            body,
            auth: CallAuth::None,
        })
        .collect()
    }

    /// OpenAPI calls that deliver `out` (relative paths, [`CallAuth::DingTalkToken`]): to the
    /// group by `openConversationId`, or to the single-chat user by staff id. Group replies
    /// never go to the sender's single chat (dingtalk.md §3.2). The sender uses this when a
    /// sessionWebhook call fails; [`DingTalk::openapi_fallback`] rebuilds just the failed part.
    pub fn openapi_calls(&self, out: &Outbound) -> Result<Vec<Call>, EncodeError> {
        self.openapi_for(out, out.text.trim(), out.markdown)
    }

    /// The OpenAPI calls that replace one failed sessionWebhook call of `out` (its text or
    /// markdown part), so parts already delivered are not sent twice.
    pub fn openapi_fallback(
        &self,
        out: &Outbound,
        failed: &Call,
    ) -> Result<Vec<Call>, EncodeError> {
        if failed.auth != CallAuth::None {
            return Err(EncodeError::Invalid(
                "dingtalk: not a sessionWebhook call".into(),
            ));
        }
        let v: serde_json::Value = serde_json::from_str(&failed.body)
            .map_err(|e| EncodeError::Invalid(format!("dingtalk: failed call body: {e}")))?;
        let (text, md) = match v["msgtype"].as_str() {
            Some("text") => (v["text"]["content"].as_str(), false),
            Some("markdown") => (v["markdown"]["text"].as_str(), true),
            _ => (None, false),
        };
        let text = text.ok_or_else(|| {
            EncodeError::Invalid("dingtalk: only text and markdown have an OpenAPI fallback".into())
        })?;
        self.openapi_for(out, text, md)
    }

    fn openapi_for(
        &self,
        out: &Outbound,
        text: &str,
        markdown: bool,
    ) -> Result<Vec<Call>, EncodeError> {
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        let robot = if self.robot_code.is_empty() {
            out.route
                .get(route::ROBOT_CODE)
                .map(String::as_str)
                .unwrap_or("")
        } else {
            &self.robot_code
        };
        if robot.is_empty() {
            return Err(EncodeError::Invalid("dingtalk: no robot_code".into()));
        }
        let (path, bodies) = if is_group(out) {
            let conv = out
                .route
                .get(route::CONVERSATION_ID)
                .map(String::as_str)
                .unwrap_or(&out.conversation);
            if conv.is_empty() {
                return Err(EncodeError::Invalid(
                    "dingtalk: no openConversationId".into(),
                ));
            }
            let build = |md: bool, part: &str| {
                let title = reply::markdown_title(part);
                reply::group_send(robot, conv, openapi_msg(md, &title, part))
            };
            (
                reply::GROUP_SEND_PATH,
                reply::fit_bodies(text, markdown, &build),
            )
        } else {
            // A route from a callback always has the key; an empty value means DingTalk gave
            // no staff id and user.id is the encrypted senderId, which OpenAPI refuses.
            let user = match out.route.get(route::SENDER_STAFF_ID) {
                Some(id) => id.as_str(),
                None => out.user.id.as_str(),
            };
            if user.is_empty() {
                return Err(EncodeError::Invalid(
                    "dingtalk: no senderStaffId for an OpenAPI single-chat send".into(),
                ));
            }
            let build = |md: bool, part: &str| {
                let title = reply::markdown_title(part);
                reply::batch_send(robot, &[user], openapi_msg(md, &title, part))
            };
            (
                reply::SINGLE_SEND_PATH,
                reply::fit_bodies(text, markdown, &build),
            )
        };
        Ok(bodies
            .into_iter()
            .map(|body| Call {
                method: "POST".into(),
                url: path.to_string(),
                body,
                auth: CallAuth::DingTalkToken,
            })
            .collect())
    }
}

fn openapi_msg<'a>(markdown: bool, title: &'a str, text: &'a str) -> reply::OpenApiMsg<'a> {
    if markdown {
        reply::OpenApiMsg::Markdown { title, text }
    } else {
        reply::OpenApiMsg::Text(text)
    }
}

fn is_group(out: &Outbound) -> bool {
    out.route.get(route::CONVERSATION_TYPE).map(String::as_str) == Some(route::GROUP)
}

fn staff_id(out: &Outbound) -> Option<&str> {
    out.route
        .get(route::SENDER_STAFF_ID)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

impl Channel for DingTalk {
    fn kind(&self) -> ChannelKind {
        ChannelKind::DingTalk
    }

    /// dingtalk.md §1–2: headers first (401 on failure, body unread), then the JSON.
    fn decode(&self, req: &http::Request<Bytes>, now: SystemTime) -> Result<Decoded, DecodeError> {
        let now_ms = unix_ms(now);
        sign::verify_headers(req.headers(), &self.app_secret, now_ms)?;
        payload::parse_callback(&self.name, req.body(), now_ms)
    }

    /// The live sessionWebhook when there is one, else OpenAPI. `rng` is unused: DingTalk
    /// bodies carry no nonce.
    fn encode(
        &self,
        out: &Outbound,
        now: SystemTime,
        _rng: &mut dyn rand_core::RngCore,
    ) -> Result<Vec<Call>, EncodeError> {
        match self.live_session_webhook(out, now) {
            Some(hook) => Ok(self.webhook_calls(out, hook)),
            None => self.openapi_calls(out),
        }
    }

    /// dingtalk.md §3: a failed sessionWebhook call is retried through the OpenAPI.
    fn fallback(&self, out: &Outbound, failed: &Call) -> Vec<Call> {
        if failed.auth != crate::CallAuth::None {
            return Vec::new();
        }
        self.openapi_fallback(out, failed).unwrap_or_default()
    }
}

/// A realistic group text callback (shape of dingtalk.md §2), for tests.
#[cfg(test)]
pub(crate) const SAMPLE_GROUP_TEXT: &str = r#"{"conversationId":"cidp8R+kAtw8hBL+bUYbQbu9A==","atUsers":[{"dingtalkId":"$:LWCP_v1:$robot"}],"chatbotCorpId":"ding9f50b15bccd16741","chatbotUserId":"$:LWCP_v1:$robot","msgId":"msgSz7QmWcu8tG9Mx7Z1Zm8ew==","senderNick":"张三","isAdmin":true,"senderStaffId":"manager4711","sessionWebhookExpiredTime":1577265836757,"createAt":1577262236757,"senderCorpId":"ding9f50b15bccd16741","conversationType":"2","senderId":"$:LWCP_v1:$sender","conversationTitle":"客服群","isInAtList":true,"sessionWebhook":"https://oapi.dingtalk.com/robot/sendBySession?session=abc","text":{"content":" 怎么申请退款？"},"robotCode":"dingrobot1","msgtype":"text"}"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Inbound, UserRef};
    use proptest::prelude::*;
    use rand::{rngs::StdRng, SeedableRng};
    use std::time::Duration;

    const SECRET: &str = "this is a secret";
    const TS: &str = "1577262236757";
    const SIGN: &str = "DJrE6qdyVGCQz9z5r2MDuNcNAhwYnuAkyj13cx169CA=";

    fn channel(robot_code: &str) -> DingTalk {
        DingTalk::new(DingTalkParams {
            name: "helpdesk".into(),
            app_key: Secret::new("dingappkey"),
            app_secret: Secret::new(SECRET),
            robot_code: robot_code.into(),
        })
        .expect("valid params")
    }

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn request(ts: Option<&str>, sign: Option<&str>, body: &str) -> http::Request<Bytes> {
        let mut b = http::Request::post("/dingtalk/helpdesk")
            .header("content-type", "application/json; charset=utf-8");
        if let Some(ts) = ts {
            b = b.header("timestamp", ts);
        }
        if let Some(sign) = sign {
            b = b.header("sign", sign);
        }
        b.body(Bytes::from(body.to_string())).expect("request")
    }

    fn inbound(ch: &DingTalk, body: &str) -> Inbound {
        match ch.decode(&request(Some(TS), Some(SIGN), body), at(1577262236757)) {
            Ok(Decoded::Message(m)) => *m,
            other => panic!("{other:?}"),
        }
    }

    fn answer(m: &Inbound, text: &str) -> Outbound {
        Outbound {
            channel: m.channel.clone(),
            conversation: m.conversation.clone(),
            user: m.user.clone(),
            text: text.into(),
            markdown: false,
            route: m.route.clone(),
        }
    }

    #[test]
    fn params_are_checked_and_redacted() {
        let p = DingTalkParams {
            name: "h".into(),
            app_key: Secret::new("k"),
            app_secret: Secret::new(""),
            robot_code: String::new(),
        };
        assert_eq!(
            DingTalk::new(p.clone()).expect_err("no secret").reason,
            "app_secret is empty"
        );
        let ch = channel("r");
        assert!(!format!("{ch:?}").contains(SECRET));
        assert_eq!(ch.kind(), ChannelKind::DingTalk);
        assert_eq!(ch.name(), "helpdesk");
    }

    #[test]
    fn decode_vector_signed_callback() {
        let m = inbound(&channel("dingrobot1"), SAMPLE_GROUP_TEXT);
        assert_eq!(m.text, "怎么申请退款？");
        assert_eq!(
            m.user,
            UserRef {
                id: "manager4711".into(),
                name: Some("张三".into())
            }
        );
    }

    #[test]
    fn decode_refuses_before_reading_the_body() {
        let ch = channel("");
        let now = at(1577262236757);
        let cases = [
            (None, Some(SIGN), DecodeError::StaleTimestamp),
            (Some(TS), None, DecodeError::BadSignature),
            (
                Some(TS),
                Some("DJrE6qdyVGCQz9z5r2MDuNcNAhwYnuAkyj13cx169CB="),
                DecodeError::BadSignature,
            ),
            (Some("1577262236758"), Some(SIGN), DecodeError::BadSignature),
        ];
        for (ts, sign, want) in cases {
            // garbage body: the signature decides first
            assert_eq!(ch.decode(&request(ts, sign, "not json"), now), Err(want));
        }
        assert_eq!(
            ch.decode(
                &request(Some(TS), Some(SIGN), SAMPLE_GROUP_TEXT),
                at(1577262236757 + 2 * 3_600_000)
            ),
            Err(DecodeError::StaleTimestamp)
        );
        assert!(matches!(
            ch.decode(&request(Some(TS), Some(SIGN), "{"), now),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn group_reply_goes_to_the_session_webhook_with_at() {
        let ch = channel("dingrobot1");
        let m = inbound(&ch, SAMPLE_GROUP_TEXT);
        let calls = ch
            .encode(
                &answer(&m, " 请在订单页申请退款。 "),
                at(1577262236757),
                &mut StdRng::seed_from_u64(7),
            )
            .expect("calls");
        assert_eq!(
            calls,
            vec![Call {
                method: "POST".into(),
                url: "https://oapi.dingtalk.com/robot/sendBySession?session=abc".into(),
                body: r#"{"msgtype":"text","text":{"content":"请在订单页申请退款。"},"at":{"atUserIds":["manager4711"],"atMobiles":[],"isAtAll":false}}"#.into(),
                auth: CallAuth::None,
            }]
        );
        let mut md = answer(&m, "#### 退款\n- 订单页");
        md.markdown = true;
        let calls = ch
            .encode(&md, at(1577262236757), &mut StdRng::seed_from_u64(7))
            .expect("calls");
        assert_eq!(
            calls[0].body,
            r#####"{"msgtype":"markdown","markdown":{"title":"退款","text":"#### 退款\n- 订单页"},"at":{"atUserIds":["manager4711"],"atMobiles":[],"isAtAll":false}}"#####
        );
    }

    #[test]
    fn a_webhook_off_the_allowlist_is_never_called() {
        // A signed callback naming an internal URL (SSRF): the reply goes through the OpenAPI
        // under the configured api_base instead, never to the named host.
        let ch = channel("dingrobot1");
        let now = at(1577262236757);
        for hook in [
            "http://127.0.0.1:8080/admin/reingest",
            "http://169.254.169.254/latest/meta-data/",
            "https://oapi.dingtalk.com.evil.example/robot/sendBySession",
            "https://oapi.dingtalk.com@10.0.0.1/robot/sendBySession",
        ] {
            let body = SAMPLE_GROUP_TEXT.replace(
                "https://oapi.dingtalk.com/robot/sendBySession?session=abc",
                hook,
            );
            let m = inbound(&ch, &body);
            let calls = ch
                .encode(&answer(&m, "好的"), now, &mut StdRng::seed_from_u64(7))
                .expect("calls");
            assert!(
                calls
                    .iter()
                    .all(|c| c.auth == CallAuth::DingTalkToken && c.url.starts_with("/v1.0/")),
                "{hook}: {calls:?}"
            );
        }
        // Allowed by the operator (tests, private deployments): used as received.
        let local = ch
            .clone()
            .with_webhook_hosts(HostAllowlist::new(&["127.0.0.1"]).expect("pattern"));
        let body = SAMPLE_GROUP_TEXT.replace(
            "https://oapi.dingtalk.com/robot/sendBySession?session=abc",
            "http://127.0.0.1:9/hook",
        );
        let m = inbound(&local, &body);
        let calls = local
            .encode(&answer(&m, "好的"), now, &mut StdRng::seed_from_u64(7))
            .expect("calls");
        assert_eq!(calls[0].url, "http://127.0.0.1:9/hook");
        assert_eq!(calls[0].auth, CallAuth::None);
        // ... and the default host is then no longer allowed.
        let m = inbound(&local, SAMPLE_GROUP_TEXT);
        assert!(local.live_session_webhook(&answer(&m, "x"), now).is_none());
    }

    #[test]
    fn single_chat_webhook_reply_has_no_at() {
        let ch = channel("dingrobot1");
        let body =
            SAMPLE_GROUP_TEXT.replace(r#""conversationType":"2""#, r#""conversationType":"1""#);
        let m = inbound(&ch, &body);
        let calls = ch
            .encode(
                &answer(&m, "好的"),
                at(1577262236757),
                &mut StdRng::seed_from_u64(7),
            )
            .expect("calls");
        assert_eq!(
            calls[0].body,
            r#"{"msgtype":"text","text":{"content":"好的"}}"#
        );
        assert_eq!(calls[0].auth, CallAuth::None);
    }

    #[test]
    fn expired_webhook_falls_back_to_openapi() {
        let ch = channel("dingrobot1");
        let m = inbound(&ch, SAMPLE_GROUP_TEXT);
        let expires = 1577265836757;
        let out = answer(&m, "您好");
        // Inside the margin: OpenAPI already.
        let calls = ch
            .encode(
                &out,
                at(expires - SESSION_WEBHOOK_MARGIN_MS),
                &mut StdRng::seed_from_u64(7),
            )
            .expect("calls");
        assert_eq!(
            calls,
            vec![Call {
                method: "POST".into(),
                url: "/v1.0/robot/groupMessages/send".into(),
                body: r#"{"robotCode":"dingrobot1","openConversationId":"cidp8R+kAtw8hBL+bUYbQbu9A==","msgKey":"sampleText","msgParam":"{\"content\":\"您好\"}"}"#.into(),
                auth: CallAuth::DingTalkToken,
            }]
        );
        let calls = ch
            .encode(
                &out,
                at(expires - SESSION_WEBHOOK_MARGIN_MS - 1),
                &mut StdRng::seed_from_u64(7),
            )
            .expect("calls");
        assert_eq!(calls[0].auth, CallAuth::None);

        // Single chat: batchSend to the staff id; markdown → sampleMarkdown.
        let body =
            SAMPLE_GROUP_TEXT.replace(r#""conversationType":"2""#, r#""conversationType":"1""#);
        let m = inbound(&ch, &body);
        let mut out = answer(&m, "**您好**");
        out.markdown = true;
        let calls = ch.openapi_calls(&out).expect("calls");
        assert_eq!(
            calls,
            vec![Call {
                method: "POST".into(),
                url: "/v1.0/robot/oToMessages/batchSend".into(),
                body: r#"{"robotCode":"dingrobot1","userIds":["manager4711"],"msgKey":"sampleMarkdown","msgParam":"{\"title\":\"您好\",\"text\":\"**您好**\"}"}"#.into(),
                auth: CallAuth::DingTalkToken,
            }]
        );
    }

    #[test]
    fn openapi_needs_robot_code_and_staff_id() {
        // The callback's robotCode stands in for an empty config value.
        let ch = channel("");
        let m = inbound(&ch, SAMPLE_GROUP_TEXT);
        let calls = ch.openapi_calls(&answer(&m, "x")).expect("calls");
        assert!(calls[0].body.starts_with(r#"{"robotCode":"dingrobot1""#));
        let mut out = answer(&m, "x");
        out.route.remove(route::ROBOT_CODE);
        assert!(ch.openapi_calls(&out).is_err());

        let body = SAMPLE_GROUP_TEXT
            .replace(r#""conversationType":"2""#, r#""conversationType":"1""#)
            .replace(r#""senderStaffId":"manager4711","#, "");
        let m = inbound(&ch, &body);
        assert!(ch.openapi_calls(&answer(&m, "x")).is_err());
        // ...while its live webhook still works.
        assert_eq!(
            ch.encode(
                &answer(&m, "x"),
                at(1577262236757),
                &mut StdRng::seed_from_u64(7)
            )
            .map(|c| c.len()),
            Ok(1)
        );
        // An Outbound with no route at all (proactive): single chat to user.id.
        let out = Outbound {
            channel: "helpdesk".into(),
            conversation: "cid".into(),
            user: UserRef {
                id: "staff9".into(),
                name: None,
            },
            text: "通知".into(),
            markdown: false,
            route: Default::default(),
        };
        let calls = channel("r9")
            .encode(&out, at(0), &mut StdRng::seed_from_u64(7))
            .expect("calls");
        assert_eq!(calls[0].url, reply::SINGLE_SEND_PATH);
        assert!(calls[0].body.contains(r#""userIds":["staff9"]"#));
    }

    #[test]
    fn bad_webhook_values_are_not_used() {
        let ch = channel("r");
        let m = inbound(&ch, SAMPLE_GROUP_TEXT);
        for (key, value) in [
            (route::SESSION_WEBHOOK, "/v1.0/robot/groupMessages/send"),
            (route::SESSION_WEBHOOK, "file:///etc/passwd"),
            (route::SESSION_WEBHOOK_EXPIRES_MS, "soon"),
        ] {
            let mut out = answer(&m, "x");
            out.route.insert(key.into(), value.into());
            let calls = ch
                .encode(&out, at(1577262236757), &mut StdRng::seed_from_u64(7))
                .expect("calls");
            assert_eq!(calls[0].auth, CallAuth::DingTalkToken, "{key}={value}");
        }
        let mut out = answer(&m, "x");
        out.route.remove(route::SESSION_WEBHOOK_EXPIRES_MS);
        assert_eq!(
            ch.encode(&out, at(0), &mut StdRng::seed_from_u64(7))
                .expect("calls")[0]
                .auth,
            CallAuth::DingTalkToken
        );
    }

    #[test]
    fn empty_answer_needs_no_call() {
        let ch = channel("r");
        let m = inbound(&ch, SAMPLE_GROUP_TEXT);
        assert_eq!(
            ch.encode(
                &answer(&m, " \n "),
                at(1577262236757),
                &mut StdRng::seed_from_u64(7)
            ),
            Ok(vec![])
        );
        assert_eq!(ch.openapi_calls(&answer(&m, "")), Ok(vec![]));
    }

    #[test]
    fn long_answers_split_in_order_and_fallback_rebuilds_one_part() {
        let ch = channel("r");
        let m = inbound(&ch, SAMPLE_GROUP_TEXT);
        let long: String = (0..3000)
            .map(|i| format!("第{i}条：退款需要 7 个工作日。\n"))
            .collect();
        let out = answer(&m, &long);
        let calls = ch
            .encode(&out, at(1577262236757), &mut StdRng::seed_from_u64(7))
            .expect("calls");
        assert!(calls.len() > 1);
        assert!(calls
            .iter()
            .all(|c| c.body.len() <= reply::MAX_BODY_BYTES && c.auth == CallAuth::None));
        let joined: String = calls
            .iter()
            .map(|c| {
                let v: serde_json::Value = serde_json::from_str(&c.body).expect("json");
                v["text"]["content"].as_str().expect("text").to_string()
            })
            .collect();
        assert_eq!(joined, long.trim());

        let fallback = ch.openapi_fallback(&out, &calls[1]).expect("fallback");
        assert!(!fallback.is_empty());
        assert!(fallback
            .iter()
            .all(|c| c.auth == CallAuth::DingTalkToken && c.body.len() <= reply::MAX_BODY_BYTES));
        let rebuilt: String = fallback
            .iter()
            .map(|c| {
                let v: serde_json::Value = serde_json::from_str(&c.body).expect("json");
                let p: serde_json::Value =
                    serde_json::from_str(v["msgParam"].as_str().expect("s")).expect("json");
                p["content"].as_str().expect("content").to_string()
            })
            .collect();
        let part1: serde_json::Value = serde_json::from_str(&calls[1].body).expect("json");
        assert_eq!(rebuilt, part1["text"]["content"].as_str().expect("text"));

        assert!(ch.openapi_fallback(&out, &fallback[0]).is_err());
        let card = Call {
            body: reply::action_card("t", "m", "b", "https://x"),
            ..calls[0].clone()
        };
        assert!(ch.openapi_fallback(&out, &card).is_err());
    }

    #[test]
    fn stream_data_decodes_like_http() {
        let ch = channel("r");
        let via_stream = match ch.decode_stream(SAMPLE_GROUP_TEXT, at(1577262236757)) {
            Ok(Decoded::Message(m)) => *m,
            other => panic!("{other:?}"),
        };
        assert_eq!(via_stream, inbound(&ch, SAMPLE_GROUP_TEXT));
        let frame = serde_json::json!({
            "type": "CALLBACK",
            "headers": {"messageId": "m", "topic": stream::ROBOT_TOPIC},
            "data": SAMPLE_GROUP_TEXT,
        });
        match stream::parse_frame(&frame.to_string()).expect("frame") {
            StreamFrame::RobotMessage { data, .. } => {
                assert!(matches!(
                    ch.decode_stream(&data, at(0)),
                    Ok(Decoded::Message(_))
                ))
            }
            other => panic!("{other:?}"),
        }
        let r = ch.open_connection_request("kefu/0.1", "");
        assert!(r
            .body
            .expose()
            .starts_with(r#"{"clientId":"dingappkey","clientSecret":"this is a secret""#));
        let t = ch.access_token_request();
        assert_eq!(
            t.body.expose(),
            r#"{"appKey":"dingappkey","appSecret":"this is a secret"}"#
        );
    }

    fn header_value() -> impl Strategy<Value = Option<Vec<u8>>> {
        proptest::option::of(prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..48),
            Just(TS.as_bytes().to_vec()),
            Just(SIGN.as_bytes().to_vec()),
        ])
    }

    proptest! {
        #[test]
        fn decode_never_panics(
            ts in header_value(),
            sign in header_value(),
            body in proptest::collection::vec(any::<u8>(), 0..512),
            now in any::<u64>(),
        ) {
            let mut req = http::Request::new(Bytes::from(body));
            for (name, value) in [("timestamp", ts), ("sign", sign)] {
                if let Some(v) = value.and_then(|v| http::HeaderValue::from_bytes(&v).ok()) {
                    req.headers_mut().insert(name, v);
                }
            }
            let _ = channel("r").decode(&req, SystemTime::UNIX_EPOCH + Duration::from_millis(now / 2));
        }

        #[test]
        fn signed_garbage_is_malformed_not_a_panic(body in "\\PC{0,256}") {
            let r = channel("r").decode(&request(Some(TS), Some(SIGN), &body), at(1577262236757));
            prop_assert!(!matches!(r, Err(DecodeError::BadSignature) | Err(DecodeError::StaleTimestamp)));
        }

        #[test]
        fn encode_never_panics(text in "\\PC{0,200}", md in any::<bool>(), group in any::<bool>(), now in 0u64..3_000_000_000_000) {
            let ch = channel("r");
            let mut m = inbound(&ch, SAMPLE_GROUP_TEXT);
            m.route.insert(route::CONVERSATION_TYPE.into(), if group { "2" } else { "1" }.into());
            let mut out = answer(&m, &text);
            out.markdown = md;
            let calls = ch.encode(&out, at(now), &mut StdRng::seed_from_u64(7)).expect("encodes");
            prop_assert!(calls.iter().all(|c| c.body.len() <= reply::MAX_BODY_BYTES));
        }
    }
}
