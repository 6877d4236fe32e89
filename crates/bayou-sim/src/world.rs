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
//!
//! The disk also holds a *checkpoint* ([P97 §3.3]), pending and durable as
//! items are: a flush makes the pending checkpoint durable, replacing the
//! previous one, and drops every durable item it covers
//! ([`Checkpoint::covers`]); a crash restores the replica from the durable
//! checkpoint and the durable items ([`Replica::restore`]).
//!
//! # Sessions and bundles
//!
//! `sync` runs a [`SessionSender`] with the smallest chunks (one item, or one
//! database entry of a full-state transfer, per chunk), so a cut-off after N
//! chunks interrupts a full-state transfer as well as a log transfer.
//! `export` writes the same session into bundle files ([`bundle::export`]),
//! kept in the world under a name until `import` carries them to any server,
//! late, twice or out of order.
//!
//! # Signed writes
//!
//! After `sign`, every server signs the writes it accepts and verifies every
//! write it receives (`bayou_core::auth`), each with a fixed key derived
//! from its id (a simulation needs no secrets, and runs must repeat).
//! `tamper` is a byzantine relay: the sender's session reaches the receiver
//! with its first write changed; the receiver must refuse it (counted in
//! [`Coverage::forgeries_refused`]), and the write-truth checker fails the
//! run if a changed write ever enters a log. [`World::set_verification`]
//! switches verification off, to show that checker catching it.
//!
//! # Servers that come and go ([P97 §4.3])
//!
//! The servers of the `servers` line are static members, as always. Others
//! are created while the run goes on: `create C by A` has A accept C's
//! creation write (`Replica::sponsor`), and C starts as an empty secondary
//! that knows the id of that write. C is a member once its own committed
//! view binds its name to that write; until then it accepts no client
//! write (a `write` at C is refused and recorded, see
//! [`World::refusals`]), and if its committed view binds the name to
//! another creation (two sponsors created `C` concurrently, and the other
//! creation committed first) it lost its identity: it stops at once, having
//! written nothing. The founder (the primary) records itself first
//! (`found`, or the first `create` does it), so it has a record too.
//!
//! `retire X` has X write its retirement (`Replica::retire`); from then on
//! client writes at X are refused. X keeps running, and syncing, until
//! another server durably holds the retirement *committed*, and then
//! stops: it leaves the world's running servers, and commands that name it
//! are skipped (recorded). That other server must be a live member (bound,
//! not retired): a server that may itself stop without passing the
//! retiree's writes on is no safe place for them (a retired server that
//! received X's retirement after its own could stop before passing X's
//! writes on). Waiting for the commit, and never stopping while X is the
//! primary, closes a hole: a handoff to X can commit at the old primary
//! while X, not knowing it yet, retires (the core accepts: X is not the
//! primary where it retires); only X can then commit its retirement, and
//! were X to stop on a tentative copy held elsewhere, no server would ever
//! commit again. X so becomes a retired primary that keeps running.
//!
//! `handoff X` asks the current primary (whichever running server's
//! replica says it is) to hand CSN assignment to X (`Replica::handoff`);
//! `commit *` commits at whichever server is the primary now. Refusals by
//! the core (`MemberError`) are recorded, not errors, so random runs may
//! ask for anything. A crash restarts a server in the role it was started
//! with: the role after a handoff comes from its durable committed log, as
//! in a real node.

use std::collections::BTreeMap;
use std::sync::Arc;

use bayou_core::bundle::{self, ImportError};
use bayou_core::member::MemberOp;
use bayou_core::{
    Checkpoint, Chunk, ChunkLimits, Csn, Db, Ed25519Authority, ForgedWrite, Item, Keyring, Op,
    Outcome, ProtocolError, Replica, Retention, Role, ServerId, SessionSender, Signature, Summary,
    VersionVector, View, Write, WriteAuthority, WriteId, format_entry_with_outcome,
};
use serde_json::{Map, Value, json};

use crate::check::{self, Checker};
use crate::scenario::{Command, Line, Tampering, format_command};

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
    /// The checkpoint that survives a crash: what recovery starts from.
    pub checkpoint: Option<Arc<Checkpoint>>,
    /// A checkpoint taken since the last flush, lost by a crash.
    pub pending_checkpoint: Option<Arc<Checkpoint>>,
    /// Flushes so far: odd ones apply the checkpoint before the items (the
    /// contract allows either order).
    pub flushes: u64,
    /// The checkpoint's database as the disk holds it: written key by key,
    /// only the keys each checkpoint says changed ([`Checkpoint::changed`]),
    /// as a store does. Recovery loads this, not the replica's copy.
    pub image: Db,
}

impl Disk {
    /// The newest checkpoint on this disk, pending or durable.
    pub fn newest_checkpoint(&self) -> Option<&Arc<Checkpoint>> {
        self.pending_checkpoint
            .as_ref()
            .or(self.checkpoint.as_ref())
    }

    /// The durable checkpoint as recovery reads it back: its database is
    /// the disk's image.
    pub fn stored_checkpoint(&self) -> Option<Checkpoint> {
        self.checkpoint.as_ref().map(|cp| {
            let mut cp = (**cp).clone();
            cp.snapshot.db = Arc::new(self.image.clone());
            cp
        })
    }
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
    /// The last checkpoint the replica issued (or recovered from): its
    /// committed view is this checkpoint's database plus the retained
    /// committed writes after it.
    pub checkpoint: Option<Arc<Checkpoint>>,
    /// How many CSNs this replica holds without having executed their
    /// writes on its committed view since it started: those its recovery
    /// checkpoint reflects and those full-state transfers installed. With
    /// the commits it executed ([`bayou_core::Stats`]) they make up its CSN
    /// exactly: no committed write executed twice, none skipped.
    pub unexecuted: Csn,
    /// The author of the writes its client submits (`author`).
    pub author: Option<Arc<str>>,
    /// The role it was started with, and restarts with after a crash
    /// (after a handoff, its committed log decides, [P97 §4.3]).
    pub base_role: Role,
    /// The creation write it was given, for a server created during the
    /// run (`create`); `None` for the static servers of `servers`.
    pub creation: Option<WriteId>,
    /// Whether its committed view binds its name to `creation` (always,
    /// for a static server): refreshed after every step that touches it.
    bound: bool,
    /// Whether it ever was bound, and ever the primary (for the counts).
    ever_bound: bool,
    ever_primary: bool,
}

