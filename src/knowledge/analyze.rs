//! Text analysis shared by BM25 and the built-in embedder: one tokenizer, so the lexical and
//! the vector side see the same words. Queries and knowledge go through the same steps.
//!
//! - The text is normalized first ([`crate::text::normalize`]): full-width forms folded,
//!   traditional Chinese simplified, colloquial Chinese phrases written out (啥 → 什么,
//!   多长时间 → 多久, 能不能 → 能).
//! - Latin text: lower-cased alphanumeric runs, apostrophes dropped (`can't` → `cant`), chat
//!   shorthand spelled out (`u` → you, [`crate::text::en`]), long digit runs (order numbers,
//!   phones) folded to `#num`, then a light suffix stemmer (`activating`, `activated`,
//!   `activation` → `activat`).
//! - Chinese (and other Han/kana) runs: jieba words (precise mode, plus the search-mode parts
//!   of words of three or more characters: 保修期 → 保修期, 保修), whole words mapped to their
//!   written form (能 → 可以), particles and courtesy phrases dropped (亲, 呀, 请问, 一下),
//!   and the *spans* of topic words between them, from which callers take character n-grams
//!   (so a segmentation that differs between question and page still meets, while a chatty
//!   question does not gain n-grams of its chatter).

use std::sync::OnceLock;

use jieba_rs::Jieba;

pub use crate::text::is_cjk;
use crate::text::{concepts, en, normalize, zh};

/// One analyzed token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Token {
    /// A Latin/digit word: `raw` is lower-cased (char n-grams come from it), `stem` normalized.
    Word { raw: String, stem: String },
    /// A run of CJK text segmented by jieba.
    Cjk {
        /// Words in order (fillers dropped, written forms), then search-mode parts of long ones.
        words: Vec<String>,
        /// Where the search-mode parts start in `words`.
        parts_from: usize,
        /// Runs of consecutive topic words (no fillers, no stop words), as text.
        spans: Vec<String>,
    },
}

/// Digit runs this long or longer are identifiers (orders, phones), not vocabulary.
const LONG_NUMBER: usize = 5;

/// Online-shopping words jieba's dictionary cuts apart (天猫 → 天 / 猫): kept whole.
const VOCABULARY: &str = include_str!("../text/vocabulary.zh.txt");

/// jieba's own dictionary (jieba-rs's `src/data/dict.txt`, the same file from 0.7.4 to 0.11,
/// MIT, 349,045 words) less its rarest words, with the part-of-speech tags left out,
/// raw-deflated: each line `word frequency`. The crate's embedded copy stays decompressed in
/// a static for the life of the process (8 MB); kefu only cuts words, by frequency, so it
/// streams this copy instead. Left out (104,629 words): those jieba saw at most twice, and
/// those seen three times with four or more characters; mostly names, fragments and idioms
/// (于华中, 围坐在, 孕育出), which a help centre's or a customer's text rarely contains and
/// which, being so rare, lose to the cut into their common parts anyway. Kept: 244,416, so
/// jieba-rs's trie table (16 bytes a slot, kept at most 3/4 full, sized by powers of two from
/// the word count) is 8 MB instead of 16, and its word records shrink with it: `kefu serve`
/// holds ~11 MB less (12k English FAQ entries 124 → 112 MB; a one-case `kefu eval` peaks at
/// 34 MB instead of 47 and takes 0.15 s instead of 0.23), while qingshan's cases (both
/// halves, every set), the bundled eval sets and `examples/calibrate`'s hit@1 on every dev
/// set give the same figures as with the whole dictionary. Elsewhere the cuts are jieba's own
/// (tested), and the frequencies are jieba's.
/// Made with: `awk '$2 >= 4 || ($2 == 3 && length($1) <= 3) {print $1, $2}' dict.txt` in a
/// UTF-8 locale (gawk counts characters), deflated (zlib, level 9, raw, wbits −15).
const DICTIONARY: &[u8] = include_bytes!("../text/jieba-dict.deflate");

