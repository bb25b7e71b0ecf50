//! Request hygiene (docs/http.md): the checks made before any key is looked at, and path
//! normalisation. Pure functions over the request head; heavily tested.
//!
//! Fails closed: anything ambiguous between keygate and the upstream is refused.

use std::borrow::Cow;

use http::{HeaderMap, Uri};

use crate::config::{AuthConfig, KeyHeader};

/// Why a request target is refused with `400 bad_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `*` or `host:port` instead of a path.
    TargetForm,
    /// `.` or `..` segment, raw or percent-encoded.
    DotSegment,
    /// `%2f %5c %25 %3b %3f %23`.
    EncodedDelimiter,
    /// Raw `\` or `;`.
    RawDelimiter,
    /// NUL, space or another control character, raw or encoded.
    Control,
    /// A raw byte ≥ 0x80.
    RawNonAscii,
    /// `%`, `%1`, `%zz`.
    BadEscape,
    /// A percent-encoded byte ≥ 0x80 while non-ASCII paths are not allowed.
    EncodedNonAscii,
    /// Percent-encoded bytes that are not valid (or are overlong) UTF-8.
    InvalidUtf8,
    /// A segment made only of dots (`...`): some back ends read it as `..`.
    DotsOnly,
    /// A segment ending in `.` (IIS strips it) — unless `routes.allow_trailing_dots`.
    TrailingDot,
    /// A segment ending in (non-ASCII) white space, which some back ends strip.
    TrailingSpace,
    /// A character whose compatibility form (NFKC) holds `.`, `/` or `\`
    /// (fullwidth `．`, `／`…): a back end that normalises would see another path.
    CompatibilityForm,
}

impl PathError {
    /// Says what was wrong, for the error body.
    pub(crate) fn explain(self) -> &'static str {
        match self {
            Self::TargetForm => "the request target must be a path starting with '/'",
            Self::DotSegment => "the path has a '.' or '..' segment (raw or percent-encoded)",
            Self::EncodedDelimiter => {
                "the path has a percent-encoded '/', '\\', '%', ';', '?' or '#'"
            }
            Self::RawDelimiter => "the path has a raw '\\' or ';'",
            Self::Control => "the path has a space, NUL or other control character",
            Self::RawNonAscii => "the path has a raw non-ASCII byte; percent-encode it",
            Self::BadEscape => {
                "the path has malformed percent-encoding ('%' must be followed by two hex digits)"
            }
            Self::EncodedNonAscii => {
                "the path has a percent-encoded non-ASCII byte, which this gateway does not accept"
            }
            Self::InvalidUtf8 => "the path's percent-encoded bytes are not valid UTF-8",
            Self::DotsOnly => "the path has a segment made only of dots",
            Self::TrailingDot => "a path segment ends in '.', which some back ends strip",
            Self::TrailingSpace => "a path segment ends in white space, which some back ends strip",
            Self::CompatibilityForm => {
                "the path has a character that normalises to '.', '/' or '\\' (such as a fullwidth dot)"
            }
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Checks and normalises the path of a request target.
///
/// Returns the path that is matched, logged and forwarded: unreserved escapes
/// decoded, other escapes in upper-case hex, runs of `/` merged. Borrowed when the
/// path was already normal.
pub(crate) fn normalize_target(
    uri: &Uri,
    allow_non_ascii: bool,
    allow_trailing_dots: bool,
) -> Result<Cow<'_, str>, PathError> {
    if uri.scheme().is_none() && uri.authority().is_some() {
        return Err(PathError::TargetForm);
    }
    normalize_path_with(uri.path(), allow_non_ascii, allow_trailing_dots)
}

/// See [`normalize_target`] (with `routes.allow_trailing_dots: false`).
pub fn normalize_path(path: &str, allow_non_ascii: bool) -> Result<Cow<'_, str>, PathError> {
    normalize_path_with(path, allow_non_ascii, false)
}

