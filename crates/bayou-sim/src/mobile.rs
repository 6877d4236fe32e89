//! Mobile clients: sessions that hop between servers at random, with the
//! session guarantees of [T94 §3–4], and one checker per guarantee over the
//! recorded history.
//!
//! One seed determines a run: 3–5 servers (one primary, committing on
//! receipt or on its own schedule) with skewed clocks, 2–4 mobile clients,
//! and a sequence of steps: a client reads or writes at a random server,
//! one server pulls from another (one-way anti-entropy, [P97 Fig. 3]), or
//! the primary commits. A client's server checks the session's guarantees
//! with `bayou_core::guarantee` (the same code as the network server);
//! when it cannot serve the session, it first pulls from a random peer
//! (anti-entropy on demand), and if that is not enough the client moves on
//! to the other servers in random order, as the paper's session manager
//! does, and gives up on the operation if none can serve it. A healing
//! phase ends the run: every pair syncs, the primary commits, every pair
//! syncs again.
//!
//! Every write is `APPEND(key, "<client>.<n>;")` on one of a few keys, and
//! nothing ever deletes, so a value names exactly the writes to its key a
//! database holds, in the order it holds them. The history records every
//! write, every read, and *observations*: a server's whole database (in
//! the view a read used) at each read and at the end. The checkers follow
//! the paper's definitions ([T94 §3]) over those, never looking at version
//! vectors:
//!
//! * **RYW**: a read sees every write its session made before it;
//! * **MR**: a read sees every write (to its key) an earlier read of its
//!   session saw;
//! * **WFR**: in every observation holding a write W2 of a session, every
//!   write an earlier read of the session saw is present, and before W2
//!   when on the same key;
//! * **MW**: in every observation holding a write W2 of a session, every
//!   earlier write of the session is present, and before W2 when on the
//!   same key.
//!
//! [`Mutation`] turns one server-side check off, so a test can show each
//! checker catching the guarantee it checks being broken.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use bayou_core::{
    ClientSession, Guarantee, Guarantees, Op, Replica, Role, ServerId, VersionVector, View, WriteId,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Knobs of a mobile run.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Steps before healing.
    pub steps: usize,
    /// The guarantees every session asks for.
    pub guarantees: Guarantees,
    /// A server-side check switched off, to show a checker fails.
    pub mutation: Option<Mutation>,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            steps: 80,
            guarantees: Guarantees::ALL,
            mutation: None,
        }
    }
}

/// A deliberate bug: servers skip the check of one guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// Serve requests without checking this guarantee.
    SkipCheck(Guarantee),
}

/// A key's value as the writes it reflects, in order.
pub type Value = Vec<String>;

/// A server's database at one moment, in one view: key -> writes, for the
/// keys observed (a key absent from the map was not observed; a key
/// observed without writes maps to an empty value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The server.
    pub server: ServerId,
    /// The view.
    pub view: View,
    /// Every key's writes, in the database's order.
    pub db: BTreeMap<String, Value>,
}

/// One operation of a client, in the order they happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `client` appended `write` to `key` at `server`.
    Write {
        /// The client (session).
        client: usize,
        /// Where.
        server: ServerId,
        /// The key.
        key: String,
        /// The write's tag, `<client>.<n>`.
        write: String,
    },
    /// `client` read `key`; the database it read is observation `seen`.
    Read {
        /// The client (session).
        client: usize,
        /// The key.
        key: String,
        /// Index into [`History::observations`].
        seen: usize,
    },
}

/// What a run recorded.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// The guarantees each client's session asked for.
    pub sessions: Vec<Guarantees>,
    /// The clients' operations, in order.
    pub events: Vec<Event>,
    /// Databases as reads saw them and as servers hold them at the end.
    pub observations: Vec<Observation>,
}

