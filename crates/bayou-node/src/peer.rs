//! Anti-entropy sessions over the peer protocol (see [`crate::wire`]): the
//! initiator side ([`sync_with`]), the responder side ([`serve_peer`]) and
//! the periodic loop ([`anti_entropy_loop`]).

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bayou_core::{ChunkLimits, ProtocolError, ServerId, SessionSender, Summary};
use bytes::{Bytes, BytesMut};
use server_kit::tls::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use crate::member::Standing;
use crate::node::{Gone, Node};
use crate::wire::{self, MAGIC, Msg, PROTOCOL_VERSION, WireError};
use server_kit::frame;

/// How long a session waits for the next bytes before giving up (the
/// kit's peer idle timeout).
pub const IDLE_TIMEOUT: Duration = frame::DEFAULT_IDLE_TIMEOUT;

/// Why an anti-entropy session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Anti-entropy is switched off here (`BAYOU.OFFLINE`).
    #[error("this replica is offline (BAYOU.ONLINE resumes anti-entropy)")]
    Offline,
    /// The peer id is neither in `--peer` nor a live member
    /// ([`Node::peers`]).
    #[error("unknown peer {0}")]
    UnknownPeer(String),
    /// Connecting, reading or writing failed.
    #[error("peer {peer}: {source}")]
    Io {
        /// The peer.
        peer: String,
        /// The error.
        source: std::io::Error,
    },
    /// The peer did not answer in time.
    #[error("peer {0} timed out")]
    Timeout(String),
    /// The peer refused or reported an error.
    #[error("peer {peer} refused: {message}")]
    Refused {
        /// The peer.
        peer: String,
        /// Its message.
        message: String,
    },
    /// The peer sent something the protocol does not allow.
    #[error("peer {peer}: {message}")]
    Protocol {
        /// The peer.
        peer: String,
        /// What went wrong.
        message: String,
    },
    /// The peer and this replica did not authenticate each other with the
    /// cluster secret.
    #[error("peer {peer}: {source}")]
    Auth {
        /// The peer.
        peer: String,
        /// Why.
        source: server_kit::peer_auth::PeerAuthError,
    },
    /// The replica is shutting down.
    #[error(transparent)]
    Gone(#[from] Gone),
}

/// What one session moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Writes new to this replica.
    pub received_writes: u64,
    /// Commit notifications new to this replica.
    pub received_commits: u64,
    /// Writes new to the peer.
    pub sent_writes: u64,
    /// Commit notifications new to the peer.
    pub sent_commits: u64,
}

/// Which end of a peer connection this replica is.
#[derive(Debug, Clone, Copy)]
enum Side {
    /// It connected (an anti-entropy session it started).
    Initiator,
    /// It accepted.
    Acceptor,
}

/// A framed peer connection.
struct Conn<'a> {
    stream: Stream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    node: &'a Node,
    peer: String,
}

impl<'a> Conn<'a> {
    fn new(node: &'a Node, stream: Stream, rbuf: BytesMut, peer: String) -> Self {
        Conn {
            stream,
            rbuf,
            wbuf: BytesMut::new(),
            node,
            peer,
        }
    }

    fn io(&self, source: std::io::Error) -> SessionError {
        SessionError::Io {
            peer: self.peer.clone(),
            source,
        }
    }

