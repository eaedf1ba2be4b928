//! Agent passwords: argon2id with the crate's defaults (19 MiB, 2 passes, 1 lane — OWASP's
//! recommendation), stored as PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) that
//! `kefu hash-password` prints and `[[agents]] password_hash` holds.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2};

/// Hash `password` with a fresh random salt.
pub fn hash(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

/// Is `phc` an argon2id PHC string kefu can verify against? `Err` says what is wrong.
pub fn check_phc(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc).map_err(|e| {
        format!("must be an argon2id PHC string as `kefu hash-password` prints it ($argon2id$v=19$...): {e}")
    })?;
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return Err(format!(
            "must be an argon2id hash, got `{}` (use `kefu hash-password`)",
            parsed.algorithm
        ));
    }
    if parsed.hash.is_none() {
        return Err("has no hash part (use `kefu hash-password`)".into());
    }
    // The parameters must be ones the library accepts, or every login would fail.
    argon2::Params::try_from(&parsed).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    Ok(())
}

/// Does `password` match `phc`? A malformed hash matches nothing.
pub fn verify(phc: &str, password: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash no password matches, verified for unknown ids so that a wrong id costs as long as
/// a wrong password (no way to learn which ids exist from the answer time).
pub fn verify_nobody(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let phc =
        DUMMY.get_or_init(|| hash(&format!("{:x}", rand::random::<u128>())).unwrap_or_default());
    let _ = verify(phc, password);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_and_is_argon2id() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(check_phc(&h).is_ok());
        assert!(verify(&h, "correct horse"));
        assert!(!verify(&h, "correct horse "));
        assert!(!verify(&h, ""));
        assert_ne!(h, hash("correct horse").unwrap(), "a fresh salt each time");
    }

    #[test]
    fn bad_hashes_are_explained_and_match_nothing() {
        for (phc, want) in [
            ("hunter2", "PHC"),
            (
                "$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$9sTbSlTio3Biev89thdrlKKiCaYsjjYVJxGAL3swxpQ",
                "argon2id",
            ),
            ("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ", "no hash"),
        ] {
            let e = check_phc(phc).unwrap_err();
            assert!(e.contains(want), "{phc}: {e}");
            assert!(!verify(phc, "hunter2"));
        }
    }

    #[test]
    fn a_reference_hash_from_another_implementation_verifies() {
        // argon2-cffi / the reference `argon2` CLI: password "password", salt "somesalt".
        let phc = "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
        assert!(check_phc(phc).is_ok());
        assert!(verify(phc, "password"));
        assert!(!verify(phc, "Password"));
    }
}
