//! The process: configuration, shared state, and the core task that drives
//! the chord-core state machines.
//!
//! One tokio task owns the [`VirtualHost`] (the `v` virtual nodes of this
//! process) and is the only code that touches it. It takes inputs from a
//! channel (messages from peers, client lookups, joins, leaves, inspections),
//! fires timers from a heap, and after every input drains the cores' commands:
//! `Send` goes to the peer transport (or straight back into the loop for a
//! virtual node of this process), `SetTimer` into the heap, `LookupDone` to the
//! waiting client. After each input it republishes the ring view (predecessor
//! and successor list of each virtual node) and hands it to the data task
//! ([`crate::data`]), whose chord-core data plane decides ownership and
//! replica sets from it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chord_core::node::{Command, LookupMode, LookupOutcome, OpError, Stats};
use chord_core::{Config, Id, IdSpace, NodeRef, Timer, VirtualHost};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::data::DataEvent;
use crate::transport::Peers;
use crate::wire::{Body, CoreMsg, Request, Response};

/// A node reference on the network.
pub type Peer = NodeRef<SocketAddr>;

/// Everything `chord serve` can set.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Address to listen on (clients and peers); hashed into the node id.
    pub listen: SocketAddr,
    /// A member to join through; `None` creates a ring.
    pub join: Option<SocketAddr>,
    /// Directory of the durable store.
    pub data_dir: PathBuf,
    /// Successor-list length r.
    pub successors: usize,
    /// Copies of each key: the owner and `replicas - 1` successors on distinct processes.
    pub replicas: usize,
    /// Virtual nodes per process.
    pub virtual_nodes: usize,
    /// Fixed id (only with one virtual node).
    pub id: Option<Id>,
    /// Mean stabilization period; each interval is uniform in `[0.5, 1.5]` times it.
    pub stabilize_ms: u64,
    /// fix_fingers period.
    pub fix_fingers_ms: u64,
    /// check_predecessor period.
    pub check_predecessor_ms: u64,
    /// Timeout of every request (core messages and storage RPCs).
    pub rpc_timeout_ms: u64,
    /// Unanswered requests in a row before a peer is presumed dead.
    pub failure_strikes: u32,
    /// Anti-entropy period (replica repair, hand-off, garbage collection).
    pub sync_ms: u64,
    /// A read asks the key's other replicas after this long without an
    /// answer from the owner.
    pub read_try_ms: u64,
    /// Tombstones older than this are purged once every replica holds them;
    /// a node down longer than this restarts with an empty store.
    pub tombstone_grace_ms: u64,
    /// How client operations look up owners.
    pub lookup_mode: LookupMode,
    /// A client operation gives up after this long (ring reconfiguring).
    pub op_timeout_ms: u64,
    /// Largest peer frame.
    pub max_frame_bytes: usize,
    /// A peer connection that sends its magic prefix but no complete first
    /// frame within this long is closed.
    pub peer_idle_timeout_ms: u64,
    /// Client connection limits (`--max-clients`, timeouts, output limit).
    pub client_limits: server_kit::ClientLimits,
    /// The cluster secret peers must prove they hold
    /// (`--cluster-secret-file`); `None`: peers are not authenticated.
    pub cluster_secret: Option<server_kit::peer_auth::ClusterSecret>,
    /// What ring positions are bound to (`--id-binding`): nodes named in
    /// peer messages whose ids are not bound to their addresses are
    /// refused.
    pub id_binding: chord_core::host::IdBinding,
    /// The users clients authenticate as (`--acl-file`); `None`: clients
    /// are not authenticated.
    pub acl: Option<Arc<server_kit::acl::Acl>>,
    /// TLS for clients and peers (`--tls-cert` …); `None` for plain TCP.
    pub tls: Option<server_kit::tls::Tls>,
}

