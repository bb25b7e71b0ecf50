//! A run of `keys:` items read without the YAML parser, when it is written in the
//! layout keygate itself writes ([`crate::keys::write::render_keys`]) or a close
//! hand-written cousin: one `field: value` per line, fields two columns right of the
//! item's `- `, values double-quoted without escapes or plain and simple, the
//! `permissions` and `rate_limit` maps in flow style on one line.
//!
//! Invariant: whatever this reads, serde_yaml reads the same way. Anything it is not
//! sure of (an escape, a tab, a comment after a value, a quoted key, a field given
//! twice, an unknown field, a multi-line value, a number it would not parse the way
//! YAML does…) is `None`, and the caller gives the piece to serde_yaml: the
//! reference reading, with its strictness, its error messages and their lines.

use super::{KeyEntry, KeyRateFile};

/// The `items` entries of `run` (text from one `- ` item to the end of the last),
/// or `None` when any line is not in the simple layout.
pub(super) fn entries(run: &str, items: usize) -> Option<Vec<KeyEntry>> {
    let mut out = Vec::with_capacity(items);
    let mut indent: Option<usize> = None;
    let mut cur: Option<Partial> = None;
    for line in run.split('\n') {
        let body = line.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue; // a blank line or a whole-line comment
        }
        let col = line.len() - body.len();
        let field = if let Some(rest) = body.strip_prefix("- ") {
            if indent.is_some_and(|i| i != col) {
                return None;
            }
            indent = Some(col);
            if let Some(done) = cur.replace(Partial::default()) {
                out.push(done.finish()?);
            }
            rest
        } else if indent.is_some_and(|i| col == i + 2) {
            body
        } else {
            return None;
        };
        // Field names have no `:`, so the first one ends the name.
        let colon = field.find(':')?;
        let value = field[colon + 1..].strip_prefix(' ')?;
        cur.as_mut()?.set(&field[..colon], value)?;
    }
    if let Some(done) = cur {
        out.push(done.finish()?);
    }
    (out.len() == items).then_some(out)
}

/// One entry's fields so far.
#[derive(Default)]
struct Partial {
    e: KeyEntry,
    has_id: bool,
    has_name: bool,
    has_permissions: bool,
}

impl Partial {
    /// Sets one field; `None` for an unknown field, one given twice or a value not
    /// in the simple layout.
    fn set(&mut self, key: &str, value: &str) -> Option<()> {
        let e = &mut self.e;
        let once = |slot: &mut Option<String>| -> Option<()> {
            if slot.is_some() {
                return None;
            }
            *slot = Some(block_scalar(value)?.to_string());
            Some(())
        };
        match key {
            "id" | "name" => {
                let (seen, slot) = if key == "id" {
                    (&mut self.has_id, &mut e.id)
                } else {
                    (&mut self.has_name, &mut e.name)
                };
                if *seen {
                    return None;
                }
                *seen = true;
                *slot = block_scalar(value)?.to_string();
                Some(())
            }
            "sha256" => once(&mut e.sha256),
            "prefix" => once(&mut e.prefix),
            "secret" => once(&mut e.secret),
            "sealed" => once(&mut e.sealed),
            "created_at" => once(&mut e.created_at),
            "expires_at" => once(&mut e.expires_at),
            "permissions" => {
                if self.has_permissions {
                    return None;
                }
                self.has_permissions = true;
                flow_map(value, |k, v| {
                    let v = flow_scalar(v)?;
                    e.permissions
                        .insert(k.to_string(), v.to_string())
                        .is_none()
                        .then_some(())
                })
            }
            "rate_limit" => {
                if e.rate_limit.is_some() {
                    return None;
                }
                let mut r = KeyRateFile::default();
                flow_map(value, |k, v| {
                    let slot = match k {
                        "per_second" => &mut r.per_second,
                        "per_minute" => &mut r.per_minute,
                        "burst" => &mut r.burst,
                        _ => return None,
                    };
                    if slot.is_some() {
                        return None;
                    }
                    *slot = Some(number(v)?);
                    Some(())
                })?;
                e.rate_limit = Some(r);
                Some(())
            }
            _ => None,
        }
    }

    fn finish(self) -> Option<KeyEntry> {
        (self.has_id && self.has_name).then_some(self.e)
    }
}