impl Node {
    fn new(id: ServerId, creation: Option<WriteId>) -> Node {
        let mut replica = Replica::new(id, Role::Secondary);
        if let Some(c) = &creation {
            replica.set_creation(c.clone());
        }
        Node {
            replica,
            disk: Disk::default(),
            clock: 0,
            checkpoint: None,
            unexecuted: 0,
            author: None,
            base_role: Role::Secondary,
            bound: creation.is_none(),
            ever_bound: false,
            ever_primary: false,
            creation,
        }
    }

    /// Whether the server is a member: a static server, or one whose
    /// committed view binds its name to the creation write it was given
    /// ([P97 §4.3]).
    pub fn is_bound(&self) -> bool {
        self.bound
    }

    /// Why this server must refuse a client write now, if it must: it
    /// retired, or it is not (yet) a member.
    pub fn refuses_writes(&self) -> Option<String> {
        let id = self.replica.id();
        if self.replica.has_retired() {
            return Some(format!("{id} has retired"));
        }
        if !self.is_bound() {
            return Some(format!(
                "{id}'s creation is not committed and bound to it (yet)"
            ));
        }
        None
    }
}

impl Node {
    /// Notes what a session (or bundle) of `chunks` did, given the CSN
    /// before it: an install jumps to the snapshot's CSN unexecuted.
    fn received(&mut self, csn_before: Csn, chunks: &[Chunk], installed: bool) {
        if !installed {
            return;
        }
        let installed_csn = chunks.iter().rev().find_map(|c| match c {
            Chunk::Snapshot(p) if p.last => Some(p.csn),
            _ => None,
        });
        if let Some(csn) = installed_csn {
            self.unexecuted += csn.saturating_sub(csn_before);
        }
    }
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
    /// The CSN of the last write discarded by truncation (OSN; 0 if none).
    pub osn: Csn,
    /// The discarded writes (`O`), one entry per server in `servers` order.
    pub omitted: Vec<(ServerId, u64)>,
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
            if s.osn > 0 {
                // Only after a truncation, so untruncated runs print as before.
                let o: Vec<String> = s.omitted.iter().map(|(s, t)| format!("{s}: {t}")).collect();
                out.push_str(&format!("  omitted: {} (OSN {})\n", o.join(" "), s.osn));
            }
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
                {
                    let mut server =
                        json!({"server": s.server.as_str(), "vv": vv, "log": log, "db": db});
                    // Only after a truncation, so untruncated runs print as before.
                    if let (true, Some(map)) = (s.osn > 0, server.as_object_mut()) {
                        let o: Map<String, Value> = s
                            .omitted
                            .iter()
                            .map(|(id, t)| (id.to_string(), json!(t)))
                            .collect();
                        map.insert("osn".into(), json!(s.osn));
                        map.insert("omitted".into(), Value::Object(o));
                    }
                    server
                }
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
    /// it was computed from, and the chunks sent), for `redeliver`.
    last_session: BTreeMap<(ServerId, ServerId), (Summary, Vec<Chunk>)>,
    /// Bundles exported and not forgotten: each a list of files, in order.
    bundles: BTreeMap<String, Vec<Vec<u8>>>,
    coverage: Coverage,
    /// Whether disks write checkpoints incrementally (only the changed
    /// keys), as `bayou-store` does; otherwise the whole database.
    incremental: bool,
    /// Whether servers verify the writes they receive once `sign` ran
    /// (always, but in the test that shows the write-truth checker).
    unverified: bool,
    /// Whether `sign` ran: servers created later get keys too.
    signing: bool,
    /// Whether the founder recorded itself (`found`).
    founded: bool,
    /// The servers of the `servers` line.
    static_ids: Vec<ServerId>,
    /// Servers that stopped (retired, or lost their name), by handle,
    /// frozen as they stopped, with the reason.
    stopped: BTreeMap<ServerId, (Node, String)>,
    /// Commands refused or skipped, with the reason, in order.
    refusals: Vec<String>,
    /// Handles of servers whose creation was refused: commands naming
    /// them are skipped, as those naming a stopped server.
    never_created: BTreeMap<ServerId, String>,
    /// Mutation (tests only): unbound servers accept client writes.
    unbound_writes: bool,
    /// Mutation (tests only): a retired server stops at once.
    early_stop: bool,
}

/// How often a run exercised the paths truncation added: lets tests show
/// that random runs really reach them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Checkpoints issued (taken, automatic, or installed).
    pub checkpoints: u64,
    /// Checkpoints that discarded committed writes (the OSN moved).
    pub truncations: u64,
    /// Full-state transfer parts sent by `sync`.
    pub snapshot_parts: u64,
    /// `sync`s cut off inside a full-state transfer.
    pub cut_transfers: u64,
    /// `sync`s that resumed a cut full-state transfer.
    pub resumed_transfers: u64,
    /// Full-state transfers installed (by sync, redelivery or bundle).
    pub installs: u64,
    /// Crashes recovered from a durable checkpoint.
    pub restores_from_checkpoint: u64,
    /// Bundle files imported.
    pub bundle_files_applied: u64,
    /// Bundle files refused as stale (out of order, late, or lost base).
    pub bundle_files_stale: u64,
    /// Late duplicate sessions refused (stale, or a snapshot gap).
    pub redeliveries_refused: u64,
    /// Writes changed by a byzantine relay (`tamper`) and refused.
    pub forgeries_refused: u64,
    /// Creation writes accepted by a sponsor ([P97 §4.3]).
    pub creations: u64,
    /// Creations of a name another running server already has (`as`).
    pub duplicate_creations: u64,
    /// Servers created during a run that became members (bound).
    pub bound: u64,
    /// Servers that stopped because another creation took their name.
    pub identities_lost: u64,
    /// Retirement writes accepted.
    pub retirements: u64,
    /// Retired servers stopped once a live member durably held the
    /// retirement.
    pub retirees_stopped: u64,
    /// Handoff writes accepted by a primary.
    pub handoffs: u64,
    /// Servers that became the primary by a committed handoff.
    pub new_primaries: u64,
    /// Client writes refused: the server retired or was not bound yet.
    pub writes_refused: u64,
    /// Membership commands the core refused (`MemberError`).
    pub member_refusals: u64,
    /// Commands skipped because a server they name has stopped.
    pub skipped_stopped: u64,
    /// Sessions refused part-way by a server that learned in them that it
    /// lost its name.
    pub sessions_refused_by_losers: u64,
}

