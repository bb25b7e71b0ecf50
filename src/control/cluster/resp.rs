//! The few RESP2 shapes the request path's Redis client ([`super::fast`]) speaks:
//! commands encoded as arrays of bulk strings, and replies that are a simple
//! string (`+OK`, `+PONG`), an error (`-NOSCRIPT …`) or an array of exactly two
//! integers (the GCRA script's `{allowed, wait_µs}`).
//!
//! Anything else — a bulk string, a nil, a nested array, an array of another
//! length, a bare line feed, a line longer than [`MAX_LINE`] — is a protocol
//! surprise ([`Unexpected`]): the client then drops the connection and fails
//! every waiter, rather than guessing where the next reply starts.

use bytes::{BufMut, Bytes, BytesMut};

/// The longest line (without CRLF) a reply may have.
pub(crate) const MAX_LINE: usize = 4096;

/// `PING`, encoded.
pub(crate) const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

/// One reply the request path uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// `*2\r\n:a\r\n:b\r\n`.
    Pair(i64, i64),
    /// `+…`.
    Status(String),
    /// `-…` (the server's message, e.g. `NOSCRIPT No matching script`).
    Error(String),
}

/// A reply the request path does not expect; the connection cannot go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unexpected(pub(crate) &'static str);

impl std::fmt::Display for Unexpected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unexpected Redis reply: {}", self.0)
    }
}

/// `args` as one RESP command (an array of bulk strings).
pub(crate) fn encode(args: &[&[u8]]) -> Bytes {
    let mut b = BytesMut::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    let head = |b: &mut BytesMut, tag: u8, n: usize| {
        b.put_u8(tag);
        b.put_slice(n.to_string().as_bytes());
        b.put_slice(b"\r\n");
    };
    head(&mut b, b'*', args.len());
    for a in args {
        head(&mut b, b'$', a.len());
        b.put_slice(a);
        b.put_slice(b"\r\n");
    }
    b.freeze()
}

