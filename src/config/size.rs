//! Sizes in bytes as unit files write them (`memory_max = "1.5GiB"`), and
//! back for people (`1.6GiB`). Pure.
//!
//! Every unit is a power of 1024, as systemd (`MemoryMax=1G`), docker
//! (`--memory 512m`) and nginx (`1m`) read them: `K`, `M`, `G`, `T` (or
//! `k`, `m`, `g`, `t`) and `Ki`…`Ti`, `KiB`…`TiB`. `KB`, `MB`, `GB`, `TB`
//! are refused: some read them as powers of 1000 (Kubernetes' `1G`), and a
//! memory limit must not depend on which. A bare number (or one with `B`)
//! is bytes. A fraction is allowed (`1.5GiB`) and rounded down to a whole
//! byte.

/// Every accepted unit and its multiplier.
const UNITS: &[(&str, u64)] = &[
    ("", 1),
    ("B", 1),
    ("K", 1 << 10),
    ("k", 1 << 10),
    ("Ki", 1 << 10),
    ("KiB", 1 << 10),
    ("M", 1 << 20),
    ("m", 1 << 20),
    ("Mi", 1 << 20),
    ("MiB", 1 << 20),
    ("G", 1 << 30),
    ("g", 1 << 30),
    ("Gi", 1 << 30),
    ("GiB", 1 << 30),
    ("T", 1 << 40),
    ("t", 1 << 40),
    ("Ti", 1 << 40),
    ("TiB", 1 << 40),
];

/// Units refused as ambiguous, with what to write instead.
const AMBIGUOUS: &[(&str, &str)] = &[("KB", "KiB"), ("MB", "MiB"), ("GB", "GiB"), ("TB", "TiB")];

/// Why a size did not parse; reads after "invalid size "…": ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("expected a number, then an optional unit")]
    NoNumber,
    #[error("unknown unit {unit:?}{hint}", unit = .0, hint = did_you_mean(.1))]
    UnknownUnit(String, Option<&'static str>),
    /// `GB` and the like: powers of 1000 to some, of 1024 to others.
    #[error("{unit:?} is ambiguous (1000 or 1024?): write {fix:?} or {short:?}, both powers of 1024", unit = .0, fix = .1, short = &.1[..1])]
    Ambiguous(String, &'static str),
    #[error("must be more than 0 bytes")]
    Zero,
    #[error("too large (at most {} bytes)", u64::MAX)]
    TooLarge,
}

fn did_you_mean(near: &Option<&str>) -> String {
    near.map(|u| format!(" (did you mean {u:?}?)")).unwrap_or_default()
}

/// `"1.5GiB"` → 1610612736.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let end = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (number, unit) = (&t[..end], t[end..].trim_start());
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || frac.contains('.') || (number.contains('.') && frac.is_empty()) {
        return Err(SizeError::NoNumber);
    }
    if let Some((_, fix)) = AMBIGUOUS.iter().find(|(u, _)| u.eq_ignore_ascii_case(unit)) {
        return Err(SizeError::Ambiguous(unit.to_string(), fix));
    }
    let Some(&(_, mult)) = UNITS.iter().find(|(u, _)| *u == unit) else {
        let near = UNITS.iter().find(|(u, _)| !u.is_empty() && u.eq_ignore_ascii_case(unit)).map(|(u, _)| *u);
        return Err(SizeError::UnknownUnit(unit.to_string(), near));
    };
    let whole: u128 = whole.parse().map_err(|_| SizeError::TooLarge)?;
    // Digits past the 12th cannot matter: a multiplier is below 10^13.
    let frac = &frac[..frac.len().min(12)];
    let frac_value: u128 = if frac.is_empty() { 0 } else { frac.parse().map_err(|_| SizeError::NoNumber)? };
    let scale = 10u128.pow(frac.len() as u32);
    let bytes = whole
        .checked_mul(mult as u128)
        .and_then(|w| w.checked_add(frac_value * mult as u128 / scale))
        .ok_or(SizeError::TooLarge)?;
    match u64::try_from(bytes) {
        Ok(0) => Err(SizeError::Zero),
        Ok(b) => Ok(b),
        Err(_) => Err(SizeError::TooLarge),
    }
}

/// `1.6GiB`, `312MiB`, `64KiB`, `900B`: powers of 1024, at most one
/// decimal (none from 100 up).
pub fn format_bytes(bytes: u64) -> String {
    format!("{}B", short(bytes, true))
}

