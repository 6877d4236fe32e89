//! Invariants checked by the simulator, each with the paper section it comes
//! from.
//!
//! * **Eventual consistency** ([T95 §1, §5]; [P97 §4.2]): once every pair of
//!   servers has synced, all servers hold the same log, version vector and
//!   database. See [`converged`].
//! * **Committed prefix** ([T95 §6]; [P97 §3.1]): a write's CSN never changes
//!   once it is durable anywhere, no CSN names two writes, and every server's
//!   committed sequence is a prefix of the primary's.
//! * **Causality** ([P97 §4.2], the causal-accept-order): if `w2` was accepted
//!   at a server that already held `w1`, then `w1` precedes `w2` in every
//!   server's log, and no server holds `w2` without `w1`.
//! * **Log truth** ([T95 §5, §7]): each view equals a fresh execution of the
//!   log in order, so rollback and redo never drift.
//! * **One booking per slot** ([T95 §2.1]): in both views, every scheduled
//!   meeting holds each of its hours and every booked hour belongs to a
//!   meeting covering it (the meeting-room workload).

use std::collections::BTreeMap;

use bayou_core::{Csn, Db, Item, Replica, ServerId, VersionVector, View, WriteId, format_entry};

use crate::world::{Node, World};

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
}

impl Checker {
    /// Records a client write and what its server held when accepting it.
    pub fn record_write(&mut self, id: WriteId, deps: VersionVector) {
        self.deps.insert(id, deps);
    }

    /// Records items that became durable at `server`; fails if a commit
    /// contradicts one made durable before (anywhere).
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
            self.write_of.insert(csn, id.clone());
        }
        Ok(())
    }

    /// Checks the invariants that a step at `server` may have broken.
    pub fn after_step(
        &self,
        server: &ServerId,
        nodes: &BTreeMap<ServerId, Node>,
        primary: Option<&ServerId>,
    ) -> Result<(), String> {
        let replica = &nodes[server].replica;
        log_is_truth(replica)?;
        schedule(replica)?;
        causality(replica, &self.deps)?;
        if let Some(p) = primary {
            let primary = &nodes[p].replica;
            for node in nodes.values() {
                committed_prefix(&node.replica, primary)?;
            }
        }
        Ok(())
    }
}

/// Each view equals a fresh execution of the log ([T95 §5, §7]).
pub fn log_is_truth(replica: &Replica) -> Result<(), String> {
    let mut committed = Db::new();
    for w in replica.committed() {
        committed.execute(&w.op);
    }
    if &committed != replica.db(View::Committed) {
        return Err(format!(
            "log truth violated at {}: committed view {:?} but replaying the committed log gives {:?}",
            replica.id(),
            replica.db(View::Committed),
            committed
        ));
    }
    // The full view continues from the committed prefix with the tentative writes.
    let mut full = committed;
    for (_, w) in replica.log().skip(replica.committed().len()) {
        full.execute(&w.op);
    }
    if &full != replica.db(View::Full) {
        return Err(format!(
            "log truth violated at {}: full view {:?} but replaying the log gives {:?}",
            replica.id(),
            replica.db(View::Full),
            full
        ));
    }
    Ok(())
}

/// No room is booked twice for one slot, in either view ([T95 §2.1]).
pub fn schedule(replica: &Replica) -> Result<(), String> {
    for view in [View::Full, View::Committed] {
        let db = replica.db(view);
        bayou_apps::meeting::check_schedule(db.iter().map(|(k, v)| (&k[..], &v[..])))
            .map_err(|e| format!("schedule broken at {} ({view:?} view): {e}", replica.id()))?;
    }
    Ok(())
}

/// The server's committed writes are a prefix of the primary's ([T95 §6]).
pub fn committed_prefix(replica: &Replica, primary: &Replica) -> Result<(), String> {
    let mine = replica.committed();
    let theirs = primary.committed();
    let ok = mine.len() <= theirs.len() && mine.iter().zip(theirs).all(|(a, b)| a.id == b.id);
    if !ok {
        let show = |ws: &[bayou_core::Write]| {
            ws.iter()
                .enumerate()
                .map(|(i, w)| format_entry(Some(i as Csn + 1), w))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(format!(
            "committed prefix violated: {} has [{}], primary {} has [{}]",
            replica.id(),
            show(mine),
            primary.id(),
            show(theirs)
        ));
    }
    Ok(())
}

/// Causal order in one server's log ([P97 §4.2]): every write a client write
/// depended on is held and precedes it, and each server's writes appear in
/// accept-stamp order.
pub fn causality(replica: &Replica, deps: &BTreeMap<WriteId, VersionVector>) -> Result<(), String> {
    // Per accepting server, its writes in this log as (stamp, position).
    let mut by_server: BTreeMap<ServerId, Vec<(u64, usize)>> = BTreeMap::new();
    let mut position: BTreeMap<WriteId, usize> = BTreeMap::new();
    for (pos, (_, w)) in replica.log().enumerate() {
        by_server
            .entry(w.id.server.clone())
            .or_default()
            .push((w.id.stamp, pos));
        position.insert(w.id, pos);
    }
    for (server, writes) in &mut by_server {
        let in_log_order = writes.windows(2).all(|p| p[0].0 < p[1].0);
        if !in_log_order {
            return Err(format!(
                "causality violated at {}: writes of {server} out of accept order",
                replica.id()
            ));
        }
        // Sorted by stamp (they are, by the check above) for the searches below.
        writes.sort_unstable();
    }
    for (w2, pos2) in &position {
        let Some(dep) = deps.get(w2) else { continue };
        for (server, stamp) in dep.iter() {
            // A vector entry is the stamp of a real write: <stamp, server> is
            // the latest write of `server` that w2 depends on. It must be
            // held here, before w2.
            let writes = by_server.get(server).map(Vec::as_slice).unwrap_or(&[]);
            let idx = writes.partition_point(|&(s, _)| s <= stamp);
            if idx == 0 || writes[idx - 1].0 != stamp {
                return Err(format!(
                    "causality violated at {}: holds {w2} but not {stamp}:{server}, which it depends on",
                    replica.id()
                ));
            }
            if writes[idx - 1].1 > *pos2 {
                return Err(format!(
                    "causality violated at {}: {w2} precedes {stamp}:{server}, which it depends on",
                    replica.id()
                ));
            }
        }
    }
    Ok(())
}

/// All servers hold the same log, version vector and both views
/// ([T95 §1]: eventual consistency).
pub fn converged(world: &World) -> Result<(), String> {
    let mut replicas = world.replicas();
    let Some(first) = replicas.next() else {
        return Ok(());
    };
    let first_log: Vec<String> = first.log().map(|(c, w)| format_entry(c, &w)).collect();
    for other in replicas {
        let log: Vec<String> = other.log().map(|(c, w)| format_entry(c, &w)).collect();
        if log != first_log {
            return Err(format!(
                "not converged: {} has log [{}] but {} has [{}]",
                first.id(),
                first_log.join(", "),
                other.id(),
                log.join(", ")
            ));
        }
        if other.vv() != first.vv() {
            return Err(format!(
                "not converged: {} has versions {:?} but {} has {:?}",
                first.id(),
                first.vv(),
                other.id(),
                other.vv()
            ));
        }
        for view in [View::Full, View::Committed] {
            if other.db(view) != first.db(view) {
                return Err(format!(
                    "not converged: {} has {view:?} db {:?} but {} has {:?}",
                    first.id(),
                    first.db(view),
                    other.id(),
                    other.db(view)
                ));
            }
        }
    }
    Ok(())
}
