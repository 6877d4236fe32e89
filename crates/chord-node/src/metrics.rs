//! What a Chord node shows an operator: Prometheus metrics and the ring
//! state the web view polls.
//!
//! * Events the cores do not count are counted here through one-line hooks:
//!   the hops and duration of every lookup the node starts
//!   ([`Metrics::lookup`], in [`Shared::lookup`]) and the latency and
//!   timeouts of the protocol's requests by peer ([`RpcMetrics`], where the
//!   core task sends messages, receives them and fires timers).
//! * Everything else is read at scrape time from what the cores already
//!   keep (the counters `CHORD.INFO` shows, the ring view, the store):
//!   [`refresh`] gathers it from the core and data tasks before each
//!   scrape, and [`NodeCollector`] encodes it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chord_core::node::{LookupOutcome, Message, OpError, Timer};
use chord_core::{Id, IdSpace};
use serde::Serialize;
use server_kit::http::Scrape;
use server_kit::http::prometheus_client::collector::Collector;
use server_kit::http::prometheus_client::encoding::DescriptorEncoder;
use server_kit::http::prometheus_client::metrics::counter::Counter;
use server_kit::http::prometheus_client::metrics::family::Family;
use server_kit::http::prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use server_kit::http::prometheus_client::registry::Registry;

use crate::data;
use crate::node::{Peer, Shared};
use crate::store::hex;
use crate::wire::CoreMsg;

/// Labels of a per-peer metric: the peer's address.
type PeerLabel = Vec<(String, String)>;

fn rpc_histogram() -> Histogram {
    // 100 µs to about 3.3 s.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

fn peer_label(addr: SocketAddr) -> PeerLabel {
    vec![("peer".to_string(), addr.to_string())]
}

/// The protocol's requests to other processes (`Ping`, `GetState`,
/// `FindStep`, `Forward`), matched with their answers (`Pong`, `State`,
/// `StepReply`, `ForwardAck`) by the request id the core gives them, or
/// with the core's deadline for them: latency and timeouts by peer.
#[derive(Debug)]
pub struct RpcMetrics {
    /// (virtual node, request id) -> (peer, sent at).
    pending: Mutex<HashMap<(Id, u64), (SocketAddr, Instant)>>,
    latency: Family<PeerLabel, Histogram, fn() -> Histogram>,
    timeouts: Family<PeerLabel, Counter>,
}

impl Default for RpcMetrics {
    fn default() -> Self {
        RpcMetrics {
            pending: Mutex::default(),
            latency: Family::new_with_constructor(rpc_histogram),
            timeouts: Family::default(),
        }
    }
}

impl RpcMetrics {
    /// Virtual node `vnode` sends `msg` to another process at `to`.
    pub fn sent(&self, vnode: Id, to: SocketAddr, msg: &CoreMsg) {
        let req = match msg {
            Message::Ping { req }
            | Message::GetState { req }
            | Message::FindStep { req, .. }
            | Message::Forward { req, .. } => *req,
            _ => return,
        };
        self.pending
            .lock()
            .expect("rpc lock")
            .insert((vnode, req), (to, Instant::now()));
    }

    /// Virtual node `vnode` received `msg` from another process.
    pub fn received(&self, vnode: Id, msg: &CoreMsg) {
        let req = match msg {
            Message::Pong { req }
            | Message::State { req, .. }
            | Message::StepReply { req, .. }
            | Message::ForwardAck { req } => *req,
            _ => return,
        };
        let sent = self.pending.lock().expect("rpc lock").remove(&(vnode, req));
        if let Some((peer, at)) = sent {
            self.latency
                .get_or_create(&peer_label(peer))
                .observe(at.elapsed().as_secs_f64());
        }
    }

    /// A timer of virtual node `vnode` fired: a request's deadline, if it
    /// is still unanswered, is a timeout.
    pub fn timer(&self, vnode: Id, timer: &Timer) {
        let Timer::Request(req) = timer else {
            return;
        };
        let sent = self
            .pending
            .lock()
            .expect("rpc lock")
            .remove(&(vnode, *req));
        if let Some((peer, _)) = sent {
            self.timeouts.get_or_create(&peer_label(peer)).inc();
        }
    }
}

/// Lookups this node started, and the gathered state of the last scrape.
#[derive(Debug)]
pub struct Metrics {
    hops: Histogram,
    lookup_seconds: Histogram,
    lookups_failed: Counter,
    /// Requests to other processes.
    pub rpc: RpcMetrics,
    scraped: Arc<Mutex<Option<Snapshot>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            hops: Histogram::new([
                0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 24.0,
            ]),
            lookup_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            lookups_failed: Counter::default(),
            rpc: RpcMetrics::default(),
            scraped: Arc::default(),
        }
    }
}