/// The reply at the start of `buf` and the bytes it took; `None` while it is not
/// complete yet.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, Unexpected> {
    let Some((first, mut used)) = line(buf, 0)? else {
        return Ok(None);
    };
    match first.split_first() {
        Some((b'+', text)) => Ok(Some((Reply::Status(lossy(text)), used))),
        Some((b'-', text)) => Ok(Some((Reply::Error(lossy(text)), used))),
        Some((b'*', b"2")) => {
            let mut pair = [0i64; 2];
            for v in &mut pair {
                let Some((l, end)) = line(buf, used)? else {
                    return Ok(None);
                };
                match l.split_first() {
                    Some((b':', n)) => *v = int(n)?,
                    _ => return Err(Unexpected("an array element that is not an integer")),
                }
                used = end;
            }
            Ok(Some((Reply::Pair(pair[0], pair[1]), used)))
        }
        Some((b'*', _)) => Err(Unexpected("an array that is not two integers")),
        Some(_) | None => Err(Unexpected("a reply type the request path does not use")),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The line starting at `from`, without its CRLF, and the offset after it.
fn line(buf: &[u8], from: usize) -> Result<Option<(&[u8], usize)>, Unexpected> {
    let rest = buf.get(from..).unwrap_or_default();
    match rest.iter().position(|b| *b == b'\n') {
        Some(i) if i == 0 || rest[i - 1] != b'\r' => Err(Unexpected("a line feed without CR")),
        Some(i) if i - 1 > MAX_LINE => Err(Unexpected("a line too long")),
        Some(i) => Ok(Some((&rest[..i - 1], from + i + 1))),
        None if rest.len() > MAX_LINE + 1 => Err(Unexpected("a line too long")),
        None => Ok(None),
    }
}

/// A RESP integer: an optional `-`, then 1-19 decimal digits, no overflow.
fn int(b: &[u8]) -> Result<i64, Unexpected> {
    let bad = Unexpected("an integer that is not one");
    let (neg, digits) = match b.split_first() {
        Some((b'-', d)) => (true, d),
        _ => (false, b),
    };
    if digits.is_empty() {
        return Err(bad);
    }
    let mut v: i64 = 0;
    for d in digits {
        if !d.is_ascii_digit() {
            return Err(bad);
        }
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(d - b'0')))
            .ok_or(bad)?;
    }
    Ok(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reply, fed whole and split at every byte, parses the same; a prefix is
    /// never a reply.
    #[test]
    fn replies_split_at_every_byte() {
        let cases: &[(&[u8], Reply)] = &[
            (b"*2\r\n:1\r\n:0\r\n", Reply::Pair(1, 0)),
            (b"*2\r\n:0\r\n:123456\r\n", Reply::Pair(0, 123_456)),
            (
                b"*2\r\n:-5\r\n:9223372036854775807\r\n",
                Reply::Pair(-5, i64::MAX),
            ),
            (b"+OK\r\n", Reply::Status("OK".into())),
            (b"+PONG\r\n", Reply::Status("PONG".into())),
            (
                b"-NOSCRIPT No matching script. Please use EVAL.\r\n",
                Reply::Error("NOSCRIPT No matching script. Please use EVAL.".into()),
            ),
            (b"-ERR\r\n", Reply::Error("ERR".into())),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(bytes), Ok(Some((want.clone(), bytes.len()))));
            for cut in 0..bytes.len() {
                assert_eq!(parse(&bytes[..cut]), Ok(None), "{want:?} cut at {cut}");
            }
            // Followed by the next reply: only the first is taken.
            let mut two = bytes.to_vec();
            two.extend_from_slice(b"+OK\r\n");
            assert_eq!(parse(&two), Ok(Some((want.clone(), bytes.len()))));
        }
    }

    #[test]
    fn a_stream_of_replies_is_read_in_order() {
        let stream = b"+OK\r\n*2\r\n:1\r\n:0\r\n-NOSCRIPT x\r\n*2\r\n:0\r\n:7\r\n";
        let mut got = Vec::new();
        let mut at = 0;
        while let Some((r, used)) = parse(&stream[at..]).unwrap() {
            got.push(r);
            at += used;
        }
        assert_eq!(at, stream.len());
        assert_eq!(
            got,
            [
                Reply::Status("OK".into()),
                Reply::Pair(1, 0),
                Reply::Error("NOSCRIPT x".into()),
                Reply::Pair(0, 7),
            ]
        );
    }

    #[test]
    fn other_shapes_are_refused_cleanly() {
        for bad in [
            &b"*2\r\n*2\r\n:1\r\n:2\r\n:3\r\n"[..], // nested array
            b"*2\r\n:1\r\n*1\r\n:2\r\n",            // nested as the second element
            b"*3\r\n:1\r\n:2\r\n:3\r\n",            // three elements
            b"*1\r\n:1\r\n",
            b"*-1\r\n",                               // nil array
            b"$3\r\nabc\r\n",                         // bulk string
            b"$-1\r\n",                               // nil
            b":1\r\n",                                // a bare integer
            b"*2\r\n$1\r\n1\r\n:0\r\n",               // a bulk element
            b"*2\r\n:1x\r\n:0\r\n",                   // not a number
            b"*2\r\n:\r\n:0\r\n",                     // empty number
            b"*2\r\n:-\r\n:0\r\n",                    // a sign only
            b"*2\r\n:99999999999999999999\r\n:0\r\n", // overflow
            b"+OK\n",                                 // LF without CR
            b"\r\n",                                  // empty line
            b"_\r\n",                                 // RESP3 null
            b"%1\r\n",                                // RESP3 map
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        // A line with no end in sight is refused, not buffered for ever.
        let long = vec![b'+'; MAX_LINE + 2];
        assert!(parse(&long).is_err());
        let mut at_max = vec![b'+'; MAX_LINE];
        at_max.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&at_max), Ok(Some((Reply::Status(_), _)))));
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(
            &encode(&[b"EVALSHA", b"ab", b"1", b"kg:{x}:rl:k1", b"10000", b"0"])[..],
            &b"*6\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$12\r\nkg:{x}:rl:k1\r\n$5\r\n10000\r\n$1\r\n0\r\n"[..]
        );
        assert_eq!(&encode(&[b"PING"])[..], PING);
        assert_eq!(
            &encode(&[b"SET", b""])[..],
            b"*2\r\n$3\r\nSET\r\n$0\r\n\r\n"
        );
    }
}
