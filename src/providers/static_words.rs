//! Static word vectors: one small dense vector per Chinese word, Chinese character and
//! English word, distilled from a multilingual sentence model (multilingual-e5-small, MIT)
//! by running each word through it alone (examples/distill_static.rs). A text's vector is
//! the weighted sum of its words' vectors. Unlike the hashed features, these put words of
//! close meaning near each other, across the two languages too (cosines in the bundled
//! table: 价格–price 0.74, refund–返还 0.64, teapot–茶壶 0.53, 攒–累计 0.34, against
//! teapot–发票 0.06): the built-in embedder's only sense of meaning beyond shared words,
//! in-process and without the model.
//!
//! A text's vector is what kefu's built-in embedder appends to its hashed features; see
//! `builtin_embedder.rs`.
//!
//! Table format (little-endian): `KFSV`, u32 version (1), u32 word count n, u32 dims d;
//! u32 key offsets × (n + 1) into the key bytes that follow (UTF-8, sorted bytewise); u8 ×
//! n information content (−log10 of the word's frequency, × [`IC_SCALE`]); i8 × n·d vectors
//! (each row scaled to use the int8 range; only its direction counts).

use std::sync::OnceLock;

const MAGIC: &[u8; 4] = b"KFSV";
const VERSION: u32 = 1;
/// Information content is stored as `round(ic × IC_SCALE)` in one byte.
pub const IC_SCALE: f32 = 25.0;

/// A parsed view over a table's bytes (nothing copied).
pub struct StaticWords {
    bytes: &'static [u8],
    n: usize,
    dim: usize,
    offsets_at: usize,
    keys_at: usize,
    ic_at: usize,
    vectors_at: usize,
}

impl std::fmt::Debug for StaticWords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StaticWords({} words, {} dims)", self.n, self.dim)
    }
}

impl StaticWords {
    pub fn parse(bytes: &'static [u8]) -> Result<Self, String> {
        let u32_at = |i: usize| -> Result<usize, String> {
            bytes
                .get(i..i + 4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize)
                .ok_or_else(|| "truncated header".to_string())
        };
        if bytes.get(..4) != Some(MAGIC.as_slice()) || u32_at(4)? != VERSION as usize {
            return Err("not a version-1 static word table".into());
        }
        let (n, dim) = (u32_at(8)?, u32_at(12)?);
        let offsets_at = 16;
        let keys_at = offsets_at + 4 * (n + 1);
        let keys_len = u32_at(offsets_at + 4 * n)?;
        let ic_at = keys_at + keys_len;
        let vectors_at = ic_at + n;
        if bytes.len() != vectors_at + n * dim {
            return Err(format!(
                "{} bytes, want {}",
                bytes.len(),
                vectors_at + n * dim
            ));
        }
        Ok(Self {
            bytes,
            n,
            dim,
            offsets_at,
            keys_at,
            ic_at,
            vectors_at,
        })
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn offset(&self, i: usize) -> usize {
        let at = self.offsets_at + 4 * i;
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().unwrap()) as usize
    }

    fn key(&self, i: usize) -> &'static [u8] {
        &self.bytes[self.keys_at + self.offset(i)..self.keys_at + self.offset(i + 1)]
    }

    /// The word's information content and vector (int8 values stored as bytes: read each
    /// with `as i8`), if the table has it.
    pub fn get(&self, word: &str) -> Option<(f32, &'static [u8])> {
        let (mut lo, mut hi) = (0, self.n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key(mid).cmp(word.as_bytes()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let ic = f32::from(self.bytes[self.ic_at + mid]) / IC_SCALE;
                    let at = self.vectors_at + mid * self.dim;
                    return Some((ic, &self.bytes[at..at + self.dim]));
                }
            }
        }
        None
    }
}

/// Build a table from `(key, information content, vector)` rows (any order; a key given
/// twice keeps its first row).
pub fn encode(mut rows: Vec<(String, f32, Vec<f32>)>) -> Result<Vec<u8>, String> {
    let dim = rows.first().map_or(0, |r| r.2.len());
    if rows.iter().any(|r| r.2.len() != dim) {
        return Err("rows of different dimensions".into());
    }
    rows.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    rows.dedup_by(|b, a| a.0 == b.0);
    let n = rows.len();
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    for v in [VERSION, n as u32, dim as u32] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    let mut offset = 0u32;
    out.extend_from_slice(&offset.to_le_bytes());
    for r in &rows {
        offset += r.0.len() as u32;
        out.extend_from_slice(&offset.to_le_bytes());
    }
    for r in &rows {
        out.extend_from_slice(r.0.as_bytes());
    }
    for r in &rows {
        out.push((r.1 * IC_SCALE).round().clamp(0.0, 255.0) as u8);
    }
    for r in &rows {
        let max =
            r.2.iter()
                .fold(0f32, |m, x| m.max(x.abs()))
                .max(f32::MIN_POSITIVE);
        out.extend(r.2.iter().map(|x| (x / max * 127.0).round() as i8 as u8));
    }
    Ok(out)
}

