//! DingTalk signatures (dingtalk.md §1 and §6).
//!
//! Both forms are `base64(HMAC-SHA256(key = secret, message = timestamp + "\n" + secret))`:
//! the robot callback sends it in the `sign` header next to a `timestamp` header; the custom
//! group robot puts it, URL-encoded, in its webhook URL. The signature covers only the
//! timestamp, never the body: a captured callback replays for an hour, so the server dedupes.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{DecodeError, Secret};

/// How far a callback `timestamp` may be from `now`, either direction (dingtalk.md §1).
pub const WINDOW_MS: u64 = 3_600_000;

/// Callback header carrying the milliseconds timestamp.
pub const TIMESTAMP_HEADER: &str = "timestamp";
/// Callback header carrying the base64 signature.
pub const SIGN_HEADER: &str = "sign";

fn mac(secret: &str, timestamp: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b"\n");
    mac.update(secret.as_bytes());
    mac
}

/// `base64(HMAC-SHA256(secret, timestamp + "\n" + secret))`, standard alphabet, padded.
pub fn sign(secret: &Secret, timestamp: &str) -> String {
    STANDARD.encode(mac(secret.expose(), timestamp).finalize().into_bytes())
}

/// Parse a callback timestamp: ASCII digits only (no sign, no spaces), as DingTalk sends it.
fn parse_timestamp(timestamp: &str) -> Option<u64> {
    if timestamp.is_empty()
        || timestamp.len() > 19
        || !timestamp.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    timestamp.parse().ok()
}

/// Check a callback's `timestamp` and `sign` header values (dingtalk.md §1).
///
/// A missing or non-numeric timestamp, or one more than [`WINDOW_MS`] from `now_ms`, is
/// [`DecodeError::StaleTimestamp`]; a missing, non-base64 or wrong sign is
/// [`DecodeError::BadSignature`]. Both mean 401. The comparison is constant time
/// (`Mac::verify_slice` on the decoded bytes).
pub fn verify(
    timestamp: Option<&str>,
    sign: Option<&str>,
    app_secret: &Secret,
    now_ms: u64,
) -> Result<(), DecodeError> {
    let timestamp = timestamp.ok_or(DecodeError::StaleTimestamp)?;
    let ts = parse_timestamp(timestamp).ok_or(DecodeError::StaleTimestamp)?;
    if now_ms.abs_diff(ts) > WINDOW_MS {
        return Err(DecodeError::StaleTimestamp);
    }
    let given = sign
        .and_then(|s| STANDARD.decode(s).ok())
        .ok_or(DecodeError::BadSignature)?;
    mac(app_secret.expose(), timestamp)
        .verify_slice(&given)
        .map_err(|_| DecodeError::BadSignature)
}

/// [`verify`] on the `timestamp` / `sign` headers of a request. Non-UTF-8 values count as
/// missing.
pub fn verify_headers(
    headers: &http::HeaderMap,
    app_secret: &Secret,
    now_ms: u64,
) -> Result<(), DecodeError> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    verify(get(TIMESTAMP_HEADER), get(SIGN_HEADER), app_secret, now_ms)
}

/// Sign a custom group robot webhook (自定义机器人, dingtalk.md §6): append
/// `timestamp=MS&sign=URLENCODED_BASE64` to `webhook` (which already carries
/// `?access_token=…`). DingTalk accepts it for an hour around `timestamp_ms`.
pub fn sign_webhook_url(webhook: &str, secret: &Secret, timestamp_ms: u64) -> String {
    let timestamp = timestamp_ms.to_string();
    let sign = sign(secret, &timestamp);
    let encoded: String = url::form_urlencoded::byte_serialize(sign.as_bytes()).collect();
    let sep = if webhook.contains('?') { '&' } else { '?' };
    format!("{webhook}{sep}timestamp={timestamp}&sign={encoded}")
}

/// Path of the custom group robot's send endpoint under `https://oapi.dingtalk.com`.
pub const CUSTOM_ROBOT_PATH: &str = "/robot/send";

