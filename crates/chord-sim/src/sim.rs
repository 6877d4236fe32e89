//! A deterministic discrete-event simulator that drives [`chord_core::Node`]s.
//!
//! Every simulated process has a transport address `u32` (its index) and hosts
//! one Chord node. The simulator owns one seeded [`ChaCha8Rng`]; all randomness
//! (delays, losses, node seeds) derives from it, so a run is a function of its
//! seed. Events are ordered by `(time, sequence number)`.
//!
//! * **Network**: each message is lost with probability `loss`, otherwise
//!   delivered after `delay_ms_min + Exp(delay_ms_mean_extra)` ms, so messages
//!   may be reordered. Messages to a crashed process vanish; the sender notices
//!   through its own timeout, as over TCP with a dead peer.
//! * **Crash / restart**: a crash drops the node's whole state (Chord keeps no
//!   durable state); pending timers of the old incarnation are ignored. A restart
//!   creates a fresh node with the same address and id, which joins again.
//! * **Joins**: a failed join is retried a second later through another member.
//!
//! The simulator also knows the ground truth (the set of live members) and can
//! check Zave's *Ideal* state: every member's predecessor and successor list
//! are exactly its ring neighbours.

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap};

use chord_core::node::{Command, Config, LookupMode, Message, Node, NodeRef, Time, Timer};
use chord_core::{Id, StaticRing};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Network fault model.
#[derive(Clone, Copy, Debug)]
pub struct NetConfig {
    /// Minimum one-way delay (ms).
    pub delay_ms_min: u64,
    /// Mean of the exponential extra delay (ms).
    pub delay_ms_mean_extra: f64,
    /// Probability that a message is lost.
    pub loss: f64,
}

impl Default for NetConfig {
    /// 10 ms + Exp(40 ms), no loss.
    fn default() -> Self {
        NetConfig {
            delay_ms_min: 10,
            delay_ms_mean_extra: 40.0,
            loss: 0.0,
        }
    }
}

/// A completed client operation, as reported by a node.
#[derive(Clone, Debug)]
pub struct Completion {
    /// When it completed.
    pub at: Time,
    /// The process whose node reported it.
    pub addr: u32,
    /// The node's report ([`Command::LookupDone`]).
    pub cmd: Command<u32>,
}

enum EvKind {
    Deliver {
        to: u32,
        from: NodeRef<u32>,
        msg: Message<u32>,
    },
    Timer {
        addr: u32,
        inc: u32,
        timer: Timer,
    },
    Rejoin {
        addr: u32,
        inc: u32,
    },
}

struct Ev {
    at: Time,
    seq: u64,
    kind: EvKind,
}

impl PartialEq for Ev {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Ev {}
impl PartialOrd for Ev {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Ev {
    /// Reversed, so that `BinaryHeap` pops the earliest event first.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

struct Proc {
    id: Id,
    inc: u32,
    node: Option<Node<u32>>,
}

/// The simulator. See the module documentation.
pub struct Sim {
    cfg: Config,
    net: NetConfig,
    now: Time,
    seq: u64,
    queue: BinaryHeap<Ev>,
    procs: Vec<Proc>,
    members: BTreeSet<(Id, u32)>,
    rng: ChaCha8Rng,
    completions: Vec<Completion>,
    events: u64,
    messages: u64,
    trace_hash: u64,
}

impl Sim {
    /// An empty simulation; `cfg` is used for every node.
    pub fn new(cfg: Config, net: NetConfig, seed: u64) -> Self {
        Sim {
            cfg,
            net,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            procs: Vec::new(),
            members: BTreeSet::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            completions: Vec::new(),
            events: 0,
            messages: 0,
            trace_hash: 0xcbf2_9ce4_8422_2325,
        }
    }

    /// Current simulated time (ms).
    pub fn now(&self) -> Time {
        self.now
    }

    /// Changes the network fault model from now on (e.g. to heal it before a
    /// liveness check).
    pub fn set_net(&mut self, net: NetConfig) {
        self.net = net;
    }

    /// The node configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The simulator's random generator (for experiment drivers).
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Events processed so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Messages sent so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// A hash of every processed event (time, kind, endpoints): two runs with the
    /// same seed must produce the same value.
    pub fn trace_hash(&self) -> u64 {
        self.trace_hash
    }

