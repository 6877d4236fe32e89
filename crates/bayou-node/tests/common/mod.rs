//! Helpers for the integration tests: real `bayou-node serve` processes on
//! loopback ports, driven with the `redis` crate.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_bayou-node");

/// `n` distinct free loopback ports (bound together, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// One replica process.
pub struct Replica {
    pub id: String,
    pub port: u16,
    pub dir: PathBuf,
    pub args: Vec<String>,
    pub log: PathBuf,
    pub child: Option<Child>,
    /// Environment variables for the process (e.g. libfaketime's).
    pub env: Vec<(String, String)>,
    /// A command the process runs under (e.g. `ip netns exec NS`).
    pub wrap: Vec<String>,
    /// The address clients reach it at.
    pub host: String,
}

impl Replica {
    /// Starts `bayou-node serve` and waits until it answers PING.
    pub fn start(&mut self) {
        if let Err(e) = self.try_start() {
            panic!("replica {} {e}; log:\n{}", self.id, self.log_text());
        }
    }

    /// Starts `bayou-node serve` and waits until it answers PING; if it
    /// exits first (a refusal), what it wrote to its log in this attempt.
    pub fn try_start(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let logged_before = log.metadata().map_or(0, |m| m.len() as usize);
        let mut cmd = match self.wrap.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .arg("serve")
            .args(&self.args)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn bayou-node");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = self.try_conn() {
                match redis::cmd("PING").query::<String>(&mut c) {
                    Ok(_) => return Ok(()),
                    // Up, with a users file and no `default` user.
                    Err(e) if e.code() == Some("NOAUTH") => return Ok(()),
                    Err(_) => {}
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                let text = self.log_text();
                return Err(format!(
                    "exited with {status}: {}",
                    text.get(logged_before..).unwrap_or(&text)
                ));
            }
            assert!(
                Instant::now() < deadline,
                "replica {} did not start; log:\n{}",
                self.id,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn try_conn(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(format!("redis://{}:{}/", self.host, self.port))?;
        let c = client.get_connection_with_timeout(Duration::from_secs(2))?;
        c.set_read_timeout(Some(Duration::from_secs(30)))?;
        c.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(c)
    }

    /// A new client connection.
    pub fn conn(&self) -> redis::Connection {
        self.try_conn()
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.id))
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let ok = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_lines(&self) -> Vec<String> {
        redis::cmd("BAYOU.LOG").query(&mut self.conn()).unwrap()
    }

    pub fn vv(&self) -> Vec<String> {
        redis::cmd("BAYOU.VV").query(&mut self.conn()).unwrap()
    }

    pub fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query(&mut self.conn()).unwrap()
    }

    pub fn cmd(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query(&mut self.conn())
    }

    pub fn ok(&self, args: &[&str]) {
        if let Err(e) = self.cmd(args) {
            panic!("{} {args:?}: {e}", self.id);
        }
    }

    /// A field of BAYOU.STATUS.
    pub fn status(&self, field: &str) -> String {
        let v: Vec<redis::Value> = redis::cmd("BAYOU.STATUS").query(&mut self.conn()).unwrap();
        for pair in v.chunks(2) {
            let k: String = redis::from_redis_value(&pair[0]).unwrap();
            if k == field {
                return match &pair[1] {
                    redis::Value::Int(n) => n.to_string(),
                    other => redis::from_redis_value(other).unwrap(),
                };
            }
        }
        panic!("no status field {field}");
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cluster of replicas: the first is P, the primary.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub replicas: Vec<Replica>,
}

impl Cluster {
    /// Starts replicas with these ids (the first is the primary) and extra
    /// `serve` flags.
    pub fn start(ids: &[&str], extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let ports = free_ports(ids.len());
        let mut replicas = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let data = dir.path().join(id);
            let mut args = vec![
                "--id".to_string(),
                id.to_string(),
                "--listen".into(),
                format!("127.0.0.1:{}", ports[i]),
                "--data-dir".into(),
                data.display().to_string(),
                "--primary".into(),
                ids[0].to_string(),
            ];
            for (j, other) in ids.iter().enumerate() {
                if j != i {
                    args.push("--peer".into());
                    args.push(format!("{other}=127.0.0.1:{}", ports[j]));
                }
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            replicas.push(Replica {
                id: id.to_string(),
                port: ports[i],
                dir: data,
                args,
                log: dir.path().join(format!("{id}.log")),
                child: None,
                env: Vec::new(),
                wrap: Vec::new(),
                host: "127.0.0.1".into(),
            });
        }
        for r in &mut replicas {
            r.start();
        }
        Cluster { dir, replicas }
    }

