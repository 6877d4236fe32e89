//! Nodes prove they hold the cluster secret before anything they send is
//! read (`--cluster-secret-file`, `server_kit::peer_auth`): a forged peer
//! that knows the magic cannot store a record, and a node of another
//! cluster cannot join the ring.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use chord_core::data::{DataMsg, Record, Version};
use chord_node::wire::{self, Body, MAGIC};
use common::*;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend(payload);
    f
}

/// Sends `bytes` on a fresh connection; what the node sent back before it
/// closed the connection.
fn exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn stored_names(ring: &Ring) -> Vec<String> {
    let mut all = Vec::new();
    for i in ring.live() {
        let names: Vec<String> = redis::cmd("CHORD.KEYS").query(&mut ring.conn(i)).unwrap();
        all.extend(names);
    }
    all
}

#[test]
fn forged_peers_and_nodes_of_another_cluster_are_refused() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let secrets = tempfile::tempdir().unwrap();
    let ours = secrets.path().join("ours.secret");
    let theirs = secrets.path().join("theirs.secret");
    std::fs::write(&ours, "0f1e2d3c4b5a69788796a5b4c3d2e1f0\n").unwrap();
    std::fs::write(&theirs, "another cluster entirely, 32 b\n").unwrap();
    let ours_arg = ours.display().to_string();
    let mut ring = Ring::start_opts(3, 3, 4, &["--cluster-secret-file", &ours_arg]);
    ring.wait_ring(Duration::from_secs(30));
    let keys = ring.write_keys("a", 30, 3);
    wait_until(Duration::from_secs(20), "3 copies", || {
        ring.copies_are(&keys, 3).is_ok()
    });

    // A forged peer: the magic, no credentials, then a well-formed
    // replication of a record under its right id, with the highest version.
    let x = chord_core::IdSpace::default().hash(b"forged");
    let replicate = wire::encode(&Body::Data {
        from: "127.0.0.1:1".parse().unwrap(),
        msg: DataMsg::Replicate {
            epoch: 0,
            req: 1,
            records: vec![(
                x,
                Record {
                    name: b"forged".to_vec(),
                    value: Some(b"z".to_vec()),
                    version: Version {
                        stamp: u64::MAX,
                        writer: x,
                    },
                    author: None,
                },
            )],
        },
    });
    for i in ring.live() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&server_kit::peer_auth::open_hello_frame());
        bytes.extend(frame(&replicate));
        let answer = String::from_utf8_lossy(&exchange(ring.nodes[i].port, &bytes)).into_owned();
        assert!(
            answer.contains("peer sent no credentials; this node requires the cluster secret"),
            "node {i} answered {answer:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !stored_names(&ring).iter().any(|k| k == "forged"),
        "a forged record was stored"
    );

    // A node of another cluster tries to join through node 0.
    let ours_extra = ring.extra.clone();
    ring.extra = vec!["--cluster-secret-file".into(), theirs.display().to_string()];
    let stranger = ring.add_node();
    ring.extra = ours_extra;
    let stranger_addr = ring.nodes[stranger].addr();
    std::thread::sleep(Duration::from_secs(2));
    for i in [0, 1, 2] {
        let succs: Vec<Vec<String>> = redis::cmd("CHORD.SUCCESSORS")
            .query(&mut ring.conn(i))
            .unwrap();
        assert!(
            succs.iter().all(|s| s[1] != stranger_addr),
            "node {i} took the stranger as a successor: {succs:?}"
        );
        let pred: Option<Vec<String>> = redis::cmd("CHORD.PREDECESSOR")
            .query(&mut ring.conn(i))
            .unwrap();
        assert_ne!(pred.map(|p| p[1].clone()), Some(stranger_addr.clone()));
    }
    ring.stop(stranger);
    assert!(ring.ring_correct());
    ring.check_keys(&keys, 3);
    ring.copies_are(&keys, 3).unwrap();
}