/// Checks the characters of a decoded run of non-ASCII bytes; says whether the run
/// ends in white space.
fn check_non_ascii(run: &[u8]) -> Result<bool, PathError> {
    use unicode_normalization::UnicodeNormalization;
    let s = std::str::from_utf8(run).map_err(|_| PathError::InvalidUtf8)?;
    for c in s.chars() {
        if std::iter::once(c)
            .nfkc()
            .any(|n| matches!(n, '.' | '/' | '\\'))
        {
            return Err(PathError::CompatibilityForm);
        }
    }
    Ok(s.chars().next_back().is_some_and(char::is_whitespace))
}

fn normalize_path_with(
    path: &str,
    allow_non_ascii: bool,
    allow_trailing_dots: bool,
) -> Result<Cow<'_, str>, PathError> {
    let raw = path.as_bytes();
    if raw.first() != Some(&b'/') {
        return Err(PathError::TargetForm);
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    // Decoded bytes of the current segment, to spot `.`/`..` after decoding.
    let mut seg_dots = 0usize; // dots seen in the current segment (decoded)
    let mut seg_other = false; // anything but a dot in the current segment
    let mut seg_last = Last::Other; // what the current segment ends with so far
    // Start of a run of percent-encoded bytes ≥ 0x80, checked as UTF-8 when it ends.
    let mut utf8_run: Vec<u8> = Vec::new();
    let mut changed = false;

    let end_segment = |seg_dots: usize, seg_other: bool, last: Last| -> Result<(), PathError> {
        match (seg_other, seg_dots, last) {
            (false, 1 | 2, _) => Err(PathError::DotSegment),
            (false, 3.., _) => Err(PathError::DotsOnly),
            (true, _, Last::Dot) if !allow_trailing_dots => Err(PathError::TrailingDot),
            (true, _, Last::Space) => Err(PathError::TrailingSpace),
            _ => Ok(()),
        }
    };
    let flush_utf8 = |run: &mut Vec<u8>, last: &mut Last| -> Result<(), PathError> {
        if !run.is_empty() {
            if check_non_ascii(run)? {
                *last = Last::Space;
            }
            run.clear();
        }
        Ok(())
    };

    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b != b'%' {
            flush_utf8(&mut utf8_run, &mut seg_last)?;
        }
        match b {
            b'/' => {
                end_segment(seg_dots, seg_other, seg_last)?;
                seg_last = Last::Other;
                if out.last() == Some(&b'/') {
                    changed = true; // merge runs of '/'
                } else {
                    out.push(b'/');
                }
                seg_dots = 0;
                seg_other = false;
                i += 1;
            }
            b'%' => {
                let (Some(h), Some(l)) = (
                    raw.get(i + 1).copied().and_then(hex),
                    raw.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = h * 16 + l;
                match v {
                    b'/' | b'\\' | b'%' | b';' | b'?' | b'#' => {
                        return Err(PathError::EncodedDelimiter);
                    }
                    0..=0x20 | 0x7f => return Err(PathError::Control),
                    0x80..=0xff => {
                        if !allow_non_ascii {
                            return Err(PathError::EncodedNonAscii);
                        }
                        utf8_run.push(v);
                        seg_other = true;
                        seg_last = Last::Other;
                        push_escape(&mut out, v, &raw[i..i + 3], &mut changed);
                    }
                    _ if is_unreserved(v) => {
                        flush_utf8(&mut utf8_run, &mut seg_last)?;
                        out.push(v);
                        changed = true;
                        if v == b'.' {
                            seg_dots += 1;
                            seg_last = Last::Dot;
                        } else {
                            seg_other = true;
                            seg_last = Last::Other;
                        }
                    }
                    _ => {
                        flush_utf8(&mut utf8_run, &mut seg_last)?;
                        seg_other = true;
                        seg_last = Last::Other;
                        push_escape(&mut out, v, &raw[i..i + 3], &mut changed);
                    }
                }
                i += 3;
            }
            b'\\' | b';' => return Err(PathError::RawDelimiter),
            0..=0x20 | 0x7f => return Err(PathError::Control),
            0x80..=0xff => return Err(PathError::RawNonAscii),
            b'.' => {
                seg_dots += 1;
                seg_last = Last::Dot;
                out.push(b);
                i += 1;
            }
            _ => {
                seg_other = true;
                seg_last = Last::Other;
                out.push(b);
                i += 1;
            }
        }
    }
    flush_utf8(&mut utf8_run, &mut seg_last)?;
    end_segment(seg_dots, seg_other, seg_last)?;
    if !changed {
        return Ok(Cow::Borrowed(path));
    }
    // Only ASCII was written: escapes, unreserved and the path's own ASCII bytes.
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| PathError::RawNonAscii)
}

