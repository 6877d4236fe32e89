//! One Chord node as a message-driven, sans-IO state machine.
//!
//! # The protocol
//!
//! Each node `n` keeps a predecessor, a *successor list* of its `r` nearest
//! successors (SIGCOMM §5.2, ToN §IV-E) and a finger table (SIGCOMM §4.3). It
//! stores no keys: the data plane ([`crate::data`]) decides ownership and
//! replica sets from the ring view this core maintains. Ring maintenance
//! follows Pamela Zave's corrected protocol ("How to Make Chord Correct",
//! arXiv 1502.06461 v2 / IEEE TSE 2017, and her 2016 Alloy model),
//! whose rules are: never adopt a successor or predecessor that has not been
//! seen alive; a joiner copies its successor's list; `rectify` replaces the
//! original `notify`; the ring must contain at least `r + 1` nodes. Which
//! published version each operation follows:
//!
//! | operation | version followed |
//! |---|---|
//! | `create` | ToN 2003 Fig. 6 (`predecessor = nil; successor = n`) |
//! | `join` | Zave 2017 *Join*: look up `successor(n)` via any member, then fetch that node's state and set `succs = s :: s.succs` (truncated to `r`); `pred = nil` |
//! | `stabilize` | Zave 2017 *StabilizeFromSuccessor* / *StabilizeFromPredecessor*: fetch `s = succ[0]`'s predecessor and list; `succs = s :: s.succs`; if `s.pred ∈ (n, s)` query it first and adopt it only if it answers; always notify the resulting successor |
//! | `notify` → `rectify` | Zave 2017 *Rectify*: adopt notifier `x` if `x ∈ (pred, n)`; otherwise keep the old predecessor if a ping shows it alive, else adopt `x` |
//! | `check_predecessor` | ToN 2003 Fig. 6 (ping; clear on timeout) |
//! | `fix_fingers` | ToN 2003 Fig. 6 (`next` index, one finger per call) or, when configured, SIGCOMM §6.4's simulator (all fingers each stabilization) |
//! | successor-list failover | SIGCOMM §5.2 / ToN §IV-E (first live entry) |
//! | lookups | SIGCOMM Fig. 4 (iterative) and ToN Fig. 5 (recursive); closest preceding node over fingers *and* successor list, next best after a timeout (ToN §IV-E) |
//! | voluntary leave | ToN §IV-E.3 (tell predecessor and successor; the data plane hands the keys over) |
//!
//! Departures from the letter of Zave's model, and why:
//!
//! * Zave's operations are atomic. Here each is a request/response exchange, so a
//!   node's view may be stale by one message delay; the property tests check that
//!   the ring still converges to Zave's *Ideal* state once churn stops.
//! * When `succ[0]` does not answer, Zave drops it and notifies the new head. We
//!   drop it and immediately stabilize with the new head, which both verifies it
//!   (we only adopt live pointers) and ends with the notify.
//! * Successor lists never contain `n` itself or repeats: on a ring smaller than
//!   `r + 1` the list is simply shorter. Zave's correctness argument needs the
//!   ring to have `r + 1` members; small rings work in practice but are not
//!   covered by her proof.
//!
//! # Driving a node
//!
//! A driver calls, in any interleaving, with non-decreasing `now` (milliseconds):
//!
//! 1. [`Node::create`] or [`Node::join`] (or [`Node::from_stable`]) once;
//! 2. [`Node::handle_message`] for every message addressed to this node;
//! 3. [`Node::handle_timer`] when a timer requested by [`Command::SetTimer`] expires;
//! 4. client calls [`Node::lookup`], [`Node::leave`];
//!
//! and after each call drains [`Node::poll_command`] until it returns `None`,
//! performing each command: deliver `Send` to `to` (tagging it with this node's
//! [`NodeRef`] as the sender), arm `SetTimer`, report completions to the client.
//! Messages may be lost, delayed or reordered; lost replies surface as timeouts.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::fingers::FingerRuns;
use crate::id::{Id, IdSpace};
use crate::interval::{in_open, in_open_closed};

/// Simulated or real monotonic time in milliseconds.
pub type Time = u64;

/// A node's identity: its ring id and the transport address that reaches it.
/// Several virtual nodes may share one address; the id tells them apart.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeRef<A> {
    /// Position on the ring.
    pub id: Id,
    /// Transport address of the process hosting the node.
    pub addr: A,
}

/// Tunable parameters of a node.
#[derive(Clone, Debug)]
pub struct Config {
    /// The identifier ring.
    pub space: IdSpace,
    /// `r`, the successor-list length (SIGCOMM §5.2).
    pub successors: usize,
    /// Stabilization runs at intervals drawn uniformly from `[min, max]` ms.
    pub stabilize_ms_min: u64,
    /// Upper bound of the stabilization interval (ms).
    pub stabilize_ms_max: u64,
    /// Period of `fix_fingers` (ms); 0 means "refresh every finger at each
    /// stabilization", as in the SIGCOMM §6.4 simulator.
    pub fix_fingers_ms: u64,
    /// Period of `check_predecessor` (ms).
    pub check_predecessor_ms: u64,
    /// A request with no answer after this long is a timeout (ms).
    pub rpc_timeout_ms: u64,
    /// After a timeout, retry a lookup at the next-best node (ToN §IV-E). The
    /// SIGCOMM §6.4 experiment disables this: forwarding to a dead node fails.
    pub lookup_retries: bool,
    /// Give up a lookup after this many hops (guards against routing loops in
    /// inconsistent states).
    pub max_lookup_hops: u32,
    /// How many next-hop candidates a node returns in an iterative step.
    pub lookup_candidates: usize,
    /// Route lookups through fingers (O(log N) hops, the default); when false,
    /// lookups walk the successor list only (O(N) hops).
    pub finger_routing: bool,
    /// Consecutive unanswered requests after which a node is presumed dead and
    /// removed from the routing state. 1 trusts every timeout (a perfect
    /// failure detector, as Zave assumes); more tolerates message loss.
    pub failure_strikes: u32,
}

impl Config {
    /// Defaults for a given ring: `r = 8` successors, stabilization
    /// every 0.5–1.5 s, one finger every 0.5 s, 1 s RPC timeout.
    pub fn new(space: IdSpace) -> Config {
        Config {
            space,
            successors: 8,
            stabilize_ms_min: 500,
            stabilize_ms_max: 1500,
            fix_fingers_ms: 500,
            check_predecessor_ms: 1000,
            rpc_timeout_ms: 1000,
            lookup_retries: true,
            max_lookup_hops: 2 * space.bits() + 8,
            lookup_candidates: 4,
            finger_routing: true,
            failure_strikes: 3,
        }
    }
}

