//! WeCom end to end: real encrypted callbacks into kefu over HTTP, replies out through a fake
//! WeCom API (`common/fake_wecom.rs`) that checks credentials and tokens and fails on cue.
//! Async effects are polled with a 10 s deadline; absence is proven with a later message of
//! the same conversation (one worker answers a conversation in order) or, where the refusal
//! happens before anything is queued, by checking the store right after the answer.

use std::sync::Arc;
use std::time::Duration;

#[path = "common/fake_wecom.rs"]
mod fake_wecom;
#[path = "common/reopen.rs"]
mod reopen;
#[path = "common/wecom_kefu.rs"]
mod wecom_kefu;

use fake_wecom::{eventually, Cue, FakeWeCom};
use kefu::config::Config;
use wecom_kefu::*;

struct Env {
    fake: Arc<FakeWeCom>,
    kefu: Kefu,
    seal: Sealer,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    env_with(|_| {}).await
}

/// For Tencent's official vectors, signed in 2014–2016: no timestamp window.
async fn env_for_vectors() -> Env {
    env_with(|c| {
        for ch in &mut c.channels {
            if let kefu::config::ChannelConfig::WeCom(w) = ch {
                w.timestamp_window_ms = 0;
            }
        }
    })
    .await
}

async fn env_with(adjust: impl FnOnce(&mut Config)) -> Env {
    let seal = Sealer::official();
    let fake = FakeWeCom::start(&seal.corp_id, APP_SECRET, AGENT_ID, ROBOT_KEY).await;
    let dir = tempfile::tempdir().unwrap();
    let kb = write_kb(dir.path());
    let db = sled::Config::new().temporary(true).open().unwrap();
    let mut cfg = config(&kb, &fake.base);
    adjust(&mut cfg);
    let kefu = Kefu::start(cfg, db).await;
    Env {
        fake,
        kefu,
        seal,
        _dir: dir,
    }
}

/// The replies `user` received, once there are `n` of them.
async fn replies(fake: &FakeWeCom, user: &str, n: usize) -> Vec<String> {
    eventually(&format!("{n} replies to {user}"), || {
        let got = fake.sent_to(user);
        (got.len() >= n).then_some(got)
    })
    .await
}

