//! The driver of chord-core's data plane.
//!
//! Everything about keys (ownership, replica sets, records and their merge,
//! durable write acknowledgement, hedged reads, anti-entropy, hand-off on join
//! and leave, re-replication, garbage collection, tombstone purge) is decided
//! by [`chord_core::data::DataPlane`]; this module only runs it:
//!
//! * one task owns the plane and is the only code that touches it; inputs come
//!   from a channel ([`DataEvent`]: peer messages, client reads and writes,
//!   lookup results, durability reports, ring views from the core task,
//!   leave, inspections), timers from a heap;
//! * after every input it performs the plane's commands: `Send` goes to the
//!   peer transport as a [`Body::Data`] frame (or straight back in for this
//!   process), `SetTimer` into the heap, `Persist` hands the changed records to
//!   the storage thread ([`crate::store::Persister`]), `Route` runs a Chord
//!   lookup in the core task and answers with the owner and its successors,
//!   `ReadDone`/`WriteDone`/`LeaveReady` answer the waiting client.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chord_core::Id;
use chord_core::data::{DataCommand, DataError, DataMsg, DataPlane, DataTimer, Record, VnodeView};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info};

use crate::node::{CoreEvent, Shared};
use crate::store::{Persister, RedbKeyStore, wall_clock_ms};
use crate::wire::Body;

/// The data plane as this process runs it.
pub type Plane = DataPlane<SocketAddr, RedbKeyStore>;

/// A function run on the plane inside its task (for inspection).
pub type InspectFn = Box<dyn FnOnce(&Plane) + Send>;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No owner answered in time.
    #[error("TRYAGAIN no owner answered for the key within {0} ms (ring changing?)")]
    Timeout(u64),
    /// The node is leaving the ring.
    #[error("ERR this node is leaving the ring")]
    Leaving,
    /// The node is shutting down.
    #[error("ERR node stopping")]
    Stopped,
    /// No live node holds a complete copy of the key's range.
    #[error("{0}")]
    MaybeLost(DataError),
    /// The leave hand-off was not acknowledged.
    #[error("ERR hand-off of {0} records to the successor was not acknowledged; still a member")]
    HandOff(usize),
}

/// Inputs of the data task.
pub enum DataEvent {
    /// A data-plane message from the process at `from`.
    Peer {
        /// Sender.
        from: SocketAddr,
        /// Message.
        msg: DataMsg,
    },
    /// A client read.
    Read {
        /// Key id.
        key: Id,
        /// Answer.
        reply: oneshot::Sender<Result<Option<Record>, ClientError>>,
    },
    /// A client write (`Some`) or delete (`None`).
    Write {
        /// Key id.
        key: Id,
        /// Key name.
        name: Vec<u8>,
        /// Value.
        value: Option<Vec<u8>>,
        /// The client's user, recorded with the record.
        author: Option<String>,
        /// Answer: whether the key existed.
        reply: oneshot::Sender<Result<bool, ClientError>>,
    },
    /// A lookup for a `Route` command finished.
    Routed {
        /// The plane's operation id.
        op: u64,
        /// Owner first, then its successors.
        cands: Vec<SocketAddr>,
    },
    /// The storage thread made everything up to `token` durable.
    Persisted {
        /// Token.
        token: u64,
    },
    /// The ring view changed (from the core task).
    View(Vec<VnodeView<SocketAddr>>),
    /// Voluntary leave: hand off, then answer `(records, complete)`.
    Leave {
        /// Answer.
        reply: oneshot::Sender<(usize, bool)>,
    },
    /// Run a function on the plane.
    Inspect(InspectFn),
}

fn client_error(e: DataError, shared: &Shared) -> ClientError {
    match e {
        DataError::Timeout => ClientError::Timeout(shared.cfg.op_timeout_ms),
        DataError::Leaving => ClientError::Leaving,
        DataError::MaybeLost => ClientError::MaybeLost(e),
    }
}

