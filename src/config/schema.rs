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
    pub notify: Vec<NotifyConfig>,
    pub channels: Vec<ChannelConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    pub data_dir: PathBuf,
    /// Largest request body accepted on any route, in bytes.
    pub max_body_bytes: usize,
    /// Largest customer message, in characters; longer ones are refused (widget) or cut.
    pub max_message_chars: usize,
    /// Bearer token for `/agent/*` and `/admin/*`. Absent: those routes answer only loopback.
    pub admin_token: Option<Secret>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data"),
            max_body_bytes: 64 * 1024,
            max_message_chars: 4000,
            admin_token: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnowledgeConfig {
    pub paths: Vec<PathBuf>,
    pub top_k: usize,
    pub min_score: f32,
    pub retrieval: RetrievalMode,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        KnowledgeConfig {
            paths: vec![PathBuf::from("knowledge")],
            top_k: 5,
            // The calibrated probability that a hit answers the question (knowledge/search.rs);
            // 0.6 was measured best on the public dev sets.
            min_score: crate::knowledge::RECOMMENDED_MIN_SCORE,
            retrieval: RetrievalMode::Hybrid,
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
}

/// LM-YYYYMMDD-NNNN or 8–20 digits, not inside a longer word or number. Group 1 is the number.
pub const ORDER_PATTERN: &str =
    r"(?i)(?:^|[^A-Za-z0-9-])(LM-\d{8}-\d{4}|\d{8,20})(?:$|[^A-Za-z0-9])";

impl Default for IntentConfig {
    fn default() -> Self {
        IntentConfig {
            order_pattern: ORDER_PATTERN.into(),
            other: OtherRoute::Clarify,
            examples: Vec::new(),
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
}

impl Default for HandoffConfig {
    fn default() -> Self {
        HandoffConfig {
            min_confidence: 0.6,
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
    DingTalk(DingTalkChannelConfig),
}

impl ChannelConfig {
    pub fn name(&self) -> &str {
        match self {
            ChannelConfig::Web(c) => &c.name,
            ChannelConfig::WeCom(c) => &c.name,
            ChannelConfig::DingTalk(c) => &c.name,
        }
    }
    pub fn kind(&self) -> adapters::ChannelKind {
        match self {
            ChannelConfig::Web(_) => adapters::ChannelKind::Web,
            ChannelConfig::WeCom(_) => adapters::ChannelKind::WeCom,
            ChannelConfig::DingTalk(_) => adapters::ChannelKind::DingTalk,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebChannelConfig {
    pub name: String,
    /// Origins (scheme://host[:port]) whose pages may call `/api/chat`; `*` allows any.
    /// Same-origin requests are always allowed.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
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
    "notify",
    "channels",
];

fn section<T: DeserializeOwned + Default>(
    table: &mut toml::Table,
    key: &str,
    err: &mut dyn FnMut(&str, String),
) -> T {
    match table.remove(key) {
        None => T::default(),
        Some(v) => match v.try_into::<T>() {
            Ok(t) => t,
            Err(e) => {
                err(key, clean(&e));
                T::default()
            }
        },
    }
}

fn optional<T: DeserializeOwned>(
    table: &mut toml::Table,
    key: &str,
    path: &str,
    err: &mut dyn FnMut(&str, String),
) -> Option<T> {
    table.remove(key).and_then(|v| match v.try_into::<T>() {
        Ok(t) => Some(t),
        Err(e) => {
            err(path, clean(&e));
            None
        }
    })
}

/// Serde's messages end in a newline and sometimes repeat the TOML snippet; keep one line.
fn clean(e: &toml::de::Error) -> String {
    e.message()
        .lines()
        .next()
        .unwrap_or("invalid value")
        .trim()
        .to_string()
}

/// Take an array of tables tagged by `kind`, deserializing each element on its own.
fn tagged_list<T>(
    table: &mut toml::Table,
    key: &str,
    err: &mut dyn FnMut(&str, String),
    build: &dyn Fn(&str, toml::Value) -> Result<T, String>,
    kinds: &str,
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
        let kind = match t.remove("kind") {
            Some(toml::Value::String(k)) => k,
            Some(_) => {
                err(
                    &format!("{path}.kind"),
                    format!("must be a string: {kinds}"),
                );
                continue;
            }
            None => {
                err(
                    &format!("{path}.kind"),
                    format!("missing; expected one of {kinds}"),
                );
                continue;
            }
        };
        match build(&kind, toml::Value::Table(t)) {
            Ok(x) => out.push(x),
            Err(m) if m.starts_with("unknown kind") => err(&format!("{path}.kind"), m),
            Err(m) => err(&path, m),
        }
    }
    out
}

fn typed<T: DeserializeOwned>(v: toml::Value) -> Result<T, String> {
    v.try_into::<T>().map_err(|e| clean(&e))
}

pub(super) fn deserialize(
    mut table: toml::Table,
    err: &mut dyn FnMut(&str, String),
) -> Option<Config> {
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
    let channels = tagged_list(
        &mut table,
        "channels",
        err,
        &|kind, v| match kind {
            "web" => typed(v).map(ChannelConfig::Web),
            "wecom" => typed(v).map(ChannelConfig::WeCom),
            "dingtalk" => typed(v).map(ChannelConfig::DingTalk),
            other => Err(format!(
                "unknown kind `{other}`; expected one of web, wecom, dingtalk"
            )),
        },
        "web, wecom, dingtalk",
    );
    let notify = tagged_list(
        &mut table,
        "notify",
        err,
        &|kind, v| match kind {
            "wecom_robot" => typed(v).map(NotifyConfig::WeComRobot),
            "dingtalk_robot" => typed(v).map(NotifyConfig::DingTalkRobot),
            other => Err(format!(
                "unknown kind `{other}`; expected one of wecom_robot, dingtalk_robot"
            )),
        },
        "wecom_robot, dingtalk_robot",
    );
    Some(Config {
        server: section(&mut table, "server", err),
        knowledge: section(&mut table, "knowledge", err),
        providers,
        intent: section(&mut table, "intent", err),
        handoff: section(&mut table, "handoff", err),
        quality: section(&mut table, "quality", err),
        replies: section(&mut table, "replies", err),
        flows: section(&mut table, "flows", err),
        notify,
        channels,
    })
}
