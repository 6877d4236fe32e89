//! The peer protocol: how two replicas run anti-entropy over TCP.
//!
//! Peers connect to the same port as clients. A peer connection starts with
//! the 8-byte [`MAGIC`] (its first byte, 0, can never start a RESP request),
//! followed by frames in the kit's peer framing ([`server_kit::frame`], the
//! same as Chord's):
//!
//! ```text
//! frame   = length (u32, big-endian, at most max_frame_bytes) payload
//! payload = version (u16, big-endian) crc32 (u32, of version and body) postcard(Msg)
//! ```
//!
//! The version is read before the body is decoded, so a peer speaking another
//! version gets an [`Msg::Error`] naming ours, and the connection closes. A
//! frame above the limit, or a body that does not decode, closes it too.
//!
//! A session, started by the *initiator* `I` with the *responder* `R`:
//!
//! ```text
//! I -> R  HelloMember { from: I, to: R, created }
//!                                            R checks it is R and online
//! R -> I  Welcome { from: R }
//! I -> R  PushOffer                          R receives from I ([P97 Fig. 2])
//! R -> I  Pull { summary of R }
//!                                            (if `created` is not what R's
//!                                            committed membership binds I's
//!                                            name to, R drops the chunks)
//! I -> R  Chunk { .. } * , End
//! R -> I  Ack { new_writes, commits }        sent once R's writes are durable
//! I -> R  Pull { summary of I }              then I receives from R
//! R -> I  Chunk { .. } * , End
//! ```
//!
//! Push comes first so that when R is the primary, the commits of I's writes
//! come back in the same session. An initiator that is not a member yet
//! (its creation not committed, or lost) skips the push: it has no write of
//! its own, and a loser must still be able to pull and learn it lost.
//! A push from a second owner of a name is read and dropped (acknowledged
//! as nothing new), and the session goes on, so it learns it too.
//!
//! The chunks are those of `bayou_core::SessionSender`: a full-state
//! transfer first when the receiver is behind the sender's truncation point
//! (its summary says how far a cut transfer got, so the next session
//! resumes it), then items in the sender's log order, so any prefix is a
//! valid interrupted session and a receiver keeps what it got.

use bayou_core::{Chunk, ServerId, Summary, WriteId};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use server_kit::frame::{self, FrameError};

/// The first bytes of a peer connection.
pub const MAGIC: &[u8; 8] = b"\0BAYOUAE";

/// The protocol version this build speaks (5: writes may be membership
/// writes, `bayou_core::member`, and the initiator names its creation,
/// [`Msg::HelloMember`]; 4: writes carry their author and their accepting
/// server's signature, `bayou_core::auth`).
pub const PROTOCOL_VERSION: u16 = 5;

/// The default limit on one frame, in bytes.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;

/// One peer protocol message. Variants are only ever appended; changing one
/// means a new [`PROTOCOL_VERSION`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// The initiator names itself and the replica it expects to reach.
    Hello {
        /// The initiator.
        from: ServerId,
        /// The replica it meant to connect to.
        to: ServerId,
    },
    /// The responder accepts the session.
    Welcome {
        /// The responder.
        from: ServerId,
    },
    /// "Send me the items I lack": the receiver's summary.
    Pull {
        /// The receiver's version vector and CSN.
        summary: Summary,
    },
    /// A chunk of the session: items in the sender's log order, or a part
    /// of a full-state transfer.
    Chunk {
        /// The chunk.
        chunk: Chunk,
    },
    /// The sender has sent everything the receiver lacked.
    End,
    /// The initiator offers to send; the responder answers with `Pull`.
    PushOffer,
    /// The receiver has applied and made durable what it was sent.
    Ack {
        /// Writes new to the receiver.
        new_writes: u64,
        /// Commit notifications that were new to the receiver.
        commits: u64,
    },
    /// A refusal; the sender closes the connection after it.
    Error {
        /// Why.
        message: String,
        /// The protocol version the sender speaks.
        version: u16,
    },
    /// `Hello`, with the creation write that binds the initiator's name
    /// (`None`: a founder, or a server started from a static peer list),
    /// so the responder can refuse writes from a second owner of a name
    /// ([`crate::member`]). What initiators send; `Hello` counts as `None`.
    HelloMember {
        /// The initiator.
        from: ServerId,
        /// The replica it meant to connect to.
        to: ServerId,
        /// Its creation write.
        created: Option<WriteId>,
    },
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer speaks another protocol version.
    #[error("peer speaks protocol version {0}, this replica speaks {PROTOCOL_VERSION}")]
    Version(u16),
    /// The payload does not decode.
    #[error("undecodable frame: {0}")]
    Decode(String),
    /// The frame is too short to hold a version.
    #[error("frame of {0} bytes is too short")]
    Short(usize),
}

