//! Refund / cancellation slot filling: ask for the order number when it is missing,
//! remember it across turns (it lives in the conversation record), confirm, then act.

use crate::store::{FlowStage, FlowState};

const YES: &[&str] = &[
    "yes",
    "y",
    "yeah",
    "yep",
    "ok",
    "okay",
    "sure",
    "confirm",
    "confirmed",
    "correct",
    "right",
    "that's right",
    "yes please",
    "do it",
    "go ahead",
    "是",
    "是的",
    "对",
    "对的",
    "确认",
    "好",
    "好的",
    "可以",
    "没错",
    "嗯",
    "行",
    "确定",
];
const NO: &[&str] = &[
    "no",
    "n",
    "nope",
    "wrong",
    "not right",
    "incorrect",
    "不是",
    "不对",
    "错了",
    "不",
    "否",
];
const ABANDON: &[&str] = &[
    "never mind",
    "nevermind",
    "forget it",
    "stop",
    "don't",
    "dont",
    "算了",
    "不用了",
    "不要了",
    "不退了",
    "不取消了",
    "取消操作",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Yes,
    No,
    Abandon,
    Unclear,
}

/// Read a reply to "is that right?".
pub fn read_answer(text: &str) -> Answer {
    let t: String = text
        .trim()
        .trim_end_matches(|c: char| c.is_ascii_punctuation() || "。！，～".contains(c))
        .to_lowercase();
    if ABANDON
        .iter()
        .any(|a| t == *a || t.starts_with(&format!("{a} ")) || (!a.is_ascii() && t.contains(a)))
    {
        return Answer::Abandon;
    }
    if YES.contains(&t.as_str())
        || YES
            .iter()
            .any(|y| t.starts_with(&format!("{y}, ")) || t.starts_with(&format!("{y} ")))
    {
        return Answer::Yes;
    }
    if NO.contains(&t.as_str())
        || NO
            .iter()
            .any(|n| t.starts_with(&format!("{n}, ")) || t.starts_with(&format!("{n} ")))
    {
        return Answer::No;
    }
    Answer::Unclear
}

pub fn start(kind: &str, order: Option<String>, reason: &str) -> FlowState {
    FlowState {
        kind: kind.to_string(),
        stage: if order.is_some() {
            FlowStage::AwaitingConfirmation
        } else {
            FlowStage::AwaitingOrder
        },
        order,
        reason: reason.chars().take(500).collect(),
    }
}

/// The question the flow asks next.
pub fn prompt(flow: &FlowState, zh: bool) -> String {
    let what_en = if flow.kind == "refund" {
        "a refund"
    } else {
        "a cancellation"
    };
    let what_zh = if flow.kind == "refund" {
        "退款"
    } else {
        "取消"
    };
    match (&flow.stage, &flow.order, zh) {
        (FlowStage::AwaitingOrder, _, false) => format!(
            "I can help you with {what_en}. Could you give me your order number? It looks like LM-20241105-0042 and is in your confirmation email."
        ),
        (FlowStage::AwaitingOrder, _, true) => format!(
            "我可以帮您办理{what_zh}。请提供您的订单号（格式如 LM-20241105-0042，可在确认邮件中找到）。"
        ),
        (FlowStage::AwaitingConfirmation, Some(o), false) => format!(
            "To confirm: you'd like {what_en} for order {o}. Is that right? (yes / no)"
        ),
        (FlowStage::AwaitingConfirmation, Some(o), true) => {
            format!("请确认：您要为订单 {o} 申请{what_zh}，对吗？（是 / 否）")
        }
        (FlowStage::AwaitingConfirmation, None, false) => {
            "Could you give me your order number?".to_string()
        }
        (FlowStage::AwaitingConfirmation, None, true) => "请提供您的订单号。".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_yes_no_and_abandon() {
        for t in ["yes", "Yes!", "ok", "是的", "确认", "yes, please go ahead"] {
            assert_eq!(read_answer(t), Answer::Yes, "{t}");
        }
        for t in ["no", "No.", "不对", "no, it's another order"] {
            assert_eq!(read_answer(t), Answer::No, "{t}");
        }
        for t in ["never mind", "算了吧", "forget it"] {
            assert_eq!(read_answer(t), Answer::Abandon, "{t}");
        }
        assert_eq!(read_answer("what is the refund window?"), Answer::Unclear);
    }

    #[test]
    fn prompts_follow_the_stage() {
        let f = start("refund", None, "I want a refund");
        assert!(prompt(&f, false).contains("order number"));
        let f = start("cancel", Some("LM-20241105-0042".into()), "cancel it");
        assert!(prompt(&f, true).contains("LM-20241105-0042"));
    }
}
