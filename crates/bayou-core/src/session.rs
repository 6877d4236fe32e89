//! The anti-entropy session, sans I/O: what a sender sends, in which chunks,
//! and how a session that was cut off resumes ([P97 §2–3.4]).
//!
//! # The session
//!
//! One-way anti-entropy from S to R ([P97 Fig. 3]): R states its
//! [`Summary`] (version vector, CSN, and how far it got into a full-state
//! transfer that was cut off); S answers with a stream of [`Chunk`]s:
//!
//! 1. **Full-state transfer**, only when S has discarded committed writes R
//!    lacks (`S.OSN > R.CSN`, [P97 §3.3]): S's committed database as of one
//!    CSN, with the *commit vector* that summarises exactly the writes it
//!    reflects, in [`SnapshotPart`]s of bounded size, keys in order. R stages
//!    the parts and installs the whole only when the last one arrives (the
//!    transfer is all-or-nothing, [P97 §3.3]); a cut transfer resumes after
//!    the last staged key as long as S still holds the same snapshot.
//! 2. **Committed writes** R does not know are committed, in CSN order, as
//!    commit notifications where R already holds the write ([P97 Fig. 2]).
//! 3. **Tentative writes** R lacks, in log order.
//!
//! [`SessionSender`] produces the chunks one at a time and advances its copy
//! of R's summary past each, exactly as R's state advances when it applies
//! them, so any prefix of a session is a valid, interrupted session and the
//! next chunk continues it. The network runtime sends each chunk as a frame;
//! the simulator hands it straight to the receiver; a bundle file
//! ([`crate::bundle`]) stores the same chunks. The receiver side is
//! [`crate::Replica::receive_chunk`] and
//! [`crate::Replica::receive_session`].
//!
//! # Durability
//!
//! A driver makes the sender's queued persistence durable before it lets a
//! chunk out ([`crate::Replica::take_persist`]), and a receiver acknowledges
//! a session only once what it applied is durable. The simulator and the
//! network runtime both do exactly this.
//!
//! # Snapshot and checkpoint
//!
//! The committed database as of CSN `c` together with the commit vector of
//! the first `c` commits is a [`Snapshot`]. Committed writes reach the
//! primary's order in each server's accept order, so the writes with CSN
//! `<= c` are, per server, a prefix of its writes: a version vector
//! describes them exactly. A [`Checkpoint`] is a snapshot plus the omitted
//! vector `O` and `OSN` of a log truncated at or before it ([P97 §3.3]):
//! what a store keeps so that recovery is "load the checkpoint, replay the
//! retained log".

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::id::Csn;
use crate::op::Db;
use crate::replica::{Item, Replica, Summary};
use crate::vv::VersionVector;

/// How far a receiver got into a full-state transfer that was cut off: the
/// snapshot's CSN and the last key it staged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The CSN of the snapshot being staged.
    pub csn: Csn,
    /// The last key staged.
    pub after: Bytes,
}

/// The committed database as of one CSN, with the commit vector of the
/// writes it reflects. See the module documentation.
#[derive(Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The database reflects the committed writes with CSN `1..=csn`.
    pub csn: Csn,
    /// Exactly those writes, as a version vector.
    pub vv: VersionVector,
    /// The committed database at `csn`.
    pub db: Arc<Db>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Snapshot(csn {}, {:?}, {} keys)",
            self.csn,
            self.vv,
            self.db.len()
        )
    }
}

/// What stable storage keeps instead of the truncated log: a snapshot of
/// the committed database, and the omitted vector and OSN of the writes
/// discarded ([P97 §3.3]). `osn <= snapshot.csn`: the retained log may still
/// hold committed writes the snapshot reflects (recovery does not execute
/// them again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The committed database and the writes it reflects.
    pub snapshot: Snapshot,
    /// The CSN of the last discarded write (0: none discarded).
    pub osn: Csn,
    /// The discarded writes, as a version vector (`O`).
    pub omitted: VersionVector,
    /// The keys whose committed value changed since the previous checkpoint
    /// this replica issued, so a store that holds that one need only write
    /// these (their values, or their absence, are in `snapshot.db`);
    /// `None` when the whole database must be written (the first
    /// checkpoint after a start or a full-state install).
    pub changed: Option<BTreeSet<Bytes>>,
}

impl Checkpoint {
    /// Folds a later checkpoint of the same replica into this one, for a
    /// store that writes both at once: the later state, with the keys
    /// changed since the earlier one's predecessor.
    pub fn merge(&self, later: &Checkpoint) -> Checkpoint {
        let changed = match (&self.changed, &later.changed) {
            (Some(a), Some(b)) => Some(a.union(b).cloned().collect()),
            _ => None,
        };
        Checkpoint {
            changed,
            ..later.clone()
        }
    }

    /// Whether a stored log item concerns a discarded write and can go.
    pub fn covers(&self, item: &Item) -> bool {
        let id = match item {
            Item::Write { write, .. } => &write.id,
            Item::Commit { id, .. } => id,
        };
        self.omitted.covers(id)
    }
}

/// A piece of a full-state transfer: keys of the snapshot's database in
/// order, strictly after `after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPart {
    /// The snapshot's CSN: the receiver's new CSN and OSN.
    pub csn: Csn,
    /// The snapshot's commit vector: the receiver's new `O`.
    pub vv: VersionVector,
    /// The key this part continues after (`None` for the first part).
    pub after: Option<Bytes>,
    /// Keys and values, in strictly increasing key order.
    pub entries: Vec<(Bytes, Bytes)>,
    /// Whether this is the last part.
    pub last: bool,
}

