//! Servers that come and go: creation, retirement and primary handoff as
//! writes in the log ([P97 §4.3]).
//!
//! # Identity
//!
//! A server keeps a readable name ([`ServerId`], `C`, `node7`), and the name
//! is bound to the write that created it: a **creation write**
//! `Create{server, addr}` that some existing server (the *sponsor*) accepts
//! for it, exactly like a client write. The paper makes the creation write's
//! id the new server's id (`<T_k,i, S_k>`, nested and ever longer); here the
//! name is the id and the binding lives in the database, so write ids stay
//! short. Two servers can never hold the same name: a creation write for a
//! name already bound (or retired) does nothing when it executes, the same
//! everywhere, so of two sponsors that created `C` concurrently in two
//! partitions the creation that commits first wins; a server may accept
//! client writes only once its own creation is committed and bound to it
//! ([`Member::created`]), so the loser has written nothing when it learns it
//! lost. The first server of a cluster (the *founder*, the primary) creates
//! itself.
//!
//! # The membership table
//!
//! Each server's record ([`Member`]: its creation write, address and
//! retirement) and the name of the primary live in the database under keys
//! that start with [`RESERVED_PREFIX`], written only by membership writes.
//! Being database state, they are executed in log order like everything
//! else, so the committed view holds the membership of the committed order,
//! and checkpoints, truncation and full-state transfer carry it with no
//! extra format. Client writes may not touch those keys, and a `FLUSH`
//! leaves them alone.
//!
//! # Retirement and version vectors
//!
//! A server retires by writing `Retire{server}` itself, its last write; it
//! then accepts no client writes and stays up until another server holds
//! the retirement. A server that holds a retirement write drops the
//! retiree's entry from its version vector ([P97 §4.3]), and a server that
//! holds a creation write adds an entry (0) for the new server, so a vector
//! that lacks an entry for a server it knows the creation of means that
//! server retired. Comparisons of vectors that lack an entry follow
//! `CompleteV` ([`crate::Replica`]'s `complete` and `summary_covers`): an
//! entry counts as +∞ when the vector's owner holds the retirement (its
//! creation is covered, recursively through the sponsor, or the retirement
//! committed at or below the owner's CSN), and as 0 otherwise.
//!
//! # Primary handoff
//!
//! `Handoff{to}` names the next primary. It takes effect where it
//! **commits**: the write with that CSN is the old primary's last
//! assignment, and the server it names assigns the next CSN once it has
//! received every commit up to it. Both sides learn it from the committed
//! log, which is durable before anything is sent, so across crashes of
//! either side no two servers ever assign CSNs in the same range: the old
//! one stops at the handoff's CSN (a restart replays it), the new one starts
//! just after. A handoff to a server that is not a live member when it
//! executes does nothing. A retiring primary hands off first.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::id::{Csn, ServerId, WriteId};
use crate::op::{Db, Undo};
use crate::script::Outcome;

/// Keys starting with these bytes hold the membership table; clients cannot
/// write them. `0xff` sorts after every printable key.
pub const RESERVED_PREFIX: &[u8] = b"\xffbayou/";

/// The key of the primary's name.
const PRIMARY_KEY: &[u8] = b"\xffbayou/primary";
/// The prefix of each server's record.
const SERVER_PREFIX: &[u8] = b"\xffbayou/server/";

/// Whether `key` belongs to the membership table.
pub fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// A membership write ([P97 §4.3]). See the module documentation.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MemberOp {
    /// Creates `server`, reachable at `addr` (`host:port`).
    Create {
        /// The new server's name.
        server: ServerId,
        /// Where its peers reach it.
        addr: String,
    },
    /// `server` retires; written by `server` itself, as its last write.
    Retire {
        /// The retiring server.
        server: ServerId,
    },
    /// From this write's place in the committed order on, `to` assigns CSNs.
    Handoff {
        /// The next primary.
        to: ServerId,
    },
    /// `server` is now reachable at `addr`.
    Address {
        /// The server that moved.
        server: ServerId,
        /// Its new address.
        addr: String,
    },
}

impl MemberOp {
    /// A rough size in bytes.
    pub fn approx_size(&self) -> usize {
        match self {
            MemberOp::Create { server, addr } | MemberOp::Address { server, addr } => {
                server.as_str().len() + addr.len() + 8
            }
            MemberOp::Retire { server } | MemberOp::Handoff { to: server } => {
                server.as_str().len() + 8
            }
        }
    }
}

impl fmt::Display for MemberOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemberOp::Create { server, addr } => write!(f, "CREATE({server},{addr})"),
            MemberOp::Retire { server } => write!(f, "RETIRE({server})"),
            MemberOp::Handoff { to } => write!(f, "HANDOFF({to})"),
            MemberOp::Address { server, addr } => write!(f, "ADDRESS({server},{addr})"),
        }
    }
}

impl fmt::Debug for MemberOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One server's record in the membership table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The write that created it: its identity.
    pub created: WriteId,
    /// Where its peers reach it.
    pub addr: String,
    /// Its retirement write, once executed.
    pub retired: Option<WriteId>,
    /// The retirement's CSN, where it executed as a committed write.
    pub retired_csn: Option<Csn>,
}

