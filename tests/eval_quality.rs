//! Answer quality as a regression floor: `kefu eval` on the bundled cases, through the same
//! engine path as live traffic. The floors sit a little under what the built-in embedder and
//! generator measure today (see the notes); a change that makes answers worse fails here.

use std::path::Path;

use kefu::config;

fn default_config() -> config::Config {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/kefu.toml"))
            .unwrap();
    let mut cfg = config::parse(&text, "config/kefu.toml", &|_| None).unwrap();
    cfg.knowledge.paths = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("knowledge")];
    cfg
}

fn eval(cases: &str) -> kefu::eval::EvalReport {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(cases);
    rt.block_on(kefu::eval::run(default_config(), &path, true))
        .unwrap()
}

#[test]
fn intents_and_handoffs_in_english_and_chinese() {
    let r = eval("eval/intents.jsonl");
    println!("{}", r.render());
    assert!(r.cases >= 80);
    // These cases were written beside the lexicons, so they say little about new wording:
    // the floors that matter are tests/qingshan.rs. Measured 0.988 with the example vote.
    assert!(
        r.intent.accuracy() >= 0.9,
        "intent accuracy {:.3}",
        r.intent.accuracy()
    );
    assert!(
        r.handoff.accuracy() >= 0.95,
        "handoff accuracy {:.3}",
        r.handoff.accuracy()
    );
}

#[test]
fn bundled_knowledge_answers() {
    let r = eval("eval/bundled.jsonl");
    println!("{}", r.render());
    assert!(r.cases >= 60);
    // Measured 0.940: the example vote reads some problem reports ("lost my phone and cant
    // get my 2fa code") as complaints where this set says query (empathy, then the answer).
    assert!(
        r.intent.accuracy() >= 0.88,
        "intent accuracy {:.3}",
        r.intent.accuracy()
    );
    assert!(
        r.contains.accuracy() >= 0.85,
        "contains accuracy {:.3}",
        r.contains.accuracy()
    );
    assert!(
        r.handoff.accuracy() >= 0.9,
        "handoff accuracy {:.3}",
        r.handoff.accuracy()
    );
}

#[test]
fn off_topic_questions_get_no_made_up_answer() {
    let r = eval("eval/offtopic.jsonl");
    println!("{}", r.render());
    // 66 questions in both languages, many of them other businesses' service questions
    // ("refund my train ticket"): measured 0.924.
    assert!(
        r.answered.accuracy() >= 0.85,
        "not answered from the knowledge {:.3}",
        r.answered.accuracy()
    );
}
