//! What the customer wants: the built-in offline classifier.
//!
//! Lexicons in English and Chinese score each intent; English words also match with one typo
//! (`refnud`, `cancle`); operator examples from `[[intent.examples]]` vote by similarity.
//! Behind the `IntentClassifier` trait so an LLM classifier can plug in.

use std::collections::HashSet;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::neighbours::Neighbours;
use crate::config::IntentExample;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntentKind {
    Query,
    Complaint,
    Refund,
    Cancel,
    Praise,
    Other,
}

impl IntentKind {
    pub const ALL: [IntentKind; 6] = [
        IntentKind::Query,
        IntentKind::Complaint,
        IntentKind::Refund,
        IntentKind::Cancel,
        IntentKind::Praise,
        IntentKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            IntentKind::Query => "query",
            IntentKind::Complaint => "complaint",
            IntentKind::Refund => "refund",
            IntentKind::Cancel => "cancel",
            IntentKind::Praise => "praise",
            IntentKind::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        IntentKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    High,
    Medium,
    Low,
}

impl Urgency {
    pub fn as_str(self) -> &'static str {
        match self {
            Urgency::High => "high",
            Urgency::Medium => "medium",
            Urgency::Low => "low",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sentiment {
    Positive,
    Neutral,
    Negative,
    VeryNegative,
}

impl Sentiment {
    /// The number a class stands for (-1..1) when nothing finer is known.
    pub fn score(self) -> f32 {
        match self {
            Sentiment::VeryNegative => -0.9,
            Sentiment::Negative => -0.5,
            Sentiment::Neutral => 0.0,
            Sentiment::Positive => 0.7,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Sentiment::Positive => "positive",
            Sentiment::Neutral => "neutral",
            Sentiment::Negative => "negative",
            Sentiment::VeryNegative => "very_negative",
        }
    }
}

/// The seed's intent JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Intent {
    pub intent: IntentKind,
    pub urgency: Urgency,
    pub sentiment: Sentiment,
    pub needs_order_info: bool,
    /// The order number found in the message, if any.
    #[serde(default)]
    pub order: Option<String>,
    /// The message is small talk (hello, thanks, bye): answered briefly, never handed off.
    #[serde(default)]
    pub small_talk: Option<SmallTalk>,
    /// Sentiment as a number, -1 (furious) .. 1 (delighted), as the seed's analysis has it.
    #[serde(default)]
    pub sentiment_score: f32,
    /// The message reports a danger to someone's safety (smoke, gas, a shock, an injury):
    /// always high urgency, always a person at once.
    #[serde(default)]
    pub hazard: bool,
    /// A message that only thanks, greets or says goodbye at more length than small talk
    /// ("i enjoyed our talk, bye", "thank you for your help today"): the engine answers it as
    /// small talk when the knowledge has nothing for it, rather than calling a person over
    /// a farewell. Never set for a message that asks anything. (`small_talk`, when set, is
    /// here too.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closing: Option<SmallTalk>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmallTalk {
    Hello,
    /// "Are you a bot?"
    Identity,
    Thanks,
    Bye,
}

#[async_trait]
pub trait IntentClassifier: Send + Sync {
    async fn classify(&self, text: &str) -> Intent;
}

// Lexicons. English entries are matched on word boundaries (multi-word phrases as phrases);
// Chinese ones as substrings. Weights: 2 = decisive, 1 = suggestive.
const REFUND: &[(&str, u8)] = &[
    ("退给我", 2),
    ("退还", 2),
    ("要回", 1),
    ("refund", 2),
    // Not a duplicate: "refund" is one typo from "refunds", so the word matches both and
    // counts 4. Left so: without it "please refund my order, the tea was moldy" lost to
    // the complaint words (qingshan even intents 0.956 → 0.933).
    ("refunds", 2),
    ("refunded", 2),
    ("money back", 2),
    ("reimburse", 2),
    ("reimbursement", 2),
    ("chargeback", 2),
    ("return my money", 2),
    ("get my money", 2),
    ("repay", 1),
    ("return", 1),
    ("returned", 1),
    ("退款", 2),
    ("退钱", 2),
    ("退费", 2),
    ("钱退", 2),
    ("返还", 1),
    ("退货", 2),
    ("退回", 1),
    ("把钱", 1),
];
const CANCEL: &[(&str, u8)] = &[
    ("auto renewal", 2),
    ("stop renewal", 2),
    ("turn off renewal", 2),
    ("don't want to be charged", 2),
    ("stop charging", 2),
    ("自动续费", 2),
    ("不续了", 2),
    ("停止续费", 2),
    ("cancel", 2),
    ("cancelling", 2),
    ("canceling", 2),
    ("cancellation", 2),
    ("unsubscribe", 2),
    ("terminate", 2),
    ("close my account", 2),
    ("delete my account", 2),
    ("stop my subscription", 2),
    ("end my subscription", 2),
    ("stop the subscription", 2),
    ("don't want to renew", 2),
    ("取消", 2),
    ("退订", 2),
    ("注销", 2),
    ("停止订阅", 2),
    ("不续费", 2),
    ("不想续", 2),
    ("解约", 2),
    ("关闭账号", 2),
    ("不用了", 1),
];
const COMPLAINT: &[(&str, u8)] = &[
    ("slow", 1),
    ("so slow", 2),
    ("annoying", 2),
    ("took forever", 2),
    ("takes forever", 2),
    ("late", 1),
    ("please fix", 1),
    ("fix it", 1),
    ("outrageous", 2),
    ("emergency", 1),
    ("locked out", 1),
    ("charged me", 1),
    ("charged my", 1),
    ("nobody answers", 2),
    ("no one answers", 2),
    ("down for", 1),
    ("慢", 1),
    ("不太好", 2),
    ("不好用", 3),
    ("乱", 1),
    ("找不到", 1),
    ("延迟", 1),
    ("修一下", 1),
    ("好几天", 1),
    ("搜不到", 1),
    ("挂了", 2),
    ("没法", 1),
    ("体验", 1),
    ("三次", 1),
    ("sue", 2),
    ("lawsuit", 2),
    ("lawyer", 2),
    ("media", 1),
    ("起诉", 2),
    ("曝光", 2),
    ("律师", 2),
    ("太过分", 2),
    ("过分", 1),
    ("没人回", 2),
    ("没人理", 2),
    ("登不上", 1),
    ("十万火急", 2),
    ("what a joke", 2),
    ("terrible", 2),
    ("awful", 2),
    ("worst", 2),
    ("horrible", 2),
    ("unacceptable", 2),
    ("disappointed", 2),
    ("disappointing", 2),
    ("complain", 2),
    ("complaint", 2),
    ("ridiculous", 2),
    ("scam", 2),
    ("fraud", 2),
    ("useless", 2),
    ("furious", 2),
    ("angry", 2),
    ("rude", 2),
    ("pathetic", 2),
    ("garbage", 2),
    ("rubbish", 2),
    ("annoyed", 1),
    ("frustrated", 2),
    ("frustrating", 2),
    ("not happy", 2),
    ("unhappy", 2),
    ("fed up", 2),
    ("sick of", 2),
    ("poor service", 2),
    ("bad service", 2),
    ("still not", 1),
    ("again", 1),
    ("never works", 2),
    ("doesn't work", 1),
    ("not working", 1),
    ("broken", 1),
    ("waste", 1),
    ("overcharged", 2),
    ("charged twice", 2),
    ("投诉", 2),
    ("太差", 2),
    ("很差", 2),
    ("差劲", 2),
    ("垃圾", 2),
    ("坑人", 2),
    ("骗子", 2),
    ("骗钱", 2),
    ("失望", 2),
    ("生气", 2),
    ("愤怒", 2),
    ("不满", 2),
    ("恶心", 2),
    ("气死", 2),
    ("离谱", 2),
    ("无语", 1),
    ("烂", 1),
    ("什么破", 2),
    ("破玩意", 2),
    // What arrives wrong, in any shop: damaged, missing, spoiled, the wrong item.
    ("damaged", 1),
    ("dented", 1),
    ("crushed", 1),
    ("cracked", 1),
    ("missing", 1),
    ("leaking", 1),
    ("wrong item", 2),
    ("expired", 1),
    ("moldy", 2),
    ("mouldy", 2),
    ("压坏", 2),
    ("压扁", 2),
    ("摔坏", 2),
    ("碎了", 1),
    ("裂了", 1),
    ("破了", 1),
    ("漏了", 1),
    ("少了", 1),
    ("缺了", 1),
    ("发错", 2),
    ("过期", 1),
    ("发霉", 2),
    ("霉味", 2),
    ("变质", 2),
    ("受潮", 1),
    ("态度差", 2),
    ("扣了两次", 2),
    ("多扣", 2),
    ("乱扣", 2),
    ("又不行", 1),
    ("还没解决", 2),
];
const PRAISE: &[(&str, u8)] = &[
    ("好用", 2),
    ("赞", 2),
    ("帮了大忙", 2),
    ("清楚", 1),
    ("专业", 1),
    ("solved it", 2),
    ("you rock", 2),
    ("thank", 1),
    ("thx", 1),
    ("great", 1),
    ("awesome", 2),
    ("excellent", 2),
    ("love it", 2),
    ("love your", 2),
    ("helpful", 2),
    ("amazing", 2),
    ("perfect", 1),
    ("well done", 2),
    ("appreciate", 2),
    ("fantastic", 2),
    ("wonderful", 2),
    ("brilliant", 2),
    ("good job", 2),
    ("谢谢", 1),
    ("感谢", 1),
    ("多谢", 1),
    ("太棒", 2),
    ("很棒", 2),
    ("好评", 2),
    ("点赞", 2),
    ("给力", 2),
    ("满意", 1),
    // A shop's praise: it tastes good, they buy again, they recommend it.
    ("好喝", 1),
    ("好吃", 1),
    ("回购", 1),
    ("还会再买", 2),
    ("推荐给朋友", 2),
    ("delicious", 1),
    ("tasty", 1),
    ("will buy again", 2),
    ("buy again", 1),
    ("best purchase", 2),
    ("不错", 1),
    ("很有帮助", 2),
    ("厉害", 2),
    ("贴心", 2),
];
/// English words that open a question or request.
const QUESTION_OPENERS: &[&str] = &[
    "how", "what", "when", "where", "why", "which", "who", "can", "could", "do", "does", "is",
    "are", "will", "should", "may", "would", "need", "want", "help", "tell", "explain",
];
/// Words that turn a question into a request to act ("can you cancel it?", "我要退款").
const REQUEST_MARKERS: &[&str] = &[
    "i want",
    "i wanna",
    "i'd like",
    "i would like",
    "i need",
    "please",
    "pls",
    "plz",
    "can you",
    "could you",
    "would you",
    "want to",
    "help me",
    "i'm trying",
    "i am trying",
    "我要",
    "我想",
    "帮我",
    "申请",
    "给我",
    "麻烦",
    "请",
    "要求",
];
/// Chinese question and request markers, matched anywhere.
const QUESTION_MARKERS_ZH: &[&str] = &[
    "多久",
    "怎么",
    "如何",
    "什么",
    "吗",
    "哪",
    "多少",
    "几",
    "能不能",
    "可以",
    "是否",
    "为什么",
    "请问",
    // Colloquial "how" / "what" (咋回事, 是啥).
    "咋",
    "啥",
];
/// Words that ask us for something (想退了, 要换货, 帮我查): read as questions by
/// [`is_question`], but they are also how a refund or a cancellation is asked for, so the
/// vote's refund or cancellation is not held back by them (see [`asks_question`]).
const WANT_MARKERS_ZH: &[&str] = &["想", "要", "需要", "帮"];
const URGENT: &[&str] = &[
    "fix it now",
    "now!",
    "emergency",
    "locked out",
    "挂了",
    "没法干活",
    "十万火急",
    "urgent",
    "urgently",
    "asap",
    "immediately",
    "right now",
    "emergency",
    "at once",
    "right away",
    "紧急",
    "马上",
    "立刻",
    "赶紧",
    "立即",
    "火速",
];
const STRONG_NEGATIVE: &[&str] = &[
    "scammer",
    "太过分",
    "outrageous",
    "scam",
    "fraud",
    "fuck",
    "shit",
    "sue",
    "lawyer",
    "lawsuit",
    "court",
    "disgusting",
    "hate",
    "furious",
    "worst",
    "骗子",
    "垃圾",
    "去死",
    "起诉",
    "律师",
    "法院",
    "曝光",
    "恶心",
    "气死",
    "滚",
    "坑人",
    "骗钱",
];
const INTENSIFIERS: &[&str] = &[
    "very",
    "so",
    "extremely",
    "really",
    "totally",
    "absolutely",
    "太",
    "非常",
    "极其",
    "特别",
    "真的",
    "简直",
];
const HELLO: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "hiya",
    "good morning",
    "good afternoon",
    "good evening",
    "anyone there",
    "你好",
    "您好",
    "在吗",
    "在不在",
    "哈喽",
    "嗨",
    "早上好",
    "下午好",
    "晚上好",
    "有人吗",
];
const THANKS: &[&str] = &[
    "thanks",
    "thank you",
    "thx",
    "ty",
    "cheers",
    "ok thanks",
    "谢谢",
    "多谢",
    "感谢",
    "谢啦",
    "好的谢谢",
    "好的，谢谢",
];
/// "Are you a bot?": answered as small talk, not searched for.
const IDENTITY: &[&str] = &[
    "are you a bot",
    "are you a robot",
    "are you human",
    "are you real",
    "is this a bot",
    "am i talking to a bot",
    "你是机器人",
    "是机器人吗",
    "你是真人吗",
    "你是ai",
    "你是谁",
];
const BYE: &[&str] = &[
    "bye",
    "goodbye",
    "see you",
    "再见",
    "拜拜",
    "没事了",
    "没有了",
];
/// Longer ways of thanking, greeting and taking leave, read only by [`closing`] (in a
/// message that asks nothing): each says one of the three whatever surrounds it.
const THANKS_LONG: &[&str] = &[
    "thank u",
    "appreciate it",
    "appreciate your help",
    "much appreciated",
    "grateful",
    "gratitude",
    "thankful",
    "辛苦了",
    "谢了",
    "感恩",
];
const BYE_LONG: &[&str] = &[
    "bye bye",
    "see ya",
    "see you later",
    "talk to you later",
    "have a good day",
    "have a nice day",
    "have a great day",
    "have a good one",
    "good night",
    "goodnight",
    "take care",
    "farewell",
    "until next time",
    "回头见",
    "下次见",
    "晚安",
    "先这样",
];
const HELLO_LONG: &[&str] = &[
    "how are you",
    "how are ya",
    "how's it going",
    "hows it going",
    "how is it going",
    "what's up",
    "whats up",
    "howdy",
    "你好啊",
    "大家好",
];
/// Chinese ways of asking a [`closing`] also reads besides [`REQUEST_MARKERS`] and the
/// question words: 帮忙 (help), 能否 (could you).
const CLOSING_ASKS_ZH: &[&str] = &["帮忙", "能否"];
/// The most words a [`closing`] message has ("it was a pleasure talking to you, goodbye now"
/// has 10); past it a message is a story with a farewell at the end.
const CLOSING_WORDS: usize = 12;
/// The most Chinese characters a [`closing`] message has.
const CLOSING_CJK: usize = 16;
const ORDER_WORDS: &[&str] = &[
    "order",
    "purchase",
    "invoice",
    "subscription",
    "payment",
    "charge",
    "订单",
    "购买",
    "发票",
    "付款",
    "扣款",
    "订阅",
];

pub struct BuiltinClassifier {
    order_re: regex::Regex,
    /// The built-in order finder is in force: matches must carry 6+ digits and not be a
    /// phone number or a date (see [`crate::config::ORDER_PATTERN`]).
    broad_orders: bool,
    examples: Vec<(HashSet<String>, IntentKind)>,
    neighbours: Option<Arc<Neighbours>>,
}

/// Nearest-neighbour votes count when the winner holds at least this share of the
/// neighbours' weight and the nearest example is at least this similar.
const VOTE_SHARE: f32 = 0.5;
const VOTE_NEAREST: f32 = 0.25;

impl BuiltinClassifier {
    pub fn new(order_pattern: &str, examples: &[IntentExample]) -> anyhow::Result<Self> {
        Ok(BuiltinClassifier {
            order_re: regex::Regex::new(order_pattern)?,
            broad_orders: order_pattern == crate::config::ORDER_PATTERN,
            examples: examples
                .iter()
                .filter_map(|e| Some((grams(&e.text), IntentKind::parse(&e.intent)?)))
                .collect(),
            neighbours: None,
        })
    }