impl Metrics {
    /// A lookup this node started finished after `took`.
    pub fn lookup(&self, took: Duration, r: &Result<LookupOutcome<SocketAddr>, OpError>) {
        match r {
            Ok(o) => {
                self.hops.observe(o.path.len().saturating_sub(1) as f64);
                self.lookup_seconds.observe(took.as_secs_f64());
            }
            Err(_) => {
                self.lookups_failed.inc();
            }
        }
    }
}

/// Registers the event metrics and the scrape-time collector of `shared`.
pub fn register(shared: &Arc<Shared>, registry: &mut Registry) {
    let m = &shared.metrics;
    registry.register(
        "chord_lookup_hops",
        "Hops of each lookup this node started for a client or the data plane (nodes visited minus one)",
        m.hops.clone(),
    );
    registry.register(
        "chord_lookup_seconds",
        "Seconds each successful lookup this node started took",
        m.lookup_seconds.clone(),
    );
    registry.register(
        "chord_lookups_started_failed",
        "Lookups this node started for a client or the data plane that failed (timeout, not joined)",
        m.lookups_failed.clone(),
    );
    let rpc = &m.rpc;
    registry.register(
        "chord_rpc_seconds",
        "Seconds from sending a protocol request (ping, get-state, find-step, forward) to another process to its answer, by peer",
        rpc.latency.clone(),
    );
    registry.register(
        "chord_rpc_timeouts",
        "Protocol requests to another process that reached the core's deadline unanswered, by peer",
        rpc.timeouts.clone(),
    );
    registry.register_collector(Box::new(NodeCollector(m.scraped.clone())));
}

/// What a scrape reads from the core and data tasks.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    vnodes: usize,
    joined: usize,
    ready: usize,
    with_predecessor: usize,
    successors_min: usize,
    successors_configured: usize,
    fingers_set_min: usize,
    fingers_distinct_min: usize,
    keys_stored: usize,
    keys_owned: usize,
    messages_sent: u64,
    core_timeouts: u64,
    lookups_ok: u64,
    lookups_failed: u64,
    records_pushed: u64,
    records_handed_off: u64,
    records_repaired: u64,
    records_pulled: u64,
    rounds_confirmed: u64,
    tombstones_purged: u64,
    hedged_reads: u64,
    commands: u64,
}

/// Fingers of one virtual node: how many are set, how many distinct.
fn finger_health(
    h: &chord_core::VirtualHost<SocketAddr>,
    id: Id,
    space: IdSpace,
) -> (usize, usize) {
    let Some(n) = h.nodes().get(&id) else {
        return (0, 0);
    };
    let mut set = 0;
    let mut distinct = std::collections::BTreeSet::new();
    for i in 1..=space.bits() {
        if let Some(f) = n.finger(i) {
            set += 1;
            distinct.insert(f.id);
        }
    }
    (set, distinct.len())
}

/// Key counts of the store: (live keys stored, of which owned here),
/// counted in place (a scrape or the web view's poll copies no record).
async fn key_counts(shared: &Shared) -> (usize, usize) {
    data::inspect(shared, |p| {
        let mut stored = 0;
        let mut owned = 0;
        for (id, r) in p.store().records() {
            if !r.is_tombstone() {
                stored += 1;
                owned += p.owner_of(*id).is_some() as usize;
            }
        }
        (stored, owned)
    })
    .await
    .unwrap_or_default()
}

