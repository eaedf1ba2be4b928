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

/// A light English stemmer: enough to make inflections and -ation nouns meet, not Porter.
/// Non-ASCII words and short words are returned unchanged.
pub fn stem(word: &str) -> String {
    if !word.is_ascii() || word.len() <= 3 || word.bytes().any(|b| b.is_ascii_digit()) {
        return word.to_string();
    }
    let mut w = word.to_string();
    // Order matters: longest suffix first, one inflectional suffix removed.
    if let Some(s) = w.strip_suffix("ations") {
        w = format!("{s}at");
    } else if let Some(s) = w.strip_suffix("ation") {
        w = format!("{s}at");
    } else if let Some(s) = w.strip_suffix("ies").filter(|s| s.len() >= 2) {
        w = format!("{s}i");
    } else if let Some(s) = w.strip_suffix("ied").filter(|s| s.len() >= 2) {
        w = format!("{s}i");
    } else if w.ends_with("sses") {
        w.truncate(w.len() - 2);
    } else if let Some(s) = w.strip_suffix("ing").filter(|s| s.len() >= 3) {
        w = undouble(s);
    } else if let Some(s) = w.strip_suffix("ed").filter(|s| s.len() >= 3) {
        w = undouble(s);
    } else if let Some(s) = w.strip_suffix("ly").filter(|s| s.len() >= 4) {
        w = s.to_string();
    } else if w.ends_with('s') && !w.ends_with("ss") && !w.ends_with("us") && !w.ends_with("is") {
        w.pop();
    }
    if w.len() > 3 && w.ends_with('e') {
        w.pop();
    }
    if w.len() > 3 && w.ends_with('y') {
        w.pop();
        w.push('i');
    }
    w
}

/// `stopp` → `stop`, `gett` → `get`; but `fall`, `pass`, `buzz` keep their pair.
fn undouble(s: &str) -> String {
    let b = s.as_bytes();
    let n = b.len();
    if n >= 2 && b[n - 1] == b[n - 2] && !matches!(b[n - 1], b'l' | b's' | b'z') {
        s[..n - 1].to_string()
    } else {
        s.to_string()
    }
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
