//! Retrieval evaluation over `kefu eval` case files: does the expected source come first?
//! Used by `kefu eval` for the `expect_source` columns, and for tuning.

use std::path::Path;

use anyhow::Context;

use super::{Knowledge, RetrievalMode};

/// Retrieval quality over the cases that name an `expect_source`.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct SourceEval {
    /// Cases with an `expect_source`.
    pub cases: usize,
    /// Share whose expected source is the first hit.
    pub hit1: f64,
    /// Share whose expected source is among the first three hits.
    pub hit3: f64,
    /// Mean reciprocal rank of the expected source within `top_k` (0 when absent).
    pub mrr: f64,
}

#[derive(serde::Deserialize)]
struct Case {
    message: String,
    expect_source: Option<String>,
}

/// Run every case with an `expect_source` through `kb.search`. Lines without one are
/// skipped; a line that is not a JSON case is an error naming its line.
pub async fn eval_sources(
    kb: &Knowledge,
    cases: &Path,
    top_k: usize,
    mode: RetrievalMode,
) -> anyhow::Result<SourceEval> {
    let text =
        std::fs::read_to_string(cases).with_context(|| format!("reading {}", cases.display()))?;
    let mut e = SourceEval::default();
    let (mut hit1, mut hit3, mut rr) = (0usize, 0usize, 0f64);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let case: Case = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: bad case", cases.display(), i + 1))?;
        let Some(expect) = case.expect_source else {
            continue;
        };
        e.cases += 1;
        let hits = kb.search(&case.message, top_k.max(1), mode).await?;
        if let Some(rank) = hits.iter().position(|h| h.source == expect) {
            hit1 += usize::from(rank == 0);
            hit3 += usize::from(rank < 3);
            rr += 1.0 / (rank + 1) as f64;
        }
    }
    if e.cases > 0 {
        let n = e.cases as f64;
        e.hit1 = hit1 as f64 / n;
        e.hit3 = hit3 as f64 / n;
        e.mrr = rr / n;
    }
    Ok(e)
}