/// What a path segment ends with, for the trailing-dot and trailing-space rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Last {
    Dot,
    Space,
    Other,
}

fn push_escape(out: &mut Vec<u8>, v: u8, original: &[u8], changed: &mut bool) {
    let esc = [
        b'%',
        HEX_UPPER[usize::from(v >> 4)],
        HEX_UPPER[usize::from(v & 15)],
    ];
    if original != esc {
        *changed = true;
    }
    out.extend_from_slice(&esc);
}

/// Header refusals of step 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Two or more API-key values.
    AmbiguousKey,
    /// `X-HTTP-Method-Override` and friends.
    MethodOverride,
    /// Both `Content-Length` and `Transfer-Encoding` (HTTP/1).
    AmbiguousFraming,
    /// Header bytes over `limits.max_header_bytes`.
    TooLarge,
}

const OVERRIDE_HEADERS: [http::HeaderName; 3] = [
    http::HeaderName::from_static("x-http-method-override"),
    http::HeaderName::from_static("x-http-method"),
    http::HeaderName::from_static("x-method-override"),
];

/// A presented key candidate, as received (not yet checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presented<'a> {
    None,
    One {
        /// The raw value (for `Bearer`, what follows the scheme and its space).
        value: &'a [u8],
        /// It came in `Authorization: Bearer` (so that header is removed upstream).
        bearer: bool,
    },
}

/// Header checks of step 1; finds the one key value if there is one.
pub(crate) fn check_headers<'a>(
    headers: &'a HeaderMap,
    auth: &AuthConfig,
    max_header_bytes: usize,
    is_http1: bool,
) -> Result<Presented<'a>, HeaderError> {
    let size: usize = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if size > max_header_bytes {
        return Err(HeaderError::TooLarge);
    }
    if OVERRIDE_HEADERS.iter().any(|h| headers.contains_key(h)) {
        return Err(HeaderError::MethodOverride);
    }
    if is_http1
        && headers.contains_key(http::header::TRANSFER_ENCODING)
        && headers.contains_key(http::header::CONTENT_LENGTH)
    {
        return Err(HeaderError::AmbiguousFraming);
    }
    let mut found: Presented<'a> = Presented::None;
    let mut take = |value: &'a [u8], bearer: bool| -> Result<(), HeaderError> {
        // A comma-joined list is more than one value.
        if value.contains(&b',') || found != Presented::None {
            return Err(HeaderError::AmbiguousKey);
        }
        found = Presented::One { value, bearer };
        Ok(())
    };
    for h in &auth.headers {
        match h {
            KeyHeader::Plain(name) => {
                for v in headers.get_all(name) {
                    take(v.as_bytes(), false)?;
                }
            }
            KeyHeader::Bearer => {
                for v in headers.get_all(http::header::AUTHORIZATION) {
                    if let Some(token) = bearer_token(v.as_bytes()) {
                        take(token, true)?;
                    }
                }
            }
        }
    }
    Ok(found)
}

