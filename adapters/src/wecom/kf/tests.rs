//! kf codec tests over the vectors of `shared/protocols/wecom-kf.md` §9 (a copy lives in
//! `adapters/tests/vectors/wecom_kf.json`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};

use super::session::{
    servicer_list_path, state_get_body, trans_body, ServicerList, StateReply, TransReply,
};
use super::*;
use crate::wecom::{signature, WeCom, WeComParams};
use crate::{CallAuth, ContentKind, Inbound, UserRef};

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/wecom_kf.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("kf vectors")).expect("json")
}

fn v(name: &str) -> Value {
    vectors()[name].clone()
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str().unwrap_or_else(|| panic!("{k}")).to_string()
}

const KFID: &str = "wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q";
const CUSTOMER: &str = "wmAJ2GCAAAme1XQRC-NI-q0_ZM9ukoAw";

fn channel() -> WeComKf {
    let v1 = v("V1_callback");
    WeComKf::new(WeComKfParams {
        name: "wxkf".into(),
        corp_id: s(&v1, "corp_id"),
        token: Secret::new(s(&v1, "token")),
        encoding_aes_key: Secret::new(s(&v1, "encoding_aes_key")),
    })
    .unwrap()
}

fn request(method: &str, query: &str, body: &str) -> http::Request<Bytes> {
    http::Request::builder()
        .method(method)
        .uri(format!("/wecom/wxkf?{query}"))
        .body(Bytes::copy_from_slice(body.as_bytes()))
        .unwrap()
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn v1_request() -> http::Request<Bytes> {
    let v1 = v("V1_callback");
    request("POST", &s(&v1, "http_query"), &s(&v1, "http_body"))
}

fn seal(ch_token: &str, cipher: &Cipher, inner: &str, receive_id: &str) -> (String, String) {
    let encrypt = cipher.encrypt(inner.as_bytes(), receive_id, &mut StdRng::seed_from_u64(3));
    let sig = signature(ch_token, "1700000000", "42", &encrypt);
    (
        format!("msg_signature={sig}&timestamp=1700000000&nonce=42"),
        format!("<xml><ToUserName><![CDATA[x]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"),
    )
}

#[test]
fn v1_is_a_notice_with_its_token_and_account() {
    let want = KfNotice {
        open_kfid: Some(KFID.into()),
        token: Some(Secret::new(
            "ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR",
        )),
        create_time: 1_700_000_000,
    };
    assert_eq!(
        channel().decode(&v1_request(), now()),
        Ok(Decoded::KfNotice(want.clone()))
    );
    // The plaintext in the notes is what the ciphertext holds (random prefix included).
    let v1 = v("V1_callback");
    let cipher = Cipher::new(&s(&v1, "encoding_aes_key")).unwrap();
    let opened = cipher.decrypt(&s(&v1, "ciphertext")).unwrap();
    assert_eq!(opened.msg, s(&v1, "plaintext").as_bytes());
    assert_eq!(opened.receive_id, s(&v1, "corp_id").as_bytes());

    // Mode B: the same callback on an app channel, only when the app manages kf.
    let app = WeCom::new(WeComParams {
        name: "support".into(),
        corp_id: s(&v1, "corp_id"),
        agent_id: 1000002,
        token: Secret::new(s(&v1, "token")),
        encoding_aes_key: Secret::new(s(&v1, "encoding_aes_key")),
    })
    .unwrap();
    assert!(matches!(
        app.decode(&v1_request(), now()),
        Ok(Decoded::Ignored(_))
    ));
    assert_eq!(
        app.with_kf(true).decode(&v1_request(), now()),
        Ok(Decoded::KfNotice(want))
    );
}

#[test]
fn notices_without_account_or_token_and_other_callbacks() {
    let ch = channel();
    let v1 = v("V1_callback");
    let cipher = Cipher::new(&s(&v1, "encoding_aes_key")).unwrap();
    let corp = s(&v1, "corp_id");
    let token = s(&v1, "token");
    // 2021-era notice: no OpenKfId → every account; no Token → sync without one.
    let (q, b) = seal(&token, &cipher, "<xml><ToUserName>x</ToUserName><CreateTime>5</CreateTime><MsgType>event</MsgType><Event>kf_msg_or_event</Event></xml>", &corp);
    assert_eq!(
        ch.decode(&request("POST", &q, &b), now()),
        Ok(Decoded::KfNotice(KfNotice {
            open_kfid: None,
            token: None,
            create_time: 5
        }))
    );
    // An app message sent to the kf URL (LangBot #1470): authentic, ignored.
    let (q, b) = seal(&token, &cipher, "<xml><FromUserName>li</FromUserName><CreateTime>1</CreateTime><MsgType>text</MsgType><Content>hi</Content><MsgId>1</MsgId></xml>", &corp);
    assert!(matches!(
        ch.decode(&request("POST", &q, &b), now()),
        Ok(Decoded::Ignored(_))
    ));
    // Sealed for another corp, or signed with another token: 401 material, nothing parsed.
    let (q, b) = seal(
        &token,
        &cipher,
        "<xml><MsgType>event</MsgType><Event>kf_msg_or_event</Event></xml>",
        "ww0000000000000000",
    );
    assert_eq!(
        ch.decode(&request("POST", &q, &b), now()),
        Err(DecodeError::WrongReceiver("ww0000000000000000".into()))
    );
    let (q, b) = seal("another-token", &cipher, "<xml/>", &corp);
    assert_eq!(
        ch.decode(&request("POST", &q, &b), now()),
        Err(DecodeError::BadSignature)
    );
    let bad = s(&v1, "http_query").replace("4d31d3d9", "4d31d3d8");
    assert_eq!(
        ch.decode(&request("POST", &bad, &s(&v1, "http_body")), now()),
        Err(DecodeError::BadSignature)
    );
    // GET URL verification answers the bare echostr.
    let echo = cipher.encrypt(b"8817391283", &corp, &mut StdRng::seed_from_u64(1));
    let sig = signature(&token, "1", "2", &echo);
    let q = format!(
        "msg_signature={sig}&timestamp=1&nonce=2&echostr={}",
        url::form_urlencoded::byte_serialize(echo.as_bytes()).collect::<String>()
    );
    assert_eq!(
        ch.decode(&request("GET", &q, ""), now()),
        Ok(Decoded::Challenge("8817391283".into()))
    );
    assert!(matches!(
        ch.decode(&request("PUT", &q, ""), now()),
        Err(DecodeError::Malformed(_))
    ));
    assert_eq!(ch.kind(), ChannelKind::WeComKf);
}

#[test]
fn v2_sync_request_is_byte_exact() {
    let want = v("V2_sync_request");
    let got = sync_request_body(
        Some("4gw7MepFLfgF2VC5npN"),
        Some("ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR"),
        1000,
        KFID,
    );
    // The notes' text, field order included, without its spaces.
    assert_eq!(
        got,
        r#"{"cursor":"4gw7MepFLfgF2VC5npN","token":"ENCApHxnGDNAVNY4AaSJKj4Tb5mwsEMzxhFmHVGcra996NR","limit":1000,"voice_format":0,"open_kfid":"wkAJ2GCAAASSm4_FhToWMFea0xAFfd3Q"}"#
    );
    assert_eq!(serde_json::from_str::<Value>(&got).unwrap(), want);
    // Neither cursor nor token: omitted, not empty; limit clamped to 1..=1000.
    assert_eq!(
        sync_request_body(None, Some(""), 5000, KFID),
        format!(r#"{{"limit":1000,"voice_format":0,"open_kfid":"{KFID}"}}"#)
    );
}

fn page(name: &str) -> SyncPage {
    match parse_sync_reply(v(name).to_string().as_bytes(), "wxkf", KFID).unwrap() {
        SyncReply::Page(p) => p,
        other => panic!("{other:?}"),
    }
}

fn message(item: &KfItem) -> &Inbound {
    match item {
        KfItem::Message(m) => m,
        other => panic!("expected a message, got {other:?}"),
    }
}

#[test]
fn v3_v4_pages_read_in_order_with_origins() {
    let p1 = page("V3_page1");
    assert_eq!((p1.next_cursor.as_str(), p1.has_more), ("CURSOR_P1", true));
    let enter = message(&p1.items[0]);
    assert_eq!(enter.content, ContentKind::Event("enter_session".into()));
    assert_eq!(enter.conversation, format!("{KFID}:{CUSTOMER}"));
    assert_eq!(enter.id, format!("{KFID}:from_msgid_1001"));
    assert_eq!(enter.route["welcome_code"], "WELCOME_CODE_1");
    assert_eq!(enter.route["scene_param"], "order%3D42");
    assert_eq!(Origin::of(&enter.route), Some(Origin::Event));
    assert_eq!(enter.sent_at_ms, 1_700_000_100_000);
    let hello = message(&p1.items[1]);
    assert_eq!(
        (hello.content.clone(), hello.text.as_str()),
        (ContentKind::Text, "你好，在吗")
    );
    assert_eq!(Origin::of(&hello.route), Some(Origin::Customer));
    assert_eq!(hello.user.id, CUSTOMER);
    assert_eq!(hello.kind, ChannelKind::WeComKf);

    let p2 = page("V4_page2");
    assert_eq!(
        (p2.next_cursor.as_str(), p2.has_more, p2.items.len()),
        ("CURSOR_P2", true, 0)
    );

    let p3 = page("V4_page3");
    assert!(!p3.has_more);
    let human = message(&p3.items[0]);
    assert_eq!(Origin::of(&human.route), Some(Origin::Servicer));
    assert_eq!(human.route[route::SERVICER], "zhangsan");
    assert_eq!(
        human.conversation, hello.conversation,
        "the customer's conversation"
    );
    let click = message(&p3.items[1]);
    assert_eq!(
        (click.text.as_str(), click.route["menu_id"].as_str()),
        ("满意", "101")
    );
}

#[test]
fn v9_events_carry_their_fields() {
    let p = page("V9_page");
    let end = message(&p.items[0]);
    assert_eq!(
        end.content,
        ContentKind::Event("session_status_change".into())
    );
    assert_eq!(end.route["change_type"], "3");
    assert_eq!(end.route["msg_code"], "MSG_CODE_END_1");
    assert_eq!(end.route["old_servicer_userid"], "zhangsan");
    let fail = message(&p.items[1]);
    assert_eq!(fail.route["fail_msgid"], "kefu-7f3a9c01");
    assert_eq!(fail.route["fail_type"], "5");
}

#[test]
fn other_items_and_refusals() {
    let item = |v: Value| classify("wxkf", KFID, &v);
    // An account event (no customer).
    match item(
        json!({"msgid":"m1","origin":4,"msgtype":"event","event":{"event_type":"servicer_status_change","servicer_userid":"lisi","status":2,"stop_type":1,"open_kfid":KFID}}),
    ) {
        KfItem::AccountEvent {
            event_type, fields, ..
        } => {
            assert_eq!(event_type, "servicer_status_change");
            assert_eq!(fields["status"], "2");
            assert_eq!(fields["servicer_userid"], "lisi");
        }
        other => panic!("{other:?}"),
    }
    // Non-text types keep what they carry; unknown ones are kept verbatim.
    let img = item(
        json!({"msgid":"m2","origin":3,"external_userid":CUSTOMER,"msgtype":"image","image":{"media_id":"MEDIA"}}),
    );
    let img = message(&img);
    assert_eq!(
        (img.content.clone(), img.text.as_str()),
        (ContentKind::Image, "[image] MEDIA")
    );
    assert_eq!(img.route["media_id"], "MEDIA");
    assert_eq!(img.route[route::OPEN_KFID], KFID, "the account asked for");
    let loc = item(
        json!({"msgid":"m3","origin":3,"external_userid":CUSTOMER,"msgtype":"location","location":{"latitude":23.1,"longitude":113.3,"name":"广州塔","address":"阅江西路222号"}}),
    );
    assert_eq!(
        message(&loc).text,
        "[location] 广州塔 阅江西路222号 (23.1,113.3)"
    );
    let mp = item(
        json!({"msgid":"m4","origin":3,"external_userid":CUSTOMER,"msgtype":"miniprogram","miniprogram":{"title":"下单","appid":"wx1","pagepath":"p/index","thumb_media_id":"T"}}),
    );
    assert_eq!(
        message(&mp).content,
        ContentKind::Other("miniprogram".into())
    );
    let shop = item(
        json!({"msgid":"m5","origin":3,"external_userid":CUSTOMER,"msgtype":"channels_shop_product","channels_shop_product":{"product_id":"9"}}),
    );
    assert_eq!(
        message(&shop).text,
        r#"[channels_shop_product] {"product_id":"9"}"#
    );
    // Unplaceable items are reported, not fatal.
    for bad in [
        json!({}),
        json!({"msgid":"x","origin":9,"msgtype":"text"}),
        json!({"msgid":"x","origin":3,"msgtype":"text","text":{"content":"hi"}}),
        json!({"msgid":"x","origin":4,"msgtype":"event","event":{}}),
    ] {
        assert!(
            matches!(item(bad.clone()), KfItem::Unreadable { .. }),
            "{bad}"
        );
    }
    // Refusals and non-answers.
    assert_eq!(
        parse_sync_reply(
            br#"{"errcode":95007,"errmsg":"invalid msgtoken"}"#,
            "wxkf",
            KFID
        )
        .unwrap(),
        SyncReply::Refused {
            errcode: 95007,
            errmsg: "invalid msgtoken".into()
        }
    );
    assert!(parse_sync_reply(b"<html>", "wxkf", KFID).is_err());
    assert!(parse_sync_reply(br#"{"next_cursor":"x"}"#, "wxkf", KFID).is_err());
    // has_more as a boolean, msg_list absent.
    assert_eq!(
        parse_sync_reply(
            br#"{"errcode":0,"has_more":true,"next_cursor":"c"}"#,
            "wxkf",
            KFID
        )
        .unwrap(),
        SyncReply::Page(SyncPage {
            next_cursor: "c".into(),
            has_more: true,
            items: vec![]
        })
    );
    assert!(is_account_error(95017) && is_account_error(42001) && !is_account_error(40058));
}

#[test]
fn v5_v7_v8_bodies_are_the_documented_ones() {
    let text = "在的，请问有什么可以帮您？";
    let got = send::send_text_body(CUSTOMER, KFID, Some("kefu-7f3a9c01"), text);
    assert_eq!(
        serde_json::from_str::<Value>(&got).unwrap(),
        v("V5_send_request")
    );
    assert!(got.starts_with(r#"{"touser":"#), "{got}");
    let reply: SendReply = serde_json::from_value(v("V5_send_response")).unwrap();
    assert_eq!(
        (reply.errcode, reply.msgid.as_deref()),
        (0, Some("kefu-7f3a9c01"))
    );
    assert!(!send::send_text_body(CUSTOMER, KFID, None, "x").contains("msgid"));

    let got = send::on_event_text_body("WELCOME_CODE_1", None, "您好，欢迎咨询！");
    assert_eq!(
        serde_json::from_str::<Value>(&got).unwrap(),
        v("V7_on_event_request")
    );

    assert_eq!(
        serde_json::from_str::<Value>(&state_get_body(KFID, CUSTOMER)).unwrap(),
        v("V8_get_request")
    );
    let st: StateReply = serde_json::from_value(v("V8_get_response")).unwrap();
    assert_eq!(st.state(), Some(ServiceState::Bot));
    assert_eq!(
        serde_json::from_str::<Value>(&trans_body(
            KFID,
            CUSTOMER,
            ServiceState::Human,
            Some("zhangsan")
        ))
        .unwrap(),
        v("V8_trans_request")
    );
    assert!(!trans_body(KFID, CUSTOMER, ServiceState::Pool, None).contains("servicer_userid"));
    let tr: TransReply = serde_json::from_value(v("V8_trans_response")).unwrap();
    assert_eq!(tr.msg_code.as_deref(), Some("MSG_CODE_TRANS_1"));
    let refused: TransReply = serde_json::from_value(v("V8_trans_refused")).unwrap();
    assert_eq!(refused.errcode, ERR_BAD_TRANSITION);

    let list: ServicerList = serde_json::from_value(v("V10_servicers")).unwrap();
    let want = |c: &[&str]| {
        choose_servicer(
            &c.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            &list.servicer_list,
        )
    };
    assert_eq!(
        want(&["lisi", "zhangsan"]),
        Some("zhangsan".into()),
        "lisi stopped"
    );
    assert_eq!(want(&["lisi"]), None);
    assert_eq!(want(&[]), None);
    assert_eq!(
        servicer_list_path(KFID),
        format!("/cgi-bin/kf/servicer/list?open_kfid={KFID}")
    );
    assert!(ServiceState::New.api_may_send() && !ServiceState::Human.api_may_send());
    assert!(ServiceState::Pool.with_humans() && !ServiceState::Ended.with_humans());
}

#[test]
fn transfers_round_trip_through_the_outbox_call() {
    let t = Transfer {
        open_kfid: KFID.into(),
        external_userid: CUSTOMER.into(),
        to: TransferTo::Human,
        servicers: vec!["zhangsan".into()],
        notice: Some("转人工".into()),
        reply_id: "turn:1".into(),
    };
    let call = t.call();
    assert_eq!(call.url, STATE_TRANS_PATH);
    assert_eq!(Transfer::from_call(&call), Some(t));
    let mut other = call.clone();
    other.url = SEND_MSG_PATH.into();
    assert_eq!(Transfer::from_call(&other), None);
}

fn outbound(text: &str, reply_id: Option<&str>) -> Outbound {
    let mut r = BTreeMap::new();
    if let Some(id) = reply_id {
        r.insert(route::REPLY_ID.to_string(), id.to_string());
    }
    Outbound {
        channel: "wxkf".into(),
        conversation: conversation_key(KFID, CUSTOMER),
        user: UserRef {
            id: CUSTOMER.into(),
            name: None,
        },
        text: text.into(),
        markdown: true,
        route: r,
    }
}

fn bodies(calls: &[Call]) -> Vec<Value> {
    calls
        .iter()
        .map(|c| serde_json::from_str(&c.body).unwrap())
        .collect()
}

#[test]
fn encode_splits_at_2048_bytes_with_stable_distinct_msgids() {
    let ch = channel();
    let rng = &mut StdRng::seed_from_u64(1);
    let text = "你".repeat(700); // 2100 bytes
    let calls = ch
        .encode(&outbound(&text, Some("turn:m1")), now(), rng)
        .unwrap();
    let b = bodies(&calls);
    let parts: Vec<usize> = b
        .iter()
        .map(|v| v["text"]["content"].as_str().unwrap().chars().count())
        .collect();
    assert_eq!(parts, vec![682, 18]);
    assert!(calls
        .iter()
        .all(|c| c.url == SEND_MSG_PATH && c.auth == CallAuth::WeComToken));
    assert_eq!(b[0]["touser"], CUSTOMER);
    assert_eq!(b[0]["open_kfid"], KFID);
    assert_eq!(b[0]["msgtype"], "text", "kf has no markdown");
    let ids: Vec<&str> = b.iter().map(|v| v["msgid"].as_str().unwrap()).collect();
    assert_ne!(ids[0], ids[1]);
    for id in &ids {
        assert!(
            id.len() <= 32
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{id}"
        );
    }
    // A retry of the same reply: the same ids. Another reply: others.
    let again = bodies(
        &ch.encode(&outbound(&text, Some("turn:m1")), now(), rng)
            .unwrap(),
    );
    assert_eq!(again[0]["msgid"], b[0]["msgid"]);
    let other = bodies(
        &ch.encode(&outbound(&text, Some("turn:m2")), now(), rng)
            .unwrap(),
    );
    assert_ne!(other[0]["msgid"], b[0]["msgid"]);
    // Without an id from the server, identical text still gets identical ids.
    let a = bodies(&ch.encode(&outbound("hi", None), now(), rng).unwrap());
    let b2 = bodies(&ch.encode(&outbound("hi", None), now(), rng).unwrap());
    assert_eq!(a[0]["msgid"], b2[0]["msgid"]);
    // Blank → nothing; another channel's reply or no customer → refused.
    assert!(ch
        .encode(&outbound(" \n", None), now(), rng)
        .unwrap()
        .is_empty());
    let mut o = outbound("hi", None);
    o.channel = "other".into();
    assert!(ch.encode(&o, now(), rng).is_err());
    let mut o = outbound("hi", None);
    o.conversation = "nobody".into();
    assert!(ch.encode(&o, now(), rng).is_err());
    o.route.insert(route::OPEN_KFID.into(), KFID.into());
    o.route
        .insert(route::EXTERNAL_USERID.into(), CUSTOMER.into());
    assert_eq!(
        bodies(&ch.encode(&o, now(), rng).unwrap())[0]["touser"],
        CUSTOMER
    );
}

#[test]
fn encode_within_packs_then_cuts() {
    let ch = channel();
    let lines: String = (0..30)
        .map(|i| format!("line {i:02} {}\n", "x".repeat(150)))
        .collect(); // ~4.9 KB
    let (calls, cut) = ch.encode_within(&outbound(&lines, Some("r")), 5).unwrap();
    assert!(!cut && calls.len() == 3);
    let (calls, cut) = ch.encode_within(&outbound(&lines, Some("r")), 2).unwrap();
    let b = bodies(&calls);
    let text: Vec<&str> = b
        .iter()
        .map(|v| v["text"]["content"].as_str().unwrap())
        .collect();
    assert!(cut && calls.len() == 2);
    assert_eq!(text[0].len(), 2048, "packed full");
    assert!(text[1].ends_with('…') && text[1].len() <= 2048);
    let (calls, cut) = ch.encode_within(&outbound("hello", Some("r")), 0).unwrap();
    assert!(cut && calls.is_empty());
}

#[test]
fn msgid_shape() {
    let id = msgid("wxkf", "turn:wk:m", 0);
    assert_eq!(id.len(), 29);
    assert!(id.starts_with("kefu-"));
    assert_ne!(id, msgid("wxkf", "turn:wk:m", 1));
    assert_ne!(id, msgid("other", "turn:wk:m", 0));
    assert_eq!(id, msgid("wxkf", "turn:wk:m", 0));
}

proptest! {
    #[test]
    fn fit_respects_budget_and_size(text in "\\PC{0,6000}", budget in 0usize..6) {
        let f = fit(&text, budget);
        prop_assert!(f.parts.len() <= budget);
        prop_assert!(f.parts.iter().all(|p| p.len() <= MAX_TEXT_BYTES));
        if text.trim().is_empty() {
            prop_assert!(f.parts.is_empty() && !f.truncated);
        } else if f.truncated {
            let joined = f.parts.concat();
            let kept = joined.strip_suffix('…').unwrap_or(&joined);
            prop_assert!(text.starts_with(kept));
        } else {
            prop_assert_eq!(f.parts.concat(), text);
        }
    }

    #[test]
    fn classify_never_panics(
        msgid in proptest::option::of("[a-z0-9]{0,8}"),
        origin in proptest::option::of(-1i64..7),
        msgtype in proptest::option::of(prop_oneof![Just("text"), Just("event"), Just("image"), Just("x"), Just("")]),
        payload in "\\PC{0,40}",
        user in proptest::option::of("[a-zA-Z0-9_-]{0,10}"),
    ) {
        let mut o = serde_json::Map::new();
        if let Some(m) = msgid { o.insert("msgid".into(), json!(m)); }
        if let Some(x) = origin { o.insert("origin".into(), json!(x)); }
        if let Some(t) = msgtype {
            o.insert("msgtype".into(), json!(t));
            o.insert(t.to_string(), json!({"content": payload, "event_type": payload, "external_userid": user}));
        }
        if let Some(u) = &user { o.insert("external_userid".into(), json!(u)); }
        let _ = classify("wxkf", KFID, &Value::Object(o));
    }

    #[test]
    fn parse_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_sync_reply(&body, "wxkf", KFID);
    }

    #[test]
    fn decode_never_panics_past_the_signature(inner in "\\PC{0,200}") {
        let ch = channel();
        let v1 = v("V1_callback");
        let (q, b) = seal(&s(&v1, "token"), &ch.cipher, &inner, &s(&v1, "corp_id"));
        let _ = ch.decode(&request("POST", &q, &b), now());
    }
}
