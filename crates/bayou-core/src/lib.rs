//! Bayou's update protocol as a pure, deterministic state machine.
//!
//! Bayou (Terry et al., SOSP'95; Petersen et al., SOSP'97) is weakly
//! consistent replicated storage: any server accepts writes, even while
//! disconnected; servers exchange writes pairwise by *anti-entropy*; writes stay
//! *tentative* until the one *primary* server gives them a commit sequence
//! number (CSN); every server executes the same ordered log, so servers that
//! hold the same writes hold the same database.
//!
//! This crate is the protocol and nothing else: no sockets, files, threads,
//! system clock or randomness. The physical clock reading is an argument of
//! [`Replica::client_write`]; anti-entropy is a pair of calls
//! ([`Replica::items_for`] at the sender, [`Replica::receive`] at the
//! receiver) that a simulator calls directly and a network server drives over
//! TCP; durability is a queue of [`Item`]s the driver must persist before it
//! acknowledges or sends anything ([`Replica::take_persist`]).
//!
//! Modules:
//! * [`auth`]: writes that carry their author and the accepting server's
//!   signature, verified wherever they arrive; permissions checked where
//!   they execute.
//! * [`id`]: server ids, write ids `<accept-stamp, server-id>`, CSNs.
//! * [`op`]: the operations `W(key,value)` and `D(key)`, and the database with
//!   undo records.
//! * [`vv`]: version vectors.
//! * [`member`]: servers that come and go: creation, retirement and primary
//!   handoff as writes, the membership table they keep in the database.
//! * [`replica`]: one server: log, clocks, commit, anti-entropy, two views.
//! * [`session`]: the anti-entropy session sans I/O: chunks, full-state
//!   transfer, resuming a cut session, checkpoints.
//! * [`bundle`]: anti-entropy over files.
//! * [`guarantee`]: session guarantees for clients that move between
//!   replicas ([T94]): read-sets, write-sets, their checks and the token.
//! * [`script`]: Bayou writes with dependency checks and merge procedures,
//!   run in a deterministic, resource-limited sandbox.
//!
//! Citations in comments: [T95] Terry et al. 1995, [P97] Petersen et al. 1997,
//! [T94] Terry et al., "Session Guarantees for Weakly Consistent Replicated
//! Data", PDIS 1994.

#![warn(missing_docs, unreachable_pub)]

pub mod auth;
pub mod bundle;
pub mod guarantee;
pub mod id;
pub mod member;
pub mod op;
pub mod replica;
pub mod script;
pub mod session;
pub mod vv;

pub use auth::{
    Ed25519Authority, ForgedWrite, Keyring, KeyringError, Permissions, Signature, WriteAuthority,
};
pub use guarantee::{ClientSession, Guarantee, Guarantees, NotYet, TokenError};
pub use id::{Csn, ServerId, ServerIdError, Stamp, WriteId};
pub use member::{Member, MemberError, MemberOp};
pub use op::{Db, Op, OpParseError, Undo, parse_integer};
pub use replica::{
    CommitError, Item, MemoryReport, ProtocolError, ReceiveReport, Replica, Retention, Role, Stats,
    Summary, View, Write, WriteStatus, format_entry, format_entry_with_outcome,
};
pub use script::{BayouWrite, DependencyCheck, LIMITS, Limits, Mutation, Outcome};
pub use session::{
    Checkpoint, Chunk, ChunkLimits, Resume, SessionSender, Snapshot, SnapshotPart, advance,
};
pub use vv::VersionVector;
