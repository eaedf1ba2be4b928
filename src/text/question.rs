//! What kind of fact a question asks for, and whether a sentence carries one: the built-in
//! generator answers "多少钱" with the sentence that has the price, "how long" with the one
//! that has the duration.

use std::sync::OnceLock;

use regex::Regex;

use super::normalize;

/// The kind of fact asked for. Checked in this order: a question asking "how much does it
/// cost" is a price question, not a count question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asks {
    /// 多少钱 / 价格 / 贵不贵 / how much is / price / cost / fee.
    Price,
    /// 多久 / 什么时候 / 几点 / 快不快 / how long / when / what time / deadline.
    Time,
    /// 多少 / 几个 / 最多 / 高不高 (a degree asked as A-not-A is asked as a number) / how
    /// many / maximum / limit.
    Amount,
    /// 哪里 / 地址 / where / address.
    Place,
    /// 可以…吗 / 能 / 是不是 / can I / do you / is it.
    YesNo,
    /// 怎么 / how do I / steps: a procedure.
    Procedure,
    Other,
}

struct Patterns {
    /// Asking for a price ("how much is", 多少钱, 运费多少).
    price_q: Regex,
    /// Naming a price without asking for one ("when is the fee charged"): a price
    /// question unless a time word asks for something else.
    price_topic_q: Regex,
    time_q: Regex,
    amount_q: Regex,
    place_q: Regex,
    yes_no_q: Regex,
    procedure_q: Regex,
    price: Regex,
    time: Regex,
    amount: Regex,
    place: Regex,
    yes_no: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| {
        let r = |s: &str| Regex::new(s).expect("valid pattern");
        Patterns {
            // Questions, on normalized text (多少钱 / 售价 → 价格, 多长时间 / 几天 → 多久).
            price_q: r(r"(?i)贵不贵|贵吗|多少钱|啥价|什么价|几块钱|多少块|卖多少|[费价钱]\s*(是|要|大概)?\s*多少|\bhow much (is|are|does|do|for|would|will)\b|\bhow expensive\b|\bin (rmb|hkd|sgd|usd|dollars|yuan)\b"),
            price_topic_q: r(r"(?i)价格|费用|收费|\bprices?\b|\bcosts?\b|\bfees?\b|\bcharges?\b"),
            time_q: r(r"(?i)久不久|快不快|长不长|多久|什么时候|几点|几号|哪天|截止|期限|有效期|保质期|\bhow long\b|^\s*(and |so |but )?when\b|[,?.]\s*when\b|\bwhat time\b|\bwhat day\b|\bhow (many|soon) (days|hours|weeks|months|years)\b|\bdeadline\b|\buntil\b|\bexpire|\bhow soon\b|\bhow quickly\b"),
            amount_q: r(r"(?i)高不高|多不多|大不大|重不重|多少|几[个张次件位份款种遍]|最多|最少|上限|下限|\bhow many\b|\bhow much\b|\bmaximum\b|\bminimum\b|\blimit\b|\bat (least|most)\b|\bhow big\b|\bhow heavy\b"),
            place_q: r(r"(?i)哪里|地址|在哪|\bwhere\b|\baddress\b"),
            yes_no_q: r(r"(?i)^(can|could|do|does|did|is|are|was|will|would|should|may|am|have|has)\b|可以|能|是|会|需要|有|[吗么]\s*[?？]?\s*$|\bor not\b"),
            procedure_q: r(r"(?i)怎么|步骤|流程|\bhow (do|can|to|should)\b|\bsteps?\b|\bprocess\b"),
            // Sentences, on the text as written.
            price: r(r"(?i)[¥￥$€£]|HK\$|S\$|\bRM\s?\d|\d\s*(元|块|港币|新币|美元)|\b(USD|CNY|RMB|HKD|SGD)\b|价格|售价|收费|免费|\bfree\b|\d+\s*折|\d+%\s*off"),
            time: r(r"(?i)\d\s*(个)?(工作日|天|日|小时|分钟|秒|周|星期|个月|月|年)|\d{1,2}[:：]\d{2}|\d\s*(business |working |calendar )?(days?|hours?|minutes?|weeks?|months?|years?)\b|\d(st|nd|rd|th)\b|(当天|次日|当日|同一天|same day|next day|immediately|within|立即|马上|以内)"),
            // A digit, or a count in words ("twice", 两次, 三泡).
            amount: r(r"(?i)\d|\b(once|twice|thrice|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|dozen)\b|(^|[^第])[一二两三四五六七八九十百千万]\s*[个次遍泡张件位份款种天周年月倍]"),
            // An address stated, not the word: "地址：…" / "address: …", a street with its
            // number, a postcode; "一次最多导入 500 个地址" and "enter your address" state none.
            place: r(r"(?i)地址\s*[:：是为]|[路街道巷弄]\s*\d+\s*号|[省市区县]\S{0,8}[路街]|邮编\s*\d|\baddress(es)?\s*(is|are|:)|\b\d+[a-z]?,?\s+([a-z]+\s+){1,3}(road|rd|street|st|avenue|ave|lane|ln|boulevard|blvd|drive|dr)\b|\b(post ?code|zip|p\.?\s?o\.? box)\b|\bwarehouse\b|仓库"),
            yes_no: r(r"(?i)可以|不能|能|无法|支持|不会|需要|提供|接受|只能|允许|不参与|参与|没有|\b(can|cannot|can't|may|must|not|no|only|yes|do not|don't|does not|doesn't|are not|is not|won't|never|always)\b"),
        }
    })
}