fn load_jieba() -> Jieba {
    let mut words = std::io::BufReader::new(libflate::deflate::Decoder::new(DICTIONARY));
    Jieba::with_dict(&mut words).expect("the bundled jieba dictionary is well formed")
}

fn jieba() -> &'static Jieba {
    static JIEBA: OnceLock<Jieba> = OnceLock::new();
    JIEBA.get_or_init(|| {
        let mut jieba = load_jieba();
        for word in VOCABULARY
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(str::split_whitespace)
        {
            // No frequency: jieba gives the word one just high enough to be cut whole.
            jieba.add_word(word, None, None);
        }
        jieba
    })
}

/// Split `text` into tokens. Never panics; empty input gives no tokens.
pub fn tokens(text: &str) -> Vec<Token> {
    let text = normalize(text);
    let mut out = Vec::new();
    let mut word = String::new();
    let mut cjk = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if is_cjk(c) {
            flush_word(&mut word, &mut out);
            cjk.push(c);
        } else if c.is_alphanumeric() {
            flush_cjk(&mut cjk, &mut out);
            word.extend(c.to_lowercase());
        } else if (c == '\'' || c == '’') && !word.is_empty() {
            // "can't", "card's": keep the word together, drop the apostrophe.
            if !chars
                .peek()
                .is_some_and(|n| n.is_alphanumeric() && !is_cjk(*n))
            {
                flush_word(&mut word, &mut out);
            }
        } else {
            flush_word(&mut word, &mut out);
            flush_cjk(&mut cjk, &mut out);
        }
    }
    flush_word(&mut word, &mut out);
    flush_cjk(&mut cjk, &mut out);
    out
}

fn flush_word(word: &mut String, out: &mut Vec<Token>) {
    if word.is_empty() {
        return;
    }
    let raw = std::mem::take(word);
    let raw = if raw.len() >= LONG_NUMBER && raw.bytes().all(|b| b.is_ascii_digit()) {
        "#num".to_string()
    } else if let Some(w) = en::canonical_word(&raw) {
        w.to_string()
    } else {
        raw
    };
    // "250g" as customers type it meets "250 g" as pages write it (and the other way round).
    if let Some((number, unit)) = quantity(&raw) {
        for raw in [number, unit] {
            let raw = raw.to_string();
            out.push(Token::Word {
                stem: stem(&raw),
                raw,
            });
        }
        return;
    }
    let stem = stem(&raw);
    out.push(Token::Word { raw, stem });
}

/// Units written glued to their number ("250g", "500ml", "2kg"): split so the number and the
/// unit are words of their own.
const UNITS: &[&str] = &[
    "g", "kg", "mg", "ml", "l", "cl", "oz", "lb", "lbs", "cm", "mm", "m", "km", "gb", "mb", "kb",
    "tb", "pcs", "pc",
];

/// A number followed by one of [`UNITS`], split into the two.
fn quantity(word: &str) -> Option<(&str, &str)> {
    let at = word.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = word.split_at(at);
    (!number.is_empty() && UNITS.contains(&unit)).then_some((number, unit))
}

fn flush_cjk(run: &mut String, out: &mut Vec<Token>) {
    if run.is_empty() {
        return;
    }
    let mut words = Vec::new();
    let mut spans = Vec::new();
    let mut span = String::new();
    let mut parts = Vec::new();
    for w in jieba().cut(run, false) {
        let w = w.word.trim();
        if w.is_empty() {
            continue;
        }
        if zh::is_filler(w) {
            spans.extend((!span.is_empty()).then(|| std::mem::take(&mut span)));
            continue;
        }
        let w = zh::canonical_word(w).unwrap_or(w);
        if zh::is_stopword(w) {
            spans.extend((!span.is_empty()).then(|| std::mem::take(&mut span)));
        } else {
            span.push_str(w);
            if w.chars().count() >= 3 {
                parts.extend(
                    jieba()
                        .cut_for_search(w, false)
                        .into_iter()
                        .map(|p| p.word)
                        .filter(|p| *p != w && p.chars().count() >= 2)
                        .map(str::to_string),
                );
            }
        }
        words.push(w.to_string());
    }
    spans.extend((!span.is_empty()).then_some(span));
    let parts_from = words.len();
    words.extend(parts);
    run.clear();
    if !words.is_empty() {
        out.push(Token::Cjk {
            words,
            spans,
            parts_from,
        });
    }
}

