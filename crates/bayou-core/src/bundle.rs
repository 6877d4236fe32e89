//! Anti-entropy over files ([P97 §4.1, Fig. 4]): a *bundle* is one session
//! from a sender, computed for a given receiver state, written to a file so
//! that it can travel on any medium. Importing it has the semantics of the
//! on-line session: items already held are ignored (re-importing is
//! harmless), a receiver behind the sender's truncation point gets a
//! full-state transfer, and bundles chain (A → file → B → file → C carries
//! A's writes to C with no network).
//!
//! # Preconditions
//!
//! A bundle records the receiver state it was computed for (`base`: version
//! vector, CSN, and a staged full-state transfer it continues, if any), and
//! at its end the state a receiver reaches by importing it (`end`) and the
//! sender's own CSN and version vector ([P97 §4.1]). Any replica whose state
//! dominates `base` may import it ([`Replica::check_base`]); one that does
//! not would be left with a gap in some server's writes, so it is refused
//! and nothing changes.
//!
//! # Splitting
//!
//! A session larger than a file's limit is split across several files
//! ("chunking across devices", [P97 §4.1]): each file's `base` is the
//! previous file's `end`, so they must be imported in order (a file imported
//! out of order is refused as stale, harmlessly).
//!
//! # Format (version 2)
//!
//! ```text
//! file   := "BAYOUBDL" version:u16le record*
//! record := length:u32le crc32:u32le body[length]     (CRC-32 of body)
//! body   := postcard(Record)
//! ```
//!
//! The records are one `Header`, the chunks, and one `Footer`; a file that
//! does not end with its footer is truncated. Every record is checked before
//! anything is applied, so a damaged, truncated or foreign file changes
//! nothing.
//!
//! A write in a chunk carries its author and its accepting server's
//! signature (version 2). The CRC only catches damage; a receiver with a
//! keyring also verifies every write's signature ([`crate::auth`]), so a
//! bundle edited on the way (its CRCs recomputed) is refused as forged.

use serde::{Deserialize, Serialize};

use crate::id::{Csn, ServerId};
use crate::replica::{Item, ProtocolError, ReceiveReport, Replica, Summary};
use crate::session::{Chunk, ChunkLimits, SessionSender};
use crate::vv::VersionVector;

/// The first bytes of every bundle file.
pub const MAGIC: &[u8; 8] = b"BAYOUBDL";
/// The format version this build writes and reads (2: each write carries
/// its author and its accepting server's signature, [`crate::auth`];
/// version 1 bundles, without them, are refused by version).
pub const VERSION: u16 = 2;
/// The largest record accepted when reading (a chunk is far smaller).
pub const MAX_RECORD_BYTES: usize = 256 << 20;

/// One bundle file, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The replica that wrote it.
    pub sender: ServerId,
    /// The receiver state it was computed for: its precondition.
    pub base: Summary,
    /// Its place in a split session: 1, 2, …
    pub part: u32,
    /// The session's chunks.
    pub chunks: Vec<Chunk>,
    /// The state a receiver at `base` reaches by importing it.
    pub end: Summary,
    /// The sender's CSN when it wrote the bundle.
    pub sender_csn: Csn,
    /// The sender's version vector when it wrote the bundle.
    pub sender_vv: VersionVector,
    /// Whether this file ends the session (otherwise a next part follows).
    pub complete: bool,
}

#[derive(Serialize, Deserialize)]
enum Record {
    Header {
        sender: ServerId,
        base: Summary,
        part: u32,
    },
    Chunk(Chunk),
    Footer {
        end: Summary,
        sender_csn: Csn,
        sender_vv: VersionVector,
        complete: bool,
        chunks: u64,
    },
}

