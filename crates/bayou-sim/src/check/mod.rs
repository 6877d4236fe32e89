//! Invariants checked by the simulator, one module each, each citing the
//! paper section it comes from.
//!
//! * **Eventual consistency** ([T95 §1, §5]; [P97 §4.2]): once every pair of
//!   servers has synced, all servers hold the same CSN, version vector,
//!   database (both views), and log where both retain it. See [`converged`].
//! * **Committed prefix** ([T95 §6]; [P97 §3.1, §3.3]): a write's CSN never
//!   changes once it is durable anywhere, no CSN names two writes, every
//!   server's committed sequence is a prefix of the primary's where both
//!   retain it, and every commit vector covers exactly the CSNs up to its
//!   server's.
//! * **Causality** ([P97 §4.2], the causal-accept-order): if `w2` was accepted
//!   at a server that already held `w1`, then `w1` precedes `w2` in every
//!   server's log, and no server holds `w2` without `w1`.
//! * **Log truth** ([T95 §5, §7]; [P97 §3.3]): each view equals the server's
//!   last checkpoint plus a fresh execution of the retained log in order, so
//!   rollback, redo, truncation and installs never drift.
//! * **Executed once** ([P97 §3.3]; [T95 §7]): no write covered by the
//!   omitted vector `O` is still in the log, none appears twice, and the
//!   commit vector covers exactly the committed ones, so no write is
//!   executed twice after a truncation or a full-state transfer.
//! * **No acknowledged write lost** ([T95 §6]; [P97 §3]): a write the client
//!   saw acknowledged stays covered by its server's version vector across
//!   crashes, and after healing by every server's.
//! * **Write truth** ([T95 §8]; signed writes): no log holds a write whose
//!   author or operation differs from what its accepting server accepted
//!   and signed, nor a write nobody accepted: a byzantine relay's change
//!   (`tamper`) is refused where it arrives. See [`write_truth`].
//! * **One booking per slot** ([T95 §2.1]): in both views, every scheduled
//!   meeting holds each of its hours and every booked hour belongs to a
//!   meeting covering it (the meeting-room workload), as long as only
//!   meeting requests write the scheduler's keys.
//!
//! Servers that come and go ([P97 §4.3]) add four, all over the servers
//! still running (a retired server that stopped, or one that lost its name
//! to a concurrent creation, is no longer part of the system):
//!
//! * **One assigner per CSN** ([P97 §4.3]; [T95 §6]): the server at which
//!   a CSN first became durable is the primary that the committed order
//!   (its handoffs, replayed in [`membership`]) names at that CSN; and the
//!   committed prefix is checked against the longest committed sequence,
//!   so it holds across handoffs. See [`assigned_in_epoch`].
//! * **One server per name** ([P97 §4.3]): no log holds a write accepted
//!   by a server whose name the committed order had not bound to its own
//!   creation. See [`no_duplicate_identity`].
//! * **No write of a retired server lost** ([P97 §4.3]; [T95 §6]): a server
//!   that holds X's retirement holds every write X accepted, and after
//!   healing every running server does. See [`retirees_kept`].
//! * **Convergence over the final membership**: [`converged`] compares the
//!   running servers only. Vector checks use the complete vector
//!   (`Replica::complete_vv`), in which a retiree held counts as +∞.

mod causality;
mod committed_prefix;
mod convergence;
mod durability;
mod executed_once;
mod identity;
mod log_truth;
pub mod membership;
mod primary_epochs;
mod retirement;
mod schedule;
mod write_truth;

use std::collections::{BTreeMap, BTreeSet};

use bayou_core::member::MemberOp;
use bayou_core::{Checkpoint, Csn, Db, Item, Op, ServerId, VersionVector, WriteId};

use membership::CommittedMembership;

pub use causality::causality;
pub use committed_prefix::{commit_vector_agrees, committed_prefix};
pub use convergence::converged;
pub use durability::acknowledged_kept;
pub use executed_once::executed_once;
pub use identity::no_duplicate_identity;
pub use log_truth::{log_is_truth, stored_image};
pub use primary_epochs::assigned_in_epoch;
pub use retirement::retirees_kept;
pub use schedule::schedule;
pub use write_truth::{Accepted, write_truth};

use crate::world::Node;