pub use crate::text::en::stem;

/// Lexical terms for BM25: Latin stems; for CJK runs the words (a long word's search-mode
/// parts of three characters or more too) plus the characters and character bigrams of each
/// span (marked `1:` and `2:`; see [`UNIGRAM`], [`BIGRAM`]); for both, the concepts the words
/// and parts belong to (`~refund`, see [`crate::text::concepts`]).
pub fn terms(text: &str) -> Vec<String> {
    analyzed(text, false)
}

/// [`terms`] with every search-mode part a word, as the intent classifier's examples were
/// written and measured with (its naive Bayes reads 什么 in 为什么 as a feature of its own).
pub fn terms_with_parts(text: &str) -> Vec<String> {
    analyzed(text, true)
}

fn analyzed(text: &str, short_parts: bool) -> Vec<String> {
    let mut out: Vec<String> = stated_facts(text).map(str::to_string).collect();
    let mut negated = false;
    for t in tokens(text) {
        match t {
            Token::Word { stem, raw } => {
                // "haven't opened" is "unopened", as 没拆封 is 未拆封: the page's rule for
                // unopened items must meet it, not the rule for opened ones.
                let stem = if negated && raw.len() > 4 && raw.ends_with("ed") {
                    self::stem(&format!("un{raw}"))
                } else {
                    stem
                };
                negated = is_negator(&raw)
                    || (negated && matches!(raw.as_str(), "been" | "yet" | "be" | "even" | "ever"));
                out.extend(concepts::of(&stem).iter().cloned());
                out.push(stem);
            }
            Token::Cjk {
                words,
                spans,
                parts_from,
            } => {
                negated = false;
                for w in &words {
                    out.extend(concepts::of(w).iter().cloned());
                }
                // A two-character part of a longer word (大红 / 红袍 of 大红袍) is one of the
                // span's bigrams already: counted again as a word, a long name would outweigh
                // the other words of the question by its length alone ("铁观音能放冰箱吗"
                // is about the fridge as much as the tea). Its concepts still count.
                out.extend(
                    words
                        .into_iter()
                        .enumerate()
                        .filter(|(i, w)| short_parts || *i < parts_from || w.chars().count() > 2)
                        .map(|(_, w)| w),
                );
                for span in spans {
                    let chars: Vec<char> = span.chars().collect();
                    for c in &chars {
                        out.push(format!("{UNIGRAM}{c}"));
                    }
                    for pair in chars.windows(2) {
                        out.push(format!("{BIGRAM}{}{}", pair[0], pair[1]));
                    }
                }
            }
        }
    }
    out
}

/// Words that negate the participle after them ("not opened", "haven't been used").
fn is_negator(raw: &str) -> bool {
    matches!(
        raw,
        "not"
            | "never"
            | "no"
            | "havent"
            | "hasnt"
            | "hadnt"
            | "didnt"
            | "dont"
            | "doesnt"
            | "isnt"
            | "wasnt"
            | "arent"
            | "werent"
    )
}