/// The table bundled with kefu: 72,695 words (42,695 Chinese words and characters, 30,000
/// English words), 64 dimensions, 5.5 MB. Made by `scripts/distill-static-words.sh` from
/// multilingual-e5-small (MIT), jieba's dictionary (MIT) and symspellpy's English frequency
/// list (MIT); see that script for the sources and the steps.
const BUNDLED: &[u8] = include_bytes!("static_words.kfsv");

/// The bundled table, parsed once (a view over the binary's bytes: nothing is copied).
pub fn bundled() -> &'static StaticWords {
    static TABLE: OnceLock<StaticWords> = OnceLock::new();
    TABLE
        .get_or_init(|| StaticWords::parse(BUNDLED).expect("the bundled word table is well formed"))
}

/// Add `row` (int8 codes stored as bytes) to `acc` as a unit vector times `weight`.
pub fn add_unit(acc: &mut [f32], row: &[u8], weight: f32) {
    let value = |x: u8| f32::from(x as i8);
    let norm = row.iter().map(|&x| value(x) * value(x)).sum::<f32>().sqrt();
    if norm > 0.0 {
        let s = weight / norm;
        acc.iter_mut()
            .zip(row)
            .for_each(|(a, &x)| *a += s * value(x));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leak(v: Vec<u8>) -> &'static [u8] {
        Box::leak(v.into_boxed_slice())
    }

    #[test]
    fn encode_then_parse_finds_every_word_and_no_other() {
        let rows = vec![
            ("茶壶".to_string(), 5.0, vec![1.0, -2.0, 0.5]),
            ("teapot".to_string(), 6.2, vec![0.9, -1.8, 0.6]),
            ("a".to_string(), 1.5, vec![0.0, 0.0, 3.0]),
            ("teapot".to_string(), 9.0, vec![5.0, 5.0, 5.0]),
        ];
        let t = StaticWords::parse(leak(encode(rows).unwrap())).unwrap();
        assert_eq!((t.len(), t.dim()), (3, 3));
        let (ic, row) = t.get("teapot").unwrap();
        // The first row of a key is kept; ic to 1/25.
        assert!((ic - 6.2).abs() <= 0.5 / IC_SCALE, "{ic}");
        assert_eq!(
            row.iter().map(|&x| x as i8).collect::<Vec<_>>(),
            [64, -127, 42]
        );
        assert!(t.get("茶壶").is_some() && t.get("a").is_some());
        for missing in ["", "b", "tea", "teapots", "茶"] {
            assert!(t.get(missing).is_none(), "{missing}");
        }
    }

    #[test]
    fn damaged_tables_are_refused() {
        let good = encode(vec![("x".to_string(), 1.0, vec![1.0, 2.0])]).unwrap();
        for cut in [0, 3, 15, good.len() - 1] {
            assert!(
                StaticWords::parse(leak(good[..cut].to_vec())).is_err(),
                "{cut}"
            );
        }
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(StaticWords::parse(leak(bad)).is_err());
        let mut longer = good;
        longer.push(0);
        assert!(StaticWords::parse(leak(longer)).is_err());
    }

    #[test]
    fn the_bundled_table_reads_both_languages() {
        let t = bundled();
        assert_eq!(t.dim(), 64);
        assert!(t.len() > 70_000);
        for w in [
            "退", "茶", "积分", "发票", "茶壶", "返还", "refund", "teapot", "invoice",
        ] {
            assert!(t.get(w).is_some(), "{w}");
        }
        let unit = |w: &str| {
            let mut v = vec![0f32; t.dim()];
            add_unit(&mut v, t.get(w).unwrap().1, 1.0);
            v
        };
        let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        // A word is nearer its translation than an unrelated word of either language
        // (measured: teapot–茶壶 0.53, teapot–发票 0.06; invoice–发票 0.37, invoice–茶壶
        // −0.09; refund–返还 0.64, refund–茶壶 −0.12).
        for (word, near, far) in [
            ("teapot", "茶壶", "发票"),
            ("invoice", "发票", "茶壶"),
            ("refund", "返还", "茶壶"),
            ("tea", "茶", "invoice"),
        ] {
            let (n, f) = (cos(&unit(word), &unit(near)), cos(&unit(word), &unit(far)));
            assert!(n > f + 0.2, "{word}: {near} {n}, {far} {f}");
        }
    }
}
