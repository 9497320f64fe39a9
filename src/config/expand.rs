//! `${VAR}`, `${VAR:-default}` and `$$` in unit strings. The environment is
//! passed in; this module never reads the process environment itself.

use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ExpandError {
    #[error("variable ${{{0}}} is not set and has no default (write ${{{0}:-default}})")]
    Unset(String),
    #[error("unterminated ${{ (write $$ for a literal $)")]
    Unterminated,
    #[error("invalid variable name {0:?} in ${{…}}")]
    BadName(String),
}

/// Expands `input` using `lookup`. A `$` followed by anything other than `{`
/// or `$` stays literal, so shell snippets like `$1` survive untouched.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body_start) = after.strip_prefix('{') {
            let end = body_start.find('}').ok_or(ExpandError::Unterminated)?;
            let body = &body_start[..end];
            let (name, default) = match body.find(":-") {
                Some(i) => (&body[..i], Some(&body[i + 2..])),
                None => (body, None),
            };
            if !is_var_name(name) {
                return Err(ExpandError::BadName(name.to_string()));
            }
            match (lookup(name).filter(|v| !v.is_empty() || default.is_none()), default) {
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(ExpandError::Unset(name.to_string())),
            }
            rest = &body_start[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("db.internal".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn table() {
        let cases: &[(&str, Result<&str, ExpandError>)] = &[
            ("plain", Ok("plain")),
            ("${HOST}", Ok("db.internal")),
            ("h=${HOST}:5432", Ok("h=db.internal:5432")),
            ("${PORT:-5432}", Ok("5432")),
            ("${HOST:-x}", Ok("db.internal")),
            ("${EMPTY:-fallback}", Ok("fallback")),
            ("${EMPTY}", Ok("")),
            ("$$HOME", Ok("$HOME")),
            ("cost $5 and $1", Ok("cost $5 and $1")),
            ("trailing $", Ok("trailing $")),
            ("${NOPE}", Err(ExpandError::Unset("NOPE".into()))),
            ("${HOST", Err(ExpandError::Unterminated)),
            ("${1BAD}", Err(ExpandError::BadName("1BAD".into()))),
            ("${:-x}", Err(ExpandError::BadName(String::new()))),
        ];
        for (input, want) in cases {
            let got = expand(input, &env);
            assert_eq!(got.as_deref().map_err(|e| e.clone()), want.clone(), "{input}");
        }
    }
}
