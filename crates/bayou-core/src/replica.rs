//! One Bayou server: its write log, version vector, CSN, logical clock and the
//! two views of its database.
//!
//! # The log and the database
//!
//! The log is the truth ([T95 §5]): committed writes ordered by CSN, then
//! tentative writes ordered by `<accept-stamp, server-id>`. The database is the
//! result of executing the log in that order. A replica keeps two databases:
//!
//! * the **committed view**, the committed prefix executed in CSN order. It
//!   only ever moves forward, one newly committed write at a time;
//! * the **full view**, the committed view followed by every tentative write.
//!   The tentative part is executed with an undo record per write (the Undo
//!   Log of [T95 §7]).
//!
//! The two views are one database in memory, not two: [`Db`] is a persistent
//! map. While no tentative write is executed the full view is simply an O(1)
//! clone of the committed view, taken again after every commit. Otherwise,
//! at the end of a batch, once at least as many writes committed as there
//! are executed tentative writes, the full view is rebuilt as an O(1) clone
//! of the committed view with the keys of the executed tentative writes
//! carried over from the old full view. The two then share
//! every node but those on the paths to those keys, so the full view costs
//! memory in proportion to the tentative writes, not to the database. A
//! checkpoint, and a full-state transfer, take the committed view the same
//! way, by an O(1) clone.
//!
//! When writes arrive that sort before tentative writes already executed, the
//! replica undoes the executed writes back to the earliest insertion point and
//! redoes them later. Redo is lazy: it runs once at the end of a client write
//! or an anti-entropy batch, so one session rolls back at most once
//! ([P97 §3.5]). A newly committed write moves in front of every tentative one;
//! when it is the first tentative write already (the usual case, since the
//! primary commits in its log order) nothing is undone at all.
//!
//! # Clocks
//!
//! A client write gets `stamp = max(physical clock reading, logical clock + 1)`
//! and the logical clock becomes that stamp; a write received from a peer sets
//! `logical clock = max(logical clock, its stamp)` ([T95 Fig. 5]). The logical
//! clock therefore exceeds every stamp the server holds, so a new write sorts
//! after everything its server knew when it accepted it: the tentative order
//! respects causality, and so does the primary, which commits in that order.
//!
//! # Signed writes
//!
//! With an authority set ([`Replica::set_authority`], [`crate::auth`]) a
//! replica signs the writes its clients submit, verifies every write it
//! receives before a chunk applies, and executes a write whose author may
//! not write a key it changes as a no-op (`NOPERM`). Without one (an open
//! cluster) none of this costs anything: received items are applied as they
//! stream in, as before.
//!
//! # Persistence contract
//!
//! Every change to the log is also queued as an [`Item`] for stable storage;
//! [`Replica::take_persist`] drains the queue. A driver must make those items
//! durable **before** it acknowledges a client write or sends anything this
//! replica produced afterwards (anti-entropy items, replies). Recovery replays
//! the durable items in order ([`Replica::recover`]). Because nothing leaves a
//! server before it is durable, a crash can lose only writes and commits that
//! nobody else has seen, and a primary can never hand out one CSN twice.

use std::cmp::Reverse;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::auth::{ForgedWrite, Signature, WriteAuthority};
use crate::id::{Csn, ServerId, Stamp, WriteId};
use crate::member::{self, Member, MemberError, MemberOp};
use crate::op::{Db, Op, Undo};
use crate::script::Outcome;
use crate::session::{Checkpoint, Chunk, Resume, Snapshot, SnapshotPart};
use crate::vv::VersionVector;

/// A write in the log: its name, its update, who submitted it and the
/// accepting server's signature (see [`crate::auth`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// `<accept-stamp, server-id>`.
    pub id: WriteId,
    /// What the write does.
    pub op: Op,
    /// The user who submitted it; `None` on an open server.
    pub author: Option<Arc<str>>,
    /// The accepting server's signature over id, author and op; `None`
    /// where writes are not signed.
    pub signature: Option<Signature>,
}

impl Write {
    /// An unsigned write with no author (an open cluster's).
    pub fn new(id: WriteId, op: Op) -> Write {
        Write {
            id,
            op,
            author: None,
            signature: None,
        }
    }

    /// The same write, submitted by `author`.
    pub fn by(mut self, author: Option<Arc<str>>) -> Write {
        self.author = author;
        self
    }

    /// A rough size in bytes (key, value, id, author, signature and
    /// framing), for retention limits and frame sizes.
    pub fn approx_size(&self) -> usize {
        self.op.approx_size()
            + self.id.server.as_str().len()
            + 24
            + self.author.as_ref().map_or(0, |a| a.len() + 16)
            + if self.signature.is_some() { 72 } else { 0 }
    }
}

impl fmt::Debug for Write {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.id, self.op)?;
        if let Some(a) = &self.author {
            write!(f, " by {a}")?;
        }
        Ok(())
    }
}

/// Formats a log entry in the slides' notation, `CSN:stamp:server op`, with
/// `∞` for a tentative write: `∞:5:B W(Z,8)`, `6:13:B D(Y)`. A write with an
/// author says so at the end: `∞:5:B W(Z,8) by alice`.
pub fn format_entry(csn: Option<Csn>, write: &Write) -> String {
    let mut s = match csn {
        Some(c) => format!("{c}:{}:{} {}", write.id.stamp, write.id.server, write.op),
        None => format!("∞:{}:{} {}", write.id.stamp, write.id.server, write.op),
    };
    if let Some(a) = &write.author {
        s.push_str(" by ");
        s.push_str(a);
    }
    s
}

/// Formats a log entry as [`format_entry`] does and, for a Bayou write
/// (dependency check and merge procedure), appends what its latest execution
/// did: `∞:20:B MEETING(budget) [merged]`.
pub fn format_entry_with_outcome(csn: Option<Csn>, write: &Write, outcome: &Outcome) -> String {
    match &write.op {
        Op::Bayou(_) => format!("{} [{outcome}]", format_entry(csn, write)),
        // A counter that failed (not an integer, overflow) says so.
        _ if *outcome != Outcome::Applied => format!("{} [{outcome}]", format_entry(csn, write)),
        _ => format_entry(csn, write),
    }
}

/// One unit of anti-entropy, and of persistence: a write entering the log, or
/// a commit notification for a write already there ([P97 Fig. 2]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    /// A write the receiver lacks; `csn` is set when it is already committed.
    Write {
        /// The write.
        write: Write,
        /// Its CSN, or `None` while tentative.
        csn: Option<Csn>,
    },
    /// `<stamp, server, CSN>`: the receiver holds this write tentatively and
    /// learns that it committed.
    Commit {
        /// The write that committed.
        id: WriteId,
        /// The CSN the primary gave it.
        csn: Csn,
    },
}

impl Item {
    /// A rough size in bytes on the wire.
    pub fn approx_size(&self) -> usize {
        match self {
            Item::Write { write, .. } => write.approx_size(),
            Item::Commit { id, .. } => id.server.as_str().len() + 24,
        }
    }
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Item::Write { write, csn } => f.write_str(&format_entry(*csn, write)),
            Item::Commit { id, csn } => write!(f, "commit {id} as {csn}"),
        }
    }
}

/// What a receiver tells a sender at the start of anti-entropy: its version
/// vector and its highest CSN ([P97 Fig. 2]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The receiver's version vector.
    pub vv: VersionVector,
    /// The highest CSN the receiver knows.
    pub csn: Csn,
    /// How far the receiver got into a full-state transfer that was cut off.
    pub resume: Option<Resume>,
}

/// Whether this server commits writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// An ordinary replica: it never assigns CSNs.
    Secondary,
    /// The one server that assigns CSNs ([T95 §6]).
    Primary {
        /// Commit every write as soon as the primary holds it (the normal
        /// mode); otherwise only on [`Replica::commit_all`].
        autocommit: bool,
    },
}

/// Which database a read sees ([T95 §7]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum View {
    /// Only committed writes.
    Committed,
    /// Committed writes, then tentative ones.
    Full,
}

/// Where a write stands at one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStatus {
    /// The server does not hold the write.
    Unknown,
    /// Held, not yet committed.
    Tentative,
    /// Held and committed with this CSN.
    Committed(Csn),
    /// Committed, and already discarded from the log by truncation: its CSN
    /// is at most the OSN and its effect is in the checkpoint ([P97 §3.3]).
    Truncated,
}

