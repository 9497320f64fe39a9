//! Program output shown in the docs comes from the binary. A fenced block
//! right after a line `<!-- output: NAME -->` (NAME: a snapshot of
//! tests/snapshots/, e.g. `snapshots__reload`) is checked against that
//! snapshot, which tests/snapshots.rs takes from the real binary: every
//! line of the block must be a line of the snapshot, in the snapshot's
//! order. Lines starting with `$ ` (the command typed) and `…` are not
//! output and are skipped. Where the snapshot has a redaction token
//! (`[PID]`, `[DIR]`, `[TIME]`, a port like `[WEB_PORT]`, …) the docs may
//! show any concrete value.

use regex::Regex;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The snapshot's content, without insta's header.
fn snapshot(name: &str) -> Option<String> {
    let text = std::fs::read_to_string(root().join("tests/snapshots").join(format!("{name}.snap"))).ok()?;
    let body = text.strip_prefix("---\n")?;
    let end = body.find("\n---\n")?;
    Some(body[end + 5..].to_string())
}

/// One snapshot line as a regex: literal text, tokens as wildcards.
fn line_pattern(line: &str) -> Regex {
    let token = Regex::new(r"\[[A-Z][A-Z_ :.m]*\]").unwrap();
    let mut pattern = String::from("^");
    let mut last = 0;
    for m in token.find_iter(line) {
        pattern += &regex::escape(&line[last..m.start()]);
        pattern += match m.as_str() {
            "[PID]" | "[FROM NOFILE]" => r"\d+",
            "[SECS]" => r"\d+\.\d",
            "[TIME]" => r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
            "[HH:MM:SS.mmm]" => r"\d{2}:\d{2}:\d{2}\.\d{3}",
            "[AGE]" => r"[^()]+",
            _ => r"\S+?",
        };
        last = m.end();
    }
    pattern += &regex::escape(&line[last..]);
    pattern += "$";
    Regex::new(&pattern).unwrap()
}

struct Block {
    file: PathBuf,
    line: usize,
    name: String,
    lines: Vec<String>,
}

fn blocks() -> Vec<Block> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.push(root().join("README.md"));
    files.sort();
    let marker = Regex::new(r"^<!-- output: ([a-z_]+) -->$").unwrap();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, l) in lines.iter().enumerate() {
            let Some(c) = marker.captures(l) else { continue };
            assert!(
                lines.get(i + 1).is_some_and(|l| l.starts_with("```")),
                "{}:{}: an output marker must be followed by a fenced block",
                file.display(),
                i + 1
            );
            let body: Vec<String> =
                lines[i + 2..].iter().take_while(|l| !l.starts_with("```")).map(|l| l.to_string()).collect();
            out.push(Block { file: file.clone(), line: i + 1, name: c[1].to_string(), lines: body });
        }
    }
    out
}

/// The first doc line that does not match, in order, or None.
fn mismatch(doc: &[String], snap: &str) -> Option<String> {
    let patterns: Vec<Regex> = snap.lines().map(line_pattern).collect();
    let mut at = 0;
    for line in doc.iter().filter(|l| !l.starts_with("$ ") && l.trim() != "…" && !l.trim().is_empty()) {
        match patterns[at..].iter().position(|p| p.is_match(line)) {
            Some(k) => at += k + 1,
            None => return Some(line.clone()),
        }
    }
    None
}

#[test]
fn docs_show_what_the_binary_prints() {
    let blocks = blocks();
    assert!(blocks.len() >= 6, "only {} checked output blocks in the docs", blocks.len());
    let mut wrong = Vec::new();
    for b in &blocks {
        let Some(snap) = snapshot(&b.name) else {
            wrong.push(format!("{}:{}: no snapshot tests/snapshots/{}.snap", b.file.display(), b.line, b.name));
            continue;
        };
        if let Some(line) = mismatch(&b.lines, &snap) {
            wrong.push(format!(
                "{}:{}: {:?} is not in {} (or not in its order); the binary prints:\n{snap}",
                b.file.display(),
                b.line,
                line,
                b.name
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn the_comparison_can_fail() {
    let snap = "flowinit | unit app: stopping (sending SIGTERM to process group [PID])\nflowinit | unit app stopped\n";
    let ok = ["flowinit | unit app: stopping (sending SIGTERM to process group 5222)".to_string()];
    assert_eq!(mismatch(&ok, snap), None);
    let other_text = ["flowinit | unit app: stopping now".to_string()];
    assert!(mismatch(&other_text, snap).is_some());
    let wrong_order = [
        "flowinit | unit app stopped".to_string(),
        "flowinit | unit app: stopping (sending SIGTERM to process group 1)".to_string(),
    ];
    assert!(mismatch(&wrong_order, snap).is_some());
    let not_a_pid = ["flowinit | unit app: stopping (sending SIGTERM to process group x)".to_string()];
    assert!(mismatch(&not_a_pid, snap).is_some());
}

mod common;

/// Every field `status --json` prints is in the table of
/// docs/operations.md, and every field the table names is printed.
#[test]
fn the_json_fields_table_matches_status_json() {
    use common::*;
    let d = TempDir::new("docs-json");
    let (port, be) = (free_port(), free_port());
    d.unit("web", &format!("[service]\ncommand = [\"{}\", \"{}\", \"{be}\"]\n", python(), fixture("ops_http.py")));
    d.unit(
        "router",
        &format!("[router]\nlisten = \"127.0.0.1:{port}\"\n[[router.routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:{be}\"\nunit = \"web\"\n"),
    );
    let mut f = Flowinit::up(&d, Opts::default());
    f.wait_state("router", "running");
    f.wait_state("web", "running");
    // With unit names, once web's first line is in its log.
    let v: serde_json::Value = wait_for("web's log in status --json", Duration::from_secs(20), || {
        let (_, out, _) = f.ctl(&["status", "--json", "web", "router"]);
        serde_json::from_str::<serde_json::Value>(&out).ok().filter(|v| v["units"][0]["log"].is_array())
    });
    let mut printed = std::collections::BTreeSet::new();
    for k in v.as_object().unwrap().keys() {
        printed.insert(k.clone());
    }
    for u in v["units"].as_array().unwrap() {
        for (k, val) in u.as_object().unwrap() {
            printed.insert(k.clone());
            if k == "router" {
                printed.extend(val.as_object().unwrap().keys().map(|s| format!("router.{s}")));
            }
        }
    }
    assert_eq!(f.stop(Duration::from_secs(20)), 0);

    let ops = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let table = &ops[ops.find("| field | type | meaning |").unwrap()..];
    let table = &table[..table.find("\n\n").unwrap()];
    let mut documented = std::collections::BTreeSet::new();
    let code = Regex::new(r"`([a-z_]+)`").unwrap();
    for row in table.lines().skip(2) {
        let first = row.split('|').nth(1).unwrap_or("");
        for c in code.captures_iter(first) {
            documented.insert(c[1].trim_start_matches("units[].").to_string());
        }
        if first.contains("`router`") {
            let meaning = row.split('|').nth(3).unwrap_or("");
            documented.extend(code.captures_iter(meaning).map(|c| format!("router.{}", &c[1])));
        }
    }
    documented.insert("units".into());
    documented.insert("name".into());
    let missing: Vec<_> = printed.difference(&documented).collect();
    assert!(missing.is_empty(), "status --json prints fields the docs do not describe: {missing:?}");
    let gone: Vec<_> = documented.iter().filter(|k| !printed.contains(*k) && !k.starts_with("router.unit")).collect();
    assert!(gone.is_empty(), "the docs describe fields status --json does not print: {gone:?}");
}
