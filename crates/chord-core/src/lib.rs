//! # chord-core
//!
//! A sans-IO implementation of the Chord distributed lookup protocol
//! (Stoica, Morris, Karger, Kaashoek, Balakrishnan, SIGCOMM 2001 and ToN 2003)
//! with the ring-maintenance corrections of Pamela Zave ("How to Make Chord
//! Correct", 2015/2017).
//!
//! The crate is pure and deterministic: no sockets, files, clocks, threads or
//! ambient randomness. It is organised bottom-up:
//!
//! * [`id`]: identifiers on a ring of `2^m` points, `m` in `3..=160`, SHA-1 hashing;
//! * [`interval`]: wrap-around interval tests `(a,b]`, `(a,b)`, `[a,b)`;
//! * [`ring`]: a *static* (fully stabilized) ring held as a sorted vector of ids,
//!   with consistent hashing (`successor(k)`), the finger-table definition and the
//!   two lookup walks (successor-only and finger); used by the tests as the ground
//!   truth and by the simulator for experiments with up to `10^6` nodes;
//! * [`node`]: one Chord (virtual) node as a message-driven state machine: create,
//!   join, stabilize / rectify, fix_fingers, check_predecessor, successor lists,
//!   voluntary leave, failure handling, iterative and recursive lookups; it
//!   stores no keys;
//! * [`host`]: many virtual nodes behind one address, as a process hosts them;
//! * [`data`]: the data plane of one process: ownership, replica sets
//!   (`k` copies in total), versioned records and their merge, durable write
//!   acknowledgement, reads that fall back to replicas, digest anti-entropy,
//!   hand-off on join and leave, re-replication, garbage collection and
//!   tombstone purge, over storage behind the [`data::KeyStore`] trait.
//!
//! Drivers (the simulator `chord-sim` and the network node `chord-node`) feed
//! a [`node::Node`] or [`data::DataPlane`] with calls carrying the current
//! time and drain the resulting commands (`Send`, `SetTimer`, `Persist`,
//! completions).

#![warn(missing_docs, unreachable_pub)]

pub mod coverage;
pub mod data;
mod fingers;
pub mod host;
pub mod id;
pub mod interval;
pub mod node;
pub mod ring;

pub use host::VirtualHost;
pub use id::{Id, IdSpace};
pub use node::{Command, Config, Message, Node, NodeRef, Timer};
pub use ring::{FingerRow, StaticRing};

/// Errors returned by the core's constructors and queries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChordError {
    /// The identifier length must lie in `3..=160`.
    #[error("bits must be between 3 and 160, got {bits}")]
    BitsOutOfRange {
        /// The rejected length.
        bits: u32,
    },
    /// An identifier does not fit in the ring of `2^bits` points.
    #[error("identifier {id} does not fit in {bits} bits")]
    IdOutOfRange {
        /// The rejected identifier (decimal or hex).
        id: String,
        /// The ring's identifier length.
        bits: u32,
    },
    /// Two nodes were given the same identifier.
    #[error("duplicate node identifier {id}")]
    DuplicateNode {
        /// The repeated identifier.
        id: String,
    },
    /// A ring needs at least one node.
    #[error("a ring needs at least one node")]
    EmptyRing,
    /// The named node is not a member of the ring.
    #[error("node {id} is not in the ring")]
    NotInRing {
        /// The missing identifier.
        id: String,
    },
}
