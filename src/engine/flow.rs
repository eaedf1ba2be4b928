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

/// Ways of withdrawing that say nothing else, so they count anywhere in a short reply
/// ("no wait, never mind", "oh actually forget it"), unlike "stop" or "don't", which only
/// withdraw at the start ("stop charging me" is a complaint).
const ABANDON_ANYWHERE: &[&str] = &[
    "never mind",
    "nevermind",
    "forget it",
    "forget about it",
    "changed my mind",
    "no need",
    "don't bother",
];
/// The longest reply in which [`ABANDON_ANYWHERE`] still withdraws: past it the phrase is
/// part of something else the customer says.
const ABANDON_WORDS: usize = 8;

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
    let words: Vec<&str> = t
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .collect();
    if words.len() <= ABANDON_WORDS
        && ABANDON_ANYWHERE.iter().any(|a| {
            let phrase: Vec<&str> = a.split(' ').collect();
            words.windows(phrase.len()).any(|w| w == phrase.as_slice())
        })
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

/// What kind of request a flow collects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowKind {
    Refund,
    Cancel,
}

impl FlowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowKind::Refund => "refund",
            FlowKind::Cancel => "cancel",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "refund" => Some(FlowKind::Refund),
            "cancel" => Some(FlowKind::Cancel),
            _ => None,
        }
    }
}

pub fn start(kind: FlowKind, order: Option<String>, reason: &str) -> FlowState {
    FlowState {
        kind: kind.as_str().to_string(),
        stage: if order.is_some() {
            FlowStage::AwaitingConfirmation
        } else {
            FlowStage::AwaitingOrder
        },
        order,
        reason: reason.chars().take(500).collect(),
    }
}

/// What the engine understood of a message, as far as a waiting flow cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The message read as an answer to "is that right?".
    pub answer: Answer,
    /// An order number in the message.
    pub order: Option<String>,
    /// The message asks something else (a question of its own): answer it, keep the flow.
    pub new_question: bool,
}

/// What the engine does after a flow step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ask for the order number (`declined`: after the customer said the one we had is wrong).
    AskOrder { declined: bool },
    /// Ask the customer to confirm the request for `order`.
    Confirm { order: String },
    /// Run the business action for `order`; the flow is over.
    Execute { kind: FlowKind, order: String },
    /// The customer dropped the request; the flow is over.
    Dropped,
    /// Not an answer to the flow: handle the message as usual, keep the flow waiting.
    PassThrough,
}

/// One step of a waiting flow: the new state (`None`: the flow is over) and what to do.
/// Pure: every transition is a unit test below.
pub fn step(state: FlowState, reply: &Reply) -> (Option<FlowState>, Action) {
    if reply.answer == Answer::Abandon {
        return (None, Action::Dropped);
    }
    let kind = FlowKind::parse(&state.kind).unwrap_or(FlowKind::Refund);
    let with_order = |mut s: FlowState, order: String| {
        s.order = Some(order.clone());
        s.stage = FlowStage::AwaitingConfirmation;
        (Some(s), Action::Confirm { order })
    };
    match state.stage {
        FlowStage::AwaitingOrder => match &reply.order {
            Some(o) => with_order(state, o.clone()),
            None if reply.new_question => (Some(state), Action::PassThrough),
            None => (Some(state), Action::AskOrder { declined: false }),
        },
        FlowStage::AwaitingConfirmation => match (reply.answer, &reply.order, &state.order) {
            // "yes" (or "yes, QS…" naming the same number) confirms what we asked about.
            (Answer::Yes, _, Some(o)) => (
                None,
                Action::Execute {
                    kind,
                    order: o.clone(),
                },
            ),
            // "no, it's QS…": the corrected number is confirmed next.
            (Answer::No, Some(o), _) => with_order(state, o.clone()),
            (Answer::No, None, _) => {
                let mut s = state;
                s.order = None;
                s.stage = FlowStage::AwaitingOrder;
                (Some(s), Action::AskOrder { declined: true })
            }
            (_, Some(o), _) => with_order(state, o.clone()),
            (_, None, _) if reply.new_question => (Some(state), Action::PassThrough),
            (_, None, Some(o)) => {
                let order = o.clone();
                (Some(state), Action::Confirm { order })
            }
            // Confirmation without an order cannot happen; ask for one.
            (_, None, None) => {
                let mut s = state;
                s.stage = FlowStage::AwaitingOrder;
                (Some(s), Action::AskOrder { declined: false })
            }
        },
    }
}

