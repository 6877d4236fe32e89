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

use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::io::AsyncReadExt;

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
pub async fn open(stream: &mut TcpStream, magic: &[u8], magic_timeout: Duration) -> Option<Opened> {
    let mut buf = BytesMut::with_capacity(16 << 10);
    match stream.read_buf(&mut buf).await {
        Ok(0) | Err(_) => return None,
        Ok(_) => {}
    }
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