    /// Live ring members (joined and not crashed), as `(id, addr)` in id order.
    pub fn members(&self) -> &BTreeSet<(Id, u32)> {
        &self.members
    }

    /// Number of processes ever created (addresses `0..n`).
    pub fn process_count(&self) -> usize {
        self.procs.len()
    }

    /// The node at `addr`, if the process is up.
    pub fn node(&self, addr: u32) -> Option<&Node<u32>> {
        self.procs.get(addr as usize).and_then(|p| p.node.as_ref())
    }

    /// The node at `addr`, mutably (for direct inspection in tests).
    pub fn node_mut(&mut self, addr: u32) -> Option<&mut Node<u32>> {
        self.procs
            .get_mut(addr as usize)
            .and_then(|p| p.node.as_mut())
    }

    /// Whether the process at `addr` is up.
    pub fn is_up(&self, addr: u32) -> bool {
        self.node(addr).is_some()
    }

    /// The current owner of `key` by ground truth: the first live member `>= key`.
    pub fn true_successor(&self, key: Id) -> Option<(Id, u32)> {
        self.members
            .range((key, 0)..)
            .next()
            .or_else(|| self.members.iter().next())
            .copied()
    }

    /// Takes the client completions reported since the last call.
    pub fn take_completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.completions)
    }

    fn new_proc(&mut self, id: Id) -> u32 {
        let addr = self.procs.len() as u32;
        let seed = self.rng.next_u64();
        let me = NodeRef { id, addr };
        self.procs.push(Proc {
            id,
            inc: 0,
            node: Some(Node::new(self.cfg.clone(), me, seed)),
        });
        addr
    }

    /// Adds a process with node id `id` that creates a new ring.
    pub fn create(&mut self, id: Id) -> u32 {
        let addr = self.new_proc(id);
        let now = self.now;
        self.with_node(addr, |n| n.create(now));
        self.members.insert((id, addr));
        addr
    }

    /// Adds a process with node id `id` that joins through `bootstrap`.
    pub fn join(&mut self, id: Id, bootstrap: u32) -> u32 {
        let addr = self.new_proc(id);
        self.start_join(addr, bootstrap);
        addr
    }

    fn start_join(&mut self, addr: u32, bootstrap: u32) {
        let b = NodeRef {
            id: self.procs[bootstrap as usize].id,
            addr: bootstrap,
        };
        let now = self.now;
        self.with_node(addr, |n| n.join(now, b));
    }

    /// Builds an already stabilized ring of the given ids (one process each), as
    /// the SIGCOMM §6 experiments start: correct predecessors, successor lists
    /// and fingers. Returns the addresses in id order.
    pub fn build_stable(&mut self, ring: &StaticRing) -> Vec<u32> {
        let base = self.procs.len() as u32;
        let n = ring.len();
        let r = self.cfg.successors.min(n.saturating_sub(1));
        let m = self.cfg.space.bits();
        let refs: Vec<NodeRef<u32>> = (0..n)
            .map(|i| NodeRef {
                id: ring.id(i),
                addr: base + i as u32,
            })
            .collect();
        for i in 0..n {
            let pred = refs[ring.prev_index(i)].clone();
            let mut succs = Vec::with_capacity(r);
            let mut j = i;
            for _ in 0..r {
                j = ring.next_index(j);
                succs.push(refs[j].clone());
            }
            let fingers = (1..=m)
                .map(|k| refs[ring.finger_index(i, k)].clone())
                .collect();
            let seed = self.rng.next_u64();
            let now = self.now;
            let node = Node::from_stable(
                self.cfg.clone(),
                refs[i].clone(),
                pred,
                succs,
                fingers,
                seed,
                now,
            );
            self.procs.push(Proc {
                id: ring.id(i),
                inc: 0,
                node: Some(node),
            });
            self.members.insert((ring.id(i), base + i as u32));
            self.drain(base + i as u32);
        }
        refs.iter().map(|r| r.addr).collect()
    }