impl NodeConfig {
    /// Defaults for a node at `listen` storing in `data_dir`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            listen,
            join: None,
            data_dir,
            successors: 8,
            replicas: 3,
            virtual_nodes: 1,
            id: None,
            stabilize_ms: 500,
            fix_fingers_ms: 250,
            check_predecessor_ms: 500,
            rpc_timeout_ms: 1000,
            failure_strikes: 2,
            sync_ms: 1000,
            read_try_ms: 100,
            tombstone_grace_ms: 600_000,
            lookup_mode: LookupMode::Recursive,
            op_timeout_ms: 10_000,
            max_frame_bytes: crate::wire::DEFAULT_MAX_FRAME_BYTES,
            peer_idle_timeout_ms: server_kit::frame::DEFAULT_IDLE_TIMEOUT.as_millis() as u64,
            client_limits: server_kit::ClientLimits::DEFAULT,
            cluster_secret: None,
            id_binding: chord_core::host::IdBinding::Address,
            acl: None,
            tls: None,
        }
    }

    /// [`NodeConfig::peer_idle_timeout_ms`] as a duration.
    pub fn peer_idle_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.peer_idle_timeout_ms)
    }

    /// The ids of this process's virtual nodes: `--id`, or those its
    /// listen address binds it to ([`chord_core::host::bound_ids`]): SHA-1
    /// of the address with one virtual node, of `"addr#i"` with several
    /// (of the IP alone under `--id-binding host`).
    pub fn vnode_ids(&self, space: IdSpace) -> Vec<Id> {
        if let Some(id) = self.id {
            return vec![id];
        }
        chord_core::host::bound_ids(space, self.id_binding, &self.listen, self.virtual_nodes)
    }

    /// The data-plane configuration these settings imply.
    pub fn data_config(&self, space: IdSpace) -> chord_core::data::DataConfig {
        chord_core::data::DataConfig {
            space,
            copies: self.replicas.max(1),
            sync_ms: self.sync_ms.max(10),
            request_timeout_ms: self.rpc_timeout_ms.max(1),
            read_try_ms: self.read_try_ms.max(1),
            write_try_ms: (2 * self.rpc_timeout_ms).max(1),
            op_timeout_ms: self.op_timeout_ms.max(1),
            retry_ms: 20,
            tombstone_grace_ms: self.tombstone_grace_ms,
        }
    }

    /// The chord-core configuration these settings imply.
    pub fn core_config(&self, space: IdSpace) -> Config {
        let mut c = Config::new(space);
        c.successors = self.successors.max(1);
        c.stabilize_ms_min = (self.stabilize_ms / 2).max(1);
        c.stabilize_ms_max = (self.stabilize_ms * 3 / 2).max(c.stabilize_ms_min);
        c.fix_fingers_ms = self.fix_fingers_ms.max(1);
        c.check_predecessor_ms = self.check_predecessor_ms.max(1);
        c.rpc_timeout_ms = self.rpc_timeout_ms.max(1);
        c.failure_strikes = self.failure_strikes.max(1);
        c
    }
}

/// One virtual node's ring state, as `CHORD.*` commands show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VnodeView {
    /// Its id.
    pub id: Id,
    /// A ring member?
    pub joined: bool,
    /// Its predecessor, if known.
    pub pred: Option<Peer>,
    /// Its successor list.
    pub succs: Vec<Peer>,
}

/// The ring as this process sees it, republished after every change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RingView {
    /// The virtual nodes of this process.
    pub vnodes: Vec<VnodeView>,
}

impl RingView {
    /// A virtual node by id.
    pub fn vnode(&self, id: Id) -> Option<&VnodeView> {
        self.vnodes.iter().find(|v| v.id == id)
    }
}

/// Counters shown by `CHORD.INFO` and `INFO`.
#[derive(Debug, Default)]
pub struct Counters {
    /// RESP commands served.
    pub commands: AtomicU64,
    /// Peer messages dropped for naming a node whose id its address does
    /// not bind (`--id-binding`).
    pub unbound_refused: AtomicU64,
}

/// Where a lookup's outcome goes.
pub type LookupReply = oneshot::Sender<Result<LookupOutcome<SocketAddr>, OpError>>;

/// A closure run on the cores by [`CoreEvent::Inspect`].
pub type InspectFn = Box<dyn FnOnce(&VirtualHost<SocketAddr>) + Send>;