/// A whole block value: a double-quoted string without escapes, or a plain scalar
/// that can only be read as that text.
fn block_scalar(v: &str) -> Option<&str> {
    if v.starts_with('"') {
        return quoted(v);
    }
    plain(v, true).then_some(v)
}

/// A flow value or key (inside `{ }`): as [`block_scalar`], without spaces in a
/// plain one.
fn flow_scalar(v: &str) -> Option<&str> {
    if v.starts_with('"') {
        return quoted(v);
    }
    plain(v, false).then_some(v)
}

/// `"…"` with only printable characters between the quotes, no `\` and no `"`: its
/// value is exactly the text between them.
fn quoted(v: &str) -> Option<&str> {
    let inner = v.strip_prefix('"')?.strip_suffix('"')?;
    let ascii = inner
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
    (ascii || inner.chars().all(printable)).then_some(inner)
}

/// A character YAML takes as itself inside a one-line double-quoted scalar:
/// printable (YAML's own set), no escape or quote, no line break (NEL, LS, PS), no
/// byte-order mark.
fn printable(c: char) -> bool {
    match c {
        '"' | '\\' => false,
        ' '..='~' => true,
        '\u{A0}'..='\u{D7FF}' => !matches!(c, '\u{2028}' | '\u{2029}'),
        '\u{E000}'..='\u{FFFD}' => c != '\u{FEFF}',
        '\u{10000}'..='\u{10FFFF}' => true,
        _ => false,
    }
}

/// A plain scalar whose text is its value whatever the field's type: it starts with
/// a letter, digit or `_`, holds only `A-Za-z0-9 . _ - + / =` (and, in block
/// context, `:` not followed by a space or at the end, and single spaces inside),
/// and is not a null.
fn plain(v: &str, block: bool) -> bool {
    let b = v.as_bytes();
    let Some(&first) = b.first() else {
        return false;
    };
    if !(first.is_ascii_alphanumeric() || first == b'_') {
        return false;
    }
    let ok_bytes = b.iter().all(|&c| {
        c.is_ascii_alphanumeric()
            || matches!(c, b'.' | b'_' | b'-' | b'+' | b'/' | b'=')
            || (block && matches!(c, b':' | b' '))
    });
    ok_bytes
        && !(block && (v.contains(": ") || v.contains("  ") || v.ends_with([':', ' '])))
        && !matches!(v, "null" | "Null" | "NULL")
}

/// A plain decimal `u32` (no sign, no leading zero, no `_`, no other base).
fn number(v: &str) -> Option<u32> {
    let b = v.as_bytes();
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    v.parse().ok()
}

/// `{ k: v, k: v }` on one line: each pair handed to `each` (the key already read
/// as a scalar, the value's text); `{}` or `{ }` for none. A trailing comma, a
/// nested collection or anything unusual is `None`.
fn flow_map(v: &str, mut each: impl FnMut(&str, &str) -> Option<()>) -> Option<()> {
    let inner = v.strip_prefix('{')?.strip_suffix('}')?;
    let mut rest = inner.trim_start_matches(' ');
    if rest.is_empty() {
        return Some(());
    }
    loop {
        let (key, after) = flow_token(rest)?;
        let key = flow_scalar(key)?;
        let after = after.strip_prefix(": ")?.trim_start_matches(' ');
        let (value, after) = flow_token(after)?;
        each(key, value)?;
        let after = after.trim_start_matches(' ');
        if after.is_empty() {
            return Some(());
        }
        rest = after.strip_prefix(',')?.trim_start_matches(' ');
        if rest.is_empty() {
            return None; // `{ a: b, }`
        }
    }
}