impl Coverage {
    /// Adds another run's counts.
    pub fn add(&mut self, o: &Coverage) {
        self.checkpoints += o.checkpoints;
        self.truncations += o.truncations;
        self.snapshot_parts += o.snapshot_parts;
        self.cut_transfers += o.cut_transfers;
        self.resumed_transfers += o.resumed_transfers;
        self.installs += o.installs;
        self.restores_from_checkpoint += o.restores_from_checkpoint;
        self.bundle_files_applied += o.bundle_files_applied;
        self.bundle_files_stale += o.bundle_files_stale;
        self.redeliveries_refused += o.redeliveries_refused;
        self.forgeries_refused += o.forgeries_refused;
        self.creations += o.creations;
        self.duplicate_creations += o.duplicate_creations;
        self.bound += o.bound;
        self.identities_lost += o.identities_lost;
        self.retirements += o.retirements;
        self.retirees_stopped += o.retirees_stopped;
        self.handoffs += o.handoffs;
        self.new_primaries += o.new_primaries;
        self.writes_refused += o.writes_refused;
        self.member_refusals += o.member_refusals;
        self.skipped_stopped += o.skipped_stopped;
        self.sessions_refused_by_losers += o.sessions_refused_by_losers;
    }
}

/// The chunks of a simulated session: one item, or one database entry of a
/// full-state transfer, each, so a cut-off can fall anywhere.
pub const SIM_CHUNKS: ChunkLimits = ChunkLimits { items: 1, bytes: 1 };

/// The retention policy of `retain S WRITES`: keep at most WRITES committed
/// writes, checkpoint every 3 commits, so truncation happens often.
pub fn sim_retention(writes: u64) -> Retention {
    Retention {
        writes,
        bytes: u64::MAX,
        checkpoint_every: 3,
    }
}

impl World {
    /// A world without servers. With `checks`, every invariant of
    /// [`crate::check`] is verified after each command.
    pub fn new(checks: bool) -> World {
        World {
            checker: checks.then(Checker::default),
            incremental: true,
            ..World::default()
        }
    }

    /// Whether the disks write each checkpoint incrementally, only the keys
    /// it lists as changed ([`Checkpoint::changed`]), as `bayou-store`
    /// does (the default), checking that the result is the checkpoint's
    /// database; or write the whole database every time. Incremental disks
    /// found that bayou-core replaced a checkpoint not yet taken instead of
    /// folding it into the next one (`tests/incremental_checkpoints.rs`).
    pub fn set_incremental_checkpoints(&mut self, on: bool) {
        self.incremental = on;
    }

    /// Whether signing servers verify the writes they receive (the
    /// default). Off, a `tamper`ed write enters the receiver's log and the
    /// write-truth checker must catch it: the mutation that shows it can.
    pub fn set_verification(&mut self, on: bool) {
        self.unverified = !on;
    }

    /// Mutation, for the test that shows the identity checker: servers
    /// accept client writes before their creation is bound to them, so a
    /// server that loses a concurrent creation of its name has written.
    pub fn set_unbound_writes(&mut self, on: bool) {
        self.unbound_writes = on;
    }

    /// Mutation, for the test that shows the retirement checker: a retired
    /// server stops as soon as it writes its retirement, before anyone
    /// holds it, so writes only it held are lost.
    pub fn set_early_stop(&mut self, on: bool) {
        self.early_stop = on;
    }

    /// The servers (by handle), in the order `servers` and `create` named
    /// them, stopped ones included.
    pub fn servers(&self) -> &[ServerId] {
        &self.order
    }

    /// The servers that stopped (retired, or lost their name), by handle,
    /// with the reason.
    pub fn stopped(&self) -> impl Iterator<Item = (&ServerId, &str)> {
        self.stopped.iter().map(|(h, (_, why))| (h, why.as_str()))
    }

    /// What was refused or skipped ([P97 §4.3]: client writes at a server
    /// that retired or is not a member yet, membership commands the core
    /// refused, commands naming a stopped server), in order, each naming
    /// the command and the reason.
    pub fn refusals(&self) -> &[String] {
        &self.refusals
    }

