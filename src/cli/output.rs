//! The one place the CLI writes to standard output.

#![allow(clippy::print_stdout)]

use std::io::Write;

/// Prints a line to standard output; a closed pipe is not an error worth a panic.
pub(crate) fn line(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
}

/// Prints rows as aligned columns (the first row is the header). Widths are display
/// columns (`unicode-width`): a CJK character or an emoji takes two.
pub(crate) fn table(rows: &[Vec<String>]) {
    for l in table_lines(rows) {
        line(&l);
    }
}

fn table_lines(rows: &[Vec<String>]) -> Vec<String> {
    use unicode_width::UnicodeWidthStr;
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.width()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| {
                    let pad = w.saturating_sub(cell.width());
                    format!("{cell}{}", " ".repeat(pad))
                })
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect()
}

/// `keygate completions SHELL`: the completion script on standard output.
pub(crate) fn completions(shell: clap_complete::Shell, cmd: &mut clap::Command) {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, cmd, "keygate", &mut out);
}

/// `keygate man`: the man page (roff) on standard output.
pub(crate) fn man(cmd: clap::Command) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    clap_mangen::Man::new(cmd)
        .render(&mut out)
        .map_err(|e| format!("cannot write the man page: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_characters_align() {
        let rows = vec![
            vec!["NAME".to_string(), "ID".to_string()],
            vec!["日本".to_string(), "k1".to_string()],
            vec!["ab".to_string(), "k2".to_string()],
        ];
        let lines = table_lines(&rows);
        // "日本" is four columns wide, like "NAME".
        assert_eq!(lines[1], "日本  k1");
        assert_eq!(lines[2], "ab    k2");
    }
}