/// Counts of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Reads served.
    pub reads: usize,
    /// Writes accepted.
    pub writes: usize,
    /// Requests a server first refused (`NOTYET`).
    pub not_yet: usize,
    /// Of those, served by the same server after an on-demand pull.
    pub served_after_pull: usize,
    /// Served by another server the client moved to.
    pub moved: usize,
    /// Operations no server could serve.
    pub unavailable: usize,
}

impl Stats {
    /// Adds another run's counts.
    pub fn add(&mut self, o: &Stats) {
        self.reads += o.reads;
        self.writes += o.writes;
        self.not_yet += o.not_yet;
        self.served_after_pull += o.served_after_pull;
        self.moved += o.moved;
        self.unavailable += o.unavailable;
    }
}

/// A violation of a guarantee found in a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The guarantee.
    pub guarantee: Guarantee,
    /// What happened.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} violated: {}", self.guarantee, self.detail)
    }
}

/// A run with violations: the seed and the first few.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// Violations found (the first ones of each guarantee).
    pub violations: Vec<Violation>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "mobile-client seed {} broke session guarantees (replay: bayou_sim::mobile::run_seed({}, …)):",
            self.seed, self.seed
        )?;
        for v in &self.violations {
            write!(f, "\n  {v}")?;
        }
        Ok(())
    }
}

struct Server {
    replica: Replica,
    skew: i64,
}

struct Client {
    session: ClientSession,
    writes: usize,
}

struct Run {
    rng: ChaCha8Rng,
    servers: Vec<Server>,
    clients: Vec<Client>,
    keys: Vec<String>,
    autocommit: bool,
    tick: u64,
    mutation: Option<Mutation>,
    history: History,
    stats: Stats,
}

/// One-way anti-entropy: `to` receives what it lacks from `from`.
fn pull(servers: &mut [Server], from: usize, to: usize) {
    if from == to {
        return;
    }
    let base = servers[to].replica.summary();
    let items: Vec<_> = servers[from].replica.items_for(&base).collect();
    servers[to]
        .replica
        .receive_session(&base, items)
        .expect("anti-entropy between simulated servers never breaks the protocol");
    // No disks here: what would be persisted is dropped.
    servers[to].replica.take_persist();
    servers[from].replica.take_persist();
}

/// Server `replica`'s database in `view`, every key of `keys` included (an
/// absent key as no writes).
fn observe(replica: &Replica, view: View, keys: &[String]) -> Observation {
    let db = keys
        .iter()
        .map(|k| {
            let value = replica
                .db(view)
                .get(k.as_bytes())
                .map(|v| parse_value(v))
                .unwrap_or_default();
            (k.clone(), value)
        })
        .collect();
    Observation {
        server: replica.id().clone(),
        view,
        db,
    }
}