impl Member {
    /// Whether the server is still a member.
    pub fn is_live(&self) -> bool {
        self.retired.is_none()
    }
}

fn server_key(server: &ServerId) -> Bytes {
    let mut k = SERVER_PREFIX.to_vec();
    k.extend_from_slice(server.as_str().as_bytes());
    Bytes::from(k)
}

/// The record of `server` in `db`, if it was ever created.
pub fn member(db: &Db, server: &ServerId) -> Option<Member> {
    db.get(&server_key(server))
        .and_then(|v| serde_json::from_slice(v).ok())
}

/// Every server ever created, with its record, in name order.
pub fn members(db: &Db) -> impl Iterator<Item = (ServerId, Member)> + '_ {
    db.scan_prefix(SERVER_PREFIX).filter_map(|(k, v)| {
        let name = std::str::from_utf8(&k[SERVER_PREFIX.len()..]).ok()?;
        Some((ServerId::new(name).ok()?, serde_json::from_slice(v).ok()?))
    })
}

/// The primary the table names: the founder, then the server named by the
/// last handoff executed in `db` (or the successor of a primary that
/// retired); `None` in a cluster with no founder (servers started with a
/// static peer list), where the server started as primary is.
pub fn primary(db: &Db) -> Option<ServerId> {
    db.get(PRIMARY_KEY)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| ServerId::new(s).ok())
}

/// Executes a membership write `id` on `db`; `csn` is its CSN when it
/// executes as a committed write. Deterministic: the outcome depends only on
/// `db` and the write.
pub(crate) fn execute(
    db: &mut Db,
    id: &WriteId,
    op: &MemberOp,
    csn: Option<Csn>,
) -> (Undo, Outcome) {
    let mut undo = Undo::default();
    let failed = |why: String| (Undo::default(), Outcome::Failed(why));
    match op {
        MemberOp::Create { server, addr } => {
            if let Some(m) = member(db, server) {
                return failed(format!(
                    "server {server} already exists (created by {})",
                    m.created
                ));
            }
            let record = Member {
                created: id.clone(),
                addr: addr.clone(),
                retired: None,
                retired_csn: None,
            };
            db.set_raw(&mut undo, &server_key(server), Some(encode(&record)));
            if &id.server == server && primary(db).is_none() {
                // The founder (only the primary creates itself): from now on
                // the table names the primary.
                set_primary(db, &mut undo, server);
            }
        }
        MemberOp::Retire { server } => {
            if &id.server != server {
                return failed(format!("only {server} can retire itself"));
            }
            let Some(mut m) = member(db, server) else {
                return failed(format!("server {server} was never created"));
            };
            if m.retired.is_some() {
                return failed(format!("server {server} already retired"));
            }
            m.retired = Some(id.clone());
            m.retired_csn = csn;
            db.set_raw(&mut undo, &server_key(server), Some(encode(&m)));
            if primary(db).as_ref() == Some(server) {
                // A primary retires only after handing off, but a handoff to
                // a server may commit while that server, not knowing yet,
                // retires. A retired server writes nothing more (its
                // retirement counts as +∞ everywhere), so it could never
                // hand off: the role passes here, at the retirement's place
                // in the committed order, to the first live member by name.
                let next = members(db).find(|(s, m)| s != server && m.is_live());
                if let Some((next, _)) = next {
                    set_primary(db, &mut undo, &next);
                }
            }
        }
        MemberOp::Handoff { to } => {
            if !member(db, to).is_some_and(|m| m.is_live()) {
                return failed(format!("server {to} is not a live member"));
            }
            set_primary(db, &mut undo, to);
        }
        MemberOp::Address { server, addr } => {
            let Some(mut m) = member(db, server) else {
                return failed(format!("server {server} was never created"));
            };
            m.addr = addr.clone();
            db.set_raw(&mut undo, &server_key(server), Some(encode(&m)));
        }
    }
    (undo, Outcome::Applied)
}

fn set_primary(db: &mut Db, undo: &mut Undo, server: &ServerId) {
    db.set_raw(
        undo,
        &Bytes::from_static(PRIMARY_KEY),
        Some(Bytes::from(server.as_str().to_string())),
    );
}

fn encode(m: &Member) -> Bytes {
    Bytes::from(serde_json::to_vec(m).expect("a member record serializes"))
}

/// Why a membership command was refused where it was issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// The name is already bound (or was, to a server since retired).
    #[error("server id {0} is already taken (created by {1}); pick another id")]
    Taken(ServerId, WriteId),
    /// A creation or handoff named this server itself.
    #[error("server {0} cannot do that to itself")]
    Itself(ServerId),
    /// Only the primary hands off.
    #[error("{0} is not the primary")]
    NotPrimary(ServerId),
    /// The primary must hand off before it retires.
    #[error("{0} is the primary: hand off to another server first")]
    PrimaryMustHandOff(ServerId),
    /// The server has retired.
    #[error("{0} has retired")]
    Retired(ServerId),
    /// The handoff target is not a live member in the committed view.
    #[error("{0} is not a live member (created, committed and not retired)")]
    NotMember(ServerId),
}
