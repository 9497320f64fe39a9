//! The shape of a unit file, checked on the parsed TOML tree before serde
//! sees it: every unknown key and every value of the wrong type in a
//! syntactically valid file is reported (with a "did you mean" when a
//! known name is close, and what to write instead), not just the first.
//! What was reported is removed from the tree, so that serde then reads
//! the rest and validation still finds the errors of the other keys.

use std::collections::BTreeSet;
use std::ops::Range;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One problem found in the tree, at a byte range of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub span: Range<usize>,
    pub message: String,
}

/// What a key's value must be.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Bool,
    Str,
    /// A humantime string; parsed (and its errors reported) by validation.
    Duration,
    Int {
        min: i64,
        max: i64,
    },
    Enum(&'static [&'static str]),
    /// An array of strings; `split`: a single string given instead is
    /// suggested as its words (argv), else as a one-element list.
    StrList {
        split: bool,
    },
    /// A table of strings (`env`).
    StrMap,
    /// A table of string tables, one per profile (`profile_env`).
    ProfileMap,
    /// A user or group name, or a numeric id.
    UserRef,
    /// A size: a string with a unit (parsed, and its errors reported, by
    /// validation) or a whole number of bytes.
    Size,
    Table(&'static [Field]),
    /// `[[name]]` tables.
    TableList(&'static [Field]),
}

#[derive(Debug)]
struct Field {
    name: &'static str,
    kind: Kind,
    required: bool,
    /// A valid value as written in TOML, for the fix hint.
    example: &'static str,
}

const fn f(name: &'static str, kind: Kind, example: &'static str) -> Field {
    Field { name, kind, required: false, example }
}

const fn required(name: &'static str, kind: Kind, example: &'static str) -> Field {
    Field { name, kind, required: true, example }
}

const U32_FROM_1: Kind = Kind::Int { min: 1, max: u32::MAX as i64 };

pub const SERVICE_KINDS: &[&str] = &["simple", "oneshot", "notify"];
pub const RESTART_POLICIES: &[&str] = &["no", "on-failure", "always"];
pub const ROTATIONS: &[&str] = &["never", "hourly", "daily"];

const UNIT: &[Field] = &[
    f("description", Kind::Str, "\"Flowise core API\""),
    f("requires", Kind::StrList { split: false }, "[\"postgres\"]"),
    f("wants", Kind::StrList { split: false }, "[\"postgres\"]"),
    f("after", Kind::StrList { split: false }, "[\"postgres\"]"),
    f("profiles", Kind::StrList { split: false }, "[\"dev\"]"),
    f("critical", Kind::Bool, "true"),
];

const SERVICE: &[Field] = &[
    f("command", Kind::StrList { split: true }, "[\"flowise\", \"start\"]"),
    f("shell", Kind::Str, "\"exec flowise start\""),
    f("type", Kind::Enum(SERVICE_KINDS), "\"simple\""),
    f("working_dir", Kind::Str, "\"/usr/src\""),
    f("user", Kind::UserRef, "\"node\""),
    f("group", Kind::UserRef, "\"node\""),
    f("env", Kind::StrMap, "{ PORT = \"3001\" }"),
    f("env_file", Kind::StrList { split: false }, "[\"/run/secrets/app.env\"]"),
    f("profile_env", Kind::ProfileMap, "{ queue = { MODE = \"queue\" } }"),
    f("restart", Kind::Enum(RESTART_POLICIES), "\"on-failure\""),
    f("restart_delay", Kind::Duration, "\"1s\""),
    f("restart_delay_max", Kind::Duration, "\"30s\""),
    f("start_limit_burst", U32_FROM_1, "5"),
    f("start_limit_interval", Kind::Duration, "\"2m\""),
    f("stop_signal", Kind::Str, "\"SIGTERM\""),
    f("stop_timeout", Kind::Duration, "\"10s\""),
    f("memory_max", Kind::Size, "\"1.5GiB\""),
    f("memory_check", Kind::Duration, "\"10s\""),
];

const ROUTE: &[Field] = &[
    required("prefix", Kind::Str, "\"/api/\""),
    required("upstream", Kind::Str, "\"http://127.0.0.1:3001\""),
    f("unit", Kind::Str, "\"flowise\""),
    f("strip_prefix", Kind::Bool, "false"),
];

const ROUTER: &[Field] = &[
    required("listen", Kind::Str, "\"0.0.0.0:3000\""),
    f("routes", Kind::TableList(ROUTE), ""),
    f("stop_timeout", Kind::Duration, "\"5s\""),
    f("connect_timeout", Kind::Duration, "\"2s\""),
    f("header_timeout", Kind::Duration, "\"10s\""),
    f("upstream_timeout", Kind::Duration, "\"60s\""),
    f("access_log", Kind::Bool, "true"),
    f("access_log_skip", Kind::StrList { split: false }, "[\"/api/v1/ping\"]"),
    f("trust_forwarded", Kind::Bool, "false"),
    f("max_connections", Kind::Int { min: i64::MIN, max: i64::MAX }, "1000"),
];

const PROBE: &[Field] = &[
    f("http", Kind::Str, "\"http://127.0.0.1:3001/api/v1/ping\""),
    f("tcp", Kind::Str, "\"127.0.0.1:5432\""),
    f("exec", Kind::StrList { split: true }, "[\"pg_isready\", \"-h\", \"127.0.0.1\"]"),
    f("log", Kind::Str, "\"ready to accept connections\""),
    f("interval", Kind::Duration, "\"500ms\""),
    f("timeout", Kind::Duration, "\"2s\""),
    f("start_timeout", Kind::Duration, "\"120s\""),
    f("failures", U32_FROM_1, "3"),
];

const LOG: &[Field] = &[
    f("prefix", Kind::Str, "\"core\""),
    f("file", Kind::Str, "\"/var/log/flowinit/app.log\""),
    f("rotate", Kind::Enum(ROTATIONS), "\"daily\""),
];

const TOP: &[Field] = &[
    f("unit", Kind::Table(UNIT), ""),
    f("service", Kind::Table(SERVICE), ""),
    f("router", Kind::Table(ROUTER), ""),
    f("readiness", Kind::Table(PROBE), ""),
    f("liveness", Kind::Table(PROBE), ""),
    f("log", Kind::Table(LOG), ""),
];

/// Checks `root` against the unit file schema; removes every entry that
/// was reported. Returns the problems (in file order) and the dotted paths
/// of the removed entries (`service.command`), so that validation does not
/// report them again as missing.
pub fn check(root: &mut Spanned<DeTable<'_>>) -> (Vec<Problem>, BTreeSet<String>) {
    let mut out = Checker { problems: Vec::new(), dropped: BTreeSet::new() };
    let span = root.span();
    out.table(root.get_mut(), span, TOP, "", "the top level");
    out.problems.sort_by_key(|p| p.span.start);
    (out.problems, out.dropped)
}

struct Checker {
    problems: Vec<Problem>,
    dropped: BTreeSet<String>,
}

impl Checker {
    fn push(&mut self, span: Range<usize>, message: String) {
        self.problems.push(Problem { span, message });
    }

    /// `path`: dotted path of the table (empty at the top); `label`: how
    /// the table is named in a message (`[service]`).
    fn table(&mut self, table: &mut DeTable<'_>, span: Range<usize>, fields: &[Field], path: &str, label: &str) {
        let mut remove = Vec::new();
        let mut unknown = Vec::new();
        for (key, value) in table.iter_mut() {
            let name: &str = key.get_ref();
            let full = if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
            let Some(field) = fields.iter().find(|f| f.name == name) else {
                let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
                let message = match closest(name, names.iter().copied()) {
                    Some(near) => format!("unknown field `{name}` in {label}; did you mean `{near}`?"),
                    None => format!(
                        "unknown field `{name}` in {label}; expected one of {}",
                        names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
                    ),
                };
                self.push(key.span(), message);
                unknown.push(name.to_string());
                remove.push(name.to_string());
                self.dropped.insert(full);
                continue;
            };
            if !self.value(field, value, &full) {
                remove.push(name.to_string());
                self.dropped.insert(full);
            }
        }
        for name in remove {
            table.remove(name.as_str());
        }
        for field in fields.iter().filter(|f| f.required) {
            let full = if path.is_empty() { field.name.to_string() } else { format!("{path}.{}", field.name) };
            // A misspelt `listne` was reported with its "did you mean".
            let misspelt = unknown.iter().any(|u| closest(u, [field.name]).is_some());
            if !table.contains_key(field.name) && !self.dropped.contains(&full) && !misspelt {
                self.push(
                    span.clone(),
                    format!("{label} is missing the key `{}`; write {} = {}", field.name, field.name, field.example),
                );
            }
        }
    }

    /// The entries of a table of strings (`env`): each one that is not a
    /// string is reported and removed.
    fn str_entries(&mut self, key: &str, entries: &mut DeTable<'_>, path: &str) {
        let mut remove = Vec::new();
        for (name, v) in entries.iter() {
            if !matches!(v.get_ref(), DeValue::String(_)) {
                let name: &str = name.get_ref();
                // The value is not echoed: env values may be secrets.
                self.push(
                    v.span(),
                    format!(
                        "key `{key}.{name}`: expected a string, found {}; quote the value: {name} = \"…\"",
                        kind_name(v.get_ref())
                    ),
                );
                remove.push(name.to_string());
            }
        }
        for name in remove {
            entries.remove(name.as_str());
            self.dropped.insert(format!("{path}.{name}"));
        }
    }

    /// Whether the value may stay in the tree.
    fn value(&mut self, field: &Field, value: &mut Spanned<DeValue<'_>>, path: &str) -> bool {
        let span = value.span();
        let key = field.name;
        let found = describe(value.get_ref());
        let wrong =
            |what: &str, hint: String| format!("key `{key}`: expected {what}, found {found}; write {key} = {hint}");
        match (field.kind, value.get_mut()) {
            (Kind::Bool, DeValue::Boolean(_))
            | (Kind::Str, DeValue::String(_))
            | (Kind::Duration, DeValue::String(_)) => true,
            (Kind::Bool, v) => {
                let hint = bool_hint(v).unwrap_or(field.example).to_string();
                self.push(span, wrong("a boolean (true or false)", hint));
                false
            }
            (Kind::Str, v) => {
                let hint = scalar_text(v).map_or(field.example.to_string(), |t| format!("{t:?}"));
                self.push(span, wrong("a string", hint));
                false
            }
            (Kind::Duration, v) => {
                let hint = match v {
                    DeValue::Integer(_) | DeValue::Float(_) => {
                        scalar_text(v).map_or(field.example.to_string(), |n| format!("\"{n}s\""))
                    }
                    _ => field.example.to_string(),
                };
                self.push(span, wrong("a duration string such as \"500ms\", \"10s\" or \"1m 30s\"", hint));
                false
            }
            (Kind::Int { min, max }, DeValue::Integer(i)) => {
                let bound = match i64::from_str_radix(i.as_str(), i.radix()) {
                    Ok(n) if (min..=max).contains(&n) => return true,
                    Ok(n) if n < min => format!("must be at least {min}"),
                    _ => format!("must be at most {max}"),
                };
                self.push(span, format!("key `{key}`: {bound}, found {i}; write {key} = {}", field.example));
                false
            }
            (Kind::Int { .. }, v) => {
                let hint = match v {
                    DeValue::String(s) => s.trim().parse::<i64>().map_or(field.example.to_string(), |n| n.to_string()),
                    DeValue::Float(_) => scalar_text(v)
                        .and_then(|t| t.parse::<f64>().ok())
                        .filter(|x| x.fract() == 0.0)
                        .map_or(field.example.to_string(), |x| format!("{x:.0}")),
                    _ => field.example.to_string(),
                };
                self.push(span, wrong("a whole number", hint));
                false
            }
            (Kind::Enum(allowed), DeValue::String(s)) => {
                if allowed.contains(&s.as_ref()) {
                    return true;
                }
                let list = allowed.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ");
                let message = match closest(s, allowed.iter().copied()) {
                    Some(near) => format!("key `{key}`: unknown value {s:?}; did you mean {near:?}? (one of {list})"),
                    None => format!("key `{key}`: unknown value {s:?}; write one of {list}"),
                };
                self.push(span, message);
                false
            }
            (Kind::Enum(allowed), _) => {
                let list = allowed.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ");
                self.push(span, wrong(&format!("one of {list}"), field.example.to_string()));
                false
            }
            (Kind::StrList { .. }, DeValue::Array(items)) => {
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    if !matches!(item.get_ref(), DeValue::String(_)) {
                        let hint = scalar_text(item.get_ref()).map_or("\"…\"".to_string(), |t| format!("{t:?}"));
                        self.push(
                            item.span(),
                            format!(
                                "key `{key}`: element {} must be a string, found {}; write {hint}",
                                i + 1,
                                describe(item.get_ref())
                            ),
                        );
                        ok = false;
                    }
                }
                ok
            }
            (Kind::StrList { split }, v) => {
                let hint = match v {
                    DeValue::String(s) if split && !s.trim().is_empty() => list_text(s.split_whitespace()),
                    DeValue::String(s) => list_text(std::iter::once(s.as_ref())),
                    other => {
                        scalar_text(other).map_or(field.example.to_string(), |t| list_text(std::iter::once(t.as_str())))
                    }
                };
                self.push(span, wrong("an array of strings", hint));
                false
            }
            (Kind::StrMap, DeValue::Table(entries)) => {
                self.str_entries(key, entries, path);
                true
            }
            (Kind::StrMap, v) => {
                let found = kind_name(v);
                self.push(
                    span,
                    format!("key `{key}`: expected a table of strings, found {found}; write {key} = {}", field.example),
                );
                false
            }
            (Kind::ProfileMap, DeValue::Table(profiles)) => {
                let mut remove = Vec::new();
                for (name, v) in profiles.iter_mut() {
                    let name: &str = name.get_ref();
                    let label = format!("{key}.{name}");
                    if !matches!(v.get_ref(), DeValue::Table(_)) {
                        self.push(
                            v.span(),
                            format!(
                                "key `{label}`: expected a table of strings (the env while profile {name:?} is on), found {}; write [service.{label}] with KEY = \"value\" lines",
                                kind_name(v.get_ref())
                            ),
                        );
                        remove.push(name.to_string());
                    } else if let DeValue::Table(entries) = v.get_mut() {
                        self.str_entries(&label, entries, &format!("{path}.{name}"));
                    }
                }
                for name in remove {
                    profiles.remove(name.as_str());
                    self.dropped.insert(format!("{path}.{name}"));
                }
                true
            }
            (Kind::ProfileMap, v) => {
                let found = kind_name(v);
                self.push(
                    span,
                    format!("key `{key}`: expected a table of env tables, one per profile, found {found}; write [service.{key}.queue] with KEY = \"value\" lines"),
                );
                false
            }
            (Kind::Size, DeValue::String(_) | DeValue::Integer(_)) => true,
            (Kind::Size, _) => {
                let what = "a size string such as \"512MiB\" or \"1.5GiB\", or a whole number of bytes";
                self.push(span, wrong(what, field.example.to_string()));
                false
            }
            (Kind::UserRef, DeValue::String(_)) => true,
            (Kind::UserRef, DeValue::Integer(i)) => {
                if i64::from_str_radix(i.as_str(), i.radix()).is_ok_and(|n| u32::try_from(n).is_ok()) {
                    return true;
                }
                let shown = i.to_string();
                self.push(
                    span,
                    format!(
                        "key `{key}`: invalid id {shown}: expected 0..={}; write {key} = {} or a name",
                        u32::MAX,
                        field.example
                    ),
                );
                false
            }
            (Kind::UserRef, _) => {
                self.push(span, wrong("a name (string) or a numeric id", field.example.to_string()));
                false
            }
            (Kind::Table(fields), DeValue::Table(t)) => {
                let label = format!("[{path}]");
                self.table(t, span, fields, path, &label);
                true
            }
            (Kind::Table(_), _) => {
                self.push(span, format!("key `{key}`: expected a table, found {found}; write [{path}] on a line of its own, then its keys"));
                false
            }
            (Kind::TableList(fields), DeValue::Array(items))
                if items.iter().all(|i| matches!(i.get_ref(), DeValue::Table(_))) =>
            {
                let label = format!("[[{path}]]");
                for item in items.iter_mut() {
                    let item_span = item.span();
                    if let DeValue::Table(t) = item.get_mut() {
                        self.table(t, item_span, fields, path, &label);
                    }
                }
                true
            }
            (Kind::TableList(_), _) => {
                self.push(span, format!("key `{key}`: expected [[{path}]] tables, found {found}; write [[{path}]] on a line of its own before each entry"));
                false
            }
        }
    }
}

