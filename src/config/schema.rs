//! The config schema. Every struct refuses unknown keys; every key has a default except the
//! credentials a channel cannot work without. README.md documents each key.

use std::path::PathBuf;

use adapters::Secret;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::knowledge::RetrievalMode;

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub server: ServerConfig,
    pub knowledge: KnowledgeConfig,
    pub providers: ProvidersConfig,
    pub intent: IntentConfig,
    pub handoff: HandoffConfig,
    pub quality: QualityConfig,
    pub replies: RepliesConfig,
    pub flows: FlowsConfig,
    pub delivery: DeliveryConfig,
    pub notify: Vec<NotifyConfig>,
    pub channels: Vec<ChannelConfig>,
    pub console: ConsoleConfig,
    /// People who may log in to the agent console (`GET /agent`).
    pub agents: Vec<AgentConfig>,
    /// Ready-made answers the console offers; `{order}`, `{customer}` and `{agent}` are
    /// filled in.
    pub canned_replies: Vec<CannedReply>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub data_dir: PathBuf,
    /// Largest request body accepted on any route, in bytes.
    pub max_body_bytes: usize,
    /// Largest customer message, in characters: the widget's longer ones are refused (400);
    /// on every channel the engine reads at most this many (the stored message stays whole).
    pub max_message_chars: usize,
    /// Bearer token for the agent JSON routes (automation), `/admin/*` and `/metrics`. Absent:
    /// `/admin/*` (and `/agent/api/*` while no `[[agents]]` exist) answer only direct loopback
    /// clients, and only same-site JSON requests (guard.rs).
    pub admin_token: Option<Secret>,
    /// Platform messages waiting in one conversation's queue; one more is answered 503 (the
    /// platform retries), before anything is written.
    pub queue_per_conversation: usize,
    /// On SIGTERM, how long to wait for the turns and deliveries in hand before flushing and
    /// exiting anyway (what is left stays in the inbox and outbox for the next start).
    pub shutdown_timeout_secs: u64,
    /// A store that cannot write for this long stops kefu with a non-zero exit status, so a
    /// supervisor restarts it; shorter failures answer 503 and recover by themselves.
    pub store_failure_exit_secs: u64,
    /// The absolute URL people reach kefu at (`https://support.example.com`), when that is not
    /// the listen address (a reverse proxy, a DNS name). Its host is accepted as `Host` and
    /// its origin as `Origin` on the agent and admin routes (the console's own origin behind a
    /// proxy); the console's deep links in handoff notices are built on it; https makes the
    /// session cookie `Secure`.
    pub public_url: Option<String>,
    /// Serve `/metrics` without the admin token even when one is set.
    pub metrics_public: bool,
    /// Hosts a URL that arrives in a request may point at (DingTalk's `sessionWebhook`):
    /// host names, IP addresses or `*.domain`. A DingTalk channel's own
    /// `allowed_webhook_hosts` replaces this list for that channel.
    pub allowed_webhook_hosts: Vec<String>,
    /// A request's head must arrive within this; a kept-alive connection waiting this long
    /// for its next request is closed too.
    pub header_read_timeout_ms: u64,
    /// A request body or a response that makes no progress for this long ends the connection.
    pub idle_timeout_ms: u64,
    /// Open connections at most; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Token bucket for `POST /api/chat` per client IP (`per_minute = 0`: off).
    pub chat_rate_per_ip: RateLimitConfig,
    /// Token bucket for `POST /api/chat` per widget session (`per_minute = 0`: off).
    pub chat_rate_per_session: RateLimitConfig,
    /// Behind a reverse proxy: the header it puts the client's IP in (`X-Real-IP`, or
    /// `X-Forwarded-For`, whose last entry is used). Unset: the TCP peer's address.
    pub client_ip_header: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            max_body_bytes: 64 * 1024,
            max_message_chars: 4000,
            admin_token: None,
            public_url: None,
            metrics_public: false,
            allowed_webhook_hosts: vec![adapters::hosts::DINGTALK_HOSTS.to_string()],
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            max_connections: 1024,
            chat_rate_per_ip: RateLimitConfig {
                per_minute: 60,
                burst: 20,
            },
            chat_rate_per_session: RateLimitConfig {
                per_minute: 20,
                burst: 8,
            },
            client_ip_header: None,
            queue_per_conversation: 64,
            shutdown_timeout_secs: 20,
            store_failure_exit_secs: 30,
        }
    }
}

/// The outbox: when a reply is given up on (it becomes a dead letter agents can see).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Failed attempts after which a reply becomes a dead letter.
    pub max_attempts: u32,
    /// A reply still failing this long after it was queued becomes a dead letter.
    pub max_age_secs: u64,
    /// The longest a platform's `Retry-After` (or rate limit) may hold a conversation's
    /// replies before the next attempt.
    pub max_retry_after_secs: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            // With the backoff (1 s doubling to 5 min), 15 attempts span about 40 minutes.
            max_attempts: 15,
            max_age_secs: 3600,
            max_retry_after_secs: 300,
        }
    }
}