    /// Vote with nearest labelled examples (see `neighbours.rs`) besides the lexicons.
    pub fn with_neighbours(mut self, n: Arc<Neighbours>) -> Self {
        self.neighbours = Some(n);
        self
    }

    /// The first order number in `text`: capture group 1 of `intent.order_pattern` (else the
    /// whole match). With the built-in pattern, a candidate needs 6+ digits and must not be a
    /// phone number or a date.
    pub fn find_order(&self, text: &str) -> Option<String> {
        self.order_re.captures_iter(text).find_map(|caps| {
            let m = caps.get(1).or_else(|| caps.get(0))?.as_str();
            let m = m.trim_matches(|c: char| c == '-' || c == '_');
            (!self.broad_orders || plausible_order(m)).then(|| m.to_string())
        })
    }

    pub fn classify_sync(&self, text: &str) -> Intent {
        self.lexicon(text).0
    }

    /// The lexicons' verdict and the winning intent's lexicon score (2+ = decisive).
    fn lexicon(&self, text: &str) -> (Intent, u32) {
        let norm = normalize(text);
        // ASCII word runs only ("我要refund" has the word "refund"); Chinese phrases are
        // matched as substrings.
        let words = words_of(&norm);
        let score = |lex: &[(&str, u8)]| -> u32 {
            lex.iter()
                .filter(|(p, _)| matches_phrase(&norm, &words, p))
                .map(|&(_, w)| w as u32)
                .sum()
        };
        let mut scores = [
            (IntentKind::Refund, score(REFUND)),
            (IntentKind::Cancel, score(CANCEL)),
            (IntentKind::Complaint, score(COMPLAINT)),
            (IntentKind::Praise, score(PRAISE)),
        ];
        // Operator examples: the nearest example above a similarity floor adds a decisive vote.
        if let Some((kind, sim)) = self.nearest_example(&norm) {
            if sim >= 0.45 {
                match scores.iter_mut().find(|(k, _)| *k == kind) {
                    Some(slot) => slot.1 += 3,
                    None => {
                        return (self.finish(text, &norm, &words, kind), 3);
                    }
                }
            }
        }
        let question = is_question(&norm, &words);
        let negative_praise = scores[3].1 > 0 && scores[2].1 > 0;
        if negative_praise {
            // "thanks for nothing, this is useless": the complaint wins.
            scores[3].1 = 0;
        }
        let best = scores
            .iter()
            // On a tie the earlier intent wins: acting on a request beats commenting on it.
            .fold((IntentKind::Query, 0), |best, &(k, sc)| {
                if sc > best.1 {
                    (k, sc)
                } else {
                    best
                }
            });
        let kind = if best.1 == 0 {
            if looks_like_other(&norm, &words) {
                IntentKind::Other
            } else {
                IntentKind::Query
            }
        } else if best.0 == IntentKind::Praise && question && best.1 < 2 {
            // "thanks, and how do I export?" is a question.
            IntentKind::Query
        } else if best.1 == 1 && question && matches!(best.0, IntentKind::Complaint) {
            IntentKind::Query
        } else if matches!(best.0, IntentKind::Refund | IntentKind::Cancel)
            && asks_about_not_for(&norm, &words)
            && self.find_order(text).is_none()
        {
            // "How long does a refund take?" asks about the policy; "I want a refund" or
            // "refund order LM-…" asks us to do it.
            IntentKind::Query
        } else {
            best.0
        };
        (self.finish(text, &norm, &words, kind), best.1)
    }

