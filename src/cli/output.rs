//! The one place the CLI writes to standard output.

#![allow(clippy::print_stdout)]

use std::io::Write;

/// Prints a line to standard output; a closed pipe is not an error worth a panic.
pub(crate) fn line(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
}

/// Prints rows as aligned columns (the first row is the header).
pub(crate) fn table(rows: &[Vec<String>]) {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}", w = *w))
            .collect();
        line(cells.join("  ").trim_end());
    }
}
