//! The crate's layering, checked from the source: which top-level module
//! may name which (docs/architecture.md, "Layers and the plan"), that the
//! allowed graph has no cycle, and that no public function returns or takes
//! a stringly `Result<_, String>`.
//!
//! Reads `src/**.rs` as text: every `crate::NAME` path (including each
//! name inside `use crate::{a, b::{c}}`), and `super::NAME` written in a
//! file whose parent is the crate root (`src/x.rs`, `src/x/mod.rs`), count
//! as an edge from the file's top-level module to NAME. Comments are
//! skipped. `term` (the output macros, `#[macro_use]`) is open to all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the modules it may use. A new edge is a
/// design change: add it here and to docs/architecture.md together.
const ALLOWED: &[(&str, &[&str])] = &[
    ("term", &[]),
    ("graph", &[]),
    ("process", &[]),
    ("logs", &[]),
    ("config", &["graph", "process"]),
    ("api", &["config", "logs", "process"]),
    ("probe", &["config", "logs", "process"]),
    // The router sees the supervisor only through `api` (Readiness, RouterStats).
    ("router", &["api", "config"]),
    // The control socket sees the supervisor only through `api` (Handle, Snapshot).
    ("control", &["api", "config", "logs"]),
    // GET /metrics reads what the control socket reads: the snapshot (api).
    ("metrics", &["api"]),
    // The FLOWINIT_* environment settings, parsed once.
    ("settings", &["logs"]),
    // `exec` is a client command: its arguments are part of the command line.
    ("cli", &["control", "exec", "settings"]),
    // `flowinit exec`: the spec from the control socket, then process::exec.
    ("exec", &["control", "process"]),
    ("single", &["process", "settings"]),
    ("supervisor", &["api", "config", "logs", "probe", "process", "router"]),
    ("up", &["cli", "config", "control", "logs", "process", "router", "settings", "supervisor", "metrics"]),
    ("lib", &[]),
    ("main", &[]),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// The text without `//` comments (line and doc comments; string literals
/// holding `//` are rare enough in this crate and only hide text).
fn code(text: &str) -> String {
    text.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

/// First path segments named after each `prefix` (`crate::`, `super::`):
/// `crate::a::b` gives `a`; `crate::{a::x, b, c::{d}}` gives a, b, c.
fn named_after(code: &str, prefix: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `mycrate::`, `super::super::` handled by its first part
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of a balanced brace group.
            let mut depth = 0usize;
            let mut item = String::new();
            let mut items = Vec::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => items.push(std::mem::take(&mut item)),
                    _ if depth == 0 => item.push(c),
                    _ => {}
                }
            }
            items.push(item);
            for it in items {
                let first: String = it.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !first.is_empty() {
                    names.push(first);
                }
            }
        } else {
            let first: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !first.is_empty() {
                names.push(first);
            }
        }
    }
    names
}

/// (file's top-level module, modules it names), from the source.
fn edges() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for path in files {
        let rel = path.strip_prefix(&root).expect("under src").to_path_buf();
        let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let top = parts[0].trim_end_matches(".rs").to_string();
        let text = code(&std::fs::read_to_string(&path).expect("read source"));
        let mut named = named_after(&text, "crate::");
        // `super::` leaves the module only from a file directly below the root.
        let at_root = parts.len() == 1 || (parts.len() == 2 && parts[1] == "mod.rs");
        if at_root {
            named.extend(named_after(&text, "super::"));
        }
        let file = rel.display().to_string();
        for name in named.into_iter().filter(|n| *n != top && n != "self") {
            out.entry(top.clone()).or_default().entry(name).or_default().insert(file.clone());
        }
    }
    out
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for (from, targets) in edges() {
        let Some(may) = allowed.get(from.as_str()) else {
            wrong.push(format!("src/{from}: a new top-level module; give it a row in tests/layers.rs ALLOWED"));
            continue;
        };
        for (to, files) in targets {
            if to != "term" && !may.contains(&to.as_str()) {
                let files: Vec<_> = files.into_iter().collect();
                wrong.push(format!("{from} → {to} (in {})", files.join(", ")));
            }
        }
    }
    assert!(wrong.is_empty(), "imports that cross the layering of docs/architecture.md:\n  {}", wrong.join("\n  "));
}