impl Asks {
    /// What `question` asks for.
    pub fn of(question: &str) -> Asks {
        let p = patterns();
        let q = normalize(question).to_lowercase();
        let q = q.trim();
        // What the question word asks for decides: "what day do you charge" asks for a
        // day, "how much is the fee" for a price; a price named without either is asked for.
        // The question words are also read on the question as written: normalizing folds
        // 多少钱 into 价格 (a word a time question may also use) and 快不快 / 高不高 into 快 / 高
        // (the yes/no form).
        let raw = question.to_lowercase();
        let asks = |r: &Regex| r.is_match(q) || r.is_match(&raw);
        if asks(&p.price_q) {
            Asks::Price
        } else if asks(&p.time_q) {
            Asks::Time
        } else if p.price_topic_q.is_match(q) {
            Asks::Price
        } else if asks(&p.amount_q) {
            Asks::Amount
        } else if p.place_q.is_match(q) {
            Asks::Place
        } else if p.procedure_q.is_match(q) && !p.yes_no_q.is_match(q) {
            Asks::Procedure
        } else if p.yes_no_q.is_match(q) {
            Asks::YesNo
        } else if p.procedure_q.is_match(q) {
            Asks::Procedure
        } else {
            Asks::Other
        }
    }

    /// Does `sentence` carry the kind of fact asked for? 1 = it does, 0 = it does not;
    /// questions without a particular kind of fact give 0 for every sentence.
    pub fn carried_by(self, sentence: &str) -> f32 {
        let p = patterns();
        let hit = |r: &Regex| f32::from(u8::from(r.is_match(sentence)));
        match self {
            Asks::Price => hit(&p.price),
            Asks::Time => hit(&p.time),
            Asks::Amount => hit(&p.amount),
            Asks::Place => hit(&p.place),
            Asks::YesNo => 0.5 * hit(&p.yes_no),
            Asks::Procedure | Asks::Other => 0.0,
        }
    }

    /// Does a heading announce the kind of fact asked for ("Delivery times", "礼品卡有效期")?
    pub fn announced_by(self, heading: &str) -> bool {
        self.is_specific() && self != Asks::YesNo && Asks::of(heading) == self
    }

    /// Questions that ask for one fact (a price, a time, a number, a place, yes or no) are
    /// answered with the sentences that state it; the others with the section as written.
    pub fn is_specific(self) -> bool {
        !matches!(self, Asks::Procedure | Asks::Other)
    }
}