    pub fn r(&self, id: &str) -> &Replica {
        self.replicas.iter().find(|r| r.id == id).unwrap()
    }

    pub fn r_mut(&mut self, id: &str) -> &mut Replica {
        self.replicas.iter_mut().find(|r| r.id == id).unwrap()
    }

    /// Waits until every replica has the same log, all of it committed, and
    /// returns it.
    pub fn converged(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let logs: Vec<Vec<String>> = self.replicas.iter().map(|r| r.log_lines()).collect();
            let same = logs.windows(2).all(|w| w[0] == w[1]);
            let committed = logs[0].iter().all(|l| !l.starts_with('∞'));
            if same && committed {
                return logs[0].clone();
            }
            if Instant::now() > deadline {
                let mut msg = String::from("no convergence:\n");
                for (r, l) in self.replicas.iter().zip(&logs) {
                    msg += &format!(
                        "{} ({} entries): {:?}\n",
                        r.id,
                        l.len(),
                        l.iter().take(20).collect::<Vec<_>>()
                    );
                }
                panic!("{msg}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Parses `csn:stamp:server op` into its parts (`None` for `∞`).
pub fn parse_entry(line: &str) -> (Option<u64>, u64, String, String) {
    let (head, op) = line.split_once(' ').unwrap();
    let mut parts = head.split(':');
    let csn = parts.next().unwrap();
    let stamp = parts.next().unwrap().parse().unwrap();
    let server = parts.next().unwrap().to_string();
    let csn = if csn == "∞" {
        None
    } else {
        Some(csn.parse().unwrap())
    };
    (csn, stamp, server, op.to_string())
}

pub fn dir_bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p.join("bayou.redb")).unwrap()
}

/// The committed database, as `BAYOU.SCAN "" COMMITTED` returns it.
pub fn committed(r: &Replica) -> Vec<String> {
    redis::cmd("BAYOU.SCAN")
        .arg("")
        .arg("COMMITTED")
        .query(&mut r.conn())
        .unwrap()
}

/// Waits until every replica has the same CSN and version vector, nothing
/// tentative, and the same committed database.
pub fn settled(c: &Cluster, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let states: Vec<(String, String, String)> = c
            .replicas
            .iter()
            .map(|r| (r.status("csn"), r.status("vv"), r.status("tentative")))
            .collect();
        let same = states.windows(2).all(|w| w[0] == w[1]) && states[0].2 == "0";
        if same {
            let data: Vec<Vec<String>> = c.replicas.iter().map(committed).collect();
            if data.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "not settled: {states:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Cluster {
    /// The founding write of the first replica, the primary, as `BAYOU.LOG`
    /// shows it with `--logical-clock`: CSN 1 of every cluster
    /// ([P97 §4.3]; docs/membership.md).
    pub fn founding(&self) -> String {
        let p = &self.replicas[0];
        format!("1:1:{0} CREATE({0},127.0.0.1:{1})", p.id, p.port)
    }
}

/// Whether a `BAYOU.LOG` line is a membership write (creation, retirement,
/// handoff, address).
pub fn is_membership(line: &str) -> bool {
    let op = line.split_once(' ').map_or("", |(_, op)| op);
    ["CREATE(", "RETIRE(", "HANDOFF(", "ADDRESS("]
        .iter()
        .any(|m| op.starts_with(m))
}
