//! The data plane: keys on the ring, as a sans-IO state machine.
//!
//! One [`DataPlane`] serves the keys of one process (all its virtual nodes).
//! The driver feeds it the ring view of each virtual node ([`VnodeView`], taken
//! from the [`crate::Node`] cores after every input), peer messages, timers and
//! durability acknowledgements, all carrying `now`; it drains
//! [`DataCommand`]s: messages to send, timers to arm, `Persist` requests,
//! route requests (the driver answers with the key's candidate nodes from a
//! lookup) and client completions.
//!
//! | rule | where | paper |
//! |---|---|---|
//! | virtual node `n` owns `(predecessor, n]` | [`DataPlane::owner_of`] | SIGCOMM §4.2 (consistent hashing: a key lives at `successor(k)`) |
//! | a key has `copies` copies: the owner and its first successors on `copies - 1` *other* processes | [`replica_targets`] | SIGCOMM §5.2 ("replicas at the k nodes succeeding the key"), §6.2 (virtual nodes) |
//! | records merge by version, highest wins, ties are equal records | [`Record::newer_than`] | — |
//! | a write is acknowledged once the owner and every replica target (up to `copies` in all) hold it durably | owner writes | — |
//! | a read asks the owner, and after `read_try_ms` without an answer every other candidate (hedged); the owner's answer wins, else the newest copy | client reads | SIGCOMM §5.2 (successor list as fallback) |
//! | anti-entropy: the owner compares digests with its replica targets, pulls what is newer there, pushes what is newer here | [`DataTimer::Sync`] | — |
//! | join hand-off: a joined node serves its range only after one complete round with its first successor (the previous owner) | readiness | SIGCOMM §4.2 ("move keys ... to n") |
//! | leave hand-off: push the owned ranges to the successor before leaving | [`DataPlane::leave`] | ToN §IV-E.3 |
//! | garbage collection: after a complete round, nodes past the replica set drop their copies of the range | `Drop` | — |
//! | tombstones are purged once a complete round showed every replica holds them and they are older than `tombstone_grace_ms` | `Purge` | — |
//!
//! **Durability.** Every store mutation is followed by a
//! [`DataCommand::Persist`] with a token; the driver makes everything written so
//! far durable and answers [`DataPlane::persisted`]. Acknowledgements that
//! promise durability (a replica's `ReplicateAck`, the owner's write reply) are
//! held until then.
//!
//! **Versions.** The node that takes a client write (the coordinator) stamps
//! it with `(max(now in µs, last stamp + 1), coordinator id)`; the record is the
//! same on every copy, so resending it (a retry, a duplicated message) is
//! idempotent. Concurrent writers of one key: the higher stamp wins.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;

use serde::{Deserialize, Serialize};

use crate::coverage::ArcSet;
use crate::id::{Id, IdSpace};
use crate::interval::in_open_closed;
use crate::node::{NodeRef, Time};

/// A record's version: the coordinator's stamp, then its id as tie-breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Coordinator clock (µs), strictly increasing per coordinator.
    pub stamp: u64,
    /// The coordinator's id.
    pub writer: Id,
}

/// A stored record: a value or a tombstone (`value: None`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The key's name (its id is `SHA-1(name)`; the simulator uses short names).
    pub name: Vec<u8>,
    /// The value, `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// Version; the highest wins.
    pub version: Version,
    /// The user who wrote it, as the coordinating node authenticated them
    /// (`AUTH`); `None` on a node without users. Replicated with the record;
    /// not part of the version.
    pub author: Option<String>,
}

impl Record {
    /// Whether this record replaces `other` in a merge. Merging is commutative,
    /// associative and idempotent: the result is the record with the highest
    /// version, whatever the order of arrival.
    pub fn newer_than(&self, other: Option<&Record>) -> bool {
        other.is_none_or(|o| self.version > o.version)
    }

    /// Whether this is a delete.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// Key-record storage. Implementations: [`MemStore`] here (the simulator
/// adds crash semantics around it); the network node keeps records in redb.
/// Mutations need not be durable until the driver handles
/// [`DataCommand::Persist`].
pub trait KeyStore {
    /// The record of `key`.
    fn get(&self, key: Id) -> Option<Record>;
    /// Stores `rec` under `key`, replacing what was there.
    fn put(&mut self, key: Id, rec: Record);
    /// Removes `key`.
    fn remove(&mut self, key: Id);
    /// The records with ids in the ring interval `(lo, hi]`, in id order from
    /// `lo` (the whole ring when `lo == hi`).
    fn range(&self, lo: Id, hi: Id) -> Vec<(Id, Record)>;
    /// Every record.
    fn all(&self) -> Vec<(Id, Record)>;
}

/// An in-memory [`KeyStore`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemStore {
    map: BTreeMap<Id, Record>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// Number of records (tombstones included).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The records in id order, read in place.
    pub fn iter(&self) -> impl Iterator<Item = (&Id, &Record)> {
        self.map.iter()
    }
}

impl KeyStore for MemStore {
    fn get(&self, key: Id) -> Option<Record> {
        self.map.get(&key).cloned()
    }
    fn put(&mut self, key: Id, rec: Record) {
        self.map.insert(key, rec);
    }
    fn remove(&mut self, key: Id) {
        self.map.remove(&key);
    }
    fn range(&self, lo: Id, hi: Id) -> Vec<(Id, Record)> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let clone = |(k, v): (&Id, &Record)| (*k, v.clone());
        if lo < hi {
            self.map
                .range((Excluded(lo), Included(hi)))
                .map(clone)
                .collect()
        } else {
            self.map
                .range((Excluded(lo), Unbounded))
                .chain(self.map.range(..=hi))
                .map(clone)
                .collect()
        }
    }
    fn all(&self) -> Vec<(Id, Record)> {
        self.map.iter().map(|(k, v)| (*k, v.clone())).collect()
    }
}

/// Order-independent digest `(count, hash)` of `(id, version)` pairs.
pub fn digest<'a>(items: impl IntoIterator<Item = &'a (Id, Version)>) -> (u64, u64) {
    let mut count = 0;
    let mut h = 0u64;
    for (id, v) in items {
        count += 1;
        let b = id.to_be_bytes();
        let w = v.writer.to_be_bytes();
        let mut x = u64::from_be_bytes(b[12..20].try_into().expect("8 bytes"))
            ^ u64::from_be_bytes(b[4..12].try_into().expect("8 bytes")).rotate_left(29)
            ^ v.stamp.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ u64::from_be_bytes(w[12..20].try_into().expect("8 bytes")).rotate_left(17);
        // splitmix64 finaliser, so that XOR-combining is not trivially cancelled.
        x ^= x >> 30;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        h ^= x;
    }
    (count, h)
}

/// What the data plane knows of one of its virtual nodes' ring state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VnodeView<A> {
    /// The virtual node's id.
    pub id: Id,
    /// Its predecessor, if known.
    pub pred: Option<NodeRef<A>>,
    /// Its successor list (empty when alone).
    pub succs: Vec<NodeRef<A>>,
    /// Whether it is a ring member.
    pub joined: bool,
}

/// The processes that hold copies of a range owned by a virtual node at `me`
/// besides `me` itself: the first successors on other processes, `copies - 1`
/// distinct addresses. The one rule for replica sets.
pub fn replica_targets<A: Clone + Ord>(me: &A, succs: &[NodeRef<A>], copies: usize) -> Vec<A> {
    let mut out: Vec<A> = Vec::new();
    for s in succs {
        if out.len() + 1 >= copies {
            break;
        }
        if &s.addr != me && !out.contains(&s.addr) {
            out.push(s.addr.clone());
        }
    }
    out
}

/// Tunables of the data plane.
#[derive(Clone, Debug)]
pub struct DataConfig {
    /// The identifier ring: a record is accepted only under the id its name
    /// hashes to, so no peer can file a record where reads would not find it.
    pub space: IdSpace,
    /// `k`: copies of every key in total (owner included), on distinct processes.
    pub copies: usize,
    /// Anti-entropy period (ms).
    pub sync_ms: u64,
    /// Timeout of node-to-node data requests (ms).
    pub request_timeout_ms: u64,
    /// A read waits this long for a candidate before asking the next ones (ms).
    pub read_try_ms: u64,
    /// A write waits this long for the owner's acknowledgement before routing
    /// again (ms); the owner resends to missing replicas at this period too.
    pub write_try_ms: u64,
    /// A client operation fails after this long (ms).
    pub op_timeout_ms: u64,
    /// Back-off before routing again after a refusal (ms).
    pub retry_ms: u64,
    /// A tombstone is purged only when older than this (ms).
    pub tombstone_grace_ms: u64,
}

impl DataConfig {
    /// Defaults for a ring: 3 copies, anti-entropy every second, reads hedged
    /// after 150 ms, tombstones purged after 10 minutes.
    pub fn new(space: IdSpace) -> Self {
        DataConfig {
            space,
            copies: 3,
            sync_ms: 1000,
            request_timeout_ms: 1000,
            read_try_ms: 150,
            write_try_ms: 1000,
            op_timeout_ms: 10_000,
            retry_ms: 50,
            tombstone_grace_ms: 600_000,
        }
    }
}

