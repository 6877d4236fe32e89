//! Peers prove they hold the cluster secret before anything they send is
//! read (`--cluster-secret-file`, `server_kit::peer_auth`): a forged peer
//! that knows the magic, and a replica of another cluster, are refused,
//! logged, and change nothing; the cluster's own replicas still sync.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use bayou_core::{Item, ServerId, WriteId};
use bayou_node::wire::{self, MAGIC, Msg};
use common::Cluster;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// Sends `bytes` on a fresh connection and returns all the replica sent
/// back before it closed the connection.
fn exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The replica may close before reading everything: ignore a reset.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn write_secret(path: &Path, secret: &str) {
    std::fs::write(path, secret).unwrap();
}

fn snapshot(c: &Cluster) -> (Vec<String>, Vec<String>) {
    let p = c.r("P");
    (p.log_lines(), p.vv())
}

#[test]
fn forged_peers_and_other_clusters_are_refused_and_change_nothing() {
    let secrets = tempfile::tempdir().unwrap();
    let ours = secrets.path().join("ours.secret");
    let theirs = secrets.path().join("theirs.secret");
    write_secret(&ours, "0f1e2d3c4b5a69788796a5b4c3d2e1f0\n");
    write_secret(&theirs, "another cluster entirely, 32 b\n");
    let ours_arg = ours.display().to_string();
    let mut c = Cluster::start(
        &["P", "A"],
        &[
            "--sync-interval-ms",
            "0",
            "--logical-clock",
            "--cluster-secret-file",
            &ours_arg,
        ],
    );
    c.r("P").ok(&["SET", "k", "v"]);
    let before = snapshot(&c);

    // A forged peer: the right magic, no credentials, then a Hello, a push
    // and a commit for a write nobody made.
    let hello = Msg::Hello {
        from: ServerId::new("A").unwrap(),
        to: ServerId::new("P").unwrap(),
    };
    let bogus = Item::Commit {
        id: WriteId::new(99, ServerId::new("A").unwrap()),
        csn: 2,
    };
    let mut forged = MAGIC.to_vec();
    forged.extend_from_slice(&server_kit::peer_auth::open_hello_frame());
    forged.extend(frame(&wire::encode(&hello)));
    forged.extend(frame(&wire::encode(&Msg::PushOffer)));
    forged.extend(frame(&wire::encode(&Msg::Chunk {
        chunk: bayou_core::Chunk::Items(vec![bogus]),
    })));
    let answer = exchange(c.r("P").port, &forged);
    assert!(
        contains(
            &answer,
            "peer sent no credentials; this node requires the cluster secret"
        ),
        "{answer:?}"
    );
    // No Welcome: nothing past the refusal was read.
    assert!(!contains(&answer, "Welcome"));

    // A forged peer that skips the exchange and starts with a Hello.
    let mut direct = MAGIC.to_vec();
    direct.extend(frame(&wire::encode(&hello)));
    let answer = exchange(c.r("P").port, &direct);
    assert!(
        contains(&answer, "malformed authentication frame"),
        "{answer:?}"
    );
    assert_eq!(snapshot(&c), before, "a forged peer changed P");
    let log = c.r("P").log_text();
    assert!(
        log.contains("peer refused: peer sent no credentials"),
        "refusal not logged:\n{log}"
    );

    // A replica of another cluster (same ids, another secret) cannot push
    // its write to P nor pull from it.
    c.r("A").ok(&["SET", "from-a", "1"]);
    assert!(c.r_mut("A").terminate().success());
    let theirs_arg = theirs.display().to_string();
    let args = c.r("A").args.clone();
    let swapped: Vec<String> = args
        .iter()
        .map(|a| {
            if *a == ours_arg {
                theirs_arg.clone()
            } else {
                a.clone()
            }
        })
        .collect();
    c.r_mut("A").args = swapped;
    c.r_mut("A").start();
    let err = c.r("A").cmd(&["BAYOU.SYNC", "P"]).unwrap_err().to_string();
    assert!(
        err.contains("does not match the cluster secret"),
        "unexpected error: {err}"
    );
    assert_eq!(snapshot(&c), before, "another cluster's replica changed P");
    assert_eq!(c.r("A").get("k"), None, "A pulled from another cluster");

    // With the cluster's secret again, the same replica syncs both ways.
    assert!(c.r_mut("A").terminate().success());
    c.r_mut("A").args = args;
    c.r_mut("A").start();
    c.r("A").ok(&["BAYOU.SYNC", "P"]);
    assert_eq!(c.r("A").get("k").as_deref(), Some("v"));
    assert_eq!(c.r("P").get("from-a").as_deref(), Some("1"));
}

#[test]
fn a_peer_without_a_secret_cannot_reach_one_with_a_secret() {
    let secrets = tempfile::tempdir().unwrap();
    let ours = secrets.path().join("ours.secret");
    write_secret(&ours, "0f1e2d3c4b5a69788796a5b4c3d2e1f0");
    // P requires the secret; A was started without one.
    let c = Cluster::start(&["P", "A"], &["--sync-interval-ms", "0"]);
    let mut c = c;
    assert!(c.r_mut("P").terminate().success());
    let mut p_args = c.r("P").args.clone();
    p_args.extend(["--cluster-secret-file".into(), ours.display().to_string()]);
    c.r_mut("P").args = p_args;
    c.r_mut("P").start();
    c.r("A").ok(&["SET", "x", "1"]);
    let err = c.r("A").cmd(&["BAYOU.SYNC", "P"]).unwrap_err().to_string();
    assert!(
        err.contains("peer sent no credentials; this node requires the cluster secret"),
        "unexpected error: {err}"
    );
    assert_eq!(c.r("P").get("x"), None);
}
