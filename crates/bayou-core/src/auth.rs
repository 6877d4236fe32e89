//! Writes that carry their author and cannot be forged on the way.
//!
//! # What is signed, and by whom
//!
//! The server that accepts a write from a client (its *accepting server*,
//! the `server` of its id `<stamp, server>`) records who submitted it
//! ([`Write::author`], `None` on an open server) and signs it with its own
//! ed25519 key ([`Write::signature`]). The signed message
//! ([`signed_message`]) is a domain-separated, canonical encoding of the
//! write's id (stamp and server), its author and its operation: change any
//! of them and the signature no longer verifies.
//!
//! Every other server verifies that signature wherever the write arrives:
//! in an anti-entropy chunk, in a bundle file, in the log part of a
//! full-state transfer. It holds a *keyring*: each server id with its
//! public key. A chunk holding a write whose signature is missing or wrong,
//! or whose accepting server has no key in the keyring, is refused whole
//! ([`crate::ProtocolError::Forged`]): nothing of it enters the log.
//!
//! This is the "sign writes" choice of issue 15, rather than "authenticate
//! every hop and record it": a write is checked against the one server that
//! vouched for it, however many replicas (or bundle files) relayed it, and a
//! relay cannot add, drop or change anything of what was signed. That is
//! Bayou's own design ([T95 §8]: a write's certificate is checked where the
//! write is accepted and again where it executes).
//!
//! # Permission at execution
//!
//! Where a write executes (every replica, tentatively and again at commit),
//! each key it changes is checked against its author's permissions
//! ([`WriteAuthority::may_write`]). A write whose author may not write one
//! of them executes as a no-op with the outcome
//! `Failed("NOPERM <author> may not write <key>")`. The check depends only
//! on the author, the key and the permissions, so replicas that share the
//! same users file decide the same way and still converge; replicas with
//! different users files may not.
//!
//! # What it protects against
//!
//! * A relaying replica, or anyone who edits a bundle file, that changes a
//!   write's value, key, author, stamp or accepting server: refused where it
//!   arrives.
//! * A replica that invents a write in another server's name: it lacks
//!   that server's key.
//! * A user who submits writes to keys they may not write, through any
//!   server: their writes have no effect anywhere, as long as the accepting
//!   server recorded the right author (it is trusted to, since it signs).
//!
//! # What it does not protect against
//!
//! * A compromised accepting server: it holds its key and can sign anything
//!   in any author's name. Its writes are as trustworthy as it is.
//! * Dropping or delaying writes: a relay can withhold a write (the next
//!   honest session delivers it) but cannot alter it.
//! * Commit notifications (`<stamp, server, CSN>`) are not signed: they come
//!   from the primary through peers, and a lying peer could misreport which
//!   write got which CSN. The transport (authenticated peers) is what
//!   protects them.
//! * The committed database of a full-state transfer is not signed either:
//!   a receiver installs the snapshot its peer sends. Only the log part that
//!   follows it is verified write by write.
//! * Replay is harmless rather than prevented: a write already held is
//!   ignored by its id.
//!
//! The core never draws randomness: the driver generates keys and passes
//! their bytes in ([`Ed25519Authority::new`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::id::ServerId;
use crate::replica::Write;

/// The prefix of every signed message, so a write signature can never be
/// mistaken for a signature over anything else made with the same key.
pub const SIGNATURE_DOMAIN: &[u8] = b"bayou-write-signature-v1\0";

/// An ed25519 signature by a write's accepting server. Boxed, so a write
/// without one (an open cluster) pays one pointer, not 64 bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Signature(Box<[u8; 64]>);

impl Signature {
    /// Wraps the 64 bytes of a signature.
    pub fn from_bytes(bytes: [u8; 64]) -> Signature {
        Signature(Box::new(bytes))
    }