#[test]
fn router_and_control_never_name_the_supervisor() {
    // The rule of the pure-plan issue in its plainest form, independent of
    // the table above: not even a path in a macro or a test.
    for dir in ["router", "control"] {
        let mut files = Vec::new();
        rust_files(&src().join(dir), &mut files);
        for f in files {
            let text = code(&std::fs::read_to_string(&f).expect("read"));
            assert!(!text.contains("supervisor::"), "{} names supervisor:: (use crate::api instead)", f.display());
        }
    }
}

#[test]
fn the_allowed_graph_has_no_cycle() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    // Depth-first search with colours; a grey node seen again is a cycle.
    fn visit<'a>(
        n: &'a str,
        g: &BTreeMap<&'a str, &'a [&'a str]>,
        colour: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) {
        match colour.get(n) {
            Some(2) => return,
            Some(1) => panic!("cycle in ALLOWED: {} → {n}", path.join(" → ")),
            _ => {}
        }
        colour.insert(n, 1);
        path.push(n);
        for m in g.get(n).copied().unwrap_or_default() {
            visit(m, g, colour, path);
        }
        path.pop();
        colour.insert(n, 2);
    }
    let mut colour = BTreeMap::new();
    for n in allowed.keys() {
        visit(n, &allowed, &mut colour, &mut Vec::new());
    }
}

#[test]
fn the_checker_sees_every_form_of_path() {
    // The parser above must not be blind, or the layering test could never fail.
    let text = "use crate::a::x;\nuse crate::{b, c::{d, e}, f::g};\nlet y = crate::h::k();\nmycrate::z();";
    assert_eq!(named_after(text, "crate::"), ["a", "b", "c", "f", "h"]);
    assert_eq!(code("use crate::a; // crate::b\n/// crate::c"), "use crate::a; \n");
}

#[test]
fn no_public_function_uses_a_string_as_its_error() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut found = Vec::new();
    for f in files {
        let text = code(&std::fs::read_to_string(&f).expect("read"));
        // Join each signature onto one line: from `pub fn` to its `{` or `;`.
        let mut rest = text.as_str();
        while let Some(i) = rest.find("pub fn ") {
            rest = &rest[i..];
            let end = rest.find(['{', ';']).unwrap_or(rest.len());
            let sig: String = rest[..end].split_whitespace().collect::<Vec<_>>().join(" ");
            if stringly_result(&sig) {
                found.push(format!("{}: {sig}", f.display()));
            }
            rest = &rest[end..];
        }
    }
    // An alias would hide one: `pub type Failure = String;`.
    let alias = regex::Regex::new(r"pub type \w+ = String;").unwrap();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    for f in files {
        let text = code(&std::fs::read_to_string(&f).expect("read"));
        found.extend(alias.find_iter(&text).map(|m| format!("{}: {}", f.display(), m.as_str())));
    }
    assert!(found.is_empty(), "pub fns with Result<_, String> (use a thiserror enum):\n  {}", found.join("\n  "));
}

/// A `Result<…, String>` anywhere in a signature, at any nesting.
fn stringly_result(sig: &str) -> bool {
    let mut rest = sig;
    while let Some(i) = rest.find("Result<") {
        rest = &rest[i + "Result<".len()..];
        let mut depth = 0usize;
        let mut last_top_comma = None;
        let mut close = None;
        for (j, c) in rest.char_indices() {
            match c {
                '<' | '(' | '[' => depth += 1,
                '>' if depth == 0 => {
                    close = Some(j);
                    break;
                }
                '>' | ')' | ']' => depth -= 1,
                ',' if depth == 0 => last_top_comma = Some(j),
                _ => {}
            }
        }
        if let (Some(c), Some(e)) = (last_top_comma, close) {
            if rest[c + 1..e].trim() == "String" {
                return true;
            }
        }
    }
    false
}

#[test]
fn the_string_error_check_is_not_blind() {
    assert!(stringly_result("pub fn f(x: u8) -> Result<Vec<(u8, u8)>, String>"));
    assert!(stringly_result("pub fn f(files: &[(PathBuf, Result<String, String>)]) -> Option<u8>"));
    assert!(!stringly_result("pub fn f() -> Result<String, io::Error>"));
    assert!(!stringly_result("pub fn f() -> io::Result<String>"));
}