/// A value of this workload as the writes it reflects: `"0.1;2.1;"` is
/// `["0.1", "2.1"]`.
pub fn parse_value(v: &[u8]) -> Value {
    String::from_utf8_lossy(v)
        .split(';')
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn vector(replica: &Replica, view: View) -> &VersionVector {
    match view {
        View::Full => replica.vv(),
        View::Committed => replica.commit_vv(),
    }
}

impl Run {
    /// Whether server `s` may serve client `c`'s read (`Some(view)`) or
    /// write (`None`), as the network server checks it, minus a mutation.
    fn may_serve(&self, s: usize, c: usize, read: Option<View>) -> bool {
        let mut session = self.clients[c].session.clone();
        if let Some(Mutation::SkipCheck(g)) = self.mutation {
            session = strip(&session, g);
        }
        let replica = &self.servers[s].replica;
        match read {
            Some(view) => session.check_read(vector(replica, view)).is_ok(),
            None => session.check_write(replica.vv()).is_ok(),
        }
    }

    fn client_op(&mut self) {
        let c = self.rng.random_range(0..self.clients.len());
        let key = self.keys[self.rng.random_range(0..self.keys.len())].clone();
        let read = if self.rng.random_bool(0.5) {
            Some(if self.rng.random_bool(0.8) {
                View::Full
            } else {
                View::Committed
            })
        } else {
            None
        };
        let n = self.servers.len();
        let first = self.rng.random_range(0..n);
        let mut chosen = None;
        if self.may_serve(first, c, read) {
            chosen = Some(first);
        } else {
            self.stats.not_yet += 1;
            // Anti-entropy on demand from a random peer.
            if self.rng.random_bool(0.5) {
                let from = self.rng.random_range(0..n);
                pull(&mut self.servers, from, first);
                if self.may_serve(first, c, read) {
                    chosen = Some(first);
                    self.stats.served_after_pull += 1;
                }
            }
            if chosen.is_none() {
                // The session manager tries the others, in random order.
                let mut others: Vec<usize> = (0..n).filter(|&s| s != first).collect();
                for i in (1..others.len()).rev() {
                    let j = self.rng.random_range(0..=i);
                    others.swap(i, j);
                }
                chosen = others.into_iter().find(|&s| self.may_serve(s, c, read));
                if chosen.is_some() {
                    self.stats.moved += 1;
                }
            }
        }
        let Some(s) = chosen else {
            self.stats.unavailable += 1;
            return;
        };
        self.tick += 1;
        match read {
            Some(view) => {
                let replica = &self.servers[s].replica;
                let seen = self.history.observations.len();
                self.history
                    .observations
                    .push(observe(replica, view, &self.keys));
                let observed = vector(replica, view).clone();
                self.clients[c].session.record_read(&observed);
                self.history.events.push(Event::Read {
                    client: c,
                    key,
                    seen,
                });
                self.stats.reads += 1;
            }
            None => {
                let client = &mut self.clients[c];
                client.writes += 1;
                let tag = format!("{c}.{}", client.writes);
                let server = &mut self.servers[s];
                let clock = (self.tick as i64 * 3 + server.skew).max(0) as u64;
                let id: WriteId = server.replica.client_write(
                    clock,
                    Op::Append {
                        key: key.clone().into(),
                        value: format!("{tag};").into(),
                    },
                );
                server.replica.take_persist();
                client.session.record_write(&id);
                self.history.events.push(Event::Write {
                    client: c,
                    server: id.server,
                    key,
                    write: tag,
                });
                self.stats.writes += 1;
            }
        }
    }

    fn commit(&mut self) {
        if let Some(p) = self.servers.iter_mut().find(|s| s.replica.is_primary()) {
            p.replica
                .commit_all()
                .expect("the primary commits its tentative writes");
            p.replica.take_persist();
        }
    }

    fn step(&mut self) {
        let n = self.servers.len();
        match self.rng.random_range(0..100) {
            0..50 => self.client_op(),
            50..90 => {
                let from = self.rng.random_range(0..n);
                let to = self.rng.random_range(0..n);
                pull(&mut self.servers, from, to);
            }
            _ if !self.autocommit => self.commit(),
            _ => {}
        }
    }

    fn heal(&mut self) {
        let n = self.servers.len();
        for round in 0..2 {
            for from in 0..n {
                for to in 0..n {
                    pull(&mut self.servers, from, to);
                }
            }
            if round == 0 {
                self.commit();
            }
        }
        for s in &self.servers {
            for view in [View::Full, View::Committed] {
                self.history
                    .observations
                    .push(observe(&s.replica, view, &self.keys));
            }
        }
    }
}

/// `session` without guarantee `g`.
fn strip(session: &ClientSession, g: Guarantee) -> ClientSession {
    let kept: Guarantees = session.guarantees().iter().filter(|x| *x != g).collect();
    let mut out = ClientSession::new(kept);
    out.record_read(session.read_set());
    for (s, t) in session.write_set().iter() {
        out.record_write(&WriteId::new(t, s.clone()));
    }
    out
}

/// Runs seed `seed`: the history and the counts.
pub fn simulate(seed: u64, params: Params) -> (History, Stats) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = rng.random_range(3..=5usize);
    let ids = ["P", "A", "B", "C", "D"];
    let autocommit = rng.random_bool(0.5);
    let servers = ids[..n]
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let role = if i == 0 {
                Role::Primary { autocommit }
            } else {
                Role::Secondary
            };
            Server {
                replica: Replica::new(ServerId::new(id).expect("a valid id"), role),
                skew: rng.random_range(-40..=40),
            }
        })
        .collect();
    let clients = (0..rng.random_range(2..=4usize))
        .map(|_| Client {
            session: ClientSession::new(params.guarantees),
            writes: 0,
        })
        .collect::<Vec<_>>();
    let keys = (0..rng.random_range(1..=3usize))
        .map(|k| format!("k{k}"))
        .collect();
    let mut run = Run {
        rng,
        history: History {
            sessions: vec![params.guarantees; clients.len()],
            ..History::default()
        },
        servers,
        clients,
        keys,
        autocommit,
        tick: 0,
        mutation: params.mutation,
        stats: Stats::default(),
    };
    for _ in 0..params.steps {
        run.step();
    }
    run.heal();
    (run.history, run.stats)
}

