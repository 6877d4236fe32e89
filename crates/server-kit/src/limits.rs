//! Limits on client connections, so that a flood of idle or slow
//! connections does not stop service for others:
//!
//! * **Maximum clients** ([`ClientLimits::max_clients`], Redis'
//!   `maxclients`): a [`ClientGate`] counts every accepted connection as a
//!   client from the moment it is accepted until it closes or turns out to
//!   be a peer (it started with the peer magic). A connection over the
//!   limit gets `-ERR max number of clients reached` and is closed; it is
//!   counted in `rejected_connections`. **Peers are never refused**: an
//!   over-the-limit connection is given a short wait for its first byte, and
//!   one that starts with the peer magic is served as a peer, outside the
//!   count. So clients cannot starve replication or ring maintenance, and
//!   the number of peer connections is bounded by the cluster's size, not
//!   by this limit.
//! * **Output limit** ([`ClientLimits::output_limit_bytes`], Redis'
//!   `client-output-buffer-limit`): the client loop writes a round's
//!   replies before it reads more requests, in chunks of
//!   [`OUTPUT_CHUNK_BYTES`], so what it holds encoded is one chunk plus one
//!   reply; a connection whose pending encoded output passes the limit (one
//!   reply bigger than it) is closed without that reply.
//! * **Idle timeout** ([`ClientLimits::idle_timeout`], Redis' `timeout`):
//!   a client that sends nothing for that long is closed, including a
//!   connection that never sends its first byte. Off by default.
//! * **Write timeout** ([`ClientLimits::write_timeout`]): a client that does
//!   not take a chunk of its replies (the write to it blocks on a full
//!   socket) for that long is closed, so a client that pipelines requests
//!   and never reads cannot hold a task and its round's replies forever.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, warn};

use crate::{Opened, open, open_after};

/// Redis' error text for a connection over `maxclients` (sent as `-ERR …`).
pub const MAX_CLIENTS_REACHED: &str = "max number of clients reached";

/// The default of `--max-clients` (Redis' `maxclients`).
pub const DEFAULT_MAX_CLIENTS: usize = 10_000;

/// The default of `--client-output-limit-bytes`: 64 MiB.
pub const DEFAULT_OUTPUT_LIMIT_BYTES: usize = 64 << 20;

/// The default of `--client-write-timeout-ms`.
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 30_000;

/// The client loop writes its encoded replies once they reach this many
/// bytes, before encoding more.
pub const OUTPUT_CHUNK_BYTES: usize = 64 << 10;

/// How long a connection over the limit is given to show it is a peer (its
/// first byte) before it is refused as a client.
const OVER_LIMIT_PEER_WAIT: Duration = Duration::from_millis(500);

/// Most refusals in progress (each waits up to [`OVER_LIMIT_PEER_WAIT`]
/// for a first byte, then up to a second to answer); beyond it a
/// connection over the limit is closed at once, unanswered (and counted).
const MAX_REFUSING: usize = 256;

/// At most one warning about refused connections in this long.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The limits on client connections (see the [module](self) docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Most client connections at once (at least 1).
    pub max_clients: usize,
    /// Most bytes of encoded replies a connection may have pending; 0 for
    /// no limit.
    pub output_limit_bytes: usize,
    /// Close a client that sends nothing for this long; `None` for never.
    pub idle_timeout: Option<Duration>,
    /// Close a client when a write to it blocks this long; `None` for never.
    pub write_timeout: Option<Duration>,
}

impl ClientLimits {
    /// The defaults of the flags.
    pub const DEFAULT: ClientLimits = ClientLimits {
        max_clients: DEFAULT_MAX_CLIENTS,
        output_limit_bytes: DEFAULT_OUTPUT_LIMIT_BYTES,
        idle_timeout: None,
        write_timeout: Some(Duration::from_millis(DEFAULT_WRITE_TIMEOUT_MS)),
    };

    /// No limits at all (what [`crate::serve_client`] applies).
    pub const NONE: ClientLimits = ClientLimits {
        max_clients: usize::MAX,
        output_limit_bytes: 0,
        idle_timeout: None,
        write_timeout: None,
    };

    /// The limits from the flags `--max-clients`,
    /// `--client-output-limit-bytes`, `--client-timeout-ms` and
    /// `--client-write-timeout-ms` (a timeout of 0 is none).
    pub fn from_flags(flags: &ClientLimitFlags) -> Result<ClientLimits, LimitsError> {
        if flags.max_clients == 0 {
            return Err(LimitsError::NoClients);
        }
        let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
        Ok(ClientLimits {
            max_clients: flags.max_clients,
            output_limit_bytes: flags.client_output_limit_bytes,
            idle_timeout: ms(flags.client_timeout_ms),
            write_timeout: ms(flags.client_write_timeout_ms),
        })
    }
}