/// One unit of an anti-entropy session: what a network frame carries, what
/// the simulator delivers at once, what a bundle file stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Chunk {
    /// Writes and commit notifications, in session order.
    Items(Vec<Item>),
    /// A piece of a full-state transfer.
    Snapshot(SnapshotPart),
}

impl From<Item> for Chunk {
    fn from(item: Item) -> Chunk {
        Chunk::Items(vec![item])
    }
}

impl Chunk {
    /// A rough size in bytes, to bound frames and files.
    pub fn approx_size(&self) -> usize {
        match self {
            Chunk::Items(items) => items.iter().map(Item::approx_size).sum(),
            Chunk::Snapshot(p) => p
                .entries
                .iter()
                .map(|(k, v)| k.len() + v.len() + 8)
                .sum::<usize>()
                .saturating_add(64),
        }
    }

    /// How many writes, commits or database entries it holds.
    pub fn len(&self) -> usize {
        match self {
            Chunk::Items(items) => items.len(),
            Chunk::Snapshot(p) => p.entries.len(),
        }
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Moves `summary` past `item`, as the receiver's state moves when it
/// applies it.
pub fn advance(summary: &mut Summary, item: &Item) {
    match item {
        Item::Write { write, csn } => {
            summary.vv.advance(&write.id);
            // As the receiver's `note_membership`: a creation adds an entry
            // (0) for the new server, else `CompleteV` reads its absence as
            // a retirement ([P97 §4.3]).
            if let crate::Op::Member(crate::member::MemberOp::Create { server, .. }) = &write.op {
                summary.vv.ensure(server);
            }
            if let Some(c) = csn {
                summary.csn = summary.csn.max(*c);
            }
        }
        Item::Commit { csn, .. } => summary.csn = summary.csn.max(*csn),
    }
}

/// Bounds on one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Most items (or database entries) in one chunk; at least one is sent.
    pub items: usize,
    /// Most bytes (approximately) in one chunk; at least one item is sent.
    pub bytes: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        ChunkLimits {
            items: 1024,
            bytes: 4 << 20,
        }
    }
}

/// The sending side of one anti-entropy session. See the module docs.
#[derive(Debug, Clone)]
pub struct SessionSender {
    /// The receiver's state as it will be after the chunks sent so far.
    summary: Summary,
    /// A full-state transfer in progress: the snapshot and the last key sent.
    snapshot: Option<(Arc<Snapshot>, Option<Bytes>)>,
}

impl SessionSender {
    /// A session for a receiver that stated `base`.
    pub fn new(base: Summary) -> SessionSender {
        SessionSender {
            summary: base,
            snapshot: None,
        }
    }

    /// The receiver's state after the chunks produced so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Whether a full-state transfer is under way.
    pub fn in_snapshot(&self) -> bool {
        self.snapshot.is_some()
    }

    /// The next chunk from `sender`, or `None` when the receiver lacks
    /// nothing more. `sender` may have changed since the previous chunk
    /// (new writes, commits, a truncation): the session follows it.
    pub fn next_chunk(&mut self, sender: &mut Replica, limits: ChunkLimits) -> Option<Chunk> {
        let (max_items, max_bytes) = (limits.items.max(1), limits.bytes.max(1));
        if self.snapshot.is_none() && self.summary.csn < sender.osn() {
            // The receiver lacks committed writes this sender discarded:
            // full-state transfer ([P97 Fig. 3]).
            let (snapshot, after) = sender.snapshot_for(self.summary.resume.as_ref());
            self.snapshot = Some((snapshot, after));
        }
        if let Some((snapshot, after)) = &mut self.snapshot {
            let mut range = snapshot.db.iter_after(after.clone()).peekable();
            let mut entries = Vec::new();
            let mut bytes = 0;
            while entries.len() < max_items && bytes < max_bytes {
                let Some((k, v)) = range.next() else { break };
                bytes += k.len() + v.len() + 8;
                entries.push((k.clone(), v.clone()));
            }
            let last = range.peek().is_none();
            drop(range);
            let part = SnapshotPart {
                csn: snapshot.csn,
                vv: snapshot.vv.clone(),
                after: after.clone(),
                entries,
                last,
            };
            if last {
                self.summary.csn = snapshot.csn;
                self.summary.vv.merge(&snapshot.vv);
                // As the receiver's install: every live member the
                // snapshot's table holds gets an entry ([P97 §4.3]).
                for (server, m) in crate::member::members(&snapshot.db) {
                    if m.is_live() {
                        self.summary.vv.ensure(&server);
                    }
                }
                self.summary.resume = None;
                self.snapshot = None;
            } else {
                let key = part.entries.last().map(|(k, _)| k.clone());
                *after = key.clone();
                self.summary.resume = key.map(|after| Resume {
                    csn: part.csn,
                    after,
                });
            }
            return Some(Chunk::Snapshot(part));
        }
        let mut items = Vec::new();
        let mut bytes = 0;
        for item in sender.items_for(&self.summary) {
            bytes += item.approx_size();
            items.push(item);
            if items.len() >= max_items || bytes >= max_bytes {
                break;
            }
        }
        if items.is_empty() {
            return None;
        }
        for item in &items {
            advance(&mut self.summary, item);
        }
        Some(Chunk::Items(items))
    }
}