/// How a multi-hop lookup is carried out (SIGCOMM §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LookupMode {
    /// The origin asks each hop for the next one and contacts it itself.
    Iterative,
    /// Each hop forwards the request to the next; the last replies to the origin.
    Recursive,
}

/// The answer of one iterative lookup step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step<A> {
    /// `key ∈ (n, successor]`: the owner is the asked node's successor.
    Done {
        /// `successor(key)` as the asked node sees it.
        owner: NodeRef<A>,
        /// The asked node's successor list, `owner` first: the nodes that
        /// hold the key's replicas (SIGCOMM §5.2), so a reader can fall back
        /// to them without another lookup.
        succs: Vec<NodeRef<A>>,
    },
    /// Ask one of these next, best (closest preceding the key) first.
    Next {
        /// Closest preceding nodes from the finger table and successor list.
        candidates: Vec<NodeRef<A>>,
    },
}

/// Node-to-node messages. Request/response pairs carry the requester's `req`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<A> {
    /// Liveness probe.
    Ping {
        /// Request id.
        req: u64,
    },
    /// Answer to [`Message::Ping`].
    Pong {
        /// Request id.
        req: u64,
    },
    /// Ask for the receiver's predecessor and successor list (stabilize, join).
    GetState {
        /// Request id.
        req: u64,
    },
    /// Answer to [`Message::GetState`].
    State {
        /// Request id.
        req: u64,
        /// The sender's predecessor.
        pred: Option<NodeRef<A>>,
        /// The sender's successor list.
        succs: Vec<NodeRef<A>>,
    },
    /// "I think I might be your predecessor" (triggers rectify).
    Notify,
    /// Iterative lookup: one step towards `successor(key)`.
    FindStep {
        /// Request id.
        req: u64,
        /// The key being looked up.
        key: Id,
    },
    /// Answer to [`Message::FindStep`].
    StepReply {
        /// Request id.
        req: u64,
        /// Finished, or where to go next.
        step: Step<A>,
    },
    /// Recursive lookup, forwarded hop by hop.
    Forward {
        /// Per-hop request id (acknowledged by [`Message::ForwardAck`]).
        req: u64,
        /// The node that started the lookup.
        origin: NodeRef<A>,
        /// The lookup's id at the origin.
        lookup: u64,
        /// The key being looked up.
        key: Id,
        /// Nodes visited so far, origin first.
        path: Vec<NodeRef<A>>,
    },
    /// Acknowledges receipt of a [`Message::Forward`].
    ForwardAck {
        /// Per-hop request id.
        req: u64,
    },
    /// Final answer of a recursive lookup, sent to the origin.
    LookupResult {
        /// The lookup's id at the origin.
        lookup: u64,
        /// `successor(key)`.
        owner: NodeRef<A>,
        /// Every node visited, origin first, owner last.
        path: Vec<NodeRef<A>>,
        /// The successor list of the node that found the owner, owner first.
        succs: Vec<NodeRef<A>>,
    },
    /// Voluntary departure of the sender (ToN §IV-E.3).
    Leaving {
        /// The leaving node's predecessor.
        pred: Option<NodeRef<A>>,
        /// The leaving node's successor list.
        succs: Vec<NodeRef<A>>,
    },
}

impl<A> Message<A> {
    /// Every node the message names (predecessors, successor lists, lookup
    /// paths and answers), for a driver that checks each is bound to its
    /// address before the core learns it ([`crate::host::id_is_bound`]).
    pub fn node_refs(&self) -> Vec<&NodeRef<A>> {
        match self {
            Message::Ping { .. }
            | Message::Pong { .. }
            | Message::GetState { .. }
            | Message::Notify
            | Message::FindStep { .. }
            | Message::ForwardAck { .. } => Vec::new(),
            Message::State { pred, succs, .. } | Message::Leaving { pred, succs } => {
                pred.iter().chain(succs).collect()
            }
            Message::StepReply { step, .. } => match step {
                Step::Done { owner, succs } => std::iter::once(owner).chain(succs).collect(),
                Step::Next { candidates } => candidates.iter().collect(),
            },
            Message::Forward { origin, path, .. } => std::iter::once(origin).chain(path).collect(),
            Message::LookupResult {
                owner, path, succs, ..
            } => std::iter::once(owner).chain(path).chain(succs).collect(),
        }
    }
}

/// Timers a node asks its driver to arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Timer {
    /// Run stabilize.
    Stabilize,
    /// Run fix_fingers.
    FixFingers,
    /// Run check_predecessor.
    CheckPredecessor,
    /// Deadline of the request or lookup with this id.
    Request(u64),
}

/// A successful lookup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupOutcome<A> {
    /// `successor(key)`.
    pub owner: NodeRef<A>,
    /// Every node visited, origin first and owner last; hops = `path.len() - 1`.
    pub path: Vec<NodeRef<A>>,
    /// The owner followed by its successors, as the node that found the owner
    /// knows them (its own successor list): where the key's replicas live.
    pub succs: Vec<NodeRef<A>>,
}

/// Why an operation did not complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OpError {
    /// A node on the way did not answer in time (and no alternative was tried).
    #[error("request timed out")]
    Timeout,
    /// The lookup exceeded `max_lookup_hops`.
    #[error("too many hops")]
    TooManyHops,
    /// The node is not (or no longer) a ring member.
    #[error("node is not a ring member")]
    NotJoined,
    /// A joining node's id is already taken by a member.
    #[error("identifier already in use")]
    IdTaken,
}

/// Outputs of a node, drained with [`Node::poll_command`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<A> {
    /// Deliver `msg` to `to`, with this node as the sender.
    Send {
        /// Destination.
        to: NodeRef<A>,
        /// Payload.
        msg: Message<A>,
    },
    /// Call [`Node::handle_timer`] with `timer` at time `at` (or later).
    SetTimer {
        /// Which timer.
        timer: Timer,
        /// Absolute expiry time in ms.
        at: Time,
    },
    /// A client lookup finished.
    LookupDone {
        /// The id returned by [`Node::lookup`].
        lookup: u64,
        /// The key.
        key: Id,
        /// Owner and path, or why it failed.
        result: Result<LookupOutcome<A>, OpError>,
    },
    /// The node finished joining: it has a verified successor.
    Joined {
        /// The first successor.
        successor: NodeRef<A>,
    },
    /// The join failed; the driver may retry with another bootstrap node.
    JoinFailed {
        /// Why.
        error: OpError,
    },
}

/// Counters for observability (the driver exports them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages sent.
    pub messages_sent: u64,
    /// Requests that timed out.
    pub timeouts: u64,
    /// Client lookups that succeeded.
    pub lookups_ok: u64,
    /// Client lookups that failed.
    pub lookups_failed: u64,
}

