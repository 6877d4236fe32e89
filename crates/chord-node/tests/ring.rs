//! Real `chord-node` processes on loopback, driven with the `redis` client.

mod common;

use std::time::{Duration, Instant};

use chord_core::IdSpace;
use chord_core::interval::in_open_closed;
use common::*;

fn hex(id: chord_core::Id) -> String {
    id.to_be_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Eight nodes, 1000 keys written through random nodes and read through
/// others; lookups agree with consistent hashing, iteratively and recursively;
/// every key has exactly r = 3 copies. Then two adjacent nodes are killed with
/// SIGKILL: no key is lost and replication returns to 3 copies.
#[test]
fn eight_nodes_hold_1000_keys_and_survive_the_kill_of_two_adjacent_nodes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    // r = 3 in both senses: successor lists of 3 (two adjacent failures
    // leave every node one live successor) and 3 copies of every key.
    let mut ring = Ring::start_with(8, 3, 3);
    let took = ring.wait_ring(Duration::from_secs(30));
    eprintln!("8-node ring correct after {took:?}");
    let keys = ring.write_keys("k", 1000, 1);
    ring.check_keys(&keys, 2);

    // Lookups from every node, both modes, end at successor(key).
    let space = IdSpace::default();
    let mut ids: Vec<_> = ring.live().iter().map(|i| ring.nodes[*i].id()).collect();
    ids.sort();
    for i in ring.live() {
        let mut c = ring.conn(i);
        for name in ["alpha", "beta", "k:7", "zeta"] {
            let kid = space.hash(name.as_bytes());
            let want = *ids.iter().find(|x| **x >= kid).unwrap_or(&ids[0]);
            for mode in ["ITERATIVE", "RECURSIVE"] {
                let (owner, addr, path): (String, String, Vec<Vec<String>>) =
                    redis::cmd("CHORD.LOOKUP")
                        .arg(name)
                        .arg(mode)
                        .query(&mut c)
                        .unwrap();
                assert_eq!(owner, hex(want), "{mode} lookup of {name} from node {i}");
                assert_eq!(path.first().unwrap()[1], ring.nodes[i].addr());
                assert_eq!(path.last().unwrap()[0], owner);
                assert_eq!(path.last().unwrap()[1], addr);
                assert!(path.len() <= 1 + 8, "{} hops", path.len() - 1);
            }
        }
    }
    wait_until(Duration::from_secs(20), "3 copies of every key", || {
        ring.copies_are(&keys, 3).is_ok()
    });

    // Kill two nodes adjacent on the ring.
    let order = ring.ring_order();
    let (a, b) = (order[3], order[4]);
    ring.kill(a);
    ring.kill(b);
    let t = Instant::now();
    let took = ring.wait_ring(Duration::from_secs(30));
    eprintln!(
        "ring repaired {took:?} after killing two adjacent nodes ({:.1} stabilization periods)",
        took.as_millis() as f64 / STABILIZE_MS as f64
    );
    assert!(
        took < Duration::from_millis(100 * STABILIZE_MS),
        "repair took {took:?}"
    );
    ring.check_keys(&keys, 3);
    let mut last = String::new();
    wait_until(
        Duration::from_secs(30),
        "replication back to 3 copies",
        || match ring.copies_are(&keys, 3) {
            Ok(()) => true,
            Err(e) => {
                last = e;
                false
            }
        },
    );
    eprintln!(
        "3 copies restored {:?} after the kill (last gap: {last})",
        t.elapsed()
    );
    ring.check_keys(&keys, 4);
    eprintln!("test took {:?}", t0.elapsed());
}

