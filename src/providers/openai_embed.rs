//! `Embedder` over any OpenAI-compatible `/embeddings` (OpenAI, Azure, DashScope, bge-m3 on
//! Ollama, vLLM...).
//!
//! Texts go out `batch_size` at a time; each batch is retried and guarded like a chat call.
//! Vectors come back in `index` order whatever order the server lists them in, and every
//! vector must have the configured `dim`: the knowledge index records model and dim, so a
//! wrong dim is an error that says which number to put in the config, never mixed vectors.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::openai::{EndpointConfig, OpenAiClient};
use super::{Embedder, ProviderError};
use crate::config::EmbeddingConfig;

const PATH: &str = "embeddings";

#[derive(Debug)]
pub struct OpenAiEmbedder {
    client: OpenAiClient,
    model: String,
    dim: usize,
    batch_size: usize,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    embedding: Vec<f32>,
    index: usize,
}

impl OpenAiEmbedder {
    /// `cfg.dim` is required: the index must know the dimension before the first call.
    pub fn new(cfg: &EmbeddingConfig) -> anyhow::Result<Self> {
        let Some(dim) = cfg.dim.filter(|d| *d > 0) else {
            anyhow::bail!(
                "providers.embedding.dim is required for kind = \"openai\": the vector size the model returns (e.g. 1024 for bge-m3, 1536 for text-embedding-3-small)"
            );
        };
        let client = OpenAiClient::new(EndpointConfig {
            base_url: cfg.base_url.clone().unwrap_or_default(),
            api_key: cfg.api_key.clone(),
            api_version: cfg.api_version.clone(),
            timeout: Duration::from_millis(cfg.timeout_ms.max(1)),
            max_retries: cfg.max_retries,
            breaker_failures: cfg.breaker_failures,
            breaker_cooldown: Duration::from_millis(cfg.breaker_cooldown_ms),
        })?;
        Ok(OpenAiEmbedder {
            client,
            model: cfg.model.clone().unwrap_or_default(),
            dim,
            batch_size: cfg.batch_size.max(1),
        })
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        let body = json!({ "model": self.model, "input": texts, "encoding_format": "float" });
        let resp: Response = self
            .client
            .post(PATH, &body, |r| async move {
                let bytes = r.bytes().await.map_err(|e| {
                    ProviderError::Unavailable(format!("body: {}", e.without_url()))
                })?;
                serde_json::from_slice::<Response>(&bytes)
                    .map_err(|e| ProviderError::BadAnswer(format!("embeddings response: {e}")))
            })
            .await?;
        order(resp.data, texts.len(), self.dim)
    }
}

/// Items sorted by `index`, exactly `n` of them (0..n), each of dimension `dim`.
fn order(mut data: Vec<Item>, n: usize, dim: usize) -> Result<Vec<Vec<f32>>, ProviderError> {
    data.sort_by_key(|i| i.index);
    if data.len() != n || data.iter().enumerate().any(|(k, i)| i.index != k) {
        return Err(ProviderError::BadAnswer(format!(
            "embeddings: asked for {n} vectors, got {} (indexes must be 0..{n})",
            data.len()
        )));
    }
    if let Some(bad) = data.iter().find(|i| i.embedding.len() != dim) {
        return Err(ProviderError::BadAnswer(format!(
            "embeddings: the model returns vectors of dimension {}, but providers.embedding.dim = {dim}; set dim = {} and run `kefu ingest` (the index is rebuilt)",
            bad.embedding.len(),
            bad.embedding.len()
        )));
    }
    Ok(data.into_iter().map(|i| i.embedding).collect())
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn model(&self) -> &str {
        &self.model
    }

    fn dim(&self) -> usize {
        self.dim
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(self.batch_size) {
            out.extend(self.embed_batch(batch).await?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(index: usize, v: &[f32]) -> Item {
        Item {
            embedding: v.to_vec(),
            index,
        }
    }

    #[test]
    fn items_are_put_in_index_order() {
        let v = order(vec![item(1, &[2.0, 0.0]), item(0, &[1.0, 0.0])], 2, 2).unwrap();
        assert_eq!(v, vec![vec![1.0, 0.0], vec![2.0, 0.0]]);
    }

    #[test]
    fn wrong_count_or_dimension_is_a_clear_error() {
        assert!(order(vec![item(0, &[1.0])], 2, 1).is_err());
        assert!(order(vec![item(0, &[1.0]), item(0, &[1.0])], 2, 1).is_err());
        let e = order(vec![item(0, &[1.0, 2.0, 3.0])], 1, 2).unwrap_err();
        assert!(
            e.to_string().contains("dimension 3") && e.to_string().contains("set dim = 3"),
            "{e}"
        );
    }

    #[test]
    fn dim_is_required() {
        let cfg: EmbeddingConfig = toml::from_str(
            "kind = \"openai\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodel = \"bge-m3\"",
        )
        .unwrap();
        let e = OpenAiEmbedder::new(&cfg).unwrap_err();
        assert!(e.to_string().contains("providers.embedding.dim"), "{e}");
    }
}
