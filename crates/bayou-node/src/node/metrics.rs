//! What a replica shows an operator: Prometheus metrics and the state the
//! web view polls.
//!
//! * Events the replica does not count itself are counted here, through
//!   one-line hooks: the commit lag of every write this replica learns is
//!   committed ([`Mark`], taken around each change of the replica), the
//!   duration of each durable batch, and anti-entropy traffic by peer with
//!   the last sessions.
//! * Everything else is read at scrape time ([`NodeCollector`]) from what
//!   the replica and [`Counters`](super::Counters) already keep, so nothing
//!   is counted twice.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bayou_core::{Csn, Replica, ServerId, View};
use serde::Serialize;
use server_kit::http::prometheus_client::collector::Collector;
use server_kit::http::prometheus_client::encoding::DescriptorEncoder;
use server_kit::http::prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use server_kit::http::prometheus_client::registry::Registry;
use server_kit::http::{Scrape, labels};

use super::{ClockMode, Node};
use crate::peer::{SessionError, SyncReport};

/// How many anti-entropy sessions [`Metrics`] remembers for the web view.
pub const SESSIONS_KEPT: usize = 32;
/// Most committed writes, and most tentative writes, the web view's JSON
/// lists (the last committed ones, the first tentative ones); the counts
/// of both are always given.
pub const LOG_SHOWN: usize = 100;
/// Longest operation text in the web view's JSON, in characters.
const OP_SHOWN_CHARS: usize = 80;
/// The label value for traffic from a connection that has not named a
/// configured peer (yet): keeps label values bounded.
const OTHER_PEER: &str = "other";

/// Anti-entropy traffic with one peer.
#[derive(Debug, Default)]
struct Traffic {
    items_sent: AtomicU64,
    items_received: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    sessions_ok: AtomicU64,
    sessions_failed: AtomicU64,
}

/// One anti-entropy session this replica started.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    /// The peer.
    pub peer: String,
    /// When it ended, in milliseconds since the Unix epoch.
    pub ended_ms: u64,
    /// How long it took, in milliseconds.
    pub millis: u64,
    /// Why it failed, or `None`.
    pub error: Option<String>,
    /// Writes new to the peer.
    pub sent_writes: u64,
    /// Commit notifications new to the peer.
    pub sent_commits: u64,
    /// Writes new to this replica.
    pub received_writes: u64,
    /// Commit notifications new to this replica.
    pub received_commits: u64,
}

/// The events of one replica that only this module counts.
#[derive(Debug)]
pub struct Metrics {
    /// Seconds from a write's acceptance (its accept-stamp, a wall-clock
    /// reading) to the moment this replica learned it committed.
    commit_lag: Histogram,
    /// Writes this replica learned are committed, since it started.
    commits: AtomicU64,
    /// Seconds to write one durable batch (one redb transaction, fsync
    /// included).
    fsync: Histogram,
    /// Traffic by peer id; [`OTHER_PEER`] for the rest.
    peers: BTreeMap<String, Traffic>,
    sessions: Mutex<VecDeque<SessionRecord>>,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Metrics {
    pub(super) fn new<'a>(peers: impl Iterator<Item = &'a ServerId>) -> Metrics {
        Metrics {
            // 1 ms to about 9 minutes.
            commit_lag: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
            commits: AtomicU64::new(0),
            // 50 µs to about 1.6 s.
            fsync: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            peers: peers
                .map(|p| p.to_string())
                .chain([OTHER_PEER.to_string()])
                .map(|p| (p, Traffic::default()))
                .collect(),
            sessions: Mutex::new(VecDeque::new()),
        }
    }

    fn traffic(&self, peer: &str) -> &Traffic {
        self.peers
            .get(peer)
            .or_else(|| self.peers.get(OTHER_PEER))
            .expect("the other-peer entry exists")
    }

    /// A durable batch took `elapsed`.
    pub fn observe_fsync(&self, elapsed: Duration) {
        self.fsync.observe(elapsed.as_secs_f64());
    }

