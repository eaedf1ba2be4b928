//! The checks every answer passes before it leaves, and the sensitive-word check on what
//! comes in: sensitive words (Aho-Corasick over the operator's lexicons), personal data
//! masking (phone, Chinese ID, bank card numbers) and forbidden promises.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::Regex;

use crate::config::{QualityConfig, SensitiveAction};

pub struct Quality {
    sensitive: Option<AhoCorasick>,
    action: SensitiveAction,
    mask_pii: bool,
    promises: Option<AhoCorasick>,
    phone: Regex,
    id_card: Regex,
    bank_card: Regex,
}

/// What a check decided about a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send as is (possibly masked: `text` is what may be sent).
    Pass { text: String, masked: bool },
    /// Must not be sent; `reason` for logs and the handoff record.
    Block { reason: String },
}

impl Quality {
    pub fn new(cfg: &QualityConfig) -> anyhow::Result<Self> {
        let mut words: Vec<String> = cfg
            .sensitive_words
            .iter()
            .map(|w| w.trim().to_string())
            .collect();
        for path in &cfg.sensitive_word_files {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!(
                    "quality.sensitive_word_files: cannot read {}: {e}",
                    path.display()
                )
            })?;
            words.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        }
        words.retain(|w| !w.is_empty());
        let build = |pats: &[String]| -> anyhow::Result<Option<AhoCorasick>> {
            if pats.is_empty() {
                return Ok(None);
            }
            Ok(Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(pats)?,
            ))
        };
        let promises: Vec<String> = cfg
            .forbidden_promises
            .iter()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        Ok(Quality {
            sensitive: build(&words)?,
            action: cfg.sensitive_action,
            mask_pii: cfg.mask_pii,
            promises: build(&promises)?,
            // Mainland mobile numbers, optionally +86, not inside a longer digit run.
            phone: Regex::new(
                r"(?:\+?86[- ]?)?(?:^|[^\d])(1[3-9]\d[- ]?\d{4}[- ]?\d{4})(?:[^\d]|$)",
            )?,
            id_card: Regex::new(
                r"(?:^|[^\dA-Za-z])(\d{6}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx])(?:[^\dA-Za-z]|$)",
            )?,
            bank_card: Regex::new(
                r"(?:^|[^\d])(\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}(?:[ -]?\d{1,3})?)(?:[^\d]|$)",
            )?,
        })
    }

    /// Inbound: mask or block sensitive words (block → the engine hands over).
    pub fn check_inbound(&self, text: &str) -> Verdict {
        self.sensitive_words(text)
    }

    /// Outbound: forbidden promises block; sensitive words mask or block; personal data
    /// is masked.
    pub fn check_outbound(&self, text: &str) -> Verdict {
        if let Some(ac) = &self.promises {
            if let Some(m) = ac.find(text) {
                return Verdict::Block {
                    reason: format!("forbidden promise `{}`", &text[m.range()]),
                };
            }
        }
        let (text, mut masked) = match self.sensitive_words(text) {
            Verdict::Pass { text, masked } => (text, masked),
            block => return block,
        };
        let text = if self.mask_pii {
            let out = self.mask_personal_data(&text);
            masked |= out != text;
            out
        } else {
            text
        };
        Verdict::Pass { text, masked }
    }

    fn sensitive_words(&self, text: &str) -> Verdict {
        let Some(ac) = &self.sensitive else {
            return Verdict::Pass {
                text: text.to_string(),
                masked: false,
            };
        };
        let found: Vec<_> = ac.find_iter(text).collect();
        if found.is_empty() {
            return Verdict::Pass {
                text: text.to_string(),
                masked: false,
            };
        }
        match self.action {
            SensitiveAction::Block => Verdict::Block {
                reason: format!("{} sensitive word(s)", found.len()),
            },
            SensitiveAction::Mask => {
                let mut out = String::with_capacity(text.len());
                let mut last = 0;
                for m in found {
                    out.push_str(&text[last..m.start()]);
                    out.extend(std::iter::repeat_n('*', text[m.range()].chars().count()));
                    last = m.end();
                }
                out.push_str(&text[last..]);
                Verdict::Pass {
                    text: out,
                    masked: true,
                }
            }
        }
    }

    /// Phone: keep the first 3 and last 4 digits; ID: first 6 and last 4; card: last 4 —
    /// enough for the customer to recognise their own data, not enough to misuse it.
    pub fn mask_personal_data(&self, text: &str) -> String {
        let text = replace_group(&self.id_card, text, |s| keep_ends(s, 6, 4));
        let text = replace_group(&self.bank_card, &text, |s| {
            let digits: String = s.chars().filter(char::is_ascii_digit).collect();
            if luhn(&digits) {
                keep_ends(s, 0, 4)
            } else {
                s.to_string()
            }
        });
        replace_group(&self.phone, &text, |s| keep_ends(s, 3, 4))
    }
}