    /// Lexicons first (high precision); where they are not decisive, the nearest labelled
    /// examples decide intent; urgency and sentiment take both into account.
    pub async fn classify_full(&self, text: &str) -> Intent {
        let (mut intent, lexicon_score) = self.lexicon(text);
        let Some(vote) = (match &self.neighbours {
            Some(n) => n.vote(text).await,
            None => None,
        }) else {
            return intent;
        };
        let confident = vote.share >= VOTE_SHARE && vote.nearest >= VOTE_NEAREST;
        let norm = normalize(text);
        let words = words_of(&norm);
        if confident
            && lexicon_score < 2
            && intent.small_talk.is_none()
            // Thanks, hello or goodbye, however long, neither asks for a refund or a
            // cancellation nor complains ("thanks, have a nice day" came out a refund on
            // "have a"); the vote may still make it a question the knowledge answers.
            && !(intent.closing.is_some()
                && matches!(
                    vote.kind,
                    IntentKind::Refund | IntentKind::Cancel | IntentKind::Complaint
                ))
            && vote.kind != intent.intent
            // A refund or cancellation is only started, and thanks only said, on words that
            // ask for one or a clear majority of neighbours: a wrong flow or a "thank you" for
            // a complaint costs more than a plain answer.
            && !(matches!(vote.kind, IntentKind::Refund | IntentKind::Cancel | IntentKind::Praise)
                && lexicon_score == 0
                && vote.share < 0.7)
            // A question is not answered with thanks: "thanks, and can I pay by card?" is
            // a question the lexicons read as one, however much it reads like thanks.
            && !(vote.kind == IntentKind::Praise && is_question(&norm, &words))
            // A plain question with no word of any intent stays a question unless the
            // neighbours are near-unanimous ("What are your support hours?" is no complaint).
            // A refund or cancellation asked for in words of wanting (想退了, 不想要了 要退)
            // is not such a question: wanting is how one asks for it.
            && !(intent.intent == IntentKind::Query
                && lexicon_score == 0
                && if matches!(vote.kind, IntentKind::Refund | IntentKind::Cancel) {
                    asks_question(&norm, &words)
                } else {
                    is_question(&norm, &words)
                }
                && vote.share < 0.9)
            // Nor on words that merely lean that way: naive Bayes is sure of itself on a few
            // weak words ("have a good day", "I want to talk to your manager" came out
            // refunds at 0.72 and 0.93), so the message needs a word the examples tie to
            // that intent strongly (退, 不想要了, "cancel", "diff back").
            && !(matches!(vote.kind, IntentKind::Refund | IntentKind::Cancel)
                && lexicon_score == 0
                && vote.strong == Some(0))
            // Asking about refunds or cancelling is not asking for one: without a word that
            // asks and without an order number, an information question stays a question
            // however sure the neighbours are.
            && !(matches!(vote.kind, IntentKind::Refund | IntentKind::Cancel)
                && lexicon_score == 0
                && intent.order.is_none()
                && asks_about_not_for(&norm, &words))
        {
            intent = self.finish(text, &norm, &words, vote.kind);
        }
        if confident && vote.kind == intent.intent && vote.urgency == Some(Urgency::High) {
            intent.urgency = Urgency::High;
        }
        // The number: the neighbours' mean, held to what the lexicons are sure of.
        intent.sentiment_score = match intent.sentiment {
            Sentiment::VeryNegative => vote.sentiment.min(-0.8),
            Sentiment::Negative => vote.sentiment.min(-0.3),
            Sentiment::Positive => vote.sentiment.max(0.5),
            Sentiment::Neutral => vote.sentiment,
        };
        intent
    }