/// The concepts of the facts a text states by their form rather than by a word: an amount
/// of money is a price (`~price`) though the page never writes "price", a number of days a
/// time (`~time`), `80°C` a temperature, `250 g` a weight. A question asking for one (多少钱,
/// "what temperature") then meets the pages that give it, in either language.
pub fn stated_facts(text: &str) -> impl Iterator<Item = &'static str> + '_ {
    static FACTS: OnceLock<Vec<(regex::Regex, &'static str)>> = OnceLock::new();
    let facts = FACTS.get_or_init(|| {
        let r = |p: &str| regex::Regex::new(p).expect("valid fact pattern");
        vec![
            (
                r(r"(?i)[¥￥$€£]\s?\d|\d\s?(元|块钱|港币|新币|美元)|\b(HK|S|US)\$\s?\d|\bRM\s?\d|\b(USD|CNY|RMB|HKD|SGD)\s?\d"),
                "~price",
            ),
            (
                r(r"(?i)\d\s?(个)?(工作日|天|小时|分钟|周|个月|年)|\d\s?(business |working )?(days?|hours?|minutes?|weeks?|months?|years?)\b|(^|[^\d])\d{1,2}[:：]\d{2}($|[^\d])"),
                "~time",
            ),
            (r(r"(?i)\d\s?(°\s?[CF]|℃|℉)"), "~temperature"),
            (r(r"(?i)\d\s?(g|kg|克|公斤|千克)(\b|[^A-Za-z]|$)"), "~weight"),
        ]
    });
    facts
        .iter()
        .filter(move |(pattern, _)| pattern.is_match(text))
        .map(|(_, concept)| *concept)
}

/// Prefix of a character-bigram term (`2:退款`).
pub const BIGRAM: &str = "2:";
/// Prefix of a character term (`1:退`): a question's 退 meets a page's 退货.
pub const UNIGRAM: &str = "1:";

/// Words that ask (how, when, where, 多久, 哪里 …): they tell the kind of answer wanted
/// (see `text::question`), hardly what it is about.
pub fn is_question_word(w: &str) -> bool {
    matches!(
        w,
        "how"
            | "when"
            | "where"
            | "wher"
            | "why"
            | "whi"
            | "whose"
            | "whos"
            // "how long / how soon / how often": the English of 多久, asking for a time.
            | "long"
            | "soon"
            | "often"
            | "whether"
            | "多久"
            | "哪里"
            | "为什么"
            | "什么时候"
            | "怎么样"
            | "怎么办"
            | "多少"
            | "几"
    )
}

/// Function words that carry little meaning; the embedder gives them a low weight rather
/// than dropping them ("how" vs "why" still separates intents).
pub fn is_stopword(w: &str) -> bool {
    matches!(
        w,
        "a" | "an"
            | "the"
            | "i"
            | "me"
            | "my"
            | "to"
            | "of"
            | "in"
            | "on"
            | "for"
            | "is"
            | "are"
            | "wa"
            | "was"
            | "be"
            | "it"
            | "thi"
            | "this"
            | "that"
            | "do"
            | "doe"
            | "does"
            | "did"
            | "you"
            | "your"
            | "and"
            | "or"
            | "have"
            | "has"
            | "had"
            | "am"
            | "with"
            | "at"
            | "from"
            | "so"
            | "if"
            | "there"
            | "some"
            | "any"
            | "we"
            | "our"
            | "will"
            | "would"
            | "could"
            | "can"
            | "should"
            | "please"
            | "pleas"
            | "just"
            | "get"
            | "im"
            | "want"
            | "need"
            | "know"
            | "like"
            | "about"
            | "by"
            | "as"
            | "but"
            | "not"
            | "what"
            | "which"
            | "who"
            | "whom"
            | "into"
            | "up"
            | "out"
            | "too"
            | "very"
            | "much"
            | "all"
            // Stems of the words above ("have" → "hav"), as the analyzer emits them.
            | "hav"
            | "ther"
            | "som"
            | "lik"
            | "veri"
    ) || zh::is_stopword(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_dictionary_is_jiebas_less_its_rarest_words() {
        use std::io::Read;
        let own = Jieba::new();
        let ours = load_jieba();
        let mut words = String::new();
        libflate::deflate::Decoder::new(DICTIONARY)
            .read_to_string(&mut words)
            .unwrap();
        let mut kept = 0;
        for line in words.lines() {
            let (word, freq) = line.split_once(' ').unwrap();
            let freq: usize = freq.parse().unwrap();
            assert!(own.has_word(word), "{word} is not jieba's");
            assert!(
                freq >= 4 || (freq == 3 && word.chars().count() <= 3),
                "{line} should have been left out"
            );
            kept += 1;
        }
        assert_eq!(kept, 244_416);
        // Help-centre pages and a customer's message cut as with jieba's own dictionary,
        // except where its cut used a word left out.
        let pages = [
            include_str!("../../knowledge/guides/billing.zh.md"),
            include_str!("../../knowledge/policies/refund.zh.md"),
            include_str!("../../knowledge/guides/account.zh.md"),
            "亲 这个茶壶咋还没发货啊 能不能帮我查一下物流 明前龙井和碧螺春哪个更香",
        ];
        for text in pages {
            let cuts = [
                (own.cut(text, false), ours.cut(text, false)),
                (
                    own.cut_for_search(text, false),
                    ours.cut_for_search(text, false),
                ),
            ];
            for (theirs, mine) in cuts {
                let spans = |cut: &[jieba_rs::Token<'_>]| -> Vec<(usize, usize)> {
                    cut.iter().map(|t| (t.start, t.end)).collect()
                };
                let mine_spans = spans(&mine);
                // Words left out, and the parts search mode adds inside them.
                let left_out: Vec<(usize, usize)> = theirs
                    .iter()
                    .filter(|t| t.word.chars().count() > 1 && !ours.has_word(t.word))
                    .map(|t| (t.start, t.end))
                    .collect();
                for t in &theirs {
                    if !mine_spans.contains(&(t.start, t.end)) {
                        assert!(
                            left_out.iter().any(|&(s, e)| s <= t.start && t.end <= e),
                            "{:?} cut differently",
                            t.word
                        );
                    }
                }
            }
        }
        // The frequencies are jieba's, so a new word is given the same one.
        for word in ["天猫", "顺丰到付", "退款", "茶友会"] {
            let (a, b) = (own.suggest_freq(word), ours.suggest_freq(word));
            assert!(a.abs_diff(b) * 100 <= a, "{word}: {a} vs {b}");
        }
    }

    fn stems(text: &str) -> Vec<String> {
        tokens(text)
            .into_iter()
            .filter_map(|t| match t {
                Token::Word { stem, .. } => Some(stem),
                Token::Cjk { .. } => None,
            })
            .collect()
    }

    #[test]
    fn inflections_meet() {
        for group in [
            &[
                "activate",
                "activating",
                "activated",
                "activation",
                "activates",
            ][..],
            &["charge", "charges", "charged", "charging"],
            &["apply", "applies", "applied"],
            &["stop", "stopped", "stopping", "stops"],
            &["card", "cards", "card's"],
            &["decline", "declined", "declines"],
        ] {
            let s: Vec<_> = group.iter().map(|w| stems(w)).collect();
            assert!(s.windows(2).all(|p| p[0] == p[1]), "{group:?} → {s:?}");
        }
    }

    #[test]
    fn words_apostrophes_numbers() {
        assert_eq!(stems("Can't I"), ["cannot", "i"]);
        assert_eq!(stems("order 732201349959, now!"), ["order", "#num", "now"]);
        // A unit glued to its number is a word of its own, as when written apart.
        assert_eq!(stems("那250g的呢 500ML"), stems("那 250 g 的呢 500 ml"));
        assert_eq!(stems("g2 5star 3rd"), ["g2", "5star", "3rd"]);
        assert_eq!(stems("top-up 24h"), ["top", "up", "24h"]);
        assert_eq!(stems("'quoted'"), ["quot"]);
    }

    #[test]
    fn chinese_is_segmented_and_bigrammed() {
        let toks = tokens("我想申请退款refund");
        assert!(
            matches!(&toks[0], Token::Cjk { words, .. } if words.contains(&"退款".to_string()))
        );
        assert!(matches!(&toks[1], Token::Word { stem, .. } if stem == "refund"));
        let t = terms("申请退款");
        assert!(t.contains(&"退款".to_string()));
        assert!(t.contains(&"2:请退".to_string()));
    }

    #[test]
    fn a_long_words_two_character_parts_count_as_its_bigrams_not_again_as_words() {
        let t = terms("运费险怎么买");
        assert!(t.contains(&"运费险".to_string()));
        // 运费 is a part of 运费险: its bigram and its concepts stay, the word does not.
        assert!(!t.contains(&"运费".to_string()), "{t:?}");
        assert!(t.contains(&"2:运费".to_string()));
        assert!(t.contains(&"~ship".to_string()));
        // Written on its own, the word is a word.
        assert!(terms("运费怎么算").contains(&"运费".to_string()));
    }

    #[test]
    fn shopping_platforms_and_couriers_stay_whole_words() {
        // jieba's own dictionary cuts these into single characters (天 then reads as "day").
        for (text, word) in [
            ("我在京东下的单能退吗", "京东"),
            ("拼多多上买的也算吗", "拼多多"),
            ("能不能用极兔发货", "极兔"),
            ("可以用花呗付款吗", "花呗"),
        ] {
            let t = terms(text);
            assert!(t.iter().any(|w| w == word), "{text}: {t:?}");
        }
    }

    #[test]
    fn function_words_are_weak_after_stemming_too() {
        // The lists hold stems as the analyzer emits them: "where" is looked up as "wher".
        // Negations (not, don't, can't) are not here: they change what is asked.
        for w in [
            "where", "whose", "have", "having", "there", "there's", "some", "like", "very",
        ] {
            for s in stems(w) {
                assert!(is_stopword(&s) || is_question_word(&s), "{w} → {s}");
            }
        }
    }

    #[test]
    fn facts_stated_by_their_form_index_their_concept() {
        let facts = |t: &str| stated_facts(t).collect::<Vec<_>>();
        assert_eq!(facts("The kettle costs ¥120."), ["~price"]);
        assert_eq!(facts("这款杯子售价 45 元"), ["~price"]);
        assert_eq!(facts("Parcels arrive within 3 business days."), ["~time"]);
        assert_eq!(facts("退款 5 个工作日内到账"), ["~time"]);
        assert_eq!(facts("Support is online 09:00–21:00."), ["~time"]);
        assert_eq!(facts("16:00前付款当天发货"), ["~time"]);
        assert!(facts("Call 400-820-1234").is_empty());
        assert_eq!(facts("Heat the milk to 65°C first."), ["~temperature"]);
        assert_eq!(facts("每包 500 g"), ["~weight"]);
        assert!(facts("Open Settings and choose Security.").is_empty());
        assert!(
            facts("We have 10 good reasons").is_empty(),
            "g of good is no gram"
        );
        // A question asking for one meets the page that states it.
        assert!(terms("what temperature should the water be").contains(&"~temperature".into()));
        assert!(terms("Heat the milk to 65°C first.").contains(&"~temperature".into()));
    }

    #[test]
    fn a_negated_participle_is_its_un_form() {
        let has = |text: &str, term: &str| terms(text).iter().any(|t| t == term);
        let unopened = stem("unopened");
        for q in [
            "can i return tea i haven't opened",
            "it's not been opened",
            "never opened, still sealed",
            "Unopened tea can be returned within 7 days",
        ] {
            assert!(has(q, &unopened), "{q}");
            assert!(!has(q, &stem("opened")), "{q}: not the opened rule's word");
        }
        // Only the word right after the negation (or after "been"/"yet").
        assert!(has("not sure, I opened it", &stem("opened")));
        assert!(!has("not sure, I opened it", &unopened));
        assert!(has("the box was not delivered", &stem("undelivered")));
        assert!(has("I opened it", &stem("opened")));
    }

    #[test]
    fn odd_input_does_not_panic() {
        for s in ["", "   ", "'''", "’s", "\u{0}\u{FFFF}", "𠀀𠀁", "ﬁ ǅ İ"] {
            let _ = tokens(s);
            let _ = terms(s);
        }
    }
}
