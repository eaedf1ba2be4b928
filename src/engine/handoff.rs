//! When the bot must stop: the configurable handoff rules, and the summary an agent reads.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use super::intent::{Intent, IntentKind, Sentiment, Urgency};
use crate::config::HandoffConfig;
use crate::store::{Message, Role};

/// Ways customers ask for a person, built in; `handoff.human_phrases` adds more.
const HUMAN_PHRASES: &[&str] = &[
    "转人工",
    "人工客服",
    "人工服务",
    "找人工",
    "真人",
    "客服人员",
    "接人工",
    "人工坐席",
    "talk to a human",
    "speak to a human",
    "talk to a person",
    "speak to a person",
    "real person",
    "human agent",
    "live agent",
    "talk to an agent",
    "speak to an agent",
    "an agent please",
    "agent please",
    "customer service representative",
    "representative",
    "talk to someone",
    "speak to someone",
    "operator",
    "connect me to",
    "customer service staff",
    "support staff",
    "human being",
    "转接人工",
    "找客服",
    // Asking for someone above the bot, or for anyone but the bot.
    "your manager",
    "talk to a manager",
    "speak to a manager",
    "speak with a manager",
    "talk to the manager",
    "your supervisor",
    "talk to a supervisor",
    "speak to a supervisor",
    "someone in charge",
    "not a bot",
    "not a robot",
    "not the bot",
    "no more bot",
    "stop the bot",
    "get me an agent",
    "get me a human",
    "get me a person",
    "get me someone",
    // Whose boss: "送领导的礼盒" (a gift for my boss) asks for no one.
    "你们主管",
    "你们的主管",
    "客服主管",
    "找主管",
    "叫主管",
    "你们经理",
    "你们的经理",
    "找经理",
    "叫经理",
    "你们领导",
    "你们的领导",
    "找领导",
    "叫领导",
    "你们负责人",
    "你们的负责人",
    "找负责人",
    "叫负责人",
    "不要机器人",
    "别用机器人",
    "不跟机器人",
    "不想跟机器人",
    "不和机器人",
    "找个人",
    "找真人",
];

/// Why a conversation went to a human. The strings are stable: metrics and the agent queue
/// show them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Danger to someone's safety (smoke, gas, a shock, an injury): a person, at once.
    Safety,
    HumanRequested,
    Keyword,
    ComplaintUrgent,
    VeryNegative,
    LowConfidence,
    NoKnowledge,
    Unresolved,
    BusinessAction,
    Sensitive,
    Compliance,
    UpstreamFailure,
    /// A picture, file, location … and `handoff.non_text` is on.
    NonText,
    Other,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Safety => "safety",
            Reason::HumanRequested => "human_requested",
            Reason::Keyword => "keyword",
            Reason::ComplaintUrgent => "complaint_urgent",
            Reason::VeryNegative => "very_negative",
            Reason::LowConfidence => "low_confidence",
            Reason::NoKnowledge => "no_knowledge",
            Reason::Unresolved => "unresolved",
            Reason::BusinessAction => "business_action",
            Reason::Sensitive => "sensitive",
            Reason::Compliance => "compliance",
            Reason::UpstreamFailure => "upstream_failure",
            Reason::NonText => "non_text",
            Reason::Other => "other",
        }
    }
}

pub struct HandoffRules {
    cfg: HandoffConfig,
    human: AhoCorasick,
    keywords: Option<AhoCorasick>,
    ascii_keywords: Vec<String>,
}

