//! Peer framing, the same for both nodes: after a node's magic prefix
//! ([`crate::open`]), a peer connection carries frames in both directions:
//!
//! ```text
//! frame   = length (u32, big-endian, 1..=max) payload
//! payload = version (u16, big-endian) crc32 (u32, big-endian) body
//! ```
//!
//! The CRC-32 covers the version and the body: a payload changed on the way
//! (a bad NIC, a buggy proxy, memory) is refused before it is decoded, so a
//! damaged write never reaches a peer's log. (TCP's own checksum is 16 bits
//! and misses some double errors.)
//!
//! Each node keeps its own magic, protocol version and body encoding
//! (postcard of its message type); the kit owns the length prefix, the size
//! limit (checked at the header, before any allocation: memory grows with
//! the bytes actually received), the version field (read before the body is
//! decoded, so a peer of another version is told apart from garbage), and
//! the idle timeout of a peer connection that stops sending
//! ([`FrameReader::next`]).
//!
//! [`decode`] is sans-IO (a buffer in, a payload out); [`FrameReader`]
//! wraps it around a stream with timeouts; [`payload`] and
//! [`open_payload`] add and check the version, [`frame_into`] and
//! [`write_frame`] add the length.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes of the length prefix.
pub const LENGTH_BYTES: usize = 4;

/// Bytes of the version at the start of every payload.
pub const VERSION_BYTES: usize = 2;

/// Bytes of the checksum after the version.
pub const CHECKSUM_BYTES: usize = 4;

/// How long a peer connection that has sent its magic prefix may wait
/// without sending the next byte of a frame it owes, unless a node says
/// otherwise.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The declared length is 0 or above the limit; the connection must
    /// close (the rest of the stream cannot be framed).
    #[error("frame length {len} outside 1..={max}")]
    Length {
        /// The declared length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The payload is too short to hold a version and a checksum.
    #[error("frame of {0} bytes is too short for a version and a checksum")]
    Short(usize),
    /// The payload is not what was sent.
    #[error("frame checksum mismatch (sent {sent:08x}, received {received:08x})")]
    Checksum {
        /// The checksum in the frame.
        sent: u32,
        /// The checksum of the bytes received.
        received: u32,
    },
    /// The payload carries another protocol version.
    #[error("peer speaks protocol version {found}, this node speaks {expected}")]
    Version {
        /// The version in the frame.
        found: u16,
        /// The version this node speaks.
        expected: u16,
    },
    /// The stream ended inside a frame.
    #[error("connection closed inside a frame")]
    Truncated,
    /// Nothing arrived within the idle timeout.
    #[error("no data for {0:?}")]
    Idle(Duration),
    /// Reading failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
}

fn checksum(version: u16, body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&version.to_be_bytes());
    h.update(body);
    h.finalize()
}

/// A payload: `version`, the checksum, then `body`.
pub fn payload(version: u16, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(VERSION_BYTES + CHECKSUM_BYTES + body.len());
    out.put_u16(version);
    out.put_u32(checksum(version, body));
    out.extend_from_slice(body);
    out.freeze()
}

/// Appends one frame (length, then `payload`) to `out`.
pub fn frame_into(payload: &[u8], out: &mut BytesMut) {
    out.reserve(LENGTH_BYTES + payload.len());
    out.put_u32(payload.len() as u32);
    out.extend_from_slice(payload);
}

/// Writes one frame (length, then `payload`).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, payload: &[u8]) -> std::io::Result<()> {
    w.write_all(&(payload.len() as u32).to_be_bytes()).await?;
    w.write_all(payload).await
}

