//! WeCom 微信客服 (kf) end to end: sealed notifications into kefu over HTTP, messages pulled
//! from a fake kf API (`common/fake_kf.rs`) that keeps cursors, sessions and the platform's
//! sending rules, replies and hand-overs out through it. Vectors: wecom-kf.md §9.
//! Async effects are polled with a 10 s deadline; absence is proven with a later message of
//! the same conversation (one worker handles a conversation in order).

use std::sync::Arc;
use std::time::Duration;

#[path = "common/fake_kf.rs"]
mod fake_kf;
#[path = "common/fake_wecom.rs"]
mod fake_wecom;
#[path = "common/kf_kefu.rs"]
mod kf_kefu;
#[path = "common/reopen.rs"]
mod reopen;
#[path = "common/wecom_kefu.rs"]
mod wecom_kefu;

use fake_kf::{FakeKf, CUSTOMER, KFID};
use fake_wecom::eventually;
use kf_kefu::*;
use serde_json::{json, Value};
use wecom_kefu::{write_kb, Kefu, Sealer, LONG_QUESTION};

fn conv() -> String {
    format!("{KFID}:{CUSTOMER}")
}

struct Env {
    fake: Arc<FakeKf>,
    kefu: Kefu,
    seal: Sealer,
    _dir: tempfile::TempDir,
}

async fn env_with(extra: &str, top: &str) -> Env {
    let seal = Sealer::official();
    let fake = FakeKf::start(&seal.corp_id, KF_SECRET).await;
    fake.set_servicers(KFID, &[("zhangsan", 0), ("lisi", 1)]);
    let dir = tempfile::tempdir().unwrap();
    let kb = write_kb(dir.path());
    let db = sled::Config::new().temporary(true).open().unwrap();
    let kefu = Kefu::start(kf_config(&kb, &fake.base, extra, top), db).await;
    Env {
        fake,
        kefu,
        seal,
        _dir: dir,
    }
}

async fn env() -> Env {
    env_with("human_servicers = [\"lisi\", \"zhangsan\"]", "").await
}

/// The texts `user` received, once there are `n`.
async fn replies(fake: &FakeKf, user: &str, n: usize) -> Vec<String> {
    eventually(&format!("{n} replies to {user}"), || {
        let got = fake.sent_to(user);
        (got.len() >= n).then_some(got)
    })
    .await
}

fn roles(t: &[(String, String)]) -> Vec<&str> {
    t.iter().map(|(r, _)| r.as_str()).collect()
}