/// State the checkers accumulate over a run.
#[derive(Debug, Clone, Default)]
pub struct Checker {
    /// The CSN of every write durably committed anywhere.
    csn_of: BTreeMap<WriteId, Csn>,
    /// The write of every CSN durably assigned anywhere.
    write_of: BTreeMap<Csn, WriteId>,
    /// For each client write, the version vector of its server just before
    /// it accepted the write: the writes it causally follows.
    deps: BTreeMap<WriteId, VersionVector>,
    /// Per server, the client writes it acknowledged (durable when acked).
    acked: BTreeMap<ServerId, Vec<WriteId>>,
    /// A plain write (not a meeting request) touched a `room/` or
    /// `meeting/` key: the scheduler's invariant is the application's, and
    /// holds only while its keys are written by its own requests.
    schedule_keys_written_raw: bool,
    /// The author and operation of every client write, as its server
    /// accepted (and signed) it.
    accepted: Accepted,
    /// The server started as primary: it assigns CSNs until a handoff
    /// commits ([P97 §4.3]).
    first_primary: Option<ServerId>,
    /// The server at which each CSN first became durable: its assigner.
    assigner: BTreeMap<Csn, ServerId>,
    /// The committed membership, replayed from `write_of` and `accepted`.
    membership: CommittedMembership,
    /// Writes accepted by a server the committed order had not bound its
    /// name to, with why ([`identity`]).
    unbound: BTreeMap<WriteId, String>,
    /// The servers that accepted their own retirement.
    retirees: BTreeSet<ServerId>,
}

impl Checker {
    /// Notes what a client write touches, before it is accepted: a plain
    /// write to the scheduler's keys turns the schedule check off (found by
    /// the `bayou_scenario` fuzz target: `write A W(room/R1/352/15,2)` is
    /// no double booking, only data the scheduler did not write).
    pub fn note_write(&mut self, op: &bayou_core::Op) {
        use bayou_core::Op;
        let key = match op {
            Op::Put { key, .. }
            | Op::Delete { key }
            | Op::Incr { key, .. }
            | Op::Append { key, .. }
            | Op::SetIfAbsent { key, .. }
            | Op::SetIfPresent { key, .. } => key,
            // FLUSH deletes the scheduler's keys together: the schedule
            // stays whole. Bayou writes are the applications' own.
            _ => return,
        };
        if key.starts_with(b"room/") || key.starts_with(b"meeting/") {
            self.schedule_keys_written_raw = true;
        }
    }

    /// Records a client write, acknowledged (durable at its server), what
    /// its server held when accepting it, and its author and operation as
    /// accepted (and signed), for the write-truth check ([`write_truth`]).
    pub fn record_write(
        &mut self,
        id: WriteId,
        deps: VersionVector,
        author: Option<std::sync::Arc<str>>,
        op: &bayou_core::Op,
    ) {
        if let Op::Member(MemberOp::Retire { server }) = op
            && server == &id.server
        {
            self.retirees.insert(server.clone());
        }
        self.accepted.insert(id.clone(), (author, op.clone()));
        self.acked
            .entry(id.server.clone())
            .or_default()
            .push(id.clone());
        self.deps.insert(id, deps);
    }

    /// The server started as primary ([P97 §4.3]: it assigns CSNs until
    /// its handoff commits).
    pub fn set_first_primary(&mut self, server: ServerId) {
        self.first_primary = Some(server);
    }

    /// Records which server accepted the write `id` just recorded: one
    /// created during the run, by the creation write `creation`, or a
    /// static server (`None`). A created server's write belongs in a log
    /// only if the committed order binds its name to that creation
    /// ([`identity`], [P97 §4.3]).
    pub fn record_acceptor(&mut self, id: &WriteId, creation: Option<&WriteId>) {
        let Some(creation) = creation else { return };
        match self.membership.bound(&id.server) {
            Some(c) if c == creation => {}
            Some(c) => {
                self.unbound.insert(
                    id.clone(),
                    format!(
                        "accepted by the {} created by {creation}, but the name is bound to {c}",
                        id.server
                    ),
                );
            }
            None => {
                self.unbound.insert(
                    id.clone(),
                    format!(
                        "accepted by the {} created by {creation} before any creation of the name committed",
                        id.server
                    ),
                );
            }
        }
    }