fn assert_nothing_kept(k: &Kefu, user: &str) {
    let store = &k.state.app.store;
    assert!(
        store.conversation(CHANNEL, user).unwrap().is_none(),
        "no conversation"
    );
    assert!(
        store.inbox_all().unwrap().is_empty(),
        "nothing in the inbox"
    );
    assert_eq!(k.outbox_len(), 0, "nothing queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_verification_answers_the_bare_echostr() {
    let e = env_for_vectors().await;
    let v = vector("B.get");
    let (status, body, _) = e
        .kefu
        .call("GET", v["http"]["query"].as_str().unwrap(), "")
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, "1288432023552776189", "no quotes, no XML, no newline");

    let v = vector("B.get_bad_signature");
    let (status, body, _) = e
        .kefu
        .call("GET", v["http"]["query"].as_str().unwrap(), "")
        .await;
    assert_eq!(status, 401);
    assert!(!body.contains("1288432023552776189"));
    let (status, _, _) = e.kefu.call("GET", "echostr=abc", "").await;
    assert_eq!(status, 401, "unsigned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_is_acknowledged_at_once_then_answered_through_message_send() {
    let e = env_for_vectors().await;
    let (status, body, took) = e
        .kefu
        .post(&e.seal.text(
            "zhangsan",
            7_000_000_000_000_000_001,
            "How do I reset my password?",
        ))
        .await;
    assert_eq!((status, body.as_str()), (200, ""), "an empty 200");
    assert!(
        took < Duration::from_secs(5),
        "inside WeCom's 5 s: {took:?}"
    );
    let got = replies(&e.fake, "zhangsan", 1).await;
    assert!(got[0].contains("Reset password"), "{got:?}");
    let m = &e.fake.sent()[0];
    assert_eq!(m["touser"], "zhangsan");
    assert_eq!(m["agentid"], AGENT_ID);
    assert_eq!(m["msgtype"], "text");
    assert_eq!(e.fake.gettoken_calls(), 1);

    // Tencent's own sample callback (text 你好 from ChenJiaShun), byte for byte as sent.
    let v = vector("B.post_text");
    let (status, body, _) = e
        .kefu
        .call(
            "POST",
            v["http"]["query"].as_str().unwrap(),
            v["http"]["body"].as_str().unwrap(),
        )
        .await;
    assert_eq!((status, body.as_str()), (200, ""));
    let got = replies(&e.fake, "ChenJiaShun", 1).await;
    assert!(!got[0].is_empty());
    assert_eq!(e.fake.gettoken_calls(), 1, "the token is reused");
    eventually("an empty outbox", || {
        (e.kefu.outbox_len() == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_replaced_and_the_reply_sent_once() {
    let e = env().await;
    e.kefu
        .post(&e.seal.text("wangwu", 1, "How do I reset my password?"))
        .await;
    replies(&e.fake, "wangwu", 1).await;
    assert_eq!(e.fake.gettoken_calls(), 1);

    e.fake.expire_tokens(); // the next send with the old token gets 42001
    e.kefu
        .post(&e.seal.text("wangwu", 2, "What is the refund policy?"))
        .await;
    let got = replies(&e.fake, "wangwu", 2).await;
    assert!(got[1].contains("30 days"), "{got:?}");
    assert_eq!(e.fake.gettoken_calls(), 2, "one new token");
    assert_eq!(
        e.fake.send_attempts(),
        3,
        "refused once, sent again at once"
    );
    eventually("an empty outbox", || {
        (e.kefu.outbox_len() == 0).then_some(())
    })
    .await;
    assert_eq!(e.fake.sent_to("wangwu").len(), 2, "delivered exactly once");
    let stored = e
        .kefu
        .state
        .app
        .store
        .kv_get("wecom_token:support")
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8(stored)
            .unwrap()
            .contains("ACCESS_TOKEN_2"),
        "the new token is persisted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_error_is_retried_and_delivered_once() {
    let e = env().await;
    e.fake.cue(Cue::Status(500));
    e.fake.cue(Cue::Errcode(-1)); // "system busy" next
    e.kefu
        .post(&e.seal.text("zhaoliu", 1, "What is the refund policy?"))
        .await;
    let got = replies(&e.fake, "zhaoliu", 1).await;
    assert!(got[0].contains("30 days"), "{got:?}");
    assert_eq!(e.fake.send_attempts(), 3);
    eventually("an empty outbox", || {
        (e.kefu.outbox_len() == 0).then_some(())
    })
    .await;
    assert_eq!(e.fake.sent().len(), 1, "delivered once");
    assert_eq!(e.fake.gettoken_calls(), 1, "a 5xx is not a token problem");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_callback_is_answered_once() {
    let e = env().await;
    let cb = e.seal.text("sunqi", 42, "How do I reset my password?");
    for _ in 0..3 {
        // WeCom's retries after a timeout: the same MsgId, each still gets its empty 200.
        let (status, body, _) = e.kefu.post(&cb).await;
        assert_eq!((status, body.as_str()), (200, ""));
    }
    // A re-sealed copy (new random prefix, same MsgId) is the same message too.
    e.kefu
        .post(&e.seal.text("sunqi", 42, "How do I reset my password?"))
        .await;
    // A later message of the same conversation is answered after anything queued before it.
    e.kefu
        .post(&e.seal.text("sunqi", 43, "What is the refund policy?"))
        .await;
    let got = replies(&e.fake, "sunqi", 2).await;
    eventually("an empty outbox", || {
        (e.kefu.outbox_len() == 0).then_some(())
    })
    .await;
    let got_all = e.fake.sent_to("sunqi");
    assert_eq!(got_all.len(), 2, "{got_all:?}");
    assert!(
        got[0].contains("Reset password") && got[1].contains("30 days"),
        "{got:?}"
    );
    // The events' dedupe key is user + CreateTime.
    e.kefu.post(&e.seal.event("sunqi", "enter_agent")).await;
    e.kefu.post(&e.seal.event("sunqi", "enter_agent")).await;
    e.kefu
        .post(&e.seal.text("sunqi", 44, "What is the refund policy?"))
        .await;
    replies(&e.fake, "sunqi", 3).await;
    eventually("an empty outbox", || {
        (e.kefu.outbox_len() == 0).then_some(())
    })
    .await;
    // sunqi wrote minutes ago: opening the app again is not greeted (the engine greets
    // once per few hours), and the duplicate event changes nothing either.
    assert_eq!(e.fake.sent_to("sunqi").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_signature_is_refused_and_nothing_happens() {
    let e = env().await;
    let mut cb = e.seal.text("mallory", 1, "How do I reset my password?");
    // Change the last hex digit of msg_signature.
    let at = cb.query.find('&').unwrap() - 1;
    let flipped = if &cb.query[at..=at] == "0" { "1" } else { "0" };
    cb.query.replace_range(at..=at, flipped);
    let (status, body, _) = e.kefu.post(&cb).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("error"));
    let unsigned = e.seal.text("mallory", 2, "hi");
    let (status, _, _) = e
        .kefu
        .call("POST", "timestamp=1&nonce=2", &unsigned.body)
        .await;
    assert_eq!(status, 401, "no msg_signature");
    // The refusal happens before anything is stored or queued: check at once.
    assert_nothing_kept(&e.kefu, "mallory");
    assert_eq!(e.fake.send_attempts() + e.fake.gettoken_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_xml_or_ciphertext_is_400() {
    let e = env().await;
    let good = e.seal.text("eve", 1, "hi");
    for body in [
        "<xml><Encrypt><![CDATA[abc",
        "not xml at all",
        "<xml><ToUserName>x</ToUserName></xml>",
        "",
    ] {
        let (status, _, _) = e.kefu.call("POST", &good.query, body).await;
        assert_eq!(status, 400, "{body:?}");
    }
    // Correctly signed, but the ciphertext is not ours to read.
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    for encrypt in ["!!not-base64!!", "YWJj", &"A".repeat(44)] {
        let sig = adapters::wecom::signature(&e.seal.token, &ts, "2", encrypt);
        let (status, _, _) = e
            .kefu
            .call(
                "POST",
                &format!("msg_signature={sig}&timestamp={ts}&nonce=2"),
                &format!("<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"),
            )
            .await;
        assert_eq!(status, 400, "{encrypt}");
    }
    // Sealed and signed correctly, but the inner XML is broken.
    let (status, _, _) = e.kefu.post(&e.seal.seal("<xml><MsgType>text</Msg")).await;
    assert_eq!(status, 400);
    assert_nothing_kept(&e.kefu, "eve");
    assert_eq!(e.fake.send_attempts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_for_another_corp_is_refused() {
    let e = env().await;
    // Tencent-derived vector: valid signature, another corp's receive id.
    let v = vector("B.post_wrong_receive_id");
    let (status, _, _) = e
        .kefu
        .call(
            "POST",
            v["http"]["query"].as_str().unwrap(),
            v["http"]["body"].as_str().unwrap(),
        )
        .await;
    assert_eq!(status, 401);
    let inner = format!(
        "<xml><ToUserName>wwsomeoneelse</ToUserName><FromUserName>trudy</FromUserName><CreateTime>1700000000</CreateTime><MsgType>text</MsgType><Content>How do I reset my password?</Content><MsgId>9</MsgId><AgentID>{AGENT_ID}</AgentID></xml>"
    );
    let (status, _, _) = e.kefu.post(&e.seal.seal_for(&inner, "wwsomeoneelse")).await;
    assert_eq!(status, 401);
    assert_nothing_kept(&e.kefu, "trudy");
    assert!(e
        .kefu
        .state
        .app
        .store
        .conversation(CHANNEL, "ChenJiaShun")
        .unwrap()
        .is_none());
    assert_eq!(e.fake.send_attempts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enter_agent_gets_a_greeting_and_an_image_the_text_only_answer() {
    let e = env().await;
    let replies_cfg = Config::default().replies;
    e.kefu.post(&e.seal.event("qianba", "enter_agent")).await;
    let got = replies(&e.fake, "qianba", 1).await;
    assert!(
        [
            replies_cfg.greeting.en.as_str(),
            replies_cfg.greeting.zh.as_str()
        ]
        .contains(&got[0].as_str()),
        "{got:?}"
    );

    let (status, body, _) = e.kefu.post(&e.seal.image("qianba", 77)).await;
    assert_eq!((status, body.as_str()), (200, ""));
    let got = replies(&e.fake, "qianba", 2).await;
    assert!(
        [
            replies_cfg.non_text.en.as_str(),
            replies_cfg.non_text.zh.as_str()
        ]
        .contains(&got[1].as_str()),
        "{got:?}"
    );

    // unsubscribe and other events: 200, no turn, no reply.
    let (status, body, _) = e.kefu.post(&e.seal.event("qianba", "unsubscribe")).await;
    assert_eq!((status, body.as_str()), (200, ""));
    e.kefu
        .post(&e.seal.text("qianba", 78, "What is the refund policy?"))
        .await;
    let got = replies(&e.fake, "qianba", 3).await;
    assert!(got[2].contains("30 days"), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_alerts_the_agents_robot() {
    let e = env().await;
    e.kefu.post(&e.seal.text("lisi", 5, "转人工")).await;
    let got = replies(&e.fake, "lisi", 1).await;
    assert_eq!(
        got[0],
        Config::default().handoff.message_zh,
        "the customer is told"
    );
    let alerts = eventually("a robot alert", || {
        let r = e.fake.robot();
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["msgtype"], "text");
    let text = alerts[0]["text"]["content"].as_str().unwrap();
    assert!(
        text.contains("support/lisi") && text.contains("needs a human"),
        "{text}"
    );
    assert!(
        text.contains("转人工"),
        "the summary quotes the customer: {text}"
    );
    eventually("an empty outbox", || {
        (e.kefu.outbox_len() == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_answer_goes_out_in_parts_of_at_most_2048_bytes() {
    let e = env().await;
    e.kefu.post(&e.seal.text("zhoujiu", 1, LONG_QUESTION)).await;
    let want = long_answer();
    let got = eventually("the whole long answer", || {
        let got = e.fake.sent_to("zhoujiu");
        (got.concat().len() >= want.len()).then_some(got)
    })
    .await;
    assert!(got.len() >= 2, "{} parts", got.len());
    assert!(
        got.iter().all(|p| p.len() <= 2048),
        "{:?}",
        got.iter().map(String::len).collect::<Vec<_>>()
    );
    assert_eq!(got.concat(), want, "in order, nothing lost");
}

/// A reply that could not be sent stays in the outbox across a restart and goes out once.
/// Each kefu runs on its own runtime: dropping the runtime ends every task holding the
/// database, so the second kefu can open the same directory.
#[test]
fn a_pending_reply_survives_a_restart_and_is_sent_once() {
    let fake_rt = tokio::runtime::Runtime::new().unwrap();
    let seal = Sealer::official();
    let fake = fake_rt.block_on(FakeWeCom::start(
        &seal.corp_id,
        APP_SECRET,
        AGENT_ID,
        ROBOT_KEY,
    ));
    let dir = tempfile::tempdir().unwrap();
    let kb = write_kb(dir.path());
    let db_path = dir.path().join("db");

    fake.set_down(true);
    let first = tokio::runtime::Runtime::new().unwrap();
    first.block_on(async {
        let db = reopen::open_when_free(&db_path);
        let kefu = Kefu::start(config(&kb, &fake.base), db).await;
        let (status, _, _) = kefu
            .post(&seal.text("restart-user", 1, "What is the refund policy?"))
            .await;
        assert_eq!(status, 200);
        let store = kefu.state.app.store.clone();
        eventually("the reply queued and the message done", || {
            let item = store
                .outbox_items("support", 1)
                .unwrap()
                .into_iter()
                .next()?;
            (item.attempts >= 1 && store.inbox_all().unwrap().is_empty()).then_some(())
        })
        .await;
        assert_eq!(kefu.outbox_len(), 1, "the entry stays while WeCom is down");
        kefu.stop();
        store.flush().unwrap();
    });
    first.shutdown_timeout(Duration::from_secs(5));
    assert!(fake.sent().is_empty());

    fake.set_down(false);
    let second = tokio::runtime::Runtime::new().unwrap();
    second.block_on(async {
        let db = reopen::open_when_free(&db_path);
        let kefu = Kefu::start(config(&kb, &fake.base), db).await;
        let got = replies(&fake, "restart-user", 1).await;
        assert!(got[0].contains("30 days"), "{got:?}");
        eventually("an empty outbox", || (kefu.outbox_len() == 0).then_some(())).await;
        // A later message of the same user proves nothing else was queued for it.
        kefu.post(&seal.text("restart-user", 2, "How do I reset my password?"))
            .await;
        let got = replies(&fake, "restart-user", 2).await;
        assert!(got[1].contains("Reset password"), "{got:?}");
        eventually("an empty outbox", || (kefu.outbox_len() == 0).then_some(())).await;
        assert_eq!(
            fake.sent_to("restart-user").len(),
            2,
            "the first reply once"
        );
        kefu.stop();
    });
    second.shutdown_timeout(Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_channel_is_404() {
    let e = env().await;
    let cb = e.seal.text("x", 1, "hi");
    let url = format!("{}/wecom/nope?{}", e.kefu.base, cb.query);
    let resp = e.kefu.http.post(url).body(cb.body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}
