//! Shared by the `bayou` binary's integration tests: a `bayou cluster`
//! process on free loopback ports, and Redis connections to it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_bayou");

/// A base port with `n` consecutive free ports after it.
pub fn free_base(n: u16) -> u16 {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = l.local_addr().unwrap().port();
        drop(l);
        if base > 65535 - n {
            continue;
        }
        if (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

/// A Redis connection to a local port.
pub fn conn(port: u16) -> redis::Connection {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let con = c
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    con
}

/// A running `bayou cluster --replicas 3`, killed when dropped.
pub struct Cluster {
    pub child: Child,
    /// P listens here, A on `base + 1`, B on `base + 2`.
    pub base: u16,
    /// What the command printed up to "stop with Ctrl-C".
    pub banner: String,
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts the cluster with `extra` arguments and waits for its banner.
    pub fn start(extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let base = free_base(3);
        let mut child = Command::new(BIN)
            .args([
                "cluster",
                "--replicas",
                "3",
                "--base-port",
                &base.to_string(),
            ])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut banner = String::new();
        while !banner.contains("stop with Ctrl-C") {
            assert!(out.read_line(&mut banner).unwrap() > 0, "{banner}");
        }
        Cluster {
            child,
            base,
            banner,
            dir,
        }
    }

    /// `127.0.0.1:port` of replica `i` (0 = P).
    pub fn addr(&self, i: u16) -> String {
        format!("127.0.0.1:{}", self.base + i)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `ok` until it holds, for at most 20 s.
pub fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