    /// Crashes the process at `addr`: all its state is lost.
    pub fn crash(&mut self, addr: u32) {
        let p = &mut self.procs[addr as usize];
        if p.node.take().is_some() {
            p.inc += 1;
            self.members.remove(&(p.id, addr));
        }
    }

    /// Restarts a crashed process with a fresh node that joins via `bootstrap`.
    pub fn restart(&mut self, addr: u32, bootstrap: u32) {
        let id = self.procs[addr as usize].id;
        if self.procs[addr as usize].node.is_some() {
            return;
        }
        let seed = self.rng.next_u64();
        self.procs[addr as usize].node =
            Some(Node::new(self.cfg.clone(), NodeRef { id, addr }, seed));
        self.start_join(addr, bootstrap);
    }

    /// Voluntary departure of the node at `addr`; its process then stops.
    pub fn leave(&mut self, addr: u32) {
        let now = self.now;
        self.with_node(addr, |n| n.leave(now));
        let p = &mut self.procs[addr as usize];
        p.node = None;
        p.inc += 1;
        self.members.remove(&(p.id, addr));
    }

    /// Starts a client lookup at `addr`; the result appears in
    /// [`Sim::take_completions`].
    pub fn lookup(&mut self, addr: u32, key: Id, mode: LookupMode) -> Option<u64> {
        let now = self.now;
        self.with_node(addr, |n| n.lookup(now, key, mode))
    }

    fn with_node<R>(&mut self, addr: u32, f: impl FnOnce(&mut Node<u32>) -> R) -> Option<R> {
        let r = self.procs[addr as usize].node.as_mut().map(f);
        self.drain(addr);
        r
    }

    fn push(&mut self, at: Time, kind: EvKind) {
        self.seq += 1;
        self.queue.push(Ev {
            at,
            seq: self.seq,
            kind,
        });
    }

    /// Performs the commands the node at `addr` has queued.
    fn drain(&mut self, addr: u32) {
        loop {
            let Some(node) = self.procs[addr as usize].node.as_mut() else {
                return;
            };
            let Some(cmd) = node.poll_command() else {
                return;
            };
            let me = node.me().clone();
            let inc = self.procs[addr as usize].inc;
            match cmd {
                Command::Send { to, msg } => {
                    self.messages += 1;
                    if self.net.loss > 0.0 && self.rng.random::<f64>() < self.net.loss {
                        continue;
                    }
                    let u: f64 = self.rng.random();
                    let extra = -self.net.delay_ms_mean_extra * (1.0 - u).ln();
                    let at = self.now + self.net.delay_ms_min + extra as u64;
                    self.push(
                        at,
                        EvKind::Deliver {
                            to: to.addr,
                            from: me,
                            msg,
                        },
                    );
                }
                Command::SetTimer { timer, at } => {
                    self.push(at.max(self.now), EvKind::Timer { addr, inc, timer })
                }
                Command::Joined { .. } => {
                    self.members.insert((me.id, addr));
                }
                Command::JoinFailed { .. } => {
                    let at = self.now + 1000;
                    self.push(at, EvKind::Rejoin { addr, inc });
                }
                cmd @ Command::LookupDone { .. } => self.completions.push(Completion {
                    at: self.now,
                    addr,
                    cmd,
                }),
            }
        }
    }

    /// Time of the next pending event, if any.
    pub fn next_event_time(&self) -> Option<Time> {
        self.queue.peek().map(|e| e.at)
    }

    /// Processes one event. Returns false when the queue is empty.
    pub fn step(&mut self) -> bool {
        let Some(ev) = self.queue.pop() else {
            return false;
        };
        debug_assert!(ev.at >= self.now);
        self.now = ev.at;
        self.events += 1;
        let now = self.now;
        match ev.kind {
            EvKind::Deliver { to, from, msg } => {
                self.mix(now, 1, to as u64, from.addr as u64);
                if let Some(n) = self.procs[to as usize].node.as_mut() {
                    n.handle_message(now, from, msg);
                    self.drain(to);
                }
            }
            EvKind::Timer { addr, inc, timer } => {
                self.mix(now, 2, addr as u64, inc as u64);
                let p = &mut self.procs[addr as usize];
                if p.inc == inc
                    && let Some(n) = p.node.as_mut()
                {
                    n.handle_timer(now, timer);
                    self.drain(addr);
                }
            }
            EvKind::Rejoin { addr, inc } => {
                if self.procs[addr as usize].inc == inc && !self.members.is_empty() {
                    let k = self.rng.random_range(0..self.members.len());
                    let b = self.members.iter().nth(k).map(|m| m.1).unwrap_or(0);
                    self.start_join(addr, b);
                }
            }
        }
        true
    }

