//! `bayou app`: the SOSP'95 applications as clients of a real cluster
//! ([T95 §2, §4]): requests submitted at disconnected replicas resolve the
//! same way everywhere once they reconnect.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bayou");

/// A base port with `n` consecutive free ports after it.
fn free_base(n: u16) -> u16 {
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

struct Cluster {
    child: Child,
    base: u16,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
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
            .args(["--sync-interval-ms", "100", "--data-dir"])
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
            _dir: dir,
        }
    }

    fn addr(&self, replica: u16) -> String {
        format!("127.0.0.1:{}", self.base + replica)
    }

    fn redis(&self, replica: u16, args: &[&str]) -> String {
        let c = redis::Client::open(format!("redis://{}/", self.addr(replica))).unwrap();
        let mut con = c
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let v: redis::Value = cmd.query(&mut con).unwrap();
        format!("{v:?}")
    }

    fn app(&self, replica: u16, args: &[&str]) -> String {
        let Output {
            status,
            stdout,
            stderr,
        } = Command::new(BIN)
            .arg("app")
            .arg(args[0])
            .args(["--server", &self.addr(replica)])
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            status.success(),
            "bayou app {args:?}: {}",
            String::from_utf8_lossy(&stderr)
        );
        String::from_utf8(stdout).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn meeting_requests_at_disconnected_replicas_resolve_the_same_everywhere() {
    let c = Cluster::start();
    // A and B leave the network, like two laptops.
    c.redis(1, &["BAYOU.OFFLINE"]);
    c.redis(2, &["BAYOU.OFFLINE"]);
    let out = c.app(1, &["meeting", "staff", "R1", "1", "352/13", "352/14"]);
    assert!(out.contains("accepted as write"), "{out}");
    std::thread::sleep(Duration::from_millis(20));
    c.app(2, &["meeting", "budget", "R1", "1", "352/13", "352/15"]);
    // Each sees its own request granted, tentatively.
    let a = c.app(1, &["schedule"]);
    assert!(
        a.contains("staff") && a.contains("tentative") && !a.contains("budget"),
        "{a}"
    );
    let b = c.app(2, &["schedule"]);
    assert!(b.contains("budget") && !b.contains("staff"), "{b}");
    // Back online: the earlier-stamped request keeps 13:00, the other
    // moves to its alternate, on every replica, and everything commits.
    c.redis(1, &["BAYOU.ONLINE"]);
    c.redis(2, &["BAYOU.ONLINE"]);
    let settled = |s: &str| s.matches("committed").count() == 2 && !s.contains("tentative");
    eventually("all three schedules to commit", || {
        (0..3).all(|r| settled(&c.app(r, &["schedule"])))
    });
    let schedules: Vec<String> = (0..3).map(|r| c.app(r, &["schedule"])).collect();
    assert_eq!(schedules[0], schedules[1]);
    assert_eq!(schedules[1], schedules[2]);
    let staff_first = schedules[0].contains("staff            R1         352    13");
    let budget_first = schedules[0].contains("budget           R1         352    13");
    assert!(staff_first ^ budget_first, "{}", schedules[0]);
    if staff_first {
        assert!(
            schedules[0].contains("budget           R1         352    15"),
            "{}",
            schedules[0]
        );
    } else {
        assert!(
            schedules[0].contains("staff            R1         352    14"),
            "{}",
            schedules[0]
        );
    }
}

#[test]
fn bibliography_entries_get_suffixes_on_a_real_cluster() {
    let c = Cluster::start();
    c.app(
        1,
        &["bib", "Jones95", "Weakly", "consistent", "replication"],
    );
    c.app(2, &["bib", "Jones95", "Disconnected", "operation"]);
    c.app(
        2,
        &["bib", "Jones95a", "Weakly", "consistent", "replication"],
    );
    eventually("the bibliography to commit everywhere", || {
        (0..3).all(|r| {
            let b = c.app(r, &["bibliography"]);
            b.lines().count() == 2 && !b.contains("tentative")
        })
    });
    let b = c.app(0, &["bibliography"]);
    for r in 1..3 {
        assert_eq!(c.app(r, &["bibliography"]), b);
    }
    // Which paper keeps Jones95 depends on which write reached the primary
    // first; either way the other paper gets another key (Jones95b, or the
    // Jones95a it asked for) and the paper entered twice is one entry.
    assert!(b.contains("Jones95 "), "{b}");
    assert!(b.contains("Jones95b") || b.contains("Jones95a"), "{b}");
    assert_eq!(b.matches("Weakly consistent replication").count(), 1, "{b}");
    assert_eq!(b.matches("Disconnected operation").count(), 1, "{b}");
}
