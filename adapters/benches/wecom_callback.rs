//! One realistic WeCom text callback: verify the signature, decrypt, parse into `Inbound`.
//! Inputs (a sealed callback for a ~300-byte Chinese message) are built outside the timed
//! closure. Figures go in notes, never in asserts.

use std::time::{Duration, SystemTime};

use adapters::wecom::{signature, Cipher, WeCom, WeComParams};
use adapters::{Channel, Decoded, Secret};
use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::SeedableRng;

const TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
const KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
const CORP: &str = "ww1436e0e65a779aee";

fn callback(content: &str) -> (WeCom, http::Request<Bytes>) {
    let ch = WeCom::new(WeComParams {
        name: "support".into(),
        corp_id: CORP.into(),
        agent_id: 1000002,
        token: Secret::new(TOKEN),
        encoding_aes_key: Secret::new(KEY),
    })
    .expect("channel");
    let inner = format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[ChenJiaShun]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content><MsgId>7000000000000000001</MsgId><AgentID>1000002</AgentID></xml>"
    );
    let encrypt = Cipher::new(KEY).expect("key").encrypt(
        inner.as_bytes(),
        CORP,
        &mut StdRng::seed_from_u64(1),
    );
    let sig = signature(TOKEN, "1700000000", "1597212914", &encrypt);
    let body = format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName>\n<Encrypt><![CDATA[{encrypt}]]></Encrypt>\n<AgentID><![CDATA[1000002]]></AgentID>\n</xml>"
    );
    let req = http::Request::builder()
        .method("POST")
        .uri(format!(
            "/wecom/support?msg_signature={sig}&timestamp=1700000000&nonce=1597212914"
        ))
        .body(Bytes::from(body))
        .expect("request");
    (ch, req)
}

fn bench_callback(c: &mut Criterion) {
    let mut group = c.benchmark_group("wecom_callback");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for content in [
        "您好，我上周买的耳机有杂音，想申请退款，请问怎么办？谢谢".to_string(),
        "请问退款多久到账？".repeat(75),
    ] {
        let label = format!("text_{}B", content.len());
        let (ch, req) = callback(&content);
        assert!(matches!(ch.decode(&req, now), Ok(Decoded::Message(_))));
        group.throughput(Throughput::Bytes(req.body().len() as u64));
        group.bench_with_input(BenchmarkId::new("decode", &label), &req, |b, req| {
            b.iter(|| ch.decode(black_box(req), now))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_callback);
criterion_main!(benches);
