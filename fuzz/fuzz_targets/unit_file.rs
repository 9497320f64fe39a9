//! Unit-file loader: raw TOML → validation → `${VAR}` expansion, as
//! `flowinit check`/`up`/reload run it, must report errors and never panic.
//!
//! Input: UTF-8 text (invalid bytes replaced) holding one to three unit
//! files separated by NUL bytes. A file whose first line is `#> NAME` is
//! named NAME (a TOML comment, so seeds stay valid unit files), otherwise
//! web, db, api by position. Each file is also fed to `expand` directly.
#![no_main]

use flowinit::config::expand::{expand, ExpandError};
use flowinit::config::validate::{load_files, LoadContext};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

const DEFAULT_NAMES: [&str; 3] = ["web", "db", "api"];

fn ctx() -> &'static LoadContext {
    static CTX: OnceLock<LoadContext> = OnceLock::new();
    CTX.get_or_init(|| LoadContext {
        env: [
            ("PATH", "/usr/local/bin:/usr/bin:/bin"),
            ("HOME", "/root"),
            ("HOST", "db.internal"),
            ("PORT", "8080"),
            ("EMPTY", ""),
            ("DEMO_API_PORT", "8765"),
        ]
        .iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect(),
        profiles: vec!["dev".into()],
        can_switch_user: false,
        base_dir: None,
    })
}

fn lookup(name: &str) -> Option<String> {
    ctx().env.iter().find(|(k, _)| k == name).map(|(_, v)| v.to_string_lossy().into_owned())
}

fn check_expand(text: &str) {
    let out = expand(text, &lookup);
    if !text.contains('$') {
        assert_eq!(out.as_deref(), Ok(text), "text without $ must come back unchanged");
    }
    if let Err(ExpandError::Unset(name) | ExpandError::BadName(name)) = &out {
        assert!(text.contains(name.as_str()), "error names {name:?}, which is not in the input");
    }
    // `$$` is the escape for `$`: escaping everything must give the text back.
    let escaped = text.replace('$', "$$");
    assert_eq!(expand(&escaped, &lookup).as_deref(), Ok(text), "expand(escape(s)) != s");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let files: Vec<(PathBuf, std::io::Result<String>)> = text
        .splitn(3, '\0')
        .enumerate()
        .map(|(i, body)| {
            let name =
                body.lines().next().and_then(|l| l.strip_prefix("#> ")).map(str::trim).unwrap_or(DEFAULT_NAMES[i]);
            (PathBuf::from(format!("units/{name}.toml")), Ok(body.to_string()))
        })
        .collect();
    for (_, body) in &files {
        if let Ok(body) = body {
            check_expand(body);
        }
    }
    match load_files(&files, ctx()) {
        Ok(set) => {
            assert_eq!(set.units.len(), files.len(), "every file is one unit");
            for u in &set.units {
                if let Some(s) = &u.service {
                    assert!(!s.argv.is_empty(), "unit {} has an empty argv", u.name);
                }
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "Err without errors");
            for e in &errors {
                assert!(e.line >= 1 && e.column >= 1, "bad position in {e}");
                let _ = e.to_string();
            }
        }
    }
});