    fn mix(&mut self, a: u64, b: u64, c: u64, d: u64) {
        for x in [a, b, c, d] {
            self.trace_hash = (self.trace_hash ^ x).wrapping_mul(0x0100_0000_01b3);
        }
    }

    /// Processes events up to and including time `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: Time) {
        while let Some(at) = self.next_event_time() {
            if at > t {
                break;
            }
            self.step();
        }
        self.now = self.now.max(t);
    }

    /// Checks Zave's *Ideal* state over the live members: each member's
    /// successor list is the next `min(r, n-1)` members and its predecessor is
    /// the previous one; also every live process has joined.
    pub fn check_ideal(&self) -> Result<(), String> {
        let m: Vec<(Id, u32)> = self.members.iter().copied().collect();
        let n = m.len();
        for (addr, p) in self.procs.iter().enumerate() {
            if let Some(node) = &p.node
                && !node.is_joined()
            {
                return Err(format!("process {addr} ({}) has not joined", p.id));
            }
        }
        let r = self.cfg.successors.min(n.saturating_sub(1));
        for (i, (id, addr)) in m.iter().enumerate() {
            let node = self.node(*addr).ok_or("member without node")?;
            let want: Vec<Id> = (1..=r).map(|k| m[(i + k) % n].0).collect();
            let got: Vec<Id> = node.successors().iter().map(|s| s.id).collect();
            if got != want {
                return Err(format!("node {id}: successors {got:?}, want {want:?}"));
            }
            let want_pred = (n > 1).then(|| m[(i + n - 1) % n].0);
            let got_pred = node.predecessor().map(|p| p.id);
            if got_pred != want_pred {
                return Err(format!(
                    "node {id}: predecessor {got_pred:?}, want {want_pred:?}"
                ));
            }
        }
        Ok(())
    }

    /// Zave's *OneLiveSuccessor* (the Fail precondition, assumed by every
    /// correctness argument): every member's successor list holds a live
    /// member, unless it is the only member.
    pub fn check_live_successor(&self) -> Result<(), String> {
        if self.members.len() < 2 {
            return Ok(());
        }
        for (id, addr) in &self.members {
            let node = self.node(*addr).ok_or("member without node")?;
            if !node.successors().iter().any(|s| self.is_up(s.addr)) {
                return Err(format!(
                    "member {id} has no live successor in {:?}",
                    node.successors().iter().map(|s| s.id).collect::<Vec<_>>()
                ));
            }
        }
        Ok(())
    }

    /// Checks that every live member's fingers equal the definition
    /// `successor(n + 2^(i-1))` over the live members (or are unset).
    pub fn check_fingers(&self) -> Result<(), String> {
        let space = self.cfg.space;
        for (id, addr) in &self.members {
            let node = self.node(*addr).ok_or("member without node")?;
            for i in 1..=space.bits() {
                let want = self.true_successor(space.finger_start(*id, i)).map(|x| x.0);
                let got = node.finger(i).map(|f| f.id);
                if got != want && !(got.is_none() && want == Some(*id)) {
                    return Err(format!("node {id}: finger {i} is {got:?}, want {want:?}"));
                }
            }
        }
        Ok(())
    }

    /// Runs until [`Sim::check_ideal`] holds (checked every `check_every_ms`) or
    /// `deadline` passes. Returns whether the ring became ideal.
    pub fn run_until_ideal(&mut self, check_every_ms: Time, deadline: Time) -> bool {
        loop {
            if self.check_ideal().is_ok() {
                return true;
            }
            if self.now >= deadline {
                return false;
            }
            let t = (self.now + check_every_ms).min(deadline);
            self.run_until(t);
        }
    }
}
