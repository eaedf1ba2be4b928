//! WeCom callback crypto: the `msg_signature` SHA-1 and the AES-256-CBC envelope.
//!
//! Official: "加解密方案说明" (developer.work.weixin.qq.com/document/path/90968) and the
//! callback-configuration page (path/90930). Facts and pitfalls: `shared/protocols/wecom.md`
//! §2–§3.

use std::fmt;

use aes::Aes256;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::Engine as _;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use rand_core::RngCore;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use crate::DecodeError;

/// WeCom pads to 32-byte blocks, not AES's 16 (path/90968: "PKCS#7 ... K 为 32").
pub const PAD_BLOCK: usize = 32;
/// Length of the random prefix inside every plaintext.
pub const RANDOM_LEN: usize = 16;
/// Length of an `EncodingAESKey` as the admin console issues it.
pub const ENCODING_AES_KEY_LEN: usize = 43;

/// Real keys set the 2 unused bits of the 43rd character, which the strict `STANDARD`
/// engine refuses (`InvalidLastSymbol`), so keys decode with trailing bits allowed.
const KEY_ENGINE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

type Enc = cbc::Encryptor<Aes256>;
type Dec = cbc::Decryptor<Aes256>;

/// Why an `EncodingAESKey` is unusable. The key itself is never part of the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("encoding_aes_key must be exactly 43 characters, got {0}")]
    Length(usize),
    #[error("encoding_aes_key may only contain A-Z, a-z and 0-9 (character {0} is not one)")]
    Alphabet(usize),
    #[error("encoding_aes_key does not base64-decode to 32 bytes")]
    Decode,
}

/// `msg_signature`: SHA-1 hex (lower case) over the byte-wise sorted, concatenated
/// `[token, timestamp, nonce, ciphertext]` (path/90968 §消息体签名).
pub fn signature(token: &str, timestamp: &str, nonce: &str, ciphertext: &str) -> String {
    let mut parts = [token, timestamp, nonce, ciphertext];
    parts.sort_unstable();
    let mut h = Sha1::new();
    for p in parts {
        h.update(p.as_bytes());
    }
    hex_lower(&h.finalize())
}

/// Constant-time check of a received `msg_signature`. WeCom defines no timestamp window,
/// so none is applied here (wecom.md §2: the official vectors are years old).
pub fn verify_signature(
    token: &str,
    timestamp: &str,
    nonce: &str,
    ciphertext: &str,
    given: &str,
) -> bool {
    let want = signature(token, timestamp, nonce, ciphertext);
    // `ct_eq` on slices of different lengths is false without looking at the content.
    bool::from(want.as_bytes().ct_eq(given.as_bytes()))
}

/// A decrypted payload: the message and the receive id that followed it.
#[derive(Clone, PartialEq, Eq)]
pub struct Opened {
    pub msg: Vec<u8>,
    pub receive_id: Vec<u8>,
}

impl fmt::Debug for Opened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opened")
            .field("msg_len", &self.msg.len())
            .field("receive_id", &String::from_utf8_lossy(&self.receive_id))
            .finish()
    }
}

/// The AES key derived from an `EncodingAESKey`. `Debug` never shows it.
#[derive(Clone)]
pub struct Cipher {
    key: [u8; 32],
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Cipher(***)")
    }
}

