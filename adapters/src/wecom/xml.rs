//! WeCom XML: the encrypted envelope, the decrypted callback message, the passive reply.
//!
//! Receiving messages: developer.work.weixin.qq.com/document/path/90239 (types) and 90240
//! (events); passive reply: path/90241. WeCom's documents are flat (`<xml>` + leaf children),
//! with or without CDATA, so they are read into a field list rather than typed structs:
//! unknown or nested fields never make an authentic callback fail.

use std::collections::BTreeMap;

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::{ChannelKind, ContentKind, DecodeError, Decoded, Inbound, UserRef};

/// Children of the root element, in order, text with CDATA and entities resolved. Nested
/// elements (e.g. `SendPicsInfo` in some events) are skipped; a repeated name keeps its
/// first value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    /// The raw text of a field (not trimmed: `Content` keeps the customer's spacing).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The trimmed text of a field, `None` when absent or blank.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|s| !s.is_empty())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Parse a flat WeCom XML document. Anything that is not well-formed XML is `Malformed`.
pub fn parse_fields(xml: &str) -> Result<Fields, DecodeError> {
    let mut reader = Reader::from_str(xml);
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut depth = 0usize; // open elements
    let mut seen_root = false;
    let mut current: Option<(String, String)> = None; // (name, text) of an open root child
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| DecodeError::Malformed(format!("xml: {e}")))?;
        match ev {
            Event::Start(e) => {
                if depth == 0 && seen_root {
                    return Err(malformed("xml: more than one root element"));
                }
                seen_root = true;
                depth += 1;
                if depth == 2 {
                    current = Some((tag_name(e.name().as_ref())?, String::new()));
                }
            }
            Event::Empty(e) => {
                if depth == 0 {
                    if seen_root {
                        return Err(malformed("xml: more than one root element"));
                    }
                    seen_root = true; // `<xml/>`: a document without fields
                } else if depth == 1 {
                    push_field(&mut fields, tag_name(e.name().as_ref())?, String::new());
                }
            }
            Event::End(_) => {
                if depth == 2 {
                    if let Some((name, text)) = current.take() {
                        push_field(&mut fields, name, text);
                    }
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(t) => {
                if depth == 2 {
                    let s = t
                        .unescape()
                        .map_err(|e| DecodeError::Malformed(format!("xml: {e}")))?;
                    if let Some((_, text)) = current.as_mut() {
                        text.push_str(&s);
                    }
                } else if depth == 0 && !is_blank(&t) {
                    return Err(malformed("xml: text outside the root element"));
                }
            }
            Event::CData(c) => {
                if depth == 2 {
                    let s = std::str::from_utf8(&c)
                        .map_err(|_| malformed("xml: CDATA is not UTF-8"))?;
                    if let Some((_, text)) = current.as_mut() {
                        text.push_str(s);
                    }
                } else if depth == 0 {
                    return Err(malformed("xml: text outside the root element"));
                }
            }
            // No DTD is ever expanded: quick-xml resolves only the predefined entities.
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
            Event::Eof => break,
        }
    }
    if !seen_root {
        return Err(malformed("xml: no root element"));
    }
    if depth != 0 {
        return Err(malformed("xml: unclosed element"));
    }
    Ok(Fields(fields))
}

fn push_field(fields: &mut Vec<(String, String)>, name: String, text: String) {
    if !fields.iter().any(|(k, _)| *k == name) {
        fields.push((name, text));
    }
}

fn tag_name(raw: &[u8]) -> Result<String, DecodeError> {
    std::str::from_utf8(raw)
        .map(str::to_string)
        .map_err(|_| malformed("xml: tag name is not UTF-8"))
}

fn is_blank(t: &quick_xml::events::BytesText<'_>) -> bool {
    t.iter().all(u8::is_ascii_whitespace)
}

fn malformed(why: &str) -> DecodeError {
    DecodeError::Malformed(why.to_string())
}

/// The outer XML of a POST callback (path/90968):
/// `<xml><ToUserName/><Encrypt/><AgentID/></xml>`. Only `Encrypt` matters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub to_user_name: Option<String>,
    pub encrypt: String,
    pub agent_id: Option<String>,
}

pub fn parse_envelope(body: &[u8]) -> Result<Envelope, DecodeError> {
    let xml = std::str::from_utf8(body).map_err(|_| malformed("body is not UTF-8"))?;
    let f = parse_fields(xml)?;
    let encrypt = f
        .value("Encrypt")
        .ok_or_else(|| malformed("no Encrypt element in the body"))?
        .to_string();
    Ok(Envelope {
        to_user_name: f.value("ToUserName").map(str::to_string),
        encrypt,
        agent_id: f.value("AgentID").map(str::to_string),
    })
}

