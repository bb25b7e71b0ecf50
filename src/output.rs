//! The one place the CLI writes to standard output.

#![allow(clippy::print_stdout)]

use std::io::Write;

/// Prints a line to standard output; a closed pipe is not an error worth a panic.
pub fn line(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
}