/// Inputs of the core task.
pub enum CoreEvent {
    /// A core message from a peer.
    Message {
        /// Destination virtual node.
        to: Id,
        /// Sender.
        from: Peer,
        /// Payload.
        msg: CoreMsg,
    },
    /// Look up `successor(key)`.
    Lookup {
        /// The key id.
        key: Id,
        /// Iterative or recursive.
        mode: LookupMode,
        /// Where the outcome goes.
        reply: LookupReply,
    },
    /// Create a ring with virtual node `vnode` as its only member.
    Create {
        /// The local virtual node.
        vnode: Id,
    },
    /// Join virtual node `vnode` through `bootstrap`.
    Join {
        /// The local virtual node.
        vnode: Id,
        /// A ring member.
        bootstrap: Peer,
    },
    /// Leave the ring with every virtual node (keys were handed off already).
    Leave {
        /// Answered once the leave messages are queued.
        reply: oneshot::Sender<()>,
    },
    /// Run a closure on the cores (for `CHORD.FINGERS`, `CHORD.INFO`).
    Inspect(InspectFn),
}

/// Most (id, address) pairs [`Shared::is_bound`] remembers.
pub const MAX_BOUND_CACHE: usize = 4096;

/// State shared by the tasks of one process.
pub struct Shared {
    /// Configuration.
    pub cfg: NodeConfig,
    /// The identifier ring (160 bits).
    pub space: IdSpace,
    /// The ring as last published by the core task.
    pub view: RwLock<Arc<RingView>>,
    /// Input of the core task.
    pub core: mpsc::UnboundedSender<CoreEvent>,
    /// Outgoing peer connections.
    pub peers: Arc<Peers>,
    /// Input of the data task (chord-core's data plane).
    pub data: mpsc::UnboundedSender<DataEvent>,
    /// Flips to true to stop the process.
    pub shutdown: watch::Sender<bool>,
    /// Counters.
    pub counters: Counters,
    /// Lookup metrics and the state of the last scrape, for `--http`.
    pub metrics: crate::metrics::Metrics,
    /// When the process started.
    pub started: Instant,
    /// Admits clients up to `--max-clients` and counts them.
    pub clients: Arc<server_kit::ClientGate>,
    /// Logs peers refused by the cluster-secret exchange (rate-limited).
    pub refused_peers: server_kit::peer_auth::RefusalLog,
    /// Nodes (id, address) already checked against `--id-binding`.
    pub bound_nodes: Mutex<HashSet<(Id, SocketAddr)>>,
    /// Peer messages dropped because they named a node whose id is not
    /// bound to its address.
    pub unbound_refused: server_kit::peer_auth::RefusalLog,
}

impl Shared {
    /// The current ring view.
    pub fn view(&self) -> Arc<RingView> {
        self.view.read().expect("view lock").clone()
    }

    /// This process's address.
    pub fn me(&self) -> SocketAddr {
        self.cfg.listen
    }

    /// Looks up `successor(key)` through the local virtual node that precedes
    /// `key` most closely.
    pub async fn lookup(
        &self,
        key: Id,
        mode: LookupMode,
    ) -> Result<LookupOutcome<SocketAddr>, OpError> {
        let (tx, rx) = oneshot::channel();
        let started = Instant::now();
        self.core
            .send(CoreEvent::Lookup {
                key,
                mode,
                reply: tx,
            })
            .map_err(|_| OpError::NotJoined)?;
        let r = rx.await.unwrap_or(Err(OpError::NotJoined));
        self.metrics.lookup(started.elapsed(), &r);
        r
    }