    /// A server by handle, if it exists (running or stopped).
    pub fn node(&self, id: &ServerId) -> Option<&Node> {
        self.nodes
            .get(id)
            .or_else(|| self.stopped.get(id).map(|(n, _)| n))
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
        // A command naming a server that stopped is skipped: the server is
        // gone, as a process that exited ([P97 §4.3]).
        if let Some(why) = mentioned(command).into_iter().find_map(|h| {
            self.stopped
                .get(h)
                .map(|(_, why)| format!("{h} has stopped ({why})"))
                .or_else(|| {
                    self.never_created
                        .get(h)
                        .map(|why| format!("{h} was never created ({why})"))
                })
        }) {
            self.refusals
                .push(format!("{}: skipped, {why}", format_command(command)));
            self.coverage.skipped_stopped += 1;
            if let Command::Export { name, .. } = command {
                // Written by nobody: importing it brings nothing.
                self.bundles.entry(name.clone()).or_default();
            }
            if let Command::Create { server, handle, .. } = command {
                let handle = handle.as_ref().unwrap_or(server);
                if !self.nodes.contains_key(handle) && !self.stopped.contains_key(handle) {
                    self.never_created
                        .insert(handle.clone(), format!("its sponsor: {why}"));
                }
            }
            return Ok(());
        }
        // Servers a membership command touched, for the checks below.
        let mut touched: Vec<ServerId> = Vec::new();
        // A session that carried nothing changed neither replica (the
        // sender's flush is checked as it happens): no state to check.
        let mut quiet = false;
        match command {
            Command::Servers(ids) => {
                if !self.order.is_empty() {
                    return Err(input("`servers` may appear only once".into()));
                }
                for id in ids {
                    if self.nodes.contains_key(id) {
                        return Err(input(format!("server {id} is named twice")));
                    }
                    self.nodes.insert(id.clone(), Node::new(id.clone(), None));
                }
                self.order = ids.clone();
                self.static_ids = ids.clone();
            }
            Command::Primary(id) => {
                self.node_mut(id).map_err(input)?;
                if let Some(p) = &self.primary {
                    return Err(input(format!(
                        "{p} is already the primary; there is exactly one"
                    )));
                }
                self.primary = Some(id.clone());
                if let Some(checker) = self.checker.as_mut() {
                    checker.set_first_primary(id.clone());
                }
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
                let unbound_writes = self.unbound_writes;
                let node = self.node_mut(id).map_err(input)?;
                // [P97 §4.3]: no client write before the server is a
                // member, none after its retirement.
                if let Some(why) = node.refuses_writes().filter(|_| !unbound_writes) {
                    self.coverage.writes_refused += 1;
                    self.refusals
                        .push(format!("{}: refused, {why}", format_command(command)));
                    return Ok(());
                }
                if let Some(checker) = self.checker.as_mut() {
                    checker.note_write(op);
                }
                let node = self.node_mut(id).map_err(input)?;
                let clock = node.clock;
                // What the server holds when it accepts the write.
                let deps = node.replica.vv().clone();
                let author = node.author.clone();
                let wid = node
                    .replica
                    .client_write_as(clock, op.clone(), author.clone());
                self.collect(id);
                // Recorded before the flush: with autocommit the flush
                // makes its commit durable, and the checker replays the
                // committed order with each write's operation.
                self.record(id, wid, deps, author, op);
                // The client is acknowledged only once the write is durable.
                self.flush(id)?;
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
                if summary.resume.is_some() {
                    self.coverage.resumed_transfers += 1;
                }
                let chunks: Vec<Chunk> = {
                    let sender = &mut self.nodes.get_mut(from).expect("checked").replica;
                    let mut session = SessionSender::new(summary.clone());
                    let mut chunks = Vec::new();
                    while limit.is_none_or(|n| chunks.len() < n) {
                        match session.next_chunk(sender, SIM_CHUNKS) {
                            Some(c) => chunks.push(c),
                            None => break,
                        }
                    }
                    if session.in_snapshot() {
                        self.coverage.cut_transfers += 1;
                    }
                    chunks
                };
                self.coverage.snapshot_parts += chunks
                    .iter()
                    .filter(|c| matches!(c, Chunk::Snapshot(_)))
                    .count() as u64;
                quiet = chunks.is_empty();
                // The sender queues nothing by sending, but stay general.
                self.collect(from);
                self.last_session.insert(
                    (from.clone(), to.clone()),
                    (summary.clone(), chunks.clone()),
                );
                let receiver = self.node_mut(to).map_err(input)?;
                let before = receiver.replica.csn();
                let result = receiver.replica.receive_session(&summary, chunks.clone());
                receiver.received(before, &chunks, result.as_ref().is_ok_and(|r| r.installed));
                // What was applied before an error stays applied: persist it.
                self.collect(to);
                if result.as_ref().is_ok_and(|r| r.installed) {
                    self.coverage.installs += 1;
                }
                if let Err(e) = result {
                    self.receive_failed(
                        to,
                        format!("sync {from} {to}: protocol error at {to}: {e}"),
                    )?;
                }
            }
            Command::Redeliver { from, to } => {
                self.node_mut(from).map_err(input)?;
                let Some((summary, chunks)) =
                    self.last_session.get(&(from.clone(), to.clone())).cloned()
                else {
                    return Ok(());
                };
                let receiver = self.node_mut(to).map_err(input)?;
                // Old items are already held (ignored), or still missing and
                // in order; a receiver that lost writes since refuses the
                // whole stale session, and one that lost (or finished) the
                // full-state transfer a part continues refuses the part.
                // Either way it stays valid.
                let before = receiver.replica.csn();
                let result = receiver.replica.receive_session(&summary, chunks.clone());
                receiver.received(before, &chunks, result.as_ref().is_ok_and(|r| r.installed));
                self.collect(to);
                match result {
                    Ok(r) => self.coverage.installs += u64::from(r.installed),
                    Err(ProtocolError::StaleSession { .. })
                    | Err(ProtocolError::SnapshotGap { .. }) => {
                        self.coverage.redeliveries_refused += 1
                    }
                    Err(e) => self.receive_failed(
                        to,
                        format!("redeliver {from} {to}: protocol error at {to}: {e}"),
                    )?,
                }
            }
            Command::Commit(id) => {
                let node = self.node_mut(id).map_err(input)?;
                node.replica
                    .commit_all()
                    .map_err(|e| input(format!("commit {id}: {e}")))?;
                self.collect(id);
            }
            Command::CommitAtPrimary => {
                let Some(p) = self.current_primary() else {
                    return self.refuse_member(command, "no running server is the primary");
                };
                let node = self.nodes.get_mut(&p).expect("running");
                node.replica
                    .commit_all()
                    .map_err(|e| input(format!("commit {p}: {e}")))?;
                self.collect(&p);
                touched.push(p);
            }
            Command::Found(id) => {
                self.node_mut(id).map_err(input)?;
                if self.primary.as_ref() != Some(id) {
                    return Err(input(format!("found {id}: {id} is not the primary")));
                }
                self.found()?;
                touched.push(id.clone());
            }
            Command::Create {
                server,
                sponsor,
                handle,
            } => {
                let handle = handle.clone().unwrap_or_else(|| server.clone());
                self.node_mut(sponsor).map_err(input)?;
                if self.nodes.contains_key(&handle) || self.stopped.contains_key(&handle) {
                    return Err(input(format!(
                        "create {server} by {sponsor}: a server is already called {handle} here; address the new one `as` another name"
                    )));
                }
                if self.static_ids.contains(server) {
                    // A static server has no creation record for a sponsor
                    // to see: naming a new server after it is the
                    // operator's mistake, not a protocol state.
                    return Err(input(format!(
                        "create {server} by {sponsor}: {server} is a static server of this run"
                    )));
                }
                if !self.founded && self.primary.is_some() {
                    self.found()?;
                    touched.extend(self.primary.clone());
                }
                if let Some(why) = self.nodes[sponsor].refuses_writes() {
                    self.never_created.insert(handle, why.clone());
                    return self.refuse_member(command, &why);
                }
                let running_same_name = self.nodes.values().any(|n| n.replica.id() == server);
                let addr = format!("sim:{handle}");
                let node = self.nodes.get_mut(sponsor).expect("checked");
                let deps = node.replica.vv().clone();
                let wid = match node.replica.sponsor(node.clock, server.clone(), &addr) {
                    Ok(wid) => wid,
                    Err(e) => {
                        self.never_created.insert(handle, e.to_string());
                        return self.refuse_member(command, &e.to_string());
                    }
                };
                let op = Op::Member(MemberOp::Create {
                    server: server.clone(),
                    addr,
                });
                self.collect(sponsor);
                self.record(sponsor, wid.clone(), deps, None, &op);
                self.flush(sponsor)?;
                self.coverage.creations += 1;
                self.never_created.remove(&handle);
                self.coverage.duplicate_creations += u64::from(running_same_name);
                self.nodes
                    .insert(handle.clone(), Node::new(server.clone(), Some(wid)));
                self.order.push(handle.clone());
                if self.signing {
                    self.install_authorities();
                }
                touched.push(sponsor.clone());
                touched.push(handle);
            }
            Command::Retire(id) => {
                let node = self.node_mut(id).map_err(input)?;
                if let Some(why) = node.refuses_writes() {
                    return self.refuse_member(command, &why);
                }
                let me = node.replica.id().clone();
                if node.replica.member(&me, View::Committed).is_none() {
                    // The core would accept it, but a retirement of a
                    // server without a record executes as a no-op while
                    // every holder drops its entry ([P97 §4.3] retires
                    // created servers only); static servers stay.
                    return self.refuse_member(
                        command,
                        &format!("{me} has no committed creation record (a static server)"),
                    );
                }
                let deps = node.replica.vv().clone();
                let wid = match node.replica.retire(node.clock) {
                    Ok(wid) => wid,
                    Err(e) => return self.refuse_member(command, &e.to_string()),
                };
                let op = Op::Member(MemberOp::Retire { server: me });
                self.collect(id);
                self.record(id, wid, deps, None, &op);
                self.flush(id)?;
                self.coverage.retirements += 1;
                if self.early_stop {
                    self.stop(id, "retired (stopped at once: the mutation)".into());
                    return Ok(());
                }
                touched.push(id.clone());
            }
            Command::Handoff(to) => {
                let to_id = self.node_mut(to).map_err(input)?.replica.id().clone();
                let Some(p) = self.current_primary() else {
                    return self.refuse_member(command, "no running server is the primary");
                };
                let node = self.nodes.get_mut(&p).expect("running");
                if node.replica.has_retired() {
                    // The core would accept it, but a write after a
                    // retirement reaches nobody: every holder of the
                    // retirement counts the retiree as +∞ and ignores it.
                    let why = format!(
                        "{} has retired (a retired primary stays the primary)",
                        node.replica.id()
                    );
                    return self.refuse_member(command, &why);
                }
                let deps = node.replica.vv().clone();
                let wid = match node.replica.handoff(node.clock, to_id.clone()) {
                    Ok(wid) => wid,
                    Err(e) => return self.refuse_member(command, &e.to_string()),
                };
                let op = Op::Member(MemberOp::Handoff { to: to_id });
                self.collect(&p);
                self.record(&p, wid, deps, None, &op);
                self.flush(&p)?;
                self.coverage.handoffs += 1;
                touched.push(p);
            }
            Command::Crash(id) => {
                let node = self.node_mut(id).map_err(input)?;
                node.disk.pending.clear();
                node.disk.pending_checkpoint = None;
                let role = node.base_role;
                let retention = node.replica.retention();
                let stored = node.disk.stored_checkpoint();
                // By name: a second server of one name has another handle.
                node.replica = Replica::restore_with_authority(
                    node.replica.id().clone(),
                    role,
                    retention,
                    stored.clone(),
                    node.disk.durable.clone(),
                    node.replica.authority().cloned(),
                )
                .map_err(|e| (format!("crash {id}: recovery failed: {e}"), true))?;
                if let Some(c) = &node.creation {
                    node.replica.set_creation(c.clone());
                }
                node.checkpoint = stored.map(Arc::new);
                node.unexecuted = node.checkpoint.as_ref().map_or(0, |c| c.snapshot.csn);
                self.coverage.restores_from_checkpoint += u64::from(node.checkpoint.is_some());
                self.collect(id);
            }
            Command::Truncate(id, keep) => {
                let node = self.node_mut(id).map_err(input)?;
                node.replica.checkpoint(Some(*keep));
                self.collect(id);
                // The operator's truncation returns once it is durable.
                self.flush(id)?;
            }
            Command::Retain(id, writes) => {
                let node = self.node_mut(id).map_err(input)?;
                node.replica.set_retention(sim_retention(*writes));
            }
            Command::Export {
                from,
                to,
                name,
                max_bytes,
            } => {
                self.node_mut(from).map_err(input)?;
                self.node_mut(to).map_err(input)?;
                if from == to {
                    return Err(input(format!(
                        "export {from} {to}: a server cannot export to itself"
                    )));
                }
                if self.bundles.contains_key(name) {
                    return Err(input(format!(
                        "export {from} {to} {name}: bundle {name} was already exported"
                    )));
                }
                // Nothing leaves the sender before it is durable.
                self.flush(from)?;
                let base = self.nodes[to].replica.summary();
                let sender = &mut self.nodes.get_mut(from).expect("checked").replica;
                let files = bundle::export(sender, base, *max_bytes, SIM_CHUNKS);
                self.collect(from);
                self.bundles.insert(name.clone(), files);
            }
            Command::Import { name, part, to } => {
                self.node_mut(to).map_err(input)?;
                let Some(files) = self.bundles.get(name) else {
                    return Err(input(format!(
                        "import {name}: no bundle {name} was exported"
                    )));
                };
                let files: Vec<Vec<u8>> = match part {
                    None => files.clone(),
                    // A file the export did not write never arrives.
                    Some(i) => files.get(i.wrapping_sub(1)).cloned().into_iter().collect(),
                };
                for file in files {
                    let b = bundle::decode(&file).map_err(|e| {
                        (
                            format!("import {name} {to}: bundle does not decode: {e}"),
                            true,
                        )
                    })?;
                    let node = self.nodes.get_mut(to).expect("checked");
                    let before = node.replica.csn();
                    let result = node.replica.import_bundle(&b);
                    node.received(
                        before,
                        &b.chunks,
                        result.as_ref().is_ok_and(|r| r.installed),
                    );
                    self.collect(to);
                    match result {
                        // Out of order, late, or for a state this server
                        // lost in a crash: refused whole, harmlessly.
                        Ok(r) => {
                            self.coverage.bundle_files_applied += 1;
                            self.coverage.installs += u64::from(r.installed);
                        }
                        Err(ImportError::Stale { .. }) => self.coverage.bundle_files_stale += 1,
                        Err(e) => {
                            self.receive_failed(
                                to,
                                format!("import {name} {to}: part {} refused: {e}", b.part),
                            )?;
                            break;
                        }
                    }
                }
            }
            Command::Sign => {
                if self.order.is_empty() {
                    return Err(input("no servers yet: start with `servers ...`".into()));
                }
                self.signing = true;
                self.install_authorities();
            }
            Command::Author(id, author) => {
                self.node_mut(id).map_err(input)?.author = author.as_deref().map(Arc::from);
            }
            Command::Tamper { from, to, what } => {
                self.node_mut(from).map_err(input)?;
                self.node_mut(to).map_err(input)?;
                if from == to {
                    return Err(input(format!(
                        "tamper {from} {to}: a server cannot sync with itself"
                    )));
                }
                self.flush(from)?;
                let summary = self.nodes[to].replica.summary();
                let mut chunks: Vec<Chunk> = {
                    let sender = &mut self.nodes.get_mut(from).expect("checked").replica;
                    let mut session = SessionSender::new(summary.clone());
                    std::iter::from_fn(|| session.next_chunk(sender, SIM_CHUNKS)).collect()
                };
                self.collect(from);
                // The relay passes the chunks before the first write on
                // unchanged, then that write changed, and stops there (the
                // receiver refuses it and closes the session). With no
                // write to change, the session passes as is.
                let at = chunks.iter().position(|c| {
                    matches!(c, Chunk::Items(items) if items.iter().any(|i| matches!(i, Item::Write { .. })))
                });
                let forged: Vec<Chunk> = match at {
                    Some(i) => chunks.split_off(i).into_iter().take(1).collect(),
                    None => Vec::new(),
                };
                let receiver = self.node_mut(to).map_err(input)?;
                let before = receiver.replica.csn();
                let result = receiver.replica.receive_session(&summary, chunks.clone());
                receiver.received(before, &chunks, result.as_ref().is_ok_and(|r| r.installed));
                self.collect(to);
                let refused = match result {
                    Ok(r) => {
                        self.coverage.installs += u64::from(r.installed);
                        false
                    }
                    Err(e) => {
                        self.receive_failed(
                            to,
                            format!("tamper {from} {to}: protocol error at {to}: {e}"),
                        )?;
                        true
                    }
                };
                if let Some(mut chunk) = forged.into_iter().next().filter(|_| !refused) {
                    let Chunk::Items(items) = &mut chunk else {
                        unreachable!("found among item chunks")
                    };
                    let write = items
                        .iter_mut()
                        .find_map(|i| match i {
                            Item::Write { write, .. } => Some(write),
                            Item::Commit { .. } => None,
                        })
                        .expect("found above");
                    tamper(write, *what);
                    let id = write.id.clone();
                    let receiver = self.nodes.get_mut(to).expect("checked");
                    let result = receiver.replica.receive_chunk(chunk);
                    self.collect(to);
                    match result {
                        // Verification off: the changed write is in the log,
                        // and the write-truth check below must notice.
                        Ok(_) => {}
                        Err(ProtocolError::Forged { id: refused, .. }) if refused == id => {
                            self.coverage.forgeries_refused += 1;
                        }
                        Err(e) => self.receive_failed(
                            to,
                            format!("tamper {from} {to}: protocol error at {to}: {e}"),
                        )?,
                    }
                }
            }
            Command::Show => on_show(self.snapshot()),
            Command::ExpectConverged => {
                check::converged(self).map_err(|m| (m, true))?;
                if let Some(checker) = &self.checker {
                    checker
                        .all_acknowledged(self.replicas())
                        .map_err(|m| (m, true))?;
                }
            }
        }
        // First, before the checks: a server that has just learned it lost
        // its name must not count as one of the system's servers any more
        // (the same batch may have made it the primary by a handoff to its
        // name, and it assigned CSNs nobody else will ever see).
        let affected: Vec<ServerId> = match command {
            Command::Write(s, _)
            | Command::Commit(s)
            | Command::Crash(s)
            | Command::Truncate(s, _) => {
                vec![s.clone()]
            }
            Command::Sync { from, to, .. }
            | Command::Export { from, to, .. }
            | Command::Tamper { from, to, .. } => vec![from.clone(), to.clone()],
            Command::Redeliver { to, .. } | Command::Import { to, .. } => vec![to.clone()],
            _ => vec![],
        }
        .into_iter()
        .filter(|_| !quiet)
        .chain(touched)
        .collect();
        self.stop_finished(&affected);
        if let Some(checker) = self.checker.as_mut() {
            for id in &affected {
                if self.nodes.contains_key(id) {
                    checker.after_step(id, &self.nodes).map_err(|m| (m, true))?;
                }
            }
        }
        Ok(())
    }