    /// The cluster-secret exchange right after the magic
    /// ([`server_kit::peer_auth`]): nothing the peer sends is read as a
    /// protocol message before it succeeds.
    async fn authenticate(&mut self, side: Side) -> Result<(), SessionError> {
        use server_kit::peer_auth::{self, PeerAuthError};
        let secret = self.node.config.cluster_secret.as_ref();
        let exchange = async {
            match side {
                Side::Initiator => {
                    peer_auth::initiate(&mut self.stream, secret, &mut self.rbuf).await
                }
                Side::Acceptor => peer_auth::accept(&mut self.stream, secret, &mut self.rbuf).await,
            }
        };
        match peer_auth::within(IDLE_TIMEOUT, exchange).await {
            Ok(()) => Ok(()),
            Err(PeerAuthError::Timeout) => Err(SessionError::Timeout(self.peer.clone())),
            Err(source) => Err(SessionError::Auth {
                peer: self.peer.clone(),
                source,
            }),
        }
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        let r = timeout(IDLE_TIMEOUT, self.stream.write_all(bytes)).await;
        match r {
            Err(_) => Err(SessionError::Timeout(self.peer.clone())),
            Ok(Err(e)) => Err(self.io(e)),
            Ok(Ok(())) => {
                self.node
                    .counters
                    .peer_bytes_sent
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                self.node.metrics.bytes_sent(&self.peer, bytes.len());
                Ok(())
            }
        }
    }

    async fn send(&mut self, msg: &Msg) -> Result<(), SessionError> {
        self.send_payload(wire::encode(msg)).await
    }

    async fn send_payload(&mut self, payload: Bytes) -> Result<(), SessionError> {
        self.wbuf.clear();
        let mut wbuf = std::mem::take(&mut self.wbuf);
        frame::frame_into(&payload, &mut wbuf);
        let r = self.write_raw(&wbuf).await;
        self.wbuf = wbuf;
        r
    }

