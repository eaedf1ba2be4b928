//! The grounding check on a model's answer, before anything leaves.
//!
//! An answer is accepted when it cites at least one of the given sources (`[n]`) and every
//! number (prices, dates, percentages, quantities), phone number, URL and e-mail address in it
//! appears in the cited sources; or when it is the configured transfer sentence (then it
//! declines). The customer's question never counts as grounding: a customer who writes
//! "¥99999" or a link into the question must not get it repeated back as the company's word.
//! Anything else is `ProviderError::BadAnswer("ungrounded: ...")` and the engine answers with
//! the built-in generator instead. Numbers are compared after folding full-width digits,
//! dropping `¥ ￥ $` and thousands separators, and leading / trailing zeros (`05` = `5`,
//! `5.0` = `5`). Chinese numerals (三十) are not checked.
//!
//! `check_piece` is the same test on one sentence of a streamed answer, against every
//! retrieved source (a sentence's citation may come after it): what the widget is shown
//! while the model still writes.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

use super::{Answer, GenerateRequest, ProviderError};

static CITATION: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\s*[\[【［](\d{1,3})[\]】］]").expect("citation regex"));
static NUMBER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\d+(?:\.\d+)?").expect("number regex"));
static THOUSANDS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\d),(\d{3})").expect("thousands regex"));
/// http(s) links and `www.` hosts, up to whitespace, quotes, brackets or CJK punctuation.
static URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)(?:https?://|www\.)[^\s<>"'()\[\]{}，。；：！？、）（“”‘’]+"#)
        .expect("url regex")
});
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
        .expect("email regex")
});
/// Phone-shaped digit groups (`400-820-8820`, `+86 138 1234 5678`, `(021) 6234 5678`): the
/// digits must appear together in a source, not just each group somewhere.
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?:\+\d{1,3}[ -]?)?(?:\(\d{2,4}\)[ -]?|\d{2,4}[ -])\d{3,4}[ -]?\d{3,4}|\b1[3-9]\d{9}\b",
    )
    .expect("phone regex")
});

/// Check `raw` (the model's text) against `req`; on success the customer-facing answer with
/// the `[n]` markers removed and `used` set from them.
pub fn check(raw: &str, req: &GenerateRequest<'_>) -> Result<Answer, ProviderError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ProviderError::BadAnswer("ungrounded: empty answer".into()));
    }
    let mut used = Vec::new();
    for c in CITATION.captures_iter(raw) {
        let n: usize = c[1].parse().unwrap_or(0);
        if (1..=req.hits.len()).contains(&n) && !used.contains(&(n - 1)) {
            used.push(n - 1);
        }
    }
    let text = strip_citations(raw);
    if used.is_empty() {
        if is_transfer(&text, req.transfer_message) {
            return Ok(Answer {
                text: req.transfer_message.to_string(),
                confidence: 0.0,
                used: vec![],
                declined: true,
            });
        }
        return Err(ProviderError::BadAnswer(
            "ungrounded: the answer cites none of the given sources".into(),
        ));
    }
    let cited: Vec<&crate::knowledge::Hit> = used.iter().map(|&i| &req.hits[i]).collect();
    if let Some(missing) = ungrounded(&text, &Facts::of(&cited)) {
        return Err(ProviderError::BadAnswer(format!(
            "ungrounded: {missing} not in the cited sources"
        )));
    }
    let confidence = used
        .iter()
        .map(|&i| req.hits[i].score)
        .fold(0.0f32, f32::max)
        .clamp(0.0, 1.0);
    Ok(Answer {
        text,
        confidence,
        used,
        declined: false,
    })
}

/// The answer without `[n]` markers (and the space before them).
pub fn strip_citations(text: &str) -> String {
    CITATION.replace_all(text, "").trim().to_string()
}

/// One piece of a streamed answer without its `[n]` markers, its own spacing kept (the
/// pieces of an answer are joined as they are).
pub fn strip_citations_in_piece(text: &str) -> String {
    CITATION.replace_all(text, "").into_owned()
}

/// What the sources say that an answer may repeat: their numbers, phone digits, URLs and
/// e-mail addresses. Built once per answer, asked once per piece.
pub struct Facts {
    numbers: HashSet<String>,
    /// Each source's digits run together: a phone number's digits must be one run in it.
    digit_runs: Vec<String>,
    /// Each source's text, lowercased (URLs and e-mails are looked up in it).
    texts: Vec<String>,
}

impl Facts {
    pub fn of(hits: &[&crate::knowledge::Hit]) -> Self {
        let mut numbers_known = HashSet::new();
        let mut digit_runs = Vec::new();
        let mut texts = Vec::new();
        for h in hits {
            for t in [&h.title, &h.text] {
                numbers_known.extend(numbers(t));
                digit_runs.push(normalize(t).chars().filter(char::is_ascii_digit).collect());
                texts.push(t.to_lowercase());
            }
        }
        Facts {
            numbers: numbers_known,
            digit_runs,
            texts,
        }
    }