/// The client-limit flags of both node binaries (flattened into each
/// one's clap arguments, so they are declared once).
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ClientLimitFlags {
    /// Most client connections at once; beyond it a new one gets "-ERR max
    /// number of clients reached" and is closed. Peers are not counted.
    #[arg(long, default_value_t = DEFAULT_MAX_CLIENTS)]
    pub max_clients: usize,
    /// Close a client whose pending replies pass this many bytes (0: no
    /// limit).
    #[arg(long, default_value_t = DEFAULT_OUTPUT_LIMIT_BYTES)]
    pub client_output_limit_bytes: usize,
    /// Close a client idle this many milliseconds (0: never).
    #[arg(long, default_value_t = 0)]
    pub client_timeout_ms: u64,
    /// Close a client that does not read its replies (a write to it blocks)
    /// for this many milliseconds (0: never).
    #[arg(long, default_value_t = DEFAULT_WRITE_TIMEOUT_MS)]
    pub client_write_timeout_ms: u64,
}

impl ClientLimitFlags {
    /// The flags as command-line arguments, to pass on to a child process.
    pub fn to_args(&self) -> Vec<String> {
        vec![
            "--max-clients".into(),
            self.max_clients.to_string(),
            "--client-output-limit-bytes".into(),
            self.client_output_limit_bytes.to_string(),
            "--client-timeout-ms".into(),
            self.client_timeout_ms.to_string(),
            "--client-write-timeout-ms".into(),
            self.client_write_timeout_ms.to_string(),
        ]
    }
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits::DEFAULT
    }
}

/// A bad combination of limit flags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// `--max-clients 0` would refuse every client.
    #[error("--max-clients must be at least 1")]
    NoClients,
}

/// Admits client connections up to [`ClientLimits::max_clients`], and
/// counts them and the refused ones (for `INFO`).
#[derive(Debug)]
pub struct ClientGate {
    limits: ClientLimits,
    connected: AtomicUsize,
    rejected: AtomicU64,
    refusing: AtomicUsize,
    last_warn: Mutex<Option<Instant>>,
}

/// A client's place under the limit, given back when dropped.
#[derive(Debug)]
pub struct ClientSlot(Arc<ClientGate>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.connected.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A refusal in progress, counted while it lasts.
struct Refusing<'a>(&'a ClientGate);

impl<'a> Refusing<'a> {
    /// The refusal, and how many are in progress with it.
    fn enter(gate: &'a ClientGate) -> (Refusing<'a>, usize) {
        let n = gate.refusing.fetch_add(1, Ordering::AcqRel) + 1;
        (Refusing(gate), n)
    }
}

