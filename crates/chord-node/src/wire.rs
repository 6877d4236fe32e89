//! The node-to-node protocol.
//!
//! Peers connect to the same port as Redis clients. A peer connection starts
//! with the 8-byte [`MAGIC`] (its first byte, `0xC4`, can start neither a RESP
//! multi-bulk request nor an inline command), followed by frames in both
//! directions, in the kit's peer framing ([`server_kit::frame`], the same as
//! Bayou's):
//!
//! ```text
//! frame   = length (u32, big-endian, 1..=max_frame_bytes) payload
//! payload = version (u16, big-endian) postcard(Body)
//! ```
//!
//! The version is checked before the body is decoded; a frame with an
//! unknown version, a length of 0 or above the limit, or a body that does not
//! decode closes the connection (the node itself carries on), and so does a
//! connection that sends its magic but no complete first frame within
//! `--peer-idle-timeout-ms` (10 s). Variants of the enums below are only
//! ever appended; changing one means a new [`PROTOCOL_VERSION`]. (Version 4
//! moved to the kit's framing: the version field grew from one byte to two; version 5 added the data plane's `Covered` message and `DigestReply.covers`; version 6 a CRC-32 in every payload.)
//!
//! Two kinds of traffic share a connection:
//!
//! * [`Body::Chord`]: one-way messages of the chord-core state machine (ping,
//!   get-state, notify/rectify, find-step for iterative lookups, forward for
//!   recursive ones, leaving...). The core matches its own requests and
//!   replies and times them out, so the transport never waits for them.
//! * [`Body::Data`]: one-way messages of chord-core's data plane (reads,
//!   writes at a key's owner, replication, anti-entropy, hand-off, garbage
//!   collection). Like the ring's, the plane matches and times out its own
//!   requests.
//! * [`Body::Request`] / [`Body::Response`]: `Whoami`, the one driver RPC (a
//!   joining process learns a member id), matched by a per-connection id.

use bytes::Bytes;
use chord_core::data::DataMsg;
use chord_core::{Id, Message, NodeRef};
use serde::{Deserialize, Serialize};
use server_kit::frame::{self, FrameError};
use std::net::SocketAddr;

/// The first bytes of a peer connection.
pub const MAGIC: &[u8; 8] = b"\xC4CHORD1\n";

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 7;

/// The default limit on one frame, in bytes.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 32 << 20;

/// Chord-core messages as they travel between processes.
pub type CoreMsg = Message<SocketAddr>;

/// One frame's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Body {
    /// A chord-core message for virtual node `to`.
    Chord {
        /// Destination virtual node.
        to: Id,
        /// Sender.
        from: NodeRef<SocketAddr>,
        /// The message.
        msg: CoreMsg,
    },
    /// A driver request, answered on the same connection.
    Request {
        /// Per-connection request id.
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
    /// A data-plane message (chord-core's `DataMsg`) from the process at `from`.
    Data {
        /// The sending process (its listen address).
        from: SocketAddr,
        /// The message.
        msg: DataMsg,
    },
}

/// Driver requests (everything about keys is a [`Body::Data`] message).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// The ids of the receiver's joined virtual nodes (a joining node's first step).
    Whoami,
}

/// Answers to [`Request`]s.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// The receiver's joined virtual-node ids.
    Ids(Vec<Id>),
    /// The request failed.
    Error(String),
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// No version, or another protocol version.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The body does not decode.
    #[error("undecodable frame: {0}")]
    Decode(#[from] postcard::Error),
}

/// The payload of a frame (version and body, without the length prefix).
pub fn encode(body: &Body) -> Bytes {
    // Encoding into a Vec only fails on types serde cannot express, which
    // ours do not contain.
    let body = postcard::to_stdvec(body).expect("wire types always encode");
    frame::payload(PROTOCOL_VERSION, &body)
}

/// Decodes a frame payload, checking the version first, then the checksum.
pub fn decode(payload: &[u8]) -> Result<Body, WireError> {
    let body = frame::open_payload(payload, PROTOCOL_VERSION)?;
    decode_body(body)
}

/// Decodes a frame body (a payload after its version and checksum).
pub fn decode_body(body: &[u8]) -> Result<Body, WireError> {
    Ok(postcard::from_bytes(body)?)
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
        assert_eq!(bytes[..2], PROTOCOL_VERSION.to_be_bytes());
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
            resp: Response::Ids(Vec::new()),
        })
        .to_vec();
        bytes[..2].copy_from_slice(&9u16.to_be_bytes());
        assert!(matches!(
            decode(&bytes),
            Err(WireError::Frame(FrameError::Version { found: 9, .. }))
        ));
        assert!(matches!(
            decode(&[]),
            Err(WireError::Frame(FrameError::Short(0)))
        ));
        for n in 0..200u8 {
            let junk: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37) ^ n).collect();
            let mut framed = PROTOCOL_VERSION.to_be_bytes().to_vec();
            framed.extend(junk);
            let _ = decode(&framed);
        }
    }
}