/// Amounts in the currency a question asks a price in ("price … in rmb?", 要多少港币):
/// a shop that lists prices in several currencies answers with the one asked for.
pub fn asked_currency(question: &str) -> Option<&'static Regex> {
    static C: OnceLock<Vec<(Regex, Regex)>> = OnceLock::new();
    let table = C.get_or_init(|| {
        let r = |s: &str| Regex::new(s).expect("valid pattern");
        vec![
            (
                r(r"(?i)\b(rmb|cny|yuan|renminbi)\b|人民币"),
                r(r"(?i)[¥￥]|\b(rmb|cny)\b|\d\s*元|人民币"),
            ),
            (
                r(r"(?i)\bhkd\b|hk\$|hong kong dollars?|港币|港元"),
                r(r"(?i)hk\$|\bhkd\b|港币|港元"),
            ),
            (
                r(r"(?i)\bsgd\b|\bs\$|singapore dollars?|新币|新加坡元"),
                r(r"(?i)\bs\$|\bsgd\b|新币|新加坡元"),
            ),
            (
                r(r"(?i)\b(myr|ringgit)\b|马币|令吉"),
                r(r"(?i)\brm\s?\d|\bmyr\b|马币|令吉"),
            ),
            (
                r(r"(?i)\busd\b|us\$|us dollars?|美元|美金"),
                r(r"(?i)us\$|\busd\b|美元|美金"),
            ),
        ]
    });
    table
        .iter()
        .find(|(asked, _)| asked.is_match(question))
        .map(|(_, amounts)| amounts)
}