    fn has_text(&self, needle: &str) -> bool {
        let needle = needle.to_lowercase();
        self.texts.iter().any(|t| t.contains(&needle))
    }
}

/// The first thing in `text` (citation markers already removed) the sources do not say, as
/// the check's reason: numbers, then phone numbers, URLs, e-mail addresses.
pub fn ungrounded(text: &str, facts: &Facts) -> Option<String> {
    let missing: Vec<String> = numbers_in_order(text)
        .into_iter()
        .filter(|n| !facts.numbers.contains(n))
        .collect();
    if !missing.is_empty() {
        return Some(missing.join(", "));
    }
    let norm = normalize(text);
    for m in PHONE.find_iter(&norm) {
        let digits: String = m.as_str().chars().filter(char::is_ascii_digit).collect();
        if !facts.digit_runs.iter().any(|r| r.contains(&digits)) {
            return Some(format!("phone {}", m.as_str()));
        }
    }
    for m in URL.find_iter(text) {
        let url = m
            .as_str()
            .trim_end_matches(['.', ',', ';', ':', '!', '?', '/']);
        if !facts.has_text(url) {
            return Some(format!("URL {url}"));
        }
    }
    for m in EMAIL.find_iter(text) {
        if !facts.has_text(m.as_str()) {
            return Some(format!("e-mail {}", m.as_str()));
        }
    }
    None
}

/// One piece (a sentence, a Chinese clause) of a streamed answer, checked against every
/// retrieved source: `Ok(piece without markers)` or `Err(reason)`. The whole answer is
/// checked again with `check` once the model has finished.
pub fn check_piece(piece: &str, facts: &Facts) -> Result<String, String> {
    let text = strip_citations_in_piece(piece);
    match ungrounded(&text, facts) {
        Some(what) => Err(format!("ungrounded: {what} not in the sources")),
        None => Ok(text),
    }
}

/// The e-mail addresses in a text.
pub fn emails(text: &str) -> impl Iterator<Item = &str> {
    EMAIL.find_iter(text).map(|m| m.as_str())
}

/// The URLs in a text, as the check finds them (trailing punctuation dropped).
pub fn urls(text: &str) -> impl Iterator<Item = &str> {
    URL.find_iter(text)
        .map(|m| m.as_str().trim_end_matches(['.', ',', ';', ':', '!', '?']))
}

fn is_transfer(text: &str, transfer: &str) -> bool {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect()
    };
    let (t, want) = (squash(text), squash(transfer));
    !want.is_empty() && t == want
}

/// Full-width digits and punctuation folded, currency signs dropped, `1,299` → `1299`.
fn normalize(text: &str) -> String {
    let folded: String = text
        .chars()
        .filter_map(|c| match c {
            '０'..='９' => char::from_u32(c as u32 - '０' as u32 + '0' as u32),
            '．' => Some('.'),
            '，' => Some(','),
            '¥' | '￥' | '$' | '＄' => None,
            c => Some(c),
        })
        .collect();
    // Twice: `1,234,567` overlaps.
    let once = THOUSANDS.replace_all(&folded, "$1$2");
    THOUSANDS.replace_all(&once, "$1$2").into_owned()
}

fn canonical(n: &str) -> String {
    let (int, frac) = n.split_once('.').unwrap_or((n, ""));
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    }
}

