//! OpenAPI access token and the answers of DingTalk's send endpoints (dingtalk.md §3, §6).
//! The sender does the HTTP; these functions build what it sends and read what it gets.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Call, CallAuth, Secret};

/// `POST {api_base}/v1.0/oauth2/accessToken` (dingtalk.md §3.2).
pub const ACCESS_TOKEN_PATH: &str = "/v1.0/oauth2/accessToken";
/// Header carrying the OpenAPI token on [`CallAuth::DingTalkToken`] calls.
pub const TOKEN_HEADER: &str = "x-acs-dingtalk-access-token";
/// Refresh a token this long before DingTalk says it expires (dingtalk.md §3.2: ~5 min).
pub const TOKEN_REFRESH_EARLY_MS: u64 = 5 * 60 * 1000;

/// A request whose body holds a credential (app secret, client secret). The body is a
/// [`Secret`], so `Debug` on it never prints the credential. `path` goes under `api_base`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialRequest {
    pub method: &'static str,
    pub path: &'static str,
    /// JSON, `Content-Type: application/json`.
    pub body: Secret,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TokenBody<'a> {
    app_key: &'a str,
    app_secret: &'a str,
}

/// `POST /v1.0/oauth2/accessToken` with `{"appKey":…,"appSecret":…}`.
pub fn access_token_request(app_key: &Secret, app_secret: &Secret) -> CredentialRequest {
    CredentialRequest {
        method: "POST",
        path: ACCESS_TOKEN_PATH,
        body: Secret::new(
            serde_json::to_string(&TokenBody {
                app_key: app_key.expose(),
                app_secret: app_secret.expose(),
            })
            .unwrap_or_default(),
        ),
    }
}

/// An OpenAPI access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessToken {
    pub token: Secret,
    /// Lifetime in seconds as DingTalk gave it (`expireIn`, 7200 today).
    pub expire_in_s: u64,
}

impl AccessToken {
    /// When to fetch a new one, given when this one was obtained: [`TOKEN_REFRESH_EARLY_MS`]
    /// before expiry (never before `obtained_at_ms`).
    pub fn refresh_at_ms(&self, obtained_at_ms: u64) -> u64 {
        let life = self.expire_in_s.saturating_mul(1000);
        obtained_at_ms.saturating_add(life.saturating_sub(TOKEN_REFRESH_EARLY_MS))
    }
}

/// Why a DingTalk answer means "not delivered".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// sessionWebhook / custom robot: HTTP 200 with `errcode` ≠ 0 (dingtalk.md §3.1, §6).
    #[error("dingtalk errcode {errcode}: {errmsg}")]
    Robot { errcode: i64, errmsg: String },
    /// OpenAPI: non-2xx with `{"code","message"}`, or a 200 that names refused recipients.
    #[error("dingtalk openapi {status} {code}: {message}")]
    OpenApi {
        status: u16,
        code: String,
        message: String,
    },
    /// Not the JSON DingTalk sends.
    #[error("unreadable dingtalk answer (HTTP {status}): {reason}")]
    Malformed { status: u16, reason: String },
}

/// A custom group robot may send this many messages a minute; more blocks it for 10 minutes
/// (errcode 130101, dingtalk.md §6). Throttle client-side: queue, don't drop.
pub const CUSTOM_ROBOT_PER_MINUTE: u32 = 20;

/// errcode: sending too fast (custom robot: 20/min, then blocked 10 min).
pub const ERR_TOO_FAST: i64 = 130_101;
/// errcode: message too long.
pub const ERR_TOO_LONG: i64 = 460_101;
/// errcode: bad custom robot token.
pub const ERR_BAD_TOKEN: i64 = 300_001;
/// errcode: keywords / timestamp / sign / IP check failed (custom robot security settings).
pub const ERR_SECURITY: i64 = 310_000;

impl AnswerError {
    /// Throttled: retry later, slower.
    pub fn is_rate_limited(&self) -> bool {
        match self {
            AnswerError::Robot { errcode, .. } => *errcode == ERR_TOO_FAST,
            AnswerError::OpenApi { status, code, .. } => {
                *status == 429 || code.contains("QpsLimit") || code.contains("flowControl")
            }
            AnswerError::Malformed { status, .. } => *status == 429,
        }
    }

    /// The OpenAPI token was refused: fetch a new one and retry.
    pub fn is_token_rejected(&self) -> bool {
        match self {
            AnswerError::OpenApi { status, code, .. } => {
                *status == 401 || code.contains("InvalidAuthentication")
            }
            _ => false,
        }
    }

