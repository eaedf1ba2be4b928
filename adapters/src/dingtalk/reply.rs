//! Reply bodies: the message JSON posted to a `sessionWebhook` (or a custom group robot),
//! dingtalk.md §5, and the OpenAPI robot send bodies, §3.2. Field order is fixed (structs,
//! not maps) so the same reply gives the same bytes.

use serde::Serialize;

use crate::split_utf8;

/// DingTalk refuses a body over 20 000 bytes (errcode 460101, dingtalk.md §5).
pub const MAX_BODY_BYTES: usize = 20_000;

/// OpenAPI robot send, single chat (dingtalk.md §3.2).
pub const SINGLE_SEND_PATH: &str = "/v1.0/robot/oToMessages/batchSend";
/// OpenAPI robot send, group (dingtalk.md §3.2).
pub const GROUP_SEND_PATH: &str = "/v1.0/robot/groupMessages/send";

fn json<T: Serialize>(value: &T) -> String {
    // Plain structs of strings, bools and lists: serialization cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct At<'a> {
    at_user_ids: Vec<&'a str>,
    at_mobiles: [&'a str; 0],
    is_at_all: bool,
}

impl<'a> At<'a> {
    fn user(staff_id: Option<&'a str>) -> Option<Self> {
        staff_id.filter(|s| !s.is_empty()).map(|s| At {
            at_user_ids: vec![s],
            at_mobiles: [],
            is_at_all: false,
        })
    }
}

#[derive(Serialize)]
struct Content<'a> {
    content: &'a str,
}

#[derive(Serialize)]
struct TitleText<'a> {
    title: &'a str,
    text: &'a str,
}

#[derive(Serialize)]
struct TextMsg<'a> {
    msgtype: &'static str,
    text: Content<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<At<'a>>,
}

#[derive(Serialize)]
struct MarkdownMsg<'a> {
    msgtype: &'static str,
    markdown: TitleText<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    at: Option<At<'a>>,
}

/// A text message. `at` = the staff id to @-mention (group replies); `None` or empty adds
/// no `at` block.
pub fn text(content: &str, at: Option<&str>) -> String {
    json(&TextMsg {
        msgtype: "text",
        text: Content { content },
        at: At::user(at),
    })
}

/// A markdown message. `title` is what notifications and the chat list show. An @ renders
/// in markdown only if `@staffId` also appears in `text` (dingtalk.md §5); this does not add
/// it.
pub fn markdown(title: &str, text: &str, at: Option<&str>) -> String {
    json(&MarkdownMsg {
        msgtype: "markdown",
        markdown: TitleText { title, text },
        at: At::user(at),
    })
}

/// One actionCard button.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Button {
    pub title: String,
    #[serde(rename = "actionURL")]
    pub action_url: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SingleCard<'a> {
    title: &'a str,
    text: &'a str,
    single_title: &'a str,
    #[serde(rename = "singleURL")]
    single_url: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ButtonsCard<'a> {
    title: &'a str,
    text: &'a str,
    btn_orientation: &'static str,
    btns: &'a [Button],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CardMsg<C> {
    msgtype: &'static str,
    action_card: C,
}

/// An actionCard with one button that opens `url` (dingtalk.md §5). `text` is markdown.
pub fn action_card(title: &str, text: &str, button_title: &str, url: &str) -> String {
    json(&CardMsg {
        msgtype: "actionCard",
        action_card: SingleCard {
            title,
            text,
            single_title: button_title,
            single_url: url,
        },
    })
}

/// An actionCard with several buttons; `vertical` stacks them (`btnOrientation` "1"),
/// else side by side ("0").
pub fn action_card_buttons(title: &str, text: &str, buttons: &[Button], vertical: bool) -> String {
    json(&CardMsg {
        msgtype: "actionCard",
        action_card: ButtonsCard {
            title,
            text,
            btn_orientation: if vertical { "1" } else { "0" },
            btns: buttons,
        },
    })
}