/// How a node answered a read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReadRole {
    /// The answering node owns the key and serves its range.
    Owner,
    /// A copy (or nothing) from a node that does not serve the key as owner.
    Copy,
    /// The owner, with no record of the key and no complete copy of the
    /// part of its range the key is in (see [`crate::coverage`]): it cannot
    /// say the key does not exist.
    Unsure,
}

/// The owner's answer to a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteOutcome {
    /// Stored durably on the owner and its replica targets; whether the key was
    /// live before.
    Done {
        /// The key held a value before this write.
        existed: bool,
    },
    /// The receiver does not (yet) serve the key.
    Refused,
}

/// Node-to-node data-plane messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataMsg {
    /// Read the receiver's record of `key`.
    Read {
        /// Request id.
        req: u64,
        /// Key.
        key: Id,
    },
    /// Answer to [`DataMsg::Read`].
    ReadReply {
        /// Request id.
        req: u64,
        /// Owner or copy.
        role: ReadRole,
        /// The record, if any.
        record: Option<Record>,
    },
    /// A client write, to the key's owner.
    Write {
        /// Request id.
        req: u64,
        /// Key.
        key: Id,
        /// The record, stamped by the coordinator.
        record: Record,
    },
    /// Answer to [`DataMsg::Write`], sent once the copies are durable.
    WriteReply {
        /// Request id.
        req: u64,
        /// Done or refused.
        outcome: WriteOutcome,
    },
    /// Merge these records (replication, repair, hand-off).
    Replicate {
        /// Request id.
        req: u64,
        /// Records.
        records: Vec<(Id, Record)>,
        /// How many drop instructions the sender had sent the receiver: a
        /// drop instruction with a higher count was decided after this
        /// message, so it does not apply to these records.
        epoch: u64,
    },
    /// The records of a [`DataMsg::Replicate`] are durable here.
    ReplicateAck {
        /// Request id.
        req: u64,
    },
    /// Anti-entropy: the owner's digest of `(lo, hi]`.
    Digest {
        /// Request id.
        req: u64,
        /// Exclusive lower end.
        lo: Id,
        /// Inclusive upper end.
        hi: Id,
        /// Number of records.
        count: u64,
        /// Hash of their `(id, version)` pairs.
        hash: u64,
    },
    /// Answer to [`DataMsg::Digest`]: `None` when equal, else every `(id, version)`.
    DigestReply {
        /// Request id.
        req: u64,
        /// The receiver's versions on a mismatch.
        versions: Option<Vec<(Id, Version)>>,
        /// The receiver holds a complete copy of the range ([`crate::coverage`]).
        covers: bool,
    },
    /// Ask for these records.
    Fetch {
        /// Request id.
        req: u64,
        /// Ids.
        ids: Vec<Id>,
    },
    /// Answer to [`DataMsg::Fetch`].
    Records {
        /// Request id.
        req: u64,
        /// The records found.
        records: Vec<(Id, Record)>,
    },
    /// Drop copies of `(lo, hi]` (the receiver is past the replica set),
    /// except in ranges the receiver owns.
    Drop {
        /// Exclusive lower end.
        lo: Id,
        /// Inclusive upper end.
        hi: Id,
        /// The sender's count of drop instructions to the receiver, this one included.
        epoch: u64,
    },
    /// A holder of a copy of `key` that does not own it asks the owner whether
    /// it is still in the replica set.
    Needed {
        /// Request id.
        req: u64,
        /// A key the asker holds.
        key: Id,
    },
    /// Answer to [`DataMsg::Needed`]: `Some((lo, hi))` when the owner has
    /// confirmed its whole replica set for its range `(lo, hi]` and the asker is
    /// not in it, so the asker drops its copies of that range.
    NeededReply {
        /// Request id.
        req: u64,
        /// The range to drop, if any.
        drop: Option<(Id, Id)>,
        /// As in [`DataMsg::Drop`].
        epoch: u64,
    },
    /// A surplus holder returns its copies to the owner before dropping them
    /// (answered with [`DataMsg::ReplicateAck`]).
    HandBack {
        /// Request id.
        req: u64,
        /// Records.
        records: Vec<(Id, Record)>,
    },
    /// Remove these records if the stored version is exactly this one
    /// (purged tombstones, and stale copies of purged keys).
    Purge {
        /// Records.
        ids: Vec<(Id, Version)>,
    },
    /// The receiver now holds a complete copy of `(lo, hi]`: sent by an owner
    /// after a clean round that one complete copy vouched for, and by a
    /// leaving node once its hand-off is acknowledged ([`crate::coverage`]).
    Covered {
        /// Exclusive lower end.
        lo: Id,
        /// Inclusive upper end.
        hi: Id,
    },
}

/// Timers of the data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum DataTimer {
    /// Start an anti-entropy round for every virtual node.
    Sync,
    /// Deadline of a node-to-node request.
    Request(u64),
    /// Next step of a client operation (hedge, retry) at the coordinator.
    Op {
        /// Operation id.
        op: u64,
        /// Attempt the timer belongs to (older attempts' timers are ignored).
        attempt: u64,
    },
    /// A client operation's final deadline.
    OpDeadline(u64),
    /// Resend an owner write to replicas that have not acknowledged it.
    OwnerWrite(u64),
}

/// Why a client operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum DataError {
    /// No owner answered within `op_timeout_ms`.
    #[error("TRYAGAIN no owner answered for the key in time (ring changing?)")]
    Timeout,
    /// The process is leaving.
    #[error("the node is leaving")]
    Leaving,
    /// No copy of the key answered, and its owner holds no complete copy of
    /// the key's range: every node that held it may have failed together,
    /// so "no such key" would be a guess ([`crate::coverage`]).
    #[error(
        "LOST no live node vouches for a complete copy of this key's range: every node that held it may have failed (or the range is still being handed over: retry); the key may have existed"
    )]
    MaybeLost,
}

/// Outputs of the data plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataCommand<A> {
    /// Send `msg` to the process at `to`.
    Send {
        /// Destination process.
        to: A,
        /// Message.
        msg: DataMsg,
    },
    /// Call [`DataPlane::handle_timer`] at `at`.
    SetTimer {
        /// Timer.
        timer: DataTimer,
        /// Absolute time (ms).
        at: Time,
    },
    /// Make every mutation so far durable, then call [`DataPlane::persisted`].
    Persist {
        /// Token to hand back.
        token: u64,
    },
    /// Find the candidates for `key` (owner first, then its successors) and
    /// call [`DataPlane::routed`].
    Route {
        /// Operation id.
        op: u64,
        /// Key.
        key: Id,
    },
    /// A client read finished.
    ReadDone {
        /// Operation id.
        op: u64,
        /// Key.
        key: Id,
        /// The record (a tombstone or absent means no value), or why not.
        result: Result<Option<Record>, DataError>,
    },
    /// A client write finished.
    WriteDone {
        /// Operation id.
        op: u64,
        /// Key.
        key: Id,
        /// Whether the key held a value before, or why the write failed (it may
        /// still have been applied).
        result: Result<bool, DataError>,
    },
    /// [`DataPlane::leave`] finished: `records` were handed off (`complete`
    /// when every owned record was acknowledged by the successor).
    LeaveReady {
        /// Records handed off.
        records: usize,
        /// Whether the successor acknowledged all of them.
        complete: bool,
    },
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataStats {
    /// Records sent in `Replicate` by anti-entropy and hand-off.
    pub records_pushed: u64,
    /// Of those, records handed off to a successor (join, leave).
    pub records_handed_off: u64,
    /// Of those, records pushed by anti-entropy to repair a copy.
    pub records_repaired: u64,
    /// Records pulled by anti-entropy.
    pub records_pulled: u64,
    /// Anti-entropy rounds that confirmed every replica.
    pub rounds_confirmed: u64,
    /// Tombstones purged here.
    pub tombstones_purged: u64,
    /// Reads answered after hedging to other candidates.
    pub hedged_reads: u64,
}

#[derive(Clone, Debug)]
enum OpKind {
    Read,
    Write(Record),
    /// A surplus check of a copy this process holds but does not own.
    Check,
}

#[derive(Clone, Debug)]
struct ClientOp<A> {
    key: Id,
    kind: OpKind,
    /// Current attempt's candidates (distinct processes).
    cands: Vec<A>,
    /// How many of `cands` have been asked.
    asked: usize,
    /// Replies received in this attempt, and from which candidates.
    answered: usize,
    answered_idx: BTreeSet<usize>,
    /// Newest copy seen in this attempt, and whether any reply arrived.
    best: Option<Record>,
    any: bool,
    /// An owner answered [`ReadRole::Unsure`] in this attempt.
    unsure: bool,
    /// Attempt number; replies and timers of older attempts are ignored.
    attempt: u64,
    /// Request ids of this attempt.
    reqs: BTreeSet<u64>,
    /// Waiting for `routed`.
    routing: bool,
}