    /// Retrying the same call can't help (bad request, too long, unknown recipient, security
    /// settings). For a sessionWebhook call the sender falls back to OpenAPI on any error
    /// anyway (dingtalk.md §3.1: integrators see webhooks expire early).
    pub fn is_permanent(&self) -> bool {
        match self {
            AnswerError::Robot { errcode, .. } => {
                matches!(*errcode, ERR_TOO_LONG | ERR_BAD_TOKEN | ERR_SECURITY)
            }
            AnswerError::OpenApi { status, code, .. } => {
                (code == "invalidStaffIdList" || (400..500).contains(status))
                    && !self.is_rate_limited()
                    && !self.is_token_rejected()
            }
            AnswerError::Malformed { status, .. } => (400..500).contains(status) && *status != 429,
        }
    }
}

fn malformed(status: u16, reason: impl Into<String>) -> AnswerError {
    AnswerError::Malformed {
        status,
        reason: reason.into(),
    }
}

fn int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Read a sessionWebhook or custom robot answer: `{"errcode":0,"errmsg":"ok"}` is delivered.
/// DingTalk answers HTTP 200 even on failure, so the `errcode` decides.
pub fn parse_robot_answer(status: u16, body: &[u8]) -> Result<(), AnswerError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| malformed(status, e.to_string()))?;
    match v.get("errcode").and_then(int) {
        Some(0) if (200..300).contains(&status) => Ok(()),
        Some(errcode) => Err(AnswerError::Robot {
            errcode,
            errmsg: v.get("errmsg").map(string).unwrap_or_default(),
        }),
        None => Err(malformed(status, "no errcode")),
    }
}

/// What an OpenAPI robot send answered on success.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendReceipt {
    /// Handle to query read status later.
    pub process_query_key: String,
}

/// Read an OpenAPI robot send answer (`batchSend`, `groupMessages/send`). A 200 that lists
/// the recipient under `invalidStaffIdList` or `flowControlledStaffIdList` was not delivered.
pub fn parse_openapi_answer(status: u16, body: &[u8]) -> Result<SendReceipt, AnswerError> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        return Err(openapi_error(status, &v));
    }
    if !v.is_object() {
        return Err(malformed(status, "not a JSON object"));
    }
    let listed = |key: &str| {
        v.get(key)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    if listed("invalidStaffIdList") {
        return Err(AnswerError::OpenApi {
            status,
            code: "invalidStaffIdList".into(),
            message: v["invalidStaffIdList"].to_string(),
        });
    }
    if listed("flowControlledStaffIdList") {
        return Err(AnswerError::OpenApi {
            status,
            code: "flowControlledStaffIdList".into(),
            message: v["flowControlledStaffIdList"].to_string(),
        });
    }
    Ok(SendReceipt {
        process_query_key: v.get("processQueryKey").map(string).unwrap_or_default(),
    })
}

fn openapi_error(status: u16, v: &Value) -> AnswerError {
    match v.get("code") {
        Some(code) => AnswerError::OpenApi {
            status,
            code: string(code),
            message: v.get("message").map(string).unwrap_or_default(),
        },
        None => malformed(status, "no code in error answer"),
    }
}

