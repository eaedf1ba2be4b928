//! Chinese as customers write it, brought to the form help-centre pages are written in, so
//! that a colloquial question and a formal answer meet (applied to both sides alike).
//!
//! 1. Traditional characters → simplified (`fast2s`, phrase-aware).
//! 2. Colloquial phrases → written ones (`colloquial.zh.txt` `[phrases]`): 啥 → 什么,
//!    咋 → 怎么, 多长时间 / 几天 → 多久, 多少钱 / 售价 → 价格, 邮费 → 运费 …
//! 3. A-not-A questions collapse to A: 能不能 → 能, 可不可以 → 可以, 有没有 → 有.
//!
//! After segmentation, [`canonical_word`] maps whole words (`能` → 可以) and [`is_filler`]
//! names the particles and courtesy phrases that carry no topic (亲, 哈, 呀, 请问, 一下…):
//! the analyzer drops them, so a chatty question is not scored as if it were about them.

use std::collections::HashMap;
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, MatchKind};

struct Tables {
    phrases: AhoCorasick,
    phrase_to: Vec<String>,
    words: HashMap<String, String>,
}

const TABLE: &str = include_str!("colloquial.zh.txt");

fn tables() -> &'static Tables {
    static T: OnceLock<Tables> = OnceLock::new();
    T.get_or_init(|| {
        let mut section = "";
        let mut patterns = Vec::new();
        let mut phrase_to = Vec::new();
        let mut words = HashMap::new();
        for line in TABLE.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('[') {
                section = line;
                continue;
            }
            let Some((canon, variants)) = line.split_once(':') else {
                continue;
            };
            let canon = canon.trim().to_string();
            for v in variants.split_whitespace() {
                match section {
                    "[phrases]" => {
                        patterns.push(v.to_string());
                        phrase_to.push(canon.clone());
                    }
                    _ => {
                        words.insert(v.to_string(), canon.clone());
                    }
                }
            }
        }
        let phrases = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .expect("the colloquial table is valid");
        Tables {
            phrases,
            phrase_to,
            words,
        }
    })
}

/// Traditional → simplified, colloquial phrases → written, A-not-A → A. Text without CJK
/// comes back unchanged.
pub fn normalize(text: &str) -> String {
    let simplified = fast2s::convert(text);
    let t = tables();
    let mut out = String::with_capacity(simplified.len());
    t.phrases
        .replace_all_with(&simplified, &mut out, |m, _, dst| {
            dst.push_str(&t.phrase_to[m.pattern().as_usize()]);
            true
        });
    units(&numerals(&collapse_a_not_a(&not_yet(
        &drop_recall_particle(&out),
    ))))
}