impl HandoffRules {
    pub fn new(cfg: &HandoffConfig) -> anyhow::Result<Self> {
        let mut human: Vec<String> = HUMAN_PHRASES.iter().map(|s| s.to_string()).collect();
        human.extend(cfg.human_phrases.iter().map(|s| s.to_lowercase()));
        let human = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::LeftmostLongest)
            .build(&human)?;
        // ASCII keywords match whole words ("media" must not fire on "multimedia"), the
        // others as substrings.
        let (ascii, other): (Vec<String>, Vec<String>) = cfg
            .keywords
            .iter()
            .map(|k| k.trim().to_lowercase())
            .filter(|k| !k.is_empty())
            .partition(|k| k.is_ascii());
        let keywords = if other.is_empty() {
            None
        } else {
            Some(AhoCorasick::new(&other)?)
        };
        Ok(HandoffRules {
            cfg: cfg.clone(),
            human,
            keywords,
            ascii_keywords: ascii,
        })
    }

    pub fn config(&self) -> &HandoffConfig {
        &self.cfg
    }

    /// Rules decided by the message alone, before any answer is made.
    pub fn before_answer(&self, text: &str, intent: &Intent) -> Option<Reason> {
        if intent.hazard {
            return Some(Reason::Safety);
        }
        let lower = text.to_lowercase();
        if self.human.is_match(&lower) || is_bare_agent_request(&lower) {
            return Some(Reason::HumanRequested);
        }
        if self.keyword(&lower) {
            return Some(Reason::Keyword);
        }
        // An urgent complaint hands over whatever intent won: "a month and still no refund,
        // I'm done waiting" is a refund by its words and a complaint by its tone.
        if self.cfg.complaint_high_urgency
            && intent.urgency == Urgency::High
            && (intent.intent == IntentKind::Complaint
                || matches!(
                    intent.sentiment,
                    Sentiment::Negative | Sentiment::VeryNegative
                ))
        {
            return Some(Reason::ComplaintUrgent);
        }
        if self.cfg.very_negative && intent.sentiment == Sentiment::VeryNegative {
            return Some(Reason::VeryNegative);
        }
        None
    }

    /// Rules decided by the answer: confidence, then how long the customer has gone unhelped.
    pub fn after_answer(&self, confidence: f32, unresolved_turns: u32) -> Option<Reason> {
        if confidence < self.cfg.min_confidence {
            return Some(Reason::LowConfidence);
        }
        self.too_many_unresolved(unresolved_turns)
    }

    pub fn too_many_unresolved(&self, unresolved_turns: u32) -> Option<Reason> {
        (unresolved_turns > self.cfg.max_unresolved_turns).then_some(Reason::Unresolved)
    }

    fn keyword(&self, lower: &str) -> bool {
        // "人工智能" (AI) is not a request for a person, though it contains "人工".
        let lower = &lower.replace("人工智能", "智能");
        if self.keywords.as_ref().is_some_and(|k| k.is_match(lower)) {
            return true;
        }
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        self.ascii_keywords.iter().any(|k| {
            let kw: Vec<&str> = k.split(' ').collect();
            words.windows(kw.len()).any(|w| w == kw.as_slice())
        })
    }
}

/// "agent", "human", "人工" alone (or with please) is a request for a person.
fn is_bare_agent_request(lower: &str) -> bool {
    let t: String = lower
        .chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace() || !c.is_ascii())
        .collect::<String>()
        .replace("please", "")
        .replace("pls", "")
        .replace('请', "")
        .trim()
        .to_string();
    matches!(
        t.as_str(),
        "agent" | "human" | "a human" | "人工" | "客服" | "human please"
    )
}

/// What the agent reads first: why, what the customer wants, the order, the last messages.
pub fn summary(
    reason: Reason,
    wants: &str,
    intent: &Intent,
    order: Option<&str>,
    recent: &[Message],
) -> String {
    let mut s = format!(
        "reason: {}; intent: {}; urgency: {:?}; sentiment: {:?}",
        reason.as_str(),
        wants,
        intent.urgency,
        intent.sentiment
    )
    .to_lowercase();
    if let Some(o) = order {
        s.push_str(&format!("; order: {o}"));
    }
    s.push_str("\nlast messages:");
    for m in recent.iter().rev().take(6).rev() {
        let text: String = m.text.chars().take(200).collect();
        s.push_str(&format!("\n{}: {}", role_label(m.role), text));
    }
    s
}