/// Read the answer of a [`Call`] this module built: robot errcode for sessionWebhook calls
/// ([`CallAuth::None`]), OpenAPI otherwise.
pub fn check_answer(call: &Call, status: u16, body: &[u8]) -> Result<(), AnswerError> {
    match call.auth {
        CallAuth::DingTalkToken => parse_openapi_answer(status, body).map(|_| ()),
        _ => parse_robot_answer(status, body),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenAnswer {
    access_token: Option<String>,
    expire_in: Option<Value>,
}

/// Read `POST /v1.0/oauth2/accessToken`'s answer: `{"accessToken":"…","expireIn":7200}`.
pub fn parse_access_token(status: u16, body: &[u8]) -> Result<AccessToken, AnswerError> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        return Err(openapi_error(status, &v));
    }
    let t: TokenAnswer = serde_json::from_value(v).map_err(|e| malformed(status, e.to_string()))?;
    let token = t
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| malformed(status, "no accessToken"))?;
    let expire_in_s = t
        .expire_in
        .as_ref()
        .and_then(int)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| malformed(status, "no expireIn"))?;
    Ok(AccessToken {
        token: Secret::new(token),
        expire_in_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn token_request_exact_and_redacted() {
        let r = access_token_request(&Secret::new("dingkey"), &Secret::new("s3cr\"et"));
        assert_eq!((r.method, r.path), ("POST", "/v1.0/oauth2/accessToken"));
        assert_eq!(
            r.body.expose(),
            r#"{"appKey":"dingkey","appSecret":"s3cr\"et"}"#
        );
        assert!(!format!("{r:?}").contains("s3cr"));
    }

    #[test]
    fn token_answer() {
        let t = parse_access_token(
            200,
            br#"{"accessToken":"fw8ef8we8f76e6f7s8df8s","expireIn":7200}"#,
        )
        .expect("token");
        assert_eq!(t.token.expose(), "fw8ef8we8f76e6f7s8df8s");
        assert_eq!(t.expire_in_s, 7200);
        assert_eq!(t.refresh_at_ms(1_000), 1_000 + 7_200_000 - 300_000);
        assert!(!format!("{t:?}").contains("fw8ef8"));
        let short = AccessToken {
            token: Secret::new("x"),
            expire_in_s: 60,
        };
        assert_eq!(short.refresh_at_ms(5), 5);

        let err = parse_access_token(
            400,
            br#"{"requestid":"r","code":"invalidClientSecret","message":"bad secret"}"#,
        )
        .expect_err("refused");
        assert_eq!(
            err,
            AnswerError::OpenApi {
                status: 400,
                code: "invalidClientSecret".into(),
                message: "bad secret".into()
            }
        );
        assert!(parse_access_token(200, b"{}").is_err());
        assert!(parse_access_token(200, b"<html>").is_err());
        assert!(parse_access_token(200, br#"{"accessToken":"a","expireIn":-1}"#).is_err());
    }

    #[test]
    fn robot_answers() {
        assert_eq!(
            parse_robot_answer(200, br#"{"errcode":0,"errmsg":"ok"}"#),
            Ok(())
        );
        let e = parse_robot_answer(200, br#"{"errcode":130101,"errmsg":"send too fast"}"#)
            .expect_err("too fast");
        assert!(e.is_rate_limited() && !e.is_permanent());
        let e = parse_robot_answer(200, br#"{"errcode":460101,"errmsg":"message too long"}"#)
            .expect_err("long");
        assert!(e.is_permanent());
        assert_eq!(
            e,
            AnswerError::Robot {
                errcode: 460101,
                errmsg: "message too long".into()
            }
        );
        assert!(matches!(
            parse_robot_answer(200, b""),
            Err(AnswerError::Malformed { .. })
        ));
        assert!(matches!(
            parse_robot_answer(502, b"bad gateway"),
            Err(AnswerError::Malformed { status: 502, .. })
        ));
        assert!(parse_robot_answer(500, br#"{"errcode":0}"#).is_err());
        assert_eq!(
            parse_robot_answer(200, br#"{"errcode":"0","errmsg":"ok"}"#),
            Ok(())
        );
    }

    #[test]
    fn openapi_answers() {
        let ok = parse_openapi_answer(
            200,
            br#"{"processQueryKey":"pqk","invalidStaffIdList":[],"flowControlledStaffIdList":[]}"#,
        )
        .expect("ok");
        assert_eq!(ok.process_query_key, "pqk");
        assert_eq!(
            parse_openapi_answer(200, br#"{"processQueryKey":"g"}"#).map(|r| r.process_query_key),
            Ok("g".into())
        );
        let e = parse_openapi_answer(
            200,
            br#"{"processQueryKey":"p","invalidStaffIdList":["u1"]}"#,
        )
        .expect_err("invalid");
        assert!(e.is_permanent());
        let e = parse_openapi_answer(
            200,
            br#"{"processQueryKey":"p","flowControlledStaffIdList":["u1"]}"#,
        )
        .expect_err("flow");
        assert!(e.is_rate_limited());
        let e = parse_openapi_answer(
            401,
            r#"{"code":"InvalidAuthentication","message":"不合法的access_token"}"#.as_bytes(),
        )
        .expect_err("auth");
        assert!(e.is_token_rejected() && !e.is_permanent());
        let e = parse_openapi_answer(
            400,
            r#"{"code":"invalidParameter.robotCode","message":"robot不存在"}"#.as_bytes(),
        )
        .expect_err("bad");
        assert!(e.is_permanent());
        assert!(matches!(
            parse_openapi_answer(503, b""),
            Err(AnswerError::Malformed { status: 503, .. })
        ));
    }

    #[test]
    fn check_answer_dispatches_on_auth() {
        let hook = Call {
            method: "POST".into(),
            url: "https://x/robot/sendBySession?session=s".into(),
            body: "{}".into(),
            auth: CallAuth::None,
        };
        let api = Call {
            auth: CallAuth::DingTalkToken,
            url: "/v1.0/robot/groupMessages/send".into(),
            ..hook.clone()
        };
        assert_eq!(
            check_answer(&hook, 200, br#"{"errcode":0,"errmsg":"ok"}"#),
            Ok(())
        );
        assert!(check_answer(&api, 200, br#"{"errcode":0,"errmsg":"ok"}"#).is_ok());
        assert!(check_answer(&hook, 200, br#"{"processQueryKey":"p"}"#).is_err());
    }

    proptest! {
        #[test]
        fn answer_parsers_never_panic(status in any::<u16>(), body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_robot_answer(status, &body);
            let _ = parse_openapi_answer(status, &body);
            let _ = parse_access_token(status, &body);
        }
    }
}
