//! The engine's view of the knowledge index: a search, nothing else.

use std::sync::Arc;

use async_trait::async_trait;

use crate::knowledge::{Hit, Knowledge, RetrievalMode};

#[async_trait]
pub trait Retriever: Send + Sync {
    async fn search(&self, query: &str, top_k: usize) -> anyhow::Result<Vec<Hit>>;
}

pub struct KnowledgeRetriever {
    pub knowledge: Arc<Knowledge>,
    pub mode: RetrievalMode,
}

#[async_trait]
impl Retriever for KnowledgeRetriever {
    async fn search(&self, query: &str, top_k: usize) -> anyhow::Result<Vec<Hit>> {
        self.knowledge.search(query, top_k, self.mode).await
    }
}
