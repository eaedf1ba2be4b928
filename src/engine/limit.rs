//! The longest message the engine reads: `server.max_message_chars`, on every channel.
//!
//! The widget refuses longer messages (400) before they get here; WeCom and DingTalk cannot
//! be told no, so their long messages are stored whole (an agent reads everything) and the
//! engine reads the first `max` characters followed by a note that the rest was cut. That
//! bounds the work of a turn (classification, retrieval, a model prompt) whatever arrives.

use crate::metrics::Metrics;

/// Appended where a message was cut, so a model reading the prompt knows it is partial.
pub const CUT_NOTE: &str = " […]";

/// `text` as the engine reads it: unchanged when short enough, else cut to `max` characters
/// plus [`CUT_NOTE`] (logged and counted in `kefu_messages_truncated_total{channel}`).
pub fn for_engine(text: String, max: usize, channel: &str, metrics: &Metrics) -> String {
    let Some((cut_at, _)) = text.char_indices().nth(max) else {
        return text;
    };
    tracing::warn!(
        channel,
        chars = text.chars().count(),
        limit = max,
        "message longer than server.max_message_chars: the engine reads the first part, the whole is stored"
    );
    metrics.inc("kefu_messages_truncated_total", &[("channel", channel)]);
    let mut cut = String::with_capacity(cut_at + CUT_NOTE.len());
    cut.push_str(text[..cut_at].trim_end());
    cut.push_str(CUT_NOTE);
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_text_is_untouched_long_text_is_cut_with_a_note() {
        let m = Metrics::new();
        assert_eq!(for_engine("退款怎么办".into(), 5, "c", &m), "退款怎么办");
        assert_eq!(
            m.get("kefu_messages_truncated_total", &[("channel", "c")]),
            0
        );
        assert_eq!(
            for_engine("退款怎么办呢".into(), 5, "c", &m),
            "退款怎么办 […]"
        );
        assert_eq!(for_engine("ab   cd".into(), 4, "c", &m), "ab […]");
        assert_eq!(
            m.get("kefu_messages_truncated_total", &[("channel", "c")]),
            2
        );
    }

    proptest! {
        #[test]
        fn never_more_than_max_chars_plus_the_note(text in "\\PC{0,300}", max in 1usize..200) {
            let out = for_engine(text.clone(), max, "c", &Metrics::new());
            if text.chars().count() <= max {
                prop_assert_eq!(out, text);
            } else {
                prop_assert!(out.ends_with(CUT_NOTE));
                let kept = &out[..out.len() - CUT_NOTE.len()];
                prop_assert!(kept.chars().count() <= max);
                prop_assert!(text.starts_with(kept));
            }
        }
    }
}