/// A vector page with its `send_time`s moved to now (the vectors are from 2023; kefu
/// counts the 48 h window from them).
fn fresh(mut page: Value) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if let Some(list) = page["msg_list"].as_array_mut() {
        for m in list {
            m["send_time"] = json!(now);
        }
    }
    page
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_is_verified_answered_at_once_and_pulled_with_its_token() {
    // The vector is signed in 2023: no timestamp window for it (see the next test).
    let e = env_with(
        "human_servicers = [\"lisi\", \"zhangsan\"]\ntimestamp_window_ms = 0",
        "",
    )
    .await;
    let v1 = kf_vector("V1_callback");
    let token = v1["plaintext"].as_str().unwrap();
    assert!(token.contains("ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR"));
    e.fake
        .allow_msg_token("ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR");
    // A stored cursor (V2's): the pull must be exactly V2.
    e.kefu
        .state
        .app
        .store
        .kv_put(&cursor_key(), b"4gw7MepFLfgF2VC5npN")
        .unwrap();
    e.fake.script(
        KFID,
        Some("4gw7MepFLfgF2VC5npN"),
        json!({"errcode": 0, "errmsg": "ok", "next_cursor": "4gw7MepFLfgF2VC5npN", "has_more": 0, "msg_list": []}),
    );
    // Tampered: 401, nothing pulled.
    let bad = v1["http_query"]
        .as_str()
        .unwrap()
        .replace("4d31d3d9", "4d31d3d8");
    let cb = wecom_kefu::Callback {
        query: bad,
        body: v1["http_body"].as_str().unwrap().into(),
    };
    assert_eq!(post_to(&e.kefu, KF_CHANNEL, &cb).await.0, 401);
    // The vector byte for byte.
    let cb = wecom_kefu::Callback {
        query: v1["http_query"].as_str().unwrap().into(),
        body: v1["http_body"].as_str().unwrap().into(),
    };
    let started = std::time::Instant::now();
    let (status, body) = post_to(&e.kefu, KF_CHANNEL, &cb).await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered before pulling"
    );
    let req = eventually("a sync_msg", || e.fake.sync_requests().into_iter().next()).await;
    assert_eq!(req, kf_vector("V2_sync_request"), "the V2 request");
    assert_eq!(
        e.fake.sync_requests().len(),
        1,
        "the tampered one pulled nothing"
    );

    // GET URL verification on the kf channel: the bare echostr.
    let echo = adapters::wecom::Cipher::new(v1["encoding_aes_key"].as_str().unwrap())
        .unwrap()
        .encrypt(
            b"6094273958761200000",
            &e.seal.corp_id,
            &mut rand::thread_rng(),
        );
    let sig = adapters::wecom::signature(&e.seal.token, "1", "2", &echo);
    let url = format!(
        "{}/wecom/{KF_CHANNEL}?msg_signature={sig}&timestamp=1&nonce=2&echostr={}",
        e.kefu.base,
        url::form_urlencoded::byte_serialize(echo.as_bytes()).collect::<String>()
    );
    let resp = e.kefu.http.get(url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.unwrap(), "6094273958761200000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v3_v4_pages_welcome_answer_and_keep_the_servicer_unanswered() {
    let e = env().await;
    e.fake.script(KFID, None, fresh(kf_vector("V3_page1")));
    e.fake
        .script(KFID, Some("CURSOR_P1"), kf_vector("V4_page2"));
    e.fake
        .script(KFID, Some("CURSOR_P2"), fresh(kf_vector("V4_page3")));
    e.fake.issue_code("WELCOME_CODE_1", 20_000);
    e.fake.customer_active(KFID, CUSTOMER);
    notify(&e.kefu, &e.fake, &e.seal).await;

    let got = replies(&e.fake, CUSTOMER, 2).await;
    let welcome = eventually("the welcome", || e.fake.on_event_sent().into_iter().next()).await;
    assert_eq!(welcome["code"], "WELCOME_CODE_1");
    assert_eq!(welcome["msgtype"], "text");
    assert!(!welcome["text"]["content"].as_str().unwrap().is_empty());
    // Pulled through the empty page: None → P1 → P2, cursor P3 stored.
    let cursors: Vec<Value> = e
        .fake
        .sync_requests()
        .iter()
        .map(|r| r["cursor"].clone())
        .collect();
    assert_eq!(
        cursors,
        vec![Value::Null, json!("CURSOR_P1"), json!("CURSOR_P2")]
    );
    let store = &e.kefu.state.app.store;
    eventually("cursor P3", || {
        (cursor(store.as_ref()).as_deref() == Some("CURSOR_P3")).then_some(())
    })
    .await;
    // Two customer messages, two answers; the servicer's line is kept, never answered.
    let t = eventually("the whole transcript", || {
        let t = transcript(&e.kefu, KF_CHANNEL, &conv());
        (t.len() >= 7).then_some(t)
    })
    .await;
    assert_eq!(
        roles(&t),
        ["system", "bot", "user", "bot", "agent", "user", "bot"],
        "{t:?}"
    );
    assert_eq!(t[2].1, "你好，在吗");
    assert_eq!(t[4].1, "您好，我是人工客服张三");
    assert_eq!(t[5].1, "满意");
    assert_eq!(got.len(), 2, "{got:?}");
    let sent = e.fake.sent();
    assert!(sent
        .iter()
        .all(|m| m["open_kfid"] == KFID && m["msgtype"] == "text"));
    assert!(sent
        .iter()
        .all(|m| m["msgid"].as_str().unwrap().starts_with("kefu-")));
    assert_eq!(e.fake.on_event_sent().len(), 1, "welcomed once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_notifications_fetch_nothing_twice() {
    let e = env().await;
    e.fake
        .sync_delay_ms
        .store(40, std::sync::atomic::Ordering::SeqCst);
    e.fake.set_page_size(3);
    let users: Vec<String> = (0..4).map(|i| format!("wmUser{i}")).collect();
    for (i, u) in users.iter().enumerate() {
        e.fake
            .customer_writes(KFID, u, &format!("How do I reset my password? #{i}"));
        e.fake
            .customer_writes(KFID, u, "What is the refund policy?");
    }
    // A burst of notifications, some while a sync runs.
    let posts = (0..12).map(|_| notify(&e.kefu, &e.fake, &e.seal));
    futures::future::join_all(posts).await;
    for u in &users {
        replies(&e.fake, u, 2).await;
    }
    // A later message of each customer proves no third reply was on its way.
    for u in &users {
        e.fake.customer_writes(KFID, u, "thanks");
    }
    notify(&e.kefu, &e.fake, &e.seal).await;
    for u in &users {
        let got = replies(&e.fake, u, 3).await;
        assert_eq!(got.len(), 3, "{u}: {got:?}");
    }
    assert_eq!(
        e.fake.max_concurrent_syncs(),
        1,
        "one sync at a time per account"
    );
    let reqs = e.fake.sync_requests();
    let from_start = reqs.iter().filter(|r| r["cursor"].is_null()).count();
    assert_eq!(from_start, 1, "only the first pull starts without a cursor");
    // Every pull but the first continues from a cursor: nothing is fetched twice, except
    // that a sync scheduled by a notice re-reads from where the last one stopped.
    let mut seen = std::collections::HashSet::new();
    for r in &reqs {
        if let Some(c) = r["cursor"].as_str() {
            seen.insert(c.to_string());
        }
    }
    assert!(
        reqs.len() <= seen.len() + 1 + 2,
        "a burst of 13 notices makes few syncs: {}",
        reqs.len()
    );
    for u in &users {
        let t = transcript(&e.kefu, KF_CHANNEL, &format!("{KFID}:{u}"));
        assert_eq!(
            roles(&t).iter().filter(|r| **r == "user").count(),
            3,
            "{t:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servicer_taking_the_session_silences_the_bot_until_it_ends() {
    let e = env().await;
    e.fake
        .customer_writes(KFID, CUSTOMER, "How do I reset my password?");
    notify(&e.kefu, &e.fake, &e.seal).await;
    replies(&e.fake, CUSTOMER, 1).await;
    // zhangsan picks the session in the WeCom client and writes; the customer answers.
    e.fake.servicer_moves(KFID, CUSTOMER, 1, "zhangsan");
    e.fake
        .servicer_writes(KFID, CUSTOMER, "zhangsan", "我来帮您处理");
    e.fake
        .customer_writes(KFID, CUSTOMER, "What is the refund policy?");
    notify(&e.kefu, &e.fake, &e.seal).await;
    let t = eventually("the customer's second message stored", || {
        let t = transcript(&e.kefu, KF_CHANNEL, &conv());
        t.iter()
            .any(|(_, x)| x == "What is the refund policy?")
            .then_some(t)
    })
    .await;
    assert!(
        t.iter().any(|(r, x)| r == "agent" && x == "我来帮您处理"),
        "{t:?}"
    );
    let c = e
        .kefu
        .state
        .app
        .store
        .conversation(KF_CHANNEL, &conv())
        .unwrap()
        .unwrap();
    assert!(c.handed_off());
    assert_eq!(c.handoff.unwrap().agent.as_deref(), Some("zhangsan"));
    // The servicer ends it; the customer's next message goes to the bot again.
    e.fake.servicer_moves(KFID, CUSTOMER, 3, "zhangsan");
    e.fake
        .customer_writes(KFID, CUSTOMER, "What is the refund policy?");
    notify(&e.kefu, &e.fake, &e.seal).await;
    let got = replies(&e.fake, CUSTOMER, 2).await;
    assert!(got[1].contains("30 days"), "{got:?}");
    assert_eq!(got.len(), 2, "nothing answered while the servicer had it");
    assert!(
        e.fake.send_refusals().is_empty(),
        "{:?}",
        e.fake.send_refusals()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_moves_the_session_to_a_servicer_with_its_notice_and_release_ends_it() {
    let e = env().await;
    e.fake.customer_writes(KFID, CUSTOMER, "转人工");
    notify(&e.kefu, &e.fake, &e.seal).await;
    let notice = eventually("the transfer notice", || {
        e.fake.on_event_sent().into_iter().next()
    })
    .await;
    let trans = e.fake.trans_calls();
    assert_eq!(trans[0]["service_state"], 3);
    assert_eq!(
        trans[0]["servicer_userid"], "zhangsan",
        "lisi is not receiving"
    );
    assert!(notice["code"]
        .as_str()
        .unwrap()
        .starts_with("MSG_CODE_TRANS_"));
    assert!(
        notice["text"]["content"].as_str().unwrap().contains("人工"),
        "{notice}"
    );
    assert_eq!(e.fake.session(KFID, CUSTOMER).state, 3);
    assert!(
        e.fake.sent().is_empty(),
        "the notice went with the msg_code, not send_msg"
    );
    // Silent while a person owns it.
    e.fake
        .customer_writes(KFID, CUSTOMER, "How do I reset my password?");
    notify(&e.kefu, &e.fake, &e.seal).await;
    eventually("the message stored", || {
        transcript(&e.kefu, KF_CHANNEL, &conv())
            .iter()
            .any(|(_, x)| x == "How do I reset my password?")
            .then_some(())
    })
    .await;
    // The agent API hands it back: the session ends on the platform.
    let resp = e
        .kefu
        .http
        .post(format!(
            "{}/agent/api/conversations/{KF_CHANNEL}/{}/release",
            e.kefu.base,
            conv()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    eventually("the session ended", || {
        (e.fake.session(KFID, CUSTOMER).state == 4).then_some(())
    })
    .await;
    assert_eq!(e.fake.trans_calls().last().unwrap()["service_state"], 4);
    e.fake
        .customer_writes(KFID, CUSTOMER, "What is the refund policy?");
    notify(&e.kefu, &e.fake, &e.seal).await;
    let got = replies(&e.fake, CUSTOMER, 1).await;
    assert!(
        got[0].contains("30 days"),
        "the bot again, only for the new message: {got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_signed_long_ago_is_refused_by_the_timestamp_window() {
    // The default window (1 h): V1, authentic but signed in 2023, is a replay.
    let e = env().await;
    let v1 = kf_vector("V1_callback");
    let cb = wecom_kefu::Callback {
        query: v1["http_query"].as_str().unwrap().into(),
        body: v1["http_body"].as_str().unwrap().into(),
    };
    assert_eq!(post_to(&e.kefu, KF_CHANNEL, &cb).await.0, 401);
    // A fresh notification of the same channel goes through.
    e.fake
        .customer_writes(KFID, CUSTOMER, "What is the refund policy?");
    notify(&e.kefu, &e.fake, &e.seal).await;
    replies(&e.fake, CUSTOMER, 1).await;
    assert!(
        e.fake.sync_requests().iter().all(|r| !r
            .to_string()
            .contains("ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR")),
        "the refused notification's token was never used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_receiving_servicer_means_the_pool() {
    let e = env_with("human_servicers = [\"lisi\"]", "").await;
    e.fake.customer_writes(KFID, CUSTOMER, "转人工");
    notify(&e.kefu, &e.fake, &e.seal).await;
    eventually("the pool notice", || {
        e.fake.on_event_sent().into_iter().next()
    })
    .await;
    assert_eq!(e.fake.trans_calls()[0]["service_state"], 2);
    assert!(e.fake.trans_calls()[0].get("servicer_userid").is_none());
    assert_eq!(e.fake.session(KFID, CUSTOMER).state, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sixth_reply_in_the_window_is_not_sent_and_the_agent_is_told() {
    let e = env_with("platform_handoff = false", "").await;
    e.fake.customer_writes(KFID, CUSTOMER, LONG_QUESTION);
    notify(&e.kefu, &e.fake, &e.seal).await;
    let got = replies(&e.fake, CUSTOMER, 2).await; // a 3.4 KB answer: two messages
    assert_eq!(got.len(), 2);
    let agent = |text: String| {
        let http = e.kefu.http.clone();
        let url = format!(
            "{}/agent/api/conversations/{KF_CHANNEL}/{}/reply",
            e.kefu.base,
            conv()
        );
        async move {
            let r = http
                .post(url)
                // Automation (no agent named) may write to a conversation no one took over.
                .json(&json!({"text": text}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
        }
    };
    agent("first".into()).await;
    agent("second".into()).await;
    // One message left, a 3 KB agent message: cut to one with "…".
    agent(format!("third {}", "x".repeat(3000))).await;
    let got = replies(&e.fake, CUSTOMER, 5).await;
    assert!(got[4].starts_with("third") && got[4].ends_with('…') && got[4].len() <= 2048);
    // The 6th is not sent at all.
    agent("sixth".into()).await;
    let t = eventually("the agent told", || {
        let t = transcript(&e.kefu, KF_CHANNEL, &conv());
        t.iter()
            .any(|(r, x)| r == "system" && x.contains("a reply was not sent"))
            .then_some(t)
    })
    .await;
    assert!(
        t.iter()
            .any(|(r, x)| r == "system" && x.contains("cut to 1 message")),
        "{t:?}"
    );
    // The customer writes again (in a later second: WeCom's send_time has 1 s resolution,
    // and sends of the same second as a customer message count against it): a new
    // allowance, the answer goes out.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    e.fake
        .customer_writes(KFID, CUSTOMER, "What is the refund policy?");
    notify(&e.kefu, &e.fake, &e.seal).await;
    eventually("the third question stored", || {
        transcript(&e.kefu, KF_CHANNEL, &conv())
            .iter()
            .any(|(_, x)| x == "What is the refund policy?")
            .then_some(())
    })
    .await;
    let got = replies(&e.fake, CUSTOMER, 6).await;
    assert!(got[5].contains("30 days"), "{got:?}");
    assert!(!got.iter().any(|x| x == "sixth"));
    assert!(
        e.fake.send_refusals().is_empty(),
        "kefu never hit 95001: {:?}",
        e.fake.send_refusals()
    );
    let q = e
        .kefu
        .state
        .app
        .store
        .quota(&format!("kf:{KF_CHANNEL}:{}", conv()))
        .unwrap()
        .unwrap();
    assert_eq!(q.used, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_95018_reads_the_state_records_it_and_is_never_retried() {
    let e = env().await;
    e.fake
        .customer_writes(KFID, CUSTOMER, "How do I reset my password?");
    // lisi took the session in the client and no event said so.
    e.fake.set_state(KFID, CUSTOMER, 3, Some("lisi"));
    notify(&e.kefu, &e.fake, &e.seal).await;
    let t = eventually("the refusal recorded", || {
        let t = transcript(&e.kefu, KF_CHANNEL, &conv());
        t.iter()
            .any(|(r, x)| r == "system" && x.contains("reply not delivered"))
            .then_some(t)
    })
    .await;
    assert!(t.iter().any(|(_, x)| x.contains("state 3")), "{t:?}");
    let refusals = e.fake.send_refusals();
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].1, 95018);
    assert!(e.fake.state_gets() >= 1, "service_state/get read");
    let c = e
        .kefu
        .state
        .app
        .store
        .conversation(KF_CHANNEL, &conv())
        .unwrap()
        .unwrap();
    assert!(c.handed_off(), "a person owns it: the bot goes quiet");
    assert_eq!(c.handoff.unwrap().agent.as_deref(), Some("lisi"));
    // The next customer message is stored, not answered, and nothing is retried.
    e.fake.customer_writes(KFID, CUSTOMER, "hello?");
    notify(&e.kefu, &e.fake, &e.seal).await;
    eventually("stored", || {
        transcript(&e.kefu, KF_CHANNEL, &conv())
            .iter()
            .any(|(_, x)| x == "hello?")
            .then_some(())
    })
    .await;
    assert_eq!(e.fake.send_refusals().len(), 1);
    assert!(e.fake.sent().is_empty());
    eventually("an empty outbox", || {
        (e.kefu.outbox_len() == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_cursor_resumes_from_three_days_without_repeats() {
    let e = env().await;
    let two_hours_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 2 * 3600 * 1000;
    e.fake
        .customer_writes(KFID, CUSTOMER, "How do I reset my password?");
    notify(&e.kefu, &e.fake, &e.seal).await;
    replies(&e.fake, CUSTOMER, 1).await;
    // The stored cursor is refused; meanwhile an old message the bot never saw, a new one.
    e.fake.refuse_cursor_once(40058);
    e.fake
        .customer_writes_at(KFID, "wmOld", "How do I reset my password?", two_hours_ago);
    e.fake
        .customer_writes(KFID, CUSTOMER, "What is the refund policy?");
    notify(&e.kefu, &e.fake, &e.seal).await;
    let got = replies(&e.fake, CUSTOMER, 2).await;
    assert!(got[1].contains("30 days"), "{got:?}");
    let reqs = e.fake.sync_requests();
    assert!(
        reqs.iter().filter(|r| r["cursor"].is_null()).count() == 2,
        "restarted once without a cursor"
    );
    // The first message was not answered again; the old one is stored, not answered.
    e.fake.customer_writes(KFID, CUSTOMER, "thanks");
    notify(&e.kefu, &e.fake, &e.seal).await;
    let got = replies(&e.fake, CUSTOMER, 3).await;
    assert_eq!(got.len(), 3, "{got:?}");
    let old = transcript(&e.kefu, KF_CHANNEL, &format!("{KFID}:wmOld"));
    assert_eq!(roles(&old), ["user"], "{old:?}");
    assert!(e.fake.sent_to("wmOld").is_empty());
    let mine = transcript(&e.kefu, KF_CHANNEL, &conv());
    assert_eq!(
        roles(&mine).iter().filter(|r| **r == "user").count(),
        3,
        "{mine:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_text_gets_the_non_text_reply_and_its_content_is_kept() {
    let e = env().await;
    e.fake
        .customer_sends(KFID, CUSTOMER, "image", json!({"media_id": "MEDIA_1"}));
    e.fake.customer_sends(
        KFID,
        CUSTOMER,
        "location",
        json!({"latitude": 23.1, "longitude": 113.3, "name": "广州塔", "address": "阅江西路222号"}),
    );
    notify(&e.kefu, &e.fake, &e.seal).await;
    let got = replies(&e.fake, CUSTOMER, 2).await;
    assert_eq!(got[0], got[1]);
    let t = transcript(&e.kefu, KF_CHANNEL, &conv());
    assert!(
        t.iter().any(|(r, x)| r == "user" && x == "[image] MEDIA_1"),
        "{t:?}"
    );
    assert!(
        t.iter().any(|(r, x)| r == "user" && x.contains("广州塔")),
        "{t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_text_goes_to_a_human_when_configured() {
    let e = env_with(
        "human_servicers = [\"zhangsan\"]",
        "[handoff]\nnon_text = true\n",
    )
    .await;
    e.fake
        .customer_sends(KFID, CUSTOMER, "file", json!({"media_id": "FILE_1"}));
    notify(&e.kefu, &e.fake, &e.seal).await;
    eventually("the transfer", || e.fake.trans_calls().into_iter().next()).await;
    assert_eq!(e.fake.session(KFID, CUSTOMER).state, 3);
    let c = e
        .kefu
        .state
        .app
        .store
        .conversation(KF_CHANNEL, &conv())
        .unwrap()
        .unwrap();
    assert_eq!(c.handoff.unwrap().reason, "non_text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msg_send_fail_marks_the_reply_failed() {
    let e = env().await;
    e.fake.event(
        KFID,
        json!({"event_type": "msg_send_fail", "open_kfid": KFID, "external_userid": CUSTOMER,
               "fail_msgid": "kefu-7f3a9c01", "fail_type": 5}),
    );
    e.fake.event(
        KFID,
        json!({"event_type": "servicer_status_change", "open_kfid": KFID, "servicer_userid": "zhangsan", "status": 2, "stop_type": 1}),
    );
    e.fake.event(
        KFID,
        json!({"event_type": "user_recall_msg", "open_kfid": KFID, "external_userid": CUSTOMER, "recall_msgid": "m9"}),
    );
    notify(&e.kefu, &e.fake, &e.seal).await;
    let t = eventually("both events recorded", || {
        let t = transcript(&e.kefu, KF_CHANNEL, &conv());
        (t.len() >= 2).then_some(t)
    })
    .await;
    assert!(
        t[0].1.contains("kefu-7f3a9c01") && t[0].1.contains("session was closed"),
        "{t:?}"
    );
    assert!(
        t[1].1.starts_with("[user_recall_msg]") && t[1].1.contains("recall_msgid=m9"),
        "{t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expire_and_a_refused_callback_token_is_dropped() {
    let e = env().await;
    e.fake
        .customer_writes(KFID, CUSTOMER, "How do I reset my password?");
    notify(&e.kefu, &e.fake, &e.seal).await;
    replies(&e.fake, CUSTOMER, 1).await;
    assert_eq!(e.fake.gettoken_calls(), 1);
    e.fake.expire_tokens();
    e.fake
        .customer_writes(KFID, CUSTOMER, "What is the refund policy?");
    // A callback token the API does not know: 95007, pulled again without it.
    let (status, _) = post_to(
        &e.kefu,
        KF_CHANNEL,
        &notification(&e.seal, Some(KFID), Some("ENCunknown")),
    )
    .await;
    assert_eq!(status, 200);
    let got = replies(&e.fake, CUSTOMER, 2).await;
    assert!(got[1].contains("30 days"));
    assert_eq!(e.fake.gettoken_calls(), 2, "one new access token");
    let last = e.fake.sync_requests();
    assert!(last.iter().any(|r| r["token"] == "ENCunknown"));
    assert!(
        last.last().unwrap().get("token").is_none(),
        "retried without it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wecom_app_with_kf_pulls_and_replies_on_its_own_url() {
    let seal = Sealer::official();
    let fake = FakeKf::start(&seal.corp_id, wecom_kefu::APP_SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let kb = write_kb(dir.path());
    let mut cfg = wecom_kefu::config(&kb, &fake.base);
    cfg.handoff.notify.clear();
    cfg.notify.clear();
    if let kefu::config::ChannelConfig::WeCom(w) = &mut cfg.channels[0] {
        w.kf = true;
    }
    let db = sled::Config::new().temporary(true).open().unwrap();
    let kefu = Kefu::start(cfg, db).await;
    fake.customer_writes(KFID, CUSTOMER, "What is the refund policy?");
    let token = fake.msg_token();
    let (status, body) = post_to(
        &kefu,
        wecom_kefu::CHANNEL,
        &notification(&seal, Some(KFID), Some(&token)),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, ""));
    let got = replies(&fake, CUSTOMER, 1).await;
    assert!(got[0].contains("30 days"));
    let c = kefu
        .state
        .app
        .store
        .conversation(wecom_kefu::CHANNEL, &conv())
        .unwrap()
        .unwrap();
    assert_eq!(c.kind, adapters::ChannelKind::WeComKf);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wecom_app_without_kf_ignores_kf_notifications() {
    let seal = Sealer::official();
    let fake = FakeKf::start(&seal.corp_id, wecom_kefu::APP_SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let kb = write_kb(dir.path());
    let mut cfg = wecom_kefu::config(&kb, &fake.base);
    cfg.handoff.notify.clear();
    cfg.notify.clear();
    let db = sled::Config::new().temporary(true).open().unwrap();
    let kefu = Kefu::start(cfg, db).await;
    fake.customer_writes(KFID, CUSTOMER, "What is the refund policy?");
    let token = fake.msg_token();
    let (status, body) = post_to(
        &kefu,
        wecom_kefu::CHANNEL,
        &notification(&seal, Some(KFID), Some(&token)),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (200, ""),
        "an authentic event: 200"
    );
    settle().await;
    assert!(fake.sync_requests().is_empty());
    assert_eq!(
        kefu.state.app.metrics.get(
            "kefu_callbacks_total",
            &[("channel", wecom_kefu::CHANNEL), ("outcome", "ignored")]
        ),
        1
    );
}

/// kefu on a runtime of its own over the database at `db_path`: dropping the runtime ends
/// every task holding the database, so the next one can open the same directory.
fn kefu_run<F, Fut>(fake: &Arc<FakeKf>, kb: &std::path::Path, db_path: &std::path::Path, body: F)
where
    F: FnOnce(Kefu) -> Fut,
    Fut: std::future::Future<Output = Kefu>,
{
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = reopen::open_when_free(db_path);
        let kefu = Kefu::start(kf_config(kb, &fake.base, "", ""), db).await;
        let kefu = body(kefu).await;
        kefu.stop();
        kefu.state.app.store.flush().unwrap();
    });
    rt.shutdown_timeout(Duration::from_secs(5));
}

/// What a test across restarts keeps: the fake kf API on its own runtime (it outlives each
/// `kefu_run`), the knowledge and the database path.
struct Restarts {
    _fake_rt: tokio::runtime::Runtime,
    seal: Sealer,
    fake: Arc<FakeKf>,
    _dir: tempfile::TempDir,
    kb: std::path::PathBuf,
    db_path: std::path::PathBuf,
}

impl Restarts {
    fn new() -> Self {
        let fake_rt = tokio::runtime::Runtime::new().unwrap();
        let seal = Sealer::official();
        let fake = fake_rt.block_on(FakeKf::start(&seal.corp_id, KF_SECRET));
        let dir = tempfile::tempdir().unwrap();
        let kb = write_kb(dir.path());
        let db_path = dir.path().join("db");
        Restarts {
            _fake_rt: fake_rt,
            seal,
            fake,
            _dir: dir,
            kb,
            db_path,
        }
    }
}

fn cursor_key() -> String {
    kefu::server::channels::kf::sync::cursor_key(KF_CHANNEL, KFID)
}

/// The account's stored cursor.
fn cursor(store: &dyn kefu::store::Store) -> Option<String> {
    store
        .kv_get(&cursor_key())
        .unwrap()
        .map(|v| String::from_utf8(v).unwrap())
}

#[test]
fn the_cursor_survives_a_restart() {
    let Restarts {
        _fake_rt,
        seal,
        fake,
        _dir,
        kb,
        db_path,
    } = Restarts::new();
    fake.customer_writes(KFID, CUSTOMER, "How do I reset my password?");
    fake.customer_writes(KFID, "wmOther", "What is the refund policy?");
    kefu_run(&fake, &kb, &db_path, |kefu| async {
        notify(&kefu, &fake, &seal).await;
        replies(&fake, CUSTOMER, 1).await;
        replies(&fake, "wmOther", 1).await;
        let store = kefu.state.app.store.clone();
        eventually("the cursor saved", || {
            (cursor(store.as_ref()).as_deref() == Some("CUR-2")).then_some(())
        })
        .await;
        eventually("an empty outbox", || (kefu.outbox_len() == 0).then_some(())).await;
        kefu
    });
    let before = fake.sync_requests().len();
    fake.customer_writes(KFID, CUSTOMER, "What is the refund policy?");
    kefu_run(&fake, &kb, &db_path, |kefu| async {
        // On start kefu catches up on the accounts it knows, from the stored cursor.
        let got = replies(&fake, CUSTOMER, 2).await;
        assert!(got[1].contains("30 days"), "{got:?}");
        kefu
    });
    let after = &fake.sync_requests()[before..];
    assert_eq!(after[0]["cursor"], "CUR-2", "{after:?}");
    assert!(
        after.iter().all(|r| r["cursor"].is_string()),
        "never from the start again"
    );
    assert_eq!(fake.sent_to(CUSTOMER).len(), 2);
    assert_eq!(fake.sent_to("wmOther").len(), 1, "nothing answered twice");
}

/// The state a crash between storing a page and saving its cursor leaves behind: the page's
/// messages stored (their replies even queued, the platform refusing sends at the time),
/// the cursor still the one before the page. After a restart the page is pulled again;
/// nothing is answered twice, nothing is lost.
#[test]
fn a_kill_between_fetch_and_cursor_save_replays_without_double_answers() {
    let Restarts {
        _fake_rt,
        seal,
        fake,
        _dir,
        kb,
        db_path,
    } = Restarts::new();
    let questions = [
        "How do I reset my password?",
        "What is the refund policy?",
        "can I get my money back",
    ];
    fake.customer_writes(KFID, CUSTOMER, questions[0]);
    kefu_run(&fake, &kb, &db_path, |kefu| async {
        notify(&kefu, &fake, &seal).await;
        replies(&fake, CUSTOMER, 1).await;
        let store = kefu.state.app.store.clone();
        eventually("cursor CUR-1", || {
            (cursor(store.as_ref()).as_deref() == Some("CUR-1")).then_some(())
        })
        .await;
        // The next page is fetched and stored while sends fail.
        fake.set_send_down(true);
        fake.customer_writes(KFID, CUSTOMER, questions[1]);
        fake.customer_writes(KFID, "wmSecond", questions[2]);
        notify(&kefu, &fake, &seal).await;
        eventually("the page stored and answered, replies waiting", || {
            let done = cursor(store.as_ref()).as_deref() == Some("CUR-3")
                && store.inbox_all().unwrap().is_empty()
                && kefu.outbox_len() == 2;
            done.then_some(())
        })
        .await;
        kefu
    });
    // Crash state: the cursor save of that page never happened.
    {
        let db = reopen::open_when_free(&db_path);
        let store = kefu::store::SledStore::open(&db).unwrap();
        use kefu::store::Store;
        store.kv_put(&cursor_key(), b"CUR-1").unwrap();
        store.flush().unwrap();
    }
    fake.set_send_down(false);
    let before = fake.sync_requests().len();
    kefu_run(&fake, &kb, &db_path, |kefu| async {
        let got = replies(&fake, CUSTOMER, 2).await;
        assert!(got[1].contains("30 days"), "{got:?}");
        replies(&fake, "wmSecond", 1).await;
        // A later message proves nothing else was on its way.
        fake.customer_writes(KFID, CUSTOMER, "thanks");
        notify(&kefu, &fake, &seal).await;
        let got = replies(&fake, CUSTOMER, 3).await;
        assert_eq!(got.len(), 3, "{got:?}");
        eventually("an empty outbox", || (kefu.outbox_len() == 0).then_some(())).await;
        let t = transcript(&kefu, KF_CHANNEL, &conv());
        assert_eq!(
            roles(&t).iter().filter(|r| **r == "user").count(),
            3,
            "stored once: {t:?}"
        );
        kefu
    });
    let replay = &fake.sync_requests()[before..];
    assert_eq!(replay[0]["cursor"], "CUR-1", "the page is pulled again");
    assert_eq!(fake.sent_to("wmSecond").len(), 1);
    assert_eq!(fake.sent().len(), 4, "one reply per question");
    assert!(
        fake.send_refusals().is_empty(),
        "not even a refused duplicate msgid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_during_a_sync_schedule_exactly_one_more() {
    let e = env().await;
    e.fake
        .sync_delay_ms
        .store(300, std::sync::atomic::Ordering::SeqCst);
    e.fake
        .customer_writes(KFID, CUSTOMER, "How do I reset my password?");
    notify(&e.kefu, &e.fake, &e.seal).await;
    eventually("the first sync in flight", || {
        (!e.fake.sync_requests().is_empty()).then_some(())
    })
    .await;
    for _ in 0..3 {
        notify(&e.kefu, &e.fake, &e.seal).await;
    }
    eventually("two syncs", || {
        (e.fake.sync_requests().len() == 2).then_some(())
    })
    .await;
    replies(&e.fake, CUSTOMER, 1).await;
    // Nothing else is scheduled: a later notification makes the third.
    e.fake
        .customer_writes(KFID, CUSTOMER, "What is the refund policy?");
    notify(&e.kefu, &e.fake, &e.seal).await;
    replies(&e.fake, CUSTOMER, 2).await;
    assert_eq!(e.fake.sync_requests().len(), 3);
    assert_eq!(e.fake.max_concurrent_syncs(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_past_the_48_hour_window_is_not_sent() {
    let e = env().await;
    e.fake
        .customer_writes(KFID, "wmFirst", "How do I reset my password?");
    notify(&e.kefu, &e.fake, &e.seal).await;
    replies(&e.fake, "wmFirst", 1).await;
    // Pulled with a cursor (so not a cold backlog), but written 49 hours ago.
    let long_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        - 49 * 3600 * 1000;
    e.fake
        .customer_writes_at(KFID, CUSTOMER, "What is the refund policy?", long_ago);
    notify(&e.kefu, &e.fake, &e.seal).await;
    let t = eventually("the agents told", || {
        let t = transcript(&e.kefu, KF_CHANNEL, &conv());
        t.iter()
            .any(|(r, x)| r == "system" && x.contains("a reply was not sent"))
            .then_some(t)
    })
    .await;
    assert!(
        t.iter().any(|(r, _)| r == "bot"),
        "answered in the transcript: {t:?}"
    );
    assert!(e.fake.sent_to(CUSTOMER).is_empty());
    assert!(
        e.fake.send_refusals().is_empty(),
        "kefu did not even try (no 95002)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_configured_accounts_are_pulled_and_welcome_can_be_off() {
    let e = env_with(&format!("open_kfids = [\"{KFID}\"]\nwelcome = false"), "").await;
    // kefu catches up on its configured account at start.
    eventually("the start-up sync", || {
        (!e.fake.sync_requests().is_empty()).then_some(())
    })
    .await;
    let other = "wkOtherAccount000000000000000000";
    e.fake
        .customer_writes(other, CUSTOMER, "What is the refund policy?");
    let token = e.fake.msg_token();
    let (status, _) = post_to(
        &e.kefu,
        KF_CHANNEL,
        &notification(&e.seal, Some(other), Some(&token)),
    )
    .await;
    assert_eq!(status, 200);
    // The configured account: entered, then a question; no welcome, one answer.
    e.fake.enter_session(KFID, CUSTOMER);
    e.fake
        .customer_writes(KFID, CUSTOMER, "How do I reset my password?");
    notify(&e.kefu, &e.fake, &e.seal).await;
    replies(&e.fake, CUSTOMER, 1).await;
    assert!(e.fake.on_event_sent().is_empty(), "welcome = false");
    assert!(
        e.fake
            .sync_requests()
            .iter()
            .all(|r| r["open_kfid"] == KFID),
        "the other account is never pulled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_the_platform_refuses_still_tells_the_customer() {
    let e = env().await;
    e.fake.cue_trans(95017); // the API switch is off for this account
    e.fake.customer_writes(KFID, CUSTOMER, "转人工");
    notify(&e.kefu, &e.fake, &e.seal).await;
    let got = replies(&e.fake, CUSTOMER, 1).await;
    assert!(
        got[0].contains("人工"),
        "the transfer line as a plain message: {got:?}"
    );
    assert_eq!(e.fake.trans_calls().len(), 1, "not retried");
    assert!(e.fake.on_event_sent().is_empty());
    let c = e
        .kefu
        .state
        .app
        .store
        .conversation(KF_CHANNEL, &conv())
        .unwrap()
        .unwrap();
    assert!(
        c.handed_off(),
        "kefu's own agents take it (the notify robots were told)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_session_end_is_noticed_when_the_customer_writes_again() {
    let e = env().await;
    e.fake.customer_writes(KFID, CUSTOMER, "转人工");
    notify(&e.kefu, &e.fake, &e.seal).await;
    eventually("handed to zhangsan", || {
        (e.fake.session(KFID, CUSTOMER).state == 3).then_some(())
    })
    .await;
    eventually("the transfer recorded", || {
        transcript(&e.kefu, KF_CHANNEL, &conv())
            .iter()
            .any(|(_, x)| x.contains("kefu moved the session"))
            .then_some(())
    })
    .await;
    // zhangsan ends the session; the event never reaches kefu.
    e.fake.set_state(KFID, CUSTOMER, 4, None);
    e.fake
        .customer_writes(KFID, CUSTOMER, "What is the refund policy?");
    notify(&e.kefu, &e.fake, &e.seal).await;
    let got = replies(&e.fake, CUSTOMER, 1).await;
    assert!(got[0].contains("30 days"), "{got:?}");
    let t = transcript(&e.kefu, KF_CHANNEL, &conv());
    assert!(
        t.iter()
            .any(|(r, x)| r == "system" && x.contains("no longer with a servicer")),
        "{t:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_waits_for_a_full_conversation_queue_and_drops_nothing() {
    // Room for 2 waiting messages per conversation; one page brings 8 from one customer.
    // Every one is stored and handled once, in order, however often the page is offered.
    let e = env_with("", "[server]\nqueue_per_conversation = 2\n").await;
    let questions = ["How do I reset my password?", "What is the refund policy?"];
    for i in 0..8 {
        e.fake
            .customer_writes(KFID, CUSTOMER, questions[i % questions.len()]);
    }
    notify(&e.kefu, &e.fake, &e.seal).await;
    // WeCom allows 5 messages after the customer's last one (the 8th): 5 answers go out,
    // the other 3 are reported to the agents.
    let got = replies(&e.fake, CUSTOMER, 5).await;
    eventually("the agents told of the 3 not sent", || {
        (transcript(&e.kefu, KF_CHANNEL, &conv())
            .iter()
            .filter(|(r, x)| r == "system" && x.contains("a reply was not sent"))
            .count()
            == 3)
            .then_some(())
    })
    .await;
    settle().await;
    assert_eq!(e.fake.sent_to(CUSTOMER).len(), 5, "{got:?}");
    assert!(e.fake.send_refusals().is_empty(), "kefu never hit 95001");
    let asked = transcript(&e.kefu, KF_CHANNEL, &conv())
        .into_iter()
        .filter(|(r, _)| r == "user")
        .count();
    assert_eq!(asked, 8, "every message stored once");
    let answered = transcript(&e.kefu, KF_CHANNEL, &conv())
        .into_iter()
        .filter(|(r, _)| r == "bot")
        .count();
    assert_eq!(answered, 8, "every message had its turn");
    let m = &e.kefu.state.app.metrics;
    assert!(
        m.get(
            "kefu_callbacks_total",
            &[("channel", KF_CHANNEL), ("outcome", "busy")]
        ) > 0,
        "the page met the full queue"
    );
    assert_eq!(
        m.get(
            "kefu_callbacks_total",
            &[("channel", KF_CHANNEL), ("outcome", "accepted")]
        ),
        8
    );
    assert_eq!(
        m.get(
            "kefu_kf_syncs_total",
            &[("channel", KF_CHANNEL), ("outcome", "failed")]
        ),
        0,
        "a full queue is waited for, not a failed sync"
    );
    assert!(cursor(e.kefu.state.app.store.as_ref()).is_some());
}

/// A crash between a reply reaching WeCom and kefu clearing its "sending" mark: at restart
/// the reply goes again with the same `msgid`, the API refuses the repeat (errcode not
/// documented; 40058 in the fake), and kefu reads that as delivered — not a second message,
/// not a dead letter for an agent to puzzle over.
#[test]
fn a_reply_resent_after_a_crash_and_refused_as_a_repeat_is_delivered() {
    let Restarts {
        _fake_rt,
        seal,
        fake,
        _dir,
        kb,
        db_path,
    } = Restarts::new();
    fake.customer_writes(KFID, CUSTOMER, "How do I reset my password?");
    kefu_run(&fake, &kb, &db_path, |kefu| async {
        notify(&kefu, &fake, &seal).await;
        replies(&fake, CUSTOMER, 1).await;
        eventually("an empty outbox", || (kefu.outbox_len() == 0).then_some(())).await;
        kefu
    });
    // Crash state: the reply WeCom already has is still marked as being sent.
    {
        use kefu::store::Store;
        let db = reopen::open_when_free(&db_path);
        let store = kefu::store::SledStore::open(&db).unwrap();
        let sent = fake.sent().remove(0);
        let item = kefu::store::OutboxItem {
            id: 0,
            target: KF_CHANNEL.into(),
            call: adapters::Call {
                method: "POST".into(),
                url: adapters::wecom::kf::SEND_MSG_PATH.into(),
                body: sent.to_string(),
                auth: adapters::CallAuth::WeComToken,
            },
            fallback: vec![],
            then: vec![],
            queue: conv(),
            attempts: 0,
            next_at_ms: 0,
            created_ms: 1,
            last_error: None,
            sending_since_ms: Some(2),
            resent_after_crash: false,
            held_by: None,
            message: None,
        };
        store.outbox_push(&[item], None).unwrap();
        store.flush().unwrap();
    }
    kefu_run(&fake, &kb, &db_path, |kefu| async {
        eventually("the repeat refused", || {
            (!fake.send_refusals().is_empty()).then_some(())
        })
        .await;
        eventually("an empty outbox", || (kefu.outbox_len() == 0).then_some(())).await;
        assert_eq!(kefu.state.app.store.dead_letter_count().unwrap(), 0);
        kefu
    });
    assert_eq!(fake.sent_to(CUSTOMER).len(), 1, "delivered once");
    let refusals = fake.send_refusals();
    assert_eq!(refusals.len(), 1);
    assert_eq!(refusals[0].1, fake_kf::ERR_DUPLICATE_MSGID);
}
