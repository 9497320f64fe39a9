//! Writing to the terminal without panicking: like `println!`/`print!`/
//! `eprintln!`, but a closed stdout or stderr (EPIPE, `flowinit status |
//! head -1`) is not a panic. Each macro evaluates to whether the write
//! worked. The one place every layer may use for terminal output.

#[macro_export]
macro_rules! outln {
    ($($t:tt)*) => {{ use std::io::Write as _; $crate::term::wrote(writeln!(std::io::stdout(), $($t)*)) }};
}

#[macro_export]
macro_rules! out {
    ($($t:tt)*) => {{ use std::io::Write as _; $crate::term::wrote(write!(std::io::stdout(), $($t)*)) }};
}

#[macro_export]
macro_rules! errln {
    ($($t:tt)*) => {{ use std::io::Write as _; $crate::term::wrote(writeln!(std::io::stderr(), $($t)*)) }};
}

/// Whether a terminal write worked (for the macros above; a failed write is
/// not worth a panic, and callers may ignore it).
pub fn wrote(r: std::io::Result<()>) -> bool {
    r.is_ok()
}