/// Takes one complete frame's payload off the front of `buf`: `Ok(None)`
/// until a whole frame is there. A length of 0 or above `max` is an error
/// at the header, before the payload arrives.
pub fn decode(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < LENGTH_BYTES {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 || len > max {
        return Err(FrameError::Length { len, max });
    }
    if buf.len() < LENGTH_BYTES + len {
        return Ok(None);
    }
    buf.advance(LENGTH_BYTES);
    Ok(Some(buf.split_to(len).freeze()))
}

/// The body of a payload; refuses a version other than `expected` before
/// the body is looked at, then a body whose checksum fails.
pub fn open_payload(payload: &[u8], expected: u16) -> Result<&[u8], FrameError> {
    if payload.len() < VERSION_BYTES {
        return Err(FrameError::Short(payload.len()));
    }
    let found = u16::from_be_bytes([payload[0], payload[1]]);
    if found != expected {
        return Err(FrameError::Version { found, expected });
    }
    if payload.len() < VERSION_BYTES + CHECKSUM_BYTES {
        return Err(FrameError::Short(payload.len()));
    }
    let sent = u32::from_be_bytes([payload[2], payload[3], payload[4], payload[5]]);
    let body = &payload[VERSION_BYTES + CHECKSUM_BYTES..];
    let received = checksum(found, body);
    if sent != received {
        return Err(FrameError::Checksum { sent, received });
    }
    Ok(body)
}

/// Reads frames from a stream, at most `max` bytes each.
#[derive(Debug)]
pub struct FrameReader<R> {
    reader: R,
    buf: BytesMut,
    max: usize,
    received: u64,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `reader`, starting with the bytes already read
    /// (`already`, e.g. what followed the magic prefix).
    pub fn new(reader: R, already: BytesMut, max: usize) -> FrameReader<R> {
        FrameReader {
            reader,
            buf: already,
            max,
            received: 0,
        }
    }

    /// Bytes read from the stream so far (not counting `already`).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The next frame's payload; `Ok(None)` at a clean end of stream
    /// between frames. With `idle`, a wait of that long for the next bytes
    /// (of a frame not yet started, or of one half received) is
    /// [`FrameError::Idle`]: the caller closes the connection.
    pub async fn next(&mut self, idle: Option<Duration>) -> Result<Option<Bytes>, FrameError> {
        loop {
            if let Some(frame) = decode(&mut self.buf, self.max)? {
                return Ok(Some(frame));
            }
            self.buf.reserve(64 << 10);
            let read = self.reader.read_buf(&mut self.buf);
            let n = match idle {
                Some(t) => tokio::time::timeout(t, read)
                    .await
                    .map_err(|_| FrameError::Idle(t))??,
                None => read.await?,
            };
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated)
                };
            }
            self.received += n as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_changed_on_the_way_is_refused_before_it_is_decoded() {
        let p = payload(7, b"a write");
        assert_eq!(open_payload(&p, 7).unwrap(), b"a write");
        for i in 2..p.len() {
            let mut bad = p.to_vec();
            bad[i] ^= 0x10;
            assert!(
                matches!(open_payload(&bad, 7), Err(FrameError::Checksum { .. })),
                "byte {i}"
            );
        }
        assert!(matches!(
            open_payload(&p[..4], 7),
            Err(FrameError::Short(4))
        ));
    }

    #[test]
    fn frames_round_trip_and_limits_are_checked_at_the_header() {
        let mut buf = BytesMut::new();
        frame_into(&payload(3, b"hello"), &mut buf);
        frame_into(&payload(3, b""), &mut buf);
        let first = decode(&mut buf, 64).unwrap().unwrap();
        assert_eq!(open_payload(&first, 3).unwrap(), b"hello");
        let second = decode(&mut buf, 64).unwrap().unwrap();
        assert_eq!(open_payload(&second, 3).unwrap(), b"");
        assert!(decode(&mut buf, 64).unwrap().is_none());
        assert!(matches!(
            open_payload(&first, 4),
            Err(FrameError::Version {
                found: 3,
                expected: 4
            })
        ));
        assert!(matches!(open_payload(&[1], 1), Err(FrameError::Short(1))));
        // A huge declared length is refused with only the header received.
        let mut huge = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert!(matches!(
            decode(&mut huge, 1 << 20),
            Err(FrameError::Length { .. })
        ));
        let mut zero = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert!(matches!(
            decode(&mut zero, 64),
            Err(FrameError::Length { len: 0, .. })
        ));
    }

    #[tokio::test]
    async fn a_reader_times_out_when_idle_and_tells_a_clean_end_from_a_cut() {
        let (mut a, b) = tokio::io::duplex(1024);
        let mut r = FrameReader::new(b, BytesMut::new(), 64);
        let idle = Duration::from_millis(50);
        assert!(matches!(r.next(Some(idle)).await, Err(FrameError::Idle(_))));
        write_frame(&mut a, &payload(1, b"x")).await.unwrap();
        a.write_all(&[0, 0]).await.unwrap();
        let got = r.next(Some(idle)).await.unwrap().unwrap();
        assert_eq!(open_payload(&got, 1).unwrap(), b"x");
        // Half a header, then nothing: idle too.
        assert!(matches!(r.next(Some(idle)).await, Err(FrameError::Idle(_))));
        drop(a);
        assert!(matches!(r.next(None).await, Err(FrameError::Truncated)));
        let (a, b) = tokio::io::duplex(16);
        drop(a);
        let mut r = FrameReader::new(b, BytesMut::new(), 64);
        assert!(r.next(None).await.unwrap().is_none());
    }
}