    async fn fill(&mut self) -> Result<(), SessionError> {
        self.rbuf.reserve(64 << 10);
        match timeout(IDLE_TIMEOUT, self.stream.read_buf(&mut self.rbuf)).await {
            Err(_) => Err(SessionError::Timeout(self.peer.clone())),
            Ok(Err(e)) => Err(self.io(e)),
            Ok(Ok(0)) => Err(self.io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(Ok(n)) => {
                self.node
                    .counters
                    .peer_bytes_received
                    .fetch_add(n as u64, Ordering::Relaxed);
                self.node.metrics.bytes_received(&self.peer, n);
                Ok(())
            }
        }
    }

    fn protocol(&self, message: String) -> SessionError {
        SessionError::Protocol {
            peer: self.peer.clone(),
            message,
        }
    }

    /// The next message; `Ok(None)` on a clean end of stream between frames.
    async fn recv_or_eof(&mut self) -> Result<Option<Msg>, SessionError> {
        loop {
            match frame::decode(&mut self.rbuf, self.node.config.max_frame_bytes) {
                Ok(Some(frame)) => {
                    return match wire::decode(&frame) {
                        Ok(m) => Ok(Some(m)),
                        Err(e @ WireError::Version(_)) => {
                            let message = e.to_string();
                            self.refuse(&message).await;
                            Err(self.protocol(message))
                        }
                        Err(e) => {
                            let message = e.to_string();
                            self.refuse(&message).await;
                            Err(self.protocol(message))
                        }
                    };
                }
                Ok(None) => {}
                // Frame above the limit: close without reading it.
                Err(e) => return Err(self.protocol(e.to_string())),
            }
            if self.rbuf.is_empty() {
                match self.fill().await {
                    Err(SessionError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::UnexpectedEof =>
                    {
                        return Ok(None);
                    }
                    r => r?,
                }
            } else {
                self.fill().await?;
            }
        }
    }

    async fn recv(&mut self) -> Result<Msg, SessionError> {
        match self.recv_or_eof().await? {
            Some(Msg::Error { message, .. }) => Err(SessionError::Refused {
                peer: self.peer.clone(),
                message,
            }),
            Some(m) => Ok(m),
            None => Err(self.io(std::io::ErrorKind::UnexpectedEof.into())),
        }
    }

    /// Tells the peer why we stop; best effort. Then closes our side and
    /// reads what the peer still sends for a moment, so the connection ends
    /// with a FIN: closing with unread input would reset it, and the peer
    /// could lose the error before reading it.
    async fn refuse(&mut self, message: &str) {
        let _ = self
            .send(&Msg::Error {
                message: message.to_string(),
                version: PROTOCOL_VERSION,
            })
            .await;
        let _ = self.stream.shutdown().await;
        let drain = async {
            let mut scratch = [0u8; 4096];
            while matches!(self.stream.read(&mut scratch).await, Ok(n) if n > 0) {}
        };
        let _ = timeout(Duration::from_millis(500), drain).await;
    }

    /// Streams what a receiver with `summary` lacks, then `End`.
    async fn send_items(&mut self, summary: Summary) -> Result<u64, SessionError> {
        let limits = ChunkLimits {
            items: self.node.config.items_per_frame,
            bytes: self.node.config.max_frame_bytes / 2,
        };
        let mut session = SessionSender::new(summary);
        let mut sent = 0;
        loop {
            if self.node.is_offline() {
                self.refuse("sender went offline").await;
                return Err(SessionError::Offline);
            }
            let Some(chunk) = self.node.next_chunk(&mut session, limits).await? else {
                break;
            };
            sent += chunk.len() as u64;
            self.node
                .counters
                .items_sent
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            self.node.metrics.items_sent(&self.peer, chunk.len());
            self.send(&Msg::Chunk { chunk }).await?;
        }
        self.send(&Msg::End).await?;
        Ok(sent)
    }

    /// Reads chunks until `End` without applying them; how many items.
    async fn drain_items(&mut self) -> Result<u64, SessionError> {
        let mut dropped = 0;
        loop {
            match self.recv().await? {
                Msg::Chunk { chunk } => dropped += chunk.len() as u64,
                Msg::End => return Ok(dropped),
                other => {
                    let message = format!("unexpected {other:?} while receiving items");
                    self.refuse(&message).await;
                    return Err(self.protocol(message));
                }
            }
        }
    }

    /// Applies chunks until `End`, then waits until they are durable.
    /// Returns (new writes, new commits).
    async fn receive_items(&mut self) -> Result<(u64, u64), SessionError> {
        let (mut writes, mut commits, mut barrier) = (0, 0, 0);
        loop {
            match self.recv().await? {
                Msg::Chunk { chunk } => {
                    self.node
                        .counters
                        .items_received
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    self.node.metrics.items_received(&self.peer, chunk.len());
                    let (result, b) = self.node.receive(chunk).await?;
                    barrier = b;
                    match result {
                        Ok(r) => {
                            writes += r.new_writes as u64;
                            commits += r.commits as u64;
                            if r.installed {
                                info!(id = %self.node.config.id, peer = %self.peer, "installed a full-state transfer");
                            }
                        }
                        Err(e) => {
                            if let ProtocolError::Forged { id, reason } = &e {
                                self.node.forged(&self.peer, id, reason);
                            }
                            let message = format!("refused a chunk: {e}");
                            self.refuse(&message).await;
                            return Err(self.protocol(message));
                        }
                    }
                }
                Msg::End => {
                    self.node.wait_durable(barrier).await?;
                    return Ok((writes, commits));
                }
                other => {
                    let message = format!("unexpected {other:?} while receiving items");
                    self.refuse(&message).await;
                    return Err(self.protocol(message));
                }
            }
        }
    }
}

/// One anti-entropy session each way with `peer`: first the peer receives
/// what it lacks from this replica, then this replica from the peer. Returns when both directions
/// are durable at their receivers.
pub async fn sync_with(node: &Node, peer: &ServerId) -> Result<SyncReport, SessionError> {
    let limit = Duration::from_millis(node.config.session_timeout_ms);
    let started = std::time::Instant::now();
    let result = match timeout(limit, session(node, peer)).await {
        Ok(r) => r,
        Err(_) => Err(SessionError::Timeout(peer.to_string())),
    };
    let counter = match &result {
        Ok(_) => &node.counters.sessions_ok,
        Err(_) => &node.counters.sessions_failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    node.metrics.session(peer, started.elapsed(), &result);
    // What it brought may have settled this server's creation (or lost it).
    node.check_standing();
    result
}

async fn session(node: &Node, peer: &ServerId) -> Result<SyncReport, SessionError> {
    if node.is_offline() {
        return Err(SessionError::Offline);
    }
    let addr = node
        .peer_addr(peer)
        .ok_or_else(|| SessionError::UnknownPeer(peer.to_string()))?;
    let connect = Duration::from_millis(node.config.connect_timeout_ms);
    let tls = node.config.tls.as_ref();
    let stream = match timeout(connect, server_kit::tls::connect(tls, &addr)).await {
        Err(_) => return Err(SessionError::Timeout(peer.to_string())),
        Ok(Err(source)) => {
            return Err(SessionError::Io {
                peer: peer.to_string(),
                source,
            });
        }
        Ok(Ok(s)) => s,
    };
    let mut conn = Conn::new(node, stream, BytesMut::new(), peer.to_string());
    conn.write_raw(MAGIC).await?;
    conn.authenticate(Side::Initiator).await?;
    conn.send(&Msg::HelloMember {
        from: node.config.id.clone(),
        to: peer.clone(),
        created: node.creation.as_ref().map(|c| c.created.clone()),
    })
    .await?;
    match conn.recv().await? {
        Msg::Welcome { from } if &from == peer => {}
        other => return Err(conn.protocol(format!("expected Welcome from {peer}, got {other:?}"))),
    }
    let mut report = SyncReport::default();
    // Whether what this push delivers includes the commit of this server's
    // retirement.
    let retired = node.retirement_committed();
    // A server that is not a member (yet) has no write of its own to push,
    // and a peer would refuse a push from a loser: it only pulls.
    if matches!(
        node.standing(),
        Standing::Joining(_) | Standing::Lost { .. }
    ) {
        let summary = node.summary().await?;
        conn.send(&Msg::Pull { summary }).await?;
        (report.received_writes, report.received_commits) = conn.receive_items().await?;
        return Ok(report);
    }
    // Push first: the peer receives what it lacks from us. When the peer is
    // the primary it commits those writes on receipt, so the pull that
    // follows brings their commits back in the same call.
    conn.send(&Msg::PushOffer).await?;
    let summary = match conn.recv().await? {
        Msg::Pull { summary } => summary,
        other => return Err(conn.protocol(format!("expected Pull, got {other:?}"))),
    };
    conn.send_items(summary).await?;
    match conn.recv().await? {
        Msg::Ack {
            new_writes,
            commits,
        } => {
            report.sent_writes = new_writes;
            report.sent_commits = commits;
            if retired {
                // The peer made durable everything this server held,
                // the retirement's commit included, before acknowledging.
                node.retirement_delivered(peer);
            }
        }
        other => return Err(conn.protocol(format!("expected Ack, got {other:?}"))),
    }
    // Then pull: we receive.
    let summary = node.summary().await?;
    conn.send(&Msg::Pull { summary }).await?;
    (report.received_writes, report.received_commits) = conn.receive_items().await?;
    debug!(id = %node.config.id, %peer, ?report, "anti-entropy session done");
    Ok(report)
}

/// Serves a peer connection whose first bytes (at least one) are in `rbuf`.
pub(crate) async fn serve_peer(node: Arc<Node>, stream: Stream, rbuf: BytesMut) {
    let remote = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let mut conn = Conn::new(&node, stream, rbuf, remote.clone());
    if let Err(e) = conn.authenticate(Side::Acceptor).await {
        match &e {
            SessionError::Auth { source, .. } => {
                node.refused_peers
                    .refused(node.config.id.as_str(), &remote, source)
            }
            _ => debug!(id = %node.config.id, %remote, "peer connection ended: {e}"),
        }
        return;
    }
    if let Err(e) = respond(&mut conn).await {
        debug!(id = %node.config.id, %remote, "peer connection ended: {e}");
    }
}

async fn respond(conn: &mut Conn<'_>) -> Result<(), SessionError> {
    let node = conn.node;
    let (from, to, created) = match conn.recv().await? {
        Msg::Hello { from, to } => (from, to, None),
        Msg::HelloMember { from, to, created } => (from, to, created),
        other => {
            let message = format!("expected Hello, got {other:?}");
            conn.refuse(&message).await;
            return Err(conn.protocol(message));
        }
    };
    if to != node.config.id {
        let message = format!("this is replica {}, not {to}", node.config.id);
        conn.refuse(&message).await;
        return Err(conn.protocol(message));
    }
    if node.is_offline() {
        conn.refuse("replica is offline").await;
        return Err(SessionError::Offline);
    }
    // A second owner of a name may pull (and so learn it lost), but what
    // it pushes is refused ([`crate::member`]).
    let impostor = node.identity_mismatch(&from, created.as_ref());
    conn.peer = from.to_string();
    conn.send(&Msg::Welcome {
        from: node.config.id.clone(),
    })
    .await?;
    while let Some(msg) = conn.recv_or_eof().await? {
        if node.is_offline() {
            conn.refuse("replica went offline").await;
            return Err(SessionError::Offline);
        }
        match msg {
            Msg::Pull { summary } => {
                conn.send_items(summary).await?;
            }
            Msg::PushOffer if impostor.is_some() => {
                // Its writes are read and dropped, and the session goes on,
                // so the pull that follows tells it whom the name belongs
                // to.
                let summary = node.summary().await?;
                conn.send(&Msg::Pull { summary }).await?;
                let dropped = conn.drain_items().await?;
                conn.send(&Msg::Ack {
                    new_writes: 0,
                    commits: 0,
                })
                .await?;
                let why = impostor.as_deref().unwrap_or_default();
                warn!(id = %node.config.id, %from, dropped, "refused a push: {why}");
            }
            Msg::PushOffer => {
                let summary = node.summary().await?;
                conn.send(&Msg::Pull { summary }).await?;
                let (new_writes, commits) = conn.receive_items().await?;
                conn.send(&Msg::Ack {
                    new_writes,
                    commits,
                })
                .await?;
                if new_writes + commits > 0 {
                    info!(id = %node.config.id, %from, new_writes, commits, "received by anti-entropy");
                }
            }
            Msg::Error { message, .. } => {
                return Err(SessionError::Refused {
                    peer: from.to_string(),
                    message,
                });
            }
            other => {
                let message = format!("unexpected {other:?}");
                conn.refuse(&message).await;
                return Err(conn.protocol(message));
            }
        }
    }
    Ok(())
}

/// Every `sync_interval_ms`, starts a session with a random peer that has
/// none running, in its own task, so a slow or dead peer stalls nothing.
/// The peers are looked up at every tick: members come and go
/// ([`Node::peers`]). Each tick also checks this server's standing in the
/// membership ([`Node::check_standing`]).
pub async fn anti_entropy_loop(node: Arc<Node>, mut shutdown: watch::Receiver<bool>) {
    let period = Duration::from_millis(node.config.sync_interval_ms);
    node.check_standing();
    if period.is_zero() {
        return;
    }
    let busy: Arc<Mutex<BTreeSet<ServerId>>> = Arc::default();
    let mut rng = seed(&node.config.id);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => return,
        }
        node.check_standing();
        if node.is_offline() {
            continue;
        }
        let peers: Vec<ServerId> = node.peers().into_keys().collect();
        let idle: Vec<&ServerId> = {
            let busy = busy.lock().expect("busy set");
            peers.iter().filter(|p| !busy.contains(*p)).collect()
        };
        if idle.is_empty() {
            continue;
        }
        let peer = idle[(next(&mut rng) % idle.len() as u64) as usize].clone();
        busy.lock().expect("busy set").insert(peer.clone());
        let (node, busy) = (node.clone(), busy.clone());
        tokio::spawn(async move {
            match sync_with(&node, &peer).await {
                Ok(r) if r != SyncReport::default() => {
                    debug!(id = %node.config.id, %peer, ?r, "periodic anti-entropy")
                }
                Ok(_) => {}
                Err(SessionError::Offline | SessionError::Gone(_)) => {}
                // A peer that is down or offline is the normal case for Bayou.
                Err(e @ (SessionError::Io { .. } | SessionError::Timeout(_))) => {
                    debug!(id = %node.config.id, "periodic anti-entropy: {e}")
                }
                Err(e @ SessionError::Refused { .. }) if e.to_string().contains("offline") => {
                    debug!(id = %node.config.id, "periodic anti-entropy: {e}")
                }
                Err(e) => warn!(id = %node.config.id, "periodic anti-entropy: {e}"),
            }
            busy.lock().expect("busy set").remove(&peer);
        });
    }
}

fn seed(id: &ServerId) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    std::process::id().hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    h.finish() | 1
}