/// Turn a decrypted callback into what the server acts on.
///
/// - `text`, `image`, `voice` (with `Recognition` as text when speech recognition is on),
///   `video`, `file`, `location`, `link` → `Message`; non-text kinds carry a description in
///   `text` (link title, location label, voice transcript) and media ids in `route`.
/// - events `enter_agent` and `subscribe` → `Message` with `ContentKind::Event` (lower-case
///   name), so the server may greet; they are never customer text.
/// - every other event (incl. `unsubscribe`) and unknown `MsgType` → `Ignored`.
///
/// `id` is `MsgId`, or for events (which have none) `FromUserName-CreateTime`, the dedupe
/// key wecom.md §5 prescribes.
pub fn to_decoded(channel: &str, f: &Fields) -> Result<Decoded, DecodeError> {
    let msg_type = f.value("MsgType").ok_or_else(|| malformed("no MsgType"))?;
    let own = |name: &str| f.get(name).unwrap_or_default().to_string();
    let (content, text, extra): (ContentKind, String, &[(&str, &str)]) = match msg_type {
        "text" => (ContentKind::Text, own("Content"), &[]),
        "image" => (
            ContentKind::Image,
            String::new(),
            &[("media_id", "MediaId"), ("pic_url", "PicUrl")],
        ),
        "voice" => (
            ContentKind::Voice,
            f.value("Recognition").unwrap_or_default().to_string(),
            &[("media_id", "MediaId"), ("format", "Format")],
        ),
        "video" => (
            ContentKind::Video,
            String::new(),
            &[("media_id", "MediaId"), ("thumb_media_id", "ThumbMediaId")],
        ),
        "file" => (
            ContentKind::File,
            f.value("FileName")
                .or_else(|| f.value("Title"))
                .unwrap_or_default()
                .to_string(),
            &[("media_id", "MediaId"), ("file_name", "FileName")],
        ),
        "location" => (
            ContentKind::Location,
            f.value("Label").unwrap_or_default().to_string(),
            &[
                ("location_x", "Location_X"),
                ("location_y", "Location_Y"),
                ("scale", "Scale"),
                ("label", "Label"),
            ],
        ),
        "link" => (
            ContentKind::Link,
            f.value("Title").unwrap_or_default().to_string(),
            &[
                ("title", "Title"),
                ("description", "Description"),
                ("url", "Url"),
                ("pic_url", "PicUrl"),
            ],
        ),
        "event" => {
            let event = f.value("Event").unwrap_or_default().to_ascii_lowercase();
            match event.as_str() {
                "enter_agent" | "subscribe" => (
                    ContentKind::Event(event),
                    String::new(),
                    &[("event_key", "EventKey")],
                ),
                "unsubscribe" => return Ok(Decoded::Ignored("wecom: unsubscribe event")),
                _ => return Ok(Decoded::Ignored("wecom: event not handled")),
            }
        }
        _ => return Ok(Decoded::Ignored("wecom: message type not handled")),
    };

    let from = f
        .value("FromUserName")
        .ok_or_else(|| malformed("no FromUserName"))?
        .to_string();
    let create_time: u64 = f
        .value("CreateTime")
        .ok_or_else(|| malformed("no CreateTime"))?
        .parse()
        .map_err(|_| malformed("CreateTime is not a number"))?;
    let id = match f.value("MsgId") {
        Some(id) if !matches!(content, ContentKind::Event(_)) => id.to_string(),
        _ => format!("{from}-{create_time}"),
    };

    let mut route = BTreeMap::new();
    if let Some(agent) = f.value("AgentID") {
        route.insert("agent_id".to_string(), agent.to_string());
    }
    for (key, field) in extra {
        if let Some(v) = f.value(field) {
            route.insert((*key).to_string(), v.to_string());
        }
    }

    Ok(Decoded::Message(Box::new(Inbound {
        channel: channel.to_string(),
        kind: ChannelKind::WeCom,
        conversation: from.clone(),
        user: UserRef {
            id: from,
            name: None,
        },
        id,
        content,
        text,
        sent_at_ms: create_time.saturating_mul(1000),
        route,
    })))
}