/// 没 before a verb is the spoken 未 ("not yet", "un-"): customers write 没拆封, 没付款,
/// 没收到 where help centres write 未拆封, 未付款, 未收到. 没有 ("there is no") is left alone.
fn not_yet(text: &str) -> String {
    if !text.contains('没') {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    chars
        .iter()
        .enumerate()
        .map(|(i, &c)| match chars.get(i + 1) {
            Some(&next) if c == '没' && super::is_cjk(next) && next != '有' => '未',
            _ => c,
        })
        .collect()
}

/// "满多少包邮来着" ("how much was it again"): 来着 at the end of a clause recalls, it asks
/// nothing; left in, jieba glues it to the topic word ("包/邮来/着").
fn drop_recall_particle(text: &str) -> String {
    const P: &str = "来着";
    if !text.contains(P) {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(P) {
        out.push_str(&rest[..i]);
        let after = &rest[i + P.len()..];
        let clause_end = after
            .chars()
            .next()
            .is_none_or(|c| !super::is_cjk(c) || "吗呢吧啊呀哦".contains(c));
        if !clause_end {
            out.push_str(P);
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Characters that count things: a Chinese numeral before one of them is a number.
fn is_measure(c: char) -> bool {
    "天个年月日号周次件张元块克斤位人岁点倍瓶罐盒包袋杯泡饼提小分秒公千毫厘份台部只条双套箱遍折层页寸"
        .contains(c)
}

fn digit(c: char) -> Option<u32> {
    Some(match c {
        '零' | '〇' => 0,
        '一' => 1,
        '二' | '两' => 2,
        '三' => 3,
        '四' => 4,
        '五' => 5,
        '六' => 6,
        '七' => 7,
        '八' => 8,
        '九' => 9,
        _ => return None,
    })
}

/// The value of a simple Chinese numeral (三, 十五, 二十, 三十五, 一百, 两百五十).
fn numeral_value(s: &[char]) -> Option<u32> {
    let (mut total, mut cur) = (0u32, None::<u32>);
    for &c in s {
        match c {
            '十' => {
                total += cur.unwrap_or(1) * 10;
                cur = None;
            }
            '百' => {
                total += cur? * 100;
                cur = None;
            }
            '千' => {
                total += cur? * 1000;
                cur = None;
            }
            _ => {
                if cur.is_some() {
                    return None;
                }
                cur = Some(digit(c)?);
            }
        }
    }
    Some(total + cur.unwrap_or(0))
}

/// 三天 → 3天, 十五个 → 15个, 两张 → 2张: the page writes "3 天". Only before a measure
/// character, so 一般, 一样, 统一 stay words; 一点 (a little) and 十分 (very) stay too.
fn numerals(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let is_num = |ch: char| digit(ch).is_some() || matches!(ch, '十' | '百' | '千');
        if is_num(c[i]) && !matches!(c[i], '千') {
            let mut j = i;
            while j < c.len() && is_num(c[j]) {
                j += 1;
            }
            let run = &c[i..j];
            let next = c.get(j).copied();
            let idiom = matches!(run, ['一']) && next == Some('点')
                || matches!(run, ['十']) && next == Some('分');
            if let (Some(n), Some(m)) = (numeral_value(run), next) {
                if is_measure(m) && !idiom && !(run.len() == 1 && run[0] == '千') {
                    out.push_str(&n.to_string());
                    i = j;
                    continue;
                }
            }
            out.extend(run);
            i = j;
            continue;
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

/// Units written in Chinese after a number (or 多少 / 几) as pages often write them:
/// 7克 → 7 g, 多少毫升 → 多少 ml.
fn units(text: &str) -> String {
    const UNITS: [(&str, &str); 7] = [
        ("毫升", "ml"),
        ("千克", "kg"),
        ("公斤", "kg"),
        ("厘米", "cm"),
        ("毫米", "mm"),
        ("公里", "km"),
        ("克", "g"),
    ];
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(ch) = rest.chars().next() {
        let after_number = out.trim_end().ends_with(|c: char| c.is_ascii_digit())
            || out.ends_with("多少")
            || out.ends_with('几');
        if after_number {
            if let Some((zh, unit)) = UNITS.iter().find(|(zh, _)| rest.starts_with(zh)) {
                out.push(' ');
                out.push_str(unit);
                out.push(' ');
                rest = &rest[zh.len()..];
                continue;
            }
        }
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    out
}

/// 能不能 → 能, 有没有 → 有, 可不可以 → 可以, 喜不喜欢 → 喜欢: the yes/no question form
/// asks about A; the knowledge states A.
fn collapse_a_not_a(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let a = c[i];
        if a_not_a_at(&c, i) {
            // Keep the second A (it may start a two-character word: 可不可以 → 可以).
            i += 2;
            continue;
        }
        out.push(a);
        i += 1;
    }
    out
}

/// Does an A-not-A question form (能不能, 有没有, 可不可以) start at `c[i]`?
fn a_not_a_at(c: &[char], i: usize) -> bool {
    let a = c[i];
    super::is_cjk(a)
        && a != '不'
        && a != '没'
        && c.get(i + 1).is_some_and(|n| *n == '不' || *n == '没')
        && c.get(i + 2) == Some(&a)
}

/// Does `text` ask a yes/no question in the A-not-A form (是不是, 有没有, 可不可以)?
pub fn has_a_not_a(text: &str) -> bool {
    let c: Vec<char> = text.chars().collect();
    (0..c.len()).any(|i| a_not_a_at(&c, i))
}

/// A whole word's written form (`能` → 可以), if the table has one.
pub fn canonical_word(word: &str) -> Option<&'static str> {
    tables().words.get(word).map(String::as_str)
}

/// Particles and courtesy phrases with no topic: 亲, 哈, 呀, 请问, 您好, 一下, 麻烦 …
pub fn is_filler(word: &str) -> bool {
    matches!(
        word,
        "亲" | "亲亲"
            // "满多少包邮来着" — "what was it again": recalls, asks nothing new.
            | "来着"
            | "嘞"
            | "咧"
            | "哈"
            | "哈哈"
            | "呀"
            | "啦"
            | "哦"
            | "噢"
            | "喔"
            | "嘛"
            | "呗"
            | "哇"
            | "咯"
            | "呐"
            | "啊"
            | "呢"
            | "吧"
            | "吗"
            | "么"
            | "哎"
            | "唉"
            | "嗯"
            | "诶"
            | "欸"
            | "嘿"
            | "哟"
            | "哒"
            | "捏"
            | "嘻嘻"
            | "呵呵"
            | "哈喽"
            | "嗨"
            | "请问"
            | "你好"
            | "您好"
            | "在吗"
            | "在不在"
            | "问一下"
            | "问下"
            | "想问"
            | "请教"
            | "麻烦"
            | "一下"
            | "谢谢"
            | "多谢"
            | "感谢"
    )
}

/// Function words that carry little meaning: weighted low, not dropped (否定 and 还 matter).
pub fn is_stopword(word: &str) -> bool {
    matches!(
        word,
        "的" | "了"
            | "我"
            | "你"
            | "您"
            | "他"
            | "她"
            | "它"
            | "我们"
            | "你们"
            | "您们"
            | "咱们"
            | "是"
            | "有"
            | "在"
            | "和"
            | "与"
            | "及"
            | "请"
            | "都"
            | "也"
            | "就"
            | "又"
            | "想"
            | "要"
            | "我想"
            | "想要"
            | "知道"
            | "告诉"
            | "就是"
            | "那个"
            | "这个"
            | "的话"
            | "一般"
            | "大概"
            | "然后"
            | "其实"
            | "怎么"
            | "什么"
            | "一个"
            | "这"
            | "那"
            | "个"
            | "下"
            | "把"
            | "被"
            | "给"
            | "让"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recall_particle_at_the_end_of_a_clause_goes() {
        assert_eq!(drop_recall_particle("满多少包邮来着"), "满多少包邮");
        assert_eq!(drop_recall_particle("客服几点下班来着？"), "客服几点下班？");
        assert_eq!(drop_recall_particle("他来着急了"), "他来着急了");
    }

    #[test]
    fn traditional_becomes_simplified() {
        assert_eq!(normalize("運費怎麼算"), "运费怎么算");
        assert_eq!(normalize("發票"), "发票");
    }

    #[test]
    fn colloquial_phrases_meet_their_written_form() {
        assert_eq!(normalize("保修多长时间"), normalize("保修多久"));
        assert_eq!(normalize("退货要几天"), "退货要多久");
        assert_eq!(normalize("这个啥价"), normalize("这个什么价"));
        // 怎么卖 / 咋卖 asks the price in shops.
        assert_eq!(normalize("这把壶咋卖"), normalize("这把壶多少钱"));
        assert_eq!(normalize("咋申请"), "怎么申请");
        assert_eq!(normalize("邮费谁出"), "运费谁出");
        assert_eq!(normalize("售价 ¥99"), normalize("多少钱 ¥99"));
        // Spoken 没 + verb is the written 未; 没有 stays.
        assert_eq!(normalize("没拆封的茶"), normalize("未拆封的茶"));
        assert_eq!(normalize("订单还没付款"), normalize("订单还未付款"));
        assert!(normalize("没有优惠").contains("没有"));
        assert_eq!(normalize("为啥扣款"), "为什么扣款");
        assert_eq!(normalize("免邮吗"), "包邮吗");
    }

    #[test]
    fn a_not_a_questions_collapse() {
        assert_eq!(normalize("能不能退"), "能退");
        assert_eq!(normalize("这个可不可以开发票"), "这个可以开发票");
        assert_eq!(normalize("有没有优惠"), "有优惠");
        assert_eq!(normalize("一不一样"), "一样");
        assert_eq!(normalize("喜不喜欢"), "喜欢");
        // Not the pattern: different characters around 不.
        assert_eq!(normalize("好不容易"), "好不容易");
        assert_eq!(normalize("不不不"), "不不不");
    }

    #[test]
    fn chinese_numerals_before_a_measure_become_digits() {
        assert_eq!(normalize("三天"), "3天");
        assert_eq!(normalize("七天无理由"), "7天无理由");
        assert_eq!(normalize("十五个"), "15个");
        assert_eq!(normalize("二十五岁"), "25岁");
        assert_eq!(normalize("两张券"), "2张券");
        assert_eq!(normalize("一百块"), "100块");
        // Words and idioms that only look like numbers stay.
        assert_eq!(normalize("一般"), "一般");
        assert_eq!(normalize("一样"), "一样");
        assert_eq!(normalize("有一点贵"), "有一点贵");
        assert_eq!(normalize("十分满意"), "十分满意");
        assert_eq!(normalize("统一"), "统一");
    }

    #[test]
    fn units_after_numbers_are_written_as_on_pages() {
        assert_eq!(normalize("放7克"), "放7 g ");
        assert_eq!(normalize("放多少克"), "放多少 g ");
        assert_eq!(normalize("能装多少毫升"), "能装多少 ml ");
        assert!(normalize("三百毫升").contains("300 ml"));
        // Not after a number: the word stays.
        assert_eq!(normalize("克服困难"), "克服困难");
        assert_eq!(normalize("巧克力"), "巧克力");
    }

    #[test]
    fn words_fillers_and_stopwords() {
        assert_eq!(canonical_word("能"), Some("可以"));
        assert_eq!(canonical_word("退款"), None);
        for w in ["亲", "哈", "呀", "请问", "一下"] {
            assert!(is_filler(w), "{w}");
        }
        assert!(!is_filler("不") && !is_stopword("不") && !is_stopword("没"));
        assert!(is_stopword("的") && is_stopword("你们"));
    }

    #[test]
    fn text_without_chinese_is_untouched() {
        assert_eq!(normalize("refund in 3 days"), "refund in 3 days");
    }
}
