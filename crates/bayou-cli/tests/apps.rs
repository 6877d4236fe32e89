//! `bayou app`: the SOSP'95 applications as clients of a real cluster
//! ([T95 §2, §4]): requests submitted at disconnected replicas resolve the
//! same way everywhere once they reconnect.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{BIN, Cluster, eventually};

fn redis_cmd(c: &Cluster, replica: u16, args: &[&str]) -> String {
    let mut con = common::conn(c.base + replica);
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let v: redis::Value = cmd.query(&mut con).unwrap();
    format!("{v:?}")
}

fn app(c: &Cluster, replica: u16, args: &[&str]) -> String {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(BIN)
        .arg("app")
        .arg(args[0])
        .args(["--server", &c.addr(replica)])
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

#[test]
fn meeting_requests_at_disconnected_replicas_resolve_the_same_everywhere() {
    let c = Cluster::start(&["--sync-interval-ms", "100"]);
    // A and B leave the network, like two laptops.
    redis_cmd(&c, 1, &["BAYOU.OFFLINE"]);
    redis_cmd(&c, 2, &["BAYOU.OFFLINE"]);
    let out = app(&c, 1, &["meeting", "staff", "R1", "1", "352/13", "352/14"]);
    assert!(out.contains("accepted as write"), "{out}");
    std::thread::sleep(Duration::from_millis(20));
    app(&c, 2, &["meeting", "budget", "R1", "1", "352/13", "352/15"]);
    // Each sees its own request granted, tentatively.
    let a = app(&c, 1, &["schedule"]);
    assert!(
        a.contains("staff") && a.contains("tentative") && !a.contains("budget"),
        "{a}"
    );
    let b = app(&c, 2, &["schedule"]);
    assert!(b.contains("budget") && !b.contains("staff"), "{b}");
    // Back online: the earlier-stamped request keeps 13:00, the other
    // moves to its alternate, on every replica, and everything commits.
    redis_cmd(&c, 1, &["BAYOU.ONLINE"]);
    redis_cmd(&c, 2, &["BAYOU.ONLINE"]);
    let settled = |s: &str| s.matches("committed").count() == 2 && !s.contains("tentative");
    eventually("all three schedules to commit", || {
        (0..3).all(|r| settled(&app(&c, r, &["schedule"])))
    });
    let schedules: Vec<String> = (0..3).map(|r| app(&c, r, &["schedule"])).collect();
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
    let c = Cluster::start(&["--sync-interval-ms", "100"]);
    app(
        &c,
        1,
        &["bib", "Jones95", "Weakly", "consistent", "replication"],
    );
    app(&c, 2, &["bib", "Jones95", "Disconnected", "operation"]);
    app(
        &c,
        2,
        &["bib", "Jones95a", "Weakly", "consistent", "replication"],
    );
    eventually("the bibliography to commit everywhere", || {
        (0..3).all(|r| {
            let b = app(&c, r, &["bibliography"]);
            b.lines().count() == 2 && !b.contains("tentative")
        })
    });
    let b = app(&c, 0, &["bibliography"]);
    for r in 1..3 {
        assert_eq!(app(&c, r, &["bibliography"]), b);
    }
    // Which paper keeps Jones95 depends on which write reached the primary
    // first; either way the other paper gets another key (Jones95b, or the
    // Jones95a it asked for) and the paper entered twice is one entry.
    assert!(b.contains("Jones95 "), "{b}");
    assert!(b.contains("Jones95b") || b.contains("Jones95a"), "{b}");
    assert_eq!(b.matches("Weakly consistent replication").count(), 1, "{b}");
    assert_eq!(b.matches("Disconnected operation").count(), 1, "{b}");
}