/// `<![CDATA[…]]>` that survives any content: a `]]>` inside is split across two sections,
/// and characters XML 1.0 forbids (C0 controls other than tab/CR/LF) are dropped.
fn cdata(out: &mut String, s: &str) {
    out.push_str("<![CDATA[");
    let clean: String = s
        .chars()
        .filter(|&c| c >= ' ' || matches!(c, '\t' | '\n' | '\r'))
        .filter(|&c| !matches!(c, '\u{fffe}' | '\u{ffff}'))
        .collect();
    out.push_str(&clean.replace("]]>", "]]]]><![CDATA[>"));
    out.push_str("]]>");
}

fn element_cdata(out: &mut String, name: &str, value: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    cdata(out, value);
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// The plaintext of a passive text reply (path/90241), before encryption:
/// `<xml><ToUserName>user</ToUserName><FromUserName>corp</FromUserName><CreateTime>…
/// </CreateTime><MsgType>text</MsgType><Content>…</Content></xml>`, strings in CDATA.
pub fn text_reply_xml(to_user: &str, corp_id: &str, create_time: u64, content: &str) -> String {
    let mut s = String::with_capacity(160 + to_user.len() + corp_id.len() + content.len());
    s.push_str("<xml>");
    element_cdata(&mut s, "ToUserName", to_user);
    element_cdata(&mut s, "FromUserName", corp_id);
    s.push_str("<CreateTime>");
    s.push_str(&create_time.to_string());
    s.push_str("</CreateTime>");
    element_cdata(&mut s, "MsgType", "text");
    element_cdata(&mut s, "Content", content);
    s.push_str("</xml>");
    s
}

/// The encrypted passive-reply body (path/90968):
/// `<xml><Encrypt/><MsgSignature/><TimeStamp/><Nonce/></xml>`.
pub fn reply_envelope(encrypt: &str, msg_signature: &str, timestamp: &str, nonce: &str) -> String {
    let mut s = String::with_capacity(128 + encrypt.len());
    s.push_str("<xml>");
    element_cdata(&mut s, "Encrypt", encrypt);
    element_cdata(&mut s, "MsgSignature", msg_signature);
    s.push_str("<TimeStamp>");
    s.push_str(&quick_xml::escape::escape(timestamp));
    s.push_str("</TimeStamp>");
    element_cdata(&mut s, "Nonce", nonce);
    s.push_str("</xml>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wecom::testutil::all_vectors;
    use proptest::prelude::*;

    fn msg(xml: &str) -> Inbound {
        match to_decoded("support", &parse_fields(xml).unwrap()).unwrap() {
            Decoded::Message(m) => *m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    fn ignored(xml: &str) -> &'static str {
        match to_decoded("support", &parse_fields(xml).unwrap()).unwrap() {
            Decoded::Ignored(why) => why,
            other => panic!("expected Ignored, got {other:?}"),
        }
    }

    #[test]
    fn every_vector_body_envelope_parses() {
        for v in all_vectors() {
            let Some(body) = v.v["http"]["body"].as_str() else {
                continue;
            };
            let env = parse_envelope(body.as_bytes()).unwrap();
            assert_eq!(env.encrypt, v.str("ciphertext"), "{}", v.name());
            assert_eq!(
                env.to_user_name.as_deref(),
                Some(v.str("corp_id")),
                "{}",
                v.name()
            );
            assert!(env.agent_id.is_some());
        }
    }

    #[test]
    fn every_vector_plaintext_parses_to_its_fields() {
        for v in all_vectors() {
            let Some(parsed) = v.v.get("parsed").and_then(|p| p.as_object()) else {
                continue;
            };
            let f = parse_fields(v.str("plaintext")).unwrap();
            for (k, want) in parsed {
                let want = match want {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                assert_eq!(f.get(k), Some(want.as_str()), "{} field {k}", v.name());
            }
        }
    }

    #[test]
    fn envelope_without_cdata_and_with_whitespace() {
        let e = parse_envelope(
            b"<?xml version=\"1.0\"?>\n<xml>\n  <ToUserName>ww1</ToUserName>\n  <Encrypt>\n abc+/= \n</Encrypt>\n  <AgentID>1000002</AgentID>\n</xml>\n",
        )
        .unwrap();
        assert_eq!(e.encrypt, "abc+/=");
        assert_eq!(e.to_user_name.as_deref(), Some("ww1"));
        assert_eq!(e.agent_id.as_deref(), Some("1000002"));
    }

    #[test]
    fn envelope_defects_are_malformed() {
        for bad in [
            &b""[..],
            b"not xml",
            b"<xml><Encrypt>abc</Encrypt>",
            b"<xml><Encrypt>abc</Nope></xml>",
            b"<xml><ToUserName>x</ToUserName></xml>",
            b"<xml><Encrypt></Encrypt></xml>",
            b"<xml><Encrypt>a&bogus;b</Encrypt></xml>",
            b"<xml><Encrypt>a</Encrypt></xml><xml><Encrypt>b</Encrypt></xml>",
            b"\xff\xfe<xml/>",
        ] {
            assert!(
                matches!(parse_envelope(bad), Err(DecodeError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn text_with_and_without_cdata_and_entities() {
        let a = msg("<xml><ToUserName><![CDATA[ww1]]></ToUserName><FromUserName><![CDATA[li]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[ a <b> & c ]]></Content><MsgId>123</MsgId><AgentID>1000002</AgentID></xml>");
        assert_eq!(a.text, " a <b> & c ");
        assert_eq!(a.content, ContentKind::Text);
        assert_eq!(a.id, "123");
        assert_eq!(a.conversation, "li");
        assert_eq!(a.user.id, "li");
        assert_eq!(a.sent_at_ms, 1_700_000_000_000);
        assert_eq!(a.kind, ChannelKind::WeCom);
        assert_eq!(a.channel, "support");
        assert_eq!(a.route.get("agent_id").map(String::as_str), Some("1000002"));
        let b = msg("<xml><FromUserName>li</FromUserName><CreateTime>1700000000</CreateTime><MsgType>text</MsgType><Content> a &lt;b&gt; &amp; c </Content><MsgId>123</MsgId></xml>");
        assert_eq!(b.text, a.text);
        assert!(b.route.is_empty());
    }

    #[test]
    fn media_kinds() {
        let head = "<xml><ToUserName>ww1</ToUserName><FromUserName>li</FromUserName><CreateTime>1700000000</CreateTime><AgentID>7</AgentID><MsgId>9</MsgId>";
        let image = msg(&format!("{head}<MsgType>image</MsgType><PicUrl>http://p/1.jpg</PicUrl><MediaId>m1</MediaId></xml>"));
        assert_eq!(image.content, ContentKind::Image);
        assert_eq!(image.route["media_id"], "m1");
        assert_eq!(image.route["pic_url"], "http://p/1.jpg");

        let voice = msg(&format!(
            "{head}<MsgType>voice</MsgType><MediaId>v1</MediaId><Format>amr</Format></xml>"
        ));
        assert_eq!(
            (voice.content.clone(), voice.text.as_str()),
            (ContentKind::Voice, "")
        );
        assert_eq!(voice.route["format"], "amr");
        let voice = msg(&format!("{head}<MsgType>voice</MsgType><MediaId>v1</MediaId><Format>amr</Format><Recognition><![CDATA[我要退款]]></Recognition></xml>"));
        assert_eq!(voice.text, "我要退款");

        let video = msg(&format!("{head}<MsgType>video</MsgType><MediaId>v2</MediaId><ThumbMediaId>t2</ThumbMediaId></xml>"));
        assert_eq!(video.content, ContentKind::Video);
        assert_eq!(video.route["thumb_media_id"], "t2");

        let file = msg(&format!(
            "{head}<MsgType>file</MsgType><MediaId>f1</MediaId><FileName>合同.pdf</FileName></xml>"
        ));
        assert_eq!(
            (file.content.clone(), file.text.as_str()),
            (ContentKind::File, "合同.pdf")
        );

        let loc = msg(&format!("{head}<MsgType>location</MsgType><Location_X>23.134521</Location_X><Location_Y>113.358803</Location_Y><Scale>20</Scale><Label><![CDATA[广州市海珠区]]></Label></xml>"));
        assert_eq!(
            (loc.content.clone(), loc.text.as_str()),
            (ContentKind::Location, "广州市海珠区")
        );
        assert_eq!(loc.route["location_x"], "23.134521");
        assert_eq!(loc.route["scale"], "20");

        let link = msg(&format!("{head}<MsgType>link</MsgType><Title>t</Title><Description>d</Description><Url>https://u</Url><PicUrl>https://p</PicUrl></xml>"));
        assert_eq!(
            (link.content.clone(), link.text.as_str()),
            (ContentKind::Link, "t")
        );
        assert_eq!(link.route["url"], "https://u");
        assert_eq!(link.id, "9");
    }

    #[test]
    fn events() {
        let head = "<xml><ToUserName>ww1</ToUserName><FromUserName>li</FromUserName><CreateTime>1700000000</CreateTime><MsgType>event</MsgType><AgentID>7</AgentID>";
        let enter = msg(&format!(
            "{head}<Event>enter_agent</Event><EventKey/></xml>"
        ));
        assert_eq!(enter.content, ContentKind::Event("enter_agent".into()));
        assert_eq!(enter.id, "li-1700000000");
        assert_eq!(enter.text, "");
        assert!(!enter.route.contains_key("event_key"));
        let sub = msg(&format!("{head}<Event><![CDATA[subscribe]]></Event></xml>"));
        assert_eq!(sub.content, ContentKind::Event("subscribe".into()));
        assert_eq!(
            ignored(&format!("{head}<Event>unsubscribe</Event></xml>")),
            "wecom: unsubscribe event"
        );
        ignored(&format!(
            "{head}<Event>LOCATION</Event><Latitude>1</Latitude></xml>"
        ));
        ignored(&format!(
            "{head}<Event>pic_sysphoto</Event><SendPicsInfo><Count>1</Count><PicList><item><PicMd5Sum>x</PicMd5Sum></item></PicList></SendPicsInfo></xml>"
        ));
        ignored("<xml><MsgType>mpnews</MsgType></xml>");
        // an event never takes a MsgId as its dedupe key, even if one appeared
        let e = msg(&format!(
            "{head}<Event>subscribe</Event><MsgId>5</MsgId></xml>"
        ));
        assert_eq!(e.id, "li-1700000000");
    }

    #[test]
    fn nested_fields_do_not_leak_into_the_top_level() {
        let f = parse_fields("<xml><A><B>inner</B>tail</A><B>outer</B></xml>").unwrap();
        assert_eq!(f.get("A"), Some("tail"));
        assert_eq!(f.get("B"), Some("outer"));
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn missing_required_fields_are_malformed() {
        for bad in [
            "<xml><Content>x</Content></xml>",
            "<xml><MsgType>text</MsgType><CreateTime>1</CreateTime></xml>",
            "<xml><MsgType>text</MsgType><FromUserName>a</FromUserName></xml>",
            "<xml><MsgType>text</MsgType><FromUserName>a</FromUserName><CreateTime>x</CreateTime></xml>",
        ] {
            let r = to_decoded("c", &parse_fields(bad).unwrap());
            assert!(matches!(r, Err(DecodeError::Malformed(_))), "{bad}: {r:?}");
        }
    }

    #[test]
    fn reply_xml_is_safe_for_any_content() {
        let s = text_reply_xml("u", "ww1", 1, "a]]>b\u{0}c");
        assert_eq!(
            s,
            "<xml><ToUserName><![CDATA[u]]></ToUserName><FromUserName><![CDATA[ww1]]></FromUserName><CreateTime>1</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[a]]]]><![CDATA[>bc]]></Content></xml>"
        );
        assert_eq!(parse_fields(&s).unwrap().get("Content"), Some("a]]>bc"));
        let env = reply_envelope("e", "s", "1<2", "n");
        assert_eq!(parse_fields(&env).unwrap().get("TimeStamp"), Some("1<2"));
    }

    proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,300}") {
            if let Ok(f) = parse_fields(&s) {
                let _ = to_decoded("c", &f);
            }
            let _ = parse_envelope(s.as_bytes());
        }

        #[test]
        fn parsing_xmlish_never_panics(parts in proptest::collection::vec(
            prop_oneof![
                Just("<xml>".to_string()), Just("</xml>".to_string()),
                Just("<MsgType>".to_string()), Just("</MsgType>".to_string()),
                Just("<![CDATA[".to_string()), Just("]]>".to_string()),
                Just("event".to_string()), Just("text".to_string()),
                Just("<FromUserName>a</FromUserName>".to_string()),
                Just("<CreateTime>1</CreateTime>".to_string()),
                Just("<Event>subscribe</Event>".to_string()),
                Just("&amp;".to_string()), Just("<A/>".to_string()),
                "\\PC{0,5}",
            ], 0..20)) {
            let s = parts.concat();
            if let Ok(f) = parse_fields(&s) {
                let _ = to_decoded("c", &f);
            }
        }

        #[test]
        fn reply_content_roundtrips(content in "\\PC{0,200}") {
            let s = text_reply_xml("u", "ww1", 1, &content);
            let f = parse_fields(&s).unwrap();
            let got = f.get("Content").unwrap_or_default().to_string();
            prop_assert_eq!(got, content.replace(['\u{fffe}', '\u{ffff}'], ""));
        }
    }
}