impl Cipher {
    /// Key = base64-decode(`encoding_aes_key` + "="): 43 characters `[A-Za-z0-9]` → 32 bytes.
    pub fn new(encoding_aes_key: &str) -> Result<Self, KeyError> {
        let n = encoding_aes_key.chars().count();
        if n != ENCODING_AES_KEY_LEN {
            return Err(KeyError::Length(n));
        }
        if let Some(i) = encoding_aes_key
            .bytes()
            .position(|b| !b.is_ascii_alphanumeric())
        {
            return Err(KeyError::Alphabet(i + 1));
        }
        let mut padded = String::with_capacity(44);
        padded.push_str(encoding_aes_key);
        padded.push('=');
        let bytes = KEY_ENGINE.decode(padded).map_err(|_| KeyError::Decode)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Decode)?;
        Ok(Cipher { key })
    }

    /// IV = the first 16 key bytes (fixed, never transmitted).
    fn iv(&self) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&self.key[..16]);
        iv
    }

    /// Encrypt `msg` for `receive_id` (the CorpID): `random(16) ‖ len(u32 BE) ‖ msg ‖ receive_id`,
    /// PKCS#7 to 32-byte blocks, AES-256-CBC, standard base64. The 16 prefix bytes come from
    /// `rng` (opaque to WeCom; a seeded or replaying RNG makes the output deterministic).
    pub fn encrypt(&self, msg: &[u8], receive_id: &str, rng: &mut dyn RngCore) -> String {
        let mut random = [0u8; RANDOM_LEN];
        rng.fill_bytes(&mut random);
        self.encrypt_with_prefix(&random, msg, receive_id)
    }

    fn encrypt_with_prefix(
        &self,
        random: &[u8; RANDOM_LEN],
        msg: &[u8],
        receive_id: &str,
    ) -> String {
        let len = RANDOM_LEN + 4 + msg.len() + receive_id.len();
        let pad = PAD_BLOCK - len % PAD_BLOCK; // 1..=32: a whole block when aligned
        let mut buf = Vec::with_capacity(len + pad);
        buf.extend_from_slice(random);
        // WeCom messages are far below 4 GiB; saturate rather than wrap if one were not.
        buf.extend_from_slice(&u32::try_from(msg.len()).unwrap_or(u32::MAX).to_be_bytes());
        buf.extend_from_slice(msg);
        buf.extend_from_slice(receive_id.as_bytes());
        buf.resize(len + pad, pad as u8);
        let ct =
            Enc::new(&self.key.into(), &self.iv().into()).encrypt_padded_vec_mut::<NoPadding>(&buf);
        STANDARD.encode(ct)
    }

    /// Base64 → AES-CBC (no padding) → strict 32-block PKCS#7 check → unframe.
    /// Any defect is `Malformed`; the receive id is returned, not checked (see [`open`]).
    ///
    /// [`open`]: Cipher::open
    pub fn decrypt(&self, ciphertext_b64: &str) -> Result<Opened, DecodeError> {
        let ct = STANDARD
            .decode(ciphertext_b64.trim())
            .map_err(|_| malformed("ciphertext is not base64"))?;
        if ct.is_empty() || ct.len() % 16 != 0 {
            return Err(malformed(
                "ciphertext length is not a multiple of the AES block",
            ));
        }
        let plain = Dec::new(&self.key.into(), &self.iv().into())
            .decrypt_padded_vec_mut::<NoPadding>(&ct)
            .map_err(|_| malformed("ciphertext does not decrypt"))?;
        // A stock 16-byte unpadder refuses pads 17..=32 that WeCom really sends.
        let pad = usize::from(plain[plain.len() - 1]);
        if !(1..=PAD_BLOCK).contains(&pad) || pad > plain.len() {
            return Err(malformed("bad padding"));
        }
        let body_len = plain.len() - pad;
        if plain[body_len..].iter().any(|&b| usize::from(b) != pad) {
            return Err(malformed("bad padding"));
        }
        let body = &plain[..body_len];
        if body.len() < RANDOM_LEN + 4 {
            return Err(malformed("plaintext too short"));
        }
        let mut len_be = [0u8; 4];
        len_be.copy_from_slice(&body[RANDOM_LEN..RANDOM_LEN + 4]);
        let msg_len = u32::from_be_bytes(len_be) as usize;
        let rest = &body[RANDOM_LEN + 4..];
        if msg_len > rest.len() {
            return Err(malformed("message length exceeds the plaintext"));
        }
        let (msg, receive_id) = rest.split_at(msg_len);
        Ok(Opened {
            msg: msg.to_vec(),
            receive_id: receive_id.to_vec(),
        })
    }

    /// [`decrypt`](Cipher::decrypt), then require the receive id to be `expected` (the CorpID):
    /// a payload sealed for another corp is refused (`WrongReceiver`; Tencent SDK -40005).
    pub fn open(&self, ciphertext_b64: &str, expected: &str) -> Result<Vec<u8>, DecodeError> {
        let opened = self.decrypt(ciphertext_b64)?;
        if !bool::from(opened.receive_id.as_slice().ct_eq(expected.as_bytes())) {
            let got: String = String::from_utf8_lossy(&opened.receive_id)
                .chars()
                .take(64)
                .collect();
            return Err(DecodeError::WrongReceiver(got));
        }
        Ok(opened.msg)
    }
}