/// Replace capture group 1 of every match, leaving the boundary characters alone.
fn replace_group(re: &Regex, text: &str, f: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut pos = 0;
    while let Some(caps) = re.captures_at(text, pos) {
        let g = caps.get(1).expect("pattern has group 1");
        out.push_str(&text[last..g.start()]);
        out.push_str(&f(g.as_str()));
        last = g.end();
        // Continue at the end of the group so a shared boundary char can start the next match.
        pos = g.end();
        if pos >= text.len() {
            break;
        }
    }
    out.push_str(&text[last..]);
    out
}

fn keep_ends(s: &str, head: usize, tail: usize) -> String {
    let total = s.chars().filter(|c| c.is_ascii_alphanumeric()).count();
    let mut seen = 0;
    s.chars()
        .map(|c| {
            if !c.is_ascii_alphanumeric() {
                return c;
            }
            seen += 1;
            if seen <= head || seen > total.saturating_sub(tail) {
                c
            } else {
                '*'
            }
        })
        .collect()
}

fn luhn(digits: &str) -> bool {
    if digits.len() < 13 {
        return false;
    }
    let sum: u32 = digits
        .chars()
        .rev()
        .filter_map(|c| c.to_digit(10))
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let d2 = d * 2;
                if d2 > 9 {
                    d2 - 9
                } else {
                    d2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(words: &[&str], action: SensitiveAction) -> Quality {
        Quality::new(&QualityConfig {
            sensitive_words: words.iter().map(|s| s.to_string()).collect(),
            sensitive_action: action,
            ..QualityConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn masks_personal_data() {
        let q = q(&[], SensitiveAction::Mask);
        assert_eq!(
            q.mask_personal_data("call 13812345678 now"),
            "call 138****5678 now"
        );
        assert_eq!(
            q.mask_personal_data("身份证110101199003071234。"),
            "身份证110101********1234。"
        );
        // A Luhn-valid card number is masked; an order number that fails Luhn stays.
        assert_eq!(
            q.mask_personal_data("card 4111 1111 1111 1111"),
            "card **** **** **** 1111"
        );
        assert_eq!(
            q.mask_personal_data("order 2024110500421235"),
            "order 2024110500421235"
        );
        assert_eq!(
            q.mask_personal_data("order LM-20241105-0042"),
            "order LM-20241105-0042"
        );
    }

    #[test]
    fn forbidden_promise_blocks() {
        let q = q(&[], SensitiveAction::Mask);
        assert!(matches!(
            q.check_outbound("We guarantee a full refund"),
            Verdict::Block { .. }
        ));
        assert!(matches!(
            q.check_outbound("我们保证退款"),
            Verdict::Block { .. }
        ));
        assert!(matches!(
            q.check_outbound("Refunds take 5 days."),
            Verdict::Pass { masked: false, .. }
        ));
    }

    #[test]
    fn sensitive_words_mask_or_block() {
        let m = q(&["badword", "违禁词"], SensitiveAction::Mask);
        assert_eq!(
            m.check_inbound("a BadWord and 违禁词"),
            Verdict::Pass {
                text: "a ******* and ***".into(),
                masked: true
            }
        );
        let b = q(&["badword"], SensitiveAction::Block);
        assert!(matches!(b.check_outbound("badword"), Verdict::Block { .. }));
    }
}
