//! The safetensors file format (Hugging Face's weight files), as much of it as kefu reads and
//! writes: an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
//! shape and byte range, then the raw little-endian data.
//!
//! Hand-written rather than through the `safetensors` crate because kefu reads tensors one at
//! a time from the file (a 250k-word multilingual vocabulary is 384 MB as f32, converted to a
//! compact form row block by row block, never held whole) and writes tensors produced on the
//! fly by the model importer.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Header larger than this is refused: real ones are kilobytes (a BERT model's ~200 tensors).
const MAX_HEADER: u64 = 100 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
    U8,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::U8 => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::U8 => "U8",
        }
    }

    fn parse(s: &str) -> Option<Dtype> {
        Some(match s {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "U8" => Dtype::U8,
            _ => return None,
        })
    }
}

/// One tensor as the header describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    /// `None`: a dtype kefu does not read (I64 position ids and the like).
    pub dtype: Option<Dtype>,
    pub shape: Vec<usize>,
    /// Byte range within the data section.
    pub start: u64,
    pub end: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A safetensors file opened for reading tensor by tensor.
pub struct Reader {
    path: PathBuf,
    file: File,
    data_start: u64,
    tensors: BTreeMap<String, TensorInfo>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader").field("path", &self.path).finish()
    }
}

impl Reader {
    pub fn open(path: &Path) -> anyhow::Result<Reader> {
        let mut file =
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let file_len = file.metadata()?.len();
        let mut len = [0u8; 8];
        file.read_exact(&mut len)
            .with_context(|| format!("{}: not a safetensors file (too short)", path.display()))?;
        let header_len = u64::from_le_bytes(len);
        if header_len > MAX_HEADER || header_len + 8 > file_len {
            bail!(
                "{}: not a safetensors file (header length {header_len})",
                path.display()
            );
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)?;
        let json: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
            .with_context(|| format!("{}: the safetensors header is not JSON", path.display()))?;
        let data_start = 8 + header_len;
        let data_len = file_len - data_start;
        let mut tensors = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (name, v) in json {
            if name == "__metadata__" {
                if let Some(m) = v.as_object() {
                    for (k, v) in m {
                        if let Some(s) = v.as_str() {
                            metadata.insert(k.clone(), s.to_string());
                        }
                    }
                }
                continue;
            }
            let bad = || format!("{}: tensor {name}: malformed header entry", path.display());
            let dtype = v.get("dtype").and_then(|d| d.as_str()).with_context(bad)?;
            let shape: Vec<usize> = v
                .get("shape")
                .and_then(|s| s.as_array())
                .with_context(bad)?
                .iter()
                .map(|d| d.as_u64().map(|d| d as usize))
                .collect::<Option<_>>()
                .with_context(bad)?;
            let offsets = v
                .get("data_offsets")
                .and_then(|o| o.as_array())
                .filter(|o| o.len() == 2)
                .with_context(bad)?;
            let (start, end) = match (offsets[0].as_u64(), offsets[1].as_u64()) {
                (Some(s), Some(e)) if s <= e && e <= data_len => (s, e),
                _ => bail!("{}: tensor {name}: data outside the file", path.display()),
            };
            let dtype = Dtype::parse(dtype);
            let info = TensorInfo {
                dtype,
                shape,
                start,
                end,
            };
            if let Some(d) = dtype {
                let want = info
                    .shape
                    .iter()
                    .try_fold(d.size(), |acc, &n| acc.checked_mul(n));
                if want != Some((end - start) as usize) {
                    bail!(
                        "{}: tensor {name}: {} bytes for shape {:?} of {}",
                        path.display(),
                        end - start,
                        info.shape,
                        d.name()
                    );
                }
            }
            tensors.insert(name, info);
        }
        Ok(Reader {
            path: path.to_path_buf(),
            file,
            data_start,
            tensors,
            metadata,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    fn info(&self, name: &str) -> anyhow::Result<TensorInfo> {
        self.tensors
            .get(name)
            .cloned()
            .with_context(|| format!("{}: no tensor {name}", self.path.display()))
    }

    /// The raw bytes of `name`, `[from, to)` within it.
    fn read_range(&mut self, info: &TensorInfo, from: u64, to: u64) -> anyhow::Result<Vec<u8>> {
        let mut buf = vec![0u8; (to - from) as usize];
        self.file
            .seek(SeekFrom::Start(self.data_start + info.start + from))?;
        self.file
            .read_exact(&mut buf)
            .with_context(|| format!("{}: truncated", self.path.display()))?;
        Ok(buf)
    }

    pub fn read_bytes(&mut self, name: &str) -> anyhow::Result<Vec<u8>> {
        let info = self.info(name)?;
        self.read_range(&info, 0, info.end - info.start)
    }

    /// A float tensor (F32, F16 or BF16) as f32, with its shape.
    pub fn read_f32(&mut self, name: &str) -> anyhow::Result<(Vec<f32>, Vec<usize>)> {
        let info = self.info(name)?;
        let mut out = Vec::with_capacity(info.elements());
        let rows = info.shape.first().copied().unwrap_or(1);
        self.for_each_row_block(name, rows, |_, block| {
            out.extend_from_slice(block);
            Ok(())
        })?;
        Ok((out, info.shape))
    }

    /// Stream a float tensor of shape `[rows, …]` as f32, up to `block_rows` rows at a time:
    /// `f(first_row, values)`. Lets a large matrix be converted without holding it whole.
    pub fn for_each_row_block(
        &mut self,
        name: &str,
        block_rows: usize,
        mut f: impl FnMut(usize, &[f32]) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let info = self.info(name)?;
        let dtype = match info.dtype {
            Some(d @ (Dtype::F32 | Dtype::F16 | Dtype::BF16)) => d,
            _ => bail!(
                "{}: tensor {name} is not a float tensor kefu reads (F32, F16, BF16)",
                self.path.display()
            ),
        };
        // A scalar is one row of one value.
        let rows = info.shape.first().copied().unwrap_or(1);
        let row_len: usize = info.shape.iter().skip(1).product();
        let row_bytes = (row_len * dtype.size()) as u64;
        let mut values = Vec::new();
        let mut row = 0;
        while row < rows {
            let n = block_rows.max(1).min(rows - row);
            let bytes =
                self.read_range(&info, row as u64 * row_bytes, (row + n) as u64 * row_bytes)?;
            values.clear();
            decode_floats(dtype, &bytes, &mut values);
            f(row, &values)?;
            row += n;
        }
        Ok(())
    }
}

fn decode_floats(dtype: Dtype, bytes: &[u8], out: &mut Vec<f32>) {
    match dtype {
        Dtype::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        Dtype::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))),
        ),
        Dtype::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)),
        ),
        Dtype::U8 => {}
    }
}