#[derive(Clone, Debug)]
enum Purpose {
    Client,
    Join,
    Finger(u32),
}

#[derive(Clone, Debug)]
struct LookupState<A> {
    key: Id,
    mode: LookupMode,
    purpose: Purpose,
    path: Vec<NodeRef<A>>,
    alternatives: Vec<NodeRef<A>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StateWhy {
    StabilizeSucc,
    StabilizePred,
    Join,
}

#[derive(Clone, Debug)]
enum Pending<A> {
    CheckPred(NodeRef<A>),
    RectifyPing {
        old: NodeRef<A>,
        cand: NodeRef<A>,
    },
    State(NodeRef<A>, StateWhy),
    Step {
        to: NodeRef<A>,
        lookup: u64,
    },
    Forward {
        to: NodeRef<A>,
        origin: NodeRef<A>,
        lookup: u64,
        key: Id,
        path: Vec<NodeRef<A>>,
        alternatives: Vec<NodeRef<A>>,
    },
}

/// One Chord (virtual) node. See the module documentation for the protocol and
/// the driving rules.
#[derive(Clone, Debug)]
pub struct Node<A> {
    cfg: Config,
    me: NodeRef<A>,
    joined: bool,
    pred: Option<NodeRef<A>>,
    succs: Vec<NodeRef<A>>,
    fingers: FingerRuns<NodeRef<A>>,
    pending: BTreeMap<u64, Pending<A>>,
    lookups: BTreeMap<u64, LookupState<A>>,
    next_req: u64,
    stabilizing: bool,
    finger_next: u32,
    finger_job: bool,
    strikes: BTreeMap<Id, u32>,
    /// Time of the latest input, for requests issued from deep inside handlers.
    now: Time,
    rng: ChaCha8Rng,
    out: VecDeque<Command<A>>,
    stats: Stats,
}

impl<A: Clone + Ord + Debug> Node<A> {
    /// A node that is not yet part of any ring. `seed` drives its timer jitter.
    pub fn new(cfg: Config, me: NodeRef<A>, seed: u64) -> Self {
        assert!(cfg.successors >= 1, "successor list length r must be >= 1");
        Node {
            fingers: FingerRuns::new(cfg.space.bits()),
            cfg,
            me,
            joined: false,
            pred: None,
            succs: Vec::new(),
            pending: BTreeMap::new(),
            lookups: BTreeMap::new(),
            next_req: 1,
            stabilizing: false,
            finger_next: 1,
            finger_job: false,
            strikes: BTreeMap::new(),
            now: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            out: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// A member of an already stabilized ring, for simulations that start from
    /// the state stabilization converges to (SIGCOMM §6.3–6.5 start this way).
    /// `fingers[i-1]` is `finger[i]`.
    pub fn from_stable(
        cfg: Config,
        me: NodeRef<A>,
        pred: NodeRef<A>,
        succs: Vec<NodeRef<A>>,
        fingers: Vec<NodeRef<A>>,
        seed: u64,
        now: Time,
    ) -> Self {
        let mut n = Node::new(cfg, me, seed);
        n.now = now;
        n.pred = (pred.id != n.me.id).then_some(pred);
        n.succs = succs;
        n.succs.retain(|s| s.id != n.me.id);
        n.succs.truncate(n.cfg.successors);
        for (i, f) in fingers.into_iter().enumerate() {
            let i = i as u32 + 1;
            if n.fingers.get(i) != Some(&f) {
                n.fingers.set_range(i, i, Some(f));
            }
        }
        n.joined = true;
        n.start_timers(now);
        n
    }

    // ----- accessors -------------------------------------------------------

    /// This node's reference.
    pub fn me(&self) -> &NodeRef<A> {
        &self.me
    }

    /// This node's id.
    pub fn id(&self) -> Id {
        self.me.id
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether the node is a ring member (created, or joined with a verified successor).
    pub fn is_joined(&self) -> bool {
        self.joined
    }

    /// The current predecessor, if known.
    pub fn predecessor(&self) -> Option<&NodeRef<A>> {
        self.pred.as_ref()
    }

    /// The successor list (empty on a one-node ring, where the successor is `n`).
    pub fn successors(&self) -> &[NodeRef<A>] {
        &self.succs
    }

    /// The first successor (`n` itself on a one-node ring).
    pub fn successor(&self) -> NodeRef<A> {
        self.succs
            .first()
            .cloned()
            .unwrap_or_else(|| self.me.clone())
    }

    /// `finger[i].node`, `1 <= i <= m`, if known.
    pub fn finger(&self, i: u32) -> Option<&NodeRef<A>> {
        self.fingers.get(i)
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether this node is responsible for `key`: `key ∈ (predecessor, n]`.
    pub fn owns(&self, key: Id) -> bool {
        match &self.pred {
            Some(p) => in_open_closed(&key, &p.id, &self.me.id),
            None => self.succs.is_empty(),
        }
    }

    /// The next command for the driver, if any.
    pub fn poll_command(&mut self) -> Option<Command<A>> {
        self.out.pop_front()
    }

    // ----- membership ------------------------------------------------------

    /// Creates a new ring with this node as its only member (ToN Fig. 6 `create`).
    pub fn create(&mut self, now: Time) {
        self.now = now;
        self.pred = None;
        self.succs.clear();
        self.joined = true;
        self.start_timers(now);
    }

    /// Joins the ring that `bootstrap` belongs to (Zave *Join*): look up
    /// `successor(n)` through `bootstrap`, then copy that node's successor list.
    /// Completion is reported by [`Command::Joined`] or [`Command::JoinFailed`].
    pub fn join(&mut self, now: Time, bootstrap: NodeRef<A>) {
        self.now = now;
        self.pred = None;
        self.succs.clear();
        self.joined = false;
        let id = self.fresh_req();
        self.lookups.insert(
            id,
            LookupState {
                key: self.me.id,
                mode: LookupMode::Iterative,
                purpose: Purpose::Join,
                path: Vec::new(),
                alternatives: Vec::new(),
            },
        );
        self.send_step(now, id, bootstrap);
    }

    /// Leaves voluntarily (ToN §IV-E.3): tell the successor our predecessor and
    /// the predecessor our successor list (the data plane hands over the keys).
    /// The node is inert afterwards.
    pub fn leave(&mut self, now: Time) {
        self.now = now;
        if !self.joined {
            return;
        }
        let succ = self.successor();
        if succ.id != self.me.id {
            let msg = Message::Leaving {
                pred: self.pred.clone(),
                succs: self.succs.clone(),
            };
            self.send(succ, msg.clone());
            if let Some(p) = self.pred.clone()
                && p.id != self.me.id
            {
                self.send(p, msg);
            }
        }
        self.joined = false;
        self.pending.clear();
        self.lookups.clear();
        self.succs.clear();
        self.pred = None;
    }

    // ----- client operations ----------------------------------------------

    /// Starts a lookup of `successor(key)`; the result arrives as
    /// [`Command::LookupDone`] with the returned id.
    pub fn lookup(&mut self, now: Time, key: Id, mode: LookupMode) -> u64 {
        self.start_lookup(now, key, mode, Purpose::Client)
    }

    // ----- inputs ------------------------------------------------------------

    /// A timer requested with [`Command::SetTimer`] expired.
    pub fn handle_timer(&mut self, now: Time, timer: Timer) {
        self.now = now;
        match timer {
            Timer::Stabilize => {
                if !self.joined {
                    return;
                }
                let d = self
                    .rng
                    .random_range(self.cfg.stabilize_ms_min..=self.cfg.stabilize_ms_max);
                self.set_timer(Timer::Stabilize, now + d);
                self.stabilize(now);
                if self.cfg.fix_fingers_ms == 0 && !self.finger_job {
                    self.finger_job = true;
                    self.finger_next = 1;
                    self.advance_fingers(now, true);
                }
            }
            Timer::FixFingers => {
                if !self.joined {
                    return;
                }
                self.set_timer(Timer::FixFingers, now + self.cfg.fix_fingers_ms);
                if !self.finger_job {
                    self.finger_job = true;
                    self.advance_fingers(now, false);
                }
            }
            Timer::CheckPredecessor => {
                if !self.joined {
                    return;
                }
                self.set_timer(Timer::CheckPredecessor, now + self.cfg.check_predecessor_ms);
                let busy = self
                    .pending
                    .values()
                    .any(|p| matches!(p, Pending::CheckPred(_)));
                if let Some(p) = self.pred.clone()
                    && !busy
                {
                    let req = self.fresh_req();
                    self.pending.insert(req, Pending::CheckPred(p.clone()));
                    self.send(p, Message::Ping { req });
                    self.set_timer(Timer::Request(req), now + self.cfg.rpc_timeout_ms);
                }
            }
            Timer::Request(req) => self.handle_timeout(now, req),
        }
    }

    /// A message from `from` arrived.
    pub fn handle_message(&mut self, now: Time, from: NodeRef<A>, msg: Message<A>) {
        self.now = now;
        if !self.strikes.is_empty() {
            self.strikes.remove(&from.id);
        }
        match msg {
            Message::Ping { req } => self.send(from, Message::Pong { req }),
            Message::Pong { req } => match self.pending.remove(&req) {
                Some(Pending::CheckPred(_)) | Some(Pending::RectifyPing { .. }) => {
                    // The old predecessor is alive: keep it (Zave Rectify).
                }
                Some(other) => {
                    self.pending.insert(req, other);
                }
                None => {}
            },
            Message::GetState { req } => {
                if self.joined {
                    let pred = self.pred.clone();
                    let succs = self.succs.clone();
                    self.send(from, Message::State { req, pred, succs });
                }
            }
            Message::State { req, pred, succs } => {
                if let Some(Pending::State(to, why)) = self.pending.remove(&req) {
                    self.on_state(now, to, why, pred, succs);
                }
            }
            Message::Notify => self.rectify(now, from),
            Message::FindStep { req, key } => {
                if self.joined {
                    let step = self.step(key);
                    self.send(from, Message::StepReply { req, step });
                }
            }
            Message::StepReply { req, step } => {
                if let Some(Pending::Step { to, lookup }) = self.pending.remove(&req) {
                    self.on_step(now, lookup, to, step);
                }
            }
            Message::Forward {
                req,
                origin,
                lookup,
                key,
                mut path,
            } => {
                if !self.joined {
                    return;
                }
                self.send(from, Message::ForwardAck { req });
                path.push(self.me.clone());
                let succ = self.successor();
                if in_open_closed(&key, &self.me.id, &succ.id) {
                    if succ.id != self.me.id {
                        path.push(succ.clone());
                    }
                    self.send(
                        origin,
                        Message::LookupResult {
                            lookup,
                            owner: succ,
                            path,
                            succs: self.succ_list(),
                        },
                    );
                } else if path.len() as u32 <= self.cfg.max_lookup_hops {
                    let mut cands = self.candidates(key);
                    cands.retain(|c| !path.iter().any(|p| p.id == c.id));
                    if cands.is_empty() {
                        cands.push(succ);
                    }
                    let to = cands.remove(0);
                    self.send_forward(now, to, origin, lookup, key, path, cands);
                }
            }
            Message::ForwardAck { req } => {
                self.pending.remove(&req);
            }
            Message::LookupResult {
                lookup,
                owner,
                path,
                succs,
            } => {
                if self.lookups.contains_key(&lookup) {
                    let outcome = LookupOutcome { owner, path, succs };
                    self.finish_lookup(now, lookup, Ok(outcome));
                }
            }
            Message::Leaving { pred, succs } => self.on_leaving(now, from, pred, succs),
        }
    }

    // ----- ring maintenance --------------------------------------------------

    fn start_timers(&mut self, now: Time) {
        let d = self
            .rng
            .random_range(self.cfg.stabilize_ms_min..=self.cfg.stabilize_ms_max);
        self.set_timer(Timer::Stabilize, now + d);
        let d = self.rng.random_range(0..=self.cfg.check_predecessor_ms);
        self.set_timer(Timer::CheckPredecessor, now + d);
        if self.cfg.fix_fingers_ms > 0 {
            let d = self.rng.random_range(0..=self.cfg.fix_fingers_ms);
            self.set_timer(Timer::FixFingers, now + d);
        }
    }

    /// Zave StabilizeFromSuccessor, step 1: ask `succ[0]` for its state.
    fn stabilize(&mut self, now: Time) {
        if self.stabilizing {
            return;
        }
        let succ = self.successor();
        if succ.id == self.me.id {
            // One-node ring: our "successor's predecessor" is our own.
            if let Some(p) = self.pred.clone() {
                self.stabilizing = true;
                self.request_state(now, p, StateWhy::StabilizePred);
            }
            return;
        }
        self.stabilizing = true;
        self.request_state(now, succ, StateWhy::StabilizeSucc);
    }

    fn request_state(&mut self, now: Time, to: NodeRef<A>, why: StateWhy) {
        let req = self.fresh_req();
        self.pending.insert(req, Pending::State(to.clone(), why));
        self.send(to, Message::GetState { req });
        self.set_timer(Timer::Request(req), now + self.cfg.rpc_timeout_ms);
    }

    fn on_state(
        &mut self,
        now: Time,
        from: NodeRef<A>,
        why: StateWhy,
        pred: Option<NodeRef<A>>,
        succs: Vec<NodeRef<A>>,
    ) {
        match why {
            StateWhy::StabilizeSucc => {
                // Zave StabilizeFromSuccessor: succs := s :: s.succs.
                let list = self.build_list(&from, &succs);
                self.succs = list;
                match pred {
                    Some(p) if p.id != self.me.id && in_open(&p.id, &self.me.id, &from.id) => {
                        // A better successor may exist; adopt it only once it answers.
                        self.request_state(now, p, StateWhy::StabilizePred);
                    }
                    _ => {
                        self.stabilizing = false;
                        self.send(from, Message::Notify);
                    }
                }
            }
            StateWhy::StabilizePred => {
                // Zave StabilizeFromPredecessor: the saved node is alive.
                let succ = self.successor();
                if succ.id == self.me.id || in_open(&from.id, &self.me.id, &succ.id) {
                    let list = self.build_list(&from, &succs);
                    self.succs = list;
                }
                self.stabilizing = false;
                let succ = self.successor();
                if succ.id != self.me.id {
                    self.send(succ, Message::Notify);
                }
            }
            StateWhy::Join => {
                // Zave Join: succs := s :: s.succs; the successor is verified live.
                let list = self.build_list(&from, &succs);
                self.joined = true;
                self.succs = list;
                self.send(from.clone(), Message::Notify);
                self.start_timers(now);
                self.out.push_back(Command::Joined { successor: from });
            }
        }
    }

    /// `s :: list`, cut where it wraps back to us, without repeats, at most `r`.
    fn build_list(&self, s: &NodeRef<A>, list: &[NodeRef<A>]) -> Vec<NodeRef<A>> {
        let mut out = vec![s.clone()];
        for x in list {
            if out.len() >= self.cfg.successors || x.id == self.me.id {
                break;
            }
            if out.iter().any(|o| o.id == x.id) {
                continue;
            }
            out.push(x.clone());
        }
        out
    }

    /// Zave Rectify, on a notification from `n`.
    fn rectify(&mut self, now: Time, n: NodeRef<A>) {
        if !self.joined || n.id == self.me.id {
            return;
        }
        match self.pred.clone() {
            None => self.pred = Some(n),
            Some(p) if p.id == n.id => {}
            Some(p) if in_open(&n.id, &p.id, &self.me.id) => self.pred = Some(n),
            Some(p) => {
                // Not better than the current predecessor: keep it if alive.
                let busy = self
                    .pending
                    .values()
                    .any(|x| matches!(x, Pending::RectifyPing { .. }));
                if !busy {
                    let req = self.fresh_req();
                    self.pending.insert(
                        req,
                        Pending::RectifyPing {
                            old: p.clone(),
                            cand: n,
                        },
                    );
                    self.send(p, Message::Ping { req });
                    self.set_timer(Timer::Request(req), now + self.cfg.rpc_timeout_ms);
                }
            }
        }
        // A one-node ring learns its first successor from its first notifier.
        if self.succs.is_empty()
            && let Some(p) = self.pred.clone()
        {
            self.succs = vec![p];
        }
    }

    fn on_leaving(
        &mut self,
        now: Time,
        from: NodeRef<A>,
        pred: Option<NodeRef<A>>,
        succs: Vec<NodeRef<A>>,
    ) {
        if self.pred.as_ref().is_some_and(|p| p.id == from.id) {
            // Our predecessor left; its predecessor will notify us once it has
            // verified us as its successor (we only adopt live pointers).
            self.pred = None;
            let _ = pred;
        }
        if self.succs.iter().any(|s| s.id == from.id) {
            let me = self.me.id;
            let space = self.cfg.space;
            let mut list: Vec<NodeRef<A>> = self
                .succs
                .iter()
                .chain(succs.iter())
                .filter(|s| s.id != from.id && s.id != me)
                .cloned()
                .collect();
            list.sort_by_key(|s| space.distance(me, s.id));
            list.dedup_by(|a, b| a.id == b.id);
            list.truncate(self.cfg.successors);
            self.succs = list;
            self.fingers.clear_where(|f| f.id == from.id);
            self.stabilize(now);
        }
        self.fingers.clear_where(|f| f.id == from.id);
    }

    /// Records an unanswered request to `id`; true once it has missed
    /// `failure_strikes` in a row (any message from it resets the count).
    fn suspect(&mut self, id: Id) -> bool {
        let s = self.strikes.entry(id).or_insert(0);
        *s += 1;
        if *s >= self.cfg.failure_strikes {
            self.strikes.remove(&id);
            true
        } else {
            false
        }
    }

    /// Forgets a node presumed dead.
    fn remove_dead(&mut self, id: Id) {
        self.succs.retain(|s| s.id != id);
        self.fingers.clear_where(|f| f.id == id);
        if self.pred.as_ref().is_some_and(|p| p.id == id) {
            self.pred = None;
        }
        if self.succs.is_empty() {
            // Zave's precondition (some live successor always remains) was
            // violated; fall back to the nearest other node we know, which the
            // next stabilize verifies before anything else uses it.
            let me = self.me.id;
            let space = self.cfg.space;
            if let Some(f) = self
                .fingers
                .values()
                .chain(self.pred.iter())
                .filter(|f| f.id != me)
                .min_by_key(|f| space.distance(me, f.id))
                .cloned()
            {
                self.succs.push(f);
            }
        }
    }

    fn handle_timeout(&mut self, now: Time, req: u64) {
        if let Some(p) = self.pending.remove(&req) {
            self.stats.timeouts += 1;
            match p {
                Pending::CheckPred(p) => {
                    if self.suspect(p.id) {
                        if self.pred.as_ref().is_some_and(|x| x.id == p.id) {
                            self.pred = None;
                        }
                        self.fingers.clear_where(|f| f.id == p.id);
                    } else {
                        // Not yet presumed dead: probe again right away.
                        let req = self.fresh_req();
                        self.pending.insert(req, Pending::CheckPred(p.clone()));
                        self.send(p, Message::Ping { req });
                        self.set_timer(Timer::Request(req), now + self.cfg.rpc_timeout_ms);
                    }
                }
                Pending::RectifyPing { old, cand } => {
                    if self.suspect(old.id) {
                        self.remove_dead(old.id);
                        if self.pred.is_none() {
                            self.pred = Some(cand);
                        }
                    } else {
                        let req = self.fresh_req();
                        self.pending.insert(
                            req,
                            Pending::RectifyPing {
                                old: old.clone(),
                                cand,
                            },
                        );
                        self.send(old, Message::Ping { req });
                        self.set_timer(Timer::Request(req), now + self.cfg.rpc_timeout_ms);
                    }
                }
                Pending::State(to, why) => {
                    if self.suspect(to.id) {
                        self.remove_dead(to.id);
                    }
                    match why {
                        StateWhy::StabilizeSucc => {
                            // Move to the next live successor and stabilize with it.
                            self.stabilizing = false;
                            self.stabilize(now);
                        }
                        StateWhy::StabilizePred => {
                            self.stabilizing = false;
                            let succ = self.successor();
                            if succ.id != self.me.id {
                                self.send(succ, Message::Notify);
                            }
                        }
                        StateWhy::Join => {
                            self.out.push_back(Command::JoinFailed {
                                error: OpError::Timeout,
                            });
                        }
                    }
                }
                Pending::Step { to, lookup } => {
                    if self.suspect(to.id) {
                        self.remove_dead(to.id);
                    }
                    let next = match self.lookups.get_mut(&lookup) {
                        Some(st) if self.cfg.lookup_retries && !st.alternatives.is_empty() => {
                            Some(st.alternatives.remove(0))
                        }
                        _ => None,
                    };
                    match next {
                        Some(n) => self.send_step(now, lookup, n),
                        None => self.finish_lookup(now, lookup, Err(OpError::Timeout)),
                    }
                }
                Pending::Forward {
                    to,
                    origin,
                    lookup,
                    key,
                    path,
                    mut alternatives,
                } => {
                    if self.suspect(to.id) {
                        self.remove_dead(to.id);
                    }
                    if self.cfg.lookup_retries && !alternatives.is_empty() {
                        let n = alternatives.remove(0);
                        self.send_forward(now, n, origin, lookup, key, path, alternatives);
                    }
                }
            }
        } else if let Some(st) = self.lookups.get(&req)
            && st.mode == LookupMode::Recursive
        {
            // Overall deadline of a recursive lookup.
            self.finish_lookup(now, req, Err(OpError::Timeout));
        }
    }

    // ----- fingers -----------------------------------------------------------

    /// Refreshes fingers from `finger_next` on. Fingers whose start lies in
    /// `(n, successor]` are the successor and need no lookup; for the others a
    /// lookup of `start_i` returns `o`, which is also `finger[j]` for every later
    /// `j` with `start_j ∈ (start_i, o]` (the optimisation of SIGCOMM Fig. 6
    /// `init_finger_table`). With `all == false` at most one lookup is made.
    fn advance_fingers(&mut self, now: Time, all: bool) {
        let m = self.cfg.space.bits();
        let succ = self.successor();
        loop {
            if self.finger_next > m {
                self.finger_next = 1;
                self.finger_job = false;
                return;
            }
            let i = self.finger_next;
            let start = self.cfg.space.finger_start(self.me.id, i);
            if succ.id != self.me.id && in_open_closed(&start, &self.me.id, &succ.id) {
                if self.fingers.get(i) != Some(&succ) {
                    self.fingers.set_range(i, i, Some(succ.clone()));
                }
                self.finger_next += 1;
                continue;
            }
            if succ.id == self.me.id {
                self.finger_next = m + 1;
                continue;
            }
            let _ = all;
            self.start_lookup(now, start, LookupMode::Iterative, Purpose::Finger(i));
            return;
        }
    }

    fn on_finger_found(&mut self, now: Time, i: u32, owner: Option<NodeRef<A>>) {
        let m = self.cfg.space.bits();
        let mut next = i + 1;
        if let Some(o) = owner {
            let start = self.cfg.space.finger_start(self.me.id, i);
            while next <= m
                && in_open_closed(
                    &self.cfg.space.finger_start(self.me.id, next),
                    &start,
                    &o.id,
                )
            {
                next += 1;
            }
            let v = (o.id != self.me.id).then_some(o);
            self.fingers.set_range(i, next - 1, v);
        }
        self.finger_next = next;
        if self.cfg.fix_fingers_ms == 0 {
            self.advance_fingers(now, true);
        } else {
            if self.finger_next > m {
                self.finger_next = 1;
            }
            self.finger_job = false;
        }
    }

    // ----- lookups -----------------------------------------------------------

    /// The known nodes in `(n, key)`, closest to `key` first (ToN §IV-E: fingers
    /// and successor list), at most `lookup_candidates` of them.
    fn candidates(&self, key: Id) -> Vec<NodeRef<A>> {
        let me = self.me.id;
        let space = self.cfg.space;
        if !self.cfg.finger_routing {
            // Successor walk (SIGCOMM §4.3 "basic" lookup): the successor, then
            // the rest of the list as fallbacks.
            return self
                .succs
                .iter()
                .take(self.cfg.lookup_candidates)
                .cloned()
                .collect();
        }
        let mut c: Vec<&NodeRef<A>> = self
            .fingers
            .values()
            .chain(self.succs.iter())
            .filter(|x| in_open(&x.id, &me, &key))
            .collect();
        c.sort_by_key(|x| std::cmp::Reverse(space.distance(me, x.id)));
        c.dedup_by(|a, b| a.id == b.id);
        c.into_iter()
            .take(self.cfg.lookup_candidates)
            .cloned()
            .collect()
    }

    /// The successor list, or this node alone when it has none.
    fn succ_list(&self) -> Vec<NodeRef<A>> {
        if self.succs.is_empty() {
            vec![self.me.clone()]
        } else {
            self.succs.clone()
        }
    }

    fn step(&self, key: Id) -> Step<A> {
        let succ = self.successor();
        if in_open_closed(&key, &self.me.id, &succ.id) {
            Step::Done {
                owner: succ,
                succs: self.succ_list(),
            }
        } else {
            let mut candidates = self.candidates(key);
            if candidates.is_empty() {
                candidates.push(succ);
            }
            Step::Next { candidates }
        }
    }

    fn start_lookup(&mut self, now: Time, key: Id, mode: LookupMode, purpose: Purpose) -> u64 {
        self.now = now;
        let id = self.fresh_req();
        let mut st = LookupState {
            key,
            mode,
            purpose,
            path: vec![self.me.clone()],
            alternatives: Vec::new(),
        };
        if !self.joined {
            self.lookups.insert(id, st);
            self.finish_lookup(now, id, Err(OpError::NotJoined));
            return id;
        }
        if self.owns(key) {
            let path = st.path.clone();
            self.lookups.insert(id, st);
            let owner = self.me.clone();
            let mut succs = vec![owner.clone()];
            succs.extend(self.succs.iter().filter(|s| s.id != owner.id).cloned());
            let outcome = LookupOutcome { owner, path, succs };
            self.finish_lookup(now, id, Ok(outcome));
            return id;
        }
        match self.step(key) {
            Step::Done { owner, succs } => {
                st.path.push(owner.clone());
                let path = st.path.clone();
                self.lookups.insert(id, st);
                let outcome = LookupOutcome { owner, path, succs };
                self.finish_lookup(now, id, Ok(outcome));
            }
            Step::Next { mut candidates } => {
                let first = candidates.remove(0);
                match mode {
                    LookupMode::Iterative => {
                        st.alternatives = candidates;
                        self.lookups.insert(id, st);
                        self.send_step(now, id, first);
                    }
                    LookupMode::Recursive => {
                        let path = st.path.clone();
                        self.lookups.insert(id, st);
                        let me = self.me.clone();
                        self.send_forward(now, first, me, id, key, path, candidates);
                        let deadline = self.cfg.rpc_timeout_ms
                            * (u64::from(self.cfg.max_lookup_hops) + 1).min(16);
                        self.set_timer(Timer::Request(id), now + deadline);
                    }
                }
            }
        }
        id
    }

    fn send_step(&mut self, now: Time, lookup: u64, to: NodeRef<A>) {
        let Some(key) = self.lookups.get(&lookup).map(|l| l.key) else {
            return;
        };
        let req = self.fresh_req();
        self.pending.insert(
            req,
            Pending::Step {
                to: to.clone(),
                lookup,
            },
        );
        self.send(to, Message::FindStep { req, key });
        self.set_timer(Timer::Request(req), now + self.cfg.rpc_timeout_ms);
    }

    #[allow(clippy::too_many_arguments)]
    fn send_forward(
        &mut self,
        now: Time,
        to: NodeRef<A>,
        origin: NodeRef<A>,
        lookup: u64,
        key: Id,
        path: Vec<NodeRef<A>>,
        alternatives: Vec<NodeRef<A>>,
    ) {
        let req = self.fresh_req();
        self.send(
            to.clone(),
            Message::Forward {
                req,
                origin: origin.clone(),
                lookup,
                key,
                path: path.clone(),
            },
        );
        self.pending.insert(
            req,
            Pending::Forward {
                to,
                origin,
                lookup,
                key,
                path,
                alternatives,
            },
        );
        self.set_timer(Timer::Request(req), now + self.cfg.rpc_timeout_ms);
    }

    fn on_step(&mut self, now: Time, lookup: u64, from: NodeRef<A>, step: Step<A>) {
        let max_hops = self.cfg.max_lookup_hops as usize;
        let Some(st) = self.lookups.get_mut(&lookup) else {
            return;
        };
        st.path.push(from.clone());
        match step {
            Step::Done { owner, succs } => {
                if owner.id != from.id {
                    st.path.push(owner.clone());
                }
                let path = std::mem::take(&mut st.path);
                let outcome = LookupOutcome { owner, path, succs };
                self.finish_lookup(now, lookup, Ok(outcome));
            }
            Step::Next { mut candidates } => {
                candidates.retain(|c| !st.path.iter().any(|p| p.id == c.id));
                if candidates.is_empty() || st.path.len() > max_hops {
                    self.finish_lookup(now, lookup, Err(OpError::TooManyHops));
                    return;
                }
                let next = candidates.remove(0);
                st.alternatives = candidates;
                self.send_step(now, lookup, next);
            }
        }
    }

    fn finish_lookup(&mut self, now: Time, lookup: u64, result: Result<LookupOutcome<A>, OpError>) {
        let Some(st) = self.lookups.remove(&lookup) else {
            return;
        };
        let key = st.key;
        match st.purpose {
            Purpose::Client => {
                if result.is_ok() {
                    self.stats.lookups_ok += 1;
                } else {
                    self.stats.lookups_failed += 1;
                }
                self.out.push_back(Command::LookupDone {
                    lookup,
                    key,
                    result,
                });
            }
            Purpose::Join => match result {
                Ok(o) if o.owner.id == self.me.id => {
                    self.out.push_back(Command::JoinFailed {
                        error: OpError::IdTaken,
                    });
                }
                Ok(o) => self.request_state(now, o.owner, StateWhy::Join),
                Err(error) => self.out.push_back(Command::JoinFailed { error }),
            },
            Purpose::Finger(i) => self.on_finger_found(now, i, result.ok().map(|o| o.owner)),
        }
    }

    // ----- plumbing ----------------------------------------------------------

    fn fresh_req(&mut self) -> u64 {
        let r = self.next_req;
        self.next_req += 1;
        r
    }

    fn send(&mut self, to: NodeRef<A>, msg: Message<A>) {
        self.stats.messages_sent += 1;
        self.out.push_back(Command::Send { to, msg });
    }

    fn set_timer(&mut self, timer: Timer, at: Time) {
        self.out.push_back(Command::SetTimer { timer, at });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type N = Node<u32>;

    fn space() -> IdSpace {
        IdSpace::new(7).unwrap()
    }

    fn r(id: u64) -> NodeRef<u32> {
        NodeRef {
            id: space().id(id),
            addr: id as u32,
        }
    }

    fn cfg() -> Config {
        let mut c = Config::new(space());
        c.successors = 3;
        c.failure_strikes = 1;
        c
    }

    /// Node 32 of the seed ring, stabilized: pred 10, successors 60, 90, 105.
    fn node32() -> N {
        let fingers = [60, 60, 60, 60, 60, 90, 105].map(r).to_vec();
        let mut n = N::from_stable(
            cfg(),
            r(32),
            r(10),
            [60, 90, 105].map(r).to_vec(),
            fingers,
            1,
            0,
        );
        n.drain();
        n
    }

    impl N {
        fn drain(&mut self) -> Vec<Command<u32>> {
            std::iter::from_fn(|| self.poll_command()).collect()
        }
    }

    fn sends(cmds: &[Command<u32>]) -> Vec<(u64, Message<u32>)> {
        cmds.iter()
            .filter_map(|c| match c {
                Command::Send { to, msg } => Some((to.id.to_u64().unwrap(), msg.clone())),
                _ => None,
            })
            .collect()
    }

    fn req_of(m: &Message<u32>) -> u64 {
        match m {
            Message::GetState { req } | Message::Ping { req } | Message::FindStep { req, .. } => {
                *req
            }
            other => panic!("no request id in {other:?}"),
        }
    }

    /// Reference: ToN Fig. 6 `create`; a one-node ring owns every key.
    #[test]
    fn a_created_one_node_ring_answers_every_lookup_locally() {
        let mut n = N::new(cfg(), r(5), 1);
        n.create(0);
        n.drain();
        let l = n.lookup(0, space().id(100), LookupMode::Iterative);
        let cmds = n.drain();
        assert_eq!(
            cmds,
            vec![Command::LookupDone {
                lookup: l,
                key: space().id(100),
                result: Ok(LookupOutcome {
                    owner: r(5),
                    path: vec![r(5)],
                    succs: vec![r(5)]
                })
            }]
        );
    }

    /// Reference: Zave 2017 StabilizeFromSuccessor; SIGCOMM Fig. 7 `stabilize`.
    #[test]
    fn stabilize_asks_the_successor_then_notifies_it() {
        let mut n = node32();
        n.handle_timer(100, Timer::Stabilize);
        let s = sends(&n.drain());
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, 60);
        let req = req_of(&s[0].1);
        n.handle_message(
            150,
            r(60),
            Message::State {
                req,
                pred: Some(r(32)),
                succs: vec![r(90), r(105), r(120)],
            },
        );
        assert_eq!(sends(&n.drain()), vec![(60, Message::Notify)]);
        let succ: Vec<Id> = n.successors().iter().map(|s| s.id).collect();
        assert_eq!(succ, [60, 90, 105].map(|v| space().id(v)));
    }

    /// Reference: Zave 2017 ("never adopt a pointer without checking it is
    /// live") and StabilizeFromPredecessor.
    #[test]
    fn stabilize_adopts_the_successors_new_predecessor_only_after_it_answers() {
        let mut n = node32();
        n.handle_timer(100, Timer::Stabilize);
        let req = req_of(&sends(&n.drain())[0].1);
        n.handle_message(
            150,
            r(60),
            Message::State {
                req,
                pred: Some(r(45)),
                succs: vec![r(90), r(105), r(120)],
            },
        );
        let s = sends(&n.drain());
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, 45, "queries the candidate first");
        assert_eq!(n.successor().id, space().id(60), "not adopted yet");
        let req = req_of(&s[0].1);
        n.handle_message(
            200,
            r(45),
            Message::State {
                req,
                pred: Some(r(32)),
                succs: vec![r(60), r(90), r(105)],
            },
        );
        let s = sends(&n.drain());
        assert!(s.contains(&(45, Message::Notify)));
        let succ: Vec<Id> = n.successors().iter().map(|s| s.id).collect();
        assert_eq!(succ, [45, 60, 90].map(|v| space().id(v)));
    }

    /// Reference: Zave 2017 Stabilize: a candidate that does not answer is not adopted.
    #[test]
    fn a_dead_candidate_successor_is_never_adopted() {
        let mut n = node32();
        n.handle_timer(100, Timer::Stabilize);
        let req = req_of(&sends(&n.drain())[0].1);
        n.handle_message(
            150,
            r(60),
            Message::State {
                req,
                pred: Some(r(45)),
                succs: vec![r(90), r(105), r(120)],
            },
        );
        let req = req_of(&sends(&n.drain())[0].1);
        n.handle_timer(2_000, Timer::Request(req));
        assert_eq!(sends(&n.drain()), vec![(60, Message::Notify)]);
        assert_eq!(n.successor().id, space().id(60));
    }

    /// Reference: Zave 2017 Rectify: a notifier in (pred, n) is adopted at
    /// once, without a message.
    #[test]
    fn rectify_adopts_a_closer_notifier() {
        let mut n = node32();
        n.handle_message(10, r(20), Message::Notify);
        assert_eq!(n.predecessor().unwrap().id, space().id(20));
        assert!(sends(&n.drain()).is_empty());
    }

    /// Reference: Zave 2017 Rectify: a notifier that is not closer replaces the
    /// predecessor only if the old one is dead.
    #[test]
    fn rectify_keeps_a_live_predecessor_and_replaces_a_dead_one() {
        let mut n = node32();
        n.handle_message(10, r(120), Message::Notify);
        let s = sends(&n.drain());
        assert_eq!(s[0].0, 10, "pings the old predecessor");
        n.handle_message(
            20,
            r(10),
            Message::Pong {
                req: req_of(&s[0].1),
            },
        );
        assert_eq!(n.predecessor().unwrap().id, space().id(10));
        n.handle_message(30, r(120), Message::Notify);
        let s = sends(&n.drain());
        n.handle_timer(2_000, Timer::Request(req_of(&s[0].1)));
        assert_eq!(n.predecessor().unwrap().id, space().id(120));
    }

    /// Reference: ToN Fig. 6 `check_predecessor` and Zave 2017 Rectify: a
    /// predecessor that does not answer is cleared, and the next notifier is
    /// adopted even if it lies before the old predecessor.
    #[test]
    fn check_predecessor_clears_a_dead_predecessor_and_the_next_notifier_is_adopted() {
        let mut n = node32();
        n.handle_timer(10, Timer::CheckPredecessor);
        let s = sends(&n.drain());
        assert!(matches!(s[0], (10, Message::Ping { .. })));
        n.handle_timer(2_000, Timer::Request(req_of(&s[0].1)));
        assert!(n.predecessor().is_none());
        n.handle_message(2_100, r(120), Message::Notify);
        assert_eq!(n.predecessor().unwrap().id, space().id(120));
    }

    /// Reference: SIGCOMM §5.2: when the successor fails, use the first live
    /// entry of the successor list.
    #[test]
    fn a_failed_successor_is_replaced_by_the_next_entry() {
        let mut n = node32();
        n.handle_timer(100, Timer::Stabilize);
        let req = req_of(&sends(&n.drain())[0].1);
        n.handle_timer(2_000, Timer::Request(req));
        let s = sends(&n.drain());
        assert_eq!(n.successor().id, space().id(90));
        assert!(matches!(s[0], (90, Message::GetState { .. })));
    }

    /// Reference: SIGCOMM Fig. 4 / ToN Fig. 5: a step answers Done when the key
    /// is in (n, successor], else the closest preceding nodes, best first.
    #[test]
    fn find_step_answers_with_the_owner_or_the_closest_preceding_nodes() {
        let mut n = node32();
        n.handle_message(
            0,
            r(90),
            Message::FindStep {
                req: 7,
                key: space().id(50),
            },
        );
        assert_eq!(
            sends(&n.drain()),
            vec![(
                90,
                Message::StepReply {
                    req: 7,
                    step: Step::Done {
                        owner: r(60),
                        succs: n.successors().to_vec()
                    }
                }
            )]
        );
        n.handle_message(
            0,
            r(90),
            Message::FindStep {
                req: 8,
                key: space().id(100),
            },
        );
        let s = sends(&n.drain());
        assert!(matches!(
            &s[0].1,
            Message::StepReply { step: Step::Next { candidates }, .. }
                if candidates.iter().map(|c| c.id.to_u64().unwrap()).collect::<Vec<_>>() == vec![90, 60]
        ));
    }
}
