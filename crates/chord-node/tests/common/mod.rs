//! Test harness: real `chord-node` processes on loopback, on free ports, with
//! fast periods, killed when the harness is dropped.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chord_core::{Id, IdSpace};
use redis::Value;

/// Clusters of one test binary run one at a time (2 cores).
pub static SERIAL: Mutex<()> = Mutex::new(());

/// Mean stabilization period of the test nodes, in ms.
pub const STABILIZE_MS: u64 = 100;

pub const BIN: &str = env!("CARGO_BIN_EXE_chord-node");

pub struct TestNode {
    pub port: u16,
    pub child: Option<Child>,
    pub dir: PathBuf,
}

impl TestNode {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    pub fn alive(&self) -> bool {
        self.child.is_some()
    }
    pub fn id(&self) -> Id {
        IdSpace::default().hash(self.addr().as_bytes())
    }
}

pub struct Ring {
    pub nodes: Vec<TestNode>,
    pub replicas: usize,
    pub successors: usize,
    /// More `serve` flags for every node.
    pub extra: Vec<String>,
    /// Fast test timings ([`fast_flags`]); false runs the `chord serve` defaults.
    pub fast: bool,
    _tmp: tempfile::TempDir,
}

/// `n` ports that were free a moment ago.
pub fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

pub fn fast_flags(replicas: usize) -> Vec<String> {
    fast_flags_with(replicas, 4)
}

