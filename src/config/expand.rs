//! `${VAR}`, `${VAR:-default}`, `${VAR:?message}`, `${VAR?message}` and
//! `$$` in unit strings (as docker compose reads them). The environment is
//! passed in; this module never reads the process environment itself.

use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ExpandError {
    #[error("variable ${{{0}}} is not set and has no default (write ${{{0}:-default}})")]
    Unset(String),
    /// `${NAME:?message}` (unset or empty) or `${NAME?message}` (unset).
    #[error("variable ${{{name}}} is required{}: {}", if *empty { " (not set or empty)" } else { " (not set)" }, if message.is_empty() { "set it in the container's environment" } else { message })]
    Required { name: String, empty: bool, message: String },
    #[error("unterminated ${{ (write $$ for a literal $)")]
    Unterminated,
    #[error("invalid variable name {0:?} in ${{…}}")]
    BadName(String),
}

/// Expands `input` using `lookup`. A `$` followed by anything other than `{`
/// or `$` stays literal, so shell snippets like `$1` survive untouched.
/// Defaults nest as in docker compose: `${A:-${B:-x}}` is A, else B, else
/// `x`; a default that is not used is still checked for syntax but its
/// variables are not looked up.
pub fn expand(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let mut rest = input;
    text(&mut rest, lookup, false, true)
}

/// Checks `input`'s syntax without looking any variable up (the env of a
/// profile that is off).
pub fn check_syntax(input: &str) -> Result<(), ExpandError> {
    let mut rest = input;
    text(&mut rest, &|_| None, false, false).map(drop)
}

/// Text up to the end of `rest` (or, `inside` a default, up to and
/// including its closing `}`); `eval`: look variables up (false for a
/// default that is not used).
fn text(
    rest: &mut &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    inside: bool,
    eval: bool,
) -> Result<String, ExpandError> {
    let mut out = String::new();
    loop {
        let stop = if inside { rest.find(['$', '}']) } else { rest.find('$') };
        let Some(pos) = stop else {
            if inside {
                return Err(ExpandError::Unterminated);
            }
            out.push_str(rest);
            *rest = "";
            return Ok(out);
        };
        out.push_str(&rest[..pos]);
        if rest[pos..].starts_with('}') {
            *rest = &rest[pos + 1..];
            return Ok(out);
        }
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            *rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            *rest = body;
            out.push_str(&variable(rest, lookup, eval)?);
        } else {
            out.push('$');
            *rest = after;
        }
    }
}

/// `NAME}`, `NAME:-default}`, `NAME:?message}` or `NAME?message}` (just
/// after `${`).
fn variable(rest: &mut &str, lookup: &dyn Fn(&str) -> Option<String>, eval: bool) -> Result<String, ExpandError> {
    let close = rest.find('}').ok_or(ExpandError::Unterminated)?;
    let name_len = rest.find(|c: char| c != '_' && !c.is_ascii_alphanumeric()).unwrap_or(rest.len());
    let name = &rest[..name_len];
    let after = &rest[name_len..];
    let op = ["}", ":-", ":?", "?"].into_iter().find(|op| after.starts_with(op));
    let Some(op) = op else {
        return Err(ExpandError::BadName(rest[..close].to_string()));
    };
    if !is_var_name(name) {
        return Err(ExpandError::BadName(name.to_string()));
    }
    let value = if eval { lookup(name) } else { None };
    *rest = &after[op.len()..];
    match op {
        "}" => match value {
            Some(v) => Ok(v),
            None if !eval => Ok(String::new()),
            None => Err(ExpandError::Unset(name.to_string())),
        },
        ":-" => {
            let value = value.filter(|v| !v.is_empty());
            let fallback = text(rest, lookup, true, eval && value.is_none())?;
            Ok(value.unwrap_or(fallback))
        }
        // `:?` refuses an empty value too, `?` only an unset one; the
        // message is the unit author's, checked for syntax only.
        _ => {
            let message = text(rest, lookup, true, false)?;
            let value = if op == ":?" { value.filter(|v| !v.is_empty()) } else { value };
            match value {
                Some(v) => Ok(v),
                None if !eval => Ok(String::new()),
                None => Err(ExpandError::Required { name: name.to_string(), empty: op == ":?", message }),
            }
        }
    }
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
            ("${NOPE:-${HOST}}", Ok("db.internal")),
            ("${HOST:-${NOPE}}", Ok("db.internal")),
            ("${NOPE:-${UNSET2:-x}}", Ok("x")),
            ("${NOPE:-${HOST}:5432}/db", Ok("db.internal:5432/db")),
            ("${NOPE:-a$$b$1}", Ok("a$b$1")),
            ("${EMPTY:-${HOST}}", Ok("db.internal")),
            ("${NOPE:-}", Ok("")),
            ("${NOPE:-a}b}", Ok("ab}")),
            ("${NOPE:-${UNSET2}}", Err(ExpandError::Unset("UNSET2".into()))),
            ("${NOPE:-${HOST}", Err(ExpandError::Unterminated)),
            ("${HOST:-${1X}}", Err(ExpandError::BadName("1X".into()))),
            ("${A${B}}", Err(ExpandError::BadName("A${B".into()))),
            ("${HOST:?set HOST}", Ok("db.internal")),
            ("${HOST?set HOST}", Ok("db.internal")),
            ("${EMPTY?must be set}", Ok("")),
            ("${NOPE:-${HOST:?x}}", Ok("db.internal")),
            ("${HOST:-${NOPE:?x}}", Ok("db.internal")),
            (
                "${EMPTY:?give the password}",
                Err(ExpandError::Required { name: "EMPTY".into(), empty: true, message: "give the password".into() }),
            ),
            ("${NOPE?}", Err(ExpandError::Required { name: "NOPE".into(), empty: false, message: String::new() })),
            (
                "${NOPE:?a $$ b}",
                Err(ExpandError::Required { name: "NOPE".into(), empty: true, message: "a $ b".into() }),
            ),
            ("${NOPE:?unterminated", Err(ExpandError::Unterminated)),
            ("${NOPE:x}", Err(ExpandError::BadName("NOPE:x".into()))),
        ];
        for (input, want) in cases {
            let got = expand(input, &env);
            assert_eq!(got.as_deref().map_err(|e| e.clone()), want.clone(), "{input}");
        }
    }
}
