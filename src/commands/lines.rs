//! The output of `check` and `setup`: one [`CheckLine`] per step, `ok` or
//! `FAIL`, printed as it is known.

use crate::secret::redact;
use std::fmt;

/// One check's result (also one line of `setup`).
#[derive(Debug, Clone)]
pub struct CheckLine {
    pub name: &'static str,
    pub ok: bool,
    /// cvnotify's own text, with anything from outside (a project name, a
    /// URI or an error a service sent) put in through
    /// [`crate::secret::printable`].
    pub detail: String,
}

impl fmt::Display for CheckLine {
    /// The line as printed: every registered secret and secret-shaped text
    /// removed, whatever part of the detail carried it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.ok { "ok  " } else { "FAIL" };
        write!(f, "{mark}  {:<10} {}", self.name, redact(&self.detail))
    }
}

/// The line of step `name`: `ok` or `FAIL`, and what was found.
pub fn line(name: &'static str, ok: bool, detail: impl Into<String>) -> CheckLine {
    CheckLine {
        name,
        ok,
        detail: detail.into(),
    }
}

/// 0 when every line is `ok`, 1 otherwise.
pub fn exit_code(lines: &[CheckLine]) -> i32 {
    if lines.iter().all(|l| l.ok) {
        crate::exit::OK
    } else {
        crate::exit::FAILURE
    }
}

/// A command's lines: each printed through `out` as it is known, and kept
/// for the exit code.
pub struct Lines<F> {
    lines: Vec<CheckLine>,
    out: F,
}

impl<F: FnMut(&CheckLine)> Lines<F> {
    pub fn new(out: F) -> Self {
        Self {
            lines: Vec::new(),
            out,
        }
    }

    /// Prints `l` and keeps it.
    pub fn push(&mut self, l: CheckLine) {
        (self.out)(&l);
        self.lines.push(l);
    }

    /// Every line so far.
    pub fn into_vec(self) -> Vec<CheckLine> {
        self.lines
    }
}