    fn finish(&self, text: &str, norm: &str, words: &[&str], kind: IntentKind) -> Intent {
        let sentiment = sentiment(norm, words, kind);
        let urgent = URGENT.iter().any(|p| matches_phrase(norm, words, p));
        let shouting = text.matches('!').count() + text.matches('！').count() >= 2
            || (text.chars().filter(|c| c.is_ascii_uppercase()).count() >= 12
                && text.chars().filter(|c| c.is_ascii_lowercase()).count() * 2
                    < text.chars().filter(|c| c.is_ascii_uppercase()).count());
        let hazard = super::safety::is_hazard(text);
        let urgency = if urgent
            || hazard
            || (kind == IntentKind::Complaint && (shouting || sentiment == Sentiment::VeryNegative))
        {
            Urgency::High
        } else if matches!(
            kind,
            IntentKind::Complaint | IntentKind::Refund | IntentKind::Cancel
        ) {
            Urgency::Medium
        } else {
            Urgency::Low
        };
        let order = self.find_order(text);
        let about_order = ORDER_WORDS.iter().any(|p| matches_phrase(norm, words, p));
        let needs_order_info = order.is_none()
            && (matches!(kind, IntentKind::Refund | IntentKind::Cancel)
                || (about_order && kind == IntentKind::Complaint));
        let small_talk = small_talk(norm, words);
        // An order number is business, whatever thanks surround it.
        let closing = small_talk.or_else(|| closing(norm, words).filter(|_| order.is_none()));
        // Small talk is `other` ("hello", "are you a bot?"), thanks are praise — unless the
        // message also asks for something specific.
        let kind = match (small_talk, kind) {
            (
                Some(SmallTalk::Thanks),
                IntentKind::Query | IntentKind::Other | IntentKind::Praise,
            ) => IntentKind::Praise,
            (Some(_), IntentKind::Query) => IntentKind::Other,
            (_, k) => k,
        };
        let sentiment = if kind == IntentKind::Praise && sentiment == Sentiment::Neutral {
            Sentiment::Positive
        } else {
            sentiment
        };
        Intent {
            intent: kind,
            urgency,
            sentiment,
            sentiment_score: sentiment.score(),
            hazard,
            needs_order_info,
            order,
            small_talk,
            closing,
        }
    }

