//! The node-to-node protocol.
//!
//! Peers connect to the same port as Redis clients. A peer connection starts
//! with the 8-byte [`MAGIC`] (its first byte, `0xC4`, can start neither a RESP
//! multi-bulk request nor an inline command), followed by frames in both
//! directions:
//!
//! ```text
//! frame   = length (u32, big-endian, 1..=max_frame_bytes) payload
//! payload = version (u8) postcard(Body)
//! ```
//!
//! The version byte is checked before the body is decoded; a frame with an
//! unknown version, a length of 0 or above the limit, or a body that does not
//! decode closes the connection (the node itself carries on). Variants of the
//! enums below are only ever appended; changing one means a new
//! [`PROTOCOL_VERSION`].
//!
//! Two kinds of traffic share a connection:
//!
//! * [`Body::Chord`]: one-way messages of the chord-core state machine (ping,
//!   get-state, notify/rectify, find-step for iterative lookups, forward for
//!   recursive ones, leaving...). The core matches its own requests and
//!   replies and times them out, so the transport never waits for them.
//! * [`Body::Request`] / [`Body::Response`]: the storage RPCs of the driver
//!   (reads and writes at a key's owner, replication, anti-entropy, hand-off),
//!   matched by a per-connection request id, answered on the same connection.

use chord_core::{Id, Message, NodeRef};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// The first bytes of a peer connection.
pub const MAGIC: &[u8; 8] = b"\xC4CHORD1\n";

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// The default limit on one frame, in bytes.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 32 << 20;

/// Most records carried by one [`Request::Replicate`] or [`Response::Records`].
pub const MAX_RECORDS_PER_FRAME: usize = 2048;

/// A chord-core message between two processes.
pub type CoreMsg = Message<SocketAddr, ()>;

/// A stored value with its version. `value == None` is a tombstone left by
/// `DEL`, kept so that an older copy elsewhere cannot resurrect the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The key as the client sent it.
    pub name: Vec<u8>,
    /// The value, or `None` once deleted.
    pub value: Option<Vec<u8>>,
    /// Last-writer-wins version: `max(previous + 1, wall clock in µs)`,
    /// assigned by the key's owner.
    pub version: u64,
}

/// One frame's body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Body {
    /// A chord-core message for the virtual node `to` hosted by the receiver.
    Chord {
        /// The destination virtual node.
        to: Id,
        /// The sending virtual node.
        from: NodeRef<SocketAddr>,
        /// The message.
        msg: CoreMsg,
    },
    /// A storage request; answered by a [`Body::Response`] with the same id.
    Request {
        /// Request id, unique per connection.
        id: u64,
        /// The request.
        req: Request,
    },
    /// The answer to a [`Body::Request`].
    Response {
        /// The request's id.
        id: u64,
        /// The answer.
        resp: Response,
    },
}

/// Storage requests between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Read `key` at its owner.
    Get {
        /// Key id.
        key: Id,
    },
    /// Write (`value = Some`) or delete (`None`) `key` at its owner, which
    /// replicates before answering.
    Write {
        /// Key id.
        key: Id,
        /// The key as the client sent it.
        name: Vec<u8>,
        /// New value, or `None` to delete.
        value: Option<Vec<u8>>,
    },
    /// Store these records if newer than what the receiver holds (replication,
    /// hand-off, repair).
    Replicate {
        /// Records by key id.
        records: Vec<(Id, Record)>,
    },
    /// Anti-entropy: the sender owns `(lo, hi]` and holds `count` records
    /// there whose versions hash to `hash`.
    SyncDigest {
        /// Exclusive lower end of the range.
        lo: Id,
        /// Inclusive upper end.
        hi: Id,
        /// Number of records (tombstones included).
        count: u64,
        /// Order-independent hash of `(key id, version)` pairs.
        hash: u64,
    },
    /// Send these records (those the receiver holds).
    Fetch {
        /// Key ids.
        ids: Vec<Id>,
    },
    /// The owner of `(lo, hi]` has confirmed its replicas; the receiver is not
    /// one of them and drops its copies (unless it owns them itself).
    Drop {
        /// Exclusive lower end of the range.
        lo: Id,
        /// Inclusive upper end.
        hi: Id,
    },
    /// Which virtual nodes does the receiver host (and are ring members)?
    /// A joining node asks its bootstrap node this first.
    Whoami,
}

