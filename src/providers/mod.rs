//! Model providers: the seams the engine and the knowledge index call through.
//!
//! `Embedder` turns texts into vectors; `Generator` turns a question and retrieved chunks into
//! an answer. Built-in offline implementations live beside OpenAI-compatible HTTP ones.

use async_trait::async_trait;

pub mod blend;
pub mod builtin_embedder;
pub mod grounding;
#[cfg(feature = "local-embeddings")]
pub mod local_embed;
pub mod openai;
pub mod openai_chat;
pub mod openai_embed;
pub mod prompt;

/// Why a provider call failed. The engine falls back (built-in generator, handoff) on any.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error("provider timed out")]
    Timeout,
    #[error("provider answered badly: {0}")]
    BadAnswer(String),
}

/// Texts → vectors. The index records `model()` and `dim()` so a model change forces a
/// clear re-ingest instead of mixing vectors. An all-zero vector means "this model cannot
/// represent this text" (an English-only model given Chinese): the search then ranks that
/// query on words alone instead of on a meaningless cosine.
#[async_trait]
pub trait Embedder: Send + Sync {
    fn model(&self) -> &str;
    fn dim(&self) -> usize;
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError>;
}

pub mod builtin_generator;

pub use builtin_generator::BuiltinGenerator;

/// What a generator gets: the question, the retrieved chunks above `min_score` (best
/// first), and the customer's language.
pub struct GenerateRequest<'a> {
    pub question: &'a str,
    pub hits: &'a [crate::knowledge::Hit],
    pub zh: bool,
    /// The sentence to say when the knowledge does not cover the question.
    pub transfer_message: &'a str,
    /// A line in the customer's language put before an answer quoted from knowledge written
    /// in the other language (`replies.other_language`).
    pub other_language_note: &'a str,
}

/// A generated answer and the indexes (into `hits`) of the chunks it used.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub text: String,
    /// 0..1: how sure the generator is that `text` answers the question.
    pub confidence: f32,
    pub used: Vec<usize>,
    /// The generator said the knowledge does not cover the question.
    pub declined: bool,
}

/// Question + retrieved knowledge → answer.
#[async_trait]
pub trait Generator: Send + Sync {
    fn name(&self) -> &str;
    async fn generate(&self, req: &GenerateRequest<'_>) -> Result<Answer, ProviderError>;

    /// Like `generate`, but the raw text (citation markers and all) goes to `text` as it is
    /// written, then the finished, checked answer is returned. The engine checks and releases
    /// the text sentence by sentence and may drop this future at any point (the customer left,
    /// a sentence failed its check): an HTTP generator's request is then dropped with it.
    /// The default sends the whole answer at once, as soon as it exists.
    async fn generate_streaming(
        &self,
        req: &GenerateRequest<'_>,
        text: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<Answer, ProviderError> {
        let answer = self.generate(req).await?;
        let _ = text.send(answer.text.clone());
        Ok(answer)
    }

    /// Whether what this generator writes must be checked against the sources (a model's free
    /// text), rather than quoting them by construction (the built-in generator).
    fn writes_free_text(&self) -> bool {
        true
    }
}