/// Runs the data plane until shutdown.
pub async fn run_data(
    shared: Arc<Shared>,
    mut plane: Plane,
    persister: Persister,
    mut rx: mpsc::UnboundedReceiver<DataEvent>,
) {
    // The plane's clock is the wall clock: it stamps record versions, which
    // must compare across processes (last writer wins).
    let now_ms = wall_clock_ms;
    let me = shared.me();
    let mut timers: BinaryHeap<Reverse<(u64, u64, DataTimer)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut reads: HashMap<u64, oneshot::Sender<Result<Option<Record>, ClientError>>> =
        HashMap::new();
    let mut writes: HashMap<u64, oneshot::Sender<Result<bool, ClientError>>> = HashMap::new();
    let mut leave_waiter: Option<oneshot::Sender<(usize, bool)>> = None;
    let mut shutdown = shared.shutdown.subscribe();
    // A heartbeat commit keeps the "alive at" mark of the store fresh, which
    // decides after a restart whether the node was down longer than the
    // tombstone grace period.
    let heartbeat = Duration::from_millis((shared.cfg.tombstone_grace_ms / 4).max(100));
    let mut next_heartbeat = tokio::time::Instant::now() + heartbeat;
    plane.start(now_ms());
    loop {
        let next = timers.peek().map(|Reverse(t)| t.0);
        let sleep = async {
            match next {
                Some(at) => {
                    tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()))).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { return };
                let now = now_ms();
                match ev {
                    DataEvent::Peer { from, msg } => plane.handle_message(now, from, msg),
                    DataEvent::Read { key, reply } => {
                        let op = plane.read(now, key);
                        reads.insert(op, reply);
                    }
                    DataEvent::Write { key, name, value, author, reply } => {
                        let op = plane.write(now, key, name, value, author);
                        writes.insert(op, reply);
                    }
                    DataEvent::Routed { op, cands } => plane.routed(now, op, cands),
                    DataEvent::Persisted { token } => plane.persisted(now, token),
                    DataEvent::View(v) => plane.set_view(now, v),
                    DataEvent::Leave { reply } => {
                        leave_waiter = Some(reply);
                        plane.leave(now);
                    }
                    DataEvent::Inspect(f) => f(&plane),
                }
            }
            _ = sleep => {
                let now = now_ms();
                while let Some(Reverse((at, _, t))) = timers.peek().cloned() {
                    if at > now {
                        break;
                    }
                    timers.pop();
                    plane.handle_timer(now, t);
                }
            }
            _ = tokio::time::sleep_until(next_heartbeat) => {
                next_heartbeat = tokio::time::Instant::now() + heartbeat;
                persister.persist(0, Vec::new());
            }
            _ = shutdown.changed() => {
                // Close the store: the storage thread finishes what is
                // queued and redb closes the file cleanly, so the next start
                // needs no repair.
                let _ = tokio::task::spawn_blocking(move || persister.close()).await;
                return;
            }
        }
        // Perform the commands; messages to this process go straight back in.
        let mut local: VecDeque<DataMsg> = VecDeque::new();
        loop {
            while let Some(cmd) = plane.poll_command() {
                match cmd {
                    DataCommand::Send { to, msg } if to == me => local.push_back(msg),
                    DataCommand::Send { to, msg } => {
                        shared.peers.send(to, &Body::Data { from: me, msg })
                    }
                    DataCommand::SetTimer { timer, at } => {
                        seq += 1;
                        timers.push(Reverse((at, seq, timer)));
                    }
                    DataCommand::Persist { token } => {
                        persister.persist(token, plane.store_mut().take_changes());
                    }
                    DataCommand::Route { op, key } => {
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            let cands = match shared.lookup(key, shared.cfg.lookup_mode).await {
                                Ok(o) => {
                                    let mut c = vec![o.owner.addr];
                                    c.extend(o.succs.iter().map(|s| s.addr));
                                    c
                                }
                                Err(e) => {
                                    debug!("lookup for a client operation failed: {e}");
                                    Vec::new()
                                }
                            };
                            let _ = shared.data.send(DataEvent::Routed { op, cands });
                        });
                    }
                    DataCommand::ReadDone { op, result, .. } => {
                        if let Some(w) = reads.remove(&op) {
                            let _ = w.send(result.map_err(|e| client_error(e, &shared)));
                        }
                    }
                    DataCommand::WriteDone { op, result, .. } => {
                        if let Some(w) = writes.remove(&op) {
                            let _ = w.send(result.map_err(|e| client_error(e, &shared)));
                        }
                    }
                    DataCommand::LeaveReady { records, complete } => {
                        info!(records, complete, "leave hand-off finished");
                        if let Some(w) = leave_waiter.take() {
                            let _ = w.send((records, complete));
                        }
                    }
                }
            }
            let Some(msg) = local.pop_front() else { break };
            plane.handle_message(now_ms(), me, msg);
        }
    }
}

async fn ask<T>(
    shared: &Shared,
    ev: impl FnOnce(oneshot::Sender<T>) -> DataEvent,
) -> Result<T, ClientError> {
    let (tx, rx) = oneshot::channel();
    shared.data.send(ev(tx)).map_err(|_| ClientError::Stopped)?;
    rx.await.map_err(|_| ClientError::Stopped)
}

/// The value of `name` (a read from the key's replica set).
pub async fn get(shared: &Arc<Shared>, name: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
    Ok(record(shared, name).await?.and_then(|r| r.value))
}

/// The newest record of `name` in its replica set, tombstone included
/// (`CHORD.RECORD`).
pub async fn record(shared: &Arc<Shared>, name: &[u8]) -> Result<Option<Record>, ClientError> {
    let key = shared.space.hash(name);
    ask(shared, |reply| DataEvent::Read { key, reply }).await?
}

/// Sets (`Some`) or deletes (`None`) `name` on behalf of `author`; whether
/// it existed.
pub async fn write(
    shared: &Arc<Shared>,
    name: &[u8],
    value: Option<Vec<u8>>,
    author: Option<String>,
) -> Result<bool, ClientError> {
    let key = shared.space.hash(name);
    let name = name.to_vec();
    ask(shared, |reply| DataEvent::Write {
        key,
        name,
        value,
        author,
        reply,
    })
    .await?
}

/// Runs `f` on the plane.
pub async fn inspect<T: Send + 'static>(
    shared: &Shared,
    f: impl FnOnce(&Plane) -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    shared
        .data
        .send(DataEvent::Inspect(Box::new(move |p| {
            let _ = tx.send(f(p));
        })))
        .ok()?;
    rx.await.ok()
}

/// Voluntary leave: the plane stops serving and hands every owned range to
/// the successor; once acknowledged, the ring cores leave. Returns how many
/// records were handed off.
pub async fn leave(shared: &Arc<Shared>) -> Result<usize, ClientError> {
    let (records, complete) = ask(shared, |reply| DataEvent::Leave { reply }).await?;
    if !complete {
        return Err(ClientError::HandOff(records));
    }
    let (tx, rx) = oneshot::channel();
    let _ = shared.core.send(CoreEvent::Leave { reply: tx });
    let _ = rx.await;
    info!(records, "left the ring");
    Ok(records)
}