/// The next scalar's text in a flow map (quotes kept) and what follows it.
fn flow_token(s: &str) -> Option<(&str, &str)> {
    let end = if let Some(body) = s.strip_prefix('"') {
        1 + body.find('"')? + 1
    } else {
        s.find([':', ',', ' ', '}', '{', '[', ']'])
            .unwrap_or(s.len())
    };
    (end > 0).then(|| s.split_at(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde_yaml's reading of a run, as the fast path's would print.
    fn reference(run: &str) -> Option<String> {
        serde_yaml::from_str::<Vec<KeyEntry>>(run)
            .ok()
            .map(|v| format!("{v:?}"))
    }

    /// Whenever the fast path reads a run, serde_yaml reads it the same way.
    fn agrees(run: &str, items: usize) -> bool {
        match entries(run, items) {
            None => false,
            Some(v) => {
                assert_eq!(Some(format!("{v:?}")), reference(run), "{run}");
                true
            }
        }
    }

    #[test]
    fn the_written_layout_is_read_directly_and_as_serde_yaml_reads_it() {
        let run = concat!(
            "  - id: \"k3Xb8u2KQw0\"\n",
            "    name: \"Zapier ✓ 100%\"\n",
            "    sha256: \"9b74c9897bac770ffc029102a200c5de9b74c9897bac770ffc029102a200c5de\"\n",
            "    prefix: \"kg_3Xb8\"\n",
            "    created_at: \"2026-11-26T03:00:00Z\"\n",
            "    permissions: { \"candidates\": \"read\", \"jobs\": \"write\" }\n",
            "    rate_limit: { per_second: 5, burst: 10 }\n",
            "    expires_at: \"2027-01-01\"\n",
            "\n",
            "  # a comment between items\n",
            "  - id: \"b\"\n",
            "    name: \"\"\n",
            "    secret: \"operator-supplied-secret-of-32-chars-or-more\"\n",
            "    sealed: \"v1:abc+/=\"\n",
            "    permissions: {  }\n",
            "    rate_limit: { per_minute: 4294967295 }\n",
            "  - id: c\n",
            "    name: Reporting Dashboard\n",
            "    permissions: {\"*\": read,jobs: none}\n",
            "    rate_limit: {}\n",
            "    created_at: 2026-11-26T03:00:00Z\n",
        );
        assert!(agrees(run, 3));
        // Hand-written: items at column 0, plain values that YAML might type
        // otherwise are still text in a string field.
        for v in [
            "yes", "true", "No", "1e3", "0x10", "007", "12", "a:b", "a - b", "x.y_z-1", "_a",
        ] {
            let run = format!("- id: a\n  name: {v}\n  prefix: {v}\n");
            assert!(agrees(&run, 1), "{v}");
            let flow = format!("- id: a\n  name: A\n  permissions: {{ j: {v} }}\n");
            assert_eq!(agrees(&flow, 1), !v.contains([':', ' ']), "{v}");
            let run = format!("- id: a\n  name: \"{v}\"\n  sha256: \"{v}\"\n");
            assert!(agrees(&run, 1), "{v}");
        }
        // Strings YAML reads as null are only quoted ones here.
        assert!(agrees("- id: a\n  name: \"null\"\n  sha256: \"~\"\n", 1));
        assert!(agrees("- id: \"\"\n  name: \"\"\n", 1));
    }

    #[test]
    fn anything_unusual_is_left_to_serde_yaml() {
        let base = "- id: a\n  name: A\n";
        for extra in [
            "  name: B\n",                            // a field twice
            "  colour: red\n",                        // unknown field
            "  sha256: null\n",                       // a null
            "  sha256: ~\n",                          // a null
            "  sha256:\n",                            // empty: a null
            "  sha256: \"a\\tb\"\n",                  // an escape
            "  sha256: 'single'\n",                   // single quotes
            "  sha256: \"a\" # comment\n",            // comment after a value
            "  sha256: a # comment\n",                // comment after a value
            "  sha256: \"a\tb\"\n",                   // a tab
            "\tsha256: a\n",                          // tab indentation
            "   sha256: a\n",                         // another column
            "  sha256:  a\n",                         // two spaces
            "  sha256: a \n",                         // trailing space
            "  sha256: a\r\n",                        // CRLF
            "  sha256: \"a\u{2028}b\"\n",             // a line separator
            "  sha256: \"a\u{85}b\"\n",               // NEL
            "  sha256: \"\u{feff}a\"\n",              // byte-order mark
            "  sha256: a: b\n",                       // a mapping in a value
            "  sha256: a:\n",                         //
            "  sha256: &x a\n",                       // an anchor
            "  sha256: *x\n",                         // an alias
            "  sha256: !!str a\n",                    // a tag
            "  sha256: |\n    a\n",                   // a block scalar
            "  sha256: \"a\n    b\"\n",               // a multi-line quoted scalar
            "  sha256: a\n    b\n",                   // a multi-line plain scalar
            "  sha256: [a]\n",                        // a sequence
            "  sha256: caf\u{e9}\n",                  // non-ASCII plain
            "  \"sha256\": a\n",                      // a quoted key
            "  permissions: { a: read, }\n",          // trailing comma
            "  permissions: { a: read, a: write }\n", // a category twice
            "  permissions: { a: {b: c} }\n",         // nested
            "  permissions: { a:read }\n",            // no space after the colon
            "  permissions: { \"a\":read }\n",        //
            "  permissions: { a: \"r\\u0065ad\" }\n", // an escape
            "  permissions:\n    a: read\n",          // block style
            "  permissions: { a: read }\n  permissions: {}\n",
            "  rate_limit: { per_second: 010 }\n", // leading zero
            "  rate_limit: { per_second: +5 }\n",  // sign
            "  rate_limit: { per_second: 1_000 }\n", // separator
            "  rate_limit: { per_second: 0x10 }\n", // another base
            "  rate_limit: { per_second: \"5\" }\n", // quoted number
            "  rate_limit: { per_second: 4294967296 }\n", // too large
            "  rate_limit: { per_second: -1 }\n",
            "  rate_limit: { per_hour: 5 }\n",
            "  rate_limit: { burst: 1, burst: 2 }\n",
        ] {
            let run = format!("{base}{extra}");
            assert!(entries(&run, 1).is_none(), "{run:?}");
        }
        // Structure: a missing name, an item at another column, text before it,
        // the count not matching, a bare `-`.
        for (run, n) in [
            ("- id: a\n", 1),
            ("- id: a\n  name: A\n - id: b\n   name: B\n", 2),
            ("- id: a\n  name: A\n", 2),
            ("-\n  id: a\n  name: A\n", 1),
            ("- id: a\n  name: A\n- - x\n", 2),
            ("-  id: a\n   name: A\n", 1),
        ] {
            assert!(entries(run, n).is_none(), "{run:?}");
        }
    }

    /// Many generated runs: every one the fast path reads, serde_yaml reads alike.
    #[test]
    fn generated_runs_agree_with_serde_yaml() {
        let values = [
            "\"k1\"",
            "k1",
            "\"Zapier\"",
            "Zap ier",
            "\"Zap: ier\"",
            "\"a#b\"",
            "\"é ✓\"",
            "\"\"",
            "\" x \"",
            "true",
            "~",
            "null",
            "\"null\"",
            "1.5",
            "-x",
            "a\\b",
            "\"a'b\"",
            "'a'",
            "x:",
            "x :y",
            "\"\u{a0}\"",
        ];
        let maps = [
            "{}",
            "{ }",
            "{ \"*\": \"read\" }",
            "{ a: read, b: write }",
            "{a: b,c: d}",
            "{ a: b, }",
            "{ \"a,b\": \"c\" }",
            "{ a: }",
            "{ : b }",
            "{ a: b c }",
            "{a: b}x",
        ];
        let rates = [
            "{ per_second: 5, burst: 10 }",
            "{ per_minute: 0 }",
            "{ burst: 00 }",
            "{}",
            "{ per_second: 5 burst: 10 }",
            "{ per_second: 4294967295 }",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut read, mut total) = (0, 0);
        for _ in 0..3000 {
            let indent = [0, 2, 4][next(3)];
            let pad = " ".repeat(indent);
            let items = 1 + next(3);
            let mut run = String::new();
            for _ in 0..items {
                let mut fields = vec![
                    format!("id: {}", values[next(values.len())]),
                    format!("name: {}", values[next(values.len())]),
                ];
                for f in ["sha256", "prefix", "secret", "created_at", "expires_at"] {
                    if next(3) == 0 {
                        fields.push(format!("{f}: {}", values[next(values.len())]));
                    }
                }
                if next(2) == 0 {
                    fields.push(format!("permissions: {}", maps[next(maps.len())]));
                }
                if next(3) == 0 {
                    fields.push(format!("rate_limit: {}", rates[next(rates.len())]));
                }
                let first = next(fields.len());
                fields.swap(0, first);
                for (j, f) in fields.iter().enumerate() {
                    let lead = if j == 0 { "- " } else { "  " };
                    run.push_str(&format!("{pad}{lead}{f}\n"));
                    if next(8) == 0 {
                        run.push_str(&format!("{pad}  # note\n\n"));
                    }
                }
            }
            total += 1;
            if agrees(&run, items) {
                read += 1;
            }
        }
        // Both routes were exercised.
        assert!(read > 100 && read < total, "{read} of {total}");
    }
}
