//! The built-in generator: answers extractively from the retrieved chunks, so kefu answers
//! correctly with no model server at all.
//!
//! Rules (the seed's): knowledge only; at most ~150 words (~300 Chinese characters); in the
//! customer's language when the knowledge has it; decline when nothing relevant was retrieved.
//!
//! How the answer is picked:
//! 1. What the question asks for ([`Asks`]): a price (多少钱 / how much is), a time or
//!    duration (多久 / when), an amount (几张 / how many), a place, yes or no, a procedure.
//! 2. Candidates from the retrieved chunks: an FAQ entry is one candidate (its answer, as
//!    written); a section gives one candidate per sentence, list item or table row (a row
//!    with its header).
//! 3. Each candidate is scored by the question's terms it contains (weighted like the
//!    search: words over characters, function words little), the terms of its heading path,
//!    whether it carries the kind of fact asked for, the chunk's retrieval score and rank, and
//!    the customer's language.
//! 4. A question asking for one fact is answered with the best sentence (and any sentence of
//!    the same chunk nearly as good); other questions with the best chunk as written, or, if
//!    it is long, its best sentences in document order. Numbers, prices and units are quoted
//!    verbatim because nothing is rewritten.
//! 5. An answer from knowledge in the other language than the customer's is quoted as written,
//!    after a one-line note in the customer's language (`replies.other_language`).

use std::collections::HashMap;

use async_trait::async_trait;

use super::{Answer, GenerateRequest, Generator, ProviderError};
use crate::knowledge::analyze::{terms, BIGRAM, UNIGRAM};
use crate::knowledge::load::ChunkKind;
use crate::knowledge::Hit;
pub use crate::text::looks_chinese;
use crate::text::question::Asks;
use crate::text::sentences::{pieces, Piece};
use crate::text::{join_sentences, word_count};

/// Word budget of an answer; Chinese counts two characters a word.
const MAX_WORDS: usize = 150;
/// Hits further than this below the best one are not quoted from.
const SCORE_WINDOW: f32 = 0.25;
/// Another sentence of the chunk is added when it scores within this of the best (a
/// question asking for one fact), or within `GENERAL_MARGIN` (any other question).
const NEAR_BEST: f32 = 0.15;
const GENERAL_MARGIN: f32 = 0.5;
/// Sections of one page whose scores differ by no more than this are tied (see `places_below`).
const SCORE_TIE: f32 = 0.02;

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

    /// Its sentences are the sources' own (the default streaming sends them at once).
    fn writes_free_text(&self) -> bool {
        false
    }
}

/// The question's terms with their weights (see `TermWeights`: Chinese characters and
/// bigrams back words up, function words count little).
struct Question {
    terms: HashMap<String, f32>,
    total: f32,
    asks: Asks,
    /// Amounts in the currency the question asks a price in, if it names one.
    currency: Option<&'static regex::Regex>,
}

impl Question {
    fn new(text: &str) -> Self {
        let mut terms_w = HashMap::new();
        for t in terms(text) {
            let w = if t.starts_with(BIGRAM) {
                0.5
            } else if t.starts_with(UNIGRAM) {
                0.25
            } else if crate::knowledge::analyze::is_stopword(&t) {
                0.1
            } else {
                1.0
            };
            terms_w.insert(t, w);
        }
        let total = terms_w.values().sum();
        Question {
            terms: terms_w,
            total,
            asks: Asks::of(text),
            currency: crate::text::question::asked_currency(text),
        }
    }

    /// Weighted share of the question's terms found in `texts` (0..1).
    fn overlap(&self, texts: &[&str]) -> f32 {
        if self.total <= 0.0 {
            return 0.0;
        }
        let found: std::collections::HashSet<String> =
            texts.iter().flat_map(|t| terms(t)).collect();
        // A long Latin word is also found one typo away ("dishwaser") or in a longer or
        // shorter form of itself (remind / reminder), as retrieval finds it.
        let typo = |t: &str| {
            t.len() >= 5
                && t.bytes().all(|b| b.is_ascii_lowercase())
                && found.iter().any(|f| {
                    // `t` is ASCII: its length is its character count.
                    (t.len().abs_diff(f.chars().count()) <= 1 && crate::text::within_one_edit(t, f))
                        || crate::text::longer_form(t, f)
                        || crate::text::longer_form(f, t)
                })
        };
        self.terms
            .iter()
            .filter(|(t, _)| found.contains(*t) || typo(t))
            .map(|(_, w)| w)
            .sum::<f32>()
            / self.total
    }
}

