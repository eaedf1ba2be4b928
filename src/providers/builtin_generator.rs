//! The built-in generator: answers extractively from the best retrieved chunk, so kefu answers
//! correctly with no model server at all.
//!
//! Rules (the seed's): knowledge only; at most ~150 words (~300 Chinese characters); in the
//! customer's language when the knowledge has it; decline when nothing relevant was retrieved.

use std::collections::HashSet;

use async_trait::async_trait;

use super::{Answer, GenerateRequest, Generator, ProviderError};
use crate::knowledge::analyze::{is_cjk, terms};

/// Word budget of an answer; Chinese counts two characters a word.
const MAX_WORDS: usize = 150;
/// A chunk in the customer's language is preferred over a better-scored one in the other
/// language when it is at most this much behind.
const LANGUAGE_PREFERENCE: f32 = 0.12;

#[derive(Default)]
pub struct BuiltinGenerator;

impl BuiltinGenerator {
    pub fn new() -> Self {
        BuiltinGenerator
    }
}

#[async_trait]
impl Generator for BuiltinGenerator {
    fn name(&self) -> &str {
        "builtin"
    }

    async fn generate(&self, req: &GenerateRequest<'_>) -> Result<Answer, ProviderError> {
        Ok(extract(req))
    }
}

/// True when more than a third of the letters are CJK.
pub fn looks_chinese(text: &str) -> bool {
    let (mut cjk, mut letters) = (0usize, 0usize);
    for c in text.chars() {
        if is_cjk(c) {
            cjk += 1;
            letters += 1;
        } else if c.is_alphabetic() {
            letters += 1;
        }
    }
    letters > 0 && cjk * 3 >= letters
}

fn pick_chunk(req: &GenerateRequest<'_>) -> Option<usize> {
    let best = req.hits.first()?;
    let same_lang = req
        .hits
        .iter()
        .position(|h| looks_chinese(&h.text) == req.zh)?;
    if best.score - req.hits[same_lang].score <= LANGUAGE_PREFERENCE {
        Some(same_lang)
    } else {
        Some(0)
    }
}

fn extract(req: &GenerateRequest<'_>) -> Answer {
    let Some(i) = pick_chunk(req) else {
        return Answer {
            text: req.transfer_message.to_string(),
            confidence: 0.0,
            used: vec![],
            declined: true,
        };
    };
    let hit = &req.hits[i];
    let sentences = split_sentences(&hit.text);
    let q: HashSet<String> = terms(req.question).into_iter().collect();
    let budget = MAX_WORDS;
    let text;
    let coverage;
    let whole = word_count(&hit.text) <= budget;
    if whole {
        // A short chunk (an FAQ answer, a focused section) is the answer as written.
        text = hit.text.trim().to_string();
        coverage = overlap(&q, &hit.text);
    } else {
        // Score each sentence by the question terms it contains; keep the best ones in
        // document order, always including the first (it usually states the topic).
        let mut scored: Vec<(usize, f32)> = sentences
            .iter()
            .enumerate()
            .map(|(j, s)| (j, overlap(&q, s) + if j == 0 { 0.05 } else { 0.0 }))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut chosen = Vec::new();
        let mut words = 0;
        for (j, score) in scored {
            if score <= 0.0 && !chosen.is_empty() {
                break;
            }
            let w = word_count(&sentences[j]);
            if words + w > budget && !chosen.is_empty() {
                continue;
            }
            chosen.push(j);
            words += w;
        }
        chosen.sort_unstable();
        let picked: Vec<&str> = chosen.iter().map(|&j| sentences[j].as_str()).collect();
        text = join_sentences(&picked);
        coverage = overlap(&q, &text);
    }
    // The calibrated retrieval score is the probability that the chunk answers the question;
    // a chunk given whole keeps it. Cutting sentences out of a long chunk can miss, so there
    // coverage (question terms in the extract) nudges it down.
    let confidence = if whole {
        hit.score
    } else {
        hit.score * (0.85 + 0.15 * coverage)
    }
    .clamp(0.0, 1.0);
    Answer {
        text,
        confidence,
        used: vec![i],
        declined: false,
    }
}

/// Share of question terms found in `text` (0..1).
fn overlap(q: &HashSet<String>, text: &str) -> f32 {
    if q.is_empty() {
        return 0.0;
    }
    let t: HashSet<String> = terms(text).into_iter().collect();
    q.iter().filter(|w| t.contains(*w)).count() as f32 / q.len() as f32
}