/// "the string \"yes\"", "the integer 10", "an array", …
fn describe(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("the string {s:?}"),
        DeValue::Integer(i) => format!("the integer {i}"),
        DeValue::Float(x) => format!("the float {x}"),
        DeValue::Boolean(b) => format!("the boolean {b}"),
        other => kind_name(other).to_string(),
    }
}

fn kind_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// A scalar's text as the user wrote it (strings unquoted).
fn scalar_text(v: &DeValue<'_>) -> Option<String> {
    match v {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) => Some(i.to_string()),
        DeValue::Float(x) => Some(x.to_string()),
        DeValue::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn bool_hint(v: &DeValue<'_>) -> Option<&'static str> {
    let text = scalar_text(v)?.trim().to_ascii_lowercase();
    match text.as_str() {
        "true" | "yes" | "y" | "on" | "1" => Some("true"),
        "false" | "no" | "n" | "off" | "0" => Some("false"),
        _ => None,
    }
}

fn list_text<'a>(items: impl Iterator<Item = &'a str>) -> String {
    format!("[{}]", items.map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", "))
}

/// Whether a reported (and removed) entry of `table` was, or was close to,
/// one of `names`: a following "missing key" error would only repeat it.
pub fn dropped_near(dropped: &BTreeSet<String>, table: &str, names: &[&str]) -> bool {
    dropped
        .iter()
        .filter_map(|d| d.strip_prefix(table)?.strip_prefix('.'))
        .any(|key| names.iter().any(|n| n.eq_ignore_ascii_case(key)) || closest(key, names.iter().copied()).is_some())
}