/// One thing that could be said: a piece of hit `hit`.
struct Candidate {
    hit: usize,
    /// Index among the hit's pieces (an FAQ answer is one piece).
    piece: usize,
    score: f32,
}

fn hit_pieces(h: &Hit) -> Vec<Piece> {
    match h.kind {
        // An FAQ answer is written to be given whole.
        ChunkKind::Faq => vec![Piece {
            text: h.text.trim().to_string(),
            header: None,
            searchable: h.text.clone(),
        }],
        ChunkKind::Section => pieces(&h.text)
            .into_iter()
            .filter(|p| !p.text.starts_with('#'))
            .collect(),
    }
}

/// Every piece of the hits within `SCORE_WINDOW` of the best, scored for `q`.
fn candidates(req: &GenerateRequest<'_>, q: &Question, all: &[Vec<Piece>]) -> Vec<Candidate> {
    let Some(best) = req.hits.first() else {
        return Vec::new();
    };
    let faq_may_answer = faq_may_answer(req, q);
    let mut cands = Vec::new();
    for (i, h) in req.hits.iter().enumerate() {
        if best.score - h.score > SCORE_WINDOW {
            continue;
        }
        if h.kind == ChunkKind::Faq && !faq_may_answer(i) {
            continue;
        }
        let heading: Vec<&str> = std::iter::once(h.title.as_str())
            .chain(h.heading_path.iter().map(String::as_str))
            .collect();
        let context = q.overlap(&heading)
            + if heading.iter().any(|h| q.asks.announced_by(h)) {
                0.3
            } else {
                0.0
            };
        let same_language = looks_chinese(&h.text) == req.zh;
        for (j, p) in all[i].iter().enumerate() {
            let own = match h.kind {
                // An FAQ entry matched on its question: its answer need not repeat the words.
                ChunkKind::Faq => q.overlap(&[&h.title]).max(q.overlap(&[&p.searchable])),
                ChunkKind::Section => q.overlap(&[&p.searchable]),
            };
            let mut score = own
                + 0.3 * context
                + 0.4 * q.asks.carried_by(&p.searchable)
                + q.currency.map_or(0.0, |c| 0.3 * f32::from(u8::from(c.is_match(&p.text))))
                // Retrieval knows the knowledge (IDF, vectors); the overlap above only sees
                // this question's words: the hit's score and rank weigh as much as they.
                + h.score
                - 0.15 * places_below(req.hits, i) as f32;
            if same_language {
                score += 0.1;
            }
            if p.is_row() {
                // A table row and a sentence saying the same: the sentence reads better.
                score -= 0.05;
            }
            cands.push(Candidate {
                hit: i,
                piece: j,
                score,
            });
        }
    }
    cands
}

/// Which FAQ hits may be answered (by their index in `req.hits`): the first FAQ entry, and the
/// first one stating the kind of fact the question asks. Between two entries retrieval is the
/// better judge: it has read each one's question, alternates and their pool against the whole
/// knowledge (IDF, vectors), where the scoring here sees only this question's words — letting
/// the words re-rank entries cost 2–3 points of top-1 on every public FAQ set (BANKING77
/// 0.723 → 0.695, CLINC150 0.748 → 0.727). What retrieval does not see is the kind of fact
/// asked: an entry below may still answer when the question asks for one (咖啡因高不高: an
/// amount) that it states and no entry above it does. Sections are not affected; they compete
/// piece by piece.
fn faq_may_answer(req: &GenerateRequest<'_>, q: &Question) -> impl Fn(usize) -> bool {
    let faqs = req
        .hits
        .iter()
        .enumerate()
        .filter(|(_, h)| h.kind == ChunkKind::Faq);
    let first = faqs.clone().next().map(|(i, _)| i);
    let stating = faqs
        .filter(|(_, h)| q.asks.is_specific() && q.asks.carried_by(&h.text) > 0.0)
        .map(|(i, _)| i)
        .next();
    move |i| Some(i) == first || Some(i) == stating
}

