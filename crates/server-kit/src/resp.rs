//! RESP, the Redis protocol, as far as a server needs it: parsing client
//! requests (multi-bulk arrays and inline commands) with hard limits, and
//! encoding replies in RESP2 or RESP3 ([`Protocol`]).
//!
//! The parser never allocates from a declared length: a bulk length of 2^40
//! is refused the moment its header is read, as is any length above
//! [`Limits::max_bulk_bytes`].

use std::fmt::Write as _;

use bytes::{Buf, Bytes, BytesMut};

/// Limits on what one request may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest bulk string (argument), in bytes.
    pub max_bulk_bytes: usize,
    /// Most arguments in one request.
    pub max_args: usize,
    /// Longest inline command line, in bytes.
    pub max_inline_bytes: usize,
}

impl Limits {
    /// The limits both servers use: 64 MiB arguments, 2^20 arguments,
    /// 64 KiB inline lines.
    pub const DEFAULT: Limits = Limits {
        max_bulk_bytes: 64 << 20,
        max_args: 1 << 20,
        max_inline_bytes: 64 << 10,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// A request that breaks the protocol. The server replies with it and closes
/// the connection, as Redis does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The `*<n>` header is not a number or is out of range.
    #[error("Protocol error: invalid multibulk length")]
    MultibulkLength,
    /// The `$<n>` header is not a number or is out of range.
    #[error("Protocol error: invalid bulk length")]
    BulkLength,
    /// An array element that is not a bulk string.
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    /// A bulk string not followed by CRLF.
    #[error("Protocol error: bulk string not terminated by CRLF")]
    BulkTerminator,
    /// An inline line longer than the limit.
    #[error("Protocol error: too big inline request")]
    InlineTooBig,
    /// An inline command with more arguments than [`Limits::max_args`].
    #[error("Protocol error: too many arguments in inline request")]
    InlineTooManyArgs,
    /// An inline command with unbalanced quotes.
    #[error("Protocol error: unbalanced quotes in request")]
    Quotes,
}

/// Parses one request from the front of `buf`, consuming it. `Ok(None)` when
/// `buf` does not yet hold a whole request (nothing is consumed). Empty
/// requests (a blank inline line, `*0`) are consumed and returned as an empty
/// vector.
pub fn parse(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        return parse_inline(buf, limits);
    }
    let mut pos = 0;
    let Some(n) = read_header(buf, &mut pos, limits.max_args as i64)
        .map_err(|()| ProtocolError::MultibulkLength)?
    else {
        return Ok(None);
    };
    let mut spans = Vec::with_capacity(n.clamp(0, 64) as usize);
    for _ in 0..n.max(0) {
        if pos >= buf.len() {
            return Ok(None);
        }
        if buf[pos] != b'$' {
            return Err(ProtocolError::ExpectedBulk(buf[pos] as char));
        }
        let Some(len) = read_header(buf, &mut pos, limits.max_bulk_bytes as i64)
            .map_err(|()| ProtocolError::BulkLength)?
        else {
            return Ok(None);
        };
        if len < 0 {
            return Err(ProtocolError::BulkLength);
        }
        let len = len as usize;
        if buf.len() < pos + len + 2 {
            return Ok(None);
        }
        if &buf[pos + len..pos + len + 2] != b"\r\n" {
            return Err(ProtocolError::BulkTerminator);
        }
        spans.push((pos, len));
        pos += len + 2;
    }
    // Each argument gets its own allocation. Slicing them out of the read
    // buffer instead would let a stored key or value pin the whole buffer
    // it arrived in (a Bayou replica keeps its writes' keys and values in
    // memory: 150 bytes of a SET kept a 64 KiB buffer's first page, about
    // 4 KiB, resident), and the connection could never reuse its buffer.
    let args = spans
        .into_iter()
        .map(|(start, len)| Bytes::copy_from_slice(&buf[start..start + len]))
        .collect();
    buf.advance(pos);
    Ok(Some(args))
}

/// Reads `<type><integer>\r\n` at `pos`. `Ok(None)` if incomplete; `Err` if
/// malformed or above `max`.
fn read_header(buf: &[u8], pos: &mut usize, max: i64) -> Result<Option<i64>, ()> {
    let start = *pos + 1;
    // A header is at most 1 + 20 digits + CRLF; refuse longer ones early.
    let window = &buf[start.min(buf.len())..buf.len().min(start + 24)];
    let Some(cr) = window.iter().position(|&b| b == b'\r') else {
        return if window.len() >= 24 {
            Err(())
        } else {
            Ok(None)
        };
    };
    if start + cr + 1 >= buf.len() {
        return Ok(None);
    }
    if buf[start + cr + 1] != b'\n' {
        return Err(());
    }
    let text = std::str::from_utf8(&window[..cr]).map_err(|_| ())?;
    let n: i64 = text.parse().map_err(|_| ())?;
    if n > max {
        return Err(());
    }
    *pos = start + cr + 2;
    Ok(Some(n))
}