/// IEEE half precision to f32 (exact: every f16 is an f32).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = man · 2^-24.
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (31, _) => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// One tensor to write: its bytes come from `write` when the file is written, so large
/// tensors are produced on the fly. `write` must write exactly `shape · dtype` bytes.
pub struct TensorOut<'a> {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    #[allow(clippy::type_complexity)]
    pub write: Box<dyn FnOnce(&mut dyn Write) -> std::io::Result<()> + 'a>,
}

impl<'a> TensorOut<'a> {
    /// An f32 tensor from values in memory.
    pub fn f32(name: impl Into<String>, shape: Vec<usize>, values: Vec<f32>) -> TensorOut<'a> {
        TensorOut {
            name: name.into(),
            dtype: Dtype::F32,
            shape,
            write: Box::new(move |w| {
                for v in values {
                    w.write_all(&v.to_le_bytes())?;
                }
                Ok(())
            }),
        }
    }
}

impl<'a> TensorOut<'a> {
    /// An f32 tensor from Q4_0 blocks (see [`crate::q4`]), dequantized while it is written.
    pub fn f32_from_q4(
        name: impl Into<String>,
        shape: Vec<usize>,
        blocks: &'a [u8],
    ) -> TensorOut<'a> {
        TensorOut {
            name: name.into(),
            dtype: Dtype::F32,
            shape,
            write: Box::new(move |w| {
                let mut values = [0f32; crate::q4::BLOCK];
                let mut bytes = [0u8; crate::q4::BLOCK * 4];
                for block in blocks.chunks_exact(crate::q4::BLOCK_BYTES) {
                    crate::q4::dequantize_block(block, &mut values);
                    for (b, v) in bytes.chunks_exact_mut(4).zip(values) {
                        b.copy_from_slice(&v.to_le_bytes());
                    }
                    w.write_all(&bytes)?;
                }
                Ok(())
            }),
        }
    }
}