/// What an OpenAPI robot send carries: `msgKey` and its `msgParam` (dingtalk.md §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenApiMsg<'a> {
    /// `sampleText`, `{"content"}`.
    Text(&'a str),
    /// `sampleMarkdown`, `{"title","text"}` (marked *unverified* in dingtalk.md).
    Markdown { title: &'a str, text: &'a str },
}

impl OpenApiMsg<'_> {
    pub fn msg_key(&self) -> &'static str {
        match self {
            OpenApiMsg::Text(_) => "sampleText",
            OpenApiMsg::Markdown { .. } => "sampleMarkdown",
        }
    }

    /// The `msgParam` value: JSON, sent as a string.
    pub fn msg_param(&self) -> String {
        match *self {
            OpenApiMsg::Text(content) => json(&Content { content }),
            OpenApiMsg::Markdown { title, text } => json(&TitleText { title, text }),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchSend<'a> {
    robot_code: &'a str,
    user_ids: &'a [&'a str],
    msg_key: &'static str,
    msg_param: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupSend<'a> {
    robot_code: &'a str,
    open_conversation_id: &'a str,
    msg_key: &'static str,
    msg_param: String,
}

/// Body of `POST /v1.0/robot/oToMessages/batchSend` (single chat).
pub fn batch_send(robot_code: &str, user_ids: &[&str], msg: OpenApiMsg<'_>) -> String {
    json(&BatchSend {
        robot_code,
        user_ids,
        msg_key: msg.msg_key(),
        msg_param: msg.msg_param(),
    })
}

/// Body of `POST /v1.0/robot/groupMessages/send` (group, by `openConversationId` =
/// the callback's `conversationId`).
pub fn group_send(robot_code: &str, open_conversation_id: &str, msg: OpenApiMsg<'_>) -> String {
    json(&GroupSend {
        robot_code,
        open_conversation_id,
        msg_key: msg.msg_key(),
        msg_param: msg.msg_param(),
    })
}

/// The notification title of a markdown answer: its first line with words, without heading,
/// quote, list and emphasis markers, at most 40 characters.
pub fn markdown_title(text: &str) -> String {
    let plain = |l: &str| -> String {
        l.trim_start_matches(['#', '>', '-', '+', ' ', '\t'])
            .chars()
            .filter(|c| !matches!(c, '*' | '`'))
            .collect::<String>()
            .trim()
            .to_string()
    };
    let line = text
        .lines()
        .map(plain)
        .find(|l| !l.is_empty())
        .unwrap_or_else(|| text.trim().to_string());
    let title: String = line.chars().take(40).collect();
    if title.is_empty() {
        "…".to_string()
    } else {
        title
    }
}

/// Bodies that deliver `text`, in order, each at most [`MAX_BODY_BYTES`].
///
/// `build(markdown, part)` makes one body. A markdown answer that fits one body goes as
/// markdown; a longer one falls back to text parts (dingtalk.md §5: a markdown message cut
/// in two can break its formatting). Parts come from [`split_utf8`] on a budget of the limit
/// minus the envelope; when JSON escaping (quotes, newlines, control characters, doubled in
/// OpenAPI's `msgParam`) still overflows a body, the budget shrinks in proportion and the
/// text is split again, so parts stay even rather than leaving a sliver at the end.
pub fn fit_bodies(text: &str, markdown: bool, build: &dyn Fn(bool, &str) -> String) -> Vec<String> {
    if markdown {
        let whole = build(true, text);
        if whole.len() <= MAX_BODY_BYTES {
            return vec![whole];
        }
    }
    let envelope = build(false, "").len();
    let mut budget = MAX_BODY_BYTES.saturating_sub(envelope).max(64);
    loop {
        let bodies: Vec<String> = split_utf8(text, budget)
            .iter()
            .map(|part| build(false, part))
            .collect();
        let worst = bodies.iter().map(String::len).max().unwrap_or(0);
        if worst <= MAX_BODY_BYTES {
            return bodies;
        }
        if budget <= 64 {
            // Pathological envelope or escaping: halve what still overflows.
            let mut out = Vec::new();
            for part in split_utf8(text, budget) {
                push_fitting(&part, build, &mut out);
            }
            return out;
        }
        budget = (budget * MAX_BODY_BYTES / worst).saturating_sub(16).max(64);
    }
}

