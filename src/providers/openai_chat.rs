//! `Generator` over any OpenAI-compatible `/chat/completions` (OpenAI, Azure OpenAI,
//! DeepSeek, DashScope compatible mode, Ollama, vLLM).
//!
//! Streaming (`stream = true`, the default) reads the SSE deltas
//! (`data: {"choices":[{"delta":{"content":"..."}}]}` … `data: [DONE]`) inside the call's one
//! deadline. `generate_streaming` hands each delta to the engine as it arrives (the engine
//! checks and releases the text sentence by sentence to the widget, and drops this call, and
//! with it the HTTP request, when the customer leaves or a sentence fails); `generate`
//! returns only the finished answer (WeCom, DingTalk, kf). Both end with the whole-answer
//! grounding check.

use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedSender;

use super::openai::{EndpointConfig, OpenAiClient};
use super::{grounding, prompt, Answer, GenerateRequest, Generator, ProviderError};
use crate::config::ChatConfig;

const PATH: &str = "chat/completions";

/// One chat model behind an OpenAI-compatible API. Shared by the generator and the LLM
/// intent classifier (one breaker: a model that is down is down for both).
#[derive(Debug)]
pub struct OpenAiChat {
    client: OpenAiClient,
    model: String,
    prompt: Option<String>,
    stream: bool,
}

impl OpenAiChat {
    pub fn new(cfg: &ChatConfig) -> anyhow::Result<Self> {
        let client = OpenAiClient::new(EndpointConfig {
            base_url: cfg.base_url.clone().unwrap_or_default(),
            api_key: cfg.api_key.clone(),
            api_version: cfg.api_version.clone(),
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            max_retries: cfg.max_retries,
            breaker_failures: cfg.breaker_failures,
            breaker_cooldown: Duration::from_millis(cfg.breaker_cooldown_ms),
        })?;
        Ok(OpenAiChat {
            client,
            model: cfg.model.clone().unwrap_or_default(),
            prompt: cfg.prompt.clone(),
            stream: cfg.stream,
        })
    }

    pub fn client(&self) -> &OpenAiClient {
        &self.client
    }

    /// One completion of `messages` (`[{"role","content"}]`), streamed or not, as text.
    pub async fn complete(
        &self,
        messages: Value,
        stream: bool,
        max_tokens: u32,
    ) -> Result<String, ProviderError> {
        self.complete_into(messages, stream, max_tokens, None).await
    }

    /// `complete`, each piece of text also sent to `sink` as it arrives.
    async fn complete_into(
        &self,
        messages: Value,
        stream: bool,
        max_tokens: u32,
        sink: Option<&UnboundedSender<String>>,
    ) -> Result<String, ProviderError> {
        let mut body = json!({
            "model": self.model,
            "messages": messages,
            "temperature": 0.2,
            "max_tokens": max_tokens,
        });
        if stream {
            body["stream"] = Value::Bool(true);
        }
        self.client
            .post(PATH, &body, |r| read_completion(r, sink))
            .await
    }

    fn messages(&self, req: &GenerateRequest<'_>) -> Value {
        json!([
            {"role": "system", "content": prompt::system_prompt(self.prompt.as_deref(), req.transfer_message)},
            {"role": "user", "content": prompt::user_message(req)},
        ])
    }
}

#[async_trait]
impl Generator for OpenAiChat {
    fn name(&self) -> &str {
        "openai"
    }

    async fn generate(&self, req: &GenerateRequest<'_>) -> Result<Answer, ProviderError> {
        let text = self.complete(self.messages(req), self.stream, 600).await?;
        grounding::check(&text, req)
    }

    async fn generate_streaming(
        &self,
        req: &GenerateRequest<'_>,
        sink: UnboundedSender<String>,
    ) -> Result<Answer, ProviderError> {
        let text = self
            .complete_into(self.messages(req), self.stream, 600, Some(&sink))
            .await?;
        grounding::check(&text, req)
    }
}