fn role_label(r: Role) -> &'static str {
    match r {
        Role::User => "customer",
        Role::Bot => "bot",
        Role::Agent => "agent",
        Role::System => "system",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::intent::BuiltinClassifier;

    fn rules() -> HandoffRules {
        HandoffRules::new(&HandoffConfig::default()).unwrap()
    }

    fn classify(t: &str) -> Intent {
        BuiltinClassifier::new(r"\d{8,}", &[])
            .unwrap()
            .classify_sync(t)
    }

    #[test]
    fn explicit_requests_for_a_human() {
        for t in [
            "转人工",
            "我要人工客服",
            "Can I talk to a human?",
            "agent",
            "AGENT please",
            "I want to talk to your manager",
            "get me an agent, not a bot",
            "叫你们的客服主管来跟我说",
            "不要机器人，找真人",
        ] {
            assert_eq!(
                rules().before_answer(t, &classify(t)),
                Some(Reason::HumanRequested),
                "{t}"
            );
        }
        for t in [
            "what does the agent app do",
            "can I make a colleague a manager of the workspace",
            "人工智能能帮我写回复吗",
            "想送领导龙井礼盒 里面都有啥",
        ] {
            assert_eq!(rules().before_answer(t, &classify(t)), None, "{t}");
        }
    }

    #[test]
    fn safety_goes_first_in_both_languages() {
        for t in [
            "the kettle is smoking and there's a burning smell, how do I get a refund",
            "I smell gas after installing the burner",
            "水壶底座冒烟了，有焦味",
            "孩子被烫伤了，你们这个壶盖有问题",
        ] {
            let i = classify(t);
            assert_eq!(i.urgency, Urgency::High, "{t}");
            assert_eq!(rules().before_answer(t, &i), Some(Reason::Safety), "{t}");
        }
    }

    #[test]
    fn keywords_match_words_not_fragments() {
        let t = "I will go to the media with this";
        assert_eq!(
            rules().before_answer(t, &classify(t)),
            Some(Reason::Keyword)
        );
        let t = "does it support multimedia messages";
        assert_eq!(rules().before_answer(t, &classify(t)), None);
        let t = "我要投诉";
        assert_eq!(
            rules().before_answer(t, &classify(t)),
            Some(Reason::Keyword)
        );
    }

    #[test]
    fn urgent_complaints_and_very_negative() {
        let t = "This is unacceptable, fix it immediately!";
        assert_eq!(
            rules().before_answer(t, &classify(t)),
            Some(Reason::ComplaintUrgent)
        );
        let t = "you are scammers and frauds";
        assert!(rules().before_answer(t, &classify(t)).is_some());
        let t = "a little disappointed with the speed";
        assert_eq!(rules().before_answer(t, &classify(t)), None);
        let t = "太离谱了，赶紧给我解决！！";
        assert_eq!(
            rules().before_answer(t, &classify(t)),
            Some(Reason::ComplaintUrgent)
        );
        let t = "你们就是骗子";
        assert!(rules().before_answer(t, &classify(t)).is_some(), "{t}");
        let t = "有点慢，不过还行";
        assert_eq!(rules().before_answer(t, &classify(t)), None);
    }

    #[test]
    fn an_urgent_complaint_worded_as_a_refund_still_hands_over() {
        for t in [
            "a month and still no refund, this is ridiculous, refund me right now",
            "等了一个月还没退款，太过分了，马上给我退钱",
        ] {
            let i = classify(t);
            assert_eq!(i.urgency, Urgency::High, "{t}");
            assert_eq!(
                rules().before_answer(t, &i),
                Some(Reason::ComplaintUrgent),
                "{t}"
            );
        }
        // Urgent without any anger is a request, not a complaint.
        let t = "please cancel my subscription right away";
        assert_eq!(rules().before_answer(t, &classify(t)), None);
    }

    #[test]
    fn operator_keywords_in_both_languages() {
        let r = HandoffRules::new(&HandoffConfig {
            keywords: vec!["lawyer".into(), "律师".into()],
            ..HandoffConfig::default()
        })
        .unwrap();
        for t in ["my lawyer will hear about this", "我要找律师"] {
            assert_eq!(
                r.before_answer(t, &classify(t)),
                Some(Reason::Keyword),
                "{t}"
            );
        }
    }

    #[test]
    fn confidence_and_unresolved() {
        let r = rules();
        assert_eq!(r.after_answer(0.5, 0), Some(Reason::LowConfidence));
        assert_eq!(r.after_answer(0.9, 6), Some(Reason::Unresolved));
        assert_eq!(r.after_answer(0.9, 5), None);
    }
}
