//! kefu in-process with a WeCom kf channel aimed at the fake kf API, and kf notifications
//! sealed with the channel's keys (the official sample corp of `wecom.json`, also the V1
//! vector's credentials).
#![allow(dead_code)] // each test binary uses a different part

use std::path::Path;
use std::time::Duration;

use kefu::config::Config;
use serde_json::Value;

use crate::fake_kf::{FakeKf, KFID};
use crate::wecom_kefu::{official, Callback, Kefu, Sealer};

pub const KF_CHANNEL: &str = "wxkf";
pub const KF_SECRET: &str = "kf-secret-for-tests";

/// The kf vectors of wecom-kf.md §9.
pub fn kf_vector(name: &str) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/adapters/tests/vectors/wecom_kf.json"
    );
    let all: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("kf vectors"))
        .expect("kf vectors json");
    all[name].clone()
}

/// A `wecom_kf` channel `wxkf` on the fake; `extra` adds channel keys, `top` whole sections.
pub fn kf_config(kb: &Path, api_base: &str, extra: &str, top: &str) -> Config {
    let (corp_id, token, aes_key) = official();
    let toml = format!(
        r#"
{top}
[knowledge]
paths = [{kb:?}]

[[channels]]
name = "{KF_CHANNEL}"
kind = "wecom_kf"
corp_id = "{corp_id}"
secret = "{KF_SECRET}"
token = "{token}"
encoding_aes_key = "{aes_key}"
api_base = "{api_base}"
{extra}
"#,
        kb = kb.display().to_string(),
    );
    kefu::config::parse(&toml, "test", &|_| None).unwrap_or_else(|e| panic!("config: {e}"))
}

/// The kf notification WeCom would post for `open_kfid` with sync `token`.
pub fn notification(seal: &Sealer, open_kfid: Option<&str>, token: Option<&str>) -> Callback {
    let mut inner = format!(
        "<xml><ToUserName><![CDATA[{}]]></ToUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[kf_msg_or_event]]></Event>",
        seal.corp_id
    );
    if let Some(t) = token {
        inner.push_str(&format!("<Token><![CDATA[{t}]]></Token>"));
    }
    if let Some(k) = open_kfid {
        inner.push_str(&format!("<OpenKfId><![CDATA[{k}]]></OpenKfId>"));
    }
    inner.push_str("</xml>");
    seal.seal(&inner)
}

/// POST a callback to `/wecom/{channel}`: (status, body).
pub async fn post_to(k: &Kefu, channel: &str, cb: &Callback) -> (u16, String) {
    let resp = k
        .http
        .post(format!("{}/wecom/{channel}?{}", k.base, cb.query))
        .body(cb.body.clone())
        .send()
        .await
        .expect("callback");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

/// Notify kefu that `KFID` has news (with a fresh callback token).
pub async fn notify(k: &Kefu, fake: &FakeKf, seal: &Sealer) {
    let token = fake.msg_token();
    let (status, body) =
        post_to(k, KF_CHANNEL, &notification(seal, Some(KFID), Some(&token))).await;
    assert_eq!(
        (status, body.as_str()),
        (200, ""),
        "a notification gets an empty 200"
    );
}

/// Give background work a moment to show it did *not* happen (used after a positive
/// signal of the same conversation has been awaited, never alone).
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// Roles and texts of a conversation's transcript.
pub fn transcript(k: &Kefu, channel: &str, conversation: &str) -> Vec<(String, String)> {
    k.state
        .app
        .store
        .messages(channel, conversation, 0, 10_000)
        .expect("messages")
        .into_iter()
        .map(|m| (m.role.as_str().to_string(), m.text))
        .collect()
}