pub fn fast_flags_with(replicas: usize, successors: usize) -> Vec<String> {
    [
        "--stabilize-ms",
        &STABILIZE_MS.to_string(),
        "--fix-fingers-ms",
        "50",
        "--check-predecessor-ms",
        "100",
        "--rpc-timeout-ms",
        "250",
        "--failure-strikes",
        "2",
        "--sync-ms",
        "200",
        "--op-timeout-ms",
        "20000",
        "--successors",
        &successors.to_string(),
        "--replicas",
        &replicas.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl Ring {
    /// Starts `n` nodes: the first creates the ring, the others join through it.
    pub fn start(n: usize, replicas: usize) -> Ring {
        Ring::start_with(n, replicas, 4)
    }

    /// Starts `n` nodes with successor lists of length `successors`.
    pub fn start_with(n: usize, replicas: usize, successors: usize) -> Ring {
        Ring::start_opts(n, replicas, successors, &[])
    }

    /// Starts `n` nodes with more `serve` flags.
    pub fn start_opts(n: usize, replicas: usize, successors: usize, extra: &[&str]) -> Ring {
        let tmp = tempfile::tempdir().unwrap();
        let mut ring = Ring {
            nodes: Vec::new(),
            replicas,
            successors,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            fast: true,
            _tmp: tmp,
        };
        for _ in 0..n {
            ring.add_node();
        }
        ring
    }

    /// Starts `n` nodes with the default timings of `chord serve` (as a user's
    /// `chord cluster` runs), except for the copies and successor-list length.
    pub fn start_default_timing(n: usize, replicas: usize, successors: usize) -> Ring {
        let tmp = tempfile::tempdir().unwrap();
        let mut ring = Ring {
            nodes: Vec::new(),
            replicas,
            successors,
            extra: Vec::new(),
            fast: false,
            _tmp: tmp,
        };
        for _ in 0..n {
            ring.add_node();
        }
        ring
    }

    /// Starts one more node (joining through the first live one).
    pub fn add_node(&mut self) -> usize {
        let port = free_ports(1)[0];
        let dir = self._tmp.path().join(format!("n{port}"));
        self.nodes.push(TestNode {
            port,
            child: None,
            dir,
        });
        let i = self.nodes.len() - 1;
        self.restart(i);
        i
    }

    /// Starts node `i` (new, or killed) on its port and data directory,
    /// joining through the first live node (or creating the ring if none).
    pub fn restart(&mut self, i: usize) {
        if let Err(e) = self.try_restart(i) {
            panic!("node {i} did not start: {e}");
        }
    }

    /// [`Ring::restart`], or the node's standard error if it exits instead
    /// of listening.
    pub fn try_restart(&mut self, i: usize) -> Result<(), String> {
        assert!(!self.nodes[i].alive(), "node {i} is running");
        let port = self.nodes[i].port;
        let join = self.nodes.iter().find(|n| n.alive()).map(|n| n.addr());
        let log = self._tmp.path().join(format!("n{port}.stderr"));
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&self.nodes[i].dir)
            .args(if self.fast {
                fast_flags_with(self.replicas, self.successors)
            } else {
                vec![
                    "--successors".into(),
                    self.successors.to_string(),
                    "--replicas".into(),
                    self.replicas.to_string(),
                ]
            })
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("stderr file"));
        if let Some(j) = &join {
            cmd.arg("--join").arg(j);
        }
        let mut child = cmd.spawn().expect("spawn chord-node");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                self.nodes[i].child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("exited with {status}: {text}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("not listening after 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and waits for node `i` to exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }

    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].alive())
            .collect()
    }

    /// Live node indices in ring (id) order.
    pub fn ring_order(&self) -> Vec<usize> {
        let mut v = self.live();
        v.sort_by_key(|i| self.nodes[*i].id());
        v
    }

    pub fn conn(&self, i: usize) -> redis::Connection {
        let c = redis::Client::open(format!("redis://127.0.0.1:{}/", self.nodes[i].port)).unwrap();
        c.get_connection_with_timeout(Duration::from_secs(5))
            .unwrap()
    }

    /// Whether every live node's successor and predecessor are the correct ones.
    pub fn ring_correct(&self) -> bool {
        let order = self.ring_order();
        let n = order.len();
        for (k, &i) in order.iter().enumerate() {
            let want_succ = self.nodes[order[(k + 1) % n]].addr();
            let want_pred = self.nodes[order[(k + n - 1) % n]].addr();
            let Ok(mut c) = try_conn(self.nodes[i].port) else {
                return false;
            };
            let succs: Vec<Vec<String>> = match redis::cmd("CHORD.SUCCESSORS").query(&mut c) {
                Ok(v) => v,
                Err(_) => return false,
            };
            let pred: Option<Vec<String>> = match redis::cmd("CHORD.PREDECESSOR").query(&mut c) {
                Ok(v) => v,
                Err(_) => return false,
            };
            if n == 1 {
                if !succs.is_empty() {
                    return false;
                }
                continue;
            }
            if succs.first().map(|s| &s[1]) != Some(&want_succ) {
                return false;
            }
            if pred.as_ref().map(|p| &p[1]) != Some(&want_pred) {
                return false;
            }
            // The whole successor list must be the next live nodes.
            for (j, s) in succs.iter().enumerate() {
                if j + 1 >= n || s[1] != self.nodes[order[(k + 1 + j) % n]].addr() {
                    return false;
                }
            }
            if succs.len() < (n - 1).min(self.successors) {
                return false;
            }
        }
        true
    }

    /// Waits for a correct ring; returns how long it took.
    pub fn wait_ring(&self, limit: Duration) -> Duration {
        let t = Instant::now();
        wait_until(limit, "ring to be correct", || self.ring_correct());
        t.elapsed()
    }

    /// Which live nodes store each key (live records), by key name.
    pub fn holders(&self, owned_only: bool) -> BTreeMap<String, BTreeSet<usize>> {
        let mut out: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
        for i in self.live() {
            let mut c = self.conn(i);
            let mut cmd = redis::cmd("CHORD.KEYS");
            if owned_only {
                cmd.arg("OWNED");
            }
            let keys: Vec<String> = cmd.query(&mut c).unwrap();
            for k in keys {
                out.entry(k).or_default().insert(i);
            }
        }
        out
    }

    /// Whether every key in `keys` is held by exactly `copies` live nodes and
    /// owned by exactly one, and no other key is stored.
    pub fn copies_are(&self, keys: &BTreeMap<String, String>, copies: usize) -> Result<(), String> {
        let h = self.holders(false);
        let o = self.holders(true);
        for k in keys.keys() {
            let n = h.get(k).map_or(0, |s| s.len());
            if n != copies {
                return Err(format!("{k} has {n} copies, want {copies}"));
            }
            let owners = o.get(k).map_or(0, |s| s.len());
            if owners != 1 {
                return Err(format!("{k} has {owners} owners"));
            }
        }
        if h.len() != keys.len() {
            return Err(format!("{} keys stored, want {}", h.len(), keys.len()));
        }
        Ok(())
    }

    /// Writes `n` keys, each through a random live node, pipelined per node.
    pub fn write_keys(&self, prefix: &str, n: usize, seed: u64) -> BTreeMap<String, String> {
        let live = self.live();
        let mut rng = Rng(seed);
        let mut per_node: BTreeMap<usize, Vec<(String, String)>> = BTreeMap::new();
        let mut all = BTreeMap::new();
        for k in 0..n {
            let key = format!("{prefix}:{k}");
            let val = format!("value-{k}-{}", rng.next() % 1_000_000);
            per_node
                .entry(live[rng.below(live.len())])
                .or_default()
                .push((key.clone(), val.clone()));
            all.insert(key, val);
        }
        for (i, kvs) in per_node {
            let mut c = self.conn(i);
            let mut p = redis::pipe();
            for (k, v) in &kvs {
                p.cmd("SET").arg(k).arg(v);
            }
            let r: Vec<String> = p.query(&mut c).unwrap();
            assert!(r.iter().all(|x| x == "OK"), "SET through node {i}");
        }
        all
    }

    /// Reads every key through a random live node (pipelined per node) and
    /// checks the values.
    pub fn check_keys(&self, keys: &BTreeMap<String, String>, seed: u64) {
        let live = self.live();
        let mut rng = Rng(seed);
        let mut per_node: BTreeMap<usize, Vec<(&String, &String)>> = BTreeMap::new();
        for (k, v) in keys {
            per_node
                .entry(live[rng.below(live.len())])
                .or_default()
                .push((k, v));
        }
        for (i, kvs) in per_node {
            let mut c = self.conn(i);
            let mut p = redis::pipe();
            for (k, _) in &kvs {
                p.cmd("GET").arg(*k);
            }
            let r: Vec<Option<String>> = p.query(&mut c).unwrap();
            for ((k, v), got) in kvs.iter().zip(r) {
                assert_eq!(
                    got.as_deref(),
                    Some(v.as_str()),
                    "key {k} read through node {i}"
                );
            }
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

pub fn try_conn(port: u16) -> redis::RedisResult<redis::Connection> {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))?
        .get_connection_with_timeout(Duration::from_secs(2))
}

pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    loop {
        if f() {
            return;
        }
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A field of `CHORD.INFO`.
pub fn info_field(c: &mut redis::Connection, field: &str) -> String {
    let v: Vec<Value> = redis::cmd("CHORD.INFO").query(c).unwrap();
    for pair in v.chunks(2) {
        if let Value::BulkString(k) = &pair[0]
            && k == field.as_bytes()
        {
            return match &pair[1] {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::Int(i) => i.to_string(),
                Value::Nil => String::new(),
                other => format!("{other:?}"),
            };
        }
    }
    panic!("no field {field}")
}

/// A small deterministic generator (xorshift*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