    /// A receiver refused a session (or bundle file): a violation, unless
    /// the receiver learned from what it applied before that its name is
    /// bound to another creation ([P97 §4.3]): it refuses everything from
    /// then on, and stops at the end of the step. (The same batch may have
    /// made it "the primary" by a handoff to its name, so it refuses the
    /// next commit as one it never assigned.)
    fn receive_failed(&mut self, to: &ServerId, message: String) -> Result<(), (String, bool)> {
        let node = &self.nodes[to];
        let lost = node.creation.as_ref().is_some_and(|cw| {
            node.replica
                .member(node.replica.id(), View::Committed)
                .is_some_and(|m| &m.created != cw)
        });
        if !lost {
            return Err((message, true));
        }
        self.coverage.sessions_refused_by_losers += 1;
        self.refusals.push(format!(
            "{message} (refused: {to} has just learned it lost its name)"
        ));
        Ok(())
    }

    /// Records a refused (or impossible) membership command.
    fn refuse_member(&mut self, command: &Command, why: &str) -> Result<(), (String, bool)> {
        self.coverage.member_refusals += 1;
        self.refusals
            .push(format!("{}: refused, {why}", format_command(command)));
        Ok(())
    }

    /// The running server whose replica is the primary now, first in
    /// `servers`/`create` order (there is at most one that has not seen
    /// its own handoff commit).
    fn current_primary(&self) -> Option<ServerId> {
        self.order
            .iter()
            .find(|h| self.nodes.get(*h).is_some_and(|n| n.replica.is_primary()))
            .cloned()
    }

