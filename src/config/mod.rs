//! The one TOML file operators write, parsed and validated.
//!
//! Loading runs in passes that all add to one `Vec<ConfigError>` so an operator sees every
//! mistake at once: parse TOML to a table; expand `${VAR}` in string values (each miss named by
//! key path); deserialize each section and each channel on its own (one typo can't hide the
//! next); then `validate` the values (43-character AES keys, unique channel names, ranges).

mod expand;
mod lenient;
mod schema;
mod validate;

use std::path::{Path, PathBuf};

pub use schema::*;

/// The commented embedded default, used when no config file exists.
pub const DEFAULT_TOML: &str = include_str!("../../config/kefu.toml");

/// One mistake in a config file: where (file and key path) and what is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: String,
    pub key: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.key, self.message)
        }
    }
}

/// All the errors of one load, printed one per line.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Where the config came from, for messages and for resolving relative paths.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    Embedded,
}

impl ConfigSource {
    pub fn describe(&self) -> String {
        match self {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::Embedded => "embedded default config".to_string(),
        }
    }
}

/// What one load produced: the config as far as it could be read (`None` only when the
/// file could not be read or is not TOML at all) and every error. `kefu check` uses it to
/// check the knowledge files even when the config has mistakes, so one run shows them all.
#[derive(Debug)]
pub struct Loaded {
    pub config: Option<Config>,
    pub source: ConfigSource,
    pub errors: Vec<ConfigError>,
}

/// Load the config: an explicit path must exist; else `KEFU_CONFIG`; else
/// `config/kefu.toml` when present; else the embedded default.
pub fn load(explicit: Option<&Path>) -> Result<(Config, ConfigSource), ConfigErrors> {
    let loaded = load_partial(explicit);
    match loaded.config {
        Some(cfg) if loaded.errors.is_empty() => Ok((cfg, loaded.source)),
        _ => Err(ConfigErrors(loaded.errors)),
    }
}

/// [`load`], keeping what could be read next to the errors.
pub fn load_partial(explicit: Option<&Path>) -> Loaded {
    let chosen = explicit
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("KEFU_CONFIG").map(PathBuf::from));
    let path = match chosen {
        Some(p) => Some(p),
        None => {
            let default = PathBuf::from("config/kefu.toml");
            default.exists().then_some(default)
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    match path {
        Some(p) => {
            let origin = p.display().to_string();
            match std::fs::read_to_string(&p) {
                Ok(text) => {
                    let (config, errors) = parse_partial(&text, &origin, &env);
                    Loaded {
                        config,
                        source: ConfigSource::File(p),
                        errors,
                    }
                }
                Err(e) => Loaded {
                    config: None,
                    source: ConfigSource::File(p),
                    errors: vec![ConfigError {
                        origin,
                        key: String::new(),
                        message: format!("cannot read: {e}"),
                    }],
                },
            }
        }
        None => {
            let (config, errors) = parse_partial(DEFAULT_TOML, "embedded default config", &env);
            Loaded {
                config,
                source: ConfigSource::Embedded,
                errors,
            }
        }
    }
}

/// Parse and validate config text. `env` looks up `${VAR}` references.
pub fn parse(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    match parse_partial(text, origin, env) {
        (Some(cfg), errors) if errors.is_empty() => Ok(cfg),
        (_, errors) => Err(ConfigErrors(errors)),
    }
}

/// [`parse`], keeping the config as far as it parsed (bad keys left at their defaults) next
/// to every error.
pub fn parse_partial(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> (Option<Config>, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let mut err = |key: &str, message: String| {
        errors.push(ConfigError {
            origin: origin.to_string(),
            key: key.to_string(),
            message,
        })
    };
    let mut table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            err("", format!("not valid TOML: {}", e.message()));
            return (None, errors);
        }
    };
    for (key, message) in expand::expand_vars(&mut table, env) {
        err(&key, message);
    }
    let cfg = schema::deserialize(table, &mut err);
    if let Some((cfg, outline)) = &cfg {
        for (key, message) in validate::validate(cfg, outline) {
            err(&key, message);
        }
    }
    (cfg.map(|(c, _)| c), errors)
}

#[cfg(test)]
mod tests;
