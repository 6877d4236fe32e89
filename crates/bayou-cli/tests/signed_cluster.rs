//! `bayou cluster --sign-writes` and `bayou keys` (docs/signed-writes.md):
//! a key per replica and one keyring under the data directory, writes
//! signed, verified and replicated as usual, keys kept across restarts.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, Cluster, conn};

fn keyring(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("keys/keyring")).unwrap()
}

#[test]
fn a_signing_cluster_makes_its_keys_and_keyring_and_converges() {
    let cluster = Cluster::start(&[
        "--sync-interval-ms",
        "100",
        "--logical-clock",
        "--sign-writes",
    ]);
    let dir = cluster.dir.path();
    let ring = keyring(dir);
    let lines: Vec<&str> = ring.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 3, "{ring}");
    for (line, id) in lines.iter().zip(["P", "A", "B"]) {
        assert!(line.starts_with(&format!("{id} ")), "{ring}");
        // `bayou keys` on the replica's key prints its keyring line.
        let out = Command::new(BIN)
            .args(["keys", "--signing-key"])
            .arg(dir.join(format!("keys/{id}.pem")))
            .args(["--id", id])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("{line}\n"));
    }

    let (mut p, mut a) = (conn(cluster.base), conn(cluster.base + 1));
    let _: () = redis::cmd("SET").arg("x").arg("1").query(&mut a).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log: Vec<String> = redis::cmd("BAYOU.LOG").query(&mut p).unwrap();
        // P's founding write (stamp 1), then A's write, whose stamp is 1
        // or 2 as A had heard of the founding write or not.
        if log.len() == 2
            && log[0].starts_with("1:1:P CREATE(P,")
            && (log[1] == "2:1:A W(x,1)" || log[1] == "2:2:A W(x,1)")
        {
            break;
        }
        assert!(Instant::now() < deadline, "not committed at P: {log:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(cluster);
}

#[test]
fn a_restarted_signing_cluster_keeps_its_keys() {
    let mut cluster = Cluster::start(&["--sync-interval-ms", "0", "--sign-writes"]);
    let first = keyring(cluster.dir.path());
    let key = std::fs::read(cluster.dir.path().join("keys/A.pem")).unwrap();
    cluster.child.kill().unwrap();
    cluster.child.wait().unwrap();
    // The same data directory again, in a second process.
    let base = common::free_base(3);
    let mut again = Command::new(BIN)
        .args(["cluster", "--replicas", "3", "--sign-writes"])
        .args(["--base-port", &base.to_string(), "--sync-interval-ms", "0"])
        .arg("--data-dir")
        .arg(cluster.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(again.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("stop with Ctrl-C") {
        assert!(out.read_line(&mut banner).unwrap() > 0, "{banner}");
    }
    assert_eq!(keyring(cluster.dir.path()), first);
    assert_eq!(
        std::fs::read(cluster.dir.path().join("keys/A.pem")).unwrap(),
        key
    );
    let _: () = redis::cmd("SET")
        .arg("y")
        .arg("2")
        .query(&mut conn(base + 1))
        .unwrap();
    again.kill().unwrap();
    again.wait().unwrap();
}