/// `1.6Gi`, `312Mi`…, or without `binary`, `1.6G`, `312M` (still powers of
/// 1024, as `top` and `ps` show memory); bytes below 1024 as they are.
pub fn short(bytes: u64, binary: bool) -> String {
    const STEPS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if bytes < 1024 {
        return if binary { format!("{bytes}") } else { format!("{bytes}B") };
    }
    let mut value = bytes as f64 / 1024.0;
    let mut step = 0;
    // From 1023.5 on it would show as "1024": the next unit reads better.
    while value >= 1023.5 && step < STEPS.len() - 1 {
        value /= 1024.0;
        step += 1;
    }
    let i = if binary { "i" } else { "" };
    let shown = if value >= 99.95 { format!("{value:.0}") } else { format!("{value:.1}") };
    format!("{}{}{i}", shown.trim_end_matches(".0"), STEPS[step])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        let table = [
            ("1", 1),
            ("512", 512),
            ("512B", 512),
            ("1K", 1024),
            ("1k", 1024),
            ("2M", 2 << 20),
            ("512m", 512 << 20),
            ("1G", 1 << 30),
            ("1g", 1 << 30),
            ("1T", 1 << 40),
            ("1Ki", 1024),
            ("1KiB", 1024),
            ("300Mi", 300 << 20),
            ("300MiB", 300 << 20),
            ("2Gi", 2 << 30),
            ("1.5GiB", 3 << 29),
            ("1.5 GiB", 3 << 29),
            ("  64MiB ", 64 << 20),
            ("0.5K", 512),
            ("1.0000000000001G", 1 << 30),
            ("1TiB", 1 << 40),
        ];
        for (text, want) in table {
            assert_eq!(parse_size(text), Ok(want), "{text:?}");
        }
        assert_eq!(parse_size("16777215TiB"), Ok(16_777_215u64 << 40));
    }

    #[test]
    fn refuses_with_a_reason() {
        let table = [
            ("", SizeError::NoNumber),
            ("GiB", SizeError::NoNumber),
            ("1.", SizeError::NoNumber),
            ("1.2.3M", SizeError::NoNumber),
            ("-1G", SizeError::NoNumber),
            ("1gib", SizeError::UnknownUnit("gib".into(), Some("GiB"))),
            ("1GB", SizeError::Ambiguous("GB".into(), "GiB")),
            ("1.5gb", SizeError::Ambiguous("gb".into(), "GiB")),
            ("1kb", SizeError::Ambiguous("kb".into(), "KiB")),
            ("1mib", SizeError::UnknownUnit("mib".into(), Some("MiB"))),
            ("1 gigs", SizeError::UnknownUnit("gigs".into(), None)),
            ("1e9", SizeError::UnknownUnit("e9".into(), None)),
            ("0", SizeError::Zero),
            ("0.0001K", SizeError::Zero),
            ("16777216TiB", SizeError::TooLarge),
            ("99999999999999999999999999999999999999999", SizeError::TooLarge),
        ];
        for (text, want) in table {
            assert_eq!(parse_size(text), Err(want), "{text:?}");
        }
        assert_eq!(
            SizeError::Ambiguous("GB".into(), "GiB").to_string(),
            "\"GB\" is ambiguous (1000 or 1024?): write \"GiB\" or \"G\", both powers of 1024"
        );
        assert_eq!(
            SizeError::UnknownUnit("gib".into(), Some("GiB")).to_string(),
            "unknown unit \"gib\" (did you mean \"GiB\"?)"
        );
    }

    #[test]
    fn formats_for_people() {
        let table = [
            (0, "0B", "0B"),
            (900, "900B", "900B"),
            (1024, "1KiB", "1K"),
            (1536, "1.5KiB", "1.5K"),
            (64 << 20, "64MiB", "64M"),
            (312 << 20, "312MiB", "312M"),
            ((16 << 30) / 10, "1.6GiB", "1.6G"),
            (3 << 29, "1.5GiB", "1.5G"),
            ((1 << 30) - 1, "1GiB", "1G"),
            (100 * (1 << 20) - 1, "100MiB", "100M"),
            (u64::MAX, "16384PiB", "16384P"),
        ];
        for (bytes, long, table_form) in table {
            assert_eq!(format_bytes(bytes), long, "{bytes}");
            assert_eq!(short(bytes, false), table_form, "{bytes}");
        }
    }
}