fn numbers_in_order(text: &str) -> Vec<String> {
    let norm = normalize(text);
    let mut out: Vec<String> = Vec::new();
    for m in NUMBER.find_iter(&norm) {
        let c = canonical(m.as_str());
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// The numbers a text states, canonical (full-width digits, currency signs and thousands
/// separators folded; `1,200` = `1200`, `2.50` = `2.5`), each as a whole number.
pub(super) fn numbers(text: &str) -> HashSet<String> {
    numbers_in_order(text).into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knowledge::Hit;

    fn hit(text: &str) -> Hit {
        Hit {
            source: "faq/pricing.jsonl#pro".into(),
            title: "Pricing".into(),
            heading_path: vec![],
            category: "faq".into(),
            text: text.into(),
            score: 0.8,
            kind: crate::knowledge::load::ChunkKind::Faq,
        }
    }

    fn run(answer: &str, hits: &[Hit], q: &str) -> Result<Answer, ProviderError> {
        check(
            answer,
            &GenerateRequest {
                question: q,
                hits,
                zh: false,
                transfer_message: "I need to transfer you to a human agent for this issue.",
                other_language_note: "",
                whole_rule: false,
            },
        )
    }

    #[test]
    fn cited_answer_with_known_numbers_passes_and_loses_its_markers() {
        let hits = [
            hit("The Pro plan costs ¥1,299 per year or ¥129 per month."),
            hit("Refunds within 30 days."),
        ];
        let a = run(
            "Pro costs ¥1299 a year [1]. Refunds: 30 days [2].",
            &hits,
            "price?",
        )
        .unwrap();
        assert_eq!(a.text, "Pro costs ¥1299 a year. Refunds: 30 days.");
        assert_eq!(a.used, vec![0, 1]);
        assert!(!a.declined);
        assert!((a.confidence - 0.8).abs() < 1e-6);
    }

    #[test]
    fn full_width_and_currency_forms_match() {
        let hits = [hit("专业版每月１２９元，退款期限为30天。")];
        let a = run("专业版每月 129 元【1】。", &hits, "多少钱").unwrap();
        assert_eq!(a.text, "专业版每月 129 元。");
        assert!(run("专业版每月 $129.00 [1]", &hits, "").is_ok());
    }

    #[test]
    fn a_price_not_in_the_sources_is_rejected() {
        let hits = [hit("The Pro plan costs ¥129 per month.")];
        let e = run("Pro costs ¥99 per month [1].", &hits, "price").unwrap_err();
        assert!(e.to_string().contains("ungrounded: 99"), "{e}");
        // A number in an uncited source does not count.
        let hits2 = [hit("Pro costs ¥129."), hit("Basic costs ¥99.")];
        assert!(run("Pro costs ¥99 [1].", &hits2, "").is_err());
        // Part of a longer number does not count either.
        assert!(run("Refund within 3 days [1].", &[hit("within 30 days")], "").is_err());
    }

    #[test]
    fn dates_and_percentages_are_checked() {
        let hits = [hit("The sale ends on 2024-12-31 with 20% off.")];
        assert!(run("Ends 2024-12-31, 20% off [1].", &hits, "").is_ok());
        assert!(run("Ends 2025-01-31 [1].", &hits, "").is_err());
        assert!(run("25% off [1].", &hits, "").is_err());
    }

    #[test]
    fn nothing_counts_because_the_question_says_it() {
        let hits = [hit(
            "Orders ship in 2 days. Pay at https://shop.example.com/pay.",
        )];
        // The audit's case: the customer wrote the price and the link themselves.
        let e = run(
            "Pay ¥99999 at http://evil.example/pay [1].",
            &hits,
            "I was told to pay ¥99999 at http://evil.example/pay",
        )
        .unwrap_err();
        assert!(e.to_string().contains("99999"), "{e}");
        assert!(run(
            "Order 12345678 ships in 2 days [1].",
            &hits,
            "where is 12345678"
        )
        .is_err());
        let e = run("Pay at http://evil.example/pay [1].", &hits, "").unwrap_err();
        assert!(e.to_string().contains("URL http://evil.example/pay"), "{e}");
        assert!(run("Pay at https://shop.example.com/pay [1].", &hits, "").is_ok());
        assert!(run("Pay at HTTPS://Shop.Example.com/pay. [1]", &hits, "").is_ok());
    }

    #[test]
    fn phones_and_emails_must_be_in_a_source() {
        let hits = [hit("Call 400-820-8820 or write to help@shop.example.com.")];
        assert!(run("Call 400 820 8820 [1].", &hits, "").is_ok());
        assert!(run("Write to help@shop.example.com [1].", &hits, "").is_ok());
        let e = run("Write to pay@evil.example [1].", &hits, "").unwrap_err();
        assert!(e.to_string().contains("e-mail pay@evil.example"), "{e}");
        // Each group is in the source, but not as one number.
        let e = run("Call 820-400-8820 [1].", &hits, "").unwrap_err();
        assert!(e.to_string().contains("phone"), "{e}");
    }

    #[test]
    fn a_piece_is_checked_against_every_retrieved_source() {
        let a = hit("The Pro plan costs ¥129 per month.");
        let b = hit("Refunds within 30 days.");
        let facts = Facts::of(&[&a, &b]);
        assert_eq!(
            check_piece("Pro costs ¥129 a month [1]. ", &facts).unwrap(),
            "Pro costs ¥129 a month. "
        );
        assert!(check_piece("Refunds within 30 days.", &facts).is_ok());
        let e = check_piece("Refunds within 45 days.", &facts).unwrap_err();
        assert!(e.contains("45"), "{e}");
        assert!(check_piece("See https://evil.example.", &facts).is_err());
    }

    #[test]
    fn uncited_answers_are_rejected_unless_they_transfer() {
        let hits = [hit("Anything.")];
        assert!(run("Sure, you can do that.", &hits, "").is_err());
        assert!(
            run("It is fine [7].", &hits, "").is_err(),
            "out of range id"
        );
        let a = run(
            "I need to transfer you to a human agent for this issue",
            &hits,
            "",
        )
        .unwrap();
        assert!(a.declined);
        assert!(a.used.is_empty());
        assert!(run("", &hits, "").is_err());
    }
}
