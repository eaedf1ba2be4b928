//! `${VAR}` references in string values, expanded after parsing so errors name the key.

/// Expand `${VAR}` in every string leaf of `table`. Returns `(key path, message)` for each
/// reference that is unset or would put a line break into a value.
pub fn expand_vars(
    table: &mut toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut misses = Vec::new();
    for (k, v) in table.iter_mut() {
        expand_value(v, k.clone(), env, &mut misses);
    }
    misses
}

fn expand_value(
    v: &mut toml::Value,
    path: String,
    env: &dyn Fn(&str) -> Option<String>,
    misses: &mut Vec<(String, String)>,
) {
    match v {
        toml::Value::String(s) if s.contains("${") => match expand_str(s, env) {
            Ok(out) => *s = out,
            Err(m) => misses.push((path, m)),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(item, format!("{path}[{i}]"), env, misses);
            }
        }
        toml::Value::Table(t) => {
            for (k, item) in t.iter_mut() {
                expand_value(item, format!("{path}.{k}"), env, misses);
            }
        }
        _ => {}
    }
}

/// Expand one string. `$${` stays a literal `${`.
pub fn expand_str(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut problems = Vec::new();
    while let Some(start) = rest.find("${") {
        if rest[..start].ends_with('$') {
            out.push_str(&rest[..start - 1]);
            out.push_str("${");
            rest = &rest[start + 2..];
            continue;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            problems.push("unclosed `${`".to_string());
            rest = "";
            break;
        };
        let name = &after[..end];
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            problems.push(format!("`${{{name}}}` is not a valid variable name"));
        } else {
            match env(name) {
                Some(val) if val.contains('\n') || val.contains('\r') => problems.push(format!(
                    "{name} holds a line break; values must be one line"
                )),
                Some(val) => out.push_str(&val),
                None => problems.push(format!("{name} is not set")),
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems.join("; "))
    }
}