    /// The 64 bytes.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(&self.0[..8]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0[..])
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Signature, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Signature;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Signature, E> {
                let bytes: [u8; 64] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Signature::from_bytes(bytes))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Signature, A::Error> {
                let mut bytes = [0u8; 64];
                for (i, b) in bytes.iter_mut().enumerate() {
                    *b = seq
                        .next_element()?
                        .ok_or_else(|| serde::de::Error::invalid_length(i, &self))?;
                }
                if seq.next_element::<u8>()?.is_some() {
                    return Err(serde::de::Error::invalid_length(65, &self));
                }
                Ok(Signature::from_bytes(bytes))
            }
        }
        d.deserialize_bytes(Visit)
    }
}

/// Why a write that arrived from elsewhere was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForgedWrite {
    /// Signing is on, and the write carries no signature.
    #[error("it is not signed")]
    Unsigned,
    /// The keyring has no key for the write's accepting server.
    #[error("its accepting server {0} has no key in the keyring")]
    UnknownServer(ServerId),
    /// The signature does not verify: the id, author or operation changed
    /// since the accepting server signed it (or someone else signed it).
    #[error("its signature does not match its id, author and operation")]
    BadSignature,
}

/// Signs the writes a replica accepts, verifies those it receives, and
/// decides what an author may write. See the module documentation. A
/// replica with none (`Replica::set_authority(None)`) is an open cluster:
/// nothing is signed, verified or checked.
pub trait WriteAuthority: Send + Sync + fmt::Debug {
    /// This replica's signature over a write it accepts from a client.
    fn sign(&self, write: &Write) -> Signature;
    /// Checks a write that arrived from anywhere else.
    fn verify(&self, write: &Write) -> Result<(), ForgedWrite>;
    /// Whether `author` may write `key`: checked for every key a write
    /// changes, wherever it executes.
    fn may_write(&self, author: &str, key: &[u8]) -> bool;
}

/// The message a write's signature covers: the domain, then the stamp
/// (u64, big-endian), the accepting server (length-prefixed), the author
/// (0 for none, or 1 and the length-prefixed name), then the operation in
/// postcard. Every field is length-delimited, so no two writes share one.
pub fn signed_message(write: &Write) -> Vec<u8> {
    let op = postcard::to_stdvec(&write.op).expect("postcard encodes plain data");
    let server = write.id.server.as_str().as_bytes();
    let mut m = Vec::with_capacity(SIGNATURE_DOMAIN.len() + 32 + server.len() + op.len());
    m.extend_from_slice(SIGNATURE_DOMAIN);
    m.extend_from_slice(&write.id.stamp.to_be_bytes());
    m.extend_from_slice(&(server.len() as u32).to_be_bytes());
    m.extend_from_slice(server);
    match &write.author {
        None => m.push(0),
        Some(a) => {
            m.push(1);
            m.extend_from_slice(&(a.len() as u32).to_be_bytes());
            m.extend_from_slice(a.as_bytes());
        }
    }
    m.extend_from_slice(&op);
    m
}

/// Why a keyring (or a key in it) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    /// A line of a keyring file that is not `<server-id> <hex public key>`.
    #[error("keyring line {line}: {reason}")]
    Line {
        /// The line number, from 1.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A public key that is not a valid ed25519 point.
    #[error("the public key of {0} is not a valid ed25519 key")]
    BadKey(ServerId),
    /// The keyring lists this server with a key other than its own.
    #[error(
        "the keyring lists {0} with another public key than its signing key's: fix the keyring or use the right --signing-key"
    )]
    NotOwnKey(ServerId),
}

