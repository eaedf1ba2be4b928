//! WeCom (企业微信) self-built app: callback verification, decryption and parsing; replies
//! through `message/send`. Protocol facts: `shared/protocols/wecom.md`; official pages:
//! developer.work.weixin.qq.com/document/path/90930 (callback), 90968 (crypto), 90239/90240
//! (messages/events), 90236 (message/send).
//!
//! kefu's shape (wecom.md §5): verify → decrypt → dedupe → answer 200 with an empty body at
//! once, then reply asynchronously through `message/send` ([`WeCom::encode`]). A passive
//! reply ([`WeCom::passive_text_reply`]) exists for completeness, not as the default.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Method;
use rand_core::RngCore;

use crate::{
    split_utf8, unix_ms, Call, CallAuth, Channel, ChannelKind, DecodeError, Decoded, EncodeError,
    Outbound, Secret,
};

pub mod api;
pub mod crypto;
pub mod xml;

#[cfg(test)]
mod testutil;

pub use api::{
    gettoken_path, is_retryable, is_token_error, message_send_body, parse_reply,
    webhook_markdown_bodies, webhook_path, webhook_text_bodies, ApiReply, BadReply,
    MAX_CONTENT_BYTES, MESSAGE_SEND_PATH,
};
pub use crypto::{signature, verify_signature, Cipher, KeyError};

/// What a WeCom channel needs from config (`[[channels]] kind = "wecom"`). `secret` is not
/// here: only the sender's token cache uses it (see [`gettoken_path`]).
#[derive(Clone, Debug)]
pub struct WeComParams {
    /// The config `name`; the callback URL is `/wecom/{name}`.
    pub name: String,
    /// CorpID (`ww…`); also the receive id every ciphertext must carry.
    pub corp_id: String,
    /// The app's AgentId.
    pub agent_id: i64,
    /// The callback Token (signature only).
    pub token: Secret,
    /// The callback EncodingAESKey: 43 characters `[A-Za-z0-9]`.
    pub encoding_aes_key: Secret,
}

/// Why a WeCom channel cannot be built from its config. Messages name the config key and
/// never contain a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WeComConfigError {
    #[error("name is empty")]
    EmptyName,
    #[error("corp_id is empty or has surrounding whitespace")]
    BadCorpId,
    #[error("agent_id must be the app's positive AgentId, got {0}")]
    BadAgentId(i64),
    #[error("token is empty")]
    EmptyToken,
    #[error(transparent)]
    AesKey(#[from] KeyError),
}

/// One WeCom self-built app. Pure: the server feeds it requests and sends its `Call`s.
#[derive(Clone, Debug)]
pub struct WeCom {
    name: String,
    corp_id: String,
    agent_id: i64,
    token: Secret,
    cipher: Cipher,
    markdown: bool,
    /// Refuse callbacks whose `timestamp` is further than this from `now`; `None` = no check
    /// (the protocol defines none, wecom.md §2).
    timestamp_window: Option<Duration>,
}

impl WeCom {
    pub fn new(p: WeComParams) -> Result<Self, WeComConfigError> {
        if p.name.trim().is_empty() {
            return Err(WeComConfigError::EmptyName);
        }
        if p.corp_id.is_empty() || p.corp_id.trim() != p.corp_id {
            return Err(WeComConfigError::BadCorpId);
        }
        if p.agent_id <= 0 {
            return Err(WeComConfigError::BadAgentId(p.agent_id));
        }
        if p.token.expose().is_empty() {
            return Err(WeComConfigError::EmptyToken);
        }
        let cipher = Cipher::new(p.encoding_aes_key.expose())?;
        Ok(WeCom {
            name: p.name,
            corp_id: p.corp_id,
            agent_id: p.agent_id,
            token: p.token,
            cipher,
            markdown: false,
            timestamp_window: None,
        })
    }

    /// Refuse (as [`DecodeError::StaleTimestamp`], after the signature check) a callback whose
    /// `timestamp` query parameter is more than `window` away from `now`, either way.
    ///
    /// WeCom defines no window and its SDKs check none (wecom.md §2), so the codec's default is
    /// `None`. The server sets one: a captured callback would otherwise replay once the
    /// server's dedupe memory of its MsgId has expired (24 h). WeCom signs each delivery when
    /// it sends it and retries within seconds, so a window of minutes to hours refuses nothing
    /// genuine unless the server's clock is wrong.
    pub fn with_timestamp_window(mut self, window: Option<Duration>) -> Self {
        self.timestamp_window = window;
        self
    }