impl<A> ClientOp<A> {
    /// A read's answer from the copies heard in this attempt: the newest,
    /// or, when there is none and an owner was unsure of its range,
    /// [`DataError::MaybeLost`] rather than nil.
    fn answer(&self) -> Result<Option<Record>, DataError> {
        match (&self.best, self.unsure) {
            (None, true) => Err(DataError::MaybeLost),
            (best, _) => Ok(best.clone()),
        }
    }

    /// A new operation on `key`, waiting for its first route.
    fn new(key: Id, kind: OpKind) -> Self {
        ClientOp {
            key,
            kind,
            cands: Vec::new(),
            asked: 0,
            answered: 0,
            answered_idx: BTreeSet::new(),
            best: None,
            any: false,
            unsure: false,
            attempt: 0,
            reqs: BTreeSet::new(),
            routing: true,
        }
    }
}

#[derive(Clone, Debug)]
struct OwnerWrite<A> {
    reply_to: A,
    req: u64,
    key: Id,
    existed: bool,
    local_durable: bool,
    acked: BTreeSet<A>,
    started: Time,
}

#[derive(Clone, Debug)]
struct Round {
    vnode: Id,
    lo: Id,
    hi: Id,
    waiting: BTreeSet<u64>,
    clean: bool,
    /// This process or a target held a complete copy of the range when the
    /// round started ([`crate::coverage`]).
    vouched: bool,
}

#[derive(Clone, Debug)]
enum Pending<A> {
    ClientRead {
        op: u64,
        attempt: u64,
        idx: usize,
    },
    ClientWrite {
        op: u64,
        attempt: u64,
    },
    Check {
        op: u64,
    },
    HandBack {
        versions: Vec<(Id, Version)>,
        owner: A,
        epoch: u64,
        /// The dropped range, when this process held a complete copy of it:
        /// the owner hears so once it has the copies ([`DataMsg::Covered`]).
        cover: Option<(Id, Id)>,
    },
    OwnerRep {
        wid: u64,
        to: A,
        drops: u64,
    },
    Digest {
        round: u64,
        to: A,
    },
    Fetch {
        round: u64,
    },
    Push {
        round: u64,
    },
    Handoff {
        to: A,
        lo: Id,
        hi: Id,
        covered: bool,
    },
}

#[derive(Clone, Debug)]
enum Held<A> {
    Send { to: A, msg: DataMsg },
    LocalDurable(u64),
}

#[derive(Clone, Debug, Default)]
struct Leave {
    sent: usize,
    waiting: BTreeSet<u64>,
    complete: bool,
    done: bool,
}

/// The data plane of one process. See the module documentation.
#[derive(Debug)]
pub struct DataPlane<A, S> {
    cfg: DataConfig,
    addr: A,
    store: S,
    views: Vec<VnodeView<A>>,
    ready: BTreeSet<Id>,
    now: Time,
    next_id: u64,
    out: VecDeque<DataCommand<A>>,
    dirty: bool,
    last_token: u64,
    persisted_upto: u64,
    held: Vec<(u64, Held<A>)>,
    pending: BTreeMap<u64, Pending<A>>,
    ops: BTreeMap<u64, ClientOp<A>>,
    writes: BTreeMap<u64, OwnerWrite<A>>,
    rounds: BTreeMap<u64, Round>,
    last_stamp: u64,
    leave: Option<Leave>,
    stats: DataStats,
    /// Per virtual node: the range and replica targets of its last round that
    /// confirmed every target (surplus copies elsewhere may then be dropped).
    confirmed: BTreeMap<Id, (Id, Vec<A>)>,
    check_cursor: Id,
    /// How many times each process was told to drop copies.
    drops_sent: BTreeMap<A, u64>,
    /// Per key: the last process that replicated it here, with its drop
    /// epoch for us at the time.
    replicated_epoch: BTreeMap<Id, (A, u64)>,
    epoch_base: u64,
    /// The arcs this process holds a complete copy of ([`crate::coverage`]).
    covered: ArcSet,
}

impl<A: Clone + Ord + Debug, S: KeyStore> DataPlane<A, S> {
    /// A data plane for the process at `addr` over `store` (which may hold
    /// records from before a restart). Request ids start at `id_base`: give
    /// each incarnation of a process a different one (e.g. a start time) so
    /// late replies to a previous incarnation match nothing. Call
    /// [`DataPlane::start`] next.
    pub fn new(cfg: DataConfig, addr: A, store: S, id_base: u64) -> Self {
        DataPlane {
            cfg,
            addr,
            store,
            views: Vec::new(),
            ready: BTreeSet::new(),
            now: 0,
            next_id: id_base.max(1),
            out: VecDeque::new(),
            dirty: false,
            last_token: 0,
            persisted_upto: 0,
            held: Vec::new(),
            pending: BTreeMap::new(),
            ops: BTreeMap::new(),
            writes: BTreeMap::new(),
            rounds: BTreeMap::new(),
            last_stamp: 0,
            leave: None,
            stats: DataStats::default(),
            confirmed: BTreeMap::new(),
            check_cursor: Id::from_u64(0),
            drops_sent: BTreeMap::new(),
            replicated_epoch: BTreeMap::new(),
            epoch_base: id_base,
            covered: ArcSet::new(),
        }
    }