/// Each server's public key: who may sign writes as which server.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Keyring {
    keys: BTreeMap<ServerId, VerifyingKey>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.keys()).finish()
    }
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Parses a keyring file: one `<server-id> <hex public key>` a line;
    /// blank lines and `#` comments are ignored. A server listed twice with
    /// different keys is an error (with the same key, harmless).
    pub fn parse(text: &str) -> Result<Keyring, KeyringError> {
        let mut ring = Keyring::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |reason: String| KeyringError::Line { line, reason };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let mut fields = content.split_whitespace();
            let (Some(id), Some(key), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(bad(format!(
                    "expected `<server-id> <hex public key>`, found {content:?}"
                )));
            };
            let server = ServerId::new(id).map_err(|e| bad(e.to_string()))?;
            let bytes: [u8; 32] = hex::decode(key)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| bad(format!("{key:?} is not 64 hex digits (a 32-byte key)")))?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|_| bad(format!("the key of {server} is not a valid ed25519 key")))?;
            if ring.keys.get(&server).is_some_and(|k| *k != key) {
                return Err(bad(format!("{server} is listed twice with different keys")));
            }
            ring.keys.insert(server, key);
        }
        Ok(ring)
    }

    /// Adds (or replaces) `server`'s public key.
    pub fn insert(&mut self, server: ServerId, public: [u8; 32]) -> Result<(), KeyringError> {
        let key =
            VerifyingKey::from_bytes(&public).map_err(|_| KeyringError::BadKey(server.clone()))?;
        self.keys.insert(server, key);
        Ok(())
    }

    /// The public key of `server`, if listed.
    pub fn get(&self, server: &ServerId) -> Option<[u8; 32]> {
        self.keys.get(server).map(VerifyingKey::to_bytes)
    }

    /// How many servers are listed.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no server is listed.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The keyring line of `server` with public key `public`:
/// `<server-id> <hex public key>`.
pub fn keyring_line(server: &ServerId, public: &[u8; 32]) -> String {
    format!("{server} {}", hex::encode(public))
}

/// The public key of an ed25519 secret key.
pub fn public_key(secret: &[u8; 32]) -> [u8; 32] {
    SigningKey::from_bytes(secret).verifying_key().to_bytes()
}

/// Who may write what: `(author, key) -> allowed`. The integrator builds
/// it from the users file; without one every author may write every key.
pub type Permissions = Arc<dyn Fn(&str, &[u8]) -> bool + Send + Sync>;

/// The ed25519 [`WriteAuthority`]: this server's signing key, the keyring
/// of every server's public key (this server's own is added), and the
/// authors' permissions.
pub struct Ed25519Authority {
    server: ServerId,
    signing: SigningKey,
    keyring: Keyring,
    permissions: Option<Permissions>,
}

impl fmt::Debug for Ed25519Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ed25519Authority")
            .field("server", &self.server)
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

impl Ed25519Authority {
    /// The authority of `server`, whose secret key is `secret`. Its own
    /// public key joins the keyring; a keyring that lists `server` with
    /// another key is refused (this server's writes would fail everywhere
    /// that keyring is used).
    pub fn new(
        server: ServerId,
        secret: &[u8; 32],
        mut keyring: Keyring,
    ) -> Result<Ed25519Authority, KeyringError> {
        let signing = SigningKey::from_bytes(secret);
        let own = signing.verifying_key();
        if keyring.keys.get(&server).is_some_and(|k| *k != own) {
            return Err(KeyringError::NotOwnKey(server));
        }
        keyring.keys.insert(server.clone(), own);
        Ok(Ed25519Authority {
            server,
            signing,
            keyring,
            permissions: None,
        })
    }

    /// Checks authors against `permissions` at execution.
    pub fn with_permissions(mut self, permissions: Permissions) -> Ed25519Authority {
        self.permissions = Some(permissions);
        self
    }

    /// This server's public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// The keyring, this server's key included.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }
}

impl WriteAuthority for Ed25519Authority {
    fn sign(&self, write: &Write) -> Signature {
        Signature::from_bytes(self.signing.sign(&signed_message(write)).to_bytes())
    }

    fn verify(&self, write: &Write) -> Result<(), ForgedWrite> {
        let signature = write.signature.as_ref().ok_or(ForgedWrite::Unsigned)?;
        let key = self
            .keyring
            .keys
            .get(&write.id.server)
            .ok_or_else(|| ForgedWrite::UnknownServer(write.id.server.clone()))?;
        let signature = ed25519_dalek::Signature::from_bytes(signature.as_bytes());
        // Strict verification: refuses the malleable encodings plain
        // `verify` lets through, so one write has one valid signature.
        key.verify_strict(&signed_message(write), &signature)
            .map_err(|_| ForgedWrite::BadSignature)
    }

    fn may_write(&self, author: &str, key: &[u8]) -> bool {
        self.permissions.as_ref().is_none_or(|p| p(author, key))
    }
}
