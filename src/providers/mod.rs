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
pub mod static_words;
#[cfg(feature = "local-embeddings")]
pub mod unigram;

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

/// What a text is to the embedder. Some models are trained with a prefix per role
/// (multilingual-e5: `query: ` for questions and texts compared with questions, `passage: `
/// for documents) and compare best when given it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TextRole {
    Query,
    Passage,
}

/// Sentences on unrelated topics, in English and in Chinese. Embedded as queries, the mean
/// pairwise cosine within each language is an embedder's *background* similarity there
/// (what unrelated texts score: ≈ 0.05 for all-MiniLM; for multilingual-e5, whose cosines
/// all sit high, ≈ 0.77 in English and ≈ 0.84 in Chinese), and a model that gives every
/// one of them a vector reads both scripts.
pub const PROBES: [[&str; 4]; 2] = [
    [
        "The weather will be sunny tomorrow afternoon.",
        "How do I reset my password?",
        "The museum opens at nine on Saturdays.",
        "Add two cups of flour and stir well.",
    ],
    [
        "明天下午天气晴朗。",
        "我的快递到哪里了？",
        "这家餐厅的面条很好吃。",
        "请把文件发到我的邮箱。",
    ],
];

/// Mean cosine over the pairs of non-zero vectors (0 when there is no such pair).
pub fn mean_pairwise_cosine(vectors: &[Vec<f32>]) -> f32 {
    let unit: Vec<Vec<f32>> = vectors
        .iter()
        .filter_map(|v| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            (n > 0.0).then(|| v.iter().map(|x| x / n).collect())
        })
        .collect();
    let (mut sum, mut pairs) = (0.0, 0usize);
    for i in 0..unit.len() {
        for j in i + 1..unit.len() {
            sum += unit[i]
                .iter()
                .zip(&unit[j])
                .map(|(a, b)| a * b)
                .sum::<f32>();
            pairs += 1;
        }
    }
    if pairs == 0 {
        0.0
    } else {
        sum / pairs as f32
    }
}

/// How a model's similarities behave, measured on [`PROBES`] when it is loaded; the search
/// knobs are chosen from it (`SearchParams::sentence_model`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimilarityProfile {
    /// It embeds both the English and the Chinese probes (none comes back all zeros).
    pub multilingual: bool,
    /// Mean cosine of the probes of each language: `[other scripts, Chinese]`.
    pub background: [f32; 2],
}

/// Texts → vectors. The index records `model()` and `dim()` so a model change forces a
/// clear re-ingest instead of mixing vectors. An all-zero vector means "this model cannot
/// represent this text" (an English-only model given Chinese): the search then ranks that
/// query on words alone instead of on a meaningless cosine.
#[async_trait]
pub trait Embedder: Send + Sync {
    fn model(&self) -> &str;
    fn dim(&self) -> usize;
    /// How many trailing dimensions every vector fills (the index keeps them in a dense
    /// block however sparse the rest is). Only memory and speed depend on it.
    fn dense_dims(&self) -> usize {
        0
    }
    /// The texts as they are.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError>;
    /// The texts in `role` (with the model's prefix for it). Embedders without roles
    /// embed them as they are.
    async fn embed_as(
        &self,
        texts: &[String],
        role: TextRole,
    ) -> Result<Vec<Vec<f32>>, ProviderError> {
        let _ = role;
        self.embed(texts).await
    }
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
    /// Quote a short section as written, whatever the question asks: a complaint is
    /// answered with the rule that covers it (deadline, photos, remedy), not the one
    /// sentence that best matches its words.
    pub whole_rule: bool,
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