/// A node joins and takes over exactly its range `(pred, n]`; a voluntary
/// leave hands its keys to its successor; after each the ring repairs within
/// a bounded number of stabilization periods and every key has 3 copies.
#[test]
fn a_join_takes_over_exactly_its_range_and_a_leave_hands_its_keys_off() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut ring = Ring::start(8, 3);
    ring.wait_ring(Duration::from_secs(30));
    let keys = ring.write_keys("j", 600, 11);
    wait_until(Duration::from_secs(20), "3 copies", || {
        ring.copies_are(&keys, 3).is_ok()
    });

    // Join.
    let new = ring.add_node();
    let took = ring.wait_ring(Duration::from_secs(30));
    eprintln!(
        "join: ring correct after {took:?} ({:.1} stabilization periods)",
        took.as_millis() as f64 / STABILIZE_MS as f64
    );
    assert!(
        took < Duration::from_millis(100 * STABILIZE_MS),
        "join repair took {took:?}"
    );
    let order = ring.ring_order();
    let k = order.iter().position(|i| *i == new).unwrap();
    let pred = ring.nodes[order[(k + order.len() - 1) % order.len()]].id();
    let me = ring.nodes[new].id();
    let space = IdSpace::default();
    let mine: Vec<&String> = keys
        .keys()
        .filter(|name| in_open_closed(&space.hash(name.as_bytes()), &pred, &me))
        .collect();
    wait_until(
        Duration::from_secs(20),
        "the new node to own exactly its range",
        || {
            let mut c = ring.conn(new);
            let mut owned: Vec<String> =
                redis::cmd("CHORD.KEYS").arg("OWNED").query(&mut c).unwrap();
            owned.sort();
            let mut want: Vec<String> = mine.iter().map(|s| s.to_string()).collect();
            want.sort();
            owned == want && info_field(&mut c, "ready") == "1"
        },
    );
    eprintln!("the new node owns {} keys, exactly its range", mine.len());
    ring.check_keys(&keys, 12);
    wait_until(Duration::from_secs(20), "3 copies after the join", || {
        ring.copies_are(&keys, 3).is_ok()
    });

    // Leave (not the node that just joined, not the bootstrap node).
    let leaver = order[(k + 3) % order.len()];
    let mut c = ring.conn(leaver);
    let owned: Vec<String> = redis::cmd("CHORD.KEYS").arg("OWNED").query(&mut c).unwrap();
    let handed: i64 = redis::cmd("CHORD.LEAVE").query(&mut c).unwrap();
    assert_eq!(handed as usize, owned.len(), "every owned key handed off");
    // The process exits by itself after leaving.
    let mut child = ring.nodes[leaver].child.take().unwrap();
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "leaver exit status {status}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the leaving node did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = ring.wait_ring(Duration::from_secs(30));
    eprintln!(
        "leave: ring correct after {took:?} ({:.1} stabilization periods)",
        took.as_millis() as f64 / STABILIZE_MS as f64
    );
    assert!(
        took < Duration::from_millis(100 * STABILIZE_MS),
        "leave repair took {took:?}"
    );
    ring.check_keys(&keys, 13);
    wait_until(Duration::from_secs(20), "3 copies after the leave", || {
        ring.copies_are(&keys, 3).is_ok()
    });
}