/// xorshift64*: peer choice needs no more.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[cfg(test)]
mod tests {
    use bayou_core::{ChunkLimits, Op, Replica, Role, ServerId, SessionSender};

    fn sid(s: &str) -> ServerId {
        ServerId::new(s).unwrap()
    }

    /// Sends what `to` lacks from `from` in chunks of `chunk` items, the way
    /// a session over TCP does.
    fn chunked(from: &mut Replica, to: &mut Replica, chunk: usize) -> usize {
        let mut session = SessionSender::new(to.summary());
        let limits = ChunkLimits {
            items: chunk,
            bytes: 1 << 20,
        };
        let mut frames = 0;
        while let Some(c) = session.next_chunk(from, limits) {
            to.receive_chunk(c).unwrap();
            frames += 1;
        }
        frames
    }

    #[test]
    fn chunked_sessions_deliver_exactly_what_one_unchunked_session_does() {
        // P commits some writes of A and B; A and B hold more tentatively; a
        // fresh receiver R and a partly up-to-date one (B) catch up from P
        // and from A in chunks of every size.
        let mut p = Replica::new(sid("P"), Role::Primary { autocommit: true });
        let mut a = Replica::new(sid("A"), Role::Secondary);
        let mut b = Replica::new(sid("B"), Role::Secondary);
        for i in 0..6u8 {
            a.client_write(u64::from(i) * 2, Op::put(vec![b'a', i], vec![i]));
            b.client_write(u64::from(i) * 3, Op::put(vec![b'b', i], vec![i]));
        }
        p.receive(a.items_for(&p.summary()).take(4).collect::<Vec<_>>())
            .unwrap();
        p.receive(b.items_for(&p.summary()).take(5).collect::<Vec<_>>())
            .unwrap();
        a.receive(p.items_for(&a.summary()).collect::<Vec<_>>())
            .unwrap();
        a.client_write(100, Op::delete(vec![b'a', 0]));
        for chunk in 1..8 {
            for (sender, receiver) in [(&p, &b), (&a, &b), (&a, &p)] {
                let mut sender = sender.clone();
                let mut whole = receiver.clone();
                chunked(&mut sender, &mut whole, usize::MAX);
                let mut parts = receiver.clone();
                let frames = chunked(&mut sender, &mut parts, chunk);
                assert!(frames >= 1);
                assert_eq!(
                    parts.log().collect::<Vec<_>>(),
                    whole.log().collect::<Vec<_>>(),
                    "chunk {chunk}"
                );
                assert_eq!(parts.vv(), whole.vv());
                // Nothing is left to send.
                assert_eq!(sender.items_for(&parts.summary()).count(), 0);
            }
        }
    }
}