fn push_fitting(part: &str, build: &dyn Fn(bool, &str) -> String, out: &mut Vec<String>) {
    let body = build(false, part);
    if body.len() <= MAX_BODY_BYTES || part.len() <= 4 {
        out.push(body);
        return;
    }
    for sub in split_utf8(part, part.len() / 2) {
        push_fitting(&sub, build, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    #[test]
    fn text_body_exact() {
        assert_eq!(
            text("您好\n\"退款\"", Some("manager4711")),
            r#"{"msgtype":"text","text":{"content":"您好\n\"退款\""},"at":{"atUserIds":["manager4711"],"atMobiles":[],"isAtAll":false}}"#
        );
        assert_eq!(
            text("hi", None),
            r#"{"msgtype":"text","text":{"content":"hi"}}"#
        );
        assert_eq!(text("hi", Some("")), text("hi", None));
    }

    #[test]
    fn markdown_body_exact() {
        assert_eq!(
            markdown("退款政策", "#### 退款政策\n- 7 天无理由", Some("u1")),
            r#####"{"msgtype":"markdown","markdown":{"title":"退款政策","text":"#### 退款政策\n- 7 天无理由"},"at":{"atUserIds":["u1"],"atMobiles":[],"isAtAll":false}}"#####
        );
        assert_eq!(
            markdown("t", "**b**", None),
            r#"{"msgtype":"markdown","markdown":{"title":"t","text":"**b**"}}"#
        );
    }

    #[test]
    fn action_card_bodies_exact() {
        assert_eq!(
            action_card("订单", "### 订单 123", "查看", "https://example.com/o/123"),
            r#####"{"msgtype":"actionCard","actionCard":{"title":"订单","text":"### 订单 123","singleTitle":"查看","singleURL":"https://example.com/o/123"}}"#####
        );
        let btns = [
            Button {
                title: "A".into(),
                action_url: "https://a.example".into(),
            },
            Button {
                title: "B".into(),
                action_url: "https://b.example".into(),
            },
        ];
        assert_eq!(
            action_card_buttons("t", "md", &btns, true),
            r#"{"msgtype":"actionCard","actionCard":{"title":"t","text":"md","btnOrientation":"1","btns":[{"title":"A","actionURL":"https://a.example"},{"title":"B","actionURL":"https://b.example"}]}}"#
        );
        assert!(action_card_buttons("t", "md", &btns, false).contains(r#""btnOrientation":"0""#));
    }

    #[test]
    fn openapi_bodies_exact() {
        assert_eq!(
            batch_send(
                "dingrobot1",
                &["manager4711"],
                OpenApiMsg::Text("您好 \"A\"")
            ),
            r#"{"robotCode":"dingrobot1","userIds":["manager4711"],"msgKey":"sampleText","msgParam":"{\"content\":\"您好 \\\"A\\\"\"}"}"#
        );
        assert_eq!(
            group_send(
                "dingrobot1",
                "cid==",
                OpenApiMsg::Markdown {
                    title: "T",
                    text: "**x**\n"
                }
            ),
            r#"{"robotCode":"dingrobot1","openConversationId":"cid==","msgKey":"sampleMarkdown","msgParam":"{\"title\":\"T\",\"text\":\"**x**\\n\"}"}"#
        );
        // msgParam is a string holding JSON
        let v: Value =
            serde_json::from_str(&batch_send("r", &["u"], OpenApiMsg::Text("x"))).expect("json");
        let inner: Value =
            serde_json::from_str(v["msgParam"].as_str().expect("string")).expect("json");
        assert_eq!(inner["content"], "x");
    }

    #[test]
    fn titles() {
        assert_eq!(markdown_title("#### 退款政策\n正文"), "退款政策");
        assert_eq!(markdown_title("\n\n> **注意** `事项`"), "注意 事项");
        assert_eq!(markdown_title("- **您好**"), "您好");
        assert_eq!(markdown_title("---\n"), "---");
        assert_eq!(markdown_title("***"), "***");
        assert_eq!(markdown_title("a".repeat(100).as_str()).len(), 40);
        assert_eq!(markdown_title(""), "…");
    }

    fn texts_of(bodies: &[String]) -> Vec<String> {
        bodies
            .iter()
            .map(|b| {
                let v: Value = serde_json::from_str(b).expect("json body");
                v["text"]["content"]
                    .as_str()
                    .or(v["markdown"]["text"].as_str())
                    .expect("text or markdown")
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn long_markdown_falls_back_to_text_parts() {
        let long = "## 标题\n".to_string() + &"退款流程说明。".repeat(2000);
        let bodies = fit_bodies(&long, true, &|md, part| {
            if md {
                markdown("t", part, None)
            } else {
                text(part, None)
            }
        });
        assert!(bodies.len() > 1);
        assert!(bodies
            .iter()
            .all(|b| b.len() <= MAX_BODY_BYTES && b.starts_with(r#"{"msgtype":"text""#)));
        assert_eq!(texts_of(&bodies).concat(), long);
        let short = fit_bodies("**hi**", true, &|md, part| {
            if md {
                markdown("t", part, None)
            } else {
                text(part, None)
            }
        });
        assert_eq!(short, vec![markdown("t", "**hi**", None)]);
    }

    #[test]
    fn escape_heavy_text_still_fits() {
        // Every quote doubles, every control character becomes six bytes.
        let nasty = "\"\u{1}\\\n".repeat(8000);
        let bodies = fit_bodies(&nasty, false, &|_, part| {
            batch_send("r", &["u"], OpenApiMsg::Text(part))
        });
        assert!(bodies.iter().all(|b| b.len() <= MAX_BODY_BYTES));
        let joined: String = bodies
            .iter()
            .map(|b| {
                let v: Value = serde_json::from_str(b).expect("json");
                let inner: Value =
                    serde_json::from_str(v["msgParam"].as_str().expect("s")).expect("json");
                inner["content"].as_str().expect("content").to_string()
            })
            .collect();
        assert_eq!(joined, nasty);
    }

    #[test]
    fn newline_heavy_text_splits_evenly() {
        let long: String = (0..4000).map(|i| format!("第{i}行\n")).collect();
        let bodies = fit_bodies(&long, false, &|_, part| text(part, None));
        assert!(bodies.iter().all(|b| b.len() <= MAX_BODY_BYTES));
        let lens: Vec<usize> = bodies.iter().map(String::len).collect();
        // Full parts, the remainder last: no sliver in between.
        assert!(
            lens[..lens.len() - 1]
                .iter()
                .all(|&l| l > MAX_BODY_BYTES * 9 / 10),
            "{lens:?}"
        );
        assert_eq!(texts_of(&bodies).concat(), long);
    }

    proptest! {
        #[test]
        fn split_bodies_fit_and_join_back(s in "\\PC{1,30000}", md in any::<bool>(), at in proptest::option::of("[a-z0-9]{1,20}")) {
            let bodies = fit_bodies(&s, md, &|m, part| {
                if m { markdown(&markdown_title(part), part, at.as_deref()) } else { text(part, at.as_deref()) }
            });
            prop_assert!(bodies.iter().all(|b| b.len() <= MAX_BODY_BYTES));
            prop_assert_eq!(texts_of(&bodies).concat(), s);
        }
    }
}
