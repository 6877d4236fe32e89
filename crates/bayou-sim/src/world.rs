//! Runs scenarios: a set of in-process Bayou servers, each with a simulated
//! disk, driven one command at a time.
//!
//! # The simulated disk
//!
//! Each server's disk holds *durable* items and *pending* ones. Everything a
//! replica queues for persistence lands in `pending`. The disk is flushed
//! (pending becomes durable) exactly where the persistence contract of
//! `bayou_core::replica` requires: before a client write is acknowledged
//! (`write`), and before the server sends anything (as the sender of `sync`).
//! What a server received by anti-entropy, and a primary's `commit`, stay
//! pending until then, so `crash` loses them: the server restarts from its
//! durable items only, exactly as a process killed before its fsync.

use std::collections::BTreeMap;

use bayou_core::{
    Csn, Item, Op, Outcome, ProtocolError, Replica, Role, ServerId, Summary, View, Write,
    format_entry_with_outcome,
};
use serde_json::{Map, Value, json};

use crate::check::{self, Checker};
use crate::scenario::{Command, Line};

/// Why a scenario stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct RunError {
    /// The 1-based line of the command that failed.
    pub line: usize,
    /// What went wrong: bad input, or (with checks on) a violated invariant.
    pub message: String,
    /// Whether this is an invariant violation rather than bad input.
    pub violation: bool,
}

/// A server's durable state and what is waiting for its next flush.
#[derive(Debug, Clone, Default)]
pub struct Disk {
    /// Items that survive a crash.
    pub durable: Vec<Item>,
    /// Items lost by a crash.
    pub pending: Vec<Item>,
}

/// One simulated server.
#[derive(Debug, Clone)]
pub struct Node {
    /// The protocol state.
    pub replica: Replica,
    /// Its disk.
    pub disk: Disk,
    /// The physical clock reading.
    pub clock: u64,
}

/// Output of a `show`: the state of every server, in `servers` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// One entry per server.
    pub servers: Vec<ServerSnapshot>,
}

/// One server's state at a `show`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSnapshot {
    /// Its id.
    pub server: ServerId,
    /// Whether it is the primary.
    pub primary: bool,
    /// Its version vector, one entry per server in `servers` order (0 where none).
    pub vv: Vec<(ServerId, u64)>,
    /// Its log in order.
    pub log: Vec<(Option<Csn>, Write)>,
    /// The outcome of each log entry's latest execution, in log order.
    pub outcomes: Vec<Outcome>,
    /// The full view.
    pub db: Vec<(String, String)>,
    /// The committed view.
    pub committed_db: Vec<(String, String)>,
}