/// Encodes `msg` as a payload (version + body), without the length prefix.
pub fn encode(msg: &Msg) -> Bytes {
    encode_with_version(msg, PROTOCOL_VERSION)
}

/// Encodes `msg` with an arbitrary version (for tests of version handling).
pub fn encode_with_version(msg: &Msg, version: u16) -> Bytes {
    let body = postcard::to_stdvec(msg).expect("postcard encodes plain data");
    frame::payload(version, &body)
}

/// Decodes a payload, checking its version first, then its checksum.
pub fn decode(payload: &[u8]) -> Result<Msg, WireError> {
    let body = frame::open_payload(payload, PROTOCOL_VERSION).map_err(|e| match e {
        FrameError::Version { found, .. } => WireError::Version(found),
        FrameError::Checksum { .. } => WireError::Decode(e.to_string()),
        _ => WireError::Short(payload.len()),
    })?;
    decode_body(body)
}

/// Decodes a message body (a payload after its version and checksum).
pub fn decode_body(body: &[u8]) -> Result<Msg, WireError> {
    postcard::from_bytes(body).map_err(|e| WireError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bayou_core::{Item, Op, Signature, SnapshotPart, VersionVector, Write, WriteId};

    #[test]
    fn messages_round_trip() {
        let a = ServerId::new("A").unwrap();
        let msgs = vec![
            Msg::Hello {
                from: a.clone(),
                to: ServerId::new("B").unwrap(),
            },
            Msg::Pull {
                summary: Summary::default(),
            },
            Msg::Chunk {
                chunk: Chunk::Items(vec![Item::Write {
                    write: Write {
                        signature: Some(Signature::from_bytes([7; 64])),
                        ..Write::new(WriteId::new(5, a), Op::put("Z", "8")).by(Some("alice".into()))
                    },
                    csn: Some(3),
                }]),
            },
            Msg::Chunk {
                chunk: Chunk::Snapshot(SnapshotPart {
                    csn: 7,
                    vv: VersionVector::new(),
                    after: Some("k".into()),
                    entries: vec![("l".into(), "v".into())],
                    last: false,
                }),
            },
            Msg::End,
            Msg::HelloMember {
                from: ServerId::new("C").unwrap(),
                to: ServerId::new("B").unwrap(),
                created: Some(WriteId::new(9, ServerId::new("B").unwrap())),
            },
            Msg::Ack {
                new_writes: 1,
                commits: 2,
            },
        ];
        for m in msgs {
            assert_eq!(decode(&encode(&m)).unwrap(), m);
        }
    }

    #[test]
    fn another_version_is_refused_before_decoding() {
        let payload = encode_with_version(&Msg::End, PROTOCOL_VERSION + 1);
        assert!(
            matches!(decode(&payload), Err(WireError::Version(v)) if v == PROTOCOL_VERSION + 1)
        );
        assert!(matches!(decode(&[0]), Err(WireError::Short(1))));
        // Our version, but too short for a checksum; then a checksum that
        // does not match; then a good checksum over a body that does not
        // decode.
        assert!(matches!(
            decode(&[0, PROTOCOL_VERSION as u8, 200, 200, 200]),
            Err(WireError::Short(5))
        ));
        assert!(matches!(
            decode(&[0, PROTOCOL_VERSION as u8, 1, 2, 3, 4, 200]),
            Err(WireError::Decode(e)) if e.contains("checksum")
        ));
        let garbage = server_kit::frame::payload(PROTOCOL_VERSION, &[200, 200, 200]);
        assert!(matches!(decode(&garbage), Err(WireError::Decode(_))));
    }

    #[test]
    fn an_invalid_server_id_does_not_decode() {
        // A Hello whose id holds a space: ServerId validates on decode.
        let mut payload = vec![0, PROTOCOL_VERSION as u8, 0, 3];
        payload.extend_from_slice(b"a b");
        payload.extend_from_slice(&[1, b'B']);
        assert!(matches!(decode(&payload), Err(WireError::Decode(_))));
    }
}