/// The full send URL of a custom group robot (dingtalk.md §6):
/// `{oapi_base}/robot/send?access_token=TOKEN`, plus `&timestamp=…&sign=…` when the robot
/// has a signing secret (`SEC…`). A `Secret`: the URL carries the token.
pub fn custom_robot_url(
    oapi_base: &str,
    access_token: &Secret,
    secret: Option<&Secret>,
    timestamp_ms: u64,
) -> Secret {
    let token: String =
        url::form_urlencoded::byte_serialize(access_token.expose().as_bytes()).collect();
    let base = format!(
        "{}{CUSTOM_ROBOT_PATH}?access_token={token}",
        oapi_base.trim_end_matches('/')
    );
    Secret::new(match secret.filter(|s| !s.is_empty()) {
        Some(secret) => sign_webhook_url(&base, secret, timestamp_ms),
        None => base,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn vectors() -> Value {
        serde_json::from_str(include_str!("../../tests/vectors/dingtalk.json"))
            .expect("vectors file is JSON")
    }

    fn s<'a>(v: &'a Value, path: &[&str]) -> &'a str {
        let mut v = v;
        for p in path {
            v = &v[*p];
        }
        v.as_str()
            .unwrap_or_else(|| panic!("vector {path:?} is a string"))
    }

    #[test]
    fn callback_sign_vector() {
        let v = vectors();
        let secret = Secret::new(s(&v, &["callback_sign", "app_secret"]));
        let ts = s(&v, &["callback_sign", "timestamp"]);
        assert_eq!(
            format!("{ts}\n{}", secret.expose()),
            s(&v, &["callback_sign", "string_to_sign"])
        );
        assert_eq!(sign(&secret, ts), s(&v, &["callback_sign", "sign"]));
    }

    #[test]
    fn callback_headers_vector_verify() {
        let v = vectors();
        let secret = Secret::new(s(&v, &["callback_sign", "app_secret"]));
        let mut headers = http::HeaderMap::new();
        for (k, val) in v["callback_sign"]["headers"].as_object().expect("headers") {
            headers.insert(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                http::HeaderValue::from_str(val.as_str().expect("str")).expect("value"),
            );
        }
        let now: u64 = s(&v, &["callback_sign", "timestamp"]).parse().expect("ms");
        assert_eq!(verify_headers(&headers, &secret, now), Ok(()));
        let wrong = Secret::new("this is another secret");
        assert_eq!(
            verify_headers(&headers, &wrong, now),
            Err(DecodeError::BadSignature)
        );
    }

    #[test]
    fn custom_robot_url_vector() {
        let v = vectors();
        let c = &v["custom_robot_url_sign"];
        let secret = Secret::new(s(c, &["secret"]));
        let ts = s(c, &["timestamp"]);
        assert_eq!(
            format!("{ts}\n{}", secret.expose()),
            s(c, &["string_to_sign"])
        );
        assert_eq!(sign(&secret, ts), s(c, &["sign_base64"]));
        let encoded: String =
            url::form_urlencoded::byte_serialize(s(c, &["sign_base64"]).as_bytes()).collect();
        assert_eq!(encoded, s(c, &["sign_urlencoded"]));
        let ms: u64 = ts.parse().expect("ms");
        assert_eq!(
            sign_webhook_url(s(c, &["webhook"]), &secret, ms),
            s(c, &["signed_webhook"])
        );
    }

    #[test]
    fn custom_robot_url_from_parts() {
        let v = vectors();
        let c = &v["custom_robot_url_sign"];
        let ms: u64 = s(c, &["timestamp"]).parse().expect("ms");
        let secret = Secret::new(s(c, &["secret"]));
        let url = custom_robot_url(
            "https://oapi.dingtalk.com/",
            &Secret::new("T"),
            Some(&secret),
            ms,
        );
        assert_eq!(url.expose(), s(c, &["signed_webhook"]));
        let plain = custom_robot_url("http://127.0.0.1:9", &Secret::new("a b"), None, ms);
        assert_eq!(
            plain.expose(),
            "http://127.0.0.1:9/robot/send?access_token=a+b"
        );
    }

    #[test]
    fn window_cases_vector() {
        let v = vectors();
        assert_eq!(v["window_ms"].as_u64(), Some(WINDOW_MS));
        let secret = Secret::new(s(&v, &["callback_sign", "app_secret"]));
        let cases = v["window_cases"].as_array().expect("window_cases");
        assert!(!cases.is_empty());
        for case in cases {
            let ts = s(case, &["timestamp"]);
            let now = case["now_ms"].as_u64().expect("now_ms");
            let good = sign(&secret, ts);
            let got = verify(Some(ts), Some(&good), &secret, now);
            if case["accept"].as_bool().expect("accept") {
                assert_eq!(got, Ok(()), "{case}");
            } else {
                assert_eq!(got, Err(DecodeError::StaleTimestamp), "{case}");
            }
        }
    }

    #[test]
    fn window_edges_are_inclusive() {
        let secret = Secret::new("k");
        let ts = "1577262236757";
        let sig = sign(&secret, ts);
        let t: u64 = ts.parse().expect("ms");
        assert_eq!(verify(Some(ts), Some(&sig), &secret, t + WINDOW_MS), Ok(()));
        assert_eq!(verify(Some(ts), Some(&sig), &secret, t - WINDOW_MS), Ok(()));
        assert_eq!(
            verify(Some(ts), Some(&sig), &secret, t + WINDOW_MS + 1),
            Err(DecodeError::StaleTimestamp)
        );
        assert_eq!(
            verify(Some(ts), Some(&sig), &secret, t - WINDOW_MS - 1),
            Err(DecodeError::StaleTimestamp)
        );
    }

    #[test]
    fn missing_or_garbled_headers_are_refused() {
        let secret = Secret::new("k");
        let ts = "1577262236757";
        let now = 1_577_262_236_757;
        let sig = sign(&secret, ts);
        assert_eq!(
            verify(None, Some(&sig), &secret, now),
            Err(DecodeError::StaleTimestamp)
        );
        for bad_ts in [
            "",
            "abc",
            "+1577262236757",
            " 1577262236757",
            "1e12",
            "99999999999999999999",
        ] {
            assert_eq!(
                verify(Some(bad_ts), Some(&sig), &secret, now),
                Err(DecodeError::StaleTimestamp),
                "{bad_ts:?}"
            );
        }
        assert_eq!(
            verify(Some(ts), None, &secret, now),
            Err(DecodeError::BadSignature)
        );
        for bad_sig in ["", "!!!", "DJrE6qdy", &sig[..sig.len() - 4]] {
            assert_eq!(
                verify(Some(ts), Some(bad_sig), &secret, now),
                Err(DecodeError::BadSignature),
                "{bad_sig:?}"
            );
        }
        // A URL-encoded sign is not what DingTalk sends (dingtalk.md §1): refused.
        let encoded: String = url::form_urlencoded::byte_serialize(sig.as_bytes()).collect();
        if encoded != sig {
            assert_eq!(
                verify(Some(ts), Some(&encoded), &secret, now),
                Err(DecodeError::BadSignature)
            );
        }
    }

    #[test]
    fn webhook_without_query_gets_a_question_mark() {
        let url = sign_webhook_url("http://127.0.0.1:9/robot/send", &Secret::new("SECx"), 5);
        assert!(url.starts_with("http://127.0.0.1:9/robot/send?timestamp=5&sign="));
    }

    proptest! {
        #[test]
        fn sign_round_trip(secret in "\\PC{0,64}", ts in 0u64..4_000_000_000_000, skew in -3_600_000i64..=3_600_000) {
            let secret = Secret::new(secret);
            let stamp = ts.to_string();
            let sig = sign(&secret, &stamp);
            let now = ts.saturating_add_signed(skew);
            prop_assume!(now.abs_diff(ts) <= WINDOW_MS);
            prop_assert_eq!(verify(Some(&stamp), Some(&sig), &secret, now), Ok(()));
            let other = Secret::new(format!("{}x", secret.expose()));
            prop_assert_eq!(verify(Some(&stamp), Some(&sig), &other, now), Err(DecodeError::BadSignature));
        }

        #[test]
        fn verify_never_panics(ts in proptest::option::of("\\PC{0,24}"), sig in proptest::option::of("\\PC{0,64}"), now in any::<u64>()) {
            let _ = verify(ts.as_deref(), sig.as_deref(), &Secret::new("k"), now);
        }
    }
}
