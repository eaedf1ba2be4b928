//! Test helpers: the official vectors (a copy of `shared/protocols/vectors/wecom.json` kept in
//! `adapters/tests/vectors/`, so the tests never depend on a folder outside the repo) and an
//! RNG that replays fixed bytes.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn vectors_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/wecom.json")
}

fn load() -> Value {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "WeCom test vectors missing at {} ({e}); copy shared/protocols/vectors/wecom.json there",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// One vector, positive or negative.
pub struct Vector {
    pub v: Value,
    negative: bool,
}

impl Vector {
    pub fn name(&self) -> &str {
        self.v["name"].as_str().unwrap_or("?")
    }
    pub fn is_negative(&self) -> bool {
        self.negative
    }
    pub fn has(&self, key: &str) -> bool {
        self.v.get(key).is_some()
    }
    pub fn str(&self, key: &str) -> &str {
        self.v
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("vector {}: no string {key}", self.name()))
    }
    pub fn u64(&self, key: &str) -> u64 {
        self.v
            .get(key)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("vector {}: no integer {key}", self.name()))
    }
    pub fn kind(&self) -> &str {
        self.str("kind")
    }
}

/// Every vector, positives first. Panics (with the path) if the file is missing or empty.
pub fn all_vectors() -> Vec<Vector> {
    let root = load();
    let mut out = Vec::new();
    for (key, negative) in [("vectors", false), ("negative", true)] {
        for v in root[key].as_array().cloned().unwrap_or_default() {
            out.push(Vector { v, negative });
        }
    }
    assert!(
        out.len() >= 10,
        "expected at least 10 WeCom vectors in {}, found {}",
        vectors_path().display(),
        out.len()
    );
    out
}

pub fn vector(name: &str) -> Vector {
    all_vectors()
        .into_iter()
        .find(|v| v.name() == name)
        .unwrap_or_else(|| panic!("no WeCom vector named {name}"))
}

pub fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// An RNG that hands out the given bytes, cycling: makes "random" prefixes exact.
pub struct Replay {
    bytes: Vec<u8>,
    at: usize,
}

impl Replay {
    pub fn new(bytes: &[u8]) -> Self {
        assert!(!bytes.is_empty());
        Replay {
            bytes: bytes.to_vec(),
            at: 0,
        }
    }
}

impl rand_core::RngCore for Replay {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for d in dest {
            *d = self.bytes[self.at % self.bytes.len()];
            self.at += 1;
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

/// The copy must not drift from the shared original when that folder is present (CI puts it
/// beside the repo; a developer checkout may not have it, which is not a failure).
#[test]
fn vector_copy_matches_shared_original() {
    let shared =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/protocols/vectors/wecom.json");
    match std::fs::read_to_string(&shared) {
        Ok(orig) => {
            let copy = std::fs::read_to_string(vectors_path()).expect("vector copy");
            let (a, b): (Value, Value) = (
                serde_json::from_str(&orig).expect("shared JSON"),
                serde_json::from_str(&copy).expect("copy JSON"),
            );
            assert!(
                a == b,
                "adapters/tests/vectors/wecom.json differs from {}: re-copy it",
                shared.display()
            );
        }
        Err(_) => eprintln!(
            "note: {} absent; using the in-repo copy only",
            shared.display()
        ),
    }
}