/// Write a safetensors file (tensors in the given order, header padded to 8 bytes).
pub fn write(
    path: &Path,
    metadata: &BTreeMap<String, String>,
    tensors: Vec<TensorOut<'_>>,
) -> anyhow::Result<()> {
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata)?);
    }
    let mut offset = 0u64;
    let mut sizes = Vec::with_capacity(tensors.len());
    for t in &tensors {
        let size = (t.shape.iter().product::<usize>() * t.dtype.size()) as u64;
        header.insert(
            t.name.clone(),
            serde_json::json!({
                "dtype": t.dtype.name(),
                "shape": t.shape,
                "data_offsets": [offset, offset + size],
            }),
        );
        sizes.push(size);
        offset += size;
    }
    let mut header = serde_json::to_vec(&header)?;
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(header.len() as u64).to_le_bytes())?;
    w.write_all(&header)?;
    for (t, size) in tensors.into_iter().zip(sizes) {
        let mut counted = Counted {
            inner: &mut w,
            n: 0,
        };
        (t.write)(&mut counted)?;
        if counted.n != size {
            bail!(
                "{}: tensor {} wrote {} bytes, its shape needs {size}",
                path.display(),
                t.name,
                counted.n
            );
        }
    }
    w.flush()?;
    Ok(())
}

struct Counted<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_streamed_rows_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        let a: Vec<f32> = (0..12).map(|i| i as f32 * 0.5 - 1.0).collect();
        // 1.0, -2.0, 0.5 as f16.
        let half: Vec<u8> = [0x3c00u16, 0xc000, 0x3800]
            .iter()
            .flat_map(|h| h.to_le_bytes())
            .collect();
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        write(
            &path,
            &meta,
            vec![
                TensorOut::f32("a", vec![4, 3], a.clone()),
                TensorOut {
                    name: "h".into(),
                    dtype: Dtype::F16,
                    shape: vec![3],
                    write: Box::new(move |w| w.write_all(&half)),
                },
                TensorOut {
                    name: "q".into(),
                    dtype: Dtype::U8,
                    shape: vec![2, 2],
                    write: Box::new(|w| w.write_all(&[1, 2, 3, 4])),
                },
            ],
        )
        .unwrap();
        let mut r = Reader::open(&path).unwrap();
        assert_eq!(r.metadata("format"), Some("pt"));
        assert_eq!(r.read_f32("a").unwrap(), (a.clone(), vec![4, 3]));
        assert_eq!(r.read_f32("h").unwrap().0, vec![1.0, -2.0, 0.5]);
        assert_eq!(r.read_bytes("q").unwrap(), vec![1, 2, 3, 4]);
        let mut blocks = Vec::new();
        r.for_each_row_block("a", 3, |row, v| {
            blocks.push((row, v.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(blocks, vec![(0, 9), (3, 3)]);
        assert!(r.read_f32("q").is_err());
        assert!(r
            .read_f32("missing")
            .unwrap_err()
            .to_string()
            .contains("no tensor missing"));

        // A wrong writer length is caught.
        let err = write(
            &dir.path().join("bad.safetensors"),
            &BTreeMap::new(),
            vec![TensorOut {
                name: "x".into(),
                dtype: Dtype::F32,
                shape: vec![2],
                write: Box::new(|w| w.write_all(&[0; 4])),
            }],
        )
        .unwrap_err();
        assert!(err.to_string().contains("wrote 4 bytes"), "{err}");

        // Truncations and garbage are errors, never panics.
        let bytes = std::fs::read(&path).unwrap();
        for cut in [0, 4, 8, 20, bytes.len() - 1] {
            let p = dir.path().join("cut.safetensors");
            std::fs::write(&p, &bytes[..cut]).unwrap();
            if let Ok(mut r) = Reader::open(&p) {
                assert!(r.read_f32("a").is_err() || r.read_bytes("q").is_err());
            }
        }
    }

    #[test]
    fn half_precision_decodes_exactly() {
        assert_eq!(f16_to_f32(0x0000), 0.0);
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8001), -(2f32.powi(-24)));
        assert_eq!(f16_to_f32(0x0400), 2f32.powi(-14));
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
    }
}
