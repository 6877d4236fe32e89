//! Peer connections: one outgoing TCP connection per remote process, opened on
//! first use, carrying one-way chord-core messages and storage requests; the
//! answers to requests come back on the same connection.
//!
//! Every send is bounded: a connection has a queue of [`QUEUE_FRAMES`] frames
//! (core messages beyond it are dropped, as a lossy network would, and the
//! core's timeouts take over), connecting and every request have a timeout,
//! and a connection that fails is forgotten so the next send reconnects.
//!
//! With TLS on, a connection is TLS from the start (the kit's
//! [`server_kit::tls::connect`]): the peer's certificate is verified
//! against `--tls-ca` for the peer's IP address, and this node presents
//! its own certificate, which the peer requires of a peer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use server_kit::frame::{FrameReader, write_frame};
use server_kit::peer_auth::{self, ClusterSecret, PeerAuthError, RefusalLog};
use server_kit::tls::Stream;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::wire::{self, Body, MAGIC, Request, Response};

/// Frames queued per connection before core messages are dropped.
pub const QUEUE_FRAMES: usize = 8192;

/// Why a request got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// No connection could be made, or it broke before the answer.
    #[error("connection to {0} failed")]
    Connection(SocketAddr),
    /// No answer within the timeout.
    #[error("request to {0} timed out")]
    Timeout(SocketAddr),
    /// The connection's queue is full.
    #[error("send queue to {0} is full")]
    Busy(SocketAddr),
}

type PendingMap = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

struct Conn {
    tx: mpsc::Sender<Bytes>,
    pending: PendingMap,
    next_id: AtomicU64,
}

/// The outgoing side of the peer protocol.
pub struct Peers {
    conns: Mutex<HashMap<SocketAddr, Arc<Conn>>>,
    max_frame_bytes: usize,
    timeout: Duration,
    tls: Option<server_kit::tls::Tls>,
    secret: Option<ClusterSecret>,
    refused: RefusalLog,
}

impl Peers {
    /// Peers with frames of at most `max_frame_bytes`, `timeout` for
    /// connecting (the TLS handshake and the cluster-secret exchange
    /// included) and for each request, TLS when `tls` is given and the
    /// cluster-secret exchange with `secret`.
    pub fn new(
        max_frame_bytes: usize,
        timeout: Duration,
        tls: Option<server_kit::tls::Tls>,
        secret: Option<ClusterSecret>,
    ) -> Arc<Peers> {
        Arc::new(Peers {
            conns: Mutex::new(HashMap::new()),
            max_frame_bytes,
            timeout,
            tls,
            secret,
            refused: RefusalLog::default(),
        })
    }

    /// The default request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn conn(self: &Arc<Self>, addr: SocketAddr) -> Arc<Conn> {
        let mut conns = self.conns.lock().expect("peers lock");
        if let Some(c) = conns.get(&addr)
            && !c.tx.is_closed()
        {
            return c.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
        let conn = Arc::new(Conn {
            tx,
            pending: Arc::new(Mutex::new(HashMap::new())),
            next_id: AtomicU64::new(1),
        });
        conns.insert(addr, conn.clone());
        tokio::spawn(run_conn(self.clone(), addr, conn.clone(), rx));
        conn
    }

    fn forget(&self, addr: SocketAddr, conn: &Arc<Conn>) {
        let mut conns = self.conns.lock().expect("peers lock");
        if conns.get(&addr).is_some_and(|c| Arc::ptr_eq(c, conn)) {
            conns.remove(&addr);
        }
    }

    /// Sends a one-way frame; dropped if the queue is full.
    pub fn send(self: &Arc<Self>, addr: SocketAddr, body: &Body) {
        let conn = self.conn(addr);
        if conn.tx.try_send(wire::encode(body)).is_err() {
            debug!(%addr, "peer queue full or closed: message dropped");
        }
    }