/// An anti-entropy item that breaks the protocol. The items before it were
/// applied; the replica stays valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Committed writes must arrive in CSN order with no gap.
    #[error("commit of {id} as CSN {got} arrived, but the next CSN here is {expected}")]
    CommitGap {
        /// The write.
        id: WriteId,
        /// The next CSN this replica can accept.
        expected: Csn,
        /// The CSN that arrived.
        got: Csn,
    },
    /// A CSN this replica already knows was given to another write.
    #[error("CSN {csn} is {held} here but {got} was announced with it")]
    ConflictingCommit {
        /// The CSN.
        csn: Csn,
        /// The write committed with it here.
        held: WriteId,
        /// The write announced with it.
        got: WriteId,
    },
    /// A commit notification for a write this replica does not hold.
    #[error("commit notification for {0}, which is not held here")]
    UnknownWrite(WriteId),
    /// A commit for a write this replica already holds as committed elsewhere in the log.
    #[error("{0} is covered by the version vector but not held tentatively")]
    AlreadyCommitted(WriteId),
    /// Someone else assigned a CSN the primary has not: two primaries.
    #[error("the primary received CSN {0} that it never assigned")]
    ForeignCommit(Csn),
    /// A write whose signature does not verify ([`crate::auth`]): a peer or
    /// a bundle changed it on the way, or forged it. Nothing of the chunk
    /// that carried it was applied.
    #[error("forged write {id} refused: {reason}")]
    Forged {
        /// The write's id as received.
        id: WriteId,
        /// Why it was refused.
        reason: ForgedWrite,
    },
    /// The session was computed against a state this replica no longer has
    /// (it lost writes in a crash since): its items may skip writes, which
    /// would break the prefix property, so none are applied.
    #[error(
        "stale session: it was computed for versions {base:?} (CSN {base_csn}) but this replica now holds {now:?} (CSN {now_csn})"
    )]
    StaleSession {
        /// The receiver's summary the session was computed from.
        base: VersionVector,
        /// Its CSN then.
        base_csn: Csn,
        /// The receiver's version vector now.
        now: VersionVector,
        /// Its CSN now.
        now_csn: Csn,
    },
    /// A full-state transfer part that does not continue the transfer this
    /// replica is staging (a part was lost or reordered).
    #[error("snapshot part at CSN {csn} does not continue the staged transfer ({staged})")]
    SnapshotGap {
        /// The part's CSN.
        csn: Csn,
        /// What this replica has staged.
        staged: String,
    },
    /// A checkpoint that reflects more commits than the durable log holds:
    /// the store lost log records the checkpoint depends on.
    #[error("the checkpoint reflects {checkpoint} commits but the log replays only to CSN {log}")]
    CheckpointAhead {
        /// The checkpoint's CSN.
        checkpoint: Csn,
        /// The CSN the retained log reaches.
        log: Csn,
    },
    /// A snapshot whose keys are not in strictly increasing order.
    #[error("snapshot part at CSN {0} has keys out of order")]
    SnapshotOrder(Csn),
    /// A snapshot that does not reflect a write this replica holds as
    /// committed below the snapshot's CSN: two committed orders.
    #[error("snapshot at CSN {csn} does not reflect {id}, committed here as CSN {held}")]
    SnapshotConflict {
        /// The snapshot's CSN.
        csn: Csn,
        /// The write.
        id: WriteId,
        /// Its CSN here.
        held: Csn,
    },
}

/// Why a commit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// Only the primary commits.
    #[error("{0} is not the primary")]
    NotPrimary(ServerId),
}

/// What one call to [`Replica::receive`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiveReport {
    /// Writes new to this replica.
    pub new_writes: usize,
    /// Writes this replica held tentatively and learned were committed.
    pub commits: usize,
    /// Items it already had (duplicates are ignored).
    pub duplicates: usize,
    /// Tentative writes undone to insert the new ones (redone afterwards).
    pub undone: usize,
    /// Whether a full-state transfer was installed.
    pub installed: bool,
}

/// Counters over the replica's lifetime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Tentative write executions on the full view, first runs and redos.
    pub tentative_executions: u64,
    /// Tentative writes undone.
    pub undos: u64,
    /// Tentative writes executed again after they were undone (or after a
    /// full-state install reset the full view under them).
    pub redos: u64,
    /// Writes executed on the committed view.
    pub commit_executions: u64,
}

/// The sizes of a replica's internal collections
/// ([`Replica::memory_report`]): what a long-running server must keep
/// bounded by its retention window, its tentative writes and its database.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryReport {
    /// Keys in the committed view.
    pub committed_keys: usize,
    /// Keys in the full view (shared with the committed view but for the
    /// keys of executed tentative writes).
    pub full_keys: usize,
    /// Retained committed writes.
    pub retained_writes: usize,
    /// Tentative writes.
    pub tentative_writes: usize,
    /// Servers with tentative writes in the per-server stamp index.
    pub tentative_servers: usize,
    /// Tentative writes executed on the full view, with undo records.
    pub executed: usize,
    /// Writes whose latest outcome is remembered (not plain `Applied`).
    pub outcomes: usize,
    /// Keys changed since the last checkpoint issued.
    pub dirty_keys: usize,
    /// Items queued for persistence.
    pub unpersisted_items: usize,
    /// Entries in the version vector.
    pub vv_entries: usize,
}

/// Checkpoints come at least every `keys / CHECKPOINT_DB_FRACTION` commits
/// (see [`Retention::checkpoint_every`]).
const CHECKPOINT_DB_FRACTION: u64 = 8;

/// How much committed history a replica keeps in its log ([P97 §3.3–3.4]).
/// Committed writes beyond both limits are discarded at the next
/// checkpoint; a receiver that still lacks them gets a full-state transfer.
/// Tentative writes are never discarded ([P97 §5.2]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Keep at most this many committed writes.
    pub writes: u64,
    /// Keep at most about this many bytes of committed writes.
    pub bytes: u64,
    /// Take a checkpoint once this many writes committed since the last
    /// one, or an eighth of the committed database's key count if larger:
    /// a checkpoint writes only the keys changed since the previous one, and
    /// hands the store the committed database as an O(1) clone that shares
    /// its nodes, but while the store holds it every change to the
    /// committed view copies a path of that map.
    pub checkpoint_every: u64,
}

impl Retention {
    /// Keep every committed write; checkpoint as usual. The simulator's
    /// default, so the slides' logs stay whole.
    pub const KEEP_ALL: Retention = Retention {
        writes: u64::MAX,
        bytes: u64::MAX,
        checkpoint_every: 4096,
    };
}

impl Default for Retention {
    /// 50,000 committed writes or 64 MiB, checkpoint every 4,096 commits
    /// (or every database-size commits if larger).
    fn default() -> Self {
        Retention {
            writes: 50_000,
            bytes: 64 << 20,
            checkpoint_every: 4096,
        }
    }
}

/// One Bayou server. See the module documentation.
#[derive(Clone)]
pub struct Replica {
    id: ServerId,
    role: Role,
    logical_clock: Stamp,
    vv: VersionVector,
    /// The retained committed writes: `committed[i]` has CSN `osn + i + 1`.
    committed: VecDeque<Write>,
    /// The CSN of the last discarded write (OSN, [P97 §3.3]).
    osn: Csn,
    /// The discarded writes (`O`, [P97 §3.3]).
    omitted: VersionVector,
    /// The committed writes (discarded and retained) as a version vector.
    commit_vv: VersionVector,
    /// Sum of `approx_size` over `committed`.
    retained_bytes: u64,
    retention: Retention,
    /// The CSN of the last checkpoint taken.
    checkpoint_csn: Csn,
    /// A checkpoint not yet handed to the driver.
    to_checkpoint: Option<Arc<Checkpoint>>,
    /// During recovery: committed writes up to this CSN are already in the
    /// checkpoint's database and are not executed again.
    replayed_upto: Csn,
    /// Keys of the committed database changed since the last checkpoint
    /// issued; `None` when the next checkpoint must write the whole
    /// database (none issued since this replica started, or an install).
    dirty: Option<BTreeSet<bytes::Bytes>>,
    /// The snapshot last sent in a full-state transfer, kept so a cut
    /// transfer can resume; dropped at the next checkpoint.
    snapshot_cache: Option<Arc<Snapshot>>,
    /// A full-state transfer being received: parts are staged here and
    /// installed all at once when the last arrives.
    incoming: Option<Staging>,
    tentative: BTreeMap<WriteId, Body>,
    /// Stamps of the tentative writes, per accepting server: lets a sender
    /// find the tentative writes a receiver lacks without scanning the rest.
    tentative_by_server: BTreeMap<ServerId, BTreeSet<Stamp>>,
    committed_db: Db,
    full_db: Db,
    /// Commits executed on `committed_db` since `full_db` was last rebuilt
    /// from it (`share_views`).
    commits_unshared: usize,
    /// The tentative writes executed on `full_db`, in log order: always the
    /// first `executed.len()` tentative writes. The rest await redo.
    executed: VecDeque<(WriteId, Undo)>,
    /// Tentative writes undone and not executed since: the next execution
    /// of one is a redo. At most the tentative writes.
    undone: BTreeSet<WriteId>,
    to_persist: Vec<Item>,
    /// The outcome of each Bayou write's latest execution, where it is not
    /// simply `Applied` (plain writes always are).
    outcomes: BTreeMap<WriteId, Outcome>,
    /// The tentative writes executed here at least once (an autocommitting
    /// primary commits its writes before executing them tentatively).
    ran_tentatively: BTreeSet<WriteId>,
    /// For each retained committed write whose execution at commit had
    /// another outcome than its last tentative execution here, that
    /// tentative outcome ([`Replica::changed_outcome`]). Pruned with
    /// `outcomes`, so bounded by the retained committed writes.
    changed: BTreeMap<WriteId, Outcome>,
    stats: Stats,
    /// Signs accepted writes, verifies received ones and checks authors'
    /// permissions at execution; `None` in an open cluster.
    authority: Option<Arc<dyn WriteAuthority>>,
    /// The servers whose retirement is held here ([`crate::member`]): they
    /// have no entry in `vv` and count as +∞.
    retired: BTreeSet<ServerId>,
    /// The write that created this server, where known.
    creation: Option<WriteId>,
    /// The primary the committed membership table names, cached
    /// (`refresh_membership`).
    table_primary: Option<ServerId>,
    /// Whether the committed table binds this server's name to another
    /// creation, cached (`refresh_membership`).
    name_lost: bool,
}