    /// The database a disk holds after writing `cp` key by key (only the
    /// keys it says changed) is the checkpoint's database
    /// ([`log_truth::stored_image`]).
    pub fn stored_image(
        &self,
        server: &ServerId,
        image: &Db,
        cp: &Checkpoint,
    ) -> Result<(), String> {
        stored_image(server, image, cp)
    }

    /// Every replica holds every acknowledged write: after healing
    /// ([T95 §6], [`acknowledged_kept`]).
    pub fn all_acknowledged<'a>(
        &self,
        replicas: impl IntoIterator<Item = &'a bayou_core::Replica>,
    ) -> Result<(), String> {
        for r in replicas {
            // Checked first: the retirees' writes by what is held, not by
            // the vector that counts a retiree as +∞.
            retirees_kept(r, &self.retirees, &self.acked, false)?;
            acknowledged_kept(r, self.acked.values().flatten())?;
        }
        Ok(())
    }

    /// Records items that became durable at `server`; fails if a commit
    /// contradicts one made durable before (anywhere), or if `server` is
    /// the first to hold a CSN (its assigner) that another server's epoch
    /// covers ([`assigned_in_epoch`]).
    pub fn record_durable(&mut self, server: &ServerId, items: &[Item]) -> Result<(), String> {
        for item in items {
            let (id, csn) = match item {
                Item::Write {
                    write,
                    csn: Some(c),
                } => (&write.id, *c),
                Item::Commit { id, csn } => (id, *csn),
                Item::Write { csn: None, .. } => continue,
            };
            if let Some(&old) = self.csn_of.get(id)
                && old != csn
            {
                return Err(format!(
                    "committed prefix violated at {server}: write {id} had CSN {old}, now {csn}"
                ));
            }
            if let Some(old) = self.write_of.get(&csn)
                && old != id
            {
                return Err(format!(
                    "committed prefix violated at {server}: CSN {csn} named {old}, now {id}"
                ));
            }
            self.csn_of.insert(id.clone(), csn);
            if self.write_of.insert(csn, id.clone()).is_none() {
                self.assigner.insert(csn, server.clone());
            }
        }
        // Replay the global committed order as far as it is known without
        // a gap (a CSN is durable at its assigner only after the one before
        // it is durable somewhere, so the gap closes at once).
        while let Some(id) = self.write_of.get(&(self.membership.upto + 1)) {
            let csn = self.membership.upto + 1;
            if let (Some(first), Some(assigner)) = (&self.first_primary, self.assigner.get(&csn)) {
                assigned_in_epoch(csn, assigner, &self.membership, first)?;
            }
            // Every write is recorded when accepted, before any flush.
            let Some((_, op)) = self.accepted.get(id) else {
                return Err(format!("CSN {csn} names {id}, which no server accepted"));
            };
            self.membership.apply(id, op);
        }
        Ok(())
    }

    /// Checks the invariants that a step at `server` may have broken.
    pub fn after_step(
        &self,
        server: &ServerId,
        nodes: &BTreeMap<ServerId, Node>,
    ) -> Result<(), String> {
        let node = &nodes[server];
        let replica = &node.replica;
        log_is_truth(replica, node.checkpoint.as_deref())?;
        executed_once(replica, node.unexecuted)?;
        if !self.schedule_keys_written_raw {
            schedule(replica)?;
        }
        causality(replica, &self.deps)?;
        write_truth(replica, &self.accepted)?;
        // A server not (yet) bound to its name acknowledged nothing; the
        // writes under its name are another server's.
        if node.is_bound() {
            acknowledged_kept(replica, self.acked.get(replica.id()).into_iter().flatten())?;
        }
        commit_vector_agrees(replica, &self.write_of)?;
        no_duplicate_identity(replica, &self.unbound)?;
        retirees_kept(replica, &self.retirees, &self.acked, true)?;
        // Across handoffs the longest committed sequence is the current
        // primary's (or one that received all of it): every other is a
        // prefix of it.
        if let Some(reference) = nodes.values().map(|n| &n.replica).max_by_key(|r| r.csn()) {
            for node in nodes.values() {
                committed_prefix(&node.replica, reference)?;
            }
        }
        Ok(())
    }
}
