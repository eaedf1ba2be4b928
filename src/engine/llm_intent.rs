//! Intent from the chat model: it is asked for the seed's JSON
//! `{"intent","urgency","sentiment","needs_order_info"}` and the answer is validated strictly:
//! one JSON object (a ```json fence around it is tolerated), exactly those four keys, each value
//! from the vocabulary (`query|complaint|refund|cancel|praise|other`, `high|medium|low`,
//! `positive|neutral|negative|very_negative`, a JSON boolean). Anything else — malformed,
//! partial, extra keys, out of vocabulary, a timeout, the model down — is a failure.
//!
//! Per `providers.chat.intent`:
//! - `llm_with_fallback`: a failure is answered by the built-in classifier.
//! - `llm`: no built-in classification; a failure gives `other` / low urgency / neutral
//!   (the engine then clarifies or hands over as `intent.other` says), so a turn always has an
//!   intent.
//!
//! In both modes the order number still comes from `intent.order_pattern` (a regex, not a
//! classification); with `llm_with_fallback` small talk (hello / thanks / bye / "are you a
//! bot?") also comes from the built-in lexicons, so those keep their short answers.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::intent::{BuiltinClassifier, Intent, IntentClassifier, IntentKind, Sentiment, Urgency};
use crate::config::IntentMode;
use crate::metrics::Metrics;
use crate::providers::openai_chat::OpenAiChat;

const SYSTEM: &str = "You classify one customer-service message. Reply with only a JSON object, no other text, with exactly these keys:
{\"intent\": \"query\" | \"complaint\" | \"refund\" | \"cancel\" | \"praise\" | \"other\",
 \"urgency\": \"high\" | \"medium\" | \"low\",
 \"sentiment\": \"positive\" | \"neutral\" | \"negative\" | \"very_negative\",
 \"needs_order_info\": true | false}
needs_order_info is true when handling the request needs an order number.";

/// The model's JSON, exactly.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct LlmIntent {
    intent: IntentKind,
    urgency: Urgency,
    sentiment: Sentiment,
    needs_order_info: bool,
}

pub struct LlmClassifier {
    chat: Arc<OpenAiChat>,
    builtin: Arc<BuiltinClassifier>,
    fallback: bool,
    metrics: Arc<Metrics>,
}

impl LlmClassifier {
    /// `mode` is `Llm` or `LlmWithFallback` (`Builtin` means: don't build this).
    pub fn new(
        chat: Arc<OpenAiChat>,
        builtin: Arc<BuiltinClassifier>,
        mode: IntentMode,
        metrics: Arc<Metrics>,
    ) -> Self {
        LlmClassifier {
            chat,
            builtin,
            fallback: mode != IntentMode::Llm,
            metrics,
        }
    }

    async fn ask(&self, text: &str) -> Result<LlmIntent, String> {
        let messages = json!([
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": text},
        ]);
        let answer = self
            .chat
            .complete(messages, false, 100)
            .await
            .map_err(|e| e.to_string())?;
        parse(&answer)
    }
}

/// Strict parse of the model's answer.
fn parse(answer: &str) -> Result<LlmIntent, String> {
    let t = answer.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|r| r.trim_end().strip_suffix("```"))
        .unwrap_or(t)
        .trim();
    serde_json::from_str(t).map_err(|e| format!("malformed intent JSON: {e}"))
}