/// A 2xx response → the completion text: SSE when the server streams, JSON otherwise (some
/// servers ignore `stream`).
async fn read_completion(
    r: reqwest::Response,
    sink: Option<&UnboundedSender<String>>,
) -> Result<String, ProviderError> {
    let is_sse = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if is_sse {
        let mut parser = SseParser::default();
        let mut body = r.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                ProviderError::Unavailable(format!("stream broken: {}", e.without_url()))
            })?;
            let done = parser.feed(&chunk)?;
            if let (Some(sink), Some(fresh)) = (sink, parser.fresh()) {
                // Nobody listening any more: stop reading (the engine drops us anyway).
                if sink.send(fresh.to_string()).is_err() {
                    return Err(ProviderError::Unavailable("the listener went away".into()));
                }
            }
            if done {
                break;
            }
        }
        parser.finish()
    } else {
        let bytes = r
            .bytes()
            .await
            .map_err(|e| ProviderError::Unavailable(format!("body: {}", e.without_url())))?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ProviderError::BadAnswer(format!("not JSON: {e}")))?;
        let text = v
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ProviderError::BadAnswer("no choices[0].message.content".into()))?;
        if let Some(sink) = sink {
            let _ = sink.send(text.clone());
        }
        Ok(text)
    }
}

/// Incremental SSE reader: bytes in any split, `data:` lines out, deltas collected.
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    text: String,
    done: bool,
    /// How much of `text` `fresh` has handed out.
    handed: usize,
}

impl SseParser {
    /// Feed bytes; true once `data: [DONE]` was seen.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<bool, ProviderError> {
        self.buf.extend_from_slice(bytes);
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            self.line(&line)?;
            if self.done {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The text that arrived since the last call, if any.
    pub fn fresh(&mut self) -> Option<&str> {
        let from = self.handed;
        self.handed = self.text.len();
        (from < self.text.len()).then(|| &self.text[from..])
    }

    fn line(&mut self, raw: &[u8]) -> Result<(), ProviderError> {
        let line = String::from_utf8_lossy(raw);
        let line = line.trim_end_matches(['\n', '\r']);
        let Some(data) = line.strip_prefix("data:") else {
            // Comments (`: keep-alive`), `event:`, `id:`, blank separators.
            return Ok(());
        };
        let data = data.trim();
        if data == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| ProviderError::BadAnswer(format!("bad stream event: {e}")))?;
        if let Some(err) = v.get("error") {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("error event");
            return Err(ProviderError::Unavailable(format!("stream error: {msg}")));
        }
        if let Some(piece) = v
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            self.text.push_str(piece);
        }
        Ok(())
    }

    /// The collected text (a stream that ends without `[DONE]` still counts if it said
    /// something).
    pub fn finish(mut self) -> Result<String, ProviderError> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            self.line(&rest)?;
        }
        if self.text.trim().is_empty() {
            return Err(ProviderError::BadAnswer("empty streamed answer".into()));
        }
        Ok(self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        ": keep-alive\n\n",
        "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"退款在\"}}]}\r\n\r\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"30 天内 [1]。\"}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"ignored\"}}]}\n\n",
    );

    #[test]
    fn sse_deltas_are_joined_whatever_the_split() {
        let bytes = STREAM.as_bytes();
        for step in [1, 2, 3, 7, 64, bytes.len()] {
            let mut p = SseParser::default();
            let mut done = false;
            for chunk in bytes.chunks(step) {
                if p.feed(chunk).unwrap() {
                    done = true;
                    break;
                }
            }
            assert!(done, "step {step}");
            assert_eq!(p.finish().unwrap(), "退款在30 天内 [1]。", "step {step}");
        }
    }

    #[test]
    fn fresh_text_is_handed_out_once() {
        let mut p = SseParser::default();
        p.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {\"cho")
            .unwrap();
        assert_eq!(p.fresh(), Some("Hel"));
        assert_eq!(p.fresh(), None);
        p.feed(b"ices\":[{\"delta\":{\"content\":\"lo\"}}]}\n")
            .unwrap();
        assert_eq!(p.fresh(), Some("lo"));
        assert_eq!(p.finish().unwrap(), "Hello");
    }

    #[test]
    fn sse_without_done_or_with_errors() {
        let mut p = SseParser::default();
        p.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}")
            .unwrap();
        assert_eq!(p.finish().unwrap(), "hi");
        let mut p = SseParser::default();
        assert!(p.feed(b"data: {not json}\n").is_err());
        let mut p = SseParser::default();
        assert!(p
            .feed(b"data: {\"error\":{\"message\":\"overloaded\"}}\n")
            .is_err());
        assert!(SseParser::default().finish().is_err());
    }
}
