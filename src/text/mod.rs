//! Text helpers every layer shares: language detection, width folding, Chinese and English
//! normalisation of customer wording, sentence splitting. Low-level on purpose: knowledge,
//! providers and engine all use it, it uses none of them.

pub mod concepts;
pub mod en;
pub mod question;
pub mod sentences;
pub mod zh;

pub use sentences::{join_sentences, split_sentences, word_count};

/// Han ideographs, kana and CJK compatibility ranges: segmented with jieba, not split on
/// whitespace (Chinese has none).
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF   // hiragana, katakana
        | 0x3400..=0x4DBF // CJK extension A
        | 0x4E00..=0x9FFF // CJK unified ideographs
        | 0xF900..=0xFAFF // compatibility ideographs
        | 0x20000..=0x2FA1F)
}

/// The language a customer writes in, as far as kefu tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    pub fn of(text: &str) -> Lang {
        if looks_chinese(text) {
            Lang::Zh
        } else {
            Lang::En
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }
}

/// Written mostly in Chinese? A Chinese character carries about what three Latin letters do
/// (a Chinese word is ~1.5 characters, an English one ~4.7 letters), so Chinese wins when
/// 3 × its characters reach 60 % of the Latin letters: "运费 how much" and
/// "refund 几天到账" are Chinese customers mixing in English, "what does 发票 mean for my
/// company order" is English with one borrowed term.
pub fn looks_chinese(text: &str) -> bool {
    let (mut cjk, mut latin) = (0usize, 0usize);
    for c in text.chars() {
        if is_cjk(c) {
            cjk += 1;
        } else if c.is_alphabetic() {
            latin += 1;
        }
    }
    cjk > 0 && cjk * 5 >= latin
}

/// Damerau-Levenshtein distance ≤ 1 (a typo: one insert, delete, substitute or swap).
pub fn within_one_edit(a: &str, b: &str) -> bool {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    if prefix == a.len() && prefix == b.len() {
        return true;
    }
    let (ra, rb) = (&a[prefix..], &b[prefix..]);
    if ra.len() == rb.len() {
        // substitute, or swap of two neighbours
        ra[1..] == rb[1..]
            || (ra.len() >= 2 && ra[0] == rb[1] && ra[1] == rb[0] && ra[2..] == rb[2..])
    } else if ra.len() > rb.len() {
        ra[1..] == *rb
    } else {
        *ra == rb[1..]
    }
}

/// Letters one form of a word may add to another the light stemmer leaves apart: -er, -al,
/// -ment ([`longer_form`]).
pub const MAX_SUFFIX: usize = 3;
/// The shortest word a longer form of it is recognized by ([`longer_form`]).
pub const MIN_FORM: usize = 5;

/// Is `long` a longer form of `short` that stemming leaves apart (remind / reminder, renew /
/// renewal, cancel / cancellat)? `short` starts it, has [`MIN_FORM`]+ letters, and `long` is
/// at most [`MAX_SUFFIX`] letters longer. Retrieval and the built-in generator match words by
/// this one rule.
pub fn longer_form(short: &str, long: &str) -> bool {
    let (s, l) = (short.chars().count(), long.chars().count());
    s >= MIN_FORM && l > s && l - s <= MAX_SUFFIX && long.starts_with(short)
}

/// Full-width ASCII forms (`ＡＢＣ１２３？`) and the ideographic space folded to ASCII, the way
/// Chinese input methods mix them in. Everything else is kept.
pub fn fold_width(text: &str) -> String {
    text.chars()
        .map(|c| match c as u32 {
            0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
            0x3000 => ' ',
            _ => c,
        })
        .collect()
}

/// The form text is analysed in (for search and intent, never shown to anyone): width
/// folded, traditional characters as simplified, Chinese colloquial forms as their written
/// equivalents (see [`zh::normalize`]).
pub fn normalize(text: &str) -> String {
    let folded = fold_width(text);
    if folded.chars().any(is_cjk) {
        zh::normalize(&folded)
    } else {
        folded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_detection_counts_letters_not_bytes() {
        assert!(looks_chinese("怎么export数据"));
        assert!(looks_chinese("运费 how much"));
        assert!(looks_chinese("refund 几天到账"));
        assert!(!looks_chinese("How do I export data?"));
        assert!(!looks_chinese("what does 发票 mean for my company order"));
        assert!(!looks_chinese("12345 ?!"));
        assert_eq!(Lang::of("亲 在吗"), Lang::Zh);
        assert_eq!(Lang::of("hello"), Lang::En);
    }

    #[test]
    fn full_width_forms_fold_to_ascii() {
        assert_eq!(fold_width("ＱＳ１２３，ａｂｃ？"), "QS123,abc?");
        assert_eq!(fold_width("运费\u{3000}多少"), "运费 多少");
        assert_eq!(fold_width("¥368。"), "¥368。");
    }
}
