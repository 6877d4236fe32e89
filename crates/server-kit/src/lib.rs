//! The server kit shared by the Bayou and Chord network runtimes: what a
//! server needs to speak RESP2 and RESP3 (the Redis protocol) to clients
//! and its own framed protocol to peers, on one port:
//!
//! * [`resp`]: parsing client requests (multi-bulk arrays and inline
//!   commands) with hard limits, and encoding replies in RESP2 or RESP3;
//! * [`command`]: a server's command table (name, arity, flags, keys, help)
//!   with the lookups and error texts every server shares, and `COMMAND`;
//! * [`conn`]: a client connection's state (protocol, name, id, user, an
//!   open `MULTI`) and the commands that act only on it (`HELLO`, `AUTH`,
//!   `ACL`, `CLIENT`, `SELECT`, `PING`, `ECHO`, `COMMAND`,
//!   `MULTI`/`EXEC`/`DISCARD`);
//! * [`acl`]: client users and their permissions (`--acl-file`, in Redis'
//!   ACL file syntax), reloaded on `SIGHUP`;
//! * [`client`]: the pipelined client loop ([`serve_client`]) with one set
//!   of limits and error texts, calling a node's [`Handler`] for the node's
//!   own commands;
//! * [`frame`]: peer framing (length-limited, versioned frames) and the
//!   idle timeout of a peer connection;
//! * [`commit`]: the group-commit thread (drain the queue, one
//!   transaction, one fsync, then acknowledge) and the storage-failure
//!   policy;
//! * [`datadir`]: opening a node's data directory (identity file,
//!   exclusive lock, refusal of someone else's directory);
//! * [`sealed`]: checksummed storage records, and opening a store so that
//!   damage is a clear refusal that changes nothing;
//! * [`http`]: the optional HTTP listener (`--http`): Prometheus metrics,
//!   `/healthz`, and the nodes' web pages;
//! * [`process`]: logging set-up ([`init_tracing`]) and the shutdown
//!   signal ([`shutdown_signal`]) both binaries use;
//! * [`accept_loop`]: accepting connections on a listener until shutdown,
//!   each served by its own task;
//! * `remote` (feature `remote`): how the operator commands reach a node,
//!   over TLS and with `AUTH` when asked;
//! * [`limits`]: maximum clients ([`ClientGate`]), the output limit and the
//!   idle and write timeouts of a client ([`ClientLimits`]);
//! * [`tls`]: optional TLS for clients and peers (`--tls-cert`, …), the
//!   connection type both runtimes use ([`tls::Stream`]), and test
//!   certificates (`tls-certs`).
//!
//! Both runtimes serve clients and peers on one port: a peer connection
//! starts with a magic byte string no RESP request can start with, and the
//! runtime's connection handler looks at the first bytes to tell them apart.
//! With TLS on, every connection on the port is TLS and the first bytes
//! are looked at after the handshake ([`tls::accept_connection`]).
//!
//! # Why a hand-written codec rather than `redis-protocol`
//!
//! The [`redis-protocol`](https://crates.io/crates/redis-protocol) crate
//! (used by `fred`) parses and encodes both RESP2 and RESP3 frames. We
//! weighed it against extending our own parser and chose to extend ours:
//!
//! * A server parses only *requests*, which in both protocols are arrays of
//!   bulk strings or inline lines; the RESP3 types are reply types, and
//!   encoding them is a few dozen lines ([`Reply::encode_as`]). The crate's
//!   value is mostly in decoding every frame type, which a server never
//!   needs.
//! * Our parser enforces hard limits before allocating (a declared bulk
//!   length of 2^40 is refused at its header, [`Limits`]), copies each
//!   argument out so stored keys never pin a read buffer, and has tests for
//!   both; with the crate we would re-check limits around its frames and
//!   give up that control over allocation.
//! * Inline commands (`redis-cli`-style lines with quotes) are ours; the
//!   crate's decoders expect typed frames.
//! * One dependency fewer for both nodes, and RESP2 output byte-for-byte as
//!   before: a RESP3-only [`Reply`] degrades to its RESP2 form on a RESP2
//!   connection, so a command builds one reply for both protocols.