impl ServerSnapshot {
    /// The version vector in the slides' notation: `P: 7 A: 12 B: 13`.
    pub fn vv_text(&self) -> String {
        self.vv
            .iter()
            .map(|(s, t)| format!("{s}: {t}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The log in the slides' notation, one entry a line. Bayou writes
    /// (check + merge) also show their outcome, e.g. `[merged]`.
    pub fn log_lines(&self) -> Vec<String> {
        self.log
            .iter()
            .zip(&self.outcomes)
            .map(|((c, w), outcome)| format_entry_with_outcome(*c, w, outcome))
            .collect()
    }
}

impl Snapshot {
    /// The text rendering: per server, its version vector, its log one write
    /// a line, then its database.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for s in &self.servers {
            let role = if s.primary { " (primary)" } else { "" };
            out.push_str(&format!("server {}{role}\n", s.server));
            out.push_str(&format!("  versions: {}\n", s.vv_text()));
            if s.log.is_empty() {
                out.push_str("  log: (empty)\n");
            } else {
                out.push_str("  log:\n");
                for line in s.log_lines() {
                    out.push_str(&format!("    {line}\n"));
                }
            }
            out.push_str(&format!("  db: {}\n", db_text(&s.db)));
            out.push_str(&format!("  committed db: {}\n", db_text(&s.committed_db)));
        }
        out
    }

    /// The JSON rendering: one object, on one line.
    pub fn to_json(&self) -> String {
        let servers: Vec<Value> = self
            .servers
            .iter()
            .map(|s| {
                let vv: Map<String, Value> =
                    s.vv.iter()
                        .map(|(id, t)| (id.to_string(), json!(t)))
                        .collect();
                let log: Vec<Value> = s
                    .log
                    .iter()
                    .zip(&s.outcomes)
                    .map(|((csn, w), outcome)| {
                        let mut entry = json!({
                            "csn": csn,
                            "stamp": w.id.stamp,
                            "server": w.id.server.as_str(),
                            "op": w.op.to_string(),
                        });
                        // Only Bayou writes (check + merge) have an outcome worth showing.
                        if let (Op::Bayou(_), Some(map)) = (&w.op, entry.as_object_mut()) {
                            map.insert("outcome".into(), json!(outcome.to_string()));
                        }
                        entry
                    })
                    .collect();
                let db: Map<String, Value> =
                    s.db.iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect();
                json!({"server": s.server.as_str(), "vv": vv, "log": log, "db": db})
            })
            .collect();
        json!({ "servers": servers }).to_string()
    }
}

fn db_text(db: &[(String, String)]) -> String {
    if db.is_empty() {
        return "(empty)".into();
    }
    db.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A set of simulated servers.
#[derive(Debug, Clone, Default)]
pub struct World {
    order: Vec<ServerId>,
    nodes: BTreeMap<ServerId, Node>,
    primary: Option<ServerId>,
    autocommit: bool,
    checker: Option<Checker>,
    /// The last session between each ordered pair (the receiver's summary
    /// it was computed from, and the items sent), for `redeliver`.
    last_session: BTreeMap<(ServerId, ServerId), (Summary, Vec<Item>)>,
}

impl World {
    /// A world without servers. With `checks`, every invariant of
    /// [`crate::check`] is verified after each command.
    pub fn new(checks: bool) -> World {
        World {
            checker: checks.then(Checker::default),
            ..World::default()
        }
    }

    /// The servers, in the order `servers` named them.
    pub fn servers(&self) -> &[ServerId] {
        &self.order
    }

    /// A server, if it exists.
    pub fn node(&self, id: &ServerId) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// Runs a parsed scenario; `on_show` receives each `show`'s snapshot.
    pub fn run(
        &mut self,
        lines: &[Line],
        mut on_show: impl FnMut(Snapshot),
    ) -> Result<(), RunError> {
        for line in lines {
            self.step(&line.command, &mut on_show)
                .map_err(|(message, violation)| RunError {
                    line: line.number,
                    message,
                    violation,
                })?;
        }
        Ok(())
    }

    /// Executes one command. Errors carry a message and whether the error is
    /// an invariant violation.
    pub fn step(
        &mut self,
        command: &Command,
        on_show: &mut impl FnMut(Snapshot),
    ) -> Result<(), (String, bool)> {
        let input = |m: String| (m, false);
        match command {
            Command::Servers(ids) => {
                if !self.order.is_empty() {
                    return Err(input("`servers` may appear only once".into()));
                }
                for id in ids {
                    if self.nodes.contains_key(id) {
                        return Err(input(format!("server {id} is named twice")));
                    }
                    self.nodes.insert(
                        id.clone(),
                        Node {
                            replica: Replica::new(id.clone(), Role::Secondary),
                            disk: Disk::default(),
                            clock: 0,
                        },
                    );
                }
                self.order = ids.clone();
            }
            Command::Primary(id) => {
                self.node_mut(id).map_err(input)?;
                if let Some(p) = &self.primary {
                    return Err(input(format!(
                        "{p} is already the primary; there is exactly one"
                    )));
                }
                self.primary = Some(id.clone());
                self.rebuild_primary_role();
            }
            Command::Autocommit(id) => {
                if self.primary.as_ref() != Some(id) {
                    return Err(input(format!("autocommit {id}: {id} is not the primary")));
                }
                self.autocommit = true;
                self.rebuild_primary_role();
                self.collect(id);
            }
            Command::Clock(id, t) => self.node_mut(id).map_err(input)?.clock = *t,
            Command::Write(id, op) => {
                let node = self.node_mut(id).map_err(input)?;
                let clock = node.clock;
                // What the server holds when it accepts the write.
                let deps = node.replica.vv().clone();
                let wid = node.replica.client_write(clock, op.clone());
                self.collect(id);
                // The client is acknowledged only once the write is durable.
                self.flush(id)?;
                if let Some(checker) = self.checker.as_mut() {
                    checker.record_write(wid, deps);
                }
            }
            Command::Sync { from, to, limit } => {
                self.node_mut(from).map_err(input)?;
                self.node_mut(to).map_err(input)?;
                if from == to {
                    return Err(input(format!(
                        "sync {from} {to}: a server cannot sync with itself"
                    )));
                }
                // Nothing leaves the sender before it is durable.
                self.flush(from)?;
                let summary = self.nodes[to].replica.summary();
                let items: Vec<Item> = {
                    let sender = &self.nodes[from].replica;
                    let all = sender.items_for(&summary);
                    match limit {
                        Some(n) => all.take(*n).collect(),
                        None => all.collect(),
                    }
                };
                self.last_session
                    .insert((from.clone(), to.clone()), (summary.clone(), items.clone()));
                let receiver = self.node_mut(to).map_err(input)?;
                receiver
                    .replica
                    .receive_session(&summary, items)
                    .map_err(|e| {
                        (
                            format!("sync {from} {to}: protocol error at {to}: {e}"),
                            true,
                        )
                    })?;
                self.collect(to);
            }
            Command::Redeliver { from, to } => {
                self.node_mut(from).map_err(input)?;
                let Some((summary, items)) =
                    self.last_session.get(&(from.clone(), to.clone())).cloned()
                else {
                    return Ok(());
                };
                let receiver = self.node_mut(to).map_err(input)?;
                // Old items are already held (ignored), or still missing and
                // in order; a receiver that lost writes since refuses the
                // whole stale session. Either way it stays valid.
                match receiver.replica.receive_session(&summary, items) {
                    Ok(_) | Err(ProtocolError::StaleSession { .. }) => {}
                    Err(e) => {
                        return Err((
                            format!("redeliver {from} {to}: protocol error at {to}: {e}"),
                            true,
                        ));
                    }
                }
                self.collect(to);
            }
            Command::Commit(id) => {
                let node = self.node_mut(id).map_err(input)?;
                node.replica
                    .commit_all()
                    .map_err(|e| input(format!("commit {id}: {e}")))?;
                self.collect(id);
            }
            Command::Crash(id) => {
                let node = self.node_mut(id).map_err(input)?;
                node.disk.pending.clear();
                let role = node.replica.role();
                node.replica = Replica::recover(id.clone(), role, node.disk.durable.clone())
                    .map_err(|e| (format!("crash {id}: recovery failed: {e}"), true))?;
                self.collect(id);
            }
            Command::Show => on_show(self.snapshot()),
            Command::ExpectConverged => {
                check::converged(self).map_err(|m| (m, true))?;
            }
        }
        if let Some(checker) = self.checker.as_mut() {
            let affected: Vec<&ServerId> = match command {
                Command::Write(s, _) | Command::Commit(s) | Command::Crash(s) => vec![s],
                Command::Sync { to, .. } | Command::Redeliver { to, .. } => vec![to],
                _ => vec![],
            };
            for id in affected {
                checker
                    .after_step(id, &self.nodes, self.primary.as_ref())
                    .map_err(|m| (m, true))?;
            }
        }
        Ok(())
    }

    fn node_mut(&mut self, id: &ServerId) -> Result<&mut Node, String> {
        if self.order.is_empty() {
            return Err("no servers yet: start with `servers ...`".into());
        }
        self.nodes
            .get_mut(id)
            .ok_or_else(|| format!("unknown server {id}"))
    }

    fn rebuild_primary_role(&mut self) {
        if let Some(p) = &self.primary {
            let node = self.nodes.get_mut(p).expect("primary exists");
            let role = Role::Primary {
                autocommit: self.autocommit,
            };
            let items = node.disk.durable.iter().chain(&node.disk.pending).cloned();
            node.replica = Replica::recover(p.clone(), role, items.collect::<Vec<_>>())
                .expect("a replica's own items replay");
        }
    }

    /// Moves what the replica queued for persistence onto its disk.
    fn collect(&mut self, id: &ServerId) {
        let node = self.nodes.get_mut(id).expect("caller checked");
        let items = node.replica.take_persist();
        node.disk.pending.extend(items);
    }

    /// fsync: pending items become durable.
    fn flush(&mut self, id: &ServerId) -> Result<(), (String, bool)> {
        let node = self.nodes.get_mut(id).expect("caller checked");
        let flushed = std::mem::take(&mut node.disk.pending);
        if let Some(checker) = self.checker.as_mut() {
            checker
                .record_durable(id, &flushed)
                .map_err(|m| (m, true))?;
        }
        node.disk.durable.extend(flushed);
        Ok(())
    }

    /// The state of every server.
    pub fn snapshot(&self) -> Snapshot {
        let text = |b: &bytes::Bytes| String::from_utf8_lossy(b).into_owned();
        let servers = self
            .order
            .iter()
            .map(|id| {
                let r = &self.nodes[id].replica;
                let pairs = |v: View| {
                    r.db(v)
                        .iter()
                        .map(|(k, v)| (text(k), text(v)))
                        .collect::<Vec<_>>()
                };
                ServerSnapshot {
                    server: id.clone(),
                    primary: r.is_primary(),
                    vv: self
                        .order
                        .iter()
                        .map(|s| (s.clone(), r.vv().get(s)))
                        .collect(),
                    log: r.log().collect(),
                    outcomes: r.log().map(|(_, w)| r.outcome(&w.id)).collect(),
                    db: pairs(View::Full),
                    committed_db: pairs(View::Committed),
                }
            })
            .collect();
        Snapshot { servers }
    }

    /// Every server's replica, in `servers` order.
    pub fn replicas(&self) -> impl Iterator<Item = &Replica> {
        self.order.iter().map(|id| &self.nodes[id].replica)
    }

    /// The primary, if one was named.
    pub fn primary(&self) -> Option<&ServerId> {
        self.primary.as_ref()
    }
}
