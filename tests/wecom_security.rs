//! WeCom callbacks an attacker or a careless platform could send: a captured callback
//! replayed long after (past the 24 h dedupe memory), a 50,000-character message. kefu
//! in-process against the fake WeCom API, callbacks sealed with the official sample keys.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[path = "common/fake_wecom.rs"]
mod fake_wecom;
#[path = "common/wecom_kefu.rs"]
mod wecom_kefu;

use adapters::wecom::{signature, Cipher};
use fake_wecom::{eventually, FakeWeCom};
use wecom_kefu::*;

async fn start() -> (std::sync::Arc<FakeWeCom>, Kefu, Sealer, tempfile::TempDir) {
    let seal = Sealer::official();
    let fake = FakeWeCom::start(&seal.corp_id, APP_SECRET, AGENT_ID, ROBOT_KEY).await;
    let dir = tempfile::tempdir().unwrap();
    let kb = write_kb(dir.path());
    let db = sled::Config::new().temporary(true).open().unwrap();
    let kefu = Kefu::start(config(&kb, &fake.base), db).await;
    (fake, kefu, seal, dir)
}

/// A text callback from `from`, sealed and signed with `timestamp` (Unix seconds).
fn signed_at(from: &str, msg_id: u64, timestamp: u64) -> Callback {
    let (corp_id, token, aes_key) = official();
    let inner = format!(
        "<xml><ToUserName><![CDATA[{corp_id}]]></ToUserName><FromUserName><![CDATA[{from}]]></FromUserName><CreateTime>{timestamp}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[How do I reset my password?]]></Content><MsgId>{msg_id}</MsgId><AgentID>{AGENT_ID}</AgentID></xml>"
    );
    let encrypt =
        Cipher::new(&aes_key)
            .unwrap()
            .encrypt(inner.as_bytes(), &corp_id, &mut rand::thread_rng());
    let ts = timestamp.to_string();
    let sig = signature(&token, &ts, "42", &encrypt);
    Callback {
        query: format!("msg_signature={sig}&timestamp={ts}&nonce=42"),
        body: format!("<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"),
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_signed_long_ago_is_refused() {
    let (fake, kefu, _seal, _d) = start().await;
    // Captured a day ago and replayed now: its MsgId has left the dedupe memory, its
    // signature is still good, its timestamp is not.
    for ts in [now_s() - 25 * 3600, now_s() - 3601, now_s() + 3601] {
        let (status, body, _) = kefu.post(&signed_at("mallory", ts, ts)).await;
        assert_eq!(status, 401, "{ts}: {body}");
    }
    let store = &kefu.state.app.store;
    assert!(store.conversation(CHANNEL, "mallory").unwrap().is_none());
    assert!(store.inbox_all().unwrap().is_empty());
    // Within the hour: taken.
    let (status, _, _) = kefu.post(&signed_at("alice", 1, now_s() - 600)).await;
    assert_eq!(status, 200);
    eventually("alice's reply", || {
        (!fake.sent_to("alice").is_empty()).then_some(())
    })
    .await;
    assert_eq!(fake.sent_to("mallory").len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_message_is_stored_whole_and_answered_from_its_first_part() {
    let (fake, kefu, seal, _d) = start().await;
    let huge: String = "How do I reset my password? "
        .repeat(2000)
        .chars()
        .take(50_000)
        .collect();
    let (status, body, took) = kefu.post(&seal.text("zhaoliu", 77, &huge)).await;
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_secs(5));
    let got = eventually("a reply", || {
        let got = fake.sent_to("zhaoliu");
        (!got.is_empty()).then_some(got)
    })
    .await;
    assert!(got[0].contains("Reset password"), "{got:?}");
    // The agent sees everything the customer wrote; the engine read at most the limit.
    let msgs = kefu
        .state
        .app
        .store
        .messages(CHANNEL, "zhaoliu", 0, 10)
        .unwrap();
    assert_eq!(msgs[0].text.chars().count(), 50_000);
    assert_eq!(
        kefu.state
            .app
            .metrics
            .get("kefu_messages_truncated_total", &[("channel", CHANNEL)]),
        1
    );
}