#![warn(missing_docs, unreachable_pub)]

pub mod acl;
pub mod client;
pub mod command;
pub mod commit;
pub mod conn;
pub mod datadir;
pub mod frame;
pub mod http;
pub mod limits;
pub mod peer_auth;
pub mod process;
#[cfg(feature = "remote")]
pub mod remote;
pub mod resp;
pub mod sealed;
pub mod tls;

pub use client::serve_client_limited;
pub use client::{Handler, MAX_PIPELINE, MAX_QUERY_BUFFER_BYTES, Service, Stopped, serve_client};
pub use command::{CommandSpec, CommandTable};
pub use conn::{CONNECTION_COMMANDS, Client, Queued, ServerInfo, Step};
pub use limits::{ClientGate, ClientLimits, ClientSlot};
pub use process::{init_tracing, runtime, shutdown_signal};

/// The allocator every node binary declares as its global allocator
/// (`#[global_allocator] static ALLOCATOR: server_kit::Allocator =
/// server_kit::Allocator;`): mimalloc rather than glibc's malloc. In a
/// 3-replica Bayou soak (10^6 SETs over 10^3 keys) it held less memory
/// (replica A 130 → 85 MB RSS, P 78 → 67 MB) and the run took 14 s instead
/// of 20 s (docs/benchmarks.md).
pub use mimalloc::MiMalloc as Allocator;
pub use resp::{Limits, Protocol, ProtocolError, Reply, parse};

use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

use std::future::Future;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

/// `CONFIG`, the same on every server: `GET` of the settings a node
/// reports ([`config`]) and `RESETSTAT`.
pub const CONFIG_COMMAND: CommandSpec = CommandSpec::new(
    "config",
    -2,
    &["admin", "loading", "stale"],
    "CONFIG GET pattern [pattern ...] | CONFIG RESETSTAT",
);

/// The reply to [`CONFIG_COMMAND`] (`args` with the name, checked against
/// its arity): `GET` answers from `settings`, `RESETSTAT` `OK`.
pub fn config(settings: &[(&str, &str)], args: &[Bytes]) -> Reply {
    let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
    match sub.as_str() {
        "get" if args.len() >= 3 => config_get_map(settings, &args[2..]),
        "resetstat" => Reply::ok(),
        "get" => command::wrong_arity("config|get"),
        _ => Reply::err(format!("unsupported CONFIG subcommand '{sub}'")),
    }
}

/// [`config`] over a node's `settings` and, when TLS is on, `tls`'s
/// (`tls-cert-file`, `tls-key-file`, `tls-ca-cert-file`,
/// `tls-auth-clients`).
pub fn config_with_tls(settings: &[(&str, &str)], tls: Option<&tls::Tls>, args: &[Bytes]) -> Reply {
    let tls = tls.map(|t| t.settings());
    let all: Vec<(&str, &str)> = settings
        .iter()
        .copied()
        .chain(tls.iter().flatten().map(|(k, v)| (*k, v.as_str())))
        .collect();
    config(&all, args)
}

/// The reply to `CONFIG GET pattern…`: the `settings` whose names match a
/// pattern, as a map (RESP3 clients expect one; on a RESP2 connection it is
/// a flat array of name, value). redis-benchmark asks for `save` and
/// `appendonly` and warns when it gets nothing.
pub fn config_get_map(settings: &[(&str, &str)], patterns: &[Bytes]) -> Reply {
    Reply::Map(
        settings
            .iter()
            .filter(|(k, _)| patterns.iter().any(|p| glob(p, k.as_bytes())))
            .map(|(k, v)| (Reply::text(*k), Reply::text(*v)))
            .collect(),
    )
}