/// A tentative write without its id (the key of the map that holds it).
#[derive(Clone)]
struct Body {
    op: Op,
    author: Option<Arc<str>>,
    signature: Option<Signature>,
}

impl Body {
    fn into_write(self, id: WriteId) -> Write {
        Write {
            id,
            op: self.op,
            author: self.author,
            signature: self.signature,
        }
    }

    fn to_write(&self, id: &WriteId) -> Write {
        self.clone().into_write(id.clone())
    }
}

/// Executes `op` on `db` for `author`: when an authority is set, every key
/// the write changed must be one its author may write, or the write is
/// undone and fails with `NOPERM` ([T95 §8]: permission is checked again
/// wherever a write executes). Checking the keys the execution changed,
/// rather than the keys the op names, covers Bayou writes too, whose
/// updates and merge results are only known once they run.
fn execute(
    db: &mut Db,
    (id, csn): (&WriteId, Option<Csn>),
    op: &Op,
    author: Option<&Arc<str>>,
    authority: Option<&Arc<dyn WriteAuthority>>,
) -> (Undo, Outcome) {
    let (undo, outcome) = db.execute_write(id, op, csn);
    let (Some(author), Some(authority)) = (author, authority) else {
        return (undo, outcome);
    };
    let denied = undo
        .keys()
        .find(|k| !authority.may_write(author, k))
        .cloned();
    match denied {
        None => (undo, outcome),
        Some(key) => {
            // The write is a no-op, identically everywhere.
            db.undo(undo);
            let why = format!(
                "NOPERM {author} may not write {}",
                String::from_utf8_lossy(&key)
            );
            (Undo::default(), Outcome::Failed(why))
        }
    }
}

/// A full-state transfer being received.
#[derive(Clone)]
struct Staging {
    csn: Csn,
    vv: VersionVector,
    db: Db,
    last: Option<bytes::Bytes>,
}

impl fmt::Debug for Replica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.id)
            .field("vv", &self.vv)
            .field(
                "log",
                &self
                    .log()
                    .map(|(c, w)| format_entry(c, &w))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Where a change comes from, which decides whether it must be persisted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A new change (client write, anti-entropy, commit): persist it.
    Peer,
    /// Replay of this replica's own durable items: already persisted.
    Disk,
}

impl Replica {
    /// A new, empty server.
    pub fn new(id: ServerId, role: Role) -> Replica {
        Replica {
            id,
            role,
            logical_clock: 0,
            vv: VersionVector::new(),
            committed: VecDeque::new(),
            osn: 0,
            omitted: VersionVector::new(),
            commit_vv: VersionVector::new(),
            retained_bytes: 0,
            retention: Retention::KEEP_ALL,
            checkpoint_csn: 0,
            to_checkpoint: None,
            replayed_upto: 0,
            dirty: None,
            snapshot_cache: None,
            incoming: None,
            tentative: BTreeMap::new(),
            tentative_by_server: BTreeMap::new(),
            committed_db: Db::new(),
            full_db: Db::new(),
            commits_unshared: 0,
            executed: VecDeque::new(),
            undone: BTreeSet::new(),
            to_persist: Vec::new(),
            outcomes: BTreeMap::new(),
            ran_tentatively: BTreeSet::new(),
            changed: BTreeMap::new(),
            stats: Stats::default(),
            authority: None,
            retired: BTreeSet::new(),
            creation: None,
            table_primary: None,
            name_lost: false,
        }
    }

    /// Signs the writes this replica accepts from now on, verifies every
    /// write it receives, and checks authors' permissions where writes
    /// execute ([`crate::auth`]). `None` (the default) is an open cluster.
    /// Set it before writes arrive: writes already executed are not checked
    /// again until they are redone or commit.
    pub fn set_authority(&mut self, authority: Option<Arc<dyn WriteAuthority>>) {
        self.authority = authority;
    }

    /// The authority set with [`Replica::set_authority`].
    pub fn authority(&self) -> Option<&Arc<dyn WriteAuthority>> {
        self.authority.as_ref()
    }

    /// Rebuilds a server from the items it made durable, in the order they
    /// were persisted. Fails if they are not a valid history (a corrupt or
    /// foreign data directory).
    pub fn recover(
        id: ServerId,
        role: Role,
        items: impl IntoIterator<Item = Item>,
    ) -> Result<Replica, ProtocolError> {
        Replica::restore(id, role, Retention::KEEP_ALL, None, items)
    }

    /// Rebuilds a server from its durable state: the last checkpoint (if
    /// any) and the items of the retained log, in the order they were
    /// persisted. Committed writes the checkpoint already reflects are put
    /// back in the log without executing them again.
    pub fn restore(
        id: ServerId,
        role: Role,
        retention: Retention,
        checkpoint: Option<&Checkpoint>,
        items: impl IntoIterator<Item = Item>,
    ) -> Result<Replica, ProtocolError> {
        Replica::restore_owned(id, role, retention, checkpoint.cloned(), items)
    }

    /// [`Replica::restore`] from a checkpoint the caller gives up, so its
    /// database becomes the committed view without a copy (a store loading
    /// a large checkpoint would otherwise hold it twice).
    pub fn restore_owned(
        id: ServerId,
        role: Role,
        retention: Retention,
        checkpoint: Option<Checkpoint>,
        items: impl IntoIterator<Item = Item>,
    ) -> Result<Replica, ProtocolError> {
        Replica::restore_with_authority(id, role, retention, checkpoint, items, None)
    }

    /// [`Replica::restore_owned`] with an authority ([`crate::auth`]) set
    /// before the replay, so the writes it executes again are checked as
    /// they were the first time (authors' permissions). The durable items
    /// are not verified again: they were when they arrived.
    pub fn restore_with_authority(
        id: ServerId,
        role: Role,
        retention: Retention,
        checkpoint: Option<Checkpoint>,
        items: impl IntoIterator<Item = Item>,
        authority: Option<Arc<dyn WriteAuthority>>,
    ) -> Result<Replica, ProtocolError> {
        let mut r = Replica::new(id, role);
        r.authority = authority;
        r.retention = retention;
        if let Some(cp) = checkpoint {
            r.osn = cp.osn;
            r.commit_vv = cp.omitted.clone();
            r.vv = cp.omitted.clone();
            r.omitted = cp.omitted;
            r.logical_clock = cp.snapshot.vv.max_stamp();
            r.committed_db = Arc::try_unwrap(cp.snapshot.db).unwrap_or_else(|db| (*db).clone());
            r.refresh_membership();
            r.full_db = r.committed_db.clone();
            r.replayed_upto = cp.snapshot.csn;
            r.checkpoint_csn = cp.snapshot.csn;
        }
        // The store holds the checkpoint's database (or nothing): track the
        // changes the replay makes to it, for the next checkpoint.
        r.dirty = Some(BTreeSet::new());
        r.apply_items(items, Source::Disk)?;
        // Only now: a retirement the checkpoint's table records makes the
        // retiree's writes count as held, and the retained log may still
        // hold some of them (committed after the OSN) to put back.
        r.note_retirements_in_db();
        if r.csn() < r.replayed_upto {
            return Err(ProtocolError::CheckpointAhead {
                checkpoint: r.replayed_upto,
                log: r.csn(),
            });
        }
        r.replayed_upto = 0;
        // A primary that crashed between persisting a write and committing it
        // commits it now, as it would have. Those commits are new, so they are
        // queued for persistence like any other (`Source::Peer`): were they
        // not, a second crash could let the same CSN go to another write.
        r.settle(Source::Peer);
        Ok(r)
    }

    /// The sizes of the internal collections, cheap to compute: a test or an
    /// operator checks with it that nothing grows with the history.
    pub fn memory_report(&self) -> MemoryReport {
        MemoryReport {
            committed_keys: self.committed_db.len(),
            full_keys: self.full_db.len(),
            retained_writes: self.committed.len(),
            tentative_writes: self.tentative.len(),
            tentative_servers: self.tentative_by_server.len(),
            executed: self.executed.len(),
            outcomes: self.outcomes.len(),
            dirty_keys: self.dirty.as_ref().map_or(0, BTreeSet::len),
            unpersisted_items: self.to_persist.len(),
            vv_entries: self.vv.iter().count(),
        }
    }

