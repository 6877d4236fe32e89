//! What a server needs to speak RESP2, the Redis protocol, shared by the
//! Bayou and Chord network runtimes:
//!
//! * [`resp`]: parsing client requests (multi-bulk arrays and inline
//!   commands) with hard limits, and encoding replies;
//! * [`accept_loop`]: accepting connections on a listener until shutdown,
//!   each served by its own task.
//!
//! Both runtimes serve clients and peers on one port: a peer connection
//! starts with a magic byte string no RESP request can start with, and the
//! runtime's connection handler looks at the first bytes to tell them apart.

#![warn(missing_docs, unreachable_pub)]

pub mod resp;

pub use resp::{Limits, ProtocolError, Reply, parse};

use bytes::Bytes;

use std::future::Future;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

/// The reply to `HELLO` (or `HELLO 2`): the server's name and version, as
/// Redis reports them. Client libraries send it on connect.
pub fn hello(server: &str, version: &str) -> Reply {
    Reply::Array(vec![
        Reply::text("server"),
        Reply::text(server),
        Reply::text("version"),
        Reply::text(version),
        Reply::text("proto"),
        Reply::Int(2),
        Reply::text("id"),
        Reply::Int(0),
        Reply::text("mode"),
        Reply::text("standalone"),
        Reply::text("role"),
        Reply::text("master"),
        Reply::text("modules"),
        Reply::Array(vec![]),
    ])
}

/// The reply to `CONFIG GET pattern…`: the `settings` whose names match a
/// pattern, as a flat array of name, value. redis-benchmark asks for `save`
/// and `appendonly` and warns when it gets nothing.
pub fn config_get(settings: &[(&str, &str)], patterns: &[Bytes]) -> Reply {
    Reply::Array(
        settings
            .iter()
            .filter(|(k, _)| patterns.iter().any(|p| glob(p, k.as_bytes())))
            .flat_map(|(k, v)| [Reply::text(*k), Reply::text(*v)])
            .collect(),
    )
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
    fn config_get_returns_matching_pairs() {
        let settings = [("save", ""), ("appendonly", "yes")];
        let got = config_get(&settings, &[Bytes::from_static(b"append*")]);
        assert_eq!(
            got,
            Reply::Array(vec![Reply::text("appendonly"), Reply::text("yes")])
        );
        let none = config_get(&settings, &[Bytes::from_static(b"maxmemory")]);
        assert_eq!(none, Reply::Array(vec![]));
    }
}