/// Does the question lean on what was said before? A pronoun standing for the thing asked
/// about ("how long does *it* take", "这个呢"), an opener that continues ("and is there
/// gst", "what about", 那250g的呢, 还有), or a Chinese question ending in 呢. Such a question
/// may be answered from the section that answered the last one (another fact of it).
pub fn refers_back(question: &str) -> bool {
    const PRONOUNS: &[&str] = &[
        "it", "its", "that", "this", "they", "them", "those", "these",
    ];
    const OPENERS: &[&[&str]] = &[&["and"], &["what", "about"], &["how", "about"], &["also"]];
    const ZH_REFERENCES: &[&str] = &["它", "这个", "那个", "这款", "那款", "这种", "那种"];
    const ZH_OPENERS: &[&str] = &["那", "还有", "另外"];
    let lower = question.trim().to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .collect();
    words.iter().any(|w| PRONOUNS.contains(w))
        || OPENERS.iter().any(|o| words.starts_with(o))
        || ZH_REFERENCES.iter().any(|r| lower.contains(r))
        || ZH_OPENERS.iter().any(|o| lower.starts_with(o))
        || lower
            .trim_end_matches(|c: char| !crate::text::is_cjk(c))
            .ends_with('呢')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_that_leans_on_the_last_one_refers_back() {
        for q in [
            "how long does it take",
            "and is there gst",
            "what about the big one?",
            "那250g的呢",
            "这个能退吗",
            "还有别的颜色吗",
            "白茶呢？",
        ] {
            assert!(refers_back(q), "{q}");
        }
        for q in [
            "is there delivery at the weekend?",
            "how much is the gaiwan",
            "白茶怎么保存",
            "andrew here, do you ship to japan",
        ] {
            assert!(!refers_back(q), "{q}");
        }
    }

    #[test]
    fn question_kinds_in_both_languages() {
        for (q, want) in [
            ("这个壶多少钱", Asks::Price),
            ("啥价", Asks::Price),
            ("How much is the travel set?", Asks::Price),
            ("what does shipping cost", Asks::Price),
            ("新疆运费多少", Asks::Price),
            ("寄新加坡运费多少钱 几天能到", Asks::Price),
            ("会员价格什么时候调整", Asks::Time),
            (
                "what day of the month do you charge for the box",
                Asks::Time,
            ),
            ("when is the annual fee charged", Asks::Time),
            ("退款多久到账", Asks::Time),
            ("几天能到", Asks::Time),
            ("when will my parcel arrive", Asks::Time),
            ("how long does a refund take", Asks::Time),
            ("一次最多能用几张券", Asks::Amount),
            ("红茶咖啡因高不高", Asks::Amount),
            ("这个壶贵不贵", Asks::Price),
            ("发货快不快", Asks::Time),
            ("how many cups come in the set", Asks::Amount),
            ("退货寄到哪里", Asks::Place),
            ("where do I send the return", Asks::Place),
            ("能不能开发票", Asks::YesNo),
            ("can I pay by card?", Asks::YesNo),
            ("怎么申请退款", Asks::Procedure),
            ("how do I reset my password", Asks::Procedure),
            ("tell me about your company", Asks::Other),
        ] {
            assert_eq!(Asks::of(q), want, "{q}");
        }
    }

    #[test]
    fn the_currency_asked_for_finds_its_amounts() {
        let rmb = asked_currency("price of the four seasons gift box in rmb?").unwrap();
        assert!(rmb.is_match("青山四季礼盒 ¥588"));
        assert!(!rmb.is_match("Four Seasons gift box HK$648 S$115"));
        let hkd = asked_currency("在香港买明前龙井要多少港币").unwrap();
        assert!(hkd.is_match("costs HK$408 or S$72"));
        assert!(!hkd.is_match("售价 ¥368"));
        assert!(asked_currency("how much is the teapot").is_none());
    }

    #[test]
    fn sentences_carry_facts() {
        assert_eq!(Asks::Price.carried_by("The mug costs ¥40."), 1.0);
        assert_eq!(Asks::Price.carried_by("售价 ¥368，每罐 100 g。"), 1.0);
        assert_eq!(Asks::Price.carried_by("The mug is white."), 0.0);
        assert_eq!(
            Asks::Time.carried_by("Refunds arrive within 5–10 business days."),
            1.0
        );
        assert_eq!(Asks::Time.carried_by("审核通过后 3 个工作日内退款。"), 1.0);
        assert_eq!(
            Asks::Time.carried_by("Orders paid before 16:00 ship today."),
            1.0
        );
        assert_eq!(Asks::Time.carried_by("The mug is white."), 0.0);
        assert_eq!(Asks::Amount.carried_by("Up to 5 cards per order."), 1.0);
        assert_eq!(Asks::Amount.carried_by("Rinse ripe pu'er twice."), 1.0);
        assert_eq!(Asks::Amount.carried_by("熟普要洗两次茶。"), 1.0);
        // An ordinal is not an amount.
        assert_eq!(Asks::Amount.carried_by("第一泡可以倒掉。"), 0.0);
        assert_eq!(
            Asks::YesNo.carried_by("Engraved pots cannot be returned."),
            0.5
        );
        assert_eq!(Asks::Other.carried_by("Anything at all, 5 days."), 0.0);
    }

    #[test]
    fn an_address_is_stated_only_when_it_is_written_out() {
        for stated in [
            "寄回地址：江苏省苏州市吴中区木渎路 66 号，邮编 215101。",
            "门店在广州市天河区体育西路 12 号。",
            "Send it to 42 Harbour Road, Kowloon.",
            "Our address is Unit 5, Kwun Tong.",
            "Returns go to our warehouse in Ningbo.",
        ] {
            assert_eq!(Asks::Place.carried_by(stated), 1.0, "{stated}");
        }
        // Naming addresses is not stating one: a rule about them answers no "where".
        for named in [
            "一次最多可以添加 20 个收货地址。",
            "下单时填写收件人的姓名、电话和地址即可。",
            "Enter your address at checkout.",
            "You can save up to five delivery addresses.",
        ] {
            assert_eq!(Asks::Place.carried_by(named), 0.0, "{named}");
        }
    }
}