/// Gathers the node's state for the next scrape.
pub async fn refresh(shared: Arc<Shared>) {
    let view = shared.view();
    let stats = shared.core_stats().await;
    let ids: Vec<Id> = view.vnodes.iter().map(|v| v.id).collect();
    let space = shared.space;
    let fids = ids.clone();
    let fingers = shared
        .inspect(move |h| {
            fids.iter()
                .map(|id| finger_health(h, *id, space))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
    let (ready, ds) = data::inspect(&shared, move |p| {
        (ids.iter().filter(|v| p.is_ready(**v)).count(), p.stats())
    })
    .await
    .unwrap_or_default();
    let (keys_stored, keys_owned) = key_counts(&shared).await;
    let s = Snapshot {
        vnodes: view.vnodes.len(),
        joined: view.vnodes.iter().filter(|v| v.joined).count(),
        ready,
        with_predecessor: view.vnodes.iter().filter(|v| v.pred.is_some()).count(),
        successors_min: view.vnodes.iter().map(|v| v.succs.len()).min().unwrap_or(0),
        successors_configured: shared.cfg.successors,
        fingers_set_min: fingers.iter().map(|f| f.0).min().unwrap_or(0),
        fingers_distinct_min: fingers.iter().map(|f| f.1).min().unwrap_or(0),
        keys_stored,
        keys_owned,
        messages_sent: stats.messages_sent,
        core_timeouts: stats.timeouts,
        lookups_ok: stats.lookups_ok,
        lookups_failed: stats.lookups_failed,
        records_pushed: ds.records_pushed,
        records_handed_off: ds.records_handed_off,
        records_repaired: ds.records_repaired,
        records_pulled: ds.records_pulled,
        rounds_confirmed: ds.rounds_confirmed,
        tombstones_purged: ds.tombstones_purged,
        hedged_reads: ds.hedged_reads,
        commands: shared
            .counters
            .commands
            .load(std::sync::atomic::Ordering::Relaxed),
    };
    *shared.metrics.scraped.lock().expect("scrape lock") = Some(s);
}

/// Encodes the state [`refresh`] gathered.
#[derive(Debug)]
struct NodeCollector(Arc<Mutex<Option<Snapshot>>>);

impl Collector for NodeCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(s) = self.0.lock().expect("scrape lock").clone() else {
            return Ok(());
        };
        let mut e = Scrape::new(encoder);
        e.gauge(
            "chord_virtual_nodes",
            "Virtual nodes of this process",
            s.vnodes as i64,
        )?;
        e.gauge(
            "chord_virtual_nodes_joined",
            "Virtual nodes that are ring members",
            s.joined as i64,
        )?;
        e.gauge(
            "chord_virtual_nodes_ready",
            "Virtual nodes whose data plane serves (keys handed over after joining)",
            s.ready as i64,
        )?;
        e.gauge(
            "chord_predecessors_known",
            "Virtual nodes that know a predecessor",
            s.with_predecessor as i64,
        )?;
        e.gauge(
            "chord_successor_list_length",
            "Entries in the shortest successor list of this process's virtual nodes",
            s.successors_min as i64,
        )?;
        e.gauge(
            "chord_successor_list_capacity",
            "The successor-list length r the node keeps when the ring is large enough (--successors)",
            s.successors_configured as i64,
        )?;
        e.gauge(
            "chord_fingers_set",
            "Finger-table entries set, of 160, on the virtual node with the fewest",
            s.fingers_set_min as i64,
        )?;
        e.gauge(
            "chord_fingers_distinct",
            "Distinct nodes in the finger table of the virtual node with the fewest",
            s.fingers_distinct_min as i64,
        )?;
        e.gauge(
            "chord_keys_stored",
            "Live keys stored here (owned and replica copies)",
            s.keys_stored as i64,
        )?;
        e.gauge(
            "chord_keys_owned",
            "Live keys stored here that a virtual node of this process owns",
            s.keys_owned as i64,
        )?;
        e.gauge(
            "chord_keys_replicated",
            "Live keys stored here as a replica of another node's keys",
            s.keys_stored.saturating_sub(s.keys_owned) as i64,
        )?;
        e.counter(
            "chord_messages_sent",
            "Protocol messages the cores sent (ring maintenance and lookups)",
            s.messages_sent,
        )?;
        e.counter(
            "chord_core_timeouts",
            "Protocol requests of the cores that went unanswered in time",
            s.core_timeouts,
        )?;
        e.counter(
            "chord_lookups",
            "Lookups the cores completed (client, data plane and finger maintenance)",
            s.lookups_ok,
        )?;
        e.counter(
            "chord_lookups_failed",
            "Lookups the cores gave up",
            s.lookups_failed,
        )?;
        e.counter(
            "chord_records_pushed",
            "Records sent to other nodes by replica repair (anti-entropy) and join/leave hand-off",
            s.records_pushed,
        )?;
        e.counter(
            "chord_records_handed_off",
            "Records handed off to a successor when a node joins or leaves",
            s.records_handed_off,
        )?;
        e.counter(
            "chord_records_repaired",
            "Records pushed by anti-entropy to repair a missing or older copy",
            s.records_repaired,
        )?;
        e.counter(
            "chord_records_pulled",
            "Records pulled from other nodes by replica repair",
            s.records_pulled,
        )?;
        e.counter(
            "chord_repair_rounds_confirmed",
            "Anti-entropy rounds that confirmed every replica",
            s.rounds_confirmed,
        )?;
        e.counter(
            "chord_tombstones_purged",
            "Delete tombstones purged",
            s.tombstones_purged,
        )?;
        e.counter(
            "chord_hedged_reads",
            "Reads answered after asking the key's other replicas",
            s.hedged_reads,
        )?;
        e.counter("chord_client_commands", "RESP commands served", s.commands)
    }
}