/// Answers to [`Request`]s.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// The record at the owner, if any (tombstones included).
    Value(Option<Record>),
    /// A write was applied; whether the key held a live value before.
    Written {
        /// The key held a value before the write.
        existed: bool,
    },
    /// The receiver does not own the key (its view of the ring differs from
    /// the sender's); look it up again.
    NotOwner,
    /// The receiver owns the key but has not yet taken over its range (just
    /// joined, or its predecessor is unknown); try again shortly.
    NotReady,
    /// Done.
    Ack,
    /// [`Request::SyncDigest`]: the receiver holds exactly the same versions.
    InSync,
    /// [`Request::SyncDigest`]: the receiver's `(key id, version)` pairs in the range.
    Versions(Vec<(Id, u64)>),
    /// [`Request::Fetch`]: the records found.
    Records(Vec<(Id, Record)>),
    /// The request failed at the receiver (storage error).
    Error(String),
    /// [`Request::Whoami`]: the receiver's joined virtual nodes.
    Ids(Vec<Id>),
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The frame is empty.
    #[error("empty frame")]
    Empty,
    /// Another protocol version.
    #[error("unsupported protocol version {0} (this node speaks {PROTOCOL_VERSION})")]
    Version(u8),
    /// The body does not decode.
    #[error("undecodable frame: {0}")]
    Decode(#[from] postcard::Error),
}

/// The payload of a frame (without the length prefix).
pub fn encode(body: &Body) -> Vec<u8> {
    let mut out = vec![PROTOCOL_VERSION];
    // Encoding into a Vec only fails on types serde cannot express, which
    // ours do not contain.
    out.extend(postcard::to_stdvec(body).expect("wire types always encode"));
    out
}

/// Decodes a frame payload, checking the version first.
pub fn decode(payload: &[u8]) -> Result<Body, WireError> {
    let (&v, rest) = payload.split_first().ok_or(WireError::Empty)?;
    if v != PROTOCOL_VERSION {
        return Err(WireError::Version(v));
    }
    Ok(postcard::from_bytes(rest)?)
}

/// An order-independent hash of a set of `(key id, version)` pairs.
pub fn digest<'a>(items: impl IntoIterator<Item = &'a (Id, u64)>) -> (u64, u64) {
    let mut count = 0;
    let mut h = 0u64;
    for (id, v) in items {
        count += 1;
        let b = id.to_be_bytes();
        let mut x = u64::from_be_bytes(b[12..20].try_into().expect("8 bytes"))
            ^ u64::from_be_bytes(b[4..12].try_into().expect("8 bytes")).rotate_left(29)
            ^ v.wrapping_mul(0x9E37_79B9_7F4A_7C15);
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

#[cfg(test)]
mod tests {
    use super::*;
    use chord_core::IdSpace;

    #[test]
    fn frames_round_trip_and_carry_full_160_bit_ids() {
        let space = IdSpace::default();
        let a: SocketAddr = "127.0.0.1:8001".parse().unwrap();
        let id = space.hash(b"127.0.0.1:8001");
        assert!(id.to_u128().is_none(), "a 160-bit id");
        let body = Body::Chord {
            to: id,
            from: NodeRef { id, addr: a },
            msg: Message::FindStep { req: 7, key: id },
        };
        let bytes = encode(&body);
        assert_eq!(bytes[0], PROTOCOL_VERSION);
        match decode(&bytes).unwrap() {
            Body::Chord { to, from, msg } => {
                assert_eq!(to, id);
                assert_eq!(from.addr, a);
                assert_eq!(msg, Message::FindStep { req: 7, key: id });
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_versions_and_garbage_are_errors_not_panics() {
        let mut bytes = encode(&Body::Response {
            id: 1,
            resp: Response::Ack,
        });
        bytes[0] = 9;
        assert!(matches!(decode(&bytes), Err(WireError::Version(9))));
        assert!(matches!(decode(&[]), Err(WireError::Empty)));
        for n in 0..200u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ n).collect();
            let mut framed = vec![PROTOCOL_VERSION];
            framed.extend(junk);
            let _ = decode(&framed);
        }
    }

    #[test]
    fn the_digest_ignores_order_and_sees_versions() {
        let s = IdSpace::default();
        let a = (s.hash(b"a"), 1);
        let b = (s.hash(b"b"), 2);
        assert_eq!(digest(&[a, b]), digest(&[b, a]));
        assert_ne!(digest(&[a, b]), digest(&[a, (b.0, 3)]));
        assert_ne!(digest(&[a]), digest(&[a, b]));
    }
}