/// A token bucket: `burst` requests at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub per_minute: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnowledgeConfig {
    pub paths: Vec<PathBuf>,
    pub top_k: usize,
    pub min_score: f32,
    pub retrieval: RetrievalMode,
    /// Categories (first folder level, or an FAQ entry's `category`) that hold the shop's
    /// rules: a complaint is answered from them first.
    pub policy_categories: Vec<String>,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        KnowledgeConfig {
            paths: vec![PathBuf::from("knowledge")],
            top_k: 5,
            // The calibrated probability that a hit answers the question (knowledge/search.rs);
            // See RECOMMENDED_MIN_SCORE for how 0.55 was chosen.
            min_score: crate::knowledge::RECOMMENDED_MIN_SCORE,
            retrieval: RetrievalMode::Hybrid,
            // The seed's layout (INTERFACES: product/, faq/, policies/, guides/).
            policy_categories: vec!["policies".to_string()],
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ProvidersConfig {
    pub embedding: Option<EmbeddingConfig>,
    pub chat: Option<ChatConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    #[default]
    Builtin,
    Openai,
    Local,
}

/// The built-in share of a local model's blended cosine when `builtin_weight` is unset and
/// the model is English-only (it cannot embed the Chinese probe sentences): the small
/// English model reads paraphrases, the built-in n-grams read Chinese and typos. A
/// multilingual model is not blended unless asked (see app.rs).
pub const DEFAULT_LOCAL_BUILTIN_WEIGHT: f32 = 0.3;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingConfig {
    #[serde(default)]
    pub kind: ProviderKind,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Vector dimension the model returns (checked against its answers).
    #[serde(default)]
    pub dim: Option<usize>,
    /// `kind = "local"`: the model directory.
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
    /// Share of the built-in hashed embedder blended into the model's cosine (0 = the model
    /// alone; see providers/blend.rs). Unset: [`DEFAULT_LOCAL_BUILTIN_WEIGHT`] for
    /// `kind = "local"` with an English-only model, 0 for a multilingual one and for
    /// `kind = "openai"`.
    #[serde(default)]
    pub builtin_weight: Option<f32>,
    /// `kind = "local"`: the prefix put before a customer's question (and the knowledge's
    /// questions and headings) when it is embedded, and before a knowledge passage. Unset:
    /// what the model directory's `config_sentence_transformers.json` says (`prompts`;
    /// multilingual-e5: `query: ` / `passage: `), else none.
    #[serde(default)]
    pub query_prefix: Option<String>,
    #[serde(default)]
    pub passage_prefix: Option<String>,
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Retries of one batch on 429 / 5xx / network errors, with backoff.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// Azure OpenAI: the `api-version` query parameter; setting it also switches the auth
    /// header to `api-key` (as does a base_url on `openai.azure.com`).
    #[serde(default)]
    pub api_version: Option<String>,
    /// Circuit breaker: after this many failed calls in a row, fail fast for
    /// `breaker_cooldown_ms`, then let one call through to probe.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    #[serde(default = "default_breaker_cooldown_ms")]
    pub breaker_cooldown_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatConfig {
    #[serde(default)]
    pub kind: ProviderKind,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub api_key: Option<Secret>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// The system prompt; absent = the built-in answer rules.
    #[serde(default)]
    pub prompt: Option<String>,
    /// `builtin` | `llm` | `llm_with_fallback` intent classification.
    #[serde(default)]
    pub intent: IntentMode,
    /// Ask for a streamed (SSE) completion; the answer is still checked whole before it
    /// leaves. `false` for servers without streaming.
    #[serde(default = "yes")]
    pub stream: bool,
    /// Azure OpenAI: the `api-version` query parameter (also switches to the `api-key` header).
    #[serde(default)]
    pub api_version: Option<String>,
    /// Circuit breaker: after this many failed calls in a row, fail fast (built-in answer) for
    /// `breaker_cooldown_ms`, then let one call through to probe.
    #[serde(default = "default_breaker_failures")]
    pub breaker_failures: u32,
    #[serde(default = "default_breaker_cooldown_ms")]
    pub breaker_cooldown_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IntentMode {
    #[default]
    Builtin,
    Llm,
    LlmWithFallback,
}

fn default_batch() -> usize {
    32
}
fn default_timeout_ms() -> u64 {
    15_000
}
fn default_retries() -> u32 {
    2
}
fn default_breaker_failures() -> u32 {
    5
}
fn default_breaker_cooldown_ms() -> u64 {
    30_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IntentConfig {
    /// Regex that finds an order number in a message: capture group 1 when the pattern has
    /// one, else the whole match.
    pub order_pattern: String,
    /// What `other` messages get: `clarify` (ask what they need) or `handoff`.
    pub other: OtherRoute,
    /// Operator examples: nearest-example voting on top of the built-in lexicons.
    pub examples: Vec<IntentExample>,
    /// Share (0..1) of the examples' intent vote given to the nearest examples by the
    /// configured sentence model; the rest is naive Bayes over their words. 0 (the default):
    /// words only, which classified qingshan's messages better with multilingual-e5-small
    /// and all-MiniLM-L6-v2 alike (see README). Ignored with the built-in embedder.
    pub neighbour_weight: f32,
}

/// The built-in order-number pattern: a run of 6–24 letters, digits, `-` and `_`, not
/// inside a longer word or number. Group 1 is the number. With this pattern kefu also
/// requires 6+ digits and rejects phone numbers and dates (see `engine::intent`), so it finds
/// `QS202411050042`, `LM-20241105-0042`, `12345678901234` and `#A1B2C3-884422`, but not
/// `13812345678`, `20241105` or `iphone15`. Shops set `intent.order_pattern` to their own.
pub const ORDER_PATTERN: &str =
    r"(?i)(?:^|[^A-Za-z0-9_-])([A-Za-z0-9][A-Za-z0-9_-]{4,22}[A-Za-z0-9])(?:$|[^A-Za-z0-9_-])";

impl Default for IntentConfig {
    fn default() -> Self {
        IntentConfig {
            order_pattern: ORDER_PATTERN.into(),
            other: OtherRoute::Clarify,
            examples: Vec::new(),
            neighbour_weight: 0.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OtherRoute {
    #[default]
    Clarify,
    Handoff,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentExample {
    pub text: String,
    pub intent: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HandoffConfig {
    pub min_confidence: f32,
    pub max_unresolved_turns: u32,
    pub keywords: Vec<String>,
    /// Phrases that ask for a human ("转人工", "talk to a human"); added to the built-in ones.
    pub human_phrases: Vec<String>,
    pub complaint_high_urgency: bool,
    pub very_negative: bool,
    /// What the customer reads when the bot hands over.
    pub message: String,
    /// The same for customers writing Chinese.
    pub message_zh: String,
    /// Where handoff alerts go: names of `[[notify]]` targets.
    pub notify: Vec<String>,
    /// Non-text messages (images, files, locations, …) go to a human instead of getting the
    /// `replies.non_text` answer.
    pub non_text: bool,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        HandoffConfig {
            // The answer's confidence is its best hit's calibrated score: the same threshold.
            min_confidence: crate::knowledge::RECOMMENDED_MIN_SCORE,
            max_unresolved_turns: 5,
            keywords: [
                "lawsuit",
                "sue",
                "lawyer",
                "media",
                "投诉",
                "起诉",
                "律师",
                "媒体曝光",
                "人工",
            ]
            .map(String::from)
            .to_vec(),
            human_phrases: Vec::new(),
            complaint_high_urgency: true,
            very_negative: true,
            message: "I need to transfer you to a human agent for this issue.".into(),
            message_zh: "这个问题需要为您转接人工客服，请稍候。".into(),
            notify: Vec::new(),
            non_text: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SensitiveAction {
    #[default]
    Mask,
    Block,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QualityConfig {
    /// Words that must not pass in either direction.
    pub sensitive_words: Vec<String>,
    /// Files with one sensitive word a line, added to `sensitive_words`.
    pub sensitive_word_files: Vec<PathBuf>,
    /// `mask` replaces them with `*`; `block` refuses the message (inbound: hand over,
    /// outbound: fall back).
    pub sensitive_action: SensitiveAction,
    /// Mask phone numbers, Chinese ID numbers and bank card numbers in outbound text.
    pub mask_pii: bool,
    /// Phrases an answer must never contain ("guaranteed refund", "保证退款"...).
    pub forbidden_promises: Vec<String>,
}

impl Default for QualityConfig {
    fn default() -> Self {
        QualityConfig {
            sensitive_words: Vec::new(),
            sensitive_word_files: Vec::new(),
            sensitive_action: SensitiveAction::Mask,
            mask_pii: true,
            forbidden_promises: [
                "guaranteed refund",
                "guarantee a refund",
                "100% refund",
                "we guarantee",
                "保证退款",
                "一定退款",
                "百分之百",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// The bot's fixed sentences. English and Chinese; the engine picks by the customer's language.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RepliesConfig {
    pub greeting: LocalizedText,
    /// The answer to "are you a bot?".
    pub identity: LocalizedText,
    pub clarify: LocalizedText,
    pub thanks: LocalizedText,
    pub empathy: LocalizedText,
    pub goodbye: LocalizedText,
    pub non_text: LocalizedText,
    pub fallback: LocalizedText,
    pub handed_off: LocalizedText,
    /// Put before an answer quoted from knowledge written in the other language (a Chinese
    /// customer answered from an English page, or the reverse), in the customer's language.
    pub other_language: LocalizedText,
    /// Refund / cancel flow. Placeholders: `{what}` (`refund_what` / `cancel_what`),
    /// `{order}` (the order number), `{hint}` (`order_hint`, may be empty).
    pub ask_order: LocalizedText,
    /// Where the customer finds the order number, with an example of the shop's format
    /// ("It looks like QS202411050042 and is in your confirmation SMS."). Empty by default:
    /// kefu knows nothing of a shop's order numbers unless told.
    pub order_hint: LocalizedText,
    pub confirm: LocalizedText,
    /// The request was submitted (`flows.action = "http"` answered without a message).
    pub done: LocalizedText,
    /// The request was noted for a human to finish (`flows.action = "handoff"`).
    pub noted: LocalizedText,
    /// The customer said the order number is not the right one.
    pub declined: LocalizedText,
    /// The customer dropped the request ("never mind", "算了").
    pub dropped: LocalizedText,
    pub refund_what: LocalizedText,
    pub cancel_what: LocalizedText,
    /// A complaint with nothing in the knowledge about it: ask what happened (`{hint}` as
    /// above when the complaint is about an order).
    pub complaint_ask: LocalizedText,
    pub complaint_ask_order: LocalizedText,
    /// A message too vague to search ("this one?", "hmm", "嗯…"): ask what they need.
    pub vague: LocalizedText,
    /// Said before a handoff for a safety problem (smoke, fire, gas, shock, injury).
    pub safety: LocalizedText,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LocalizedText {
    pub en: String,
    pub zh: String,
}

impl LocalizedText {
    pub fn new(en: &str, zh: &str) -> Self {
        LocalizedText {
            en: en.into(),
            zh: zh.into(),
        }
    }
    pub fn get(&self, zh: bool) -> &str {
        if zh {
            &self.zh
        } else {
            &self.en
        }
    }
}

impl Default for RepliesConfig {
    fn default() -> Self {
        RepliesConfig {
            greeting: LocalizedText::new(
                "Hello! I'm the support assistant. Ask me about our product, plans, billing or your orders.",
                "您好！我是智能客服，可以回答产品、套餐、账单和订单相关的问题。",
            ),
            identity: LocalizedText::new(
                "I'm a virtual assistant: I answer from our help center, and I can bring in a human agent whenever you ask.",
                "我是智能客服助手，会根据帮助中心的内容回答您的问题；需要时也可以随时为您转接人工客服。",
            ),
            clarify: LocalizedText::new(
                "Sorry, I'm not sure I understood. Could you tell me a bit more about what you need?",
                "抱歉，我没太明白您的意思，能再具体描述一下您的问题吗？",
            ),
            thanks: LocalizedText::new(
                "Thank you for the kind words! I'm glad I could help.",
                "感谢您的认可！很高兴能帮到您。",
            ),
            empathy: LocalizedText::new(
                "I'm sorry about this experience, and I understand your frustration.",
                "非常抱歉给您带来了不好的体验，我理解您的心情。",
            ),
            goodbye: LocalizedText::new(
                "Thanks for reaching out. Have a great day!",
                "感谢您的咨询，祝您生活愉快！",
            ),
            non_text: LocalizedText::new(
                "I can only read text messages for now. Could you describe it in words?",
                "目前我只能处理文字消息，麻烦您用文字描述一下问题。",
            ),
            fallback: LocalizedText::new(
                "Sorry, I can't answer that reliably right now. Let me get a human agent to help.",
                "抱歉，这个问题我暂时无法准确回答，我来为您转接人工客服。",
            ),
            handed_off: LocalizedText::new(
                "A human agent will reply here shortly.",
                "已为您转接人工客服，请稍候。",
            ),
            other_language: LocalizedText::new(
                "From our Chinese help pages:",
                "以下内容摘自我们的英文资料：",
            ),
            ask_order: LocalizedText::new(
                "I can help you with {what}. Could you give me your order number?{hint}",
                "我可以帮您办理{what}。请提供您的订单号。{hint}",
            ),
            order_hint: LocalizedText::new("", ""),
            confirm: LocalizedText::new(
                "To confirm: you'd like {what} for order {order}. Is that right? (yes / no)",
                "请确认：您要为订单 {order} 申请{what}，对吗？（是 / 否）",
            ),
            done: LocalizedText::new(
                "Your request for {what} on order {order} has been submitted.",
                "订单 {order} 的{what}申请已提交。",
            ),
            noted: LocalizedText::new(
                "I've noted your request for {what} on order {order}.",
                "已记录订单 {order} 的{what}申请。",
            ),
            declined: LocalizedText::new(
                "No problem. Which order number should I use?{hint}",
                "好的，请告诉我正确的订单号。{hint}",
            ),
            dropped: LocalizedText::new(
                "Okay, I've dropped that request. Anything else I can help with?",
                "好的，已为您取消本次申请。还有其他可以帮您的吗？",
            ),
            refund_what: LocalizedText::new("a refund", "退款"),
            cancel_what: LocalizedText::new("a cancellation", "取消"),
            complaint_ask: LocalizedText::new(
                "Could you tell me a bit more about what happened? I'll do my best to sort it out.",
                "能具体说说发生了什么吗？我会尽力帮您解决。",
            ),
            complaint_ask_order: LocalizedText::new(
                "Could you tell me what happened, and the order number it concerns?{hint}",
                "能告诉我具体发生了什么，以及相关的订单号吗？{hint}",
            ),
            vague: LocalizedText::new(
                "Sorry, I'm not sure what you mean. Could you tell me which product or order it's about, and what you'd like to know?",
                "不好意思，我没太明白。您能具体说说是哪个商品或订单，想了解什么吗？",
            ),
            safety: LocalizedText::new(
                "Your safety comes first: please stop using the product, keep away from it and call the emergency services if anyone is in danger.",
                "您的安全最重要：请立即停止使用该产品并远离它，如有人身危险请立即拨打急救或报警电话。",
            ),
        }
    }
}

/// Business flows: refund and cancellation, run through the `BusinessActions` seam.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    /// `handoff`: a human finishes the request with the collected details (default);
    /// `http`: POST the request to `action_url`.
    pub action: ActionKind,
    pub action_url: Option<String>,
    pub action_token: Option<Secret>,
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig {
            action: ActionKind::Handoff,
            action_url: None,
            action_token: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    #[default]
    Handoff,
    Http,
}

/// The agent console: logins and their limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// How long a login lasts.
    pub session_hours: u32,
    /// Wrong passwords for one agent id within `login_window_minutes` before its logins pause.
    pub login_failures: u32,
    /// Wrong passwords from one client address (`server.client_ip_header` behind a proxy,
    /// else the peer; IPv6 by /64) within the window before its logins pause. Behind a proxy
    /// without `client_ip_header` every client has the proxy's address: keep it well above
    /// `login_failures`.
    pub login_failures_per_ip: u32,
    pub login_window_minutes: u32,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            session_hours: 12,
            login_failures: 5,
            login_failures_per_ip: 30,
            login_window_minutes: 15,
        }
    }
}

/// One human agent who can log in to the console.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The login name; also what the queue shows as the claimer.
    pub id: String,
    /// The name customers' conversations show (and `{agent}` in canned replies).
    pub name: String,
    /// argon2id PHC string, as `kefu hash-password` prints it.
    pub password_hash: Secret,
}

/// A ready-made answer in the console.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CannedReply {
    pub title: String,
    pub text: String,
}

/// The placeholders canned replies may use; the console fills them in.
pub const CANNED_PLACEHOLDERS: &[&str] = &["order", "customer", "agent"];

/// A place handoff alerts go to: a WeCom group robot or a DingTalk custom robot.
#[derive(Debug, Clone)]
pub enum NotifyConfig {
    WeComRobot(WeComRobotConfig),
    DingTalkRobot(DingTalkRobotConfig),
}

impl NotifyConfig {
    pub fn name(&self) -> &str {
        match self {
            NotifyConfig::WeComRobot(c) => &c.name,
            NotifyConfig::DingTalkRobot(c) => &c.name,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeComRobotConfig {
    pub name: String,
    pub key: Secret,
    #[serde(default = "default_wecom_base")]
    pub api_base: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DingTalkRobotConfig {
    pub name: String,
    pub access_token: Secret,
    /// The robot's signing secret (加签), `SEC...`.
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default = "default_dingtalk_oapi")]
    pub api_base: String,
}

#[derive(Debug, Clone)]
pub enum ChannelConfig {
    Web(WebChannelConfig),
    WeCom(WeComChannelConfig),
    WeComKf(WeComKfChannelConfig),
    DingTalk(DingTalkChannelConfig),
}

impl ChannelConfig {
    pub fn name(&self) -> &str {
        match self {
            ChannelConfig::Web(c) => &c.name,
            ChannelConfig::WeCom(c) => &c.name,
            ChannelConfig::WeComKf(c) => &c.name,
            ChannelConfig::DingTalk(c) => &c.name,
        }
    }
    pub fn kind(&self) -> adapters::ChannelKind {
        match self {
            ChannelConfig::Web(_) => adapters::ChannelKind::Web,
            ChannelConfig::WeCom(_) => adapters::ChannelKind::WeCom,
            ChannelConfig::WeComKf(_) => adapters::ChannelKind::WeComKf,
            ChannelConfig::DingTalk(_) => adapters::ChannelKind::DingTalk,
        }
    }
}

/// The web channel a config without `channels` gets (the embedded default's name).
pub const DEFAULT_WEB_CHANNEL: &str = "site";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebChannelConfig {
    pub name: String,
    /// Origins (scheme://host[:port]) whose pages may call `/api/chat`; `*` allows any.
    /// Same-origin requests are always allowed.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Hosts the widget may render links to besides those in the knowledge
    /// (`help.example.com`, or `*.example.com` for its subdomains). A link to any other host
    /// in an answer or an agent's message is shown as plain text.
    #[serde(default)]
    pub link_hosts: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeComChannelConfig {
    pub name: String,
    pub corp_id: String,
    pub agent_id: i64,
    pub secret: Secret,
    pub token: Secret,
    pub encoding_aes_key: Secret,
    #[serde(default = "default_wecom_base")]
    pub api_base: String,
    /// Send replies as WeCom markdown (renders in the WeCom client only, not in WeChat).
    #[serde(default)]
    pub markdown: bool,
    /// Greet when a user opens the app (`enter_agent` event).
    #[serde(default = "yes")]
    pub greet_on_enter: bool,
    /// Refuse (401) a callback whose `timestamp` is further than this from now, either way:
    /// a captured callback must not replay once its MsgId has left the 24 h dedupe memory.
    /// 0 turns the check off (WeCom itself defines no window).
    #[serde(default = "default_wecom_timestamp_window_ms")]
    pub timestamp_window_ms: u64,
    /// This app manages WeCom kf accounts (微信客服 → API → 企业内部开发, "mode B"): kf
    /// notifications arrive on its callback URL and its secret calls the kf API. The kf keys
    /// below apply only with `kf = true`.
    #[serde(default)]
    pub kf: bool,
    #[serde(default)]
    pub open_kfids: Option<Vec<String>>,
    #[serde(default)]
    pub human_servicers: Option<Vec<String>>,
    #[serde(default)]
    pub welcome: Option<bool>,
    #[serde(default)]
    pub platform_handoff: Option<bool>,
    #[serde(default)]
    pub backlog_reply_secs: Option<u64>,
    #[serde(default)]
    pub poll_secs: Option<u64>,
}

impl WeComChannelConfig {
    /// The kf behaviour when the app manages kf accounts (`kf = true`).
    pub fn kf_settings(&self) -> Option<KfSettings> {
        let d = KfSettings::default();
        self.kf.then(|| KfSettings {
            open_kfids: self.open_kfids.clone(),
            human_servicers: self.human_servicers.clone().unwrap_or_default(),
            welcome: self.welcome.unwrap_or(d.welcome),
            platform_handoff: self.platform_handoff.unwrap_or(d.platform_handoff),
            backlog_reply_secs: self.backlog_reply_secs.unwrap_or(d.backlog_reply_secs),
            poll_secs: self.poll_secs.unwrap_or(d.poll_secs),
        })
    }

    /// The kf keys set on this app, by name (refused without `kf = true`).
    pub fn kf_keys_set(&self) -> Vec<&'static str> {
        [
            ("open_kfids", self.open_kfids.is_some()),
            ("human_servicers", self.human_servicers.is_some()),
            ("welcome", self.welcome.is_some()),
            ("platform_handoff", self.platform_handoff.is_some()),
            ("backlog_reply_secs", self.backlog_reply_secs.is_some()),
            ("poll_secs", self.poll_secs.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect()
    }
}

/// WeCom Customer Service (微信客服) managed in the kf admin console ("mode A"): its own
/// callback URL, Token, EncodingAESKey and 微信客服 Secret (wecom-kf.md §1).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeComKfChannelConfig {
    pub name: String,
    pub corp_id: String,
    /// The 微信客服 Secret (kf admin → 开发配置), or the managing app's Secret.
    pub secret: Secret,
    pub token: Secret,
    pub encoding_aes_key: Secret,
    #[serde(default = "default_wecom_base")]
    pub api_base: String,
    /// The kf accounts (`wk…`) to answer; absent: every account that notifies.
    #[serde(default)]
    pub open_kfids: Option<Vec<String>>,
    /// Servicers (WeCom userids) a handoff goes to, first receiving one wins; empty or none
    /// receiving: the account's pool.
    #[serde(default)]
    pub human_servicers: Vec<String>,
    /// Greet a customer entering the session (with the platform's `welcome_code`).
    #[serde(default = "yes")]
    pub welcome: bool,
    /// A handoff moves the session to the account's servicers (`service_state/trans`);
    /// false: the session stays with the bot and kefu's agents answer through the agent API.
    #[serde(default = "yes")]
    pub platform_handoff: bool,
    /// After a sync without a cursor (first start, or the API refused the stored one),
    /// customer messages older than this are stored but not answered.
    #[serde(default = "default_backlog_reply_secs")]
    pub backlog_reply_secs: u64,
    /// Also sync every this many seconds without a notification (0: only when notified).
    #[serde(default)]
    pub poll_secs: u64,
    /// As for `kind = "wecom"`: refuse (401) a notification whose `timestamp` is further
    /// than this from now; 0 turns the check off.
    #[serde(default = "default_wecom_timestamp_window_ms")]
    pub timestamp_window_ms: u64,
}

impl WeComKfChannelConfig {
    pub fn kf_settings(&self) -> KfSettings {
        KfSettings {
            open_kfids: self.open_kfids.clone(),
            human_servicers: self.human_servicers.clone(),
            welcome: self.welcome,
            platform_handoff: self.platform_handoff,
            backlog_reply_secs: self.backlog_reply_secs,
            poll_secs: self.poll_secs,
        }
    }
}

/// How kefu runs kf accounts, whichever channel kind manages them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KfSettings {
    pub open_kfids: Option<Vec<String>>,
    pub human_servicers: Vec<String>,
    pub welcome: bool,
    pub platform_handoff: bool,
    pub backlog_reply_secs: u64,
    pub poll_secs: u64,
}

impl Default for KfSettings {
    fn default() -> Self {
        KfSettings {
            open_kfids: None,
            human_servicers: Vec::new(),
            welcome: true,
            platform_handoff: true,
            backlog_reply_secs: default_backlog_reply_secs(),
            poll_secs: 0,
        }
    }
}

fn default_backlog_reply_secs() -> u64 {
    600
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DingTalkMode {
    #[default]
    Http,
    Stream,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DingTalkChannelConfig {
    pub name: String,
    pub app_key: Secret,
    pub app_secret: Secret,
    pub robot_code: String,
    #[serde(default)]
    pub mode: DingTalkMode,
    #[serde(default = "default_dingtalk_base")]
    pub api_base: String,
    /// Reply with markdown (rendered by DingTalk) instead of plain text.
    #[serde(default = "yes")]
    pub markdown: bool,
    /// Hosts a callback's `sessionWebhook` may point at; absent = `server.allowed_webhook_hosts`.
    #[serde(default)]
    pub allowed_webhook_hosts: Option<Vec<String>>,
}

impl DingTalkChannelConfig {
    /// The sessionWebhook host patterns in force for this channel.
    pub fn webhook_hosts<'a>(&'a self, server: &'a ServerConfig) -> &'a [String] {
        self.allowed_webhook_hosts
            .as_deref()
            .unwrap_or(&server.allowed_webhook_hosts)
    }
}

fn yes() -> bool {
    true
}
fn default_wecom_base() -> String {
    "https://qyapi.weixin.qq.com".into()
}
fn default_dingtalk_base() -> String {
    "https://api.dingtalk.com".into()
}
/// One hour: WeCom retries within seconds; far below the 24 h dedupe memory.
pub const DEFAULT_WECOM_TIMESTAMP_WINDOW_MS: u64 = 3_600_000;
fn default_wecom_timestamp_window_ms() -> u64 {
    DEFAULT_WECOM_TIMESTAMP_WINDOW_MS
}
fn default_dingtalk_oapi() -> String {
    "https://oapi.dingtalk.com".into()
}

const SECTIONS: &[&str] = &[
    "server",
    "knowledge",
    "providers",
    "intent",
    "handoff",
    "quality",
    "replies",
    "flows",
    "delivery",
    "notify",
    "channels",
    "console",
    "agents",
    "canned_replies",
];

fn section<T: DeserializeOwned + Default>(
    table: &mut toml::Table,
    key: &str,
    err: &mut dyn FnMut(&str, String),
) -> T {
    optional(table, key, key, err).unwrap_or_default()
}

/// A table whose every field has a default: each bad key is reported on its own, the rest
/// kept (see lenient.rs).
fn optional<T: DeserializeOwned>(
    table: &mut toml::Table,
    key: &str,
    path: &str,
    err: &mut dyn FnMut(&str, String),
) -> Option<T> {
    match table.remove(key)? {
        toml::Value::Table(t) => lenient::all_defaults(t, path, err),
        other => match other.try_into::<T>() {
            Ok(t) => Some(t),
            Err(e) => {
                err(path, clean(&e));
                None
            }
        },
    }
}

use super::lenient::{self, clean};

/// One `[[channels]]` / `[[notify]]` element, deserialized by kind: the value when it
/// parsed (possibly after dropping unknown keys) and every error met on the way.
pub(super) struct Typed<T> {
    value: Option<T>,
    errors: Vec<(Option<&'static str>, String)>,
}

impl<T> Typed<T> {
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Typed<U> {
        Typed {
            value: self.value.map(f),
            errors: self.errors,
        }
    }

    /// A `kind` no variant has: reported on `path.kind`.
    fn unknown_kind(message: String) -> Self {
        Typed {
            value: None,
            errors: vec![(Some("kind"), message)],
        }
    }
}

fn typed<T: DeserializeOwned>(v: toml::Value) -> Typed<T> {
    let mut errors = Vec::new();
    let value = match v {
        toml::Value::Table(t) => lenient::with_required(t, "", &mut |_, m| errors.push((None, m))),
        other => match other.try_into::<T>() {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push((None, clean(&e)));
                None
            }
        },
    };
    Typed { value, errors }
}

/// Where the tables of an array of tables sat, for messages and for the checks between
/// tables: the file index of each element that parsed, and the `name` of each that did not
/// (a duplicate of it, or a reference to it, is still judged).
#[derive(Debug, Default)]
pub(super) struct ListOutline {
    pub parsed_index: Vec<usize>,
    pub unparsed_names: Vec<(usize, String)>,
}

impl ListOutline {
    /// The file index of the `i`-th parsed element.
    pub fn index(&self, i: usize) -> usize {
        self.parsed_index.get(i).copied().unwrap_or(i)
    }
}

/// The outlines of the arrays of tables.
#[derive(Debug, Default)]
pub(super) struct Outline {
    pub channels: ListOutline,
    pub notify: ListOutline,
    pub agents: ListOutline,
    pub canned_replies: ListOutline,
}

/// Take an array of tables tagged by `kind`, deserializing each element on its own.
fn tagged_list<T>(
    table: &mut toml::Table,
    key: &str,
    err: &mut dyn FnMut(&str, String),
    build: &dyn Fn(&str, toml::Value) -> Typed<T>,
    kinds: &str,
    outline: &mut ListOutline,
) -> Vec<T> {
    let Some(v) = table.remove(key) else {
        return Vec::new();
    };
    let toml::Value::Array(items) = v else {
        err(key, format!("must be an array of tables ([[{key}]])"));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let path = format!("{key}[{i}]");
        let toml::Value::Table(mut t) = item else {
            err(&path, "must be a table".into());
            continue;
        };
        let name = t.get("name").and_then(|n| n.as_str()).map(str::to_string);
        let unparsed = |outline: &mut ListOutline| {
            if let Some(n) = &name {
                outline.unparsed_names.push((i, n.clone()));
            }
        };
        let kind = match t.remove("kind") {
            Some(toml::Value::String(k)) => k,
            Some(_) => {
                err(
                    &format!("{path}.kind"),
                    format!("must be a string: {kinds}"),
                );
                unparsed(outline);
                continue;
            }
            None => {
                err(
                    &format!("{path}.kind"),
                    format!("missing; expected one of {kinds}"),
                );
                unparsed(outline);
                continue;
            }
        };
        let typed = build(&kind, toml::Value::Table(t));
        for (sub, m) in typed.errors {
            match sub {
                Some(sub) => err(&format!("{path}.{sub}"), m),
                None => err(&path, m),
            }
        }
        match typed.value {
            Some(x) => {
                out.push(x);
                outline.parsed_index.push(i);
            }
            None => unparsed(outline),
        }
    }
    out
}

/// Take an array of plain tables (`[[agents]]`, `[[canned_replies]]`), deserializing each
/// element on its own like the tagged lists: unknown keys reported and dropped, the rest
/// still read, and each parsed element's file index kept for messages.
fn plain_list<T: DeserializeOwned>(
    table: &mut toml::Table,
    key: &str,
    err: &mut dyn FnMut(&str, String),
    outline: &mut ListOutline,
) -> Vec<T> {
    let Some(v) = table.remove(key) else {
        return Vec::new();
    };
    let toml::Value::Array(items) = v else {
        err(key, format!("must be an array of tables ([[{key}]])"));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let path = format!("{key}[{i}]");
        let typed = typed::<T>(item);
        for (sub, m) in typed.errors {
            match sub {
                Some(sub) => err(&format!("{path}.{sub}"), m),
                None => err(&path, m),
            }
        }
        if let Some(x) = typed.value {
            out.push(x);
            outline.parsed_index.push(i);
        }
    }
    out
}

pub(super) fn deserialize(
    mut table: toml::Table,
    err: &mut dyn FnMut(&str, String),
) -> Option<(Config, Outline)> {
    let mut outline = Outline::default();
    let unknown: Vec<String> = table
        .keys()
        .filter(|k| !SECTIONS.contains(&k.as_str()))
        .cloned()
        .collect();
    for k in unknown {
        err(
            &k,
            format!("unknown section; expected one of {}", SECTIONS.join(", ")),
        );
    }
    let mut providers = ProvidersConfig::default();
    if let Some(v) = table.remove("providers") {
        match v {
            toml::Value::Table(mut p) => {
                providers.embedding = optional(&mut p, "embedding", "providers.embedding", err);
                providers.chat = optional(&mut p, "chat", "providers.chat", err);
                for k in p.keys() {
                    err(
                        &format!("providers.{k}"),
                        "unknown provider; expected embedding or chat".into(),
                    );
                }
            }
            _ => err("providers", "must be a table".into()),
        }
    }
    // A config without `channels` still serves the widget, as the embedded default does
    // (same-origin pages need no `allowed_origins`); `channels = []` turns it off.
    let default_channels = !table.contains_key("channels");
    let mut channels = tagged_list(
        &mut table,
        "channels",
        err,
        &|kind, v| match kind {
            "web" => typed(v).map(ChannelConfig::Web),
            "wecom" => typed(v).map(ChannelConfig::WeCom),
            "wecom_kf" => typed(v).map(ChannelConfig::WeComKf),
            "dingtalk" => typed(v).map(ChannelConfig::DingTalk),
            other => Typed::unknown_kind(format!(
                "unknown kind `{other}`; expected one of web, wecom, wecom_kf, dingtalk"
            )),
        },
        "web, wecom, wecom_kf, dingtalk",
        &mut outline.channels,
    );
    if default_channels {
        channels.push(ChannelConfig::Web(WebChannelConfig {
            name: DEFAULT_WEB_CHANNEL.into(),
            allowed_origins: Vec::new(),
            link_hosts: Vec::new(),
        }));
    }
    let notify = tagged_list(
        &mut table,
        "notify",
        err,
        &|kind, v| match kind {
            "wecom_robot" => typed(v).map(NotifyConfig::WeComRobot),
            "dingtalk_robot" => typed(v).map(NotifyConfig::DingTalkRobot),
            other => Typed::unknown_kind(format!(
                "unknown kind `{other}`; expected one of wecom_robot, dingtalk_robot"
            )),
        },
        "wecom_robot, dingtalk_robot",
        &mut outline.notify,
    );
    let agents = plain_list(&mut table, "agents", err, &mut outline.agents);
    let canned_replies = plain_list(
        &mut table,
        "canned_replies",
        err,
        &mut outline.canned_replies,
    );
    let config = Config {
        server: section(&mut table, "server", err),
        knowledge: section(&mut table, "knowledge", err),
        providers,
        intent: section(&mut table, "intent", err),
        handoff: section(&mut table, "handoff", err),
        quality: section(&mut table, "quality", err),
        replies: section(&mut table, "replies", err),
        flows: section(&mut table, "flows", err),
        delivery: section(&mut table, "delivery", err),
        notify,
        channels,
        console: section(&mut table, "console", err),
        agents,
        canned_replies,
    };
    Some((config, outline))
}