    fn nearest_example(&self, norm: &str) -> Option<(IntentKind, f32)> {
        if self.examples.is_empty() {
            return None;
        }
        let g = grams(norm);
        self.examples
            .iter()
            .map(|(eg, k)| (*k, dice(&g, eg)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

#[async_trait]
impl IntentClassifier for BuiltinClassifier {
    async fn classify(&self, text: &str) -> Intent {
        self.classify_full(text).await
    }
}

/// Could `m` be an order number? 6+ digits, and not a phone number (mainland mobile, or a
/// number written with a leading +) or a date (YYYYMMDD, YYYY-MM-DD).
fn plausible_order(m: &str) -> bool {
    let digits: String = m.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 6 {
        return false;
    }
    let all_digits = m.chars().all(|c| c.is_ascii_digit());
    let mobile =
        all_digits && m.len() == 11 && m.starts_with('1') && matches!(m.as_bytes()[1], b'3'..=b'9');
    let dashed_date = m.len() == 10
        && m.as_bytes()[4] == b'-'
        && m.as_bytes()[7] == b'-'
        && is_date(&m[..4], &m[5..7], &m[8..]);
    let compact_date = all_digits && m.len() == 8 && is_date(&m[..4], &m[4..6], &m[6..]);
    !(mobile || dashed_date || compact_date)
}

fn is_date(y: &str, mo: &str, d: &str) -> bool {
    let n = |s: &str| s.parse::<u32>().ok();
    matches!(
        (n(y), n(mo), n(d)),
        (Some(1900..=2099), Some(1..=12), Some(1..=31))
    )
}

/// Lower-case, full-width punctuation folded, curly quotes straightened.
fn normalize(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '’' | '‘' => '\'',
            '，' => ',',
            '。' => '.',
            '？' => '?',
            '！' => '!',
            c => c,
        })
        .flat_map(char::to_lowercase)
        .collect()
}

fn is_ascii_phrase(p: &str) -> bool {
    p.is_ascii()
}

/// Does `phrase` occur in the message? ASCII phrases match whole words (one typo allowed in a
/// single word of 5+ letters); Chinese ones match as substrings.
fn matches_phrase(norm: &str, words: &[&str], phrase: &str) -> bool {
    if !is_ascii_phrase(phrase) {
        return norm.contains(phrase);
    }
    if phrase.contains(' ') {
        let pw: Vec<&str> = phrase.split(' ').collect();
        return words.windows(pw.len()).any(|w| w == pw.as_slice());
    }
    words.iter().any(|w| {
        *w == phrase
            // A plural ("frauds", "scammers") is the same complaint.
            || w.strip_suffix('s') == Some(phrase)
            // One typo only in longer words: "treat" must not read as "great".
            || (phrase.len() >= 6 && w.len() + 1 >= phrase.len() && within_one_edit(w, phrase))
    })
}

pub use crate::text::within_one_edit;

fn is_question(norm: &str, words: &[&str]) -> bool {
    asks_question(norm, words) || WANT_MARKERS_ZH.iter().any(|p| norm.contains(p))
}

/// [`is_question`] without the words that ask us to do something: a question mark, a
/// question word, a yes/no form.
fn asks_question(norm: &str, words: &[&str]) -> bool {
    norm.contains('?')
        || words.first().is_some_and(|w| QUESTION_OPENERS.contains(w))
        || QUESTION_MARKERS_ZH.iter().any(|p| norm.contains(p))
        || chinese_yes_no(norm)
}

/// The two Chinese yes/no forms without 吗: A-not-A (是不是, 有没有, 好不好, 可不可以) and a
/// sentence ending in 不 / 没 / 没有 ("是有机的不", "能退不", "发货了没").
fn chinese_yes_no(norm: &str) -> bool {
    let end = norm
        .trim_end_matches(|c: char| {
            c.is_whitespace() || c.is_ascii_punctuation() || "啊呀呢哈啦嘛么～~…".contains(c)
        })
        .trim_end_matches('有');
    // "不不不" is a refusal, not a question.
    let mut last = end.chars().rev();
    let tag = matches!(last.next(), Some('不' | '没'))
        && last
            .next()
            .is_some_and(|c| crate::text::is_cjk(c) && !matches!(c, '不' | '没'));
    tag || crate::text::zh::has_a_not_a(norm)
}

/// A question asking for information ("how long does a refund take", "退款多久到账"),
/// as opposed to "can I get my money back?", which asks for the money.
/// An information question with no word that asks us to act: "how long does a refund
/// take?" asks about refunds, "can you refund it?" asks for one.
fn asks_about_not_for(norm: &str, words: &[&str]) -> bool {
    info_question(norm, words)
        && !REQUEST_MARKERS
            .iter()
            .any(|p| matches_phrase(norm, words, p))
}

/// ASCII word runs of a normalised message ("我要refund" has the word "refund"); Chinese
/// phrases are matched as substrings.
pub(super) fn words_of(norm: &str) -> Vec<&str> {
    norm.split(|c: char| !(c.is_ascii_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .collect()
}

fn info_question(norm: &str, words: &[&str]) -> bool {
    const OPENERS: &[&str] = &[
        "how", "what", "what's", "whats", "when", "where", "why", "which", "is", "are", "does",
        "do", "will", "whats",
    ];
    const ZH: &[&str] = &[
        "多久", "怎么", "如何", "什么", "几天", "哪", "规则", "政策", "吗", "多少",
    ];
    const WH: &[&str] = &[
        "how", "what", "what's", "whats", "when", "where", "why", "which",
    ];
    // A question word anywhere ("if i delete my account what happens to my points"), or an
    // opener at the start of any clause ("ordering RM800 of tea to KL, will customs charge
    // me anything?").
    let clause_opener = norm
        .split([',', ';', '，', '；', '.', '。'])
        .filter_map(|c| {
            c.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '\''))
                .find(|w| !w.is_empty())
        })
        .any(|w| OPENERS.contains(&w));
    clause_opener || words.iter().any(|w| WH.contains(w)) || ZH.iter().any(|p| norm.contains(p))
}

/// Too short and too vague to search for: "ok", "hmm", "asdf", "嗯".
fn looks_like_other(norm: &str, words: &[&str]) -> bool {
    let cjk = norm.chars().filter(|&c| crate::text::is_cjk(c)).count();
    let content: Vec<&&str> = words
        .iter()
        .filter(|w| w.chars().all(|c| c.is_ascii_alphanumeric()) && w.len() > 1)
        .filter(|w| !crate::knowledge::analyze::is_stopword(w))
        .collect();
    cjk < 2 && content.len() < 2 && !norm.contains('?')
}

fn sentiment(norm: &str, words: &[&str], kind: IntentKind) -> Sentiment {
    let strong = STRONG_NEGATIVE
        .iter()
        .filter(|p| matches_phrase(norm, words, p))
        .count();
    let complaint = COMPLAINT
        .iter()
        .filter(|(p, _)| matches_phrase(norm, words, p))
        .map(|&(_, w)| w as usize)
        .sum::<usize>();
    let intense = INTENSIFIERS.iter().any(|p| matches_phrase(norm, words, p))
        || norm.matches('!').count() >= 2;
    if strong >= 1 && (complaint >= 2 || intense) || strong >= 2 || complaint >= 7 {
        Sentiment::VeryNegative
    } else if complaint >= 2 || strong >= 1 {
        Sentiment::Negative
    } else if kind == IntentKind::Praise {
        Sentiment::Positive
    } else {
        Sentiment::Neutral
    }
}

fn small_talk(norm: &str, words: &[&str]) -> Option<SmallTalk> {
    let stripped: String = norm
        .chars()
        .filter(|c| !c.is_ascii_punctuation() && !matches!(c, '~' | '～' | '、'))
        .collect::<String>()
        .trim()
        .to_string();
    if IDENTITY.iter().any(|p| norm.contains(p)) && stripped.chars().count() <= 40 {
        return Some(SmallTalk::Identity);
    }
    let short = words.len() <= 4 && stripped.chars().count() <= 12;
    if !short {
        return None;
    }
    let has = |list: &[&str]| {
        list.iter().any(|p| {
            stripped == *p
                || if p.is_ascii() {
                    matches_phrase(norm, words, p) && words.len() <= 3
                } else {
                    // "你好呀" and "在吗？" yes; "取消订阅后数据还在吗" no.
                    stripped.contains(p) && stripped.chars().count() <= p.chars().count() + 2
                }
        })
    };
    if has(THANKS) {
        Some(SmallTalk::Thanks)
    } else if has(BYE) {
        Some(SmallTalk::Bye)
    } else if has(HELLO) {
        Some(SmallTalk::Hello)
    } else {
        None
    }
}

/// See [`Intent::closing`]: a message of at most [`CLOSING_WORDS`] words that thanks, takes
/// leave or greets (the short lists or the longer ones), and asks nothing — no question mark,
/// no question word. A greeting asked as a question ("how is it going my friend") is the one
/// question that counts.
fn closing(norm: &str, words: &[&str]) -> Option<SmallTalk> {
    let cjk = norm.chars().filter(|&c| crate::text::is_cjk(c)).count();
    if words.len() > CLOSING_WORDS || cjk > CLOSING_CJK {
        return None;
    }
    let has = |lists: &[&[&str]]| {
        lists
            .iter()
            .flat_map(|l| l.iter())
            .any(|p| matches_phrase(norm, words, p))
    };
    if has(&[HELLO_LONG]) {
        return Some(SmallTalk::Hello);
    }
    // (`normalize` has made a full-width ？ a `?`: `asks_question` sees both.)
    let asks = asks_question(norm, words)
        || info_question(norm, words)
        || has(&[REQUEST_MARKERS, CLOSING_ASKS_ZH]);
    if asks {
        None
    } else if has(&[THANKS, THANKS_LONG]) {
        Some(SmallTalk::Thanks)
    } else if has(&[BYE, BYE_LONG]) {
        Some(SmallTalk::Bye)
    } else if has(&[HELLO]) {
        Some(SmallTalk::Hello)
    } else {
        None
    }
}

/// Word and character-bigram set, for example similarity.
fn grams(text: &str) -> HashSet<String> {
    let norm = normalize(text);
    let mut out: HashSet<String> = norm
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(String::from)
        .collect();
    let chars: Vec<char> = norm.chars().filter(|c| !c.is_whitespace()).collect();
    for w in chars.windows(2) {
        out.insert(w.iter().collect());
    }
    out
}

fn dice(a: &HashSet<String>, b: &HashSet<String>) -> f32 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    2.0 * a.intersection(b).count() as f32 / (a.len() + b.len()) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c() -> BuiltinClassifier {
        BuiltinClassifier::new(crate::config::ORDER_PATTERN, &[]).unwrap()
    }

    fn kind(t: &str) -> IntentKind {
        c().classify_sync(t).intent
    }

    #[test]
    fn intents_in_english_and_chinese() {
        for (t, k) in [
            (
                "I want a refund for order LM-20241105-0042",
                IntentKind::Refund,
            ),
            ("我要退款", IntentKind::Refund),
            ("pls refnud me", IntentKind::Refund),
            ("cancel my subscription", IntentKind::Cancel),
            ("i want to cancle my plan", IntentKind::Cancel),
            ("帮我取消订阅", IntentKind::Cancel),
            (
                "This is the worst service ever, totally unacceptable",
                IntentKind::Complaint,
            ),
            ("你们的服务太差了", IntentKind::Complaint),
            ("Thanks, that was really helpful!", IntentKind::Praise),
            ("太棒了，谢谢", IntentKind::Praise),
            ("How do I export my data?", IntentKind::Query),
            ("How long does a refund take?", IntentKind::Query),
            ("退款多久到账？", IntentKind::Query),
            ("can you cancel my subscription?", IntentKind::Cancel),
            ("我想退款，怎么操作？", IntentKind::Refund),
            ("怎么export数据", IntentKind::Query),
            ("my card has not arrived yet", IntentKind::Query),
            ("ok", IntentKind::Other),
            ("嗯", IntentKind::Other),
        ] {
            assert_eq!(kind(t), k, "{t}");
        }
    }

    #[test]
    fn order_numbers_and_needs_order_info() {
        let i = c().classify_sync("refund order LM-20241105-0042 please");
        assert_eq!(i.order.as_deref(), Some("LM-20241105-0042"));
        assert!(!i.needs_order_info);
        let i = c().classify_sync("I want my money back");
        assert!(i.needs_order_info);
        assert_eq!(
            c().classify_sync("订单号2024110500421234退款")
                .order
                .as_deref(),
            Some("2024110500421234")
        );
    }

    #[test]
    fn chinese_yes_no_questions_without_ma() {
        for q in [
            "你们白茶是有机的不",
            "没拆封的可以退不",
            "发货了没有",
            "是不是正品",
            "有没有小份的",
            "可不可以开发票",
            "这个咋回事",
            "礼盒里是啥",
        ] {
            assert!(is_question(&normalize(q), &[]), "{q}");
        }
        for s in ["茶叶收到了", "对不起", "不不不", "味道很好"] {
            assert!(!is_question(&normalize(s), &[]), "{s}");
        }
    }

    #[test]
    fn urgency_and_sentiment() {
        let i = c().classify_sync("This is a SCAM, I am furious, fix it immediately!!!");
        assert_eq!(i.intent, IntentKind::Complaint);
        assert_eq!(i.urgency, Urgency::High);
        assert_eq!(i.sentiment, Sentiment::VeryNegative);
        let i = c().classify_sync("a bit disappointed with the speed");
        assert_eq!(i.sentiment, Sentiment::Negative);
        assert_eq!(i.urgency, Urgency::Medium);
        assert_eq!(
            c().classify_sync("great, thanks").sentiment,
            Sentiment::Positive
        );
    }

    #[test]
    fn small_talk_is_recognized() {
        assert_eq!(c().classify_sync("hi").small_talk, Some(SmallTalk::Hello));
        assert_eq!(c().classify_sync("你好").small_talk, Some(SmallTalk::Hello));
        assert_eq!(
            c().classify_sync("thanks!").small_talk,
            Some(SmallTalk::Thanks)
        );
        assert_eq!(c().classify_sync("再见").small_talk, Some(SmallTalk::Bye));
        assert_eq!(
            c().classify_sync("hi, how do I reset my password?")
                .small_talk,
            None
        );
    }

    #[test]
    fn a_message_that_only_thanks_or_takes_leave_is_a_closing() {
        let closing = |t: &str| c().classify_sync(t).closing;
        for (t, want) in [
            (
                "thank you so much for sorting that out",
                Some(SmallTalk::Thanks),
            ),
            ("lovely chatting, take care", Some(SmallTalk::Bye)),
            (
                "that's all for today, have a great day",
                Some(SmallTalk::Bye),
            ),
            ("how is it going my friend", Some(SmallTalk::Hello)),
            ("辛苦了 问题都解决了", Some(SmallTalk::Thanks)),
            ("好的 那就先这样吧", Some(SmallTalk::Bye)),
            // Short small talk is a closing too.
            ("bye", Some(SmallTalk::Bye)),
            // Asking anything is not closing.
            ("thanks, and when will it ship?", None),
            ("take care of my order, what is the status", None),
            ("谢谢 顺便问下运费多少", None),
            ("thanks, please change the address to my office", None),
            ("谢谢 帮我改一下地址", None),
            // Nor business: an order number.
            ("thank you, order 20250612345678 please", None),
            // Nor a story with a farewell at the end.
            (
                "the box came open and half the tea spilled all over the porch, goodbye",
                None,
            ),
        ] {
            assert_eq!(closing(t), want, "{t}");
        }
    }

    #[test]
    fn operator_examples_vote() {
        let ex = vec![IntentExample {
            text: "my parcel never showed up".into(),
            intent: "complaint".into(),
        }];
        let c = BuiltinClassifier::new(r"\d{8}", &ex).unwrap();
        assert_eq!(
            c.classify_sync("my parcel never showed up!").intent,
            IntentKind::Complaint
        );
    }

    /// With the built-in examples' vote, as `kefu serve` runs by default.
    async fn voting() -> BuiltinClassifier {
        let n = Neighbours::build(
            Arc::new(crate::providers::builtin_embedder::BuiltinEmbedder::new()),
            &[],
            0.5,
        )
        .await
        .unwrap();
        c().with_neighbours(Arc::new(n))
    }

    #[tokio::test]
    async fn a_complaint_asked_as_a_question_is_still_a_complaint() {
        let c = voting().await;
        // No word of any intent: the examples' vote decides, at shares of 0.96–1.0. Raising
        // the bar for questions to 0.99 (to keep "is my data used to train your ai?", 0.94,
        // a question) lost the first two of these.
        for q in [
            "is it normal that my order still hasn't arrived after 3 weeks?",
            "为什么扣了我两次钱",
            "why does nobody ever answer my emails?",
            "为什么每次打电话都没人接？",
        ] {
            assert_eq!(
                c.classify_full(q).await.intent,
                IntentKind::Complaint,
                "{q}"
            );
        }
    }

    #[tokio::test]
    async fn the_vote_starts_a_refund_only_on_a_word_that_asks_for_one() {
        let c = voting().await;
        // Bayes leans refund on these (0.93, 0.98, 0.72) for words any intent uses.
        for q in [
            "I want to talk to your manager",
            "i want to know about tourist places for bangkok",
            // "have a" is in two refund examples and no other: a pair of function words.
            "have a good day",
            // With thanks around it the lexicon scores praise 1, which leaves the vote free
            // to override (both came out refunds); a closing is never made a refund, a
            // cancellation or a complaint.
            "thanks, have a nice day",
            "thank you for the help",
        ] {
            let kind = c.classify_full(q).await.intent;
            assert!(
                !matches!(kind, IntentKind::Refund | IntentKind::Cancel),
                "{q}: {kind:?}"
            );
        }
        // No word of the refund lexicon either, but 不想要了 / 退 are the examples' own.
        for q in [
            "礼盒不想要了 给我退了吧",
            "重复付款了两次 退一笔给我",
            // Wanting is asking: 想 made it read as a question the vote could not override.
            "上个月买的白茶 想退了",
        ] {
            assert_eq!(c.classify_full(q).await.intent, IntentKind::Refund, "{q}");
        }
    }

    #[tokio::test]
    async fn thanks_with_a_question_is_a_question() {
        let c = voting().await;
        for q in [
            "thanks, and can I pay by card?",
            "thank you! do you ship to Macau?",
            "谢谢，那可以开发票吗？",
        ] {
            assert_eq!(c.classify_sync(q).intent, IntentKind::Query, "{q}");
            assert_eq!(c.classify_full(q).await.intent, IntentKind::Query, "{q}");
        }
        // No word of thanks, but the built-in examples nearest to these are compliments on
        // the service, so the neighbours vote praise: a question is still not thanked.
        for q in ["客服一般多久回复", "企业版客服多久回复", "售后客服几点回复"]
        {
            assert_eq!(c.classify_full(q).await.intent, IntentKind::Query, "{q}");
        }
        for q in [
            "thanks a lot!",
            "thank you so much for the quick reply",
            "谢谢你们",
        ] {
            assert_eq!(c.classify_full(q).await.intent, IntentKind::Praise, "{q}");
        }
    }

    #[test]
    fn thanks_count_once() {
        // "thanks" is "thank" in the plural and one edit from it: two lexicon entries for
        // it made every thanks decisive (2), so a question after it was never a question.
        let (_, score) = c().lexicon("thanks, and how do I export?");
        assert_eq!(score, 1);
    }

    #[test]
    fn typo_distance() {
        assert!(within_one_edit("refnud", "refund"));
        assert!(within_one_edit("cancle", "cancel"));
        assert!(within_one_edit("refun", "refund"));
        assert!(!within_one_edit("fund", "refund"));
    }
}