    /// This server's id.
    pub fn id(&self) -> &ServerId {
        &self.id
    }

    /// This server's role: the one it was started with, until a handoff
    /// commits; from then on the committed membership decides
    /// ([`crate::member`]).
    pub fn role(&self) -> Role {
        if self.lost_name() {
            return Role::Secondary;
        }
        match &self.table_primary {
            None => self.role,
            Some(p) if *p == self.id => Role::Primary {
                autocommit: match self.role {
                    Role::Primary { autocommit } => autocommit,
                    Role::Secondary => true,
                },
            },
            Some(_) => Role::Secondary,
        }
    }

    /// Tells a created server which write created it (the sponsor's reply):
    /// its name is its own only while the committed table binds the name
    /// to this write ([`crate::member`]).
    pub fn set_creation(&mut self, creation: WriteId) {
        self.creation = Some(creation);
        self.refresh_membership();
    }

    /// The write that created this server, where known: the one given to
    /// [`Replica::set_creation`], or the founder's own.
    pub fn creation(&self) -> Option<&WriteId> {
        self.creation.as_ref()
    }

    /// Whether the committed table binds this server's name to another
    /// server's creation: it lost a concurrent creation of its name (or was
    /// started under a name created for another). Such a server is never
    /// the primary, whatever a handoff to its name says.
    pub fn lost_name(&self) -> bool {
        self.name_lost
    }

    /// Reads again what `role()` and `lost_name()` take from the committed
    /// membership table; called whenever the committed view changes it
    /// (a committed membership write, a checkpoint load, an install), since
    /// `role()` runs on every commit and the table is JSON in the database.
    fn refresh_membership(&mut self) {
        self.table_primary = member::primary(&self.committed_db);
        self.name_lost = match member::member(&self.committed_db, &self.id) {
            None => false,
            // Not told its creation (a static server, a founder, or a
            // driver that did not say): nothing to compare with.
            Some(m) => self.creation.as_ref().is_some_and(|c| &m.created != c),
        };
    }

    /// Whether this server is the primary.
    pub fn is_primary(&self) -> bool {
        matches!(self.role(), Role::Primary { .. })
    }

    /// The record of `server` in the membership table of `view`, if it was
    /// ever created ([`crate::member`]).
    pub fn member(&self, server: &ServerId, view: View) -> Option<Member> {
        member::member(self.db(view), server)
    }

    /// Every server of the membership table of `view`, retired ones
    /// included, in name order.
    pub fn members(&self, view: View) -> Vec<(ServerId, Member)> {
        member::members(self.db(view)).collect()
    }

    /// Whether `server`'s retirement is held here (tentative or committed,
    /// or discarded by truncation).
    pub fn is_retired(&self, server: &ServerId) -> bool {
        self.retired.contains(server)
    }

    /// Whether this server has written its retirement.
    pub fn has_retired(&self) -> bool {
        self.retired.contains(&self.id)
    }

    /// The founder (the server started as primary) records itself as the
    /// cluster's first member, reachable at `addr`. Done once, on an empty
    /// log.
    pub fn found(&mut self, clock_reading: Stamp, addr: &str) -> Result<WriteId, MemberError> {
        if !self.is_primary() {
            return Err(MemberError::NotPrimary(self.id.clone()));
        }
        let id = self.create_server(clock_reading, self.id.clone(), addr, true)?;
        self.creation = Some(id.clone());
        Ok(id)
    }

    /// Sponsors a new server ([P97 §4.3]): accepts a creation write for
    /// `server` at `addr`. Refused if the name is already bound, here, in
    /// either view. The new server may accept client writes once the
    /// creation is committed and bound to it (`member(server, Committed)`
    /// names this write).
    pub fn sponsor(
        &mut self,
        clock_reading: Stamp,
        server: ServerId,
        addr: &str,
    ) -> Result<WriteId, MemberError> {
        self.create_server(clock_reading, server, addr, false)
    }

    fn create_server(
        &mut self,
        clock_reading: Stamp,
        server: ServerId,
        addr: &str,
        itself: bool,
    ) -> Result<WriteId, MemberError> {
        if self.has_retired() {
            return Err(MemberError::Retired(self.id.clone()));
        }
        if (server == self.id) != itself {
            return Err(MemberError::Itself(server));
        }
        for view in [View::Committed, View::Full] {
            if let Some(m) = self.member(&server, view) {
                return Err(MemberError::Taken(server, m.created));
            }
        }
        if self.retired.contains(&server) || (!itself && self.vv.get(&server) > 0) {
            // A server of the cluster that was never created by a write
            // (started with a static peer list) holds this name too.
            return Err(MemberError::Taken(server.clone(), WriteId::new(0, server)));
        }
        let op = Op::Member(MemberOp::Create {
            server,
            addr: addr.to_string(),
        });
        Ok(self.client_write(clock_reading, op))
    }

    /// This server retires ([P97 §4.3]): it writes its retirement, its last
    /// write, and must accept no client write after it. The driver keeps it
    /// running until another server holds the retirement. A primary hands
    /// off first.
    pub fn retire(&mut self, clock_reading: Stamp) -> Result<WriteId, MemberError> {
        if self.has_retired() {
            return Err(MemberError::Retired(self.id.clone()));
        }
        if self.is_primary() {
            return Err(MemberError::PrimaryMustHandOff(self.id.clone()));
        }
        if self.member(&self.id, View::Full).is_none() {
            // A server started from a static peer list has no record to
            // retire (its retirement would execute as a no-op while every
            // holder dropped its entry).
            return Err(MemberError::NotMember(self.id.clone()));
        }
        let op = Op::Member(MemberOp::Retire {
            server: self.id.clone(),
        });
        Ok(self.client_write(clock_reading, op))
    }

    /// The primary hands CSN assignment to `to`, a live member in the
    /// committed view. With autocommit the handoff commits at once and this
    /// server is no longer the primary when this returns.
    pub fn handoff(&mut self, clock_reading: Stamp, to: ServerId) -> Result<WriteId, MemberError> {
        if !self.is_primary() {
            return Err(MemberError::NotPrimary(self.id.clone()));
        }
        // A write after the retirement reaches nobody: every holder of the
        // retirement counts this server as +∞ and ignores it.
        if self.has_retired() {
            return Err(MemberError::Retired(self.id.clone()));
        }
        if to == self.id {
            return Err(MemberError::Itself(to));
        }
        if !self
            .member(&to, View::Committed)
            .is_some_and(|m| m.is_live())
            || self.retired.contains(&to)
        {
            return Err(MemberError::NotMember(to));
        }
        Ok(self.client_write(clock_reading, Op::Member(MemberOp::Handoff { to })))
    }

    /// This server moved: a write records its new address for its peers
    /// (the creation write gave the first).
    pub fn set_address(
        &mut self,
        clock_reading: Stamp,
        addr: &str,
    ) -> Result<WriteId, MemberError> {
        if self.has_retired() {
            return Err(MemberError::Retired(self.id.clone()));
        }
        if self.member(&self.id, View::Full).is_none() {
            return Err(MemberError::NotMember(self.id.clone()));
        }
        let op = Op::Member(MemberOp::Address {
            server: self.id.clone(),
            addr: addr.to_string(),
        });
        Ok(self.client_write(clock_reading, op))
    }

    /// `V(server)` as `CompleteV` reads this server's own vector: +∞
    /// (`Stamp::MAX`) for a server whose retirement is held here.
    fn complete_own(&self, server: &ServerId) -> Stamp {
        if self.retired.contains(server) {
            Stamp::MAX
        } else {
            self.vv.get(server)
        }
    }

    /// Whether this server holds the write `id`.
    fn holds(&self, id: &WriteId) -> bool {
        id.stamp <= self.complete_own(&id.server)
    }