/// Why a file is not a usable bundle. Nothing was applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The file does not start with the bundle magic.
    #[error("not a Bayou bundle (it does not start with {:?})", std::str::from_utf8(MAGIC).unwrap_or(""))]
    NotABundle,
    /// Written by another format version.
    #[error("bundle format version {0}; this build reads version {VERSION}")]
    UnsupportedVersion(u16),
    /// The file ends in the middle of a record, or before its footer.
    #[error("bundle is truncated at byte {0} (no footer): it was not completely written or copied")]
    Truncated(usize),
    /// A record's checksum does not match: the file is damaged.
    #[error("bundle record {record} at byte {offset} fails its checksum: the file is damaged")]
    Checksum {
        /// The record's index.
        record: usize,
        /// Its offset in the file.
        offset: usize,
    },
    /// A record that decodes to nothing valid, or is out of place.
    #[error("bundle record {record} at byte {offset} is malformed: {reason}")]
    Malformed {
        /// The record's index.
        record: usize,
        /// Its offset in the file.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Why an import was refused. Nothing was applied, except for
/// [`ImportError::Protocol`] where the items before the bad one were.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// The file is not a usable bundle.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// The replica does not hold the state the bundle was computed for.
    #[error(
        "bundle from {sender} (part {part}) needs a replica holding at least {needs_vv:?} at CSN {needs_csn}{resume}; this replica holds {have_vv:?} at CSN {have_csn}: import the earlier parts first, or export a new bundle for this replica"
    )]
    Stale {
        /// The sender.
        sender: ServerId,
        /// The part.
        part: u32,
        /// The version vector it needs.
        needs_vv: VersionVector,
        /// The CSN it needs.
        needs_csn: Csn,
        /// The staged transfer it continues, if any, as text.
        resume: String,
        /// This replica's vector.
        have_vv: VersionVector,
        /// This replica's CSN.
        have_csn: Csn,
    },
    /// An item broke the protocol (a bundle from another cluster, or a bug).
    #[error("bundle refused by the protocol: {0}")]
    Protocol(ProtocolError),
}

/// Writes the session from `sender` to a receiver at `base` as bundle
/// files of at most about `max_file_bytes` each (at least one chunk per
/// file). The caller must make the sender's queued persistence durable
/// before the files leave (the persistence contract).
pub fn export(
    sender: &mut Replica,
    base: Summary,
    max_file_bytes: usize,
    limits: ChunkLimits,
) -> Vec<Vec<u8>> {
    let limits = ChunkLimits {
        items: limits.items,
        bytes: limits.bytes.min((max_file_bytes / 2).max(1)),
    };
    let mut file_base = base.clone();
    let mut session = SessionSender::new(base);
    let mut files = Vec::new();
    let mut pending: Option<Chunk> = None;
    loop {
        let mut chunks = Vec::new();
        let mut size = 0;
        let mut complete = false;
        loop {
            let next = match pending.take() {
                Some(c) => Some(c),
                None => session.next_chunk(sender, limits),
            };
            let Some(chunk) = next else {
                complete = true;
                break;
            };
            let s = chunk.approx_size();
            if !chunks.is_empty() && size + s > max_file_bytes {
                pending = Some(chunk);
                break;
            }
            size += s;
            chunks.push(chunk);
        }
        // The end state: the base advanced by exactly this file's chunks
        // (the session's own summary may be past a chunk held for the next
        // file).
        let end = summary_after(&file_base, &chunks);
        let mut base = std::mem::replace(&mut file_base, end.clone());
        // A file that starts a full-state transfer afresh does not continue
        // the receiver's staged one, so it does not require it. Were it
        // required, a file whose fresh transfer replaced the staged one on
        // import could not be imported again, and repeating an import must
        // be harmless.
        if let Some(Chunk::Snapshot(part)) = chunks.first()
            && part.after.is_none()
        {
            base.resume = None;
        }
        let bundle = Bundle {
            sender: sender.id().clone(),
            base,
            part: files.len() as u32 + 1,
            chunks,
            end,
            sender_csn: sender.csn(),
            sender_vv: sender.vv().clone(),
            complete,
        };
        files.push(encode(&bundle));
        if complete {
            return files;
        }
    }
}

/// `base` advanced past `chunks`, as a receiver's state advances.
fn summary_after(base: &Summary, chunks: &[Chunk]) -> Summary {
    let mut s = base.clone();
    for chunk in chunks {
        match chunk {
            Chunk::Items(items) => {
                for item in items {
                    crate::session::advance(&mut s, item);
                }
            }
            Chunk::Snapshot(part) => {
                if part.last {
                    s.csn = s.csn.max(part.csn);
                    s.vv.merge(&part.vv);
                    s.resume = None;
                } else if let Some((k, _)) = part.entries.last() {
                    s.resume = Some(crate::session::Resume {
                        csn: part.csn,
                        after: k.clone(),
                    });
                }
            }
        }
    }
    s
}

/// Encodes a bundle as a file.
pub fn encode(bundle: &Bundle) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    let mut put = |record: &Record| {
        // Serialising our own plain data into a Vec cannot fail.
        let body = postcard::to_stdvec(record).expect("postcard encodes plain data");
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        out.extend_from_slice(&body);
    };
    put(&Record::Header {
        sender: bundle.sender.clone(),
        base: bundle.base.clone(),
        part: bundle.part,
    });
    for chunk in &bundle.chunks {
        put(&Record::Chunk(chunk.clone()));
    }
    put(&Record::Footer {
        end: bundle.end.clone(),
        sender_csn: bundle.sender_csn,
        sender_vv: bundle.sender_vv.clone(),
        complete: bundle.complete,
        chunks: bundle.chunks.len() as u64,
    });
    out
}