/// SIGCOMM §7 / ToN §VI: a node's id is SHA-1 of its address, so it cannot
/// choose its point of the ring. A node claiming a chosen id (`--id`) is
/// dropped by peers that bind ids to addresses (the default), and `--id`
/// alone is refused at start.
#[test]
fn a_node_cannot_place_itself_at_a_chosen_point_of_the_ring() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ring = Ring::start(3, 3);
    ring.wait_ring(Duration::from_secs(30));
    let keys = ring.write_keys("s", 20, 9);

    // Just before a key's id: the position a Sybil would pick to own it.
    let space = chord_core::IdSpace::default();
    let target = space.hash(b"s:1");
    let chosen = format!(
        "0x{}",
        chord_node::store::hex(space.sub(target, chord_core::Id::from_u64(1)))
    );
    let port = free_ports(1)[0];
    let dir = tempfile::tempdir().unwrap();
    let start = |binding: &[&str]| {
        std::process::Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--id", &chosen, "--join", &ring.nodes[0].addr()])
            .args(binding)
            .args(fast_flags(3))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let refused = start(&[]).wait_with_output().unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("pass --id-binding none"), "{err}");

    let mut sybil = start(&["--id-binding", "none"]);
    std::thread::sleep(Duration::from_secs(3));
    let sybil_addr = format!("127.0.0.1:{port}");
    for i in [0, 1, 2] {
        let succs: Vec<Vec<String>> = redis::cmd("CHORD.SUCCESSORS")
            .query(&mut ring.conn(i))
            .unwrap();
        assert!(
            succs.iter().all(|s| s[1] != sybil_addr),
            "node {i} took the chosen id as a successor: {succs:?}"
        );
    }
    let dropped: u64 = (0..3)
        .map(|i| {
            let info: String = redis::cmd("INFO").query(&mut ring.conn(i)).unwrap();
            info.lines()
                .find_map(|l| l.strip_prefix("peer_messages_unbound_ids:"))
                .expect("INFO has peer_messages_unbound_ids")
                .trim()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert!(dropped > 0, "no message was dropped");
    let _ = sybil.kill();
    let _ = sybil.wait();
    assert!(ring.ring_correct());
    ring.check_keys(&keys, 9);
}

/// Records name their writer: the user a client authenticated as on the
/// node that coordinated the write, carried to every copy; an open node
/// names nobody.
#[test]
fn records_name_the_user_who_wrote_them() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.acl");
    // alice's password is "alice-secret" (SHA-256 below); the default
    // user may do everything without a password, as the harness expects.
    std::fs::write(
        &users,
        "user default on nopass ~* +@all\n\
         user alice on #0c848abb03307b06cf70cd4e29c157dc81af5e94ab3eb1d0c59a120269572376 ~* +@all\n",
    )
    .unwrap();
    let users_arg = users.display().to_string();
    let ring = Ring::start_opts(3, 3, 4, &["--acl-file", &users_arg]);
    ring.wait_ring(Duration::from_secs(30));
    let mut alice = ring.conn(0);
    let _: () = redis::cmd("AUTH")
        .arg("alice")
        .arg("alice-secret")
        .query(&mut alice)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("doc")
        .arg("v1")
        .query(&mut alice)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("anon")
        .arg("v")
        .query(&mut ring.conn(1))
        .unwrap();
    for i in 0..3 {
        let rec: std::collections::HashMap<String, redis::Value> = redis::cmd("CHORD.RECORD")
            .arg("doc")
            .query(&mut ring.conn(i))
            .unwrap();
        assert_eq!(
            rec.get("author"),
            Some(&redis::Value::BulkString(b"alice".to_vec())),
            "through node {i}: {rec:?}"
        );
        assert_eq!(
            rec.get("value"),
            Some(&redis::Value::BulkString(b"v1".to_vec()))
        );
        let anon: std::collections::HashMap<String, redis::Value> = redis::cmd("CHORD.RECORD")
            .arg("anon")
            .query(&mut ring.conn(i))
            .unwrap();
        assert_eq!(
            anon.get("author"),
            Some(&redis::Value::BulkString(b"default".to_vec()))
        );
    }
    let missing: redis::Value = redis::cmd("CHORD.RECORD")
        .arg("nothing")
        .query(&mut ring.conn(2))
        .unwrap();
    assert_eq!(missing, redis::Value::Nil);
}