/// How many hits are placed above hit `i`, not counting sections of the same page tied with it.
/// Calibrated scores saturate near 1 (four sections of one page at 0.99, 0.99, 0.98, 0.98):
/// which of those answers is a matter of what the question asks, the generator's part, not of
/// their order. Across pages and FAQ entries retrieval's order stands (it knows the
/// knowledge; the scoring here sees only this question's words), and a hit put first on
/// purpose with a lower score (a policy answering a complaint) still counts as above.
fn places_below(hits: &[Hit], i: usize) -> usize {
    let tied = |h: &Hit| {
        h.source == hits[i].source
            && h.kind == ChunkKind::Section
            && (h.score - hits[i].score).abs() <= SCORE_TIE
    };
    hits[..i].iter().filter(|h| !tied(h)).count()
}

/// The best-scoring candidate (ties: the earlier hit, then the earlier piece).
fn best(cands: &[Candidate]) -> Option<&Candidate> {
    cands.iter().max_by(|a, b| {
        a.score
            .total_cmp(&b.score)
            .then(b.hit.cmp(&a.hit))
            .then(b.piece.cmp(&a.piece))
    })
}

/// The one piece of prose (a sentence or a list item, not a table row) that best answers
/// the question, and the hit it comes from: what a flow says before asking for the order
/// ("Unopened tea can be returned within 7 days." then "Which order?").
pub fn best_sentence(req: &GenerateRequest<'_>) -> Option<(String, usize)> {
    let q = Question::new(req.question);
    let all: Vec<Vec<Piece>> = req.hits.iter().map(hit_pieces).collect();
    let cands: Vec<Candidate> = candidates(req, &q, &all)
        .into_iter()
        .filter(|c| {
            let p = &all[c.hit][c.piece];
            !p.is_row() && p.text.chars().count() >= 8
        })
        .collect();
    best(&cands).map(|c| (all[c.hit][c.piece].text.clone(), c.hit))
}

fn extract(req: &GenerateRequest<'_>) -> Answer {
    if req.hits.is_empty() {
        return Answer {
            text: req.transfer_message.to_string(),
            confidence: 0.0,
            used: vec![],
            declined: true,
        };
    }
    let q = Question::new(req.question);
    let all: Vec<Vec<Piece>> = req.hits.iter().map(hit_pieces).collect();
    let cands = candidates(req, &q, &all);
    let Some(top) = best(&cands) else {
        // Hits without any text: nothing to quote.
        return Answer {
            text: req.transfer_message.to_string(),
            confidence: 0.0,
            used: vec![],
            declined: true,
        };
    };
    let hit = &req.hits[top.hit];
    let mine = &all[top.hit];
    let whole = word_count(&hit.text) <= MAX_WORDS;
    let as_written =
        hit.kind == ChunkKind::Faq || (whole && (req.whole_rule || !q.asks.is_specific()));
    let chosen: Vec<usize> = if as_written {
        // An FAQ answer, or a short section answering a general question: as written.
        (0..mine.len()).collect()
    } else {
        // The best piece, and the chunk's others nearly as good, within the budget.
        let mut ranked: Vec<&Candidate> = cands.iter().filter(|c| c.hit == top.hit).collect();
        ranked.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.piece.cmp(&b.piece)));
        let floor = if q.asks.is_specific() {
            top.score - NEAR_BEST
        } else {
            top.score - GENERAL_MARGIN
        };
        let mut picked = Vec::new();
        let mut words = 0;
        for c in ranked {
            if c.score < floor && !picked.is_empty() {
                break;
            }
            let w = word_count(&mine[c.piece].display());
            if words + w > MAX_WORDS && !picked.is_empty() {
                continue;
            }
            picked.push(c.piece);
            words += w;
        }
        picked.sort_unstable();
        drop_restated_rows(mine, &mut picked);
        picked
    };
    let text = if as_written {
        hit.text.trim().to_string()
    } else {
        render(mine, &chosen)
    };
    let text = if looks_chinese(&hit.text) != req.zh && !req.other_language_note.is_empty() {
        format!("{}\n{text}", req.other_language_note)
    } else {
        text
    };
    // The calibrated retrieval score is the probability that the chunk answers the question;
    // a question asking for a kind of fact that no chosen piece states is less likely met.
    let carried = chosen
        .iter()
        .any(|&j| q.asks.carried_by(&mine[j].searchable) > 0.0);
    let confidence = if q.asks.is_specific() && !carried {
        hit.score * 0.9
    } else {
        hit.score
    };
    Answer {
        text,
        confidence: confidence.clamp(0.0, 1.0),
        used: vec![top.hit],
        declined: false,
    }
}