/// The part after `Bearer ` when the scheme is Bearer (any case); `None` for other
/// schemes, which are not keys and are forwarded untouched.
pub(crate) fn bearer_token(v: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer";
    if v.len() < SCHEME.len() || !v[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let rest = &v[SCHEME.len()..];
    match rest.first() {
        None => Some(rest),
        Some(b' ') => Some(&rest[1..]),
        Some(b'\t') => Some(rest),
        // `Bearerx…` is another scheme.
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalize_path(p, false).map(|c| c.into_owned())
    }

    #[test]
    fn trailing_dots_and_compatibility_forms() {
        use PathError::*;
        let with = |p: &str, ascii: bool, dots: bool| {
            normalize_path_with(p, ascii, dots).map(|c| c.into_owned())
        };
        assert_eq!(with("/a/b.", false, true).unwrap(), "/a/b.");
        assert_eq!(with("/a/.../b", false, true), Err(DotsOnly));
        // Fullwidth full stop U+FF0E and solidus U+FF0F, one dot leader U+2024.
        assert_eq!(
            with("/a/%EF%BC%8E%EF%BC%8E/b", true, false),
            Err(CompatibilityForm)
        );
        assert_eq!(with("/a%EF%BC%8Fb", true, false), Err(CompatibilityForm));
        assert_eq!(with("/a/%E2%80%A4/b", true, false), Err(CompatibilityForm));
        // A no-break space at the end of a segment; inside it is fine.
        assert_eq!(with("/a/b%C2%A0", true, false), Err(TrailingSpace));
        assert_eq!(with("/a/b%C2%A0c", true, false).unwrap(), "/a/b%C2%A0c");
        assert_eq!(with("/caf%C3%A9", true, false).unwrap(), "/caf%C3%A9");
    }

    #[test]
    fn path_table() {
        use PathError::*;
        let rows: &[(&str, Result<&str, PathError>)] = &[
            ("/api/v1/jobs", Ok("/api/v1/jobs")),
            ("/", Ok("/")),
            ("//api///v1//jobs", Ok("/api/v1/jobs")),
            ("/api/v1/jobs/", Ok("/api/v1/jobs/")),
            ("/%61pi/v1/%4A%6f%62s", Ok("/api/v1/Jobs")),
            ("/a%7Eb%2D%5F", Ok("/a~b-_")),
            ("/a%3a%40%21", Ok("/a%3A%40%21")),
            ("/a%3A", Ok("/a%3A")),
            ("/a/./b", Err(DotSegment)),
            ("/a/../b", Err(DotSegment)),
            ("/a/..", Err(DotSegment)),
            ("/a/%2e/b", Err(DotSegment)),
            ("/a/%2E%2e/b", Err(DotSegment)),
            ("/a/.%2e", Err(DotSegment)),
            ("/a/.../b", Err(DotsOnly)),
            ("/a/%2e%2E%2e", Err(DotsOnly)),
            ("/a/.b/c", Ok("/a/.b/c")),
            ("/a/.b/c.", Err(TrailingDot)),
            ("/a/b%2e/c", Err(TrailingDot)),
            ("/a/b./", Err(TrailingDot)),
            ("/a%2fb", Err(EncodedDelimiter)),
            ("/a%2Fb", Err(EncodedDelimiter)),
            ("/a%5cb", Err(EncodedDelimiter)),
            ("/a%25b", Err(EncodedDelimiter)),
            ("/a%3bb", Err(EncodedDelimiter)),
            ("/a%3Fb", Err(EncodedDelimiter)),
            ("/a%23b", Err(EncodedDelimiter)),
            ("/a\\b", Err(RawDelimiter)),
            ("/a;b", Err(RawDelimiter)),
            ("/a%00b", Err(Control)),
            ("/a%20b", Err(Control)),
            ("/a%0ab", Err(Control)),
            ("/a%7f", Err(Control)),
            ("/a%", Err(BadEscape)),
            ("/a%1", Err(BadEscape)),
            ("/a%zz", Err(BadEscape)),
            ("/caf%C3%A9", Err(EncodedNonAscii)),
            ("*", Err(TargetForm)),
            ("api", Err(TargetForm)),
        ];
        for (input, want) in rows {
            let got = norm(input);
            assert_eq!(got.as_deref().map_err(|e| *e), *want, "{input}");
        }
    }

    #[test]
    fn non_ascii_when_allowed() {
        let n = |p| normalize_path(p, true).map(|c| c.into_owned());
        assert_eq!(n("/caf%c3%a9").unwrap(), "/caf%C3%A9");
        assert_eq!(n("/%C0%AF"), Err(PathError::InvalidUtf8), "overlong '/'");
        assert_eq!(n("/%E0%80%AF"), Err(PathError::InvalidUtf8), "overlong");
        assert_eq!(n("/%C3"), Err(PathError::InvalidUtf8), "truncated");
        assert_eq!(n("/%C3/%A9"), Err(PathError::InvalidUtf8), "split by '/'");
        assert_eq!(n("/a%FF"), Err(PathError::InvalidUtf8));
    }

    #[test]
    fn unchanged_paths_are_borrowed() {
        assert!(matches!(
            normalize_path("/a/b", false),
            Ok(Cow::Borrowed(_))
        ));
        assert!(matches!(
            normalize_path("/a/%3A", false),
            Ok(Cow::Borrowed(_))
        ));
        assert!(matches!(normalize_path("/a//b", false), Ok(Cow::Owned(_))));
    }

    #[test]
    fn target_forms() {
        let authority: Uri = "example.com:443".parse().unwrap();
        assert_eq!(
            normalize_target(&authority, false, false),
            Err(PathError::TargetForm)
        );
        let absolute: Uri = "http://evil.example/a//b?x=1".parse().unwrap();
        assert_eq!(normalize_target(&absolute, false, false).unwrap(), "/a/b");
    }

    #[test]
    fn bearer() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Bearer  abc"), Some(&b" abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert_eq!(bearer_token(b"Bearer"), Some(&b""[..]));
    }

    fn auth() -> AuthConfig {
        AuthConfig {
            headers: vec![
                KeyHeader::Plain(http::HeaderName::from_static("x-api-key")),
                KeyHeader::Bearer,
            ],
            forward_key: false,
        }
    }

    fn check(h: &[(&str, &str)]) -> Result<Option<Vec<u8>>, HeaderError> {
        let mut m = HeaderMap::new();
        for (k, v) in h {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        check_headers(&m, &auth(), 16384, true).map(|p| match p {
            Presented::None => None,
            Presented::One { value, .. } => Some(value.to_vec()),
        })
    }

    #[test]
    fn key_headers() {
        use HeaderError::*;
        assert_eq!(check(&[]), Ok(None));
        assert_eq!(check(&[("x-api-key", "k1")]), Ok(Some(b"k1".to_vec())));
        assert_eq!(
            check(&[("authorization", "Bearer k1")]),
            Ok(Some(b"k1".to_vec()))
        );
        assert_eq!(check(&[("authorization", "Basic dXNlcg==")]), Ok(None));
        assert_eq!(
            check(&[("x-api-key", "k1"), ("x-api-key", "k1")]),
            Err(AmbiguousKey)
        );
        assert_eq!(
            check(&[("x-api-key", "k1"), ("authorization", "Bearer k1")]),
            Err(AmbiguousKey)
        );
        assert_eq!(check(&[("x-api-key", "k1, k2")]), Err(AmbiguousKey));
        assert_eq!(
            check(&[("x-http-method-override", "DELETE")]),
            Err(MethodOverride)
        );
        assert_eq!(
            check(&[("X-Method-Override", "DELETE")]),
            Err(MethodOverride)
        );
        assert_eq!(
            check(&[("transfer-encoding", "chunked"), ("content-length", "3")]),
            Err(AmbiguousFraming)
        );
        assert_eq!(check(&[("x-big", &"a".repeat(20000))]), Err(TooLarge));
    }
}
