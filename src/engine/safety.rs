//! Messages that must reach a person at once, and messages too vague to search.
//!
//! Both are judged on wording alone, before any knowledge is looked up: a customer who smells
//! gas is not helped by the best FAQ answer, and "hmm" has nothing to search for.

use crate::text::is_cjk;

/// Danger to people or property, as customers write it. Whole words for English (so "smoked
/// tea" is not smoke), substrings for Chinese. Categories: smoke and fire, burning smells,
/// gas, electricity, sparks, water where it should not be, injuries (incl. a child or pet).
const HAZARD_EN: &[&str] = &[
    "smoke",
    "smoking",
    "flames",
    "on fire",
    "caught fire",
    "a fire",
    "fire started",
    "burning smell",
    "smells burnt",
    "smell of burning",
    "smells like burning",
    "burnt smell",
    "smell gas",
    "smells of gas",
    "smell of gas",
    "gas smell",
    "gas leak",
    "leaking gas",
    "electric shock",
    "shocked me",
    "got shocked",
    "got a shock",
    "gave me a shock",
    "electrocuted",
    "sparks",
    "sparking",
    "sparked",
    "short circuit",
    "flooding",
    "flooded",
    "exploded",
    "explosion",
    "injured",
    "injury",
    "hurt myself",
    "got hurt",
    "is hurt",
    "was hurt",
    "burned myself",
    "burned my",
    "burnt my",
    "scalded",
    "bleeding",
    "hospital",
    "food poisoning",
    "vomiting",
    "throwing up",
    "broken glass",
    "glass in",
    "poisoned",
    "poisoning",
    "swallowed",
    "choking",
];

const HAZARD_ZH: &[&str] = &[
    "冒烟",
    "着火",
    "起火",
    "失火",
    "火灾",
    "冒火",
    "焦味",
    "烧焦",
    "煤气味",
    "燃气味",
    "煤气泄漏",
    "燃气泄漏",
    "漏气",
    "漏电",
    "被电",
    "电到",
    "触电",
    "电击",
    "火花",
    "短路",
    "漏水",
    "水漫",
    "淹了",
    "爆炸",
    "炸了",
    "受伤",
    "烫伤",
    "烧伤",
    "割伤",
    "划伤",
    "流血",
    "出血",
    "医院",
    "急诊",
    "上吐下泻",
    "呕吐",
    "食物中毒",
    "玻璃渣",
    "碎玻璃",
    "中毒",
    "误食",
    "吞下",
    "噎住",
];

fn has_phrase(words: &[&str], phrase: &str) -> bool {
    let pw: Vec<&str> = phrase.split(' ').collect();
    words.windows(pw.len()).any(|w| w == pw.as_slice())
}

/// Does the message report a danger to someone's safety?
pub fn is_hazard(text: &str) -> bool {
    let lower = text.to_lowercase();
    if HAZARD_ZH.iter().any(|p| lower.contains(p)) {
        return true;
    }
    let words = super::intent::words_of(&lower);
    HAZARD_EN.iter().any(|p| has_phrase(&words, p))
}

/// Words that name no topic: pronouns, negations, fillers, "I don't understand" and its
/// kin. A message made only of these (or of punctuation) gives search nothing to go on.
const VAGUE_EN: &[&str] = &[
    "a",
    "an",
    "the",
    "this",
    "that",
    "these",
    "those",
    "it",
    "its",
    "it's",
    "one",
    "ones",
    "what",
    "what's",
    "whats",
    "that's",
    "thats",
    "i'm",
    "im",
    "about",
    "and",
    "so",
    "then",
    "here",
    "there",
    "now",
    "i",
    "me",
    "my",
    "you",
    "your",
    "we",
    "is",
    "are",
    "was",
    "be",
    "do",
    "does",
    "did",
    "don't",
    "didn't",
    "doesn't",
    "dont",
    "not",
    "no",
    "nope",
    "nah",
    "still",
    "again",
    "yet",
    "just",
    "sure",
    "unsure",
    "know",
    "idk",
    "dunno",
    "understand",
    "get",
    "got",
    "mean",
    "meant",
    "confused",
    "lost",
    "hmm",
    "hm",
    "um",
    "umm",
    "uh",
    "uhh",
    "er",
    "erm",
    "eh",
    "huh",
    "meh",
    "ah",
    "oh",
    "emm",
    "well",
    "ok",
    "okay",
    "hmmm",
    "ummm",
    "right",
    "really",
    "quite",
    "very",
    "much",
    "any",
    "anything",
    "something",
    "else",
    "other",
    "same",
    "thing",
    "stuff",
    "like",
    "of",
    "to",
    "for",
    "with",
    "in",
    "on",
    "at",
    "wait",
    "sorry",
    "but",
    "or",
    "any",
    "more",
    "help",
];

