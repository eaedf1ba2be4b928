//! Deterministic synthetic FAQ knowledge for the benches: pseudo-words from syllables with
//! a Zipf-like draw, so BM25 and the hashed embedder see a realistic vocabulary shape.

#![allow(dead_code)] // each bench uses a part

use std::path::Path;

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SYLLABLES: [&str; 24] = [
    "ka", "lo", "mi", "ren", "sto", "pa", "de", "vin", "tor", "ul", "sa", "ne", "bri", "co", "fa",
    "gen", "hu", "ix", "jo", "kel", "mor", "pru", "qua", "zet",
];

/// Word `i` of the vocabulary.
pub fn word(mut i: usize) -> String {
    let mut w = String::new();
    loop {
        w.push_str(SYLLABLES[i % SYLLABLES.len()]);
        i /= SYLLABLES.len();
        if i == 0 {
            break;
        }
    }
    w
}

/// A sentence of `n` words drawn Zipf-like from a 20k vocabulary.
pub fn sentence(rng: &mut Rng, n: usize) -> String {
    (0..n)
        .map(|_| {
            // Zipf (s = 1): P(rank ≤ k) = ln k / ln V, the top word ≈ 10% of the text.
            let u = rng.below(1 << 20) as f64 / f64::from(1 << 20);
            word((20_000f64.powf(u)) as usize - 1)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One FAQ entry as a JSONL line: question, answer, `alternates` alternate questions.
pub fn faq_line(rng: &mut Rng, id: usize, alternates: usize) -> (String, String) {
    let n = 6 + rng.below(5);
    let question = sentence(rng, n);
    let n = 30 + rng.below(30);
    let answer = sentence(rng, n);
    let alts: Vec<String> = (0..alternates)
        .map(|_| {
            let n = 5 + rng.below(5);
            sentence(rng, n)
        })
        .collect();
    let line = serde_json::json!({"id": format!("e{id}"), "question": question, "answer": answer, "alternates": alts});
    (line.to_string(), question)
}

/// Write `n` FAQ entries into files of 1,000 under `root/faq/`; returns the questions.
pub fn write_faq(root: &Path, n: usize, alternates: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let mut questions = Vec::with_capacity(n);
    std::fs::create_dir_all(root.join("faq")).expect("mkdir");
    for file in 0..n.div_ceil(1000) {
        let mut text = String::new();
        for i in file * 1000..((file + 1) * 1000).min(n) {
            let (line, q) = faq_line(&mut rng, i, alternates);
            text.push_str(&line);
            text.push('\n');
            questions.push(q);
        }
        std::fs::write(root.join(format!("faq/part{file:04}.jsonl")), text).expect("write");
    }
    questions
}

/// Bytes under a directory (the sled files).
pub fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