    /// Arms the anti-entropy timer.
    pub fn start(&mut self, now: Time) {
        self.now = now;
        self.set_timer(DataTimer::Sync, now + self.cfg.sync_ms);
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Mutable access to the store (the driver's durability and crash model).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The configuration.
    pub fn config(&self) -> &DataConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> DataStats {
        self.stats
    }

    /// The version stamped on client write `op` while it is in flight.
    pub fn write_version(&self, op: u64) -> Option<Version> {
        match &self.ops.get(&op)?.kind {
            OpKind::Write(r) => Some(r.version),
            OpKind::Read | OpKind::Check => None,
        }
    }

    /// Whether virtual node `vnode` serves its range (its join hand-off is done).
    pub fn is_ready(&self, vnode: Id) -> bool {
        self.ready.contains(&vnode)
    }

    /// The next command, if any.
    pub fn poll_command(&mut self) -> Option<DataCommand<A>> {
        self.out.pop_front()
    }

    /// Replaces the ring view (call after every ring input that may change it).
    pub fn set_view(&mut self, now: Time, views: Vec<VnodeView<A>>) {
        self.now = now;
        for v in &views {
            if !v.joined {
                self.ready.remove(&v.id);
            } else if v.succs.iter().all(|s| s.addr == self.addr) && v.pred.is_none() {
                // Alone on the ring (it was created here): nothing to hand
                // off, and whatever exists is here.
                self.ready.insert(v.id);
                self.covered.insert(&self.cfg.space, v.id, v.id);
            }
        }
        self.views = views;
    }

    /// The virtual node that owns `key` in this process's view, if any.
    pub fn owner_of(&self, key: Id) -> Option<Id> {
        if self.leave.is_some() {
            return None;
        }
        self.views.iter().filter(|v| v.joined).find_map(|v| {
            let owns = match &v.pred {
                Some(p) => in_open_closed(&key, &p.id, &v.id),
                None => v.succs.iter().all(|s| s.addr == self.addr),
            };
            owns.then_some(v.id)
        })
    }

    fn serving_owner(&self, key: Id) -> Option<Id> {
        self.owner_of(key).filter(|v| self.ready.contains(v))
    }

    fn targets_of(&self, vnode: Id) -> Vec<A> {
        self.views
            .iter()
            .find(|v| v.id == vnode)
            .map(|v| replica_targets(&self.addr, &v.succs, self.cfg.copies))
            .unwrap_or_default()
    }

    // ----- client operations ------------------------------------------------

    /// Starts a client read of `key`; completion: [`DataCommand::ReadDone`].
    pub fn read(&mut self, now: Time, key: Id) -> u64 {
        self.start_op(now, key, OpKind::Read)
    }

    /// Starts a client write (`Some`) or delete (`None`) of `name` (id `key`)
    /// by `author` (the client's user, if the node authenticates them);
    /// completion: [`DataCommand::WriteDone`].
    pub fn write(
        &mut self,
        now: Time,
        key: Id,
        name: Vec<u8>,
        value: Option<Vec<u8>>,
        author: Option<String>,
    ) -> u64 {
        self.now = now;
        self.last_stamp = (self.last_stamp + 1).max(now.saturating_mul(1000));
        let writer = self.views.first().map_or(key, |v| v.id);
        let record = Record {
            name,
            value,
            version: Version {
                stamp: self.last_stamp,
                writer,
            },
            author,
        };
        self.start_op(now, key, OpKind::Write(record))
    }

    fn start_op(&mut self, now: Time, key: Id, kind: OpKind) -> u64 {
        self.now = now;
        let op = self.fresh();
        if self.leave.is_some() {
            let e = DataError::Leaving;
            self.out.push_back(match kind {
                OpKind::Read => DataCommand::ReadDone {
                    op,
                    key,
                    result: Err(e),
                },
                OpKind::Write(_) | OpKind::Check => DataCommand::WriteDone {
                    op,
                    key,
                    result: Err(e),
                },
            });
            return op;
        }
        self.ops.insert(op, ClientOp::new(key, kind));
        self.set_timer(DataTimer::OpDeadline(op), now + self.cfg.op_timeout_ms);
        self.out.push_back(DataCommand::Route { op, key });
        op
    }

    /// The answer to [`DataCommand::Route`]: the key's candidates, owner first
    /// then its successors (the driver takes them from a lookup). An empty
    /// list routes again after `retry_ms`.
    pub fn routed(&mut self, now: Time, op: u64, candidates: Vec<A>) {
        self.now = now;
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        if !o.routing {
            return;
        }
        o.routing = false;
        o.attempt += 1;
        o.cands.clear();
        for c in candidates {
            if !o.cands.contains(&c) && o.cands.len() < self.cfg.copies.max(1) {
                o.cands.push(c);
            }
        }
        o.asked = 0;
        o.answered = 0;
        o.answered_idx.clear();
        o.best = None;
        o.any = false;
        o.unsure = false;
        o.reqs.clear();
        let attempt = o.attempt;
        if o.cands.is_empty() {
            o.routing = true;
            self.set_timer(DataTimer::Op { op, attempt }, now + self.cfg.retry_ms);
            return;
        }
        let wait = match o.kind {
            OpKind::Read => self.cfg.read_try_ms,
            OpKind::Write(_) => self.cfg.write_try_ms,
            OpKind::Check => self.cfg.request_timeout_ms,
        };
        self.ask_next(op, 1);
        self.set_timer(DataTimer::Op { op, attempt }, now + wait);
    }

    /// Sends the operation's request to its next `n` candidates.
    fn ask_next(&mut self, op: u64, n: usize) {
        let Some(o) = self.ops.get(&op) else { return };
        let (key, attempt) = (o.key, o.attempt);
        let from = o.asked;
        let to_ask: Vec<A> = o.cands.iter().skip(from).take(n).cloned().collect();
        let kind = o.kind.clone();
        for (i, to) in to_ask.into_iter().enumerate() {
            let req = self.fresh();
            let (pending, msg) = match &kind {
                OpKind::Read => (
                    Pending::ClientRead {
                        op,
                        attempt,
                        idx: from + i,
                    },
                    DataMsg::Read { req, key },
                ),
                OpKind::Write(r) => (
                    Pending::ClientWrite { op, attempt },
                    DataMsg::Write {
                        req,
                        key,
                        record: r.clone(),
                    },
                ),
                OpKind::Check => (Pending::Check { op }, DataMsg::Needed { req, key }),
            };
            self.pending.insert(req, pending);
            let o = self.ops.get_mut(&op).expect("op exists");
            o.asked += 1;
            o.reqs.insert(req);
            self.send(to, msg);
        }
    }

    fn reroute(&mut self, op: u64) {
        let now = self.now;
        let Some(o) = self.ops.get_mut(&op) else {
            return;
        };
        for r in std::mem::take(&mut o.reqs) {
            self.pending.remove(&r);
        }
        o.routing = true;
        o.attempt += 1;
        let attempt = o.attempt;
        self.set_timer(DataTimer::Op { op, attempt }, now + self.cfg.retry_ms);
    }

    fn finish_read(&mut self, op: u64, result: Result<Option<Record>, DataError>) {
        self.finish(op, |key| DataCommand::ReadDone { op, key, result });
    }

    fn finish_write(&mut self, op: u64, result: Result<bool, DataError>) {
        self.finish(op, |key| DataCommand::WriteDone { op, key, result });
    }

    /// Ends client operation `op` (if still open): forgets its requests and
    /// emits the command `done` builds from its key.
    fn finish(&mut self, op: u64, done: impl FnOnce(Id) -> DataCommand<A>) {
        if let Some(o) = self.ops.remove(&op) {
            for r in o.reqs {
                self.pending.remove(&r);
            }
            self.out.push_back(done(o.key));
        }
    }

    // ----- leave --------------------------------------------------------------

    /// Voluntary leave: stop serving and push every owned range to the first
    /// successor on another process. Completion: [`DataCommand::LeaveReady`];
    /// the driver then runs the ring's leave.
    pub fn leave(&mut self, now: Time) {
        self.now = now;
        if self.leave.is_some() {
            return;
        }
        let mut st = Leave {
            complete: true,
            ..Leave::default()
        };
        let views: Vec<VnodeView<A>> = self.views.iter().filter(|v| v.joined).cloned().collect();
        for v in views {
            let Some(succ) = v.succs.iter().find(|s| s.addr != self.addr).cloned() else {
                continue;
            };
            let lo = v.pred.as_ref().map_or(v.id, |p| p.id);
            let records = self.store.range(lo, v.id);
            let covered = self.covered.covers(&self.cfg.space, lo, v.id);
            if records.is_empty() {
                if covered {
                    self.send(succ.addr, DataMsg::Covered { lo, hi: v.id });
                }
                continue;
            }
            st.sent += records.len();
            let req = self.fresh();
            self.pending.insert(
                req,
                Pending::Handoff {
                    to: succ.addr.clone(),
                    lo,
                    hi: v.id,
                    covered,
                },
            );
            st.waiting.insert(req);
            self.stats.records_pushed += records.len() as u64;
            self.stats.records_handed_off += records.len() as u64;
            let epoch = self.epoch_of(&succ.addr);
            self.send(
                succ.addr,
                DataMsg::Replicate {
                    req,
                    records,
                    epoch,
                },
            );
        }
        self.ready.clear();
        self.leave = Some(st);
        self.check_leave();
    }

    fn check_leave(&mut self) {
        if let Some(l) = &mut self.leave
            && l.waiting.is_empty()
            && !l.done
        {
            l.done = true;
            let (records, complete) = (l.sent, l.complete);
            self.out
                .push_back(DataCommand::LeaveReady { records, complete });
        }
    }

    // ----- inputs -----------------------------------------------------------

    /// The driver made every mutation up to `token` durable.
    pub fn persisted(&mut self, now: Time, token: u64) {
        self.now = now;
        self.persisted_upto = self.persisted_upto.max(token);
        let upto = self.persisted_upto;
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(t, _)| *t <= upto);
        self.held = keep;
        for (_, h) in done {
            self.release(h);
        }
        self.flush();
    }

    /// A timer fired.
    pub fn handle_timer(&mut self, now: Time, timer: DataTimer) {
        self.now = now;
        match timer {
            DataTimer::Sync => {
                self.sync_round();
                if self.leave.is_none() {
                    self.check_surplus();
                }
                self.set_timer(DataTimer::Sync, now + self.cfg.sync_ms);
            }
            DataTimer::Request(req) => {
                if let Some(p) = self.pending.remove(&req) {
                    self.on_timeout(req, p);
                }
            }
            DataTimer::Op { op, attempt } => self.op_step(op, attempt),
            DataTimer::OpDeadline(op) => {
                if let Some(o) = self.ops.get(&op) {
                    match o.kind {
                        OpKind::Read => self.finish_read(op, Err(DataError::Timeout)),
                        OpKind::Write(_) => self.finish_write(op, Err(DataError::Timeout)),
                        OpKind::Check => self.finish_check(op),
                    }
                }
            }
            DataTimer::OwnerWrite(wid) => self.owner_write_retry(wid),
        }
        self.flush();
    }

    fn op_step(&mut self, op: u64, attempt: u64) {
        let Some(o) = self.ops.get(&op) else { return };
        if o.attempt != attempt {
            return;
        }
        if o.routing {
            let key = o.key;
            self.out.push_back(DataCommand::Route { op, key });
            return;
        }
        match o.kind {
            OpKind::Read => {
                if o.asked < o.cands.len() {
                    // Hedge: the first candidate is slow; ask all the others.
                    let n = o.cands.len() - o.asked;
                    self.ask_next(op, n);
                    let at = self.now + self.cfg.read_try_ms;
                    self.set_timer(DataTimer::Op { op, attempt }, at);
                } else if o.any {
                    let result = o.answer();
                    self.stats.hedged_reads += 1;
                    self.finish_read(op, result);
                } else {
                    self.reroute(op);
                }
            }
            OpKind::Write(_) => self.reroute(op),
            OpKind::Check => self.finish_check(op),
        }
    }

    fn finish_check(&mut self, op: u64) {
        if let Some(o) = self.ops.remove(&op) {
            for r in o.reqs {
                self.pending.remove(&r);
            }
        }
    }

    /// Starts a surplus check of the next held key this process does not own
    /// (one at a time, round-robin over the keys).
    fn check_surplus(&mut self) {
        if self.ops.values().any(|o| matches!(o.kind, OpKind::Check))
            || self.views.iter().any(|v| v.joined && v.pred.is_none())
        {
            return;
        }
        let foreign = |k: &Id| self.owner_of(*k).is_none();
        let all = self.store.all();
        let next = all
            .iter()
            .map(|(k, _)| *k)
            .find(|k| *k > self.check_cursor && foreign(k))
            .or_else(|| all.iter().map(|(k, _)| *k).find(|k| foreign(k)));
        let Some(key) = next else { return };
        self.check_cursor = key;
        let op = self.fresh();
        self.ops.insert(op, ClientOp::new(key, OpKind::Check));
        let at = self.now + self.cfg.op_timeout_ms;
        self.set_timer(DataTimer::OpDeadline(op), at);
        self.out.push_back(DataCommand::Route { op, key });
    }

    fn on_timeout(&mut self, req: u64, p: Pending<A>) {
        match p {
            Pending::ClientRead { .. } | Pending::ClientWrite { .. } => {
                // The op's own timer decides.
            }
            Pending::Check { op } => self.finish_check(op),
            Pending::OwnerRep { .. } | Pending::HandBack { .. } => {}
            Pending::Digest { round, .. } | Pending::Fetch { round } | Pending::Push { round } => {
                if let Some(r) = self.rounds.get_mut(&round) {
                    r.clean = false;
                }
                self.round_reply(round, req);
            }
            Pending::Handoff { .. } => {
                if let Some(l) = &mut self.leave {
                    l.waiting.remove(&req);
                    l.complete = false;
                }
                self.check_leave();
            }
        }
    }

    /// A message from the process at `from`.
    pub fn handle_message(&mut self, now: Time, from: A, msg: DataMsg) {
        self.now = now;
        match msg {
            DataMsg::Read { req, key } => {
                let record = self.store.get(key);
                let role = if self.serving_owner(key).is_none() {
                    ReadRole::Copy
                } else if record.is_none() && !self.covered.contains(key) {
                    ReadRole::Unsure
                } else {
                    ReadRole::Owner
                };
                // A reader must never see a value that a crash could take back.
                self.send_durable(from, DataMsg::ReadReply { req, role, record });
            }
            DataMsg::ReadReply { req, role, record } => {
                let Some(Pending::ClientRead { op, attempt, idx }) = self.pending.remove(&req)
                else {
                    return;
                };
                let Some(o) = self.ops.get_mut(&op) else {
                    return;
                };
                if o.attempt != attempt {
                    return;
                }
                o.reqs.remove(&req);
                o.answered += 1;
                o.answered_idx.insert(idx);
                o.any = true;
                o.unsure |= role == ReadRole::Unsure;
                if let Some(r) = record
                    && r.newer_than(o.best.as_ref())
                {
                    o.best = Some(r);
                }
                if role == ReadRole::Owner {
                    let best = o.best.clone();
                    if o.asked > 1 {
                        self.stats.hedged_reads += 1;
                    }
                    self.finish_read(op, Ok(best));
                } else if o.answered == o.asked && o.asked < o.cands.len() {
                    // The first candidate does not serve the key: ask the rest now.
                    let n = o.cands.len() - o.asked;
                    self.ask_next(op, n);
                } else if o.answered == o.cands.len()
                    || (o.asked == o.cands.len()
                        && (1..o.cands.len()).all(|i| o.answered_idx.contains(&i)))
                {
                    // Every candidate answered, or every one but the first
                    // (the owner, silent past `read_try_ms`): a write is
                    // acknowledged only once all of them hold it, so the
                    // newest of their copies is the last acknowledged write.
                    let result = o.answer();
                    if o.asked > 1 {
                        self.stats.hedged_reads += 1;
                    }
                    self.finish_read(op, result);
                }
            }
            DataMsg::Write { req, key, record } => self.owner_write(from, req, key, record),
            DataMsg::WriteReply { req, outcome } => {
                let Some(Pending::ClientWrite { op, attempt }) = self.pending.remove(&req) else {
                    return;
                };
                if self.ops.get(&op).is_none_or(|o| o.attempt != attempt) {
                    return;
                }
                match outcome {
                    WriteOutcome::Done { existed } => self.finish_write(op, Ok(existed)),
                    WriteOutcome::Refused => self.reroute(op),
                }
            }
            DataMsg::Replicate {
                req,
                records,
                epoch,
            } => {
                // The sender counts on these copies unless it told us to drop
                // them after sending this.
                for (k, _) in &records {
                    let e = self
                        .replicated_epoch
                        .entry(*k)
                        .or_insert((from.clone(), epoch));
                    if e.0 != from || e.1 < epoch {
                        *e = (from.clone(), epoch);
                    }
                }
                self.merge_all(records);
                self.send_durable(from, DataMsg::ReplicateAck { req });
            }
            DataMsg::HandBack { req, records } => {
                // Refused records are dropped by the sender all the same.
                self.merge_guarded(records);
                self.send_durable(from, DataMsg::ReplicateAck { req });
            }
            DataMsg::ReplicateAck { req } => match self.pending.remove(&req) {
                Some(Pending::OwnerRep { wid, to, drops }) => {
                    // An acknowledgement sent before the process was told to
                    // drop its copies may arrive after: it no longer counts.
                    let current = self.epoch_of(&to);
                    if drops == current
                        && let Some(w) = self.writes.get_mut(&wid)
                    {
                        w.acked.insert(to);
                    }
                    self.check_write(wid);
                }
                Some(Pending::Push { round }) => self.round_reply(round, req),
                Some(Pending::HandBack {
                    versions,
                    owner,
                    epoch,
                    cover,
                }) => {
                    if let Some((lo, hi)) = cover {
                        self.send(owner.clone(), DataMsg::Covered { lo, hi });
                    }
                    self.handed_back(versions, owner, epoch)
                }
                Some(Pending::Handoff {
                    to,
                    lo,
                    hi,
                    covered,
                }) => {
                    // The successor now holds our range as we did.
                    if covered {
                        self.send(to, DataMsg::Covered { lo, hi });
                    }
                    if let Some(l) = &mut self.leave {
                        l.waiting.remove(&req);
                    }
                    self.check_leave();
                }
                _ => {}
            },
            DataMsg::Digest {
                req,
                lo,
                hi,
                count,
                hash,
            } => {
                let versions: Vec<(Id, Version)> = self
                    .store
                    .range(lo, hi)
                    .into_iter()
                    .map(|(k, r)| (k, r.version))
                    .collect();
                let versions = (digest(&versions) != (count, hash)).then_some(versions);
                let covers = self.covered.covers(&self.cfg.space, lo, hi);
                // "In sync" promises the copies are durable here.
                self.send_durable(
                    from,
                    DataMsg::DigestReply {
                        req,
                        versions,
                        covers,
                    },
                );
            }
            DataMsg::DigestReply {
                req,
                versions,
                covers,
            } => {
                let Some(Pending::Digest { round, to }) = self.pending.remove(&req) else {
                    return;
                };
                if covers && let Some(r) = self.rounds.get_mut(&round) {
                    r.vouched = true;
                }
                if let Some(remote) = versions {
                    self.reconcile(round, to, remote);
                }
                self.round_reply(round, req);
            }
            DataMsg::Fetch { req, ids } => {
                let records = ids
                    .into_iter()
                    .filter_map(|k| self.store.get(k).map(|r| (k, r)))
                    .collect();
                self.send(from, DataMsg::Records { req, records });
            }
            DataMsg::Records { req, records } => {
                let Some(Pending::Fetch { round }) = self.pending.remove(&req) else {
                    return;
                };
                self.stats.records_pulled += records.len() as u64;
                let refused = self.merge_guarded(records);
                if !refused.is_empty() {
                    self.send(from, DataMsg::Purge { ids: refused });
                }
                self.round_reply(round, req);
            }
            DataMsg::Drop { lo, hi, epoch } => self.drop_range(from, lo, hi, epoch),
            DataMsg::Covered { lo, hi } => self.covered.insert(&self.cfg.space, lo, hi),
            DataMsg::Needed { req, key } => {
                let drop = self.serving_owner(key).and_then(|v| {
                    let view = self.views.iter().find(|x| x.id == v)?;
                    let lo = view.pred.as_ref()?.id;
                    let targets = replica_targets(&self.addr, &view.succs, self.cfg.copies);
                    let confirmed = self.confirmed.get(&v) == Some(&(lo, targets.clone()));
                    (confirmed && from != self.addr && !targets.contains(&from)).then_some((lo, v))
                });
                if drop.is_some() {
                    self.forget_acks(&from);
                }
                let epoch = self.epoch_of(&from);
                self.send(from, DataMsg::NeededReply { req, drop, epoch });
            }
            DataMsg::NeededReply { req, drop, epoch } => {
                let Some(Pending::Check { op }) = self.pending.remove(&req) else {
                    return;
                };
                self.finish_check(op);
                if let Some((lo, hi)) = drop {
                    self.drop_range(from, lo, hi, epoch);
                }
            }
            DataMsg::Purge { ids } => {
                for (k, v) in ids {
                    if let Some(r) = self.store.get(k)
                        && r.version == v
                    {
                        self.store.remove(k);
                        self.dirty = true;
                        if r.is_tombstone() {
                            self.stats.tombstones_purged += 1;
                        }
                    }
                }
            }
        }
        self.flush();
    }

    // ----- owner writes -----------------------------------------------------

    /// Whether `rec` sits under the id of its own name.
    fn valid(&self, key: Id, rec: &Record) -> bool {
        self.cfg.space.hash(&rec.name) == key
    }

    fn owner_write(&mut self, from: A, req: u64, key: Id, record: Record) {
        let serving = self.serving_owner(key).filter(|_| self.valid(key, &record));
        let Some(vnode) = serving else {
            self.send(
                from,
                DataMsg::WriteReply {
                    req,
                    outcome: WriteOutcome::Refused,
                },
            );
            return;
        };
        let stored = self.store.get(key);
        // (A repeated write reports what it finds, its own first copy included.)
        let existed = stored.as_ref().is_some_and(|s| s.value.is_some());
        let current = if record.newer_than(stored.as_ref()) {
            self.store.put(key, record.clone());
            self.dirty = true;
            record
        } else {
            stored.expect("newer_than(None) is true")
        };
        let wid = self.fresh();
        self.writes.insert(
            wid,
            OwnerWrite {
                reply_to: from,
                req,
                key,
                existed,
                local_durable: false,
                acked: BTreeSet::new(),
                started: self.now,
            },
        );
        self.hold(Held::LocalDurable(wid));
        for t in self.targets_of(vnode) {
            self.replicate_write(wid, t, key, current.clone());
        }
        self.set_timer(DataTimer::OwnerWrite(wid), self.now + self.cfg.write_try_ms);
    }

    fn replicate_write(&mut self, wid: u64, to: A, key: Id, rec: Record) {
        let req = self.fresh();
        let drops = self.epoch_of(&to);
        self.pending.insert(
            req,
            Pending::OwnerRep {
                wid,
                to: to.clone(),
                drops,
            },
        );
        self.send(
            to,
            DataMsg::Replicate {
                req,
                records: vec![(key, rec)],
                epoch: drops,
            },
        );
    }

    fn owner_write_retry(&mut self, wid: u64) {
        let Some(w) = self.writes.get(&wid) else {
            return;
        };
        if self.now.saturating_sub(w.started) > self.cfg.op_timeout_ms {
            self.writes.remove(&wid);
            return;
        }
        let key = w.key;
        let Some(vnode) = self.serving_owner(key) else {
            // No longer the owner: the coordinator will route again.
            self.writes.remove(&wid);
            return;
        };
        let Some(rec) = self.store.get(key) else {
            self.writes.remove(&wid);
            return;
        };
        let acked = w.acked.clone();
        for t in self.targets_of(vnode) {
            if !acked.contains(&t) {
                self.replicate_write(wid, t, key, rec.clone());
            }
        }
        self.set_timer(DataTimer::OwnerWrite(wid), self.now + self.cfg.write_try_ms);
    }

    /// A process told to drop its copies no longer counts as holding the
    /// writes it acknowledged: if it becomes a replica target again, they
    /// are sent to it again before any acknowledgement.
    /// Drop epochs start at this incarnation's `id_base`, so they grow
    /// across restarts too.
    fn epoch_of(&self, who: &A) -> u64 {
        self.epoch_base + self.drops_sent.get(who).copied().unwrap_or(0)
    }

    fn forget_acks(&mut self, who: &A) {
        *self.drops_sent.entry(who.clone()).or_default() += 1;
        for w in self.writes.values_mut() {
            w.acked.remove(who);
        }
    }

    /// Replies to the coordinator once the owner's copy is durable and every
    /// current replica target has acknowledged a durable copy.
    fn check_write(&mut self, wid: u64) {
        let Some(w) = self.writes.get(&wid) else {
            return;
        };
        if !w.local_durable {
            return;
        }
        let Some(vnode) = self.serving_owner(w.key) else {
            return;
        };
        let targets = self.targets_of(vnode);
        if targets.iter().all(|t| w.acked.contains(t)) {
            let w = self.writes.remove(&wid).expect("exists");
            self.send(
                w.reply_to,
                DataMsg::WriteReply {
                    req: w.req,
                    outcome: WriteOutcome::Done { existed: w.existed },
                },
            );
        }
    }

    // ----- anti-entropy -------------------------------------------------------

    fn sync_round(&mut self) {
        if self.leave.is_some() {
            return;
        }
        let views: Vec<VnodeView<A>> = self.views.iter().filter(|v| v.joined).cloned().collect();
        for v in views {
            if self.rounds.values().any(|r| r.vnode == v.id) {
                continue;
            }
            let Some(pred) = &v.pred else { continue };
            let (lo, hi) = (pred.id, v.id);
            let mut targets = replica_targets(&self.addr, &v.succs, self.cfg.copies);
            if !self.ready.contains(&v.id) {
                // Join hand-off: the first successor on another process held
                // our range until we joined; sync with it even when it is not
                // a replica target (copies = 1). A copy left there is
                // collected later.
                if let Some(s) = v.succs.iter().find(|s| s.addr != self.addr)
                    && !targets.contains(&s.addr)
                {
                    targets.insert(0, s.addr.clone());
                }
            }
            let round = self.fresh();
            let mut r = Round {
                vnode: v.id,
                lo,
                hi,
                waiting: BTreeSet::new(),
                clean: true,
                vouched: self.covered.covers(&self.cfg.space, lo, hi),
            };
            let local: Vec<(Id, Version)> = self
                .store
                .range(lo, hi)
                .into_iter()
                .map(|(k, r)| (k, r.version))
                .collect();
            let (count, hash) = digest(&local);
            for t in targets {
                let req = self.fresh();
                self.pending.insert(
                    req,
                    Pending::Digest {
                        round,
                        to: t.clone(),
                    },
                );
                r.waiting.insert(req);
                self.send(
                    t,
                    DataMsg::Digest {
                        req,
                        lo,
                        hi,
                        count,
                        hash,
                    },
                );
            }
            self.rounds.insert(round, r);
            self.round_reply(round, 0);
        }
    }

    /// Pull what is newer at `to`, push what is newer here.
    fn reconcile(&mut self, round: u64, to: A, remote: Vec<(Id, Version)>) {
        let Some(r) = self.rounds.get_mut(&round) else {
            return;
        };
        r.clean = false;
        let (lo, hi) = (r.lo, r.hi);
        let local: BTreeMap<Id, Record> = self.store.range(lo, hi).into_iter().collect();
        let remote: BTreeMap<Id, Version> = remote
            .into_iter()
            .filter(|(k, _)| in_open_closed(k, &lo, &hi))
            .collect();
        let pull: Vec<Id> = remote
            .iter()
            .filter(|(k, v)| local.get(k).is_none_or(|l| l.version < **v))
            .map(|(k, _)| *k)
            .collect();
        let push: Vec<(Id, Record)> = local
            .iter()
            .filter(|(k, l)| remote.get(k).is_none_or(|v| *v < l.version))
            .map(|(k, l)| (*k, l.clone()))
            .collect();
        if !pull.is_empty() {
            let req = self.fresh();
            self.pending.insert(req, Pending::Fetch { round });
            self.rounds
                .get_mut(&round)
                .expect("round")
                .waiting
                .insert(req);
            self.send(to.clone(), DataMsg::Fetch { req, ids: pull });
        }
        if !push.is_empty() {
            let req = self.fresh();
            self.pending.insert(req, Pending::Push { round });
            self.rounds
                .get_mut(&round)
                .expect("round")
                .waiting
                .insert(req);
            self.stats.records_pushed += push.len() as u64;
            self.stats.records_repaired += push.len() as u64;
            let epoch = self.epoch_of(&to);
            self.send(
                to,
                DataMsg::Replicate {
                    req,
                    records: push,
                    epoch,
                },
            );
        }
    }

    /// One request of a round finished (`req == 0`: just check completion).
    fn round_reply(&mut self, round: u64, req: u64) {
        let Some(r) = self.rounds.get_mut(&round) else {
            return;
        };
        r.waiting.remove(&req);
        if !r.waiting.is_empty() {
            return;
        }
        let r = self.rounds.remove(&round).expect("round");
        if !r.clean {
            return;
        }
        // Every target confirmed identical, durable copies of the range.
        let Some(v) = self
            .views
            .iter()
            .find(|v| v.id == r.vnode && v.joined)
            .cloned()
        else {
            return;
        };
        if v.pred.as_ref().map(|p| p.id) != Some(r.lo) {
            return; // the range changed meanwhile
        }
        self.stats.rounds_confirmed += 1;
        self.ready.insert(v.id);
        let targets = replica_targets(&self.addr, &v.succs, self.cfg.copies);
        self.confirmed.insert(v.id, (r.lo, targets.clone()));
        // Identical copies everywhere: if one was complete, all are.
        if r.vouched {
            self.covered.insert(&self.cfg.space, r.lo, r.hi);
            for t in &targets {
                self.send(t.clone(), DataMsg::Covered { lo: r.lo, hi: r.hi });
            }
        }
        // Garbage collection: the processes past the replica set drop the range.
        let mut seen: BTreeSet<A> = targets.iter().cloned().collect();
        seen.insert(self.addr.clone());
        let surplus: Vec<A> = v
            .succs
            .iter()
            .filter(|s| seen.insert(s.addr.clone()))
            .map(|s| s.addr.clone())
            .collect();
        for s in surplus {
            self.forget_acks(&s);
            let epoch = self.epoch_of(&s);
            self.send(
                s,
                DataMsg::Drop {
                    lo: r.lo,
                    hi: r.hi,
                    epoch,
                },
            );
        }
        // Tombstones every replica holds, past the grace period.
        let purge: Vec<(Id, Version)> = self
            .store
            .range(r.lo, r.hi)
            .into_iter()
            .filter(|(_, rec)| {
                rec.is_tombstone()
                    && (self.now.saturating_mul(1000)).saturating_sub(rec.version.stamp)
                        >= self.cfg.tombstone_grace_ms.saturating_mul(1000)
            })
            .map(|(k, rec)| (k, rec.version))
            .collect();
        if !purge.is_empty() {
            for (k, _) in &purge {
                self.store.remove(*k);
            }
            self.dirty = true;
            self.stats.tombstones_purged += purge.len() as u64;
            for t in targets {
                self.send(t, DataMsg::Purge { ids: purge.clone() });
            }
        }
    }

    /// Our ranges `(pred, n]`, or `None` while any is unknown.
    fn own_ranges(&self) -> Option<Vec<(Id, Id)>> {
        let mut keep = Vec::new();
        for v in self.views.iter().filter(|v| v.joined) {
            keep.push((v.pred.as_ref()?.id, v.id));
        }
        Some(keep)
    }

    /// Drops our surplus copies of `(lo, hi]` (never in our own ranges) after
    /// handing them back to the owner at `owner`: a surplus copy may be newer
    /// than the owner's (written in a ring that a partition split off), and
    /// the owner keeps the newer of the two. Each copy is removed once the
    /// owner acknowledged it, unless it changed meanwhile.
    fn drop_range(&mut self, owner: A, lo: Id, hi: Id, epoch: u64) {
        // Never drop while unsure of our own ranges.
        let Some(keep) = self.own_ranges() else {
            return;
        };
        // What we held completely goes back to the owner with the copies:
        // the owner then holds it completely (a range handed over while its
        // new owner's successor had not yet got it itself). Only when none of
        // our own ranges overlaps it, since those copies stay here.
        let space = self.cfg.space;
        let cover = (owner != self.addr
            && self.covered.covers(&space, lo, hi)
            && !keep
                .iter()
                .any(|(a, b)| in_open_closed(b, &lo, &hi) || in_open_closed(&hi, a, b)))
        .then_some((lo, hi));
        if owner != self.addr {
            // The copies there are going: no longer complete (own ranges
            // excepted, which are kept).
            let kept: Vec<(Id, Id)> = keep
                .iter()
                .filter(|(a, b)| self.covered.covers(&space, *a, *b))
                .cloned()
                .collect();
            self.covered.remove(&space, lo, hi);
            for (a, b) in kept {
                self.covered.insert(&space, a, b);
            }
        }
        let records: Vec<(Id, Record)> = self
            .store
            .range(lo, hi)
            .into_iter()
            .filter(|(k, _)| !keep.iter().any(|(a, b)| in_open_closed(k, a, b)))
            .collect();
        if owner == self.addr {
            return;
        }
        if records.is_empty() {
            if let Some((lo, hi)) = cover {
                self.send(owner, DataMsg::Covered { lo, hi });
            }
            return;
        }
        let versions = records.iter().map(|(k, r)| (*k, r.version)).collect();
        let req = self.fresh();
        self.pending.insert(
            req,
            Pending::HandBack {
                versions,
                owner: owner.clone(),
                epoch,
                cover,
            },
        );
        self.send(owner, DataMsg::HandBack { req, records });
    }

    fn handed_back(&mut self, versions: Vec<(Id, Version)>, owner: A, epoch: u64) {
        let Some(keep) = self.own_ranges() else {
            return;
        };
        for (k, v) in versions {
            if !keep.iter().any(|(a, b)| in_open_closed(&k, a, b))
                && self
                    .replicated_epoch
                    .get(&k)
                    .is_none_or(|(a, e)| *a != owner || *e < epoch)
                && self.store.get(k).is_some_and(|r| r.version == v)
            {
                self.store.remove(k);
                self.dirty = true;
            }
        }
    }

    // ----- helpers ------------------------------------------------------------

    /// Merges records offered by a node that is not the owner (a pull from a
    /// replica, a hand-back from a surplus holder), refusing the resurrection
    /// of purged deletes: a record older than the grace period, for a key this
    /// owner does not hold, in a range it has confirmed unchanged since (so it
    /// held every key of the range its replica set held), can only be a copy
    /// that missed a delete whose tombstone is purged. Returns the refused
    /// `(id, version)`s, for the sender to remove.
    fn merge_guarded(&mut self, records: Vec<(Id, Record)>) -> Vec<(Id, Version)> {
        let horizon = self
            .now
            .saturating_sub(self.cfg.tombstone_grace_ms)
            .saturating_mul(1000);
        let mut refused = Vec::new();
        let mut ok = Vec::new();
        for (k, r) in records {
            let stale = r.version.stamp < horizon && self.store.get(k).is_none();
            let complete = stale
                && self.serving_owner(k).is_some_and(|v| {
                    let lo = self
                        .views
                        .iter()
                        .find(|x| x.id == v)
                        .and_then(|x| x.pred.as_ref())
                        .map(|p| p.id);
                    lo.is_some() && self.confirmed.get(&v).map(|c| c.0) == lo
                });
            if complete {
                refused.push((k, r.version));
            } else {
                ok.push((k, r));
            }
        }
        self.merge_all(ok);
        refused
    }

    fn merge_all(&mut self, records: Vec<(Id, Record)>) {
        for (k, r) in records {
            if self.valid(k, &r) && r.newer_than(self.store.get(k).as_ref()) {
                self.store.put(k, r);
                self.dirty = true;
            }
        }
    }

    fn fresh(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn set_timer(&mut self, timer: DataTimer, at: Time) {
        self.out.push_back(DataCommand::SetTimer { timer, at });
    }

    fn send(&mut self, to: A, msg: DataMsg) {
        let req = match &msg {
            DataMsg::Read { req, .. }
            | DataMsg::Write { req, .. }
            | DataMsg::Replicate { req, .. }
            | DataMsg::Digest { req, .. }
            | DataMsg::Fetch { req, .. } => Some(*req),
            _ => None,
        };
        if let Some(req) = req
            && !matches!(msg, DataMsg::Write { .. })
        {
            self.set_timer(
                DataTimer::Request(req),
                self.now + self.cfg.request_timeout_ms,
            );
        }
        self.out.push_back(DataCommand::Send { to, msg });
    }

    /// Sends `msg` once everything stored so far is durable.
    fn send_durable(&mut self, to: A, msg: DataMsg) {
        self.hold(Held::Send { to, msg });
    }

    /// Lets out what waited for durability: a message, or the local
    /// durability of a write.
    fn release(&mut self, h: Held<A>) {
        match h {
            Held::Send { to, msg } => self.send(to, msg),
            Held::LocalDurable(wid) => {
                if let Some(w) = self.writes.get_mut(&wid) {
                    w.local_durable = true;
                }
                self.check_write(wid);
            }
        }
    }

    fn hold(&mut self, h: Held<A>) {
        let token = if self.dirty {
            self.last_token + 1
        } else {
            self.last_token
        };
        if token <= self.persisted_upto {
            self.release(h);
        } else {
            self.held.push((token, h));
        }
    }

    /// Ends an input: asks for durability of what it changed.
    fn flush(&mut self) {
        if self.dirty {
            self.dirty = false;
            self.last_token += 1;
            self.out.push_back(DataCommand::Persist {
                token: self.last_token,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, addr: u32) -> NodeRef<u32> {
        NodeRef {
            id: Id::from_u64(id),
            addr,
        }
    }

    /// A name whose id (8-bit ring) lies in `(lo, hi]`.
    fn name_in(space: IdSpace, lo: u64, hi: u64, skip: usize) -> (Id, Vec<u8>) {
        (0..)
            .map(|i| format!("k{i}").into_bytes())
            .map(|n| (space.hash(&n), n))
            .filter(|(k, _)| in_open_closed(k, &Id::from_u64(lo), &Id::from_u64(hi)))
            .nth(skip)
            .expect("some name hashes there")
    }

    fn sends(p: &mut DataPlane<u32, MemStore>) -> Vec<(u32, DataMsg)> {
        let mut out = Vec::new();
        while let Some(c) = p.poll_command() {
            if let DataCommand::Send { to, msg } = c {
                out.push((to, msg));
            }
        }
        out
    }

    /// An owner (id 100, range (50, 100], replicas at processes 2 and 3)
    /// whose anti-entropy round confirmed both replicas.
    fn confirmed_owner(space: IdSpace, now: Time) -> DataPlane<u32, MemStore> {
        let mut cfg = DataConfig::new(space);
        cfg.tombstone_grace_ms = 1000;
        let mut p = DataPlane::new(cfg, 1u32, MemStore::new(), 1);
        p.set_view(
            now,
            vec![VnodeView {
                id: Id::from_u64(100),
                pred: Some(node(50, 0)),
                succs: vec![node(200, 2), node(300, 3), node(400, 4)],
                joined: true,
            }],
        );
        p.handle_timer(now, DataTimer::Sync);
        for (to, msg) in sends(&mut p) {
            if let DataMsg::Digest { req, .. } = msg {
                p.handle_message(
                    now,
                    to,
                    DataMsg::DigestReply {
                        req,
                        versions: None,
                        covers: true,
                    },
                );
            }
        }
        assert!(p.is_ready(Id::from_u64(100)), "round confirmed");
        p
    }

    fn record(name: &[u8], value: Option<&[u8]>, stamp_ms: u64) -> Record {
        Record {
            name: name.to_vec(),
            value: value.map(|v| v.to_vec()),
            version: Version {
                stamp: stamp_ms * 1000,
                writer: Id::from_u64(7),
            },
            author: None,
        }
    }

    #[test]
    fn merge_keeps_the_highest_version_whatever_the_order() {
        let a = record(b"k", Some(b"1"), 5);
        let b = record(b"k", None, 6);
        assert!(b.newer_than(Some(&a)));
        assert!(!a.newer_than(Some(&b)));
        assert!(!a.newer_than(Some(&a)), "a repeated record changes nothing");
        assert!(a.newer_than(None));
    }

    #[test]
    fn replica_targets_are_the_first_other_processes_k_minus_one_of_them() {
        let succs = vec![node(2, 1), node(3, 2), node(4, 2), node(5, 3), node(6, 4)];
        assert_eq!(replica_targets(&1, &succs, 3), vec![2, 3]);
        assert_eq!(replica_targets(&1, &succs, 1), Vec::<u32>::new());
        assert_eq!(replica_targets(&9, &succs, 9), vec![1, 2, 3, 4]);
    }

    /// The resurrection guard: a surplus copy older than the grace period,
    /// for a key the owner does not hold in a range it has confirmed, is a
    /// copy that missed a purged delete, and is refused; a recent one (a write
    /// from a ring a partition split off) is kept.
    #[test]
    fn an_owner_refuses_an_old_handed_back_copy_of_a_key_it_no_longer_holds() {
        let space = IdSpace::new(8).unwrap();
        let now = 100_000;
        let mut p = confirmed_owner(space, now);
        let (old_k, old_n) = name_in(space, 50, 100, 0);
        let (new_k, new_n) = name_in(space, 50, 100, 1);
        p.handle_message(
            now,
            4,
            DataMsg::HandBack {
                req: 1,
                records: vec![
                    (old_k, record(&old_n, Some(b"stale"), now - 5_000)),
                    (new_k, record(&new_n, Some(b"fresh"), now - 10)),
                ],
            },
        );
        assert_eq!(p.store().get(old_k), None, "a purged delete came back");
        assert_eq!(
            p.store().get(new_k).and_then(|r| r.value),
            Some(b"fresh".to_vec())
        );
    }

    /// A record filed under an id that is not the hash of its name is
    /// ignored, whatever its version.
    #[test]
    fn a_record_under_the_wrong_id_is_never_stored() {
        let space = IdSpace::new(8).unwrap();
        let mut p = confirmed_owner(space, 10);
        let (k, _) = name_in(space, 50, 100, 0);
        p.handle_message(
            10,
            2,
            DataMsg::Replicate {
                req: 1,
                records: vec![(k, record(b"not-k", Some(b"x"), u64::MAX / 2000))],
                epoch: 0,
            },
        );
        assert_eq!(p.store().get(k), None);
    }

    /// An owner (id 100, range (50, 100]) whose round ran with replicas
    /// answering `covers`: `false` is the owner left after every node that
    /// held its range failed.
    fn owner_after_round(space: IdSpace, covers: bool) -> DataPlane<u32, MemStore> {
        let mut p = DataPlane::new(DataConfig::new(space), 1u32, MemStore::new(), 1);
        p.set_view(
            0,
            vec![VnodeView {
                id: Id::from_u64(100),
                pred: Some(node(50, 0)),
                succs: vec![node(200, 2), node(300, 3)],
                joined: true,
            }],
        );
        p.handle_timer(0, DataTimer::Sync);
        for (to, msg) in sends(&mut p) {
            if let DataMsg::Digest { req, .. } = msg {
                let reply = DataMsg::DigestReply {
                    req,
                    versions: None,
                    covers,
                };
                p.handle_message(0, to, reply);
            }
        }
        p
    }

    /// How `p` answers a read of `key` from process 9.
    fn answer(p: &mut DataPlane<u32, MemStore>, key: Id) -> ReadRole {
        sends(p);
        p.handle_message(10, 9, DataMsg::Read { req: 77, key });
        p.persisted(10, u64::MAX);
        sends(p)
            .into_iter()
            .find_map(|(to, m)| match m {
                DataMsg::ReadReply {
                    role, record: None, ..
                } if to == 9 => Some(role),
                _ => None,
            })
            .expect("a reply")
    }

    /// A client read at process 1 of `key`, whose candidates 2, 3, 4 answer
    /// with `roles` and no record.
    fn read_with_answers(roles: [ReadRole; 3]) -> Result<Option<Record>, DataError> {
        let space = IdSpace::new(8).unwrap();
        let mut p = DataPlane::new(DataConfig::new(space), 1u32, MemStore::new(), 1);
        let op = p.read(0, Id::from_u64(60));
        p.routed(0, op, vec![2, 3, 4]);
        // The owner is slow: after read_try_ms every candidate is asked.
        p.handle_timer(p.config().read_try_ms, DataTimer::Op { op, attempt: 1 });
        let reads: Vec<(u32, u64)> = sends(&mut p)
            .into_iter()
            .filter_map(|(to, m)| match m {
                DataMsg::Read { req, .. } => Some((to, req)),
                _ => None,
            })
            .collect();
        assert_eq!(reads.len(), 3);
        for ((to, req), role) in reads.into_iter().zip(roles) {
            let reply = DataMsg::ReadReply {
                req,
                role,
                record: None,
            };
            p.handle_message(1, to, reply);
        }
        std::iter::from_fn(|| p.poll_command())
            .find_map(|c| match c {
                DataCommand::ReadDone { result, .. } => Some(result),
                _ => None,
            })
            .expect("the read finished")
    }

    /// Three adjacent processes holding every copy of a range fail; the
    /// next one owns the range with no copy of it. Its missing keys are an
    /// error, not nil: it cannot tell a key nobody wrote from a lost one.
    #[test]
    fn an_owner_without_a_complete_copy_answers_maybe_lost_not_nil() {
        let space = IdSpace::new(8).unwrap();
        let (k, _) = name_in(space, 50, 100, 0);
        let mut p = owner_after_round(space, false);
        assert!(p.is_ready(Id::from_u64(100)), "the round itself was clean");
        assert_eq!(answer(&mut p, k), ReadRole::Unsure);
        use ReadRole::*;
        assert_eq!(
            read_with_answers([Unsure, Copy, Copy]),
            Err(DataError::MaybeLost)
        );
        assert_eq!(read_with_answers([Owner, Copy, Copy]), Ok(None));
        assert_eq!(read_with_answers([Copy, Copy, Copy]), Ok(None));
    }

    /// The same owner after a round that a complete copy vouched for: a
    /// missing key is a key nobody wrote, and the replicas are told they now
    /// hold complete copies.
    #[test]
    fn after_a_round_a_complete_copy_vouched_for_a_missing_key_is_nil() {
        let space = IdSpace::new(8).unwrap();
        let (k, _) = name_in(space, 50, 100, 0);
        let mut p = owner_after_round(space, true);
        let covered: Vec<u32> = sends(&mut p)
            .into_iter()
            .filter(|(_, m)| matches!(m, DataMsg::Covered { .. }))
            .map(|(to, _)| to)
            .collect();
        assert_eq!(covered, vec![2, 3], "the replicas hear they are complete");
        assert_eq!(answer(&mut p, k), ReadRole::Owner);
        let mut fresh = owner_after_round(space, false);
        fresh.handle_message(
            0,
            2,
            DataMsg::Covered {
                lo: Id::from_u64(50),
                hi: Id::from_u64(100),
            },
        );
        assert_eq!(answer(&mut fresh, k), ReadRole::Owner);
    }
}