/// Keys survive a restart of a node with its data directory (redb), and a
/// deleted key stays deleted.
#[test]
fn deletes_and_counts_route_to_owners_and_data_survives_a_restart() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut ring = Ring::start(4, 2);
    ring.wait_ring(Duration::from_secs(30));
    let mut keys = ring.write_keys("d", 200, 21);
    let mut c = ring.conn(1);
    let n: i64 = redis::cmd("DEL")
        .arg("d:1")
        .arg("d:2")
        .arg("nope")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 2);
    keys.remove("d:1");
    keys.remove("d:2");
    let n: i64 = redis::cmd("EXISTS")
        .arg("d:1")
        .arg("d:3")
        .arg("d:4")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 2);
    let () = redis::cmd("MSET")
        .arg("m1")
        .arg("a")
        .arg("m2")
        .arg("b")
        .arg("m1")
        .arg("c")
        .query(&mut c)
        .unwrap();
    let v: Vec<Option<String>> = redis::cmd("MGET")
        .arg("m1")
        .arg("m2")
        .arg("m3")
        .query(&mut c)
        .unwrap();
    assert_eq!(v, vec![Some("c".into()), Some("b".into()), None]);
    keys.insert("m1".into(), "c".into());
    keys.insert("m2".into(), "b".into());
    // A pipeline runs GET/SET on distinct keys concurrently, but its replies
    // are those of running it in order.
    let r: Vec<redis::Value> = redis::pipe()
        .cmd("SET")
        .arg("p:a")
        .arg("1")
        .cmd("SET")
        .arg("p:b")
        .arg("2")
        .cmd("GET")
        .arg("p:a")
        .cmd("SET")
        .arg("p:a")
        .arg("3")
        .cmd("GET")
        .arg("p:a")
        .cmd("DEL")
        .arg("p:b")
        .cmd("GET")
        .arg("p:b")
        .cmd("GET")
        .arg("p:a")
        .query(&mut c)
        .unwrap();
    let shown: Vec<String> = r
        .iter()
        .map(|v| match v {
            redis::Value::Okay => "OK".to_string(),
            redis::Value::SimpleString(s) => s.clone(),
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::Int(i) => i.to_string(),
            redis::Value::Nil => "nil".to_string(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(shown, ["OK", "OK", "1", "OK", "3", "1", "nil", "3"]);
    keys.insert("p:a".into(), "3".into());
    let got: Option<String> = redis::cmd("GET")
        .arg("d:1")
        .query(&mut ring.conn(3))
        .unwrap();
    assert_eq!(got, None);
    wait_until(Duration::from_secs(20), "2 copies", || {
        ring.copies_are(&keys, 2).is_ok()
    });

    // kill -9 and restart node 2 on the same port and directory.
    let port = ring.nodes[2].port;
    let dir = ring.nodes[2].dir.clone();
    let before: Vec<String> = redis::cmd("CHORD.KEYS").query(&mut ring.conn(2)).unwrap();
    ring.kill(2);
    let child = std::process::Command::new(BIN)
        .arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(&dir)
        .arg("--join")
        .arg(ring.nodes[0].addr())
        .args(fast_flags(2))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    ring.nodes[2].child = Some(child);
    wait_until(Duration::from_secs(10), "restart", || {
        try_conn(port).is_ok()
    });
    // Read straight from the store, before any repair could refill it.
    let mut after: Vec<String> = redis::cmd("CHORD.KEYS")
        .query(&mut try_conn(port).unwrap())
        .unwrap();
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(before, after, "the store came back intact from disk");
    ring.wait_ring(Duration::from_secs(30));
    ring.check_keys(&keys, 22);
    let got: Option<String> = redis::cmd("GET")
        .arg("d:2")
        .query(&mut ring.conn(2))
        .unwrap();
    assert_eq!(got, None, "a deleted key stays deleted");
    // The copies made while the node was down are collected again.
    let mut last = String::new();
    wait_until(
        Duration::from_secs(30),
        "2 copies after the restart",
        || match ring.copies_are(&keys, 2) {
            Ok(()) => true,
            Err(e) => {
                last = e;
                false
            }
        },
    );

    // Another node id cannot take over the directory.
    ring.kill(2);
    let out = std::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:1", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("belongs to node"));
}

/// Virtual nodes (SIGCOMM §6.2): four per process; every key still has
/// exactly 3 copies on 3 distinct processes and one owner, and reads work
/// through every process.
#[test]
fn virtual_nodes_keep_three_copies_on_distinct_processes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ring = Ring::start_opts(4, 3, 8, &["--virtual", "4"]);
    wait_until(Duration::from_secs(30), "every virtual node joined", || {
        ring.live().iter().all(|i| {
            let mut c = ring.conn(*i);
            info_field(&mut c, "joined") == "1" && info_field(&mut c, "ready") == "1"
        })
    });
    let keys = ring.write_keys("v", 400, 31);
    ring.check_keys(&keys, 32);
    let mut last = String::new();
    wait_until(
        Duration::from_secs(30),
        "3 copies on distinct processes",
        || match ring.copies_are(&keys, 3) {
            Ok(()) => true,
            Err(e) => {
                last = e;
                false
            }
        },
    );
    let _ = last;
    ring.check_keys(&keys, 33);
}
