//! Concepts shared by English and Chinese customer-service wording (`concepts.txt`): a word
//! that belongs to a concept also indexes the concept, on questions and knowledge alike, so
//! "cracked" meets "damaged", 运费 meets "shipping fee", and a Chinese question can find the
//! English page that answers it (and the reverse). Concept terms are written `~name`.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::en::stem;

/// Prefix of a concept term (`~refund`).
pub const CONCEPT: &str = "~";

const TABLE: &str = include_str!("concepts.txt");

struct Concepts {
    /// English stem or Chinese word → the concept terms it belongs to.
    of: HashMap<String, Vec<String>>,
}

fn concepts() -> &'static Concepts {
    static C: OnceLock<Concepts> = OnceLock::new();
    C.get_or_init(|| {
        let mut of: HashMap<String, Vec<String>> = HashMap::new();
        for line in TABLE.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((name, words)) = line.split_once(':') else {
                continue;
            };
            let term = format!("{CONCEPT}{}", name.trim());
            let (en, zh) = words.split_once('|').unwrap_or((words, ""));
            let keys = en
                .split_whitespace()
                .map(|w| stem(&w.to_lowercase()))
                .chain(zh.split_whitespace().map(str::to_string));
            for key in keys {
                let list = of.entry(key).or_default();
                if !list.contains(&term) {
                    list.push(term.clone());
                }
            }
        }
        Concepts { of }
    })
}

/// The concept terms of an English stem or a Chinese word (empty for most words).
pub fn of(word: &str) -> &'static [String] {
    concepts().of.get(word).map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_of_both_languages_share_concepts() {
        assert!(of(&stem("cracked")).contains(&"~damage".to_string()));
        assert!(of(&stem("damaged")).contains(&"~damage".to_string()));
        assert!(of("破损").contains(&"~damage".to_string()));
        assert!(of("运费").contains(&"~ship".to_string()));
        assert!(of("运费").contains(&"~price".to_string()));
        assert!(of(&stem("shipping")).contains(&"~ship".to_string()));
        assert!(of(&stem("refunds")).contains(&"~refund".to_string()));
        assert!(of("退款").contains(&"~refund".to_string()));
        assert!(of("the").is_empty() && of("的").is_empty());
    }

    #[test]
    fn a_word_with_an_unrelated_second_sense_does_not_mislead() {
        // "what time does support close" is about hours, not about deleting an account.
        let close = of(&stem("close"));
        assert!(close.contains(&"~hours".to_string()), "{close:?}");
        assert!(!close.contains(&"~delete".to_string()), "{close:?}");
        assert!(of(&stem("delete")).contains(&"~delete".to_string()));
    }

    #[test]
    fn the_table_parses_into_many_concepts() {
        let names: std::collections::HashSet<&String> = concepts().of.values().flatten().collect();
        assert!(names.len() >= 40, "{}", names.len());
    }
}