pub fn word_count(text: &str) -> usize {
    let cjk = text.chars().filter(|&c| is_cjk(c)).count();
    let latin = text
        .split(|c: char| c.is_whitespace() || is_cjk(c))
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .count();
    latin + cjk.div_ceil(2)
}

/// Sentences and list items of a chunk, markup kept (the widget renders simple markdown).
pub fn split_sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            continue;
        }
        let trimmed = line.trim_start();
        // A list item or a table row stays one unit.
        if trimmed.starts_with(['-', '*', '|'])
            || trimmed.chars().next().is_some_and(|c| c.is_ascii_digit()) && trimmed.contains(". ")
        {
            out.push(line.to_string());
            continue;
        }
        let mut cur = String::new();
        let chars: Vec<char> = line.chars().collect();
        for (k, &c) in chars.iter().enumerate() {
            cur.push(c);
            let end = matches!(c, '。' | '！' | '？' | '；')
                || (matches!(c, '.' | '!' | '?')
                    && chars.get(k + 1).is_none_or(|n| n.is_whitespace())
                    && !ends_with_abbreviation(&cur));
            if end {
                out.push(cur.trim().to_string());
                cur.clear();
            }
        }
        if !cur.trim().is_empty() {
            out.push(cur.trim().to_string());
        }
    }
    out
}

fn ends_with_abbreviation(s: &str) -> bool {
    let last = s.trim_end_matches('.').rsplit(' ').next().unwrap_or("");
    matches!(last, "e.g" | "i.e" | "etc" | "vs" | "Mr" | "Dr" | "No") || last.len() == 1
}

fn join_sentences(parts: &[&str]) -> String {
    let mut out = String::new();
    for p in parts {
        if !out.is_empty() {
            if p.trim_start().starts_with(['-', '*', '|']) || out.ends_with('\n') {
                out.push('\n');
            } else if !out.ends_with(|c: char| is_cjk(c) || matches!(c, '。' | '！' | '？' | '；'))
            {
                out.push(' ');
            }
        }
        out.push_str(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::Hit;

    fn hit(text: &str, score: f32) -> Hit {
        Hit {
            source: "policies/refund.md".into(),
            title: "Refund policy".into(),
            heading_path: vec![],
            category: "policies".into(),
            text: text.into(),
            score,
        }
    }

    fn req<'a>(q: &'a str, hits: &'a [Hit], zh: bool) -> GenerateRequest<'a> {
        GenerateRequest {
            question: q,
            hits,
            zh,
            transfer_message: "transfer",
        }
    }

    #[test]
    fn no_hits_declines_with_the_transfer_message() {
        let a = extract(&req("anything", &[], false));
        assert!(a.declined);
        assert_eq!(a.text, "transfer");
    }

    #[test]
    fn short_chunk_is_answered_whole() {
        let hits = [hit(
            "Refunds reach the original payment method within 5–10 business days.",
            0.9,
        )];
        let a = extract(&req("how long does a refund take", &hits, false));
        assert_eq!(a.text, hits[0].text);
        assert_eq!(a.confidence, 0.9);
    }

    #[test]
    fn long_chunk_is_cut_to_the_relevant_sentences() {
        let filler = "Our company was founded to make support simple. ".repeat(40);
        let text = format!(
            "{filler}Refunds reach the original payment method within 5–10 business days. {filler}"
        );
        let hits = [hit(&text, 0.9)];
        let a = extract(&req(
            "when will my refund reach my payment method",
            &hits,
            false,
        ));
        assert!(a.text.contains("5–10 business days"), "{}", a.text);
        assert!(word_count(&a.text) <= MAX_WORDS, "{}", a.text);
    }

    #[test]
    fn prefers_the_customers_language() {
        let hits = [
            hit("Refunds take 5–10 business days.", 0.9),
            hit("退款会在5–10个工作日内原路退回。", 0.85),
        ];
        assert!(extract(&req("退款多久到账", &hits, true))
            .text
            .starts_with("退款"));
        assert!(extract(&req("refund time", &hits, false))
            .text
            .starts_with("Refunds"));
    }

    #[test]
    fn sentence_split_handles_both_languages() {
        let s = split_sentences(
            "First one. Second e.g. this! 第三句。第四句？\n- item one\n- item two",
        );
        assert_eq!(
            s,
            [
                "First one.",
                "Second e.g. this!",
                "第三句。",
                "第四句？",
                "- item one",
                "- item two"
            ]
        );
    }

    #[test]
    fn chinese_detection() {
        assert!(looks_chinese("怎么export数据"));
        assert!(!looks_chinese("How do I export data?"));
    }
}
