//! DingTalk callback: verify the `timestamp`/`sign` headers and parse one realistic group
//! text message into an `Inbound` — the work `POST /dingtalk/{name}` does before it answers.
//! Inputs are built outside the timed closure.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use adapters::dingtalk::{sign, DingTalk, DingTalkParams};
use adapters::{Channel, Decoded, Secret};
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const BODY: &str = r#"{"conversationId":"cidp8R+kAtw8hBL+bUYbQbu9A==","atUsers":[{"dingtalkId":"$:LWCP_v1:$robot"}],"chatbotCorpId":"ding9f50b15bccd16741","chatbotUserId":"$:LWCP_v1:$robot","msgId":"msgSz7QmWcu8tG9Mx7Z1Zm8ew==","senderNick":"张三","isAdmin":true,"senderStaffId":"manager4711","sessionWebhookExpiredTime":1577265836757,"createAt":1577262236757,"senderCorpId":"ding9f50b15bccd16741","conversationType":"2","senderId":"$:LWCP_v1:$sender","conversationTitle":"客服群","isInAtList":true,"sessionWebhook":"https://oapi.dingtalk.com/robot/sendBySession?session=abc","text":{"content":" 你好，我上周买的耳机左边没有声音，怎么申请退款？订单号 20240611-8812"},"robotCode":"dingrobot1","msgtype":"text"}"#;

fn bench(c: &mut Criterion) {
    let secret = Secret::new("this is a secret");
    let ts = "1577262236757";
    let ch = DingTalk::new(DingTalkParams {
        name: "helpdesk".into(),
        app_key: Secret::new("dingappkey"),
        app_secret: secret.clone(),
        robot_code: "dingrobot1".into(),
    })
    .expect("params");
    let req = http::Request::post("/dingtalk/helpdesk")
        .header("content-type", "application/json; charset=utf-8")
        .header("timestamp", ts)
        .header("sign", sign::sign(&secret, ts))
        .body(Bytes::from_static(BODY.as_bytes()))
        .expect("request");
    let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_577_262_240_000);
    assert!(matches!(ch.decode(&req, now), Ok(Decoded::Message(_))));

    let mut g = c.benchmark_group("dingtalk_callback");
    g.throughput(Throughput::Bytes(BODY.len() as u64));
    g.bench_function(format!("verify+parse/group_text/{}B", BODY.len()), |b| {
        b.iter(|| ch.decode(black_box(&req), black_box(now)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