/// The flow's sentences, from `[replies]` (nothing company-specific in code).
pub struct Texts<'a> {
    pub ask_order: &'a str,
    pub hint: &'a str,
    pub confirm: &'a str,
    pub declined: &'a str,
    pub what: &'a str,
}

/// Fill `{what}`, `{order}` and `{hint}` (a non-empty hint is set off by a space, or
/// nothing in Chinese).
pub fn fill(template: &str, what: &str, order: &str, hint: &str) -> String {
    let hint = if hint.is_empty() || crate::text::looks_chinese(template) {
        hint.to_string()
    } else {
        format!(" {hint}")
    };
    template
        .replace("{what}", what)
        .replace("{order}", order)
        .replace("{hint}", &hint)
}

/// The question a flow asks for `action` (None: the action says nothing itself).
pub fn prompt(action: &Action, t: &Texts<'_>) -> Option<String> {
    match action {
        Action::AskOrder { declined: false } => Some(fill(t.ask_order, t.what, "", t.hint)),
        Action::AskOrder { declined: true } => Some(fill(t.declined, t.what, "", t.hint)),
        Action::Confirm { order } => Some(fill(t.confirm, t.what, order, t.hint)),
        Action::Execute { .. } | Action::Dropped | Action::PassThrough => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_yes_no_and_abandon() {
        for t in [
            "yes",
            "Yes!",
            "ok",
            "是的",
            "确认",
            "yes, please go ahead",
            "对 就是这单",
        ] {
            assert_eq!(read_answer(t), Answer::Yes, "{t}");
        }
        for t in ["no", "No.", "不对", "no, it's another order", "不是"] {
            assert_eq!(read_answer(t), Answer::No, "{t}");
        }
        for t in [
            "never mind",
            "算了吧",
            "forget it",
            "no wait, never mind",
            "oh actually, forget it",
            "I changed my mind, thanks",
        ] {
            assert_eq!(read_answer(t), Answer::Abandon, "{t}");
        }
        // "stop" withdraws only at the start; a long message is about something else.
        for t in [
            "why don't you stop charging me twice",
            "the tea was mouldy, never mind the box, i want my money back",
        ] {
            assert_ne!(read_answer(t), Answer::Abandon, "{t}");
        }
        assert_eq!(read_answer("what is the refund window?"), Answer::Unclear);
    }

    fn reply(answer: Answer, order: Option<&str>, new_question: bool) -> Reply {
        Reply {
            answer,
            order: order.map(str::to_string),
            new_question,
        }
    }

    fn waiting_for_order() -> FlowState {
        start(FlowKind::Refund, None, "I want a refund")
    }

    fn confirming(order: &str) -> FlowState {
        start(FlowKind::Cancel, Some(order.into()), "cancel it")
    }

    #[test]
    fn starting_with_or_without_the_order() {
        assert_eq!(waiting_for_order().stage, FlowStage::AwaitingOrder);
        let c = confirming("A123456");
        assert_eq!(c.stage, FlowStage::AwaitingConfirmation);
        assert_eq!(c.order.as_deref(), Some("A123456"));
    }

    #[test]
    fn awaiting_order_transitions() {
        // The order arrives: confirm it.
        let (s, a) = step(
            waiting_for_order(),
            &reply(Answer::Unclear, Some("A123456"), false),
        );
        let s = s.unwrap();
        assert_eq!(s.stage, FlowStage::AwaitingConfirmation);
        assert_eq!(
            a,
            Action::Confirm {
                order: "A123456".into()
            }
        );
        // Something else is asked: answer it, keep waiting.
        let (s, a) = step(waiting_for_order(), &reply(Answer::Unclear, None, true));
        assert_eq!(s.unwrap().stage, FlowStage::AwaitingOrder);
        assert_eq!(a, Action::PassThrough);
        // Neither: ask again.
        let (s, a) = step(waiting_for_order(), &reply(Answer::Yes, None, false));
        assert_eq!(s.unwrap().stage, FlowStage::AwaitingOrder);
        assert_eq!(a, Action::AskOrder { declined: false });
        // Dropped.
        let (s, a) = step(waiting_for_order(), &reply(Answer::Abandon, None, false));
        assert!(s.is_none());
        assert_eq!(a, Action::Dropped);
    }

    #[test]
    fn awaiting_confirmation_transitions() {
        let (s, a) = step(confirming("A123456"), &reply(Answer::Yes, None, false));
        assert!(s.is_none());
        assert_eq!(
            a,
            Action::Execute {
                kind: FlowKind::Cancel,
                order: "A123456".into()
            }
        );
        // "no, it's B654321": confirm the corrected number.
        let (s, a) = step(
            confirming("A123456"),
            &reply(Answer::No, Some("B654321"), false),
        );
        assert_eq!(s.unwrap().order.as_deref(), Some("B654321"));
        assert_eq!(
            a,
            Action::Confirm {
                order: "B654321".into()
            }
        );
        // "no": ask for the right number.
        let (s, a) = step(confirming("A123456"), &reply(Answer::No, None, false));
        let s = s.unwrap();
        assert_eq!((s.stage, s.order), (FlowStage::AwaitingOrder, None));
        assert_eq!(a, Action::AskOrder { declined: true });
        // A number without yes or no: confirm that one.
        let (_, a) = step(
            confirming("A123456"),
            &reply(Answer::Unclear, Some("C111111"), false),
        );
        assert_eq!(
            a,
            Action::Confirm {
                order: "C111111".into()
            }
        );
        // Another question: answer it, keep the flow.
        let (s, a) = step(confirming("A123456"), &reply(Answer::Unclear, None, true));
        assert_eq!(s.unwrap().stage, FlowStage::AwaitingConfirmation);
        assert_eq!(a, Action::PassThrough);
        // Unclear: ask again.
        let (_, a) = step(confirming("A123456"), &reply(Answer::Unclear, None, false));
        assert_eq!(
            a,
            Action::Confirm {
                order: "A123456".into()
            }
        );
        // Dropped.
        let (s, a) = step(confirming("A123456"), &reply(Answer::Abandon, None, false));
        assert!(s.is_none());
        assert_eq!(a, Action::Dropped);
    }

    #[test]
    fn prompts_come_from_the_texts() {
        let t = Texts {
            ask_order: "I can help with {what}. Order number?{hint}",
            hint: "Like X-1234567.",
            confirm: "{what} for {order}? (yes / no)",
            declined: "Which one then?{hint}",
            what: "a refund",
        };
        assert_eq!(
            prompt(&Action::AskOrder { declined: false }, &t).unwrap(),
            "I can help with a refund. Order number? Like X-1234567."
        );
        assert_eq!(
            prompt(
                &Action::Confirm {
                    order: "A123456".into()
                },
                &t
            )
            .unwrap(),
            "a refund for A123456? (yes / no)"
        );
        assert_eq!(
            prompt(&Action::AskOrder { declined: true }, &t).unwrap(),
            "Which one then? Like X-1234567."
        );
        assert!(prompt(&Action::Dropped, &t).is_none());
        assert_eq!(
            fill("请提供订单号。{hint}", "退款", "", "如 X-1。"),
            "请提供订单号。如 X-1。"
        );
        assert_eq!(fill("Order?{hint}", "", "", ""), "Order?");
    }
}
