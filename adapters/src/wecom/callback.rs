//! The callback envelope every WeCom callback shares, app messages and kf notifications
//! alike (wecom.md §2–§4, wecom-kf.md §1): the signed query, the encrypted `<Encrypt>`, the
//! CorpID as receive id.

use std::time::{Duration, SystemTime};

use crate::{unix_ms, DecodeError, Decoded, Secret};

use super::crypto::{verify_signature, Cipher};
use super::xml::{self, Fields};

/// What verifies and opens one channel's callbacks.
#[derive(Clone, Copy)]
pub(crate) struct Keys<'a> {
    pub corp_id: &'a str,
    pub token: &'a Secret,
    pub cipher: &'a Cipher,
    /// Refuse callbacks whose `timestamp` is further than this from `now`; `None` = no check
    /// (the protocol defines none, wecom.md §2).
    pub timestamp_window: Option<Duration>,
}

impl Keys<'_> {
    /// Constant-time `msg_signature` check over (token, timestamp, nonce, ciphertext).
    pub fn verify(&self, q: &Query, ciphertext: &str) -> Result<(), DecodeError> {
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

    /// Decrypt, require our CorpID as receive id, require UTF-8.
    pub fn open(&self, ciphertext: &str) -> Result<String, DecodeError> {
        let msg = self.cipher.open(ciphertext, self.corp_id)?;
        String::from_utf8(msg).map_err(|_| DecodeError::Malformed("plaintext is not UTF-8".into()))
    }

    /// The timestamp window, checked after the signature (a forged request is reported as
    /// such). `timestamp` is in seconds; anything but ASCII digits counts as outside.
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

    /// GET: URL verification when the admin saves the callback URL (path/90930). The answer
    /// is the bare decrypted `echostr`.
    pub fn challenge(&self, q: &Query, now: SystemTime) -> Result<Decoded, DecodeError> {
        has_signature_params(q)?;
        let echostr = q
            .get("echostr")
            .ok_or_else(|| DecodeError::Malformed("missing echostr".into()))?;
        self.verify(q, echostr)?;
        self.check_timestamp(q, now)?;
        Ok(Decoded::Challenge(self.open(echostr)?))
    }

    /// POST: verify and decrypt the envelope, parse the inner document's fields.
    pub fn open_post(
        &self,
        q: &Query,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Fields, DecodeError> {
        has_signature_params(q)?;
        let envelope = xml::parse_envelope(body)?;
        self.verify(q, &envelope.encrypt)?;
        self.check_timestamp(q, now)?;
        let inner = self.open(&envelope.encrypt)?;
        xml::parse_fields(&inner)
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
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: &str) -> Self {
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

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}