/// Chosen table rows whose every figure a chosen sentence also states: the sentence says it
/// in words and the row would only repeat it (a price table's row "明前特级 | 100 g 罐装 |
/// ¥368" next to "明前特级西湖龙井 100 g 罐装售价 ¥368。"). Figures compare as grounding
/// compares them: whole numbers, so the 2 of "2–4 days" is not in "¥12".
fn drop_restated_rows(pieces: &[Piece], chosen: &mut Vec<usize>) {
    let stated: std::collections::HashSet<String> = chosen
        .iter()
        .filter(|&&j| !pieces[j].is_row())
        .flat_map(|&j| super::grounding::numbers(&pieces[j].text))
        .collect();
    if stated.is_empty() {
        return;
    }
    chosen.retain(|&j| {
        let p = &pieces[j];
        let figures = super::grounding::numbers(&p.text);
        !p.is_row() || figures.is_empty() || !figures.is_subset(&stated)
    });
}

/// The chosen pieces in document order; table rows under one header per table.
fn render(pieces: &[Piece], chosen: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut last_header: Option<&str> = None;
    for &j in chosen {
        let p = &pieces[j];
        match &p.header {
            Some(h) if last_header == Some(h.as_str()) => parts.push(p.text.clone()),
            Some(h) => {
                parts.push(format!("{h}\n{}", p.text));
                last_header = Some(h);
            }
            None => {
                parts.push(p.text.clone());
                last_header = None;
            }
        }
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    join_sentences(&refs)
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
            kind: ChunkKind::Section,
        }
    }

    fn faq(question: &str, answer: &str, score: f32) -> Hit {
        Hit {
            source: "faq/shop.jsonl#x".into(),
            title: question.into(),
            kind: ChunkKind::Faq,
            ..hit(answer, score)
        }
    }

    fn req<'a>(q: &'a str, hits: &'a [Hit], zh: bool) -> GenerateRequest<'a> {
        GenerateRequest {
            question: q,
            hits,
            zh,
            transfer_message: "transfer",
            other_language_note: if zh {
                "（英文资料）"
            } else {
                "(Chinese page)"
            },
            whole_rule: false,
        }
    }

    #[test]
    fn best_sentence_is_the_one_that_answers_not_the_first() {
        let hits = [
            hit(
                "Worn soles can be resoled at any branch for ¥90. \
                 Shoes you have never worn can be sent back within 30 days of delivery. \
                 Shoes with a broken heel are replaced for free.",
                0.8,
            ),
            hit("| Size | Length |\n|---|---|\n| 42 | 27 cm |", 0.78),
        ];
        let (line, hit) =
            best_sentence(&req("can I send back shoes I never wore", &hits, false)).unwrap();
        assert!(line.contains("within 30 days"), "{line}");
        assert_eq!(hit, 0);
        let zh = [super::tests::hit(
            "鞋底磨损可以到任意门店换底，收费 ¥90。未穿过的鞋子签收后 30 天内可以退回。鞋跟断裂免费换新。",
            0.8,
        )];
        let (line, _) = best_sentence(&req("没穿过的鞋能退吗", &zh, true)).unwrap();
        assert!(line.contains("30 天内"), "{line}");
        assert!(best_sentence(&req("anything", &[], false)).is_none());
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

    /// A product page written for these tests: a table, then prose about several facts.
    const MUGS: &str = "Our mugs are made in Jingdezhen.\n\n| Mug | Size | Price |\n|---|---|---|\n| Harbor mug | 350 ml | ¥59 |\n| Field cup | 200 ml | ¥39 |\n\nThe Harbor mug is 11 cm tall and weighs 320 g.\nEvery mug ships in a recycled box.\nMugs dispatch within 2 working days of payment.\nMugs are dishwasher-safe but not microwave-safe.";

    #[test]
    fn a_price_question_gets_the_price_not_the_height() {
        let hits = [hit(MUGS, 0.8)];
        let a = extract(&req("how much is the harbor mug", &hits, false));
        assert!(a.text.contains("¥59"), "{}", a.text);
        assert!(!a.text.contains("11 cm"), "{}", a.text);
        // A table row comes with its header.
        assert!(a.text.contains("| Mug | Size | Price |"), "{}", a.text);
    }

    #[test]
    fn a_row_a_chosen_sentence_restates_is_left_out() {
        let text = "| Tin | Size | Price |\n|---|---|---|\n| Spring green | 100 g | ¥368 |\n| Spring green | 250 g | ¥880 |\n\nThe 100 g tin of Spring green costs ¥368.\nThe 250 g tin of Spring green costs ¥880.\nThe tins are sealed with nitrogen.\nEach tin carries its harvest date on the lid.\nWe pack tins in recycled paper.\nTins ship within two days.";
        let hits = [hit(text, 0.9)];
        let a = extract(&req("how much is the spring green tin", &hits, false));
        assert!(
            a.text.contains("¥368") && a.text.contains("¥880"),
            "{}",
            a.text
        );
        assert!(!a.text.contains('|'), "{}", a.text);
        // A row with a figure no chosen sentence states stays.
        let pieces = pieces(text);
        let mut chosen = vec![1, 2];
        drop_restated_rows(&pieces, &mut chosen);
        assert_eq!(chosen, vec![1, 2]);
        let mut chosen = vec![0, 2];
        drop_restated_rows(&pieces, &mut chosen);
        assert_eq!(chosen, vec![2]);
        // A figure found only inside a longer number is not stated.
        let text = "| Tin | Size | Price |\n|---|---|---|\n| Green | 10 g | ¥8 |\n\nThe 100 g tin costs ¥88.\nIt ships fast.";
        let other = super::pieces(text);
        let mut chosen = vec![0, 1];
        drop_restated_rows(&other, &mut chosen);
        assert_eq!(chosen, vec![0, 1]);
    }

    #[test]
    fn hits_tied_in_score_are_not_ranked_by_their_order() {
        // Three sections of one page, all saturated near 1: the one that states the duration
        // asked for is quoted even though it came third.
        let hits = [
            hit(
                "Bike rentals come in three sizes. Helmets are included with every bike.",
                0.99,
            ),
            hit(
                "Rented bikes can be ridden on all park trails but not on the beach.",
                0.985,
            ),
            hit(
                "A rental ticket is valid for 48 hours from the time of purchase.",
                0.98,
            ),
        ];
        let a = extract(&req(
            "how long can I use my bike rental ticket",
            &hits,
            false,
        ));
        assert!(a.text.contains("48 hours"), "{}", a.text);
        // Not tied: the third hit, well below the others, loses its place as before.
        let spread = [
            hits[0].clone(),
            Hit {
                score: 0.9,
                ..hits[1].clone()
            },
            Hit {
                score: 0.8,
                ..hits[2].clone()
            },
        ];
        assert_eq!(places_below(&spread, 2), 2);
        assert_eq!(places_below(&hits, 2), 0);
        // Another page, or an FAQ entry, keeps retrieval's order however close the scores.
        let other_page = Hit {
            source: "guides/rentals.md".into(),
            ..hits[2].clone()
        };
        assert_eq!(places_below(&[hits[0].clone(), other_page], 1), 1);
        let entry = faq("How long is a ticket valid?", "48 hours.", 0.99);
        assert_eq!(places_below(&[entry, hits[2].clone()], 1), 1);
        // A hit put first on purpose with a lower score still counts as above.
        let policy_first = [
            Hit {
                score: 0.7,
                ..hits[2].clone()
            },
            hits[0].clone(),
        ];
        assert_eq!(places_below(&policy_first, 1), 1);
    }

    #[test]
    fn a_duration_question_gets_the_duration() {
        let hits = [hit(MUGS, 0.8)];
        let a = extract(&req("how long until my mug is sent out", &hits, false));
        assert!(a.text.contains("2 working days"), "{}", a.text);
        assert!(!a.text.contains("¥59"), "{}", a.text);
    }

    #[test]
    fn a_yes_no_question_gets_the_sentence_that_says_yes_or_no() {
        let hits = [hit(MUGS, 0.8)];
        let a = extract(&req("can the mugs go in the microwave?", &hits, false));
        assert!(a.text.contains("not microwave-safe"), "{}", a.text);
    }

    #[test]
    fn a_complaint_gets_the_whole_short_rule() {
        let rule = "已开封的茶叶只有出现质量问题才可以退货。\n质量问题请在签收后 15 天内反馈，并提供照片。\n确认属于质量问题的，运费由我们承担。";
        let hits = [hit(rule, 0.8)];
        let question = "开封的茶有股霉味 这种能退吗";
        let one = extract(&req(question, &hits, true));
        assert!(!one.text.contains("15 天内"), "{}", one.text);
        let whole = extract(&GenerateRequest {
            whole_rule: true,
            ..req(question, &hits, true)
        });
        assert!(whole.text.contains("15 天内"), "{}", whole.text);
        assert!(whole.text.contains("运费由我们承担"), "{}", whole.text);
    }

    #[test]
    fn chinese_questions_pick_the_sentence_with_the_fact() {
        let page = "茶杯均为景德镇手工制作。\n每只茶杯售价 ¥45，两只起购。\n茶杯付款后 3 个工作日内发货。\n茶杯可以放进洗碗机，但不能放进微波炉。";
        let hits = [hit(page, 0.8)];
        let price = extract(&req("茶杯啥价", &hits, true));
        assert!(price.text.contains("¥45"), "{}", price.text);
        assert!(!price.text.contains("3 个工作日"), "{}", price.text);
        let when = extract(&req("付完款几天能发货啊", &hits, true));
        assert!(when.text.contains("3 个工作日"), "{}", when.text);
        let micro = extract(&req("能不能放微波炉", &hits, true));
        assert!(micro.text.contains("微波炉"), "{}", micro.text);
    }

    #[test]
    fn the_fact_may_come_from_the_second_hit() {
        let hits = [
            hit(
                "Gift boxes come with a card.\nEach box holds four tins.",
                0.8,
            ),
            hit(
                "Gift boxes cost ¥188 each.\nThey are wrapped by hand.",
                0.75,
            ),
        ];
        let a = extract(&req("what is the price of a gift box", &hits, false));
        assert!(a.text.contains("¥188"), "{}", a.text);
        assert_eq!(a.used, vec![1]);
    }

    #[test]
    fn an_faq_answer_is_given_whole() {
        let hits = [faq(
            "Do you ship abroad?",
            "We ship to Hong Kong and Singapore. Other countries are not served yet.",
            0.9,
        )];
        let a = extract(&req("do u ship overseas", &hits, false));
        assert_eq!(a.text, hits[0].text);
        assert_eq!(a.confidence, 0.9);
    }

    #[test]
    fn an_answer_from_the_other_language_carries_a_note() {
        let hits = [hit("The travel set costs ¥199 and includes two cups.", 0.8)];
        let a = extract(&req("旅行套装多少钱", &hits, true));
        assert!(a.text.starts_with("（英文资料）\n"), "{}", a.text);
        assert!(a.text.contains("¥199"), "{}", a.text);
        let same = extract(&req("how much is the travel set", &hits, false));
        assert!(!same.text.contains("英文资料"), "{}", same.text);
    }

    #[test]
    fn between_faq_entries_retrievals_order_stands() {
        // The second entry's question shares more of the customer's words; retrieval, which
        // read both entries whole, put the first one first.
        let hits = [
            faq(
                "I was charged twice for one purchase",
                "A duplicate charge is a pending authorisation; it drops off by itself.",
                0.8,
            ),
            faq(
                "Why is there an extra card payment on my card?",
                "Check the merchant name; if you do not know it, freeze your card.",
                0.75,
            ),
        ];
        let a = extract(&req(
            "why is my card payment showing up twice",
            &hits,
            false,
        ));
        assert_eq!(a.used, vec![0], "{}", a.text);
    }

    #[test]
    fn a_lower_faq_entry_answers_when_it_alone_states_the_kind_of_fact_asked() {
        let hits = [
            faq(
                "有没有无糖的点心？",
                "目前没有无糖点心。想少吃糖可以选第一款原味饼干。",
                0.8,
            ),
            faq(
                "点心含糖量是多少？",
                "原味饼干每块含糖 3 g，蛋黄酥每个含糖 9 g。",
                0.75,
            ),
        ];
        let a = extract(&req("你们的点心甜不甜 含糖量高不高", &hits, true));
        assert_eq!(a.used, vec![1], "{}", a.text);
        assert!(a.text.contains("3 g"), "{}", a.text);
    }
}