fn parse_inline(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_inline_bytes {
            return Err(ProtocolError::InlineTooBig);
        }
        return Ok(None);
    };
    if nl > limits.max_inline_bytes {
        return Err(ProtocolError::InlineTooBig);
    }
    let line = buf.split_to(nl + 1);
    let mut line = &line[..nl];
    if line.last() == Some(&b'\r') {
        line = &line[..line.len() - 1];
    }
    split_inline(line, limits.max_args).map(Some)
}

/// Splits an inline command on whitespace, honouring double and single quotes
/// (without escapes inside single quotes, `\"`, `\\`, `\n` inside double ones).
fn split_inline(line: &[u8], max_args: usize) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut i = 0;
    while i < line.len() {
        if args.len() == max_args {
            // Whitespace after the last argument is fine; another one is not.
            if line[i..].iter().all(u8::is_ascii_whitespace) {
                break;
            }
            return Err(ProtocolError::InlineTooManyArgs);
        }
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            break;
        }
        let mut arg = Vec::new();
        match line[i] {
            q @ (b'"' | b'\'') => {
                i += 1;
                loop {
                    if i >= line.len() {
                        return Err(ProtocolError::Quotes);
                    }
                    let c = line[i];
                    i += 1;
                    if c == q {
                        break;
                    }
                    if q == b'"' && c == b'\\' && i < line.len() {
                        let e = line[i];
                        i += 1;
                        arg.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            other => other,
                        });
                    } else {
                        arg.push(c);
                    }
                }
                if i < line.len() && !line[i].is_ascii_whitespace() {
                    return Err(ProtocolError::Quotes);
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    arg.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push(Bytes::from(arg));
    }
    Ok(args)
}

/// The protocol a connection speaks: RESP2 until the client sends
/// `HELLO 3`, and again after `HELLO 2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// RESP2: maps, sets and pushes go out as arrays, doubles as bulk
    /// strings, booleans as integers, nulls as the null bulk string.
    #[default]
    Resp2,
    /// RESP3: every reply type in its own encoding.
    Resp3,
}

impl Protocol {
    /// The number `HELLO` reports as `proto`.
    pub fn version(self) -> i64 {
        match self {
            Protocol::Resp2 => 2,
            Protocol::Resp3 => 3,
        }
    }
}