    /// Runs `f` on the cores and returns its result.
    pub async fn inspect<T: Send + 'static>(
        &self,
        f: impl FnOnce(&VirtualHost<SocketAddr>) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.core
            .send(CoreEvent::Inspect(Box::new(move |h| {
                let _ = tx.send(f(h));
            })))
            .ok()?;
        rx.await.ok()
    }

    /// Summed core counters of the virtual nodes.
    pub async fn core_stats(&self) -> Stats {
        self.inspect(|h| {
            let mut s = Stats::default();
            for n in h.nodes().values() {
                let x = n.stats();
                s.messages_sent += x.messages_sent;
                s.timeouts += x.timeouts;
                s.lookups_ok += x.lookups_ok;
                s.lookups_failed += x.lookups_failed;
            }
            s
        })
        .await
        .unwrap_or_default()
    }

    /// Whether `node`'s id is one its address may hold under
    /// `--id-binding` ([`chord_core::host::id_is_bound`]); the pairs
    /// checked are remembered (up to [`MAX_BOUND_CACHE`], then forgotten
    /// all at once).
    pub fn is_bound(&self, node: &NodeRef<SocketAddr>) -> bool {
        use chord_core::host::{IdBinding, id_is_bound};
        if self.cfg.id_binding == IdBinding::None {
            return true;
        }
        let key = (node.id, node.addr);
        if self.bound_nodes.lock().expect("bound lock").contains(&key) {
            return true;
        }
        if !id_is_bound(self.space, self.cfg.id_binding, node.id, &node.addr) {
            return false;
        }
        let mut cache = self.bound_nodes.lock().expect("bound lock");
        if cache.len() >= MAX_BOUND_CACHE {
            cache.clear();
        }
        cache.insert(key);
        true
    }

    /// Asks a process which virtual nodes it hosts, retrying until it
    /// answers; ids not bound to its address are left out (and logged).
    pub async fn whoami(&self, addr: SocketAddr) -> Vec<Id> {
        loop {
            match self.peers.call(addr, Request::Whoami).await {
                Ok(Response::Ids(ids)) if !ids.is_empty() => {
                    let (bound, unbound): (Vec<Id>, Vec<Id>) = ids
                        .into_iter()
                        .partition(|id| self.is_bound(&NodeRef { id: *id, addr }));
                    if !unbound.is_empty() {
                        self.unbound_refused.refused(
                            &self.cfg.listen.to_string(),
                            &addr.to_string(),
                            &format!(
                                "it claims {} id(s) its address does not bind it to \
                                 (--id-binding {:?}): ignored",
                                unbound.len(),
                                self.cfg.id_binding
                            ),
                        );
                    }
                    if !bound.is_empty() {
                        return bound;
                    }
                }
                other => debug!(%addr, "bootstrap not ready: {other:?}"),
            }
            if *self.shutdown.borrow() {
                return Vec::new();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The core task. Returns when every sender of `rx` is gone or on shutdown.
pub async fn run_core(
    shared: Arc<Shared>,
    mut host: VirtualHost<SocketAddr>,
    mut rx: mpsc::UnboundedReceiver<CoreEvent>,
) {
    let start = shared.started;
    let now_ms = move || start.elapsed().as_millis() as u64;
    let me = shared.me();
    let mut timers: BinaryHeap<Reverse<(u64, u64, Id, Timer)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut waiters: HashMap<(Id, u64), LookupReply> = HashMap::new();
    let mut bootstraps: BTreeMap<Id, Peer> = BTreeMap::new();
    let mut local: VecDeque<(Id, Peer, CoreMsg)> = VecDeque::new();
    let mut shutdown = shared.shutdown.subscribe();
    let mut last_view = RingView::default();
    loop {
        let next = timers.peek().map(|Reverse(t)| t.0);
        let sleep = async {
            match next {
                Some(at) => {
                    tokio::time::sleep_until((start + Duration::from_millis(at)).into()).await
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { return };
                let now = now_ms();
                match ev {
                    CoreEvent::Message { to, from, msg } => {
                        shared.metrics.rpc.received(to, &msg);
                        host.handle_message(now, to, from, msg)
                    }
                    CoreEvent::Lookup { key, mode, reply } => {
                        // The joined virtual node closest before the key starts it.
                        let space = shared.space;
                        let best = host
                            .nodes()
                            .values()
                            .filter(|n| n.is_joined())
                            .min_by_key(|n| space.distance(n.id(), key))
                            .map(|n| n.id());
                        match best {
                            Some(v) => {
                                let n = host.node_mut(v).expect("hosted");
                                let id = n.lookup(now, key, mode);
                                waiters.insert((v, id), reply);
                            }
                            None => {
                                let _ = reply.send(Err(OpError::NotJoined));
                            }
                        }
                    }
                    CoreEvent::Create { vnode } => {
                        if let Some(n) = host.node_mut(vnode) {
                            n.create(now);
                        }
                    }
                    CoreEvent::Join { vnode, bootstrap } => {
                        if let Some(n) = host.node_mut(vnode)
                            && !n.is_joined()
                        {
                            info!(vnode = %crate::store::hex(vnode), bootstrap = %bootstrap.addr, "joining");
                            bootstraps.insert(vnode, bootstrap.clone());
                            n.join(now, bootstrap);
                        }
                    }
                    CoreEvent::Leave { reply } => {
                        let ids: Vec<Id> = host.nodes().keys().copied().collect();
                        for v in ids {
                            host.node_mut(v).expect("hosted").leave(now);
                        }
                        drain(&shared, &mut host, me, &mut timers, &mut seq, &mut waiters, &mut bootstraps, &mut local, now);
                        let _ = reply.send(());
                    }
                    CoreEvent::Inspect(f) => f(&host),
                }
            }
            _ = sleep => {
                let now = now_ms();
                while let Some(Reverse((at, _, v, t))) = timers.peek().cloned() {
                    if at > now {
                        break;
                    }
                    timers.pop();
                    shared.metrics.rpc.timer(v, &t);
                    host.handle_timer(now, v, t);
                }
            }
            _ = shutdown.changed() => return,
        }
        let now = now_ms();
        drain(
            &shared,
            &mut host,
            me,
            &mut timers,
            &mut seq,
            &mut waiters,
            &mut bootstraps,
            &mut local,
            now,
        );
        let view = RingView {
            vnodes: host
                .nodes()
                .values()
                .map(|n| VnodeView {
                    id: n.id(),
                    joined: n.is_joined(),
                    pred: n.predecessor().cloned(),
                    succs: n.successors().to_vec(),
                })
                .collect(),
        };
        if view != last_view {
            last_view = view.clone();
            let _ = shared.data.send(DataEvent::View(
                view.vnodes
                    .iter()
                    .map(|v| chord_core::data::VnodeView {
                        id: v.id,
                        pred: v.pred.clone(),
                        succs: v.succs.clone(),
                        joined: v.joined,
                    })
                    .collect(),
            ));
            *shared.view.write().expect("view lock") = Arc::new(view);
        }
    }
}

/// Performs the cores' commands until none is left.
#[allow(clippy::too_many_arguments)]
fn drain(
    shared: &Arc<Shared>,
    host: &mut VirtualHost<SocketAddr>,
    me: SocketAddr,
    timers: &mut BinaryHeap<Reverse<(u64, u64, Id, Timer)>>,
    seq: &mut u64,
    waiters: &mut HashMap<(Id, u64), LookupReply>,
    bootstraps: &mut BTreeMap<Id, Peer>,
    local: &mut VecDeque<(Id, Peer, CoreMsg)>,
    now: u64,
) {
    loop {
        while let Some((vid, cmd)) = host.poll_command() {
            match cmd {
                Command::Send { to, msg } => {
                    let from = NodeRef { id: vid, addr: me };
                    if to.addr == me {
                        local.push_back((to.id, from, msg));
                    } else {
                        shared.metrics.rpc.sent(vid, to.addr, &msg);
                        shared.peers.send(
                            to.addr,
                            &Body::Chord {
                                to: to.id,
                                from,
                                msg,
                            },
                        );
                    }
                }
                Command::SetTimer { timer, at } => {
                    *seq += 1;
                    timers.push(Reverse((at, *seq, vid, timer)));
                }
                Command::LookupDone { lookup, result, .. } => {
                    if let Some(w) = waiters.remove(&(vid, lookup)) {
                        let _ = w.send(result);
                    }
                }
                Command::Joined { successor } => {
                    info!(vnode = %crate::store::hex(vid), successor = %successor.addr, "joined");
                    bootstraps.remove(&vid);
                }
                Command::JoinFailed { error } => {
                    warn!(vnode = %crate::store::hex(vid), "join failed: {error}; retrying");
                    if let Some(b) = bootstraps.get(&vid).cloned() {
                        let shared = shared.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            // The bootstrap may have restarted with other ids.
                            let ids = shared.whoami(b.addr).await;
                            if let Some(id) = ids.first() {
                                let bootstrap = NodeRef {
                                    id: *id,
                                    addr: b.addr,
                                };
                                let _ = shared.core.send(CoreEvent::Join {
                                    vnode: vid,
                                    bootstrap,
                                });
                            }
                        });
                    }
                }
            }
        }
        match local.pop_front() {
            Some((to, from, msg)) => host.handle_message(now, to, from, msg),
            None => return,
        }
    }
}

/// Flags the process to stop.
pub fn stop(shared: &Shared) {
    shared.shutdown.send_replace(true);
}