    /// Sends a request and waits for its answer, at most the default timeout.
    pub async fn call(
        self: &Arc<Self>,
        addr: SocketAddr,
        req: Request,
    ) -> Result<Response, RpcError> {
        self.call_with(addr, req, self.timeout).await
    }

    /// Sends a request and waits for its answer, at most `timeout`.
    pub async fn call_with(
        self: &Arc<Self>,
        addr: SocketAddr,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, RpcError> {
        let conn = self.conn(addr);
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending.lock().expect("pending lock").insert(id, tx);
        let frame = wire::encode(&Body::Request { id, req });
        if conn.tx.try_send(frame).is_err() {
            conn.pending.lock().expect("pending lock").remove(&id);
            return Err(RpcError::Busy(addr));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(RpcError::Connection(addr)),
            Err(_) => {
                conn.pending.lock().expect("pending lock").remove(&id);
                Err(RpcError::Timeout(addr))
            }
        }
    }
}

/// Connects, sends the magic and passes the cluster-secret exchange
/// ([`server_kit::peer_auth`]); `None` (logged) when any of it fails.
async fn connect(peers: &Peers, addr: SocketAddr, leftover: &mut BytesMut) -> Option<Stream> {
    let host_port = addr.to_string();
    let connect = server_kit::tls::connect(peers.tls.as_ref(), &host_port);
    let mut stream = match tokio::time::timeout(peers.timeout, connect).await {
        Ok(Ok(s)) => s,
        failed => {
            debug!(%addr, ?failed, "connect failed");
            return None;
        }
    };
    let exchange = async {
        stream.write_all(MAGIC).await?;
        peer_auth::initiate(&mut stream, peers.secret.as_ref(), leftover).await
    };
    match peer_auth::within(peers.timeout, exchange).await {
        Ok(()) => Some(stream),
        Err(e @ (PeerAuthError::Timeout | PeerAuthError::Frame(_) | PeerAuthError::Io(_))) => {
            debug!(%addr, "peer connection failed: {e}");
            None
        }
        Err(e) => {
            peers.refused.refused("this node", &addr.to_string(), &e);
            None
        }
    }
}

async fn run_conn(
    peers: Arc<Peers>,
    addr: SocketAddr,
    conn: Arc<Conn>,
    mut rx: mpsc::Receiver<Bytes>,
) {
    let mut leftover = BytesMut::new();
    let stream = match connect(&peers, addr, &mut leftover).await {
        Some(s) => s,
        None => {
            peers.forget(addr, &conn);
            conn.pending.lock().expect("pending lock").clear();
            return;
        }
    };
    let (mut r, w) = stream.into_split();
    let max = peers.max_frame_bytes;
    let pending = conn.pending.clone();
    let reader = tokio::spawn(async move {
        let mut frames = FrameReader::new(&mut r, leftover, max);
        loop {
            let buf = match frames.next(None).await {
                Ok(Some(buf)) => buf,
                _ => return,
            };
            match wire::decode(&buf) {
                Ok(Body::Response { id, resp }) => {
                    if let Some(tx) = pending.lock().expect("pending lock").remove(&id) {
                        let _ = tx.send(resp);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    debug!(%addr, "bad frame from peer: {e}");
                    return;
                }
            }
        }
    });
    let mut w = BufWriter::with_capacity(64 << 10, w);
    let write = async {
        while let Some(frame) = rx.recv().await {
            write_frame(&mut w, &frame).await?;
            while let Ok(f) = rx.try_recv() {
                write_frame(&mut w, &f).await?;
            }
            w.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let mut reader = reader;
    tokio::select! {
        r = write => {
            if let Err(e) = r {
                debug!(%addr, "write failed: {e}");
            }
        }
        _ = &mut reader => {}
    }
    reader.abort();
    peers.forget(addr, &conn);
    // Dropping the senders fails every waiting request at once.
    conn.pending.lock().expect("pending lock").clear();
}