/// A reply. The first five variants are RESP2's; the rest are RESP3's and
/// degrade to RESP2 forms on a RESP2 connection (see [`Protocol::Resp2`]),
/// so a command builds one reply for both protocols.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR …`; the text includes the error code.
    Error(String),
    /// `:42`
    Int(i64),
    /// `$3 foo`, or `$-1` for `None`.
    Bulk(Option<Bytes>),
    /// `*2 …`
    Array(Vec<Reply>),
    /// RESP3 `_`, the null; `$-1` in RESP2.
    Null,
    /// RESP3 `%`, key-value pairs in order; a flat array of key, value in
    /// RESP2.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `~`, an unordered collection; an array in RESP2.
    Set(Vec<Reply>),
    /// RESP3 `,`, a double; a bulk string in RESP2, as Redis sends it.
    Double(f64),
    /// RESP3 `#`; the integer 1 or 0 in RESP2.
    Boolean(bool),
    /// RESP3 `>`, out-of-band data such as a pub/sub message; an array in
    /// RESP2.
    Push(Vec<Reply>),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Reply {
        Reply::Simple("OK".into())
    }

    /// `-ERR <msg>`.
    pub fn err(msg: impl std::fmt::Display) -> Reply {
        Reply::Error(format!("ERR {msg}"))
    }

    /// A bulk string.
    pub fn bulk(b: impl Into<Bytes>) -> Reply {
        Reply::Bulk(Some(b.into()))
    }

    /// A bulk string from text.
    pub fn text(s: impl Into<String>) -> Reply {
        Reply::Bulk(Some(Bytes::from(s.into())))
    }

    /// A map from pairs of a text key and a value.
    pub fn map<K: Into<String>>(pairs: impl IntoIterator<Item = (K, Reply)>) -> Reply {
        Reply::Map(
            pairs
                .into_iter()
                .map(|(k, v)| (Reply::text(k), v))
                .collect(),
        )
    }

    /// Appends the RESP2 encoding to `out` (RESP3-only types degrade; see
    /// [`Reply`]).
    pub fn encode(&self, out: &mut BytesMut) {
        self.encode_as(Protocol::Resp2, out)
    }

    /// Appends the encoding for a connection speaking `proto` to `out`.
    pub fn encode_as(&self, proto: Protocol, out: &mut BytesMut) {
        let resp3 = proto == Protocol::Resp3;
        match self {
            Reply::Simple(s) => {
                out.extend_from_slice(b"+");
                out.extend_from_slice(clean_line(s).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Error(s) => {
                out.extend_from_slice(b"-");
                out.extend_from_slice(clean_line(s).as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            Reply::Int(n) => {
                let _ = write!(out, ":{n}\r\n");
            }
            Reply::Bulk(None) if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Bulk(None) => out.extend_from_slice(b"$-1\r\n"),
            Reply::Bulk(Some(b)) => {
                let _ = write!(out, "${}\r\n", b.len());
                out.extend_from_slice(b);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Array(items) => aggregate(b'*', items, proto, out),
            Reply::Null if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Null => out.extend_from_slice(b"$-1\r\n"),
            Reply::Map(pairs) => {
                let _ = if resp3 {
                    write!(out, "%{}\r\n", pairs.len())
                } else {
                    write!(out, "*{}\r\n", pairs.len() * 2)
                };
                for (k, v) in pairs {
                    k.encode_as(proto, out);
                    v.encode_as(proto, out);
                }
            }
            Reply::Set(items) => aggregate(if resp3 { b'~' } else { b'*' }, items, proto, out),
            Reply::Push(items) => aggregate(if resp3 { b'>' } else { b'*' }, items, proto, out),
            Reply::Double(d) => {
                let text = format_double(*d);
                let _ = if resp3 {
                    write!(out, ",{text}\r\n")
                } else {
                    write!(out, "${}\r\n{text}\r\n", text.len())
                };
            }
            Reply::Boolean(b) if resp3 => {
                out.extend_from_slice(if *b { b"#t\r\n" } else { b"#f\r\n" })
            }
            Reply::Boolean(b) => {
                let _ = write!(out, ":{}\r\n", *b as i64);
            }
        }
    }
}

fn aggregate(kind: u8, items: &[Reply], proto: Protocol, out: &mut BytesMut) {
    out.extend_from_slice(&[kind]);
    let _ = write!(out, "{}\r\n", items.len());
    for i in items {
        i.encode_as(proto, out);
    }
}

/// A double as RESP3 writes it: `inf`, `-inf`, `nan`, or the shortest
/// decimal that reads back as the same value.
fn format_double(d: f64) -> String {
    if d.is_nan() {
        "nan".into()
    } else if d.is_infinite() {
        if d > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        format!("{d}")
    }
}

/// Simple strings and errors cannot hold CR or LF.
fn clean_line(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains(['\r', '\n']) {
        s.replace(['\r', '\n'], " ").into()
    } else {
        s.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(input: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let mut b = BytesMut::from(input);
        parse(&mut b, &Limits::default())
    }

    fn args(v: &[&str]) -> Option<Vec<Bytes>> {
        Some(v.iter().map(|s| Bytes::from(s.to_string())).collect())
    }

    #[test]
    fn parses_a_multibulk_request_and_leaves_the_rest() {
        let mut b = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPI"[..]);
        let l = Limits::default();
        assert_eq!(parse(&mut b, &l).unwrap(), args(&["GET", "k"]));
        assert_eq!(parse(&mut b, &l).unwrap(), None);
        assert_eq!(&b[..], b"*1\r\n$4\r\nPI");
        b.extend_from_slice(b"NG\r\n");
        assert_eq!(parse(&mut b, &l).unwrap(), args(&["PING"]));
        assert!(b.is_empty());
    }

    #[test]
    fn every_prefix_of_a_request_is_incomplete() {
        let whole = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nlx\r\n";
        for n in 0..whole.len() {
            assert_eq!(p(&whole[..n]).unwrap(), None, "prefix {n}");
        }
        assert_eq!(p(whole).unwrap(), args(&["SET", "k", "v\r\nlx"]));
    }

    #[test]
    fn huge_or_negative_lengths_are_refused_before_any_allocation() {
        assert_eq!(
            p(b"*1\r\n$1099511627776\r\n"),
            Err(ProtocolError::BulkLength)
        );
        assert_eq!(p(b"*1\r\n$-5\r\n"), Err(ProtocolError::BulkLength));
        assert_eq!(p(b"*99999999999\r\n"), Err(ProtocolError::MultibulkLength));
        assert_eq!(p(b"*x\r\n"), Err(ProtocolError::MultibulkLength));
        assert_eq!(
            p(b"*1\r\n$12345678901234567890123456789\r\n"),
            Err(ProtocolError::BulkLength)
        );
    }

    #[test]
    fn malformed_elements_are_errors() {
        assert_eq!(p(b"*1\r\n:5\r\n"), Err(ProtocolError::ExpectedBulk(':')));
        assert_eq!(p(b"*1\r\n$1\r\nab\r\n"), Err(ProtocolError::BulkTerminator));
        assert_eq!(p(b"*1\r\n$1\rX"), Err(ProtocolError::BulkLength));
    }

    #[test]
    fn parsed_arguments_do_not_pin_the_read_buffer() {
        // A replica keeps keys and values for as long as the write lives:
        // if they were views into the connection's read buffer, every write
        // would keep a whole buffer allocated. After parsing, the buffer
        // must be the only owner of its allocation, so it can be reused.
        let mut b = BytesMut::with_capacity(64 << 10);
        b.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n");
        let kept = parse(&mut b, &Limits::default()).unwrap().unwrap();
        assert_eq!(kept[2], Bytes::from_static(b"value"));
        assert!(b.is_empty());
        assert!(
            b.try_reclaim(64 << 10),
            "the read buffer is shared with the parsed arguments"
        );
        drop(kept);
    }

    #[test]
    fn inline_commands_split_on_spaces_and_quotes() {
        assert_eq!(p(b"PING\r\n").unwrap(), args(&["PING"]));
        assert_eq!(
            p(b"set k \"a b\\n\" 'c d'\n").unwrap(),
            args(&["set", "k", "a b\n", "c d"])
        );
        assert_eq!(p(b"\r\n").unwrap(), Some(vec![]));
        assert_eq!(p(b"set \"k\n"), Err(ProtocolError::Quotes));
        let long = vec![b'a'; 70_000];
        assert_eq!(p(&long), Err(ProtocolError::InlineTooBig));
    }

    /// Found by the `resp_request` fuzz target: an inline line under the
    /// size limit could carry more arguments than `max_args`.
    #[test]
    fn inline_commands_respect_the_argument_limit() {
        let limits = Limits {
            max_args: 3,
            ..Limits::default()
        };
        let parse3 = |b: &[u8]| parse(&mut BytesMut::from(b), &limits);
        assert_eq!(parse3(b"a b c  \r\n").unwrap(), args(&["a", "b", "c"]));
        assert_eq!(
            parse3(b"a b c d\r\n"),
            Err(ProtocolError::InlineTooManyArgs)
        );
    }

    #[test]
    fn replies_encode_as_resp2() {
        let mut out = BytesMut::new();
        Reply::Array(vec![
            Reply::ok(),
            Reply::err("bad\r\nthing"),
            Reply::Int(-3),
            Reply::Bulk(None),
            Reply::text("hé"),
        ])
        .encode(&mut out);
        assert_eq!(
            &out[..],
            "*5\r\n+OK\r\n-ERR bad  thing\r\n:-3\r\n$-1\r\n$3\r\nhé\r\n".as_bytes()
        );
    }

    #[test]
    fn resp3_types_encode_natively_on_a_resp3_connection() {
        let reply = Reply::Array(vec![
            Reply::map([("a", Reply::Int(1))]),
            Reply::Set(vec![Reply::text("x")]),
            Reply::Null,
            Reply::Bulk(None),
            Reply::Double(1.5),
            Reply::Double(f64::INFINITY),
            Reply::Boolean(true),
            Reply::Push(vec![Reply::text("p")]),
        ]);
        let mut out = BytesMut::new();
        reply.encode_as(Protocol::Resp3, &mut out);
        assert_eq!(
            &out[..],
            b"*8\r\n%1\r\n$1\r\na\r\n:1\r\n~1\r\n$1\r\nx\r\n_\r\n_\r\n,1.5\r\n,inf\r\n#t\r\n>1\r\n$1\r\np\r\n"
        );
    }

    #[test]
    fn resp3_types_degrade_to_resp2_forms_on_a_resp2_connection() {
        let reply = Reply::Array(vec![
            Reply::map([("a", Reply::Int(1))]),
            Reply::Set(vec![Reply::text("x")]),
            Reply::Null,
            Reply::Double(1.5),
            Reply::Boolean(false),
            Reply::Push(vec![Reply::text("p")]),
        ]);
        let mut two = BytesMut::new();
        reply.encode_as(Protocol::Resp2, &mut two);
        assert_eq!(
            &two[..],
            b"*6\r\n*2\r\n$1\r\na\r\n:1\r\n*1\r\n$1\r\nx\r\n$-1\r\n$3\r\n1.5\r\n:0\r\n*1\r\n$1\r\np\r\n"
        );
        // `encode` is the RESP2 encoding.
        let mut plain = BytesMut::new();
        reply.encode(&mut plain);
        assert_eq!(plain, two);
    }
}