    /// The primary records itself as the first member ([P97 §4.3]).
    fn found(&mut self) -> Result<(), (String, bool)> {
        let Some(p) = self.primary.clone() else {
            return Ok(());
        };
        self.founded = true;
        let node = self.nodes.get_mut(&p).expect("the primary exists");
        let addr = format!("sim:{p}");
        let deps = node.replica.vv().clone();
        let wid = match node.replica.found(node.clock, &addr) {
            Ok(wid) => wid,
            Err(e) => {
                return self.refuse_member(&Command::Found(p), &e.to_string());
            }
        };
        let op = Op::Member(MemberOp::Create {
            server: p.clone(),
            addr,
        });
        self.collect(&p);
        self.record(&p, wid, deps, None, &op);
        self.flush(&p)
    }

    /// Tells the checker about a write `handle` accepted (durable: the
    /// caller flushed), with the creation write of the accepting server.
    fn record(
        &mut self,
        handle: &ServerId,
        wid: WriteId,
        deps: VersionVector,
        author: Option<Arc<str>>,
        op: &Op,
    ) {
        let creation = self.nodes[handle].creation.clone();
        if let Some(checker) = self.checker.as_mut() {
            checker.record_write(wid.clone(), deps, author, op);
            checker.record_acceptor(&wid, creation.as_ref());
        }
    }