    /// Send `Outbound`s marked `markdown` as WeCom markdown. Off by default: markdown renders
    /// only in the WeCom client; members reading through WeChat see "unsupported message
    /// type" (wecom.md §7).
    pub fn with_markdown(mut self, markdown: bool) -> Self {
        self.markdown = markdown;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn corp_id(&self) -> &str {
        &self.corp_id
    }

    pub fn agent_id(&self) -> i64 {
        self.agent_id
    }

    /// Constant-time `msg_signature` check over (token, timestamp, nonce, ciphertext).
    fn verify(&self, q: &Query, ciphertext: &str) -> Result<(), DecodeError> {
        let (Some(sig), Some(ts), Some(nonce)) =
            (q.get("msg_signature"), q.get("timestamp"), q.get("nonce"))
        else {
            return Err(DecodeError::BadSignature);
        };
        if verify_signature(self.token.expose(), ts, nonce, ciphertext, sig) {
            Ok(())
        } else {
            Err(DecodeError::BadSignature)
        }
    }

    /// The timestamp window of [`with_timestamp_window`](Self::with_timestamp_window).
    /// `timestamp` is in seconds; anything but ASCII digits counts as outside.
    fn check_timestamp(&self, q: &Query, now: SystemTime) -> Result<(), DecodeError> {
        let Some(window) = self.timestamp_window else {
            return Ok(());
        };
        let ts = q
            .get("timestamp")
            .filter(|t| !t.is_empty() && t.len() <= 19 && t.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or(DecodeError::StaleTimestamp)?;
        let now_ms = unix_ms(now);
        if ts.saturating_mul(1000).abs_diff(now_ms) > window.as_millis() as u64 {
            return Err(DecodeError::StaleTimestamp);
        }
        Ok(())
    }

    /// Decrypt, require our CorpID as receive id, require UTF-8.
    fn open(&self, ciphertext: &str) -> Result<String, DecodeError> {
        let msg = self.cipher.open(ciphertext, &self.corp_id)?;
        String::from_utf8(msg).map_err(|_| DecodeError::Malformed("plaintext is not UTF-8".into()))
    }

    /// GET: URL verification when the admin saves the callback URL (path/90930). The answer
    /// is the bare decrypted `echostr`.
    fn decode_get(&self, q: &Query, now: SystemTime) -> Result<Decoded, DecodeError> {
        has_signature_params(q)?;
        let echostr = q
            .get("echostr")
            .ok_or_else(|| DecodeError::Malformed("missing echostr".into()))?;
        self.verify(q, echostr)?;
        self.check_timestamp(q, now)?;
        Ok(Decoded::Challenge(self.open(echostr)?))
    }

    /// POST: a message or event callback.
    fn decode_post(&self, q: &Query, body: &[u8], now: SystemTime) -> Result<Decoded, DecodeError> {
        has_signature_params(q)?;
        let envelope = xml::parse_envelope(body)?;
        self.verify(q, &envelope.encrypt)?;
        self.check_timestamp(q, now)?;
        let inner = self.open(&envelope.encrypt)?;
        let fields = xml::parse_fields(&inner)?;
        xml::to_decoded(&self.name, &fields)
    }

    /// Encrypt and sign a ready reply document: the body of a passive reply (path/90968).
    /// `timestamp` and `nonce` may be the request's own.
    pub fn seal_reply(
        &self,
        reply_xml: &str,
        timestamp: &str,
        nonce: &str,
        rng: &mut dyn RngCore,
    ) -> String {
        let encrypt = self
            .cipher
            .encrypt(reply_xml.as_bytes(), &self.corp_id, rng);
        let sig = signature(self.token.expose(), timestamp, nonce, &encrypt);
        xml::reply_envelope(&encrypt, &sig, timestamp, nonce)
    }

    /// A passive text reply to `to_user` (the callback's `FromUserName`), ready as the HTTP
    /// body of the callback's answer: `CreateTime` from `now`, `timestamp`/`nonce` reused from
    /// the request (wecom.md §8). Passive replies carry one message of ≤ 2048 bytes and no
    /// markdown; longer content is refused, send it with [`encode`](Channel::encode) instead.
    pub fn passive_text_reply(
        &self,
        to_user: &str,
        content: &str,
        timestamp: &str,
        nonce: &str,
        now: SystemTime,
        rng: &mut dyn RngCore,
    ) -> Result<String, EncodeError> {
        if to_user.trim().is_empty() {
            return Err(EncodeError::Invalid(
                "passive reply without a recipient".into(),
            ));
        }
        if content.len() > MAX_CONTENT_BYTES {
            return Err(EncodeError::Invalid(format!(
                "passive reply of {} bytes exceeds {MAX_CONTENT_BYTES}",
                content.len()
            )));
        }
        let plain = xml::text_reply_xml(to_user, &self.corp_id, unix_ms(now) / 1000, content);
        Ok(self.seal_reply(&plain, timestamp, nonce, rng))
    }
}

fn has_signature_params(q: &Query) -> Result<(), DecodeError> {
    // A request that cannot even claim to be signed is refused before its body is read.
    if q.get("msg_signature").is_some() && q.get("timestamp").is_some() && q.get("nonce").is_some()
    {
        Ok(())
    } else {
        Err(DecodeError::BadSignature)
    }
}

/// The decoded query; a repeated key keeps its first value.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Self {
        // WeCom percent-encodes the ciphertext's `+` as %2B; a literal `+` (a proxy that
        // decoded once) must stay `+`, not become the form-encoding space, since base64 has
        // no spaces and the signature covers the exact text.
        let raw = raw.replace('+', "%2B");
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
            if !pairs.iter().any(|(have, _)| *have == k) {
                pairs.push((k.into_owned(), v.into_owned()));
            }
        }
        Query(pairs)
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl Channel for WeCom {
    fn kind(&self) -> ChannelKind {
        ChannelKind::WeCom
    }

    /// GET → `Challenge` (URL verification); POST → `Message` or `Ignored`. Bad or missing
    /// signature → `BadSignature`; sealed for another corp → `WrongReceiver`; anything
    /// unreadable → `Malformed`. `now` matters only with
    /// [`with_timestamp_window`](WeCom::with_timestamp_window): WeCom defines no window and its
    /// own vectors are years old (wecom.md §2).
    fn decode(&self, req: &http::Request<Bytes>, now: SystemTime) -> Result<Decoded, DecodeError> {
        let q = Query::parse(req.uri().query().unwrap_or(""));
        match *req.method() {
            Method::GET => self.decode_get(&q, now),
            Method::POST => self.decode_post(&q, req.body(), now),
            ref m => Err(DecodeError::Malformed(format!("method {m} not allowed"))),
        }
    }

    /// One `POST /cgi-bin/message/send` per ≤ 2048-byte part (WeCom truncates longer
    /// content), in order, authenticated with the app's access token. Text unless the channel
    /// was built `with_markdown(true)` and the reply is markdown. Blank text → no calls.
    fn encode(
        &self,
        out: &Outbound,
        _now: SystemTime,
        _rng: &mut dyn RngCore,
    ) -> Result<Vec<Call>, EncodeError> {
        if !out.channel.is_empty() && out.channel != self.name {
            return Err(EncodeError::Invalid(format!(
                "reply for channel {:?} given to wecom channel {:?}",
                out.channel, self.name
            )));
        }
        let touser = if out.user.id.trim().is_empty() {
            out.conversation.trim()
        } else {
            out.user.id.trim()
        };
        if touser.is_empty() {
            return Err(EncodeError::Invalid("reply without a recipient".into()));
        }
        // `|` joins recipients and `@all` is everyone in the app's range: a customer reply
        // must never fan out (real UserIDs contain neither).
        if touser.contains('|') || touser.eq_ignore_ascii_case("@all") {
            return Err(EncodeError::Invalid(format!(
                "recipient {touser:?} is not one user"
            )));
        }
        if out.text.trim().is_empty() {
            return Ok(Vec::new());
        }
        let markdown = self.markdown && out.markdown;
        Ok(split_utf8(&out.text, MAX_CONTENT_BYTES)
            .iter()
            .map(|part| Call {
                method: "POST".to_string(),
                url: MESSAGE_SEND_PATH.to_string(),
                body: message_send_body(touser, self.agent_id, part, markdown),
                auth: CallAuth::WeComToken,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::{all_vectors, vector, Replay, Vector};
    use super::*;
    use crate::{ContentKind, Inbound, UserRef};
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use serde_json::Value;
    use std::collections::BTreeMap;
    use std::time::Duration;

    const B_TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
    const B_KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
    const B_CORP: &str = "ww1436e0e65a779aee";

    fn params() -> WeComParams {
        WeComParams {
            name: "support".into(),
            corp_id: B_CORP.into(),
            agent_id: 1000002,
            token: Secret::new(B_TOKEN),
            encoding_aes_key: Secret::new(B_KEY),
        }
    }

    fn channel() -> WeCom {
        WeCom::new(params()).unwrap()
    }

    fn for_vector(v: &Vector) -> WeCom {
        WeCom::new(WeComParams {
            name: "support".into(),
            corp_id: v.str("corp_id").into(),
            agent_id: 1000002,
            token: Secret::new(v.str("token")),
            encoding_aes_key: Secret::new(v.str("encoding_aes_key")),
        })
        .unwrap()
    }

    fn request(method: &str, query: &str, body: &[u8]) -> http::Request<Bytes> {
        http::Request::builder()
            .method(method)
            .uri(format!("/wecom/support?{query}"))
            .body(Bytes::copy_from_slice(body))
            .unwrap()
    }

    /// Percent-encoding as WeCom does it (a space would be %20: `+` in a query stays `+`).
    fn enc(s: &str) -> String {
        url::form_urlencoded::byte_serialize(s.as_bytes())
            .collect::<String>()
            .replace('+', "%20")
    }

    /// A callback WeCom would send for `inner` (any XML), correctly sealed and signed.
    fn signed_post(ch: &WeCom, inner: &str, receive_id: &str) -> http::Request<Bytes> {
        let mut rng = StdRng::seed_from_u64(7);
        let encrypt = ch.cipher.encrypt(inner.as_bytes(), receive_id, &mut rng);
        let sig = signature(B_TOKEN, "1700000000", "123", &encrypt);
        let body = format!(
            "<xml><ToUserName><![CDATA[{B_CORP}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>"
        );
        request(
            "POST",
            &format!("msg_signature={sig}&timestamp=1700000000&nonce=123"),
            body.as_bytes(),
        )
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn message(d: Result<Decoded, DecodeError>) -> Inbound {
        match d {
            Ok(Decoded::Message(m)) => *m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[test]
    fn timestamp_window_refuses_old_and_future_callbacks_after_the_signature() {
        let inner = format!("<xml><ToUserName>{B_CORP}</ToUserName><FromUserName>u</FromUserName><CreateTime>1700000000</CreateTime><MsgType>text</MsgType><Content>hi</Content><MsgId>9</MsgId></xml>");
        let plain = channel();
        let windowed = channel().with_timestamp_window(Some(Duration::from_secs(3600)));
        let req = signed_post(&plain, &inner, B_CORP); // timestamp=1700000000
        let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        // No window (the codec's default, wecom.md §2): any age passes.
        assert!(plain.decode(&req, at(1_800_000_000)).is_ok());
        // Inside the window, either way.
        for now in [1_700_000_000 - 3600, 1_700_000_000, 1_700_000_000 + 3600] {
            assert!(windowed.decode(&req, at(now)).is_ok(), "{now}");
        }
        // Outside: refused like a bad signature (401), a day-old replay included.
        for now in [
            1_700_000_000 - 3601,
            1_700_000_000 + 3601,
            1_700_000_000 + 86_400,
        ] {
            assert_eq!(
                windowed.decode(&req, at(now)),
                Err(DecodeError::StaleTimestamp),
                "{now}"
            );
        }
        // A bad signature is still reported as such, whatever the timestamp.
        let q = "msg_signature=0000&timestamp=1&nonce=2";
        let body = b"<xml><Encrypt><![CDATA[abc]]></Encrypt></xml>";
        assert_eq!(
            windowed.decode(&request("POST", q, body), now()),
            Err(DecodeError::BadSignature)
        );
        // A signed but non-numeric timestamp is outside any window.
        let encrypt = "YWJj";
        let sig = signature(B_TOKEN, "soon", "2", encrypt);
        let q = format!("msg_signature={sig}&timestamp=soon&nonce=2");
        let body = format!("<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>");
        assert_eq!(
            windowed.decode(&request("POST", &q, body.as_bytes()), now()),
            Err(DecodeError::StaleTimestamp)
        );
    }

    #[test]
    fn every_vector_through_decode() {
        let mut checked = 0;
        for v in all_vectors() {
            let Some(http) = v.v.get("http") else {
                continue;
            };
            let ch = for_vector(&v);
            let req = request(
                http["method"].as_str().unwrap(),
                http["query"].as_str().unwrap(),
                http["body"].as_str().unwrap_or_default().as_bytes(),
            );
            let got = ch.decode(&req, now());
            let name = v.name();
            match (v.kind(), v.is_negative()) {
                ("url_verification", false) => {
                    assert_eq!(v.v["expect"]["status"], 200, "{name}");
                    let body = v.v["expect"]["body"].as_str().unwrap();
                    assert_eq!(got, Ok(Decoded::Challenge(body.to_string())), "{name}");
                }
                ("callback", false) => {
                    let p = &v.v["parsed"];
                    let m = message(got);
                    assert_eq!(m.channel, "support", "{name}");
                    assert_eq!(m.kind, ChannelKind::WeCom);
                    assert_eq!(m.user.id, p["FromUserName"].as_str().unwrap(), "{name}");
                    assert_eq!(m.conversation, m.user.id, "{name}");
                    assert_eq!(
                        m.sent_at_ms,
                        p["CreateTime"].as_u64().unwrap() * 1000,
                        "{name}"
                    );
                    assert_eq!(m.route["agent_id"], p["AgentID"].to_string(), "{name}");
                    match p["MsgType"].as_str().unwrap() {
                        "text" => {
                            assert_eq!(m.content, ContentKind::Text, "{name}");
                            assert_eq!(m.text, p["Content"].as_str().unwrap(), "{name}");
                            assert_eq!(m.id, p["MsgId"].as_str().unwrap(), "{name}");
                        }
                        "event" => {
                            let ev = p["Event"].as_str().unwrap();
                            assert_eq!(m.content, ContentKind::Event(ev.into()), "{name}");
                            let key = format!(
                                "{}-{}",
                                p["FromUserName"].as_str().unwrap(),
                                p["CreateTime"]
                            );
                            assert_eq!(m.id, key, "{name}");
                        }
                        other => panic!("{name}: untested MsgType {other}"),
                    }
                }
                (_, true) => {
                    assert_eq!(v.v["expect"]["status"], 401, "{name}");
                    let err = got.expect_err(name);
                    assert!(err.is_auth(), "{name}: {err:?} must map to 401");
                    if name.contains("bad_signature") {
                        assert_eq!(err, DecodeError::BadSignature, "{name}");
                    } else {
                        assert_eq!(
                            err,
                            DecodeError::WrongReceiver(v.str("receive_id").into()),
                            "{name}"
                        );
                    }
                }
                (kind, neg) => panic!("{name}: no check for kind {kind} negative={neg}"),
            }
            checked += 1;
        }
        assert_eq!(checked, 8, "vectors with an http request");
    }

    #[test]
    fn every_encrypt_vector_seals_byte_exactly() {
        let mut checked = 0;
        for v in all_vectors().into_iter().filter(|v| v.kind() == "encrypt") {
            let ch = for_vector(&v);
            let mut rng = Replay::new(v.str("random").as_bytes());
            let got = ch.seal_reply(
                v.str("plaintext"),
                v.str("timestamp"),
                v.str("nonce"),
                &mut rng,
            );
            assert_eq!(got, v.str("reply_envelope"), "{}", v.name());
            checked += 1;
        }
        assert_eq!(checked, 2);
    }

    /// Snapshot of the passive-reply wire format: fixed time, replayed random prefix.
    #[test]
    fn passive_text_reply_exact_bytes() {
        let v = vector("B.encrypt_reply");
        let ch = channel();
        let mut rng = Replay::new(b"0123456789abcdef");
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_476_422_780_500);
        let got = ch
            .passive_text_reply(
                "ChenJiaShun",
                "您好，请问有什么可以帮您？",
                "1476422779",
                "1597212914",
                at,
                &mut rng,
            )
            .unwrap();
        assert_eq!(
            got,
            "<xml><Encrypt><![CDATA[scEag1243Fmy/fYz4Ux8D0fs4ApAe5UUxm54QNS5mA1gvNAv/oBZDxF79j9wjAxgrC9J7Argr5XLNEl07MPGKmgjfCQRSZXR1LoCmaWRvTsLIcCGGpxvcYw9khtxfbRAxicHJWLG4xTdanak0WOrLwMhFWqBUCCJym5ZTZf5Q4DGUAjIgJIiI9mmF5WOAkSH8CcHHyKNOr+f5CkvzbV0I3PfmKVekl+DnMLwc/njLt2Qua+IDleg1ceWCp5rh2bvF60r0cheL3xMKxpYwFvxlp6bbyIv0AkeFrom41cBmZdcLsRocHS+QySb1FhtgaRiHm6aqeC1unK2aJBSM0pCon4HW/Dq5ikM9jjWEXXVu3E99jv5Uju9yq1E4WaEKqL5Kay7YOXi8o9mJLKVbw2x6wsk5jM9FOA30tim07pKaMk=]]></Encrypt><MsgSignature><![CDATA[550c5f784cc298d68e2124b2f53c1f5437599c8a]]></MsgSignature><TimeStamp>1476422779</TimeStamp><Nonce><![CDATA[1597212914]]></Nonce></xml>"
        );
        assert_eq!(got, v.str("reply_envelope"));
        // and it reads back: the envelope's signature verifies and decrypts to our XML
        let f = xml::parse_fields(&got).unwrap();
        let e = f.get("Encrypt").unwrap();
        assert!(verify_signature(
            B_TOKEN,
            "1476422779",
            "1597212914",
            e,
            f.get("MsgSignature").unwrap()
        ));
        assert_eq!(ch.open(e).unwrap(), v.str("plaintext"));
        let too_long = "x".repeat(MAX_CONTENT_BYTES + 1);
        assert!(ch
            .passive_text_reply("u", &too_long, "1", "2", at, &mut rng)
            .is_err());
        assert!(ch
            .passive_text_reply(" ", "hi", "1", "2", at, &mut rng)
            .is_err());
    }

    #[test]
    fn constructor_errors_are_clear() {
        let with = |f: &dyn Fn(&mut WeComParams)| {
            let mut p = params();
            f(&mut p);
            WeCom::new(p).unwrap_err()
        };
        assert_eq!(with(&|p| p.name = " ".into()), WeComConfigError::EmptyName);
        assert_eq!(
            with(&|p| p.corp_id = "".into()),
            WeComConfigError::BadCorpId
        );
        assert_eq!(
            with(&|p| p.corp_id = " ww1".into()),
            WeComConfigError::BadCorpId
        );
        assert_eq!(with(&|p| p.agent_id = 0), WeComConfigError::BadAgentId(0));
        assert_eq!(
            with(&|p| p.token = Secret::new("")),
            WeComConfigError::EmptyToken
        );
        let e = with(&|p| p.encoding_aes_key = Secret::new(&B_KEY[..42]));
        assert_eq!(e, WeComConfigError::AesKey(KeyError::Length(42)));
        assert_eq!(
            e.to_string(),
            "encoding_aes_key must be exactly 43 characters, got 42"
        );
        let e = with(&|p| p.encoding_aes_key = Secret::new(format!("{}-", &B_KEY[..42])));
        assert!(e.to_string().contains("A-Z, a-z and 0-9"), "{e}");
        // Debug shows no secret
        let dbg = format!("{:?}", channel());
        assert!(
            !dbg.contains(B_TOKEN) && !dbg.contains(B_KEY) && !dbg.contains("eaa91d"),
            "{dbg}"
        );
    }

    #[test]
    fn signature_failures_are_401_before_anything_else() {
        let ch = channel();
        let v = vector("B.post_text");
        let body = v.v["http"]["body"].as_str().unwrap().as_bytes();
        let q = v.v["http"]["query"].as_str().unwrap();
        assert!(matches!(
            ch.decode(&request("POST", q, body), now()),
            Ok(Decoded::Message(_))
        ));
        // missing pieces
        for q in [
            "",
            "timestamp=1&nonce=2",
            "msg_signature=0c39&nonce=1597212914",
            "msg_signature=x&timestamp=1",
        ] {
            assert_eq!(
                ch.decode(&request("POST", q, body), now()),
                Err(DecodeError::BadSignature),
                "{q}"
            );
            assert_eq!(
                ch.decode(&request("GET", q, b""), now()),
                Err(DecodeError::BadSignature),
                "{q}"
            );
        }
        // missing signature wins over a garbage body
        assert_eq!(
            ch.decode(&request("POST", "", b"garbage"), now()),
            Err(DecodeError::BadSignature)
        );
        // another timestamp, nonce or token
        let q2 = q.replace("timestamp=1476422779", "timestamp=1476422780");
        assert_eq!(
            ch.decode(&request("POST", &q2, body), now()),
            Err(DecodeError::BadSignature)
        );
        let q3 = q.replace("nonce=1597212914", "nonce=1597212915");
        assert_eq!(
            ch.decode(&request("POST", &q3, body), now()),
            Err(DecodeError::BadSignature)
        );
        let other = WeCom::new(WeComParams {
            token: Secret::new("other"),
            ..params()
        })
        .unwrap();
        assert_eq!(
            other.decode(&request("POST", q, body), now()),
            Err(DecodeError::BadSignature)
        );
        // upper-case hex is not what WeCom sends
        let q4 = q.replace(
            "0c3914025cb4b4d68103f6bfc8db550f79dcf48e",
            "0C3914025CB4B4D68103F6BFC8DB550F79DCF48E",
        );
        assert_eq!(
            ch.decode(&request("POST", &q4, body), now()),
            Err(DecodeError::BadSignature)
        );
        // a tampered ciphertext
        let s = String::from_utf8(body.to_vec())
            .unwrap()
            .replace("Kl7kjoSf", "Kl7kjoSg");
        assert_eq!(
            ch.decode(&request("POST", q, s.as_bytes()), now()),
            Err(DecodeError::BadSignature)
        );
        // old timestamps are fine: no window (the vector is from 2016)
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(4_000_000_000);
        assert!(ch.decode(&request("POST", q, body), later).is_ok());
    }

    #[test]
    fn other_methods_and_broken_bodies_are_400() {
        let ch = channel();
        let v = vector("B.get");
        let q = v.v["http"]["query"].as_str().unwrap();
        for m in ["PUT", "DELETE", "HEAD", "PATCH"] {
            let e = ch.decode(&request(m, q, b""), now()).unwrap_err();
            assert!(
                matches!(e, DecodeError::Malformed(_)) && !e.is_auth(),
                "{m}"
            );
        }
        let q = "msg_signature=a&timestamp=1&nonce=2";
        for body in [&b""[..], b"<xml>", b"<xml><Encrypt/></xml>", b"\xff"] {
            let e = ch.decode(&request("POST", q, body), now()).unwrap_err();
            assert!(matches!(e, DecodeError::Malformed(_)), "{e:?}");
        }
        assert!(matches!(
            ch.decode(&request("GET", q, b""), now()),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn signed_but_broken_payloads_are_malformed_not_panics() {
        let ch = channel();
        // valid signature over something that is not our ciphertext
        for encrypt in [
            "AAAA",
            "not base64!",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            let sig = signature(B_TOKEN, "1", "2", encrypt);
            let q = format!(
                "msg_signature={sig}&timestamp=1&nonce=2&echostr={}",
                enc(encrypt)
            );
            let e = ch.decode(&request("GET", &q, b""), now()).unwrap_err();
            assert!(matches!(e, DecodeError::Malformed(_)), "{encrypt}: {e:?}");
            let body = format!("<xml><Encrypt>{encrypt}</Encrypt></xml>");
            let e = ch
                .decode(&request("POST", &q, body.as_bytes()), now())
                .unwrap_err();
            assert!(matches!(e, DecodeError::Malformed(_)), "{encrypt}: {e:?}");
        }
        // correctly sealed, but the inside is not XML / not UTF-8
        let e = ch
            .decode(&signed_post(&ch, "hello", B_CORP), now())
            .unwrap_err();
        assert!(matches!(e, DecodeError::Malformed(_)), "{e:?}");
        // sealed for another corp
        let inner = "<xml><FromUserName>m</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>x</Content><MsgId>1</MsgId></xml>";
        assert_eq!(
            ch.decode(&signed_post(&ch, inner, "ww0000000000000000"), now()),
            Err(DecodeError::WrongReceiver("ww0000000000000000".into()))
        );
        assert!(ch.decode(&signed_post(&ch, inner, B_CORP), now()).is_ok());
    }

    #[test]
    fn query_plus_and_duplicates() {
        let ch = channel();
        let v = vector("B.get");
        // a proxy that decoded %2B to a literal `+` once: still the same ciphertext
        let q = v.v["http"]["query"].as_str().unwrap().replace("%2B", "+");
        assert!(matches!(
            ch.decode(&request("GET", &q, b""), now()),
            Ok(Decoded::Challenge(_))
        ));
        // a second, forged msg_signature after the real one does not change the verdict
        let q = format!(
            "{}&msg_signature=0000",
            v.v["http"]["query"].as_str().unwrap()
        );
        assert!(matches!(
            ch.decode(&request("GET", &q, b""), now()),
            Ok(Decoded::Challenge(_))
        ));
    }

    #[test]
    fn events_and_kinds_through_decode() {
        let ch = channel();
        let head = format!("<xml><ToUserName><![CDATA[{B_CORP}]]></ToUserName><FromUserName><![CDATA[li]]></FromUserName><CreateTime>1700000000</CreateTime><AgentID>1000002</AgentID>");
        let d = |tail: &str| {
            ch.decode(
                &signed_post(&ch, &format!("{head}{tail}</xml>"), B_CORP),
                now(),
            )
        };
        let m = message(d("<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event><EventKey><![CDATA[]]></EventKey>"));
        assert_eq!(m.content, ContentKind::Event("subscribe".into()));
        assert_eq!(m.id, "li-1700000000");
        assert!(matches!(
            d("<MsgType>event</MsgType><Event>unsubscribe</Event>"),
            Ok(Decoded::Ignored(_))
        ));
        assert!(matches!(
            d("<MsgType>event</MsgType><Event>click</Event><EventKey>k</EventKey>"),
            Ok(Decoded::Ignored(_))
        ));
        assert!(matches!(
            d("<MsgType>miniprogram</MsgType>"),
            Ok(Decoded::Ignored(_))
        ));
        let m = message(d("<MsgType>image</MsgType><PicUrl>http://x</PicUrl><MediaId>mid</MediaId><MsgId>42</MsgId>"));
        assert_eq!(
            (m.content.clone(), m.id.as_str()),
            (ContentKind::Image, "42")
        );
        assert_eq!(m.route["media_id"], "mid");
    }

    fn outbound(text: &str) -> Outbound {
        Outbound {
            channel: "support".into(),
            conversation: "ChenJiaShun".into(),
            user: UserRef {
                id: "ChenJiaShun".into(),
                name: None,
            },
            text: text.into(),
            markdown: false,
            route: BTreeMap::new(),
        }
    }

    fn contents(calls: &[Call]) -> Vec<String> {
        calls
            .iter()
            .map(|c| {
                let v: Value = serde_json::from_str(&c.body).unwrap();
                let t = v["msgtype"].as_str().unwrap().to_string();
                v[&t]["content"].as_str().unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn encode_short_text_is_one_exact_call() {
        let ch = channel();
        let calls = ch
            .encode(&outbound("您好"), now(), &mut StdRng::seed_from_u64(1))
            .unwrap();
        assert_eq!(
            calls,
            vec![Call {
                method: "POST".into(),
                url: "/cgi-bin/message/send".into(),
                body: r#"{"touser":"ChenJiaShun","msgtype":"text","agentid":1000002,"text":{"content":"您好"}}"#.into(),
                auth: CallAuth::WeComToken,
            }]
        );
    }

    #[test]
    fn encode_splits_at_2048_bytes_like_wecom_md() {
        let ch = channel();
        let text = "你".repeat(700); // 2100 bytes
        let calls = ch
            .encode(&outbound(&text), now(), &mut StdRng::seed_from_u64(1))
            .unwrap();
        let parts = contents(&calls);
        assert_eq!(
            parts.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            vec![682, 18]
        );
        assert_eq!(
            parts.iter().map(String::len).collect::<Vec<_>>(),
            vec![2046, 54]
        );
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn encode_markdown_only_when_configured() {
        let mut out = outbound("**退款** 请看 [说明](https://example.com)");
        out.markdown = true;
        let rng = &mut StdRng::seed_from_u64(1);
        let plain = channel().encode(&out, now(), rng).unwrap();
        assert!(
            plain[0].body.contains(r#""msgtype":"text""#),
            "{}",
            plain[0].body
        );
        let md = channel()
            .with_markdown(true)
            .encode(&out, now(), rng)
            .unwrap();
        assert!(
            md[0].body.contains(
                r#""msgtype":"markdown","agentid":1000002,"markdown":{"content":"**退款**"#
            ),
            "{}",
            md[0].body
        );
        out.markdown = false;
        let plain = channel()
            .with_markdown(true)
            .encode(&out, now(), rng)
            .unwrap();
        assert!(plain[0].body.contains(r#""msgtype":"text""#));
    }

    #[test]
    fn encode_refuses_what_it_must_not_send() {
        let ch = channel();
        let rng = &mut StdRng::seed_from_u64(1);
        assert_eq!(ch.encode(&outbound("  \n"), now(), rng).unwrap(), vec![]);
        let mut out = outbound("hi");
        out.user.id = String::new();
        assert!(ch.encode(&out, now(), rng).unwrap()[0]
            .body
            .contains(r#""touser":"ChenJiaShun""#));
        out.conversation = " ".into();
        assert!(ch.encode(&out, now(), rng).is_err());
        for bad in ["a|b", "@all", "@ALL"] {
            let mut out = outbound("hi");
            out.user.id = bad.into();
            assert!(ch.encode(&out, now(), rng).is_err(), "{bad}");
        }
        let mut out = outbound("hi");
        out.channel = "sales".into();
        assert!(ch.encode(&out, now(), rng).is_err());
    }

    proptest! {
        #[test]
        fn encode_parts_fit_and_join_back(text in "\\PC{1,5000}") {
            let ch = channel();
            let calls = ch.encode(&outbound(&text), now(), &mut StdRng::seed_from_u64(1)).unwrap();
            if text.trim().is_empty() {
                prop_assert!(calls.is_empty());
            } else {
                let parts = contents(&calls);
                prop_assert!(parts.iter().all(|p| p.len() <= MAX_CONTENT_BYTES));
                prop_assert_eq!(parts.concat(), text);
                prop_assert!(calls.iter().all(|c| c.url == MESSAGE_SEND_PATH && c.auth == CallAuth::WeComToken));
            }
        }

        #[test]
        fn decode_never_panics(
            method in prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("OPTIONS")],
            query in "[a-z_=&%0-9A-F+/]{0,120}",
            body in proptest::collection::vec(any::<u8>(), 0..400),
            headers in proptest::collection::vec(("[a-z-]{1,20}", "[ -~]{0,40}"), 0..5),
        ) {
            let ch = channel();
            let mut b = http::Request::builder().method(method).uri(format!("/wecom/support?{query}"));
            for (k, v) in &headers {
                b = b.header(k.as_str(), v.as_str());
            }
            if let Ok(req) = b.body(Bytes::from(body)) {
                let _ = ch.decode(&req, now());
            }
        }

        #[test]
        fn decode_never_panics_past_the_signature(
            encrypt in "[A-Za-z0-9+/=]{0,200}",
            inner in "\\PC{0,200}",
        ) {
            let ch = channel();
            // A genuine signature over arbitrary ciphertext reaches the decryptor …
            let sig = signature(B_TOKEN, "1", "2", &encrypt);
            let q = format!("msg_signature={sig}&timestamp=1&nonce=2&echostr={}", enc(&encrypt));
            let _ = ch.decode(&request("GET", &q, b""), now());
            let body = format!("<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>");
            let _ = ch.decode(&request("POST", &q, body.as_bytes()), now());
            // … and a genuine ciphertext over arbitrary text reaches the parser.
            let _ = ch.decode(&signed_post(&ch, &inner, B_CORP), now());
        }

        #[test]
        fn sealed_text_roundtrips_through_decode(content in "[^\\p{C}]{1,300}", user in "[A-Za-z0-9_.@-]{1,30}") {
            let ch = channel();
            let inner = format!(
                "<xml><ToUserName>{B_CORP}</ToUserName><FromUserName>{user}</FromUserName><CreateTime>1700000000</CreateTime><MsgType>text</MsgType><Content>{}</Content><MsgId>9</MsgId></xml>",
                quick_xml::escape::escape(content.as_str())
            );
            let m = message(ch.decode(&signed_post(&ch, &inner, B_CORP), now()));
            prop_assert_eq!(m.text, content);
            prop_assert_eq!(m.user.id, user);
        }
    }
}