impl Drop for Refusing<'_> {
    fn drop(&mut self) {
        self.0.refusing.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ClientGate {
    /// A gate with these limits and no connections yet.
    pub fn new(limits: ClientLimits) -> Arc<ClientGate> {
        Arc::new(ClientGate {
            limits,
            connected: AtomicUsize::new(0),
            rejected: AtomicU64::new(0),
            refusing: AtomicUsize::new(0),
            last_warn: Mutex::new(None),
        })
    }

    /// The limits.
    pub fn limits(&self) -> &ClientLimits {
        &self.limits
    }

    /// Client connections open now (including accepted ones not yet known
    /// to be clients or peers).
    pub fn connected(&self) -> usize {
        self.connected.load(Ordering::Acquire)
    }

    /// Connections refused for being over the limit, since start.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// A slot, if the limit allows one more client.
    pub fn try_admit(self: &Arc<Self>) -> Option<ClientSlot> {
        self.connected
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limits.max_clients).then_some(n + 1)
            })
            .ok()
            .map(|_| ClientSlot(self.clone()))
    }

    /// [`open`] under the limit: a client comes with its slot; a peer is
    /// never counted nor refused. A client over the limit is sent
    /// `-ERR max number of clients reached` and closed here (`None`).
    pub async fn open<S: AsyncRead + AsyncWrite + Unpin>(
        self: &Arc<Self>,
        stream: &mut S,
        magic: &[u8],
        magic_timeout: Duration,
    ) -> Option<(Opened, Option<ClientSlot>)> {
        if let Some(slot) = self.try_admit() {
            // The idle timeout applies to a connection that sends nothing.
            let first = open(stream, magic, magic_timeout);
            let opened = match self.limits.idle_timeout {
                Some(idle) => tokio::time::timeout(idle, first).await.ok()?,
                None => first.await,
            };
            return match opened? {
                Opened::Client(buf) => Some((Opened::Client(buf), Some(slot))),
                peer @ Opened::Peer(_) => Some((peer, None)),
            };
        }
        // Over the limit: a peer sends its magic at once; anything else
        // (or nothing within the wait) is a client and refused. In a flood,
        // past MAX_REFUSING refusals in progress, closed at once.
        let (_refusing, in_progress) = Refusing::enter(self);
        if in_progress > MAX_REFUSING {
            self.count_refusal();
            return None;
        }
        // The first bytes are read rather than peeked, so that this works
        // on a TLS stream too; a client refused here is closed anyway, and
        // a peer's bytes go on to `open_after`.
        let mut first = BytesMut::with_capacity(64);
        let read = tokio::time::timeout(OVER_LIMIT_PEER_WAIT, stream.read_buf(&mut first)).await;
        if matches!(read, Ok(Ok(1..))) && first[0] == magic[0] {
            return match open_after(stream, first, magic, magic_timeout).await? {
                peer @ Opened::Peer(_) => Some((peer, None)),
                Opened::Client(_) => None,
            };
        }
        self.refuse(stream).await;
        None
    }

    /// Counts and logs (rate-limited) a refused client.
    fn count_refusal(&self) {
        let rejected = self.rejected.fetch_add(1, Ordering::Relaxed) + 1;
        debug!(
            max_clients = self.limits.max_clients,
            "client refused: {MAX_CLIENTS_REACHED}"
        );
        let warn_now = {
            let mut last = self.last_warn.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= WARN_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if warn_now {
            warn!(
                max_clients = self.limits.max_clients,
                rejected_connections = rejected,
                "refusing client connections: {MAX_CLIENTS_REACHED} (at most one warning every {}s)",
                WARN_EVERY.as_secs()
            );
        }
    }

    /// Counts, logs (rate-limited) and answers a refused client.
    async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: &mut S) {
        self.count_refusal();
        let reply = format!("-ERR {MAX_CLIENTS_REACHED}\r\n");
        let answer = async {
            stream.write_all(reply.as_bytes()).await?;
            stream.shutdown().await?;
            // Take what the client sent, so closing does not reset the
            // connection before it reads the error.
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<(), std::io::Error>(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), answer).await;
    }

    /// `INFO clients` fields: `connected_clients`, `maxclients`.
    pub fn clients_info(&self) -> Vec<(String, String)> {
        vec![
            ("connected_clients".into(), self.connected().to_string()),
            ("maxclients".into(), self.limits.max_clients.to_string()),
        ]
    }

    /// `INFO stats` fields: `rejected_connections`.
    pub fn stats_info(&self) -> Vec<(String, String)> {
        vec![("rejected_connections".into(), self.rejected().to_string())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

    #[test]
    fn slots_are_counted_and_given_back() {
        let gate = ClientGate::new(ClientLimits {
            max_clients: 2,
            ..ClientLimits::DEFAULT
        });
        let a = gate.try_admit().unwrap();
        let _b = gate.try_admit().unwrap();
        assert!(gate.try_admit().is_none());
        assert_eq!(gate.connected(), 2);
        drop(a);
        assert_eq!(gate.connected(), 1);
        assert!(gate.try_admit().is_some());
    }

    #[test]
    fn flags_of_zero_mean_no_timeout_and_zero_clients_is_refused() {
        let flags = |max_clients, client_timeout_ms, client_write_timeout_ms| ClientLimitFlags {
            max_clients,
            client_output_limit_bytes: 100,
            client_timeout_ms,
            client_write_timeout_ms,
        };
        let l = ClientLimits::from_flags(&flags(5, 0, 0)).unwrap();
        assert_eq!((l.idle_timeout, l.write_timeout), (None, None));
        let l = ClientLimits::from_flags(&flags(5, 10, 20)).unwrap();
        assert_eq!(l.idle_timeout, Some(Duration::from_millis(10)));
        assert_eq!(l.write_timeout, Some(Duration::from_millis(20)));
        assert_eq!(
            ClientLimits::from_flags(&flags(0, 0, 0)),
            Err(LimitsError::NoClients)
        );
        // Passed on to a child process, the flags parse back the same.
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            limits: ClientLimitFlags,
        }
        let f = flags(7, 30, 40);
        let args = std::iter::once("node".to_string()).chain(f.to_args());
        assert_eq!(<Cli as clap::Parser>::parse_from(args).limits, f);
    }

    #[tokio::test]
    async fn over_the_limit_a_client_is_refused_and_a_peer_is_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = ClientGate::new(ClientLimits {
            max_clients: 1,
            ..ClientLimits::DEFAULT
        });
        let _held = gate.try_admit().unwrap();
        // A client that sends nothing is refused after the wait.
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).await.unwrap();
            got
        });
        let (mut s, _) = listener.accept().await.unwrap();
        assert!(
            gate.open(&mut s, b"\0MAGIC", Duration::from_secs(1))
                .await
                .is_none()
        );
        drop(s);
        assert_eq!(
            client.await.unwrap(),
            b"-ERR max number of clients reached\r\n"
        );
        assert_eq!(gate.rejected(), 1);
        // A peer gets in.
        let peer = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(b"\0MAGICrest").await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        let (mut s, _) = listener.accept().await.unwrap();
        match gate.open(&mut s, b"\0MAGIC", Duration::from_secs(1)).await {
            Some((Opened::Peer(rest), None)) => assert_eq!(&rest[..], b"rest"),
            other => panic!("{other:?}"),
        }
        peer.await.unwrap();
        assert_eq!((gate.rejected(), gate.connected()), (1, 1));
    }
}