    /// The version vector with +∞ for every retired server held here: what
    /// a session guarantee or a session's base is compared with.
    pub fn complete_vv(&self) -> std::borrow::Cow<'_, VersionVector> {
        if self.retired.is_empty() {
            return std::borrow::Cow::Borrowed(&self.vv);
        }
        let mut vv = self.vv.clone();
        for s in &self.retired {
            vv.advance(&WriteId::new(Stamp::MAX, s.clone()));
        }
        std::borrow::Cow::Owned(vv)
    }

    /// `CompleteV(summary, server)` ([P97 §4.3]): the receiver's entry when
    /// its vector has one; +∞ when it must have seen the server retire,
    /// because the retirement committed at or below its CSN or because it
    /// holds the server's creation (whose entry only a retirement removes,
    /// checked recursively through the sponsor); 0 otherwise.
    fn complete_for(&self, summary: &Summary, server: &ServerId, depth: usize) -> Stamp {
        if let Some(t) = summary.vv.entry(server) {
            return t;
        }
        let Some(m) = member::member(&self.committed_db, server) else {
            return 0;
        };
        if m.retired_csn.is_some_and(|c| c <= summary.csn) {
            return Stamp::MAX;
        }
        if &m.created.server != server
            && depth < 64
            && m.created.stamp <= self.complete_for(summary, &m.created.server, depth + 1)
        {
            return Stamp::MAX;
        }
        0
    }

    /// Whether a receiver with `summary` holds the write `id`.
    fn summary_covers(&self, summary: &Summary, id: &WriteId) -> bool {
        id.stamp <= self.complete_for(summary, &id.server, 0)
    }

    /// The membership effects of holding a write ([P97 §4.3]): a creation
    /// adds an entry for the new server to the version vector, a retirement
    /// removes the retiree's.
    fn note_membership(&mut self, id: &WriteId, op: &Op) {
        match op {
            Op::Member(MemberOp::Create { server, .. }) if !self.retired.contains(server) => {
                self.vv.ensure(server);
            }
            Op::Member(MemberOp::Retire { server }) if &id.server == server => {
                self.retired.insert(server.clone());
                self.vv.remove(server);
            }
            _ => {}
        }
    }

    /// After a checkpoint load or a full-state install: the retirements the
    /// committed membership table records are held, their entries go; the
    /// creations it records are held too, so every live member has an
    /// entry (0 if none of its writes is held: the checkpoint's vector,
    /// made of committed writes, lacks one), else `CompleteV` would read
    /// its absence as a retirement.
    fn note_retirements_in_db(&mut self) {
        let table: Vec<(ServerId, bool)> = member::members(&self.committed_db)
            .map(|(s, m)| (s, m.retired.is_some()))
            .collect();
        for (s, retired) in table {
            if retired {
                self.vv.remove(&s);
                self.retired.insert(s);
            } else if !self.retired.contains(&s) {
                self.vv.ensure(&s);
            }
        }
        // A retirement held here but not yet in the table (tentative, or
        // committed after the snapshot) keeps its entry out too: the
        // snapshot's vector, merged in, may carry one.
        for s in &self.retired {
            self.vv.remove(s);
        }
    }

    /// The logical clock: at least every stamp held.
    pub fn logical_clock(&self) -> Stamp {
        self.logical_clock
    }

    /// The version vector.
    pub fn vv(&self) -> &VersionVector {
        &self.vv
    }

    /// The highest CSN known (0 when nothing is committed).
    pub fn csn(&self) -> Csn {
        self.osn + self.committed.len() as Csn
    }

    /// The CSN of the last write discarded by truncation (OSN; 0 if none).
    pub fn osn(&self) -> Csn {
        self.osn
    }

    /// The writes discarded by truncation (the omitted vector `O`).
    pub fn omitted(&self) -> &VersionVector {
        &self.omitted
    }

    /// The committed writes (discarded and retained) as a version vector.
    pub fn commit_vv(&self) -> &VersionVector {
        &self.commit_vv
    }

    /// How many committed writes the log retains.
    pub fn retained_len(&self) -> usize {
        self.committed.len()
    }

    /// About how many bytes the retained committed writes take.
    pub fn retained_bytes(&self) -> u64 {
        self.retained_bytes
    }

    /// The retention policy.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Sets the retention policy; it applies from the next checkpoint.
    pub fn set_retention(&mut self, retention: Retention) {
        self.retention = retention;
    }

    /// The CSN of the last checkpoint taken (0 if none).
    pub fn checkpoint_csn(&self) -> Csn {
        self.checkpoint_csn
    }

    /// The number of tentative writes.
    pub fn tentative_len(&self) -> usize {
        self.tentative.len()
    }

    /// Lifetime counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// What a receiver sends to start anti-entropy.
    pub fn summary(&self) -> Summary {
        Summary {
            vv: self.vv.clone(),
            csn: self.csn(),
            resume: self
                .incoming
                .as_ref()
                .and_then(|st| st.last.clone().map(|after| Resume { csn: st.csn, after })),
        }
    }

    /// The log in order: committed writes by CSN, then tentative writes.
    pub fn log(&self) -> impl Iterator<Item = (Option<Csn>, Write)> + '_ {
        let osn = self.osn;
        let committed = self
            .committed
            .iter()
            .enumerate()
            .map(move |(i, w)| (Some(osn + i as Csn + 1), w.clone()));
        let tentative = self
            .tentative
            .iter()
            .map(|(id, body)| (None, body.to_write(id)));
        committed.chain(tentative)
    }

    /// The committed writes, in CSN order (`[i]` has CSN `i + 1`).
    pub fn committed(
        &self,
    ) -> impl ExactSizeIterator<Item = (Csn, &Write)> + DoubleEndedIterator + '_ {
        let osn = self.osn;
        self.committed
            .iter()
            .enumerate()
            .map(move |(i, w)| (osn + i as Csn + 1, w))
    }

    /// The tentative writes, in log order.
    pub fn tentative(
        &self,
    ) -> impl ExactSizeIterator<Item = (&WriteId, &Op)> + DoubleEndedIterator + '_ {
        self.tentative.iter().map(|(id, body)| (id, &body.op))
    }

    /// The author of a tentative write held here (`None` when it has none,
    /// or is not held tentatively).
    pub fn tentative_author(&self, id: &WriteId) -> Option<&Arc<str>> {
        self.tentative.get(id).and_then(|b| b.author.as_ref())
    }

    /// The database as seen by `view`.
    pub fn db(&self, view: View) -> &Db {
        match view {
            View::Committed => &self.committed_db,
            View::Full => &self.full_db,
        }
    }

    /// Reads `key` in `view`.
    pub fn get(&self, key: &[u8], view: View) -> Option<&bytes::Bytes> {
        self.db(view).get(key)
    }

    /// Where the write `id` stands here.
    pub fn status(&self, id: &WriteId) -> WriteStatus {
        if !self.holds(id) {
            WriteStatus::Unknown
        } else if self.omitted.covers(id) {
            WriteStatus::Truncated
        } else if self.tentative.contains_key(id) {
            WriteStatus::Tentative
        } else {
            // Committed writes of one server appear in stamp order, but the
            // log as a whole is in CSN order, so search linearly from the end
            // (recent writes are the ones usually asked about).
            match self.committed.iter().rposition(|w| &w.id == id) {
                Some(i) => WriteStatus::Committed(self.osn + i as Csn + 1),
                None => WriteStatus::Unknown,
            }
        }
    }

    /// What the latest execution of write `id` did: for a Bayou write,
    /// whether its dependency check passed, its merge procedure ran, or a
    /// script failed. Plain writes, and writes not held, are `Applied`.
    pub fn outcome(&self, id: &WriteId) -> Outcome {
        self.outcomes.get(id).cloned().unwrap_or(Outcome::Applied)
    }

    /// For a retained committed write whose execution at commit had another
    /// outcome than its last tentative execution at this replica, that
    /// tentative outcome ([`Replica::outcome`] is the committed one). `None`
    /// when the outcome did not change, when the write was never executed
    /// tentatively here, or when it is not held.
    pub fn changed_outcome(&self, id: &WriteId) -> Option<&Outcome> {
        self.changed.get(id)
    }

    /// Drains the items to make durable. See the persistence contract in the
    /// module documentation.
    pub fn take_persist(&mut self) -> Vec<Item> {
        std::mem::take(&mut self.to_persist)
    }

    /// Takes the checkpoint to make durable, if one was taken since the
    /// last call (several taken meanwhile come folded into one,
    /// [`Checkpoint::merge`]). It must become durable together with the
    /// items taken with it, and replaces the stored checkpoint: the store
    /// keeps its snapshot (all of it, or the keys listed as changed), `O`
    /// and OSN, and drops the stored items it covers
    /// ([`Checkpoint::covers`]). Items and checkpoint may be applied in
    /// either order, since an item the checkpoint covers is never queued
    /// after it.
    pub fn take_checkpoint(&mut self) -> Option<Arc<Checkpoint>> {
        self.to_checkpoint.take()
    }

    /// Whether items or a checkpoint are waiting to be made durable.
    pub fn has_unpersisted(&self) -> bool {
        !self.to_persist.is_empty() || self.to_checkpoint.is_some()
    }

    /// Accepts a write from a client, given the server's physical clock
    /// reading. Returns the write's id. A primary in autocommit mode commits
    /// it at once.
    pub fn client_write(&mut self, clock_reading: Stamp, op: Op) -> WriteId {
        self.client_write_as(clock_reading, op, None)
    }

    /// Accepts a write from a client as [`Replica::client_write`] does,
    /// recording `author` as the user who submitted it, and signs it when
    /// an authority is set ([`crate::auth`]).
    pub fn client_write_as(
        &mut self,
        clock_reading: Stamp,
        op: Op,
        author: Option<Arc<str>>,
    ) -> WriteId {
        let stamp = clock_reading.max(self.logical_clock + 1);
        self.logical_clock = stamp;
        let id = WriteId::new(stamp, self.id.clone());
        let mut write = Write::new(id.clone(), op).by(author);
        if let Some(authority) = &self.authority {
            write.signature = Some(authority.sign(&write));
        }
        self.to_persist.push(Item::Write {
            write: write.clone(),
            csn: None,
        });
        self.insert_tentative(write);
        self.settle(Source::Peer);
        id
    }

    /// The primary commits every tentative write it holds, in its log order
    /// (which respects causality). Returns how many it committed.
    pub fn commit_all(&mut self) -> Result<usize, CommitError> {
        if !self.is_primary() {
            return Err(CommitError::NotPrimary(self.id.clone()));
        }
        let n = self.commit_tentative(Source::Peer);
        // A committed retirement is executed again on its own, undoing the
        // tentative writes after it: they run again now.
        self.redo();
        Ok(n)
    }

    /// The items a receiver with `summary` lacks, in the order anti-entropy
    /// sends them ([P97 Fig. 2]): first the committed writes it does not know
    /// are committed, in CSN order, as commit notifications where it already
    /// holds the write; then the tentative writes it lacks, in log order.
    ///
    /// The iterator is lazy and its cost is proportional to the items it
    /// yields, not to the size of the log. Any prefix of it is a valid
    /// (interrupted) session.
    ///
    /// A receiver whose CSN is below this replica's OSN lacks committed
    /// writes that were discarded here: it needs a full-state transfer
    /// first ([`crate::SessionSender`] does that), and this yields nothing.
    pub fn items_for<'a>(&'a self, summary: &'a Summary) -> impl Iterator<Item = Item> + 'a {
        let behind = summary.csn < self.osn;
        let osn = self.osn;
        let committed = self
            .committed
            .iter()
            .enumerate()
            .skip(summary.csn.saturating_sub(osn) as usize)
            .take(if behind { 0 } else { usize::MAX })
            .map(move |(i, w)| {
                let csn = osn + i as Csn + 1;
                if self.summary_covers(summary, &w.id) {
                    Item::Commit {
                        id: w.id.clone(),
                        csn,
                    }
                } else {
                    Item::Write {
                        write: w.clone(),
                        csn: Some(csn),
                    }
                }
            });
        let tentative = TentativeMissing::new(self, summary)
            .take(if behind { 0 } else { usize::MAX })
            .map(move |id| {
                let write = self.tentative[&id].clone().into_write(id);
                Item::Write { write, csn: None }
            });
        committed.chain(tentative)
    }

    /// Applies the items of an anti-entropy session that the sender computed
    /// from `base`, the summary this replica sent when the session began.
    ///
    /// A sender sends exactly the writes missing from `base`, so the items
    /// keep the prefix property only for a receiver that still holds at least
    /// `base`. One that has lost writes since (a crash before its fsync) could
    /// be left holding a server's later write without an earlier one, so such
    /// a session is refused whole ([`ProtocolError::StaleSession`]); the next
    /// session, computed from the current summary, sends what is missing.
    /// A receiver that has learned more since is fine: what it already holds
    /// is ignored.
    ///
    /// A session that resumes a cut full-state transfer (`base.resume`) is
    /// likewise refused unless this replica still stages that transfer, or
    /// has since moved past its CSN.
    pub fn receive_session(
        &mut self,
        base: &Summary,
        chunks: impl IntoIterator<Item = impl Into<Chunk>>,
    ) -> Result<ReceiveReport, ProtocolError> {
        self.check_base(base)?;
        let mut report = ReceiveReport::default();
        for chunk in chunks {
            let r = self.receive_chunk(chunk.into())?;
            report.new_writes += r.new_writes;
            report.commits += r.commits;
            report.duplicates += r.duplicates;
            report.undone += r.undone;
            report.installed |= r.installed;
        }
        Ok(report)
    }

    /// Checks that a session computed for `base` can be applied here: see
    /// [`Replica::receive_session`]. This is also the precondition of a
    /// bundle file ([P97 §4.1]).
    pub fn check_base(&self, base: &Summary) -> Result<(), ProtocolError> {
        let resume_ok = match &base.resume {
            None => true,
            Some(r) => {
                self.csn() >= r.csn
                    || self
                        .incoming
                        .as_ref()
                        .is_some_and(|st| st.csn == r.csn && st.last.as_ref() >= Some(&r.after))
            }
        };
        if !self.complete_vv().dominates(&base.vv) || self.csn() < base.csn || !resume_ok {
            return Err(ProtocolError::StaleSession {
                base: base.vv.clone(),
                base_csn: base.csn,
                now: self.vv.clone(),
                now_csn: self.csn(),
            });
        }
        Ok(())
    }

    /// Applies one chunk of a session, without checking which state it was
    /// computed for (see [`Replica::receive_session`]).
    pub fn receive_chunk(&mut self, chunk: Chunk) -> Result<ReceiveReport, ProtocolError> {
        match chunk {
            Chunk::Items(items) => self.receive(items),
            Chunk::Snapshot(part) => self.receive_snapshot_part(part),
        }
    }

    /// Applies items received by anti-entropy, in the order sent, without
    /// checking which state they were computed for: callers that hold the
    /// session's base summary use [`Replica::receive_session`]. Items
    /// already held are ignored, so duplicated or repeated sessions are
    /// harmless. Stops at the first item that breaks the protocol; those
    /// before it stay applied, and the replica stays valid.
    ///
    /// With an authority set ([`crate::auth`]) every write among the items
    /// is verified first, and a forged one refuses them all
    /// ([`ProtocolError::Forged`]): nothing of the batch is applied.
    pub fn receive(
        &mut self,
        items: impl IntoIterator<Item = Item>,
    ) -> Result<ReceiveReport, ProtocolError> {
        let result = match &self.authority {
            // The open cluster's path: no collection, no verification.
            None => self.apply_items(items, Source::Peer),
            Some(authority) => {
                let items: Vec<Item> = items.into_iter().collect();
                for item in &items {
                    if let Item::Write { write, .. } = item {
                        authority
                            .verify(write)
                            .map_err(|reason| ProtocolError::Forged {
                                id: write.id.clone(),
                                reason,
                            })?;
                    }
                }
                self.apply_items(items, Source::Peer)
            }
        };
        self.settle(Source::Peer);
        result
    }

    fn apply_items(
        &mut self,
        items: impl IntoIterator<Item = Item>,
        source: Source,
    ) -> Result<ReceiveReport, ProtocolError> {
        let mut report = ReceiveReport::default();
        let undos_before = self.stats.undos;
        let mut result = Ok(());
        for item in items {
            match self.apply_item(&item, source, &mut report) {
                Ok(true) => {
                    if source == Source::Peer {
                        self.to_persist.push(item);
                    }
                }
                Ok(false) => report.duplicates += 1,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        report.undone = (self.stats.undos - undos_before) as usize;
        result.map(|()| report)
    }

    /// Applies one item; `Ok(false)` when it was already held.
    fn apply_item(
        &mut self,
        item: &Item,
        source: Source,
        report: &mut ReceiveReport,
    ) -> Result<bool, ProtocolError> {
        let (id, csn) = match item {
            Item::Write { write, csn } => (&write.id, *csn),
            Item::Commit { id, csn } => (id, Some(*csn)),
        };
        self.logical_clock = self.logical_clock.max(id.stamp);
        let Some(csn) = csn else {
            // A tentative write: new iff the version vector does not cover it.
            if self.holds(id) {
                return Ok(false);
            }
            let Item::Write { write, .. } = item else {
                unreachable!("only writes lack a CSN")
            };
            self.insert_tentative(write.clone());
            report.new_writes += 1;
            return Ok(true);
        };
        if csn <= self.osn {
            // Discarded here already: its effect is in the checkpoint.
            return Ok(false);
        }
        if csn <= self.csn() {
            let held = &self.committed[(csn - self.osn - 1) as usize].id;
            if held != id {
                return Err(ProtocolError::ConflictingCommit {
                    csn,
                    held: held.clone(),
                    got: id.clone(),
                });
            }
            return Ok(false);
        }
        if csn != self.csn() + 1 {
            return Err(ProtocolError::CommitGap {
                id: id.clone(),
                expected: self.csn() + 1,
                got: csn,
            });
        }
        if self.is_primary() && source == Source::Peer {
            return Err(ProtocolError::ForeignCommit(csn));
        }
        if self.tentative.contains_key(id) {
            self.commit_held(id, csn);
            report.commits += 1;
            return Ok(true);
        }
        match item {
            Item::Write { write, .. } if !self.holds(id) => {
                self.commit_new(write.clone());
                report.new_writes += 1;
                Ok(true)
            }
            Item::Write { .. } => Err(ProtocolError::AlreadyCommitted(id.clone())),
            Item::Commit { .. } => Err(ProtocolError::UnknownWrite(id.clone())),
        }
    }

    /// Finishes a batch of changes: the primary in autocommit mode commits,
    /// then the tentative writes awaiting redo are executed.
    fn settle(&mut self, source: Source) {
        if let Role::Primary { autocommit: true } = self.role() {
            self.commit_tentative(source);
        }
        self.redo();
        self.share_views();
        let every = self
            .retention
            .checkpoint_every
            .max(self.committed_db.len() as u64 / CHECKPOINT_DB_FRACTION)
            .max(1);
        if source == Source::Peer && self.csn() - self.checkpoint_csn >= every {
            self.checkpoint(None);
        }
    }

    /// Takes a checkpoint of the committed database now, and discards the
    /// committed writes beyond the retention policy, or all but the last
    /// `keep` if given ([P97 §3.3]; the operator's `BAYOU.TRUNCATE`).
    /// Returns how many writes it discarded. The checkpoint, with the new
    /// `O` and OSN, is queued for persistence ([`Replica::take_checkpoint`]):
    /// the store drops the discarded writes' items in the same transaction.
    pub fn checkpoint(&mut self, keep: Option<u64>) -> u64 {
        let (max_writes, max_bytes) = match keep {
            Some(n) => (n, u64::MAX),
            None => (self.retention.writes, self.retention.bytes),
        };
        let mut discarded = 0;
        while self.committed.len() as u64 > max_writes || self.retained_bytes > max_bytes {
            let Some(w) = self.committed.pop_front() else {
                break;
            };
            self.retained_bytes -= w.approx_size() as u64;
            self.osn += 1;
            self.omitted.advance(&w.id);
            self.outcomes.remove(&w.id);
            self.changed.remove(&w.id);
            discarded += 1;
        }
        self.checkpoint_csn = self.csn();
        // A cached transfer snapshot older than the new OSN could no longer
        // be followed by the committed writes after it.
        if self
            .snapshot_cache
            .as_ref()
            .is_some_and(|c| c.csn < self.osn || keep.is_some() || discarded > 0)
        {
            self.snapshot_cache = None;
        }
        let changed = self.dirty.replace(BTreeSet::new());
        self.queue_checkpoint(Checkpoint {
            snapshot: Snapshot {
                csn: self.csn(),
                vv: self.commit_vv.clone(),
                db: Arc::new(self.committed_db.clone()),
            },
            osn: self.osn,
            omitted: self.omitted.clone(),
            changed,
        });
        discarded
    }

    /// Queues a checkpoint for the driver. One not yet taken is folded in,
    /// never replaced: its changed keys (or its "write everything") are not
    /// in the new one's, and a store that writes only the listed keys would
    /// otherwise miss them.
    fn queue_checkpoint(&mut self, checkpoint: Checkpoint) {
        let checkpoint = match self.to_checkpoint.take() {
            Some(earlier) => earlier.merge(&checkpoint),
            None => checkpoint,
        };
        self.to_checkpoint = Some(Arc::new(checkpoint));
    }

    /// The snapshot a full-state transfer sends, and the key to continue
    /// after: the cached one when the receiver resumes it (and it can still
    /// be followed by this log), otherwise a new one of the committed
    /// database now.
    pub(crate) fn snapshot_for(
        &mut self,
        resume: Option<&Resume>,
    ) -> (Arc<Snapshot>, Option<bytes::Bytes>) {
        if let Some(cache) = &self.snapshot_cache
            && cache.csn >= self.osn
        {
            if let Some(r) = resume
                && r.csn == cache.csn
            {
                return (cache.clone(), Some(r.after.clone()));
            }
            if cache.csn == self.csn() {
                return (cache.clone(), None);
            }
        }
        let snapshot = Arc::new(Snapshot {
            csn: self.csn(),
            vv: self.commit_vv.clone(),
            db: Arc::new(self.committed_db.clone()),
        });
        self.snapshot_cache = Some(snapshot.clone());
        (snapshot, None)
    }

    /// Stages one part of a full-state transfer; installs the snapshot when
    /// the last part arrives.
    fn receive_snapshot_part(
        &mut self,
        part: SnapshotPart,
    ) -> Result<ReceiveReport, ProtocolError> {
        let mut report = ReceiveReport::default();
        if part.csn <= self.csn() {
            // This replica already holds that state or a later one.
            report.duplicates = part.entries.len();
            return Ok(report);
        }
        if self.is_primary() {
            return Err(ProtocolError::ForeignCommit(part.csn));
        }
        let ordered = part.entries.windows(2).all(|w| w[0].0 < w[1].0)
            && match (&part.after, part.entries.first()) {
                (Some(a), Some((k, _))) => a < k,
                _ => true,
            };
        if !ordered {
            return Err(ProtocolError::SnapshotOrder(part.csn));
        }
        let continues = match &self.incoming {
            Some(st) => st.csn == part.csn && part.after <= st.last,
            None => false,
        };
        if !continues {
            if part.after.is_some() {
                return Err(ProtocolError::SnapshotGap {
                    csn: part.csn,
                    staged: match &self.incoming {
                        Some(st) => format!("CSN {} up to {:?}", st.csn, st.last),
                        None => "nothing".into(),
                    },
                });
            }
            self.incoming = Some(Staging {
                csn: part.csn,
                vv: part.vv.clone(),
                db: Db::new(),
                last: None,
            });
        }
        let st = self.incoming.as_mut().expect("staged above");
        for (k, v) in part.entries {
            if st.last.as_ref().is_some_and(|last| k <= *last) {
                // Already staged by an earlier copy of this part.
                report.duplicates += 1;
                continue;
            }
            st.last = Some(k.clone());
            st.db.insert(k, v);
        }
        if part.last {
            let st = self.incoming.take().expect("staged above");
            self.install(st)?;
            report.installed = true;
        }
        Ok(report)
    }

    /// Installs a received snapshot ([P97 §3.3]): the database becomes the
    /// committed view, `O` and OSN become the snapshot's vector and CSN,
    /// the writes it covers leave the log, and tentative writes it does not
    /// cover stay (the sender may not know them) and are redone on top.
    fn install(&mut self, st: Staging) -> Result<(), ProtocolError> {
        // Every write committed here precedes the snapshot's CSN, so the
        // snapshot must reflect it; otherwise two committed orders exist.
        for (i, w) in self.committed.iter().enumerate() {
            if !st.vv.covers(&w.id) {
                return Err(ProtocolError::SnapshotConflict {
                    csn: st.csn,
                    id: w.id.clone(),
                    held: self.osn + i as Csn + 1,
                });
            }
        }
        for (id, _) in self.executed.drain(..) {
            self.undone.insert(id);
        }
        self.committed.clear();
        self.retained_bytes = 0;
        self.osn = st.csn;
        self.omitted = st.vv.clone();
        self.commit_vv = st.vv.clone();
        let covered: Vec<WriteId> = self
            .tentative
            .keys()
            .filter(|id| st.vv.covers(id))
            .cloned()
            .collect();
        for id in &covered {
            self.remove_tentative(id);
        }
        self.outcomes.retain(|id, _| !st.vv.covers(id));
        self.changed.retain(|id, _| !st.vv.covers(id));
        self.vv.merge(&st.vv);
        self.logical_clock = self.logical_clock.max(st.vv.max_stamp());
        self.committed_db = st.db;
        self.refresh_membership();
        self.note_retirements_in_db();
        self.full_db = self.committed_db.clone();
        self.commits_unshared = 0;
        self.checkpoint_csn = st.csn;
        self.snapshot_cache = None;
        self.queue_checkpoint(Checkpoint {
            snapshot: Snapshot {
                csn: st.csn,
                vv: st.vv.clone(),
                db: Arc::new(self.committed_db.clone()),
            },
            osn: st.csn,
            omitted: st.vv,
            changed: None,
        });
        self.dirty = Some(BTreeSet::new());
        // Tentative writes are redone at the end of the batch (settle).
        self.settle(Source::Peer);
        Ok(())
    }

    fn commit_tentative(&mut self, source: Source) -> usize {
        // With tentative writes executed, execute the rest first, so each
        // commit finds its write at the front of the executed list and needs
        // no undo. With none executed (a primary that commits every batch)
        // each commit executes on the committed view alone
        // (`execute_committed_alone`), which copies nothing.
        if !self.executed.is_empty() {
            self.redo();
        }
        let ids: Vec<WriteId> = self.tentative.keys().cloned().collect();
        let mut n = 0;
        for id in &ids {
            let csn = self.csn() + 1;
            self.commit_held(id, csn);
            n += 1;
            if source == Source::Peer {
                self.to_persist.push(Item::Commit {
                    id: id.clone(),
                    csn,
                });
            }
            if !self.is_primary() {
                // A handoff just committed: this was the last CSN assigned
                // here ([`crate::member`]).
                break;
            }
        }
        n
    }

    fn insert_tentative(&mut self, write: Write) {
        // Undo executed writes that sort after the new one; redo comes later.
        self.undo_after(&write.id);
        self.vv.advance(&write.id);
        self.note_membership(&write.id, &write.op);
        self.tentative_by_server
            .entry(write.id.server.clone())
            .or_default()
            .insert(write.id.stamp);
        self.tentative.insert(
            write.id,
            Body {
                op: write.op,
                author: write.author,
                signature: write.signature,
            },
        );
    }

    /// Commits a write held tentatively, as the next CSN.
    fn commit_held(&mut self, id: &WriteId, csn: Csn) {
        debug_assert_eq!(csn, self.csn() + 1);
        let tentative_outcome = self.ran_tentatively.contains(id).then(|| self.outcome(id));
        let write = self.remove_tentative(id).into_write(id.clone());
        if csn <= self.replayed_upto {
            // Recovery: the checkpoint's database already reflects it.
            self.push_committed(write);
            return;
        }
        let op = &write.op;
        // A retirement records its CSN in the membership table, so its
        // committed execution differs from its tentative one: the full view
        // cannot keep the latter ([P97 §4.3]).
        let first_executed = self.executed.front().is_some_and(|(e, _)| e == id)
            && !matches!(op, Op::Member(MemberOp::Retire { .. }));
        // Re-executed at commit ([T95 §7]) on the committed view, whose state
        // is the full view's state at this write's place.
        let author = write.author.as_ref();
        let (undo, outcome) = if first_executed {
            // It already sits right after the committed prefix in the full
            // view: only the committed view changes.
            self.executed.pop_front();
            self.commits_unshared += 1;
            execute(
                &mut self.committed_db,
                (id, Some(csn)),
                op,
                author,
                self.authority.as_ref(),
            )
        } else {
            // It moves in front of tentative writes already executed.
            self.undo_all();
            // It may have been one of them; it is no longer tentative.
            self.undone.remove(id);
            self.execute_committed_alone((id, csn), op, author)
        };
        note_dirty(&mut self.dirty, &undo);
        if let Some(before) = tentative_outcome.filter(|before| *before != outcome) {
            self.changed.insert(id.clone(), before);
        }
        note_outcome(&mut self.outcomes, id, outcome);
        self.stats.commit_executions += 1;
        self.push_committed(write);
    }

    /// Executes a committed write when no tentative write is executed: the
    /// full view is then the committed view's database, so rather than
    /// executing the write on both (each copying the path to the key from
    /// nodes they share), the full view lets go of its nodes, the committed
    /// view changes in place, and the full view becomes its O(1) clone
    /// again. A primary and a replica receiving only committed writes copy
    /// no node per write.
    fn execute_committed_alone(
        &mut self,
        (id, csn): (&WriteId, Csn),
        op: &Op,
        author: Option<&Arc<str>>,
    ) -> (Undo, Outcome) {
        debug_assert!(self.executed.is_empty());
        self.full_db = Db::new();
        let result = execute(
            &mut self.committed_db,
            (id, Some(csn)),
            op,
            author,
            self.authority.as_ref(),
        );
        self.full_db = self.committed_db.clone();
        result
    }

    fn push_committed(&mut self, write: Write) {
        if matches!(write.op, Op::Member(_)) {
            self.refresh_membership();
        }
        self.commit_vv.advance(&write.id);
        self.retained_bytes += write.approx_size() as u64;
        self.committed.push_back(write);
    }

    /// Appends a committed write this replica did not hold.
    fn commit_new(&mut self, write: Write) {
        self.vv.advance(&write.id);
        self.note_membership(&write.id, &write.op);
        if self.csn() < self.replayed_upto {
            // Recovery: the checkpoint's database already reflects it.
            self.push_committed(write);
            return;
        }
        self.undo_all();
        let csn = self.csn() + 1;
        let (undo, outcome) =
            self.execute_committed_alone((&write.id, csn), &write.op, write.author.as_ref());
        note_dirty(&mut self.dirty, &undo);
        note_outcome(&mut self.outcomes, &write.id, outcome);
        self.stats.commit_executions += 1;
        self.push_committed(write);
    }

    fn remove_tentative(&mut self, id: &WriteId) -> Body {
        self.ran_tentatively.remove(id);
        if let Entry::Occupied(mut e) = self.tentative_by_server.entry(id.server.clone()) {
            e.get_mut().remove(&id.stamp);
            if e.get().is_empty() {
                e.remove();
            }
        }
        self.undone.remove(id);
        self.tentative
            .remove(id)
            .expect("remove_tentative is called for held writes")
    }

    /// Undoes executed tentative writes that sort after `id`.
    fn undo_after(&mut self, id: &WriteId) {
        while self.executed.back().is_some_and(|(e, _)| e > id) {
            let (e, undo) = self.executed.pop_back().expect("checked above");
            self.full_db.undo(undo);
            self.undone.insert(e);
            self.stats.undos += 1;
        }
    }

    fn undo_all(&mut self) {
        while let Some((e, undo)) = self.executed.pop_back() {
            self.full_db.undo(undo);
            self.undone.insert(e);
            self.stats.undos += 1;
        }
    }

    /// Makes the full view share the committed view's memory again: a clone
    /// of the committed view (O(1)) with the value of every key an executed
    /// tentative write touched taken from the current full view. Both views
    /// apply each commit separately, so without this each would end up with
    /// its own copy of every node, the whole database twice. The result is
    /// the same database (the keys no executed tentative write touched hold
    /// their committed values in the full view too), so the undo records of
    /// the executed writes stay valid.
    ///
    /// It costs O(t log n) for the t keys the executed tentative writes
    /// touched, so it runs only once at least as many commits as there are
    /// executed writes have diverged the views since the last time: O(log n)
    /// per commit amortized, however many tentative writes a replica holds,
    /// and the views never differ by more than the paths of those commits
    /// and of the executed writes. Without executed writes it is an O(1)
    /// clone, done after every batch that committed something.
    fn share_views(&mut self) {
        if self.commits_unshared == 0 || self.commits_unshared < self.executed.len() {
            return;
        }
        self.commits_unshared = 0;
        let mut full = self.committed_db.clone();
        for (_, undo) in &self.executed {
            for key in undo.keys() {
                full.put_raw(key, self.full_db.get(key));
            }
        }
        debug_assert!(full == self.full_db, "rebuilding the full view changed it");
        self.full_db = full;
    }

    /// Executes, in order, the tentative writes not yet executed.
    fn redo(&mut self) {
        let start = match self.executed.back() {
            Some((last, _)) => Bound::Excluded(last.clone()),
            None => Bound::Unbounded,
        };
        for (id, body) in self.tentative.range((start, Bound::Unbounded)) {
            let (undo, outcome) = execute(
                &mut self.full_db,
                (id, None),
                &body.op,
                body.author.as_ref(),
                self.authority.as_ref(),
            );
            note_outcome(&mut self.outcomes, id, outcome);
            self.ran_tentatively.insert(id.clone());
            self.executed.push_back((id.clone(), undo));
            self.stats.tentative_executions += 1;
            if self.undone.remove(id) {
                self.stats.redos += 1;
            }
        }
    }
}

/// Records the keys a committed write changed, for the next checkpoint.
fn note_dirty(dirty: &mut Option<BTreeSet<bytes::Bytes>>, undo: &Undo) {
    if let Some(set) = dirty {
        set.extend(undo.keys().cloned());
    }
}

/// Records a write's latest outcome, keeping only the interesting ones.
fn note_outcome(outcomes: &mut BTreeMap<WriteId, Outcome>, id: &WriteId, outcome: Outcome) {
    if outcome == Outcome::Applied {
        outcomes.remove(id);
    } else {
        outcomes.insert(id.clone(), outcome);
    }
}

/// The tentative writes a receiver lacks, in log order: a k-way merge of the
/// per-server stamp sets above the receiver's version vector, so the cost is
/// proportional to what it yields.
struct TentativeMissing<'a> {
    servers: Vec<(&'a ServerId, std::collections::btree_set::Range<'a, Stamp>)>,
    heap: BinaryHeap<Reverse<(Stamp, usize)>>,
}

impl<'a> TentativeMissing<'a> {
    fn new(replica: &'a Replica, summary: &Summary) -> Self {
        // Servers are visited in id order, so the index breaks stamp ties in
        // server-id order, as the log does.
        let mut servers = Vec::new();
        let mut heap = BinaryHeap::new();
        for (server, stamps) in &replica.tentative_by_server {
            let have = replica.complete_for(summary, server, 0);
            if have == Stamp::MAX {
                continue;
            }
            let mut range = stamps.range((Bound::Excluded(have), Bound::Unbounded));
            if let Some(&first) = range.next() {
                heap.push(Reverse((first, servers.len())));
                servers.push((server, range));
            }
        }
        TentativeMissing { servers, heap }
    }
}

impl Iterator for TentativeMissing<'_> {
    type Item = WriteId;

    fn next(&mut self) -> Option<WriteId> {
        let Reverse((stamp, i)) = self.heap.pop()?;
        let (server, range) = &mut self.servers[i];
        let id = WriteId::new(stamp, (*server).clone());
        if let Some(&next) = range.next() {
            self.heap.push(Reverse((next, i)));
        }
        Some(id)
    }
}