/// The candidate closest to `word`, if it is close enough to be what was
/// meant: at most 2 edits (a swap of neighbours counts as one) and at most
/// a third of the word, or a Jaro-Winkler similarity of at least 0.9.
/// Never a wild guess: nothing for a word that is merely short.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .filter(|c| !c.eq_ignore_ascii_case(word))
        .filter_map(|c| {
            let lc = c.to_ascii_lowercase();
            let edits = strsim::damerau_levenshtein(&w, &lc);
            let longest = w.chars().count().max(lc.chars().count());
            let similar = strsim::jaro_winkler(&w, &lc);
            let close = (edits <= 2 && edits * 3 <= longest) || (similar >= 0.9 && edits <= longest / 2);
            close.then_some((edits, -similar, c))
        })
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)))
        .map(|(_, _, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let mut root = DeTable::parse(text).unwrap();
        let (problems, _) = check(&mut root);
        problems.into_iter().map(|p| format!("{}: {}", p.span.start, p.message)).collect()
    }

    #[test]
    fn near_misses_are_suggested_and_wild_guesses_are_not() {
        let keys = ["restart", "restart_delay", "restart_delay_max", "stop_timeout", "command"];
        assert_eq!(closest("restart_dealy", keys), Some("restart_delay"));
        assert_eq!(closest("stop_timout", keys), Some("stop_timeout"));
        assert_eq!(closest("comand", keys), Some("command"));
        assert_eq!(closest("bogus", keys), None);
        assert_eq!(closest("x", ["no", "on-failure", "always"]), None);
        assert_eq!(closest("allways", ["no", "on-failure", "always"]), Some("always"));
        assert_eq!(closest("postgress", ["postgres", "flowise", "flowise-ui"]), Some("postgres"));
        assert_eq!(closest("ghost", ["api", "ok", "worker", "zz-witness"]), None);
        assert_eq!(closest("a", ["b", "c"]), None);
    }

    #[test]
    fn every_problem_of_a_valid_file_is_reported_in_order() {
        let text = "[readiness]\ntcp = \"127.0.0.1:1\"\ninterval = 10\n[service]\ncommand = [\"true\"]\nrestart_dealy = \"1s\"\ncritical = \"yes\"\n";
        let got = problems(text);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].contains("key `interval`: expected a duration string"), "{got:?}");
        assert!(got[0].ends_with("write interval = \"10s\""), "{got:?}");
        assert!(
            got[1].contains("unknown field `restart_dealy` in [service]; did you mean `restart_delay`?"),
            "{got:?}"
        );
        assert!(got[2].contains("unknown field `critical` in [service]"), "{got:?}");
    }

    #[test]
    fn wrong_types_say_what_to_write() {
        let cases = [
            ("[unit]\ncritical = \"yes\"\n", "key `critical`: expected a boolean (true or false), found the string \"yes\"; write critical = true"),
            ("[service]\nstart_limit_burst = \"five\"\n", "key `start_limit_burst`: expected a whole number, found the string \"five\"; write start_limit_burst = 5"),
            ("[service]\nstart_limit_burst = \"7\"\n", "write start_limit_burst = 7"),
            ("[service]\nstart_limit_burst = -1\n", "key `start_limit_burst`: must be at least 1, found -1; write start_limit_burst = 5"),
            ("[service]\ncommand = \"flowise start\"\n", "key `command`: expected an array of strings, found the string \"flowise start\"; write command = [\"flowise\", \"start\"]"),
            ("[unit]\nrequires = \"db\"\n", "write requires = [\"db\"]"),
            ("[service]\ncommand = [\"sleep\", 10]\n", "key `command`: element 2 must be a string, found the integer 10; write \"10\""),
            ("[service]\nenv = { PORT = 3001 }\n", "key `env.PORT`: expected a string, found an integer; quote the value: PORT = \"…\""),
            ("[service]\nrestart = \"allways\"\n", "key `restart`: unknown value \"allways\"; did you mean \"always\"?"),
            ("[service]\ntype = \"forking\"\n", "key `type`: unknown value \"forking\"; write one of \"simple\", \"oneshot\", \"notify\""),
            ("[service]\nuser = true\n", "key `user`: expected a name (string) or a numeric id, found the boolean true; write user = \"node\""),
            ("[service]\nuser = -1\n", "key `user`: invalid id -1"),
            ("service = 5\n", "key `service`: expected a table, found the integer 5"),
            ("[router]\nlisten = \"127.0.0.1:1\"\n[[router.routes]]\nupstream = \"http://127.0.0.1:2\"\n", "[[router.routes]] is missing the key `prefix`; write prefix = \"/api/\""),
            ("[router]\nlistne = \"127.0.0.1:1\"\n", "unknown field `listne` in [router]; did you mean `listen`?"),
        ];
        for (text, want) in cases {
            let got = problems(text);
            assert_eq!(got.len(), 1, "{text}: {got:?}");
            assert!(got[0].contains(want), "{text}:\n got {}\nwant {want}", got[0]);
        }
    }

    #[test]
    fn reported_entries_are_removed_and_recorded() {
        let mut root =
            DeTable::parse("[service]\ncommand = \"a b\"\nshell = \"x\"\nenv = { A = 1, B = \"b\" }\n").unwrap();
        let (_, dropped) = check(&mut root);
        assert_eq!(dropped.into_iter().collect::<Vec<_>>(), ["service.command", "service.env.A"]);
        let service = root.get_ref().get("service").unwrap().get_ref().as_table().unwrap();
        assert!(service.get("command").is_none() && service.get("shell").is_some());
        assert_eq!(service.get("env").unwrap().get_ref().as_table().unwrap().len(), 1);
    }
}