const VAGUE_ZH: &[&str] = &[
    "这个",
    "那个",
    "这",
    "那",
    "这样",
    "那样",
    "这种",
    "那种",
    "这些",
    "那些",
    "它",
    "他",
    "她",
    "我",
    "你",
    "您",
    "不是",
    "不对",
    "不行",
    "没有",
    "没",
    "不",
    "还是",
    "还",
    "又",
    "也",
    "就",
    "都",
    "再",
    "不懂",
    "没懂",
    "不明白",
    "没明白",
    "不知道",
    "不清楚",
    "看不懂",
    "懂",
    "明白",
    "知道",
    "什么",
    "啥",
    "意思",
    "什么意思",
    "啥意思",
    "怎么",
    "说",
    "的",
    "了",
    "是",
    "呢",
    "吗",
    "吧",
    "啊",
    "呀",
    "嗯",
    "哦",
    "噢",
    "额",
    "呃",
    "唉",
    "哎",
    "emmm",
    "好",
    "好吧",
    "算了",
    "然后",
    "所以",
    "可是",
    "但是",
    "那么",
    "一下",
    "问题",
];

/// Is the message too vague to search ("hmm", "this one?", "不是这个", "。。。")?
pub fn is_vague(text: &str) -> bool {
    let lower = text.trim().to_lowercase();
    if lower.chars().count() > 24 {
        return false;
    }
    let mut rest: String = lower
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect();
    // Longest Chinese words first, so "不明白" goes before "明白".
    let mut zh: Vec<&str> = VAGUE_ZH.to_vec();
    zh.sort_by_key(|w| std::cmp::Reverse(w.chars().count()));
    for w in zh {
        rest = rest.replace(w, " ");
    }
    if rest.chars().any(is_cjk) {
        return false;
    }
    rest.split_whitespace()
        .all(|w| VAGUE_EN.contains(&w) || is_drawn_out_filler(w))
}

/// "emmm", "hmmmm", "ummmm", "uhhh", "ahhh": a filler held for a while.
fn is_drawn_out_filler(w: &str) -> bool {
    let mut dedup: Vec<char> = Vec::new();
    for c in w.chars() {
        if dedup.last() != Some(&c) {
            dedup.push(c);
        }
    }
    let d: String = dedup.into_iter().collect();
    matches!(
        d.as_str(),
        "em" | "hm" | "um" | "uh" | "ah" | "oh" | "eh" | "er" | "m"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hazards_in_both_languages() {
        for t in [
            "the kettle started smoking when I switched it on",
            "I can smell gas near the stove you installed",
            "it gave me a shock when I touched the base",
            "sparks came out of the plug",
            "my son burned his hand, he got hurt by the lid",
            "水壶底座冒烟了",
            "有一股焦味",
            "插上电被电了一下",
            "家里闻到煤气味",
            "孩子被烫伤了",
            "漏电了怎么办",
        ] {
            assert!(is_hazard(t), "{t}");
        }
        for t in [
            "do you sell smoked lapsang souchong",
            "how do I fire a teammate from the workspace",
            "水壶怎么清洗",
            "what is the water temperature for green tea",
        ] {
            assert!(!is_hazard(t), "{t}");
        }
    }

    #[test]
    fn vague_messages_in_both_languages() {
        for t in [
            "hmm",
            "not sure",
            "idk",
            "...",
            "?",
            "no that's not it",
            "still no",
            "this one?",
            "what about that",
            "嗯",
            "不是这个",
            "还是不懂",
            "emmm",
            "。。。",
            "唉",
            "这个呢",
            "你懂我意思吧",
        ] {
            assert!(is_vague(t), "{t}");
        }
        for t in [
            "refund",
            "how long is shipping",
            "运费多少",
            "这个茶怎么泡",
            "not working",
            "hello",
        ] {
            assert!(!is_vague(t), "{t}");
        }
    }
}