/// The text of `INFO [section …]`: `sections` are (name, fields) in order;
/// no argument, `default`, `all` or `everything` shows them all, otherwise
/// the named ones (case-insensitively). Lines end in CRLF as Redis' do.
pub fn info_text(sections: &[(&str, Vec<(String, String)>)], requested: &[Bytes]) -> String {
    let all = requested.is_empty()
        || requested.iter().any(|r| {
            ["default", "all", "everything"]
                .iter()
                .any(|a| r.eq_ignore_ascii_case(a.as_bytes()))
        });
    let mut out = String::new();
    for (name, fields) in sections {
        if !all
            && !requested
                .iter()
                .any(|r| r.eq_ignore_ascii_case(name.as_bytes()))
        {
            continue;
        }
        if !out.is_empty() {
            out += "\r\n";
        }
        let mut title = name.to_string();
        if let Some(first) = title.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        out += &format!("# {title}\r\n");
        for (k, v) in fields {
            out += &format!("{k}:{v}\r\n");
        }
    }
    out
}

/// Redis-style glob matching with `*` and `?`, case-insensitive (enough for
/// `CONFIG GET`).
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p.eq_ignore_ascii_case(t) => glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// Redis' `KEYS`/`SCAN MATCH` pattern matching, case-sensitive: `*`, `?`,
/// `[abc]`, `[^a]`, `[a-z]`, and `\\x` for a literal `x`. Runs in time
/// proportional to pattern × text length whatever the pattern (it backtracks
/// only to the last `*`).
pub fn pattern_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match_class(pattern, p, text[t]),
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == text[t]).then_some(p + 2),
            Some(&c) => (c == text[t]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((sp, st))) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[open] == b'['`;
/// the index after the class when it matches.
fn match_class(pattern: &[u8], open: usize, c: u8) -> Option<usize> {
    let mut i = open + 1;
    let negate = pattern.get(i) == Some(&b'^');
    if negate {
        i += 1;
    }
    let mut hit = false;
    while i < pattern.len() && pattern[i] != b']' {
        if pattern[i] == b'\\' && i + 1 < pattern.len() {
            hit |= pattern[i + 1] == c;
            i += 2;
        } else if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            let (lo, hi) = (
                pattern[i].min(pattern[i + 2]),
                pattern[i].max(pattern[i + 2]),
            );
            hit |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            hit |= pattern[i] == c;
            i += 1;
        }
    }
    // An unclosed class matches like Redis: up to the end of the pattern.
    (hit != negate).then_some((i + 1).min(pattern.len()))
}

/// What a new connection turned out to be, from its first bytes.
#[derive(Debug)]
pub enum Opened {
    /// A Redis client, with the bytes read so far.
    Client(BytesMut),
    /// A peer that sent the magic prefix, with the bytes read after it.
    Peer(BytesMut),
}

/// Reads a new connection's first bytes and tells a peer from a Redis
/// client: a peer starts with `magic`, whose first byte no RESP request
/// starts with. The first read waits as long as the client likes (redis-cli
/// may sit idle); once a peer has begun the prefix it must finish it within
/// `magic_timeout`. `None` when the connection closed or failed first, the
/// prefix timed out, or it was wrong: the caller just drops the connection.
pub async fn open<S: AsyncRead + Unpin>(
    stream: &mut S,
    magic: &[u8],
    magic_timeout: Duration,
) -> Option<Opened> {
    let mut buf = BytesMut::with_capacity(16 << 10);
    match stream.read_buf(&mut buf).await {
        Ok(0) | Err(_) => return None,
        Ok(_) => {}
    }
    open_after(stream, buf, magic, magic_timeout).await
}

/// [`open`] once the first read is done: `buf` holds at least one byte.
pub(crate) async fn open_after<S: AsyncRead + Unpin>(
    stream: &mut S,
    mut buf: BytesMut,
    magic: &[u8],
    magic_timeout: Duration,
) -> Option<Opened> {
    if buf[0] != magic[0] {
        return Some(Opened::Client(buf));
    }
    let complete = async {
        while buf.len() < magic.len() {
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(_) => {}
            }
        }
        true
    };
    match tokio::time::timeout(magic_timeout, complete).await {
        Ok(true) if &buf[..magic.len()] == magic => Some(Opened::Peer(buf.split_off(magic.len()))),
        Ok(true) => {
            debug!("bad peer magic");
            None
        }
        _ => None,
    }
}

/// Accepts connections until `shutdown` changes, spawning `serve(stream)`
/// for each. A failed accept (e.g. out of file descriptors) is logged and
/// retried after a short pause rather than ending the server.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve(stream));
                }
                Err(e) => {
                    debug!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_redis() {
        assert!(glob(b"*", b"save"));
        assert!(glob(b"append*", b"appendonly"));
        assert!(glob(b"SAVE", b"save"));
        assert!(glob(b"s?ve", b"save"));
        assert!(!glob(b"save", b"appendonly"));
        assert!(!glob(b"a*z", b"appendonly"));
    }

    #[test]
    fn pattern_match_is_redis_glob() {
        let m = |p: &str, t: &str| pattern_match(p.as_bytes(), t.as_bytes());
        assert!(m("*", ""));
        assert!(m("user:*", "user:42"));
        assert!(!m("user:*", "User:42"));
        assert!(m("h?llo", "hello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-c]llo", "hbllo"));
        assert!(m("a\\*b", "a*b"));
        assert!(!m("a\\*b", "axb"));
        assert!(m("*a*b*c*", "xxaxxbxxcxx"));
        assert!(!m("*a*b*c*d", "xxaxxbxxcxx"));
        // No exponential blow-up on many stars.
        let long = "a".repeat(5000);
        assert!(!m(&("*a".repeat(40) + "b"), &long));
    }

    #[test]
    fn info_text_shows_the_requested_sections() {
        let sections = [
            ("server", vec![("a".to_string(), "1".to_string())]),
            ("keyspace", vec![("db0".to_string(), "keys=0".to_string())]),
        ];
        assert_eq!(
            info_text(&sections, &[]),
            "# Server\r\na:1\r\n\r\n# Keyspace\r\ndb0:keys=0\r\n"
        );
        assert_eq!(
            info_text(&sections, &[Bytes::from_static(b"KEYSPACE")]),
            "# Keyspace\r\ndb0:keys=0\r\n"
        );
        assert_eq!(info_text(&sections, &[Bytes::from_static(b"nope")]), "");
    }

    #[test]
    fn config_get_returns_matching_pairs() {
        let settings = [("save", ""), ("appendonly", "yes")];
        let got = config_get_map(&settings, &[Bytes::from_static(b"append*")]);
        assert_eq!(
            got,
            Reply::Map(vec![(Reply::text("appendonly"), Reply::text("yes"))])
        );
        let none = config_get_map(&settings, &[Bytes::from_static(b"maxmemory")]);
        assert_eq!(none, Reply::Map(vec![]));
    }

    /// Sends `bytes` to a fresh loopback connection and classifies it.
    async fn open_with(bytes: &'static [u8]) -> Option<Opened> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(bytes).await.unwrap();
            // Keep the connection open while the server reads.
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let opened = open(&mut stream, b"\0MAGIC", Duration::from_millis(100)).await;
        client.await.unwrap();
        opened
    }

    #[tokio::test]
    async fn open_tells_peers_from_clients() {
        match open_with(b"*1\r\n$4\r\nPING\r\n").await {
            Some(Opened::Client(buf)) => assert_eq!(&buf[..], b"*1\r\n$4\r\nPING\r\n"),
            other => panic!("{other:?}"),
        }
        match open_with(b"\0MAGICrest").await {
            Some(Opened::Peer(rest)) => assert_eq!(&rest[..], b"rest"),
            other => panic!("{other:?}"),
        }
        // A wrong prefix, and one never finished, are dropped.
        assert!(open_with(b"\0MAGXC").await.is_none());
        assert!(open_with(b"\0MA").await.is_none());
    }
}
