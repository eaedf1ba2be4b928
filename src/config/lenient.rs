//! Deserializing one table so that every mistake in it is reported, each under its own key.
//!
//! serde stops at the first error of a struct, so `[server]` with a typo'd key and a bad
//! `listen` would report only the typo, and the value checks would run on the defaults. Here
//! a table that fails is taken apart: for structs whose every field has a default (the
//! sections, the providers), each key is tried alone and the failing ones are reported as
//! `section.key` and dropped; for structs with required fields (channels, notify targets),
//! unknown keys are reported and dropped one by one. What is left is deserialized, so the
//! value checks and the checks between tables still run on everything that parsed.

use serde::de::DeserializeOwned;

/// Serde's messages end in a newline and sometimes repeat the TOML snippet; keep one line.
pub fn clean(e: &toml::de::Error) -> String {
    e.message()
        .lines()
        .next()
        .unwrap_or("invalid value")
        .trim()
        .to_string()
}

/// Deserialize a struct whose fields all have defaults. Each failing key is reported as
/// `{path}.{key}`; the rest is kept. `None` only if even the remainder fails.
pub fn all_defaults<T: DeserializeOwned>(
    table: toml::Table,
    path: &str,
    err: &mut dyn FnMut(&str, String),
) -> Option<T> {
    let whole = match toml::Value::Table(table.clone()).try_into::<T>() {
        Ok(t) => return Some(t),
        Err(e) => clean(&e),
    };
    let mut kept = toml::Table::new();
    let mut reported = false;
    for (k, v) in table {
        let mut alone = toml::Table::new();
        alone.insert(k.clone(), v.clone());
        match toml::Value::Table(alone).try_into::<T>() {
            Ok(_) => {
                kept.insert(k, v);
            }
            Err(e) => {
                err(&format!("{path}.{k}"), clean(&e));
                reported = true;
            }
        }
    }
    match toml::Value::Table(kept).try_into::<T>() {
        Ok(t) => {
            if !reported {
                // Only a combination of keys fails: say so on the table.
                err(path, whole);
            }
            Some(t)
        }
        Err(e) => {
            err(path, clean(&e));
            None
        }
    }
}

/// Deserialize a struct with required fields: unknown keys are reported and dropped (up to a
/// bound), then any other error is reported on the table. `None` when it still fails.
pub fn with_required<T: DeserializeOwned>(
    mut table: toml::Table,
    path: &str,
    err: &mut dyn FnMut(&str, String),
) -> Option<T> {
    for _ in 0..32 {
        match toml::Value::Table(table.clone()).try_into::<T>() {
            Ok(t) => return Some(t),
            Err(e) => {
                let msg = clean(&e);
                match unknown_field(&msg).filter(|k| table.contains_key(k.as_str())) {
                    Some(k) => {
                        err(path, msg);
                        table.remove(&k);
                    }
                    None => {
                        err(path, msg);
                        return None;
                    }
                }
            }
        }
    }
    None
}

/// The key of serde's "unknown field `x`, expected …".
fn unknown_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("unknown field `")?;
    Some(rest[..rest.find('`')?].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Default, Debug, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Loose {
        a: u32,
        b: String,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        name: String,
        #[serde(default)]
        n: u32,
    }

    fn table(s: &str) -> toml::Table {
        s.parse().unwrap()
    }

    fn run<T>(f: impl FnOnce(&mut dyn FnMut(&str, String)) -> T) -> (T, Vec<String>) {
        let mut errs = Vec::new();
        let t = f(&mut |k: &str, m: String| errs.push(format!("{k}: {m}")));
        (t, errs)
    }

    #[test]
    fn every_bad_key_of_a_defaults_struct_is_named_and_the_rest_kept() {
        let (t, errs) =
            run(|e| all_defaults::<Loose>(table("a = \"x\"\nb = \"ok\"\nc = 1"), "s", e));
        assert_eq!(
            t,
            Some(Loose {
                a: 0,
                b: "ok".into()
            })
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("s.a: invalid type"), "{errs:?}");
        assert!(errs[1].starts_with("s.c: unknown field `c`"), "{errs:?}");
    }

    #[test]
    fn unknown_keys_of_a_strict_struct_are_dropped_one_by_one() {
        let (t, errs) =
            run(|e| with_required::<Strict>(table("name = \"x\"\ntypo = 1\nother = 2"), "c[0]", e));
        assert_eq!(
            t,
            Some(Strict {
                name: "x".into(),
                n: 0
            })
        );
        assert_eq!(errs.len(), 2, "{errs:?}");
        let (t, errs) = run(|e| with_required::<Strict>(table("typo = 1"), "c[0]", e));
        assert_eq!(t, None);
        assert!(errs[0].contains("unknown field `typo`"), "{errs:?}");
        assert!(errs[1].contains("missing field `name`"), "{errs:?}");
    }
}