    /// Stops the servers that are done ([P97 §4.3]): one whose committed
    /// view binds its name to another creation (it lost a concurrent
    /// creation of its name), and a retired one once a live member (static
    /// or bound, not retired, and not another server of its name) holds
    /// its retirement durably: nothing of it is pending on its disk.
    fn stop_finished(&mut self, affected: &[ServerId]) {
        let mut stops: Vec<(ServerId, String)> = Vec::new();
        // Only a step's servers can have learned something: each refreshes
        // whether it is bound (the flag the write gate reads) and may have
        // lost its name or become the primary.
        for h in affected {
            let Some(node) = self.nodes.get_mut(h) else {
                continue;
            };
            let Some(cw) = &node.creation else { continue };
            let id = node.replica.id();
            match node.replica.member(id, View::Committed) {
                Some(m) if &m.created != cw => {
                    stops.push((
                        h.clone(),
                        format!("lost its name: {id} was created by {}, not {cw}", m.created),
                    ));
                    continue;
                }
                Some(_) => {
                    if !node.ever_bound {
                        node.ever_bound = true;
                        self.coverage.bound += 1;
                    }
                    node.bound = true;
                }
                // Lost in a crash: not a member until it learns again.
                None => node.bound = false,
            }
            if !node.ever_primary && node.replica.is_primary() {
                node.ever_primary = true;
                self.coverage.new_primaries += 1;
            }
        }
        // Retired servers wait for a live member to hold their retirement
        // committed (rare: scanned only while one is running).
        let retired: Vec<&ServerId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.replica.has_retired())
            .map(|(h, _)| h)
            .collect();
        for h in retired {
            let node = &self.nodes[h];
            // A retired server that has become the primary (a handoff to
            // it committed before it received it, and it retired in
            // between: the core allows that) keeps running: without it no
            // server would ever commit again.
            if node.replica.is_primary() {
                continue;
            }
            let id = node.replica.id();
            let holder = self.nodes.iter().find(|(h2, n2)| {
                *h2 != h
                    && n2.replica.id() != id
                    && !n2.replica.has_retired()
                    && n2.is_bound()
                    && n2.disk.pending.is_empty()
                    && n2.disk.pending_checkpoint.is_none()
                    && !n2.replica.has_unpersisted()
                    && n2.replica.is_retired(id)
                    && n2
                        .replica
                        .member(id, View::Committed)
                        .is_some_and(|m| m.retired.is_some())
            });
            if let Some((h2, _)) = holder {
                stops.push((
                    h.clone(),
                    format!("retired; {h2} holds its retirement, committed"),
                ));
            }
        }
        for (h, why) in stops {
            if why.starts_with("lost") {
                self.coverage.identities_lost += 1;
            } else {
                self.coverage.retirees_stopped += 1;
            }
            self.stop(&h, why);
        }
    }

    fn stop(&mut self, handle: &ServerId, why: String) {
        if let Some(node) = self.nodes.remove(handle) {
            self.stopped.insert(handle.clone(), (node, why));
        }
    }

    /// Gives every server (running or stopped) its signing key and a
    /// keyring of all of them ([`Command::Sign`]); run again when a server
    /// is created, so its writes verify everywhere.
    fn install_authorities(&mut self) {
        let mut keyring = Keyring::new();
        let ids: std::collections::BTreeSet<ServerId> = self
            .nodes
            .values()
            .chain(self.stopped.values().map(|(n, _)| n))
            .map(|n| n.replica.id().clone())
            .collect();
        for id in &ids {
            keyring
                .insert(id.clone(), bayou_core::auth::public_key(&sim_secret(id)))
                .expect("a derived key is valid");
        }
        for node in self.nodes.values_mut() {
            let id = node.replica.id().clone();
            let authority = Ed25519Authority::new(id.clone(), &sim_secret(&id), keyring.clone())
                .expect("the keyring holds this server's own key");
            let authority: Arc<dyn WriteAuthority> = if self.unverified {
                Arc::new(Unverified(authority))
            } else {
                Arc::new(authority)
            };
            node.replica.set_authority(Some(authority));
        }
    }

    fn node_mut(&mut self, id: &ServerId) -> Result<&mut Node, String> {
        if self.order.is_empty() {
            return Err("no servers yet: start with `servers ...`".into());
        }
        if self.stopped.contains_key(id) {
            return Err(format!("server {id} has stopped"));
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
            node.base_role = role;
            let retention = node.replica.retention();
            // What recovery would read: a pending checkpoint as the replica
            // issued it, else the durable one as the disk holds it.
            let checkpoint = match &node.disk.pending_checkpoint {
                Some(cp) => Some(cp.clone()),
                None => node.disk.stored_checkpoint().map(Arc::new),
            };
            let items: Vec<Item> = node
                .disk
                .durable
                .iter()
                .chain(&node.disk.pending)
                .filter(|i| checkpoint.as_ref().is_none_or(|c| !c.covers(i)))
                .cloned()
                .collect();
            let authority = node.replica.authority().cloned();
            node.replica = Replica::restore_with_authority(
                p.clone(),
                role,
                retention,
                checkpoint.as_deref().cloned(),
                items,
                authority,
            )
            .expect("a replica's own items replay");
            if let Some(c) = &node.creation {
                node.replica.set_creation(c.clone());
            }
            node.unexecuted = checkpoint.as_ref().map_or(0, |c| c.snapshot.csn);
            node.checkpoint = checkpoint;
        }
    }

    /// Moves what the replica queued for persistence onto its disk.
    fn collect(&mut self, id: &ServerId) {
        let node = self.nodes.get_mut(id).expect("caller checked");
        let items = node.replica.take_persist();
        node.disk.pending.extend(items);
        if let Some(cp) = node.replica.take_checkpoint() {
            self.coverage.checkpoints += 1;
            let before = node.checkpoint.as_ref().map_or(0, |c| c.osn);
            self.coverage.truncations += u64::from(cp.osn > before);
            // Two checkpoints before one flush are written as one: the
            // later state, with the keys either changed.
            let pending = match node.disk.pending_checkpoint.take() {
                Some(earlier) => Arc::new(earlier.merge(&cp)),
                None => cp.clone(),
            };
            node.disk.pending_checkpoint = Some(pending);
            node.checkpoint = Some(cp);
        }
    }

    /// fsync: pending items become durable.
    fn flush(&mut self, id: &ServerId) -> Result<(), (String, bool)> {
        let node = self.nodes.get_mut(id).expect("caller checked");
        let mut flushed = std::mem::take(&mut node.disk.pending);
        if let Some(checker) = self.checker.as_mut() {
            // By name, not handle: the first server to make a CSN durable
            // is the one that assigned it.
            checker
                .record_durable(node.replica.id(), &flushed)
                .map_err(|m| (m, true))?;
        }
        // The new checkpoint replaces the old one, and the durable items it
        // covers go, in one atomic step with the items. The persistence
        // contract lets a store apply the two in either order, so
        // alternate: an item queued before the checkpoint and covered by it
        // may stay on disk, and recovery must ignore it.
        let disk = &mut node.disk;
        disk.flushes += 1;
        let checkpoint_first = disk.flushes % 2 == 1;
        if !checkpoint_first {
            disk.durable.extend(flushed);
            flushed = Vec::new();
        }
        if let Some(cp) = disk.pending_checkpoint.take() {
            disk.durable.retain(|i| !cp.covers(i));
            match &cp.changed {
                Some(keys) if self.incremental => {
                    for k in keys {
                        match cp.snapshot.db.get(k) {
                            Some(v) => disk.image.insert(k.clone(), v.clone()),
                            None => {
                                disk.image.execute(&Op::delete(k.clone()));
                            }
                        }
                    }
                }
                _ => disk.image = (*cp.snapshot.db).clone(),
            }
            if let Some(checker) = self.checker.as_ref() {
                checker
                    .stored_image(id, &disk.image, &cp)
                    .map_err(|m| (m, true))?;
            }
            disk.checkpoint = Some(cp);
        }
        disk.durable.extend(flushed);
        Ok(())
    }

    /// The state of every server.
    pub fn snapshot(&self) -> Snapshot {
        let text = |b: &bytes::Bytes| String::from_utf8_lossy(b).into_owned();
        // Vector columns: one per server name (two servers of one name,
        // `create ... as`, share it).
        let mut names: Vec<ServerId> = Vec::new();
        for n in self.order.iter().filter_map(|h| self.nodes.get(h)) {
            if !names.contains(n.replica.id()) {
                names.push(n.replica.id().clone());
            }
        }
        let servers = self
            .order
            .iter()
            .filter(|h| self.nodes.contains_key(*h))
            .map(|id| {
                let r = &self.nodes[id].replica;
                // The membership table is shown by the log, not the db.
                let pairs = |v: View| {
                    r.db(v)
                        .user_iter()
                        .map(|(k, v)| (text(k), text(v)))
                        .collect::<Vec<_>>()
                };
                ServerSnapshot {
                    server: id.clone(),
                    primary: r.is_primary(),
                    vv: names.iter().map(|s| (s.clone(), r.vv().get(s))).collect(),
                    log: r.log().collect(),
                    outcomes: r.log().map(|(_, w)| r.outcome(&w.id)).collect(),
                    db: pairs(View::Full),
                    committed_db: pairs(View::Committed),
                    osn: r.osn(),
                    omitted: names
                        .iter()
                        .map(|s| (s.clone(), r.omitted().get(s)))
                        .collect(),
                }
            })
            .collect();
        Snapshot { servers }
    }

    /// Every running server's replica, in `servers` (then `create`)
    /// order: stopped servers are no longer part of the system.
    pub fn replicas(&self) -> impl Iterator<Item = &Replica> {
        self.nodes().map(|n| &n.replica)
    }

    /// Every running server's node, in `servers` (then `create`) order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.order.iter().filter_map(|id| self.nodes.get(id))
    }

    /// What the run exercised so far.
    pub fn coverage(&self) -> &Coverage {
        &self.coverage
    }

    /// The primary, if one was named.
    pub fn primary(&self) -> Option<&ServerId> {
        self.primary.as_ref()
    }
}