    /// Peer protocol bytes written to `peer`.
    pub fn bytes_sent(&self, peer: &str, n: usize) {
        self.traffic(peer)
            .bytes_sent
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Peer protocol bytes read from `peer`.
    pub fn bytes_received(&self, peer: &str, n: usize) {
        self.traffic(peer)
            .bytes_received
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Anti-entropy items sent to `peer`.
    pub fn items_sent(&self, peer: &str, n: usize) {
        self.traffic(peer)
            .items_sent
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Anti-entropy items received from `peer`.
    pub fn items_received(&self, peer: &str, n: usize) {
        self.traffic(peer)
            .items_received
            .fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A session this replica started with `peer` ended.
    pub fn session(
        &self,
        peer: &ServerId,
        took: Duration,
        result: &Result<SyncReport, SessionError>,
    ) {
        let t = self.traffic(peer.as_str());
        let (counter, report, error) = match result {
            Ok(r) => (&t.sessions_ok, *r, None),
            Err(e) => (
                &t.sessions_failed,
                SyncReport::default(),
                Some(e.to_string()),
            ),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let mut sessions = self.sessions.lock().expect("sessions lock");
        if sessions.len() == SESSIONS_KEPT {
            sessions.pop_front();
        }
        sessions.push_back(SessionRecord {
            peer: peer.to_string(),
            ended_ms: wall_ms(),
            millis: took.as_millis() as u64,
            error,
            sent_writes: report.sent_writes,
            sent_commits: report.sent_commits,
            received_writes: report.received_writes,
            received_commits: report.received_commits,
        });
    }

    /// The last sessions this replica started, oldest first.
    pub fn sessions(&self) -> Vec<SessionRecord> {
        self.sessions
            .lock()
            .expect("sessions lock")
            .iter()
            .cloned()
            .collect()
    }

    /// Registers, in `registry`, one collector of the replicas `nodes` of
    /// this process: every metric once, a sample per replica (label
    /// `replica`).
    pub fn register(nodes: &[Arc<Node>], registry: &mut Registry) {
        registry.register_collector(Box::new(ReplicasCollector(nodes.to_vec())));
    }
}

/// The replica's position before a change, to observe what the change
/// committed.
pub(super) struct Mark {
    csn: Csn,
}

impl Mark {
    pub(super) fn new(replica: &Replica) -> Mark {
        Mark { csn: replica.csn() }
    }

    /// Observes the commit lag of every write committed since the mark
    /// that the log still holds (O(new commits)).
    pub(super) fn observe(self, replica: &Replica, metrics: &Metrics, clock: ClockMode) {
        let csn = replica.csn();
        if csn <= self.csn {
            return;
        }
        metrics.commits.fetch_add(csn - self.csn, Ordering::Relaxed);
        if clock != ClockMode::WallMillis {
            return;
        }
        let now = wall_ms();
        let new = (csn - self.csn.max(replica.osn())) as usize;
        for (_, w) in replica.committed().rev().take(new) {
            metrics
                .commit_lag
                .observe(now.saturating_sub(w.id.stamp) as f64 / 1000.0);
        }
    }
}

/// Reads the replicas' state and counters at scrape time.
#[derive(Debug)]
struct ReplicasCollector(Vec<Arc<Node>>);

/// What a scrape reads under the replica's lock.
struct Snapshot {
    accepted: u64,
    tentative: u64,
    csn: u64,
    osn: u64,
    retained_writes: u64,
    retained_bytes: u64,
    keys: u64,
    undos: u64,
    tentative_executions: u64,
    redos: u64,
    commit_executions: u64,
    vv: Vec<(String, i64)>,
}

impl Node {
    fn scrape_snapshot(&self) -> Snapshot {
        let core = self.core.lock().expect("replica lock");
        let r = &core.replica;
        let stats = r.stats();
        Snapshot {
            accepted: core.accepted,
            tentative: r.tentative_len() as u64,
            csn: r.csn(),
            osn: r.osn(),
            retained_writes: r.retained_len() as u64,
            retained_bytes: r.retained_bytes(),
            keys: r.db(View::Full).len() as u64,
            undos: stats.undos,
            tentative_executions: stats.tentative_executions,
            redos: stats.redos,
            commit_executions: stats.commit_executions,
            vv: r
                .vv()
                .iter()
                .map(|(s, t)| (s.to_string(), t as i64))
                .collect(),
        }
    }

    /// Whether the replica still serves (its storage thread runs), for
    /// `/healthz`.
    pub fn health(&self) -> Result<(), String> {
        if self.core.lock().expect("replica lock").batches.is_some() {
            Ok(())
        } else {
            Err(format!("replica {}: storage stopped", self.config.id))
        }
    }
}

impl Collector for ReplicasCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let nodes: Vec<(String, &Node, Snapshot)> = self
            .0
            .iter()
            .map(|n| (n.config.id.to_string(), &**n, n.scrape_snapshot()))
            .collect();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let replica = |id: &str| labels([("replica", id)]);
        let mut e = Scrape::new(encoder);
        // One sample per replica of a value read from it.
        macro_rules! each {
            ($kind:ident, $name:expr, $help:expr, |$n:ident, $s:ident| $value:expr) => {
                e.$kind(
                    $name,
                    $help,
                    nodes.iter().map(|(id, $n, $s)| {
                        let _ = (&$n, &$s);
                        (replica(id), $value)
                    }),
                )?
            };
        }
        // One sample per replica and peer of a traffic counter.
        let by_peer = |f: fn(&Traffic) -> &AtomicU64| {
            nodes
                .iter()
                .flat_map(move |(id, n, _)| {
                    n.metrics
                        .peers
                        .iter()
                        .map(move |(p, t)| (labels([("replica", id), ("peer", p)]), get(f(t))))
                })
                .collect::<Vec<_>>()
        };
        e.histograms(
            "bayou_commit_lag_seconds",
            "Seconds from a write's acceptance (its wall-clock accept-stamp) to when this replica learned it committed; one observation per commit learned, none with --logical-clock (stamps are then not times)",
            nodes
                .iter()
                .map(|(id, n, _)| (replica(id), &n.metrics.commit_lag)),
        )?;
        e.histograms(
            "bayou_fsync_seconds",
            "Seconds to write one durable batch: one redb transaction, fsync included",
            nodes
                .iter()
                .map(|(id, n, _)| (replica(id), &n.metrics.fsync)),
        )?;
        each!(
            counters,
            "bayou_writes_accepted",
            "Writes accepted from clients by this replica since it started",
            |n, s| s.accepted
        );
        each!(
            counters,
            "bayou_writes_committed",
            "Writes this replica learned are committed, since it started",
            |n, s| get(&n.metrics.commits)
        );
        each!(
            gauges,
            "bayou_tentative_writes",
            "Tentative writes held (not yet committed)",
            |n, s| s.tentative as i64
        );
        each!(
            gauges,
            "bayou_csn",
            "Highest commit sequence number known",
            |n, s| s.csn as i64
        );
        each!(
            gauges,
            "bayou_osn",
            "CSN of the last write discarded by log truncation",
            |n, s| s.osn as i64
        );
        each!(
            gauges,
            "bayou_log_writes",
            "Writes in the log: retained committed writes plus tentative writes",
            |n, s| (s.retained_writes + s.tentative) as i64
        );
        each!(
            gauges,
            "bayou_retained_writes",
            "Committed writes the log retains (not yet truncated)",
            |n, s| s.retained_writes as i64
        );
        each!(
            gauges,
            "bayou_retained_bytes",
            "Approximate bytes of the retained committed writes",
            |n, s| s.retained_bytes as i64
        );
        each!(gauges, "bayou_keys", "Keys in the full view", |n, s| s.keys
            as i64);
        each!(
            counters,
            "bayou_rollbacks",
            "Tentative writes rolled back (undone) to insert writes ordered before them",
            |n, s| s.undos
        );
        each!(
            counters,
            "bayou_tentative_executions",
            "Executions of tentative writes on the full view: first runs and redos after rollbacks",
            |n, s| s.tentative_executions
        );
        each!(
            counters,
            "bayou_redone_writes",
            "Tentative writes executed again after a rollback (or a full-state install) undid them",
            |n, s| s.redos
        );
        each!(
            counters,
            "bayou_commit_executions",
            "Writes executed on the committed view",
            |n, s| s.commit_executions
        );
        e.gauges(
            "bayou_version_vector",
            "This replica's version vector: the highest accept-stamp held from each server",
            nodes.iter().flat_map(|(id, _, s)| {
                s.vv.iter()
                    .map(move |(server, t)| (labels([("replica", id), ("server", server)]), *t))
            }),
        )?;
        each!(
            gauges,
            "bayou_offline",
            "1 while anti-entropy is switched off (BAYOU.OFFLINE)",
            |n, s| n.is_offline() as i64
        );
        each!(
            counters,
            "bayou_anti_entropy_sessions",
            "Anti-entropy sessions this replica started that completed",
            |n, s| get(&n.counters.sessions_ok)
        );
        each!(
            counters,
            "bayou_anti_entropy_sessions_failed",
            "Anti-entropy sessions this replica started that failed (peer down, refused, protocol error)",
            |n, s| get(&n.counters.sessions_failed)
        );
        e.counters(
            "bayou_peer_sessions",
            "Anti-entropy sessions this replica started that completed, by peer",
            by_peer(|t| &t.sessions_ok),
        )?;
        e.counters(
            "bayou_peer_sessions_failed",
            "Anti-entropy sessions this replica started that failed, by peer",
            by_peer(|t| &t.sessions_failed),
        )?;
        e.counters(
            "bayou_peer_items_sent",
            "Anti-entropy items (writes and commit notices) sent, by peer",
            by_peer(|t| &t.items_sent),
        )?;
        e.counters(
            "bayou_peer_items_received",
            "Anti-entropy items received, by peer",
            by_peer(|t| &t.items_received),
        )?;
        e.counters(
            "bayou_peer_sent_bytes",
            "Peer protocol bytes written, by peer (other: connections that named no configured peer, such as refusals before the greeting)",
            by_peer(|t| &t.bytes_sent),
        )?;
        e.counters(
            "bayou_peer_received_bytes",
            "Peer protocol bytes read, by peer (other: as for bayou_peer_sent_bytes)",
            by_peer(|t| &t.bytes_received),
        )?;
        each!(
            counters,
            "bayou_durable_batches",
            "Durable batches (storage transactions) written",
            |n, s| get(&n.counters.batches)
        );
        each!(
            counters,
            "bayou_client_commands",
            "Client commands served",
            |n, s| get(&n.counters.commands)
        );
        each!(
            counters,
            "bayou_forged_writes_refused",
            "Writes refused because their accepting server's signature did not verify (changed or forged on the way), from peers and bundles",
            |n, s| get(&n.counters.forged_writes_refused)
        );
        Ok(())
    }
}

/// One write in the web view's log.
#[derive(Debug, Serialize)]
pub struct LogEntry {
    /// Its CSN, `None` while tentative (shown as ∞).
    pub csn: Option<Csn>,
    /// Its accept-stamp.
    pub stamp: u64,
    /// The server that accepted it.
    pub server: String,
    /// The operation, cut to a readable length.
    pub op: String,
}

/// A replica's state as the web view shows it: bounded however long the
/// log is.
#[derive(Debug, Serialize)]
pub struct WebState {
    /// The replica's id.
    pub id: String,
    /// `primary` or `secondary`.
    pub role: &'static str,
    /// The primary's id.
    pub primary: String,
    /// Whether anti-entropy is off.
    pub offline: bool,
    /// Highest CSN known.
    pub csn: Csn,
    /// CSN of the last truncated write.
    pub osn: Csn,
    /// Tentative writes held.
    pub tentative: usize,
    /// Committed writes retained.
    pub retained_writes: usize,
    /// Keys in the full view.
    pub keys: usize,
    /// The version vector, server -> stamp.
    pub vv: BTreeMap<String, u64>,
    /// The last [`LOG_SHOWN`] retained committed writes.
    pub committed: Vec<LogEntry>,
    /// The first [`LOG_SHOWN`] tentative writes.
    pub tentative_writes: Vec<LogEntry>,
    /// The last anti-entropy sessions this replica started.
    pub sessions: Vec<SessionRecord>,
    /// The configured peers, id -> address.
    pub peers: BTreeMap<String, String>,
    /// Writes this replica learned are committed since it started.
    pub commits_learned: u64,
    /// The replica's wall clock, in milliseconds since the Unix epoch.
    pub now_ms: u64,
}

fn entry(
    csn: Option<Csn>,
    id: &bayou_core::WriteId,
    op: &bayou_core::Op,
    author: Option<&Arc<str>>,
) -> LogEntry {
    let mut op = op.to_string();
    if op.chars().count() > OP_SHOWN_CHARS {
        op = op.chars().take(OP_SHOWN_CHARS - 1).collect::<String>() + "…";
    }
    if let Some(a) = author {
        op = format!("{op} by {a}");
    }
    LogEntry {
        csn,
        stamp: id.stamp,
        server: id.server.to_string(),
        op,
    }
}

impl Node {
    /// The replica's state for the web view.
    pub fn web_state(&self) -> WebState {
        let mut state = {
            let core = self.core.lock().expect("replica lock");
            let r = &core.replica;
            let mut committed: Vec<LogEntry> = r
                .committed()
                .rev()
                .take(LOG_SHOWN)
                .map(|(csn, w)| entry(Some(csn), &w.id, &w.op, w.author.as_ref()))
                .collect();
            committed.reverse();
            WebState {
                id: r.id().to_string(),
                role: if r.is_primary() {
                    "primary"
                } else {
                    "secondary"
                },
                primary: crate::member::effective_primary(r, self.config.primary.as_ref())
                    .map_or(String::new(), |p| p.to_string()),
                offline: self.is_offline(),
                csn: r.csn(),
                osn: r.osn(),
                tentative: r.tentative_len(),
                retained_writes: r.retained_len(),
                keys: r.db(View::Full).len(),
                vv: r.vv().iter().map(|(s, t)| (s.to_string(), t)).collect(),
                committed,
                tentative_writes: r
                    .tentative()
                    .take(LOG_SHOWN)
                    .map(|(id, op)| entry(None, id, op, r.tentative_author(id)))
                    .collect(),
                sessions: Vec::new(),
                peers: BTreeMap::new(),
                commits_learned: 0,
                now_ms: wall_ms(),
            }
        };
        state.sessions = self.metrics.sessions();
        state.peers = self
            .peers()
            .into_iter()
            .map(|(id, a)| (id.to_string(), a))
            .collect();
        state.commits_learned = self.metrics.commits.load(Ordering::Relaxed);
        state
    }
}