/// A node on the ring, for the web view.
#[derive(Debug, Clone, Serialize)]
pub struct RingNode {
    /// Its id, in hex.
    pub id: String,
    /// Its position on the ring, from 0 (inclusive) to 1.
    pub pos: f64,
    /// Its address.
    pub addr: String,
}

fn ring_node(space: IdSpace, p: &Peer) -> RingNode {
    RingNode {
        id: hex(p.id),
        pos: space.fraction(p.id),
        addr: p.addr.to_string(),
    }
}

/// A finger of a virtual node.
#[derive(Debug, Clone, Serialize)]
pub struct Finger {
    /// Finger index i: the entry for `id + 2^(i-1)`.
    pub i: u32,
    /// The node it points to.
    pub node: RingNode,
}

/// One virtual node for the web view.
#[derive(Debug, Clone, Serialize)]
pub struct RingVnode {
    /// Itself.
    pub node: RingNode,
    /// Whether it is a ring member.
    pub joined: bool,
    /// Its predecessor.
    pub pred: Option<RingNode>,
    /// Its successor list.
    pub succs: Vec<RingNode>,
    /// Its fingers, the first index of each distinct target only.
    pub fingers: Vec<Finger>,
}

/// A node's state for the web view (`/api/ring`).
#[derive(Debug, Clone, Serialize)]
pub struct RingState {
    /// The process's address.
    pub addr: String,
    /// Its virtual nodes.
    pub vnodes: Vec<RingVnode>,
    /// Live keys stored here.
    pub keys_stored: usize,
    /// Of which owned here.
    pub keys_owned: usize,
    /// Lookups the cores completed.
    pub lookups: u64,
}

/// The node's ring state for the web view.
pub async fn ring_state(shared: &Arc<Shared>) -> RingState {
    let view = shared.view();
    let space = shared.space;
    let ids: Vec<Id> = view.vnodes.iter().map(|v| v.id).collect();
    let fingers = shared
        .inspect(move |h| {
            ids.iter()
                .map(|id| {
                    let mut out = Vec::new();
                    let mut prev = None;
                    if let Some(n) = h.nodes().get(id) {
                        for i in 1..=space.bits() {
                            let f = n.finger(i).cloned();
                            if let Some(f) = f
                                && Some(f.id) != prev
                            {
                                prev = Some(f.id);
                                out.push(Finger {
                                    i,
                                    node: ring_node(space, &f),
                                });
                            }
                        }
                    }
                    out
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
    let (keys_stored, keys_owned) = key_counts(shared).await;
    let stats = shared.core_stats().await;
    RingState {
        addr: shared.me().to_string(),
        vnodes: view
            .vnodes
            .iter()
            .enumerate()
            .map(|(k, v)| RingVnode {
                node: ring_node(
                    space,
                    &Peer {
                        id: v.id,
                        addr: shared.me(),
                    },
                ),
                joined: v.joined,
                pred: v.pred.as_ref().map(|p| ring_node(space, p)),
                succs: v.succs.iter().map(|p| ring_node(space, p)).collect(),
                fingers: fingers.get(k).cloned().unwrap_or_default(),
            })
            .collect(),
        keys_stored,
        keys_owned,
        lookups: stats.lookups_ok,
    }
}

/// A lookup typed into the web view.
#[derive(Debug, Clone, Serialize)]
pub struct LookupView {
    /// The key as typed.
    pub key: String,
    /// Its id, hex.
    pub key_id: String,
    /// Its position on the ring.
    pub key_pos: f64,
    /// The owner, when the lookup succeeded.
    pub owner: Option<RingNode>,
    /// Every node visited, origin first, owner last.
    pub path: Vec<RingNode>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Looks `key` up from this node, as `CHORD.LOOKUP` does.
pub async fn lookup_view(shared: &Arc<Shared>, key: &str) -> LookupView {
    let space = shared.space;
    let id = space.hash(key.as_bytes());
    let r = shared.lookup(id, shared.cfg.lookup_mode).await;
    let (owner, path, error) = match r {
        Ok(o) => (
            Some(ring_node(space, &o.owner)),
            o.path.iter().map(|p| ring_node(space, p)).collect(),
            None,
        ),
        Err(e) => (None, Vec::new(), Some(e.to_string())),
    };
    LookupView {
        key: key.to_string(),
        key_id: hex(id),
        key_pos: space.fraction(id),
        owner,
        path,
        error,
    }
}