/// Runs seed `seed` and checks the history: the counts, or the violations.
pub fn run_seed(seed: u64, params: Params) -> Result<Stats, Failure> {
    let (history, stats) = simulate(seed, params);
    let violations = check(&history);
    if violations.is_empty() {
        Ok(stats)
    } else {
        Err(Failure { seed, violations })
    }
}

/// Every checker over `history`; at most three violations of each
/// guarantee are kept.
pub fn check(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    for g in Guarantee::ALL {
        out.extend(check_one(history, g).into_iter().take(3));
    }
    out
}

/// The checker of guarantee `g`, for the sessions that asked for it.
pub fn check_one(history: &History, g: Guarantee) -> Vec<Violation> {
    match g {
        Guarantee::Ryw => check_ryw(history),
        Guarantee::Mr => check_mr(history),
        Guarantee::Wfr | Guarantee::Mw => check_write_order(history, g),
    }
}

fn wants(history: &History, client: usize, g: Guarantee) -> bool {
    history.sessions.get(client).is_some_and(|s| s.has(g))
}

fn value<'a>(o: &'a Observation, key: &str) -> &'a [String] {
    o.db.get(key).map_or(&[], Vec::as_slice)
}

/// RYW ([T94 §3]): if read R follows write W in a session, W is in the
/// database R was served from.
fn check_ryw(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    // Per client, per key: the writes made so far.
    let mut written: HashMap<(usize, &str), Vec<&str>> = HashMap::new();
    for (i, e) in history.events.iter().enumerate() {
        match e {
            Event::Write {
                client, key, write, ..
            } => written.entry((*client, key)).or_default().push(write),
            Event::Read { client, key, seen } if wants(history, *client, Guarantee::Ryw) => {
                let o = &history.observations[*seen];
                let v = value(o, key);
                for w in written.get(&(*client, key.as_str())).into_iter().flatten() {
                    if !v.iter().any(|x| x == w) {
                        out.push(Violation {
                            guarantee: Guarantee::Ryw,
                            detail: format!(
                                "event {i}: client {client} read {key} = {v:?} at {} ({:?}) without its own earlier write {w}",
                                o.server, o.view
                            ),
                        });
                    }
                }
            }
            Event::Read { .. } => {}
        }
    }
    out
}