fn malformed(why: &str) -> DecodeError {
    DecodeError::Malformed(why.to_string())
}

fn hex_lower(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wecom::testutil::{all_vectors, hex_decode, Replay};
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const B_KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";

    /// Encrypt an already padded buffer, to forge defective plaintexts.
    fn raw_encrypt(c: &Cipher, padded: &[u8]) -> String {
        let ct =
            Enc::new(&c.key.into(), &c.iv().into()).encrypt_padded_vec_mut::<NoPadding>(padded);
        STANDARD.encode(ct)
    }

    #[test]
    fn every_vector_key_derives_to_its_aes_key_and_iv() {
        for v in all_vectors() {
            let c = Cipher::new(v.str("encoding_aes_key"))
                .unwrap_or_else(|e| panic!("{}: {e}", v.name()));
            assert_eq!(
                c.key.to_vec(),
                hex_decode(v.str("aes_key_hex")),
                "{}",
                v.name()
            );
            assert_eq!(c.iv().to_vec(), hex_decode(v.str("iv_hex")), "{}", v.name());
        }
    }

    #[test]
    fn every_vector_signature() {
        for v in all_vectors() {
            let (tok, ts, nonce, ct, sig) = (
                v.str("token"),
                v.str("timestamp"),
                v.str("nonce"),
                v.str("ciphertext"),
                v.str("msg_signature"),
            );
            if v.is_negative() && v.name().contains("bad_signature") {
                assert_ne!(signature(tok, ts, nonce, ct), sig, "{}", v.name());
                assert!(!verify_signature(tok, ts, nonce, ct, sig), "{}", v.name());
            } else {
                assert_eq!(signature(tok, ts, nonce, ct), sig, "{}", v.name());
                assert!(verify_signature(tok, ts, nonce, ct, sig), "{}", v.name());
            }
        }
    }

    #[test]
    fn every_vector_decrypts_to_its_plaintext_and_receive_id() {
        for v in all_vectors().into_iter().filter(|v| v.has("plaintext")) {
            let c = Cipher::new(v.str("encoding_aes_key")).unwrap();
            let o = c
                .decrypt(v.str("ciphertext"))
                .unwrap_or_else(|e| panic!("{}: {e}", v.name()));
            assert_eq!(
                String::from_utf8(o.msg.clone()).unwrap(),
                v.str("plaintext"),
                "{}",
                v.name()
            );
            assert_eq!(o.msg.len() as u64, v.u64("msg_len"), "{}", v.name());
            assert_eq!(o.receive_id, v.str("receive_id").as_bytes(), "{}", v.name());
            let open = c.open(v.str("ciphertext"), v.str("corp_id"));
            if v.str("receive_id") == v.str("corp_id") {
                assert_eq!(open.unwrap(), o.msg);
            } else {
                assert_eq!(
                    open,
                    Err(DecodeError::WrongReceiver(v.str("receive_id").to_string())),
                    "{}",
                    v.name()
                );
            }
        }
    }

    #[test]
    fn every_vector_encrypts_byte_exactly_with_its_random_prefix() {
        for v in all_vectors().into_iter().filter(|v| v.has("random")) {
            let c = Cipher::new(v.str("encoding_aes_key")).unwrap();
            let mut rng = Replay::new(v.str("random").as_bytes());
            let ct = c.encrypt(v.str("plaintext").as_bytes(), v.str("receive_id"), &mut rng);
            assert_eq!(ct, v.str("ciphertext"), "{}", v.name());
            // And the pad WeCom used is the one we chose.
            let len = RANDOM_LEN + 4 + v.str("plaintext").len() + v.str("receive_id").len();
            assert_eq!(
                (PAD_BLOCK - len % PAD_BLOCK) as u64,
                v.u64("pad"),
                "{}",
                v.name()
            );
        }
    }

    #[test]
    fn key_validation_is_clear() {
        assert_eq!(Cipher::new("").unwrap_err(), KeyError::Length(0));
        assert_eq!(Cipher::new(&B_KEY[..42]).unwrap_err(), KeyError::Length(42));
        assert_eq!(
            Cipher::new(&format!("{B_KEY}=")).unwrap_err(),
            KeyError::Length(44)
        );
        let mut bad = B_KEY.to_string();
        bad.replace_range(5..6, "+");
        assert_eq!(Cipher::new(&bad).unwrap_err(), KeyError::Alphabet(6));
        let mut bad = B_KEY.to_string();
        bad.replace_range(42..43, "é"); // 43 chars, 44 bytes
        assert_eq!(Cipher::new(&bad).unwrap_err(), KeyError::Alphabet(43));
        assert!(!format!("{:?}", Cipher::new(B_KEY).unwrap()).contains("eaa9"));
        assert!(KeyError::Length(42).to_string().contains("43 characters"));
    }

    #[test]
    fn padding_is_checked_strictly() {
        let c = Cipher::new(B_KEY).unwrap();
        let mut body = vec![b'r'; 16];
        body.extend_from_slice(&2u32.to_be_bytes());
        body.extend_from_slice(b"hiww1436e0e65a779aee"); // 40 bytes so far
        let good = |pad: u8| {
            let mut b = body.clone();
            b.resize(body.len() + usize::from(pad), pad);
            b
        };
        assert_eq!(
            c.open(&raw_encrypt(&c, &good(24)), "ww1436e0e65a779aee")
                .unwrap(),
            b"hi"
        );
        // pad 0 (value 0 in the last byte)
        let mut p = good(24);
        *p.last_mut().unwrap() = 0;
        assert!(matches!(
            c.decrypt(&raw_encrypt(&c, &p)),
            Err(DecodeError::Malformed(_))
        ));
        // pad 33 > 32
        let mut p = body.clone();
        p.resize(body.len() + 40, 33);
        assert!(matches!(
            c.decrypt(&raw_encrypt(&c, &p)),
            Err(DecodeError::Malformed(_))
        ));
        // inconsistent pad bytes
        let mut p = good(24);
        p[body.len()] = 23;
        assert!(matches!(
            c.decrypt(&raw_encrypt(&c, &p)),
            Err(DecodeError::Malformed(_))
        ));
        // valid 16-byte PKCS#7 that is not 32-byte aligned still decrypts if the pad is
        // consistent (8 + 40 = 48): WeCom never sends it, but it is not ambiguous either.
        assert_eq!(c.decrypt(&raw_encrypt(&c, &good(8))).unwrap().msg, b"hi");
    }

    #[test]
    fn framing_defects_are_malformed() {
        let c = Cipher::new(B_KEY).unwrap();
        // length field larger than what follows
        let mut p = vec![b'r'; 16];
        p.extend_from_slice(&1000u32.to_be_bytes());
        p.extend_from_slice(b"hi");
        p.resize(64, 42);
        assert!(matches!(
            c.decrypt(&raw_encrypt(&c, &p)),
            Err(DecodeError::Malformed(_))
        ));
        // shorter than random + length
        let p = [32u8; 32];
        assert!(matches!(
            c.decrypt(&raw_encrypt(&c, &p)),
            Err(DecodeError::Malformed(_))
        ));
        for bad in ["", "!!!!", "AAAA", "AAAAAAAAAAAAAAAAAAAAAA=="] {
            assert!(
                matches!(c.decrypt(bad), Err(DecodeError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn decrypt_inverts_encrypt(msg in proptest::collection::vec(any::<u8>(), 0..600),
                                   rid in "[A-Za-z0-9]{0,40}", seed in any::<u64>()) {
            let c = Cipher::new(B_KEY).unwrap();
            let ct = c.encrypt(&msg, &rid, &mut StdRng::seed_from_u64(seed));
            let raw = STANDARD.decode(&ct).unwrap();
            prop_assert_eq!(raw.len() % PAD_BLOCK, 0);
            let o = c.decrypt(&ct).unwrap();
            prop_assert_eq!(&o.msg, &msg);
            prop_assert_eq!(o.receive_id, rid.as_bytes());
            prop_assert_eq!(c.open(&ct, &rid).unwrap(), msg);
        }

        #[test]
        fn decrypt_never_panics(s in "\\PC{0,200}") {
            let c = Cipher::new(B_KEY).unwrap();
            let _ = c.decrypt(&s);
        }

        #[test]
        fn decrypt_never_panics_on_valid_base64(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let c = Cipher::new(B_KEY).unwrap();
            let _ = c.decrypt(&STANDARD.encode(bytes));
        }
    }
}