/// Decodes and checks a whole bundle file: magic, version, every record's
/// checksum and structure, and the footer.
pub fn decode(bytes: &[u8]) -> Result<Bundle, BundleError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(BundleError::NotABundle);
    }
    let mut pos = MAGIC.len();
    let Some(v) = bytes.get(pos..pos + 2) else {
        return Err(BundleError::Truncated(bytes.len()));
    };
    let version = u16::from_le_bytes([v[0], v[1]]);
    if version != VERSION {
        return Err(BundleError::UnsupportedVersion(version));
    }
    pos += 2;
    let mut header = None;
    let mut chunks = Vec::new();
    let mut index = 0;
    while pos < bytes.len() {
        let offset = pos;
        let malformed = |reason: String| BundleError::Malformed {
            record: index,
            offset,
            reason,
        };
        let Some(h) = bytes.get(pos..pos + 8) else {
            return Err(BundleError::Truncated(bytes.len()));
        };
        let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        if len > MAX_RECORD_BYTES {
            return Err(malformed(format!(
                "record of {len} bytes exceeds the limit of {MAX_RECORD_BYTES}"
            )));
        }
        pos += 8;
        let Some(body) = bytes.get(pos..pos + len) else {
            return Err(BundleError::Truncated(bytes.len()));
        };
        if crc32fast::hash(body) != crc {
            return Err(BundleError::Checksum {
                record: index,
                offset,
            });
        }
        pos += len;
        let record: Record = postcard::from_bytes(body).map_err(|e| malformed(e.to_string()))?;
        match (record, &header) {
            (Record::Header { sender, base, part }, None) if index == 0 => {
                header = Some((sender, base, part));
            }
            (_, None) => return Err(malformed("the first record is not the header".into())),
            (Record::Header { .. }, Some(_)) => {
                return Err(malformed("a second header".into()));
            }
            (Record::Chunk(c), Some(_)) => chunks.push(c),
            (
                Record::Footer {
                    end,
                    sender_csn,
                    sender_vv,
                    complete,
                    chunks: count,
                },
                Some(_),
            ) => {
                if pos != bytes.len() {
                    return Err(malformed("bytes follow the footer".into()));
                }
                if count != chunks.len() as u64 {
                    return Err(malformed(format!(
                        "the footer counts {count} chunks but the file holds {}",
                        chunks.len()
                    )));
                }
                let (sender, base, part) = header.expect("matched Some");
                return Ok(Bundle {
                    sender,
                    base,
                    part,
                    chunks,
                    end,
                    sender_csn,
                    sender_vv,
                    complete,
                });
            }
        }
        index += 1;
    }
    Err(BundleError::Truncated(bytes.len()))
}

impl Replica {
    /// Imports a decoded bundle with the semantics of an anti-entropy
    /// session ([P97 §4.1]): refused whole unless this replica holds the
    /// state it was computed for; items already held are ignored.
    pub fn import_bundle(&mut self, bundle: &Bundle) -> Result<ReceiveReport, ImportError> {
        if self.check_base(&bundle.base).is_err() {
            return Err(ImportError::Stale {
                sender: bundle.sender.clone(),
                part: bundle.part,
                needs_vv: bundle.base.vv.clone(),
                needs_csn: bundle.base.csn,
                resume: match &bundle.base.resume {
                    Some(r) => format!(
                        " with a full-state transfer of CSN {} staged up to key {:?}",
                        r.csn,
                        String::from_utf8_lossy(&r.after)
                    ),
                    None => String::new(),
                },
                have_vv: self.vv().clone(),
                have_csn: self.csn(),
            });
        }
        // A bundle is refused whole, not from its first forged chunk on:
        // every write of every chunk is verified before any is applied
        // (and again, cheaply enough, chunk by chunk by `receive`).
        if let Some(authority) = self.authority() {
            for chunk in &bundle.chunks {
                let Chunk::Items(items) = chunk else { continue };
                for item in items {
                    if let Item::Write { write, .. } = item {
                        authority.verify(write).map_err(|reason| {
                            ImportError::Protocol(ProtocolError::Forged {
                                id: write.id.clone(),
                                reason,
                            })
                        })?;
                    }
                }
            }
        }
        self.receive_session(&bundle.base, bundle.chunks.iter().cloned())
            .map_err(ImportError::Protocol)
    }
}