#[async_trait]
impl IntentClassifier for LlmClassifier {
    async fn classify(&self, text: &str) -> Intent {
        match self.ask(text).await {
            Ok(l) => {
                // Closing words are read on every path: they only keep a farewell the
                // knowledge has nothing for from going to a person.
                let b = self.builtin.classify_sync(text);
                let (order, closing) = (b.order, b.closing);
                let small_talk = b.small_talk.filter(|_| self.fallback);
                // Safety is never left to the model: the same words hand over on any path.
                let hazard = super::safety::is_hazard(text);
                Intent {
                    intent: l.intent,
                    urgency: if hazard { Urgency::High } else { l.urgency },
                    sentiment: l.sentiment,
                    sentiment_score: l.sentiment.score(),
                    hazard,
                    needs_order_info: l.needs_order_info,
                    order,
                    small_talk,
                    closing,
                }
            }
            Err(error) => {
                self.metrics.inc(
                    "kefu_provider_failures_total",
                    &[("provider", "openai_intent")],
                );
                if self.fallback {
                    tracing::warn!(%error, "LLM intent failed; using the built-in classifier");
                    self.builtin.classify_full(text).await
                } else {
                    tracing::warn!(%error, "LLM intent failed; treating the message as `other`");
                    let hazard = super::safety::is_hazard(text);
                    Intent {
                        intent: IntentKind::Other,
                        urgency: if hazard { Urgency::High } else { Urgency::Low },
                        sentiment: Sentiment::Neutral,
                        sentiment_score: 0.0,
                        hazard,
                        needs_order_info: false,
                        order: self.builtin.find_order(text),
                        small_talk: None,
                        closing: None,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_json_parses_with_or_without_a_fence() {
        let want = LlmIntent {
            intent: IntentKind::Refund,
            urgency: Urgency::High,
            sentiment: Sentiment::VeryNegative,
            needs_order_info: true,
        };
        let j = r#"{"intent":"refund","urgency":"high","sentiment":"very_negative","needs_order_info":true}"#;
        assert_eq!(parse(j).unwrap(), want);
        assert_eq!(parse(&format!("```json\n{j}\n```")).unwrap(), want);
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "refund",
            "",
            r#"{"intent":"refund","urgency":"high","sentiment":"negative"}"#,
            r#"{"intent":"Refund","urgency":"high","sentiment":"negative","needs_order_info":true}"#,
            r#"{"intent":"refunds","urgency":"high","sentiment":"negative","needs_order_info":true}"#,
            r#"{"intent":"refund","urgency":"urgent","sentiment":"negative","needs_order_info":true}"#,
            r#"{"intent":"refund","urgency":"high","sentiment":"angry","needs_order_info":true}"#,
            r#"{"intent":"refund","urgency":"high","sentiment":"negative","needs_order_info":"yes"}"#,
            r#"{"intent":"refund","urgency":"high","sentiment":"negative","needs_order_info":true,"why":"x"}"#,
            r#"Sure! {"intent":"refund","urgency":"high","sentiment":"negative","needs_order_info":true}"#,
            r#"[{"intent":"refund"}]"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn llm_mode_without_fallback_says_other_when_the_model_is_down() {
        let cfg: crate::config::ChatConfig = toml::from_str(
            "kind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\nmodel = \"m\"\ntimeout_ms = 300\nmax_retries = 0",
        )
        .unwrap();
        let builtin = Arc::new(BuiltinClassifier::new(crate::config::ORDER_PATTERN, &[]).unwrap());
        let metrics = Arc::new(Metrics::new());
        let chat = Arc::new(OpenAiChat::new(&cfg).unwrap());
        let strict = LlmClassifier::new(
            chat.clone(),
            builtin.clone(),
            IntentMode::Llm,
            metrics.clone(),
        );
        let i = strict.classify("I want a refund for order 12345678").await;
        assert_eq!(i.intent, IntentKind::Other);
        assert_eq!(i.sentiment, Sentiment::Neutral);
        assert_eq!(i.order.as_deref(), Some("12345678"));
        let lenient =
            LlmClassifier::new(chat, builtin, IntentMode::LlmWithFallback, metrics.clone());
        assert_eq!(
            lenient
                .classify("I want a refund for order 12345678")
                .await
                .intent,
            IntentKind::Refund
        );
        assert_eq!(
            metrics.get(
                "kefu_provider_failures_total",
                &[("provider", "openai_intent")]
            ),
            2
        );
    }
}