/// MR ([T94 §3]): if read R1 precedes R2 in a session, the writes relevant
/// to R1 (here: the writes to its key that it saw) are in R2's database.
fn check_mr(history: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    // Per client: every write seen by its reads so far, by key.
    let mut seen_before: HashMap<(usize, &str), HashSet<&str>> = HashMap::new();
    for (i, e) in history.events.iter().enumerate() {
        let Event::Read { client, key, seen } = e else {
            continue;
        };
        let o = &history.observations[*seen];
        if wants(history, *client, Guarantee::Mr) {
            // The writes relevant to a read are those to the key it read.
            let now: HashSet<&str> = value(o, key).iter().map(String::as_str).collect();
            if let Some(before) = seen_before.get(&(*client, key.as_str())) {
                for w in before {
                    if !now.contains(w) {
                        out.push(Violation {
                            guarantee: Guarantee::Mr,
                            detail: format!(
                                "event {i}: client {client} read {key} at {} ({:?}) without {w}, which an earlier read of the session saw",
                                o.server, o.view
                            ),
                        });
                    }
                }
            }
        }
        let entry = seen_before.entry((*client, key.as_str())).or_default();
        entry.extend(value(o, key).iter().map(String::as_str));
    }
    out
}

/// A write of a session (client, key, tag) and the writes (key, tag) that
/// must precede it.
type Rule<'a> = (usize, &'a str, &'a str, Vec<(&'a str, &'a str)>);

/// WFR and MW ([T94 §3]): in every database holding a session's write W2,
/// the writes that must precede it (WFR: those an earlier read of the
/// session saw; MW: the session's earlier writes) are present, and before
/// W2 where the order is visible (the same key).
fn check_write_order(history: &History, g: Guarantee) -> Vec<Violation> {
    let mut out = Vec::new();
    // For each write of a session that asked for `g`: (key, tag) and the
    // writes that must precede it, with their keys.
    let mut rules: Vec<Rule<'_>> = Vec::new();
    let mut prior_writes: HashMap<usize, Vec<(&str, &str)>> = HashMap::new();
    let mut prior_reads: HashMap<usize, Vec<(&str, &str)>> = HashMap::new();
    for e in &history.events {
        match e {
            Event::Write {
                client, key, write, ..
            } => {
                if wants(history, *client, g) {
                    let before = match g {
                        Guarantee::Mw => prior_writes.get(client).cloned().unwrap_or_default(),
                        _ => prior_reads.get(client).cloned().unwrap_or_default(),
                    };
                    rules.push((*client, key, write, before));
                }
                prior_writes.entry(*client).or_default().push((key, write));
            }
            Event::Read { client, key, seen } => {
                let o = &history.observations[*seen];
                let reads = prior_reads.entry(*client).or_default();
                for w in value(o, key) {
                    if !reads.iter().any(|(_, x)| x == w) {
                        reads.push((key, w));
                    }
                }
            }
        }
    }
    for (oi, o) in history.observations.iter().enumerate() {
        let mut position: HashMap<&str, (&str, usize)> = HashMap::new();
        for (k, v) in &o.db {
            for (i, w) in v.iter().enumerate() {
                position.insert(w, (k, i));
            }
        }
        for (client, key, w2, before) in &rules {
            let Some(&(_, p2)) = position.get(w2) else {
                continue;
            };
            for (k1, w1) in before {
                if !o.db.contains_key(*k1) {
                    // Not observed: nothing to say.
                    continue;
                }
                let problem = match position.get(w1) {
                    None => Some("lacks"),
                    Some(&(k, p1)) if k == *key && p1 > p2 => Some("orders after it"),
                    _ => None,
                };
                if let Some(problem) = problem {
                    out.push(Violation {
                        guarantee: g,
                        detail: format!(
                            "observation {oi} at {} ({:?}) holds client {client}'s write {w2} on {key} but {problem} {w1} on {k1}, which {}",
                            o.server,
                            o.view,
                            if g == Guarantee::Mw {
                                "the session wrote before it"
                            } else {
                                "the session read before it"
                            }
                        ),
                    });
                    if out.len() >= 3 {
                        return out;
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_history() {
        let a = simulate(7, Params::default());
        let b = simulate(7, Params::default());
        assert_eq!(a.0.events, b.0.events);
        assert_eq!(a.0.observations, b.0.observations);
        assert_eq!(a.1, b.1);
    }
}
