//! English as customers type it: chat shorthand brought to the words a help centre uses
//! (`u` → you, `pls` → please, `acct` → account), applied to both queries and knowledge.

/// The written word for a lower-cased chat shorthand, if it is one.
pub fn canonical_word(word: &str) -> Option<&'static str> {
    Some(match word {
        "u" | "yu" => "you",
        "ur" | "yr" => "your",
        "r" => "are",
        "pls" | "plz" | "pleas" | "plse" => "please",
        "thx" | "thnx" | "thanx" | "ty" => "thanks",
        "wat" | "wht" => "what",
        "hw" => "how",
        "abt" => "about",
        "b4" => "before",
        "cuz" | "coz" | "bc" | "bcoz" => "because",
        "msg" => "message",
        "acct" | "acc" => "account",
        "pwd" | "passwd" => "password",
        "info" => "information",
        "approx" => "approximately",
        "tmr" | "tmrw" | "tmw" | "2moro" => "tomorrow",
        "wk" | "wks" => "week",
        "hr" | "hrs" => "hours",
        "min" | "mins" => "minutes",
        "sec" | "secs" => "seconds",
        "amt" => "amount",
        "qty" => "quantity",
        "addr" => "address",
        "pic" | "pics" => "picture",
        "ppl" => "people",
        "dunno" => "know",
        "wanna" => "want",
        "gonna" => "going",
        "gotta" => "must",
        "cant" => "cannot",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthand_is_spelled_out() {
        assert_eq!(canonical_word("u"), Some("you"));
        assert_eq!(canonical_word("acct"), Some("account"));
        assert_eq!(canonical_word("hrs"), Some("hours"));
        assert_eq!(canonical_word("refund"), None);
        assert_eq!(canonical_word("no"), None);
    }
}