/// The fixed secret key of server `id` in a simulation: its id's bytes
/// spread over 32 bytes (distinct for the simulator's short ids).
fn sim_secret(id: &ServerId) -> [u8; 32] {
    let mut secret = [0x5a; 32];
    for (i, b) in id.as_str().bytes().enumerate() {
        secret[i % 32] ^= b.rotate_left(i as u32 / 32);
    }
    secret[31] ^= id.as_str().len() as u8;
    secret
}

/// What a byzantine relay does to a write on the way.
fn tamper(write: &mut Write, what: Tampering) {
    match what {
        Tampering::Value => {
            write.op = match &write.op {
                Op::Put { key, .. } => Op::put(key.clone(), "forged"),
                _ => Op::put("forged", "forged"),
            }
        }
        Tampering::Author => {
            write.author = Some(Arc::from(match write.author.as_deref() {
                Some("mallory") => "eve",
                _ => "mallory",
            }))
        }
    }
}

/// A signing server whose verification is switched off: the mutation the
/// write-truth checker must catch ([`World::set_verification`]).
#[derive(Debug)]
struct Unverified(Ed25519Authority);

impl WriteAuthority for Unverified {
    fn sign(&self, write: &Write) -> Signature {
        self.0.sign(write)
    }

    fn verify(&self, _: &Write) -> Result<(), ForgedWrite> {
        Ok(())
    }

    fn may_write(&self, author: &str, key: &[u8]) -> bool {
        self.0.may_write(author, key)
    }
}

/// The servers (handles) a command names.
fn mentioned(command: &Command) -> Vec<&ServerId> {
    match command {
        Command::Primary(s)
        | Command::Autocommit(s)
        | Command::Clock(s, _)
        | Command::Write(s, _)
        | Command::Commit(s)
        | Command::Crash(s)
        | Command::Truncate(s, _)
        | Command::Retain(s, _)
        | Command::Author(s, _)
        | Command::Found(s)
        | Command::Retire(s)
        | Command::Handoff(s) => vec![s],
        Command::Sync { from, to, .. }
        | Command::Redeliver { from, to }
        | Command::Export { from, to, .. }
        | Command::Tamper { from, to, .. } => vec![from, to],
        Command::Import { to, .. } => vec![to],
        Command::Create { sponsor, .. } => vec![sponsor],
        Command::Servers(_)
        | Command::CommitAtPrimary
        | Command::Sign
        | Command::Show
        | Command::ExpectConverged => vec![],
    }
}
