//! The fault suite for Chord on real processes. Each test records what
//! clients were told and checks every later read against it.

mod common;

use std::time::Duration;

use common::{Ring, Rng, SERIAL, wait_until};

/// With 3 copies, three adjacent nodes are killed at once: the keys whose
/// every copy was on them are gone. A read of such a key must not say the
/// key does not exist (nil, `EXISTS` 0): the new owner never held the range
/// and answers `LOST`. Every other key reads its value (SIGCOMM §5.2: the
/// successor list keeps the rest).
#[test]
fn keys_whose_every_copy_died_answer_lost_not_nil() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut ring = Ring::start(8, 3);
    ring.wait_ring(Duration::from_secs(60));
    let keys = ring.write_keys("k", 2000, 7);
    wait_until(Duration::from_secs(60), "3 copies of every key", || {
        ring.copies_are(&keys, 3).is_ok()
    });
    // A few anti-entropy rounds (--sync-ms 200): each replica hears that
    // its copies are complete.
    std::thread::sleep(Duration::from_secs(1));
    // Who held what, before the kill.
    let holders = ring.holders(false);
    let order = ring.ring_order();
    // Three adjacent nodes, the first of which owns some keys (with random
    // ports a node's arc can be too short to own any of 2,000 keys): those
    // keys had every copy on the three.
    let n = order.len();
    let (victims, gone): (Vec<usize>, Vec<&String>) = (2..2 + n)
        .map(|s| {
            let victims: Vec<usize> = (0..3).map(|j| order[(s + j) % n]).collect();
            let gone = keys
                .keys()
                .filter(|k| holders[*k].iter().all(|h| victims.contains(h)))
                .collect();
            (victims, gone)
        })
        .find(|(_, gone): &(Vec<usize>, Vec<&String>)| !gone.is_empty())
        .expect("some keys lived only on three adjacent nodes");
    for &v in &victims {
        ring.kill(v);
    }
    ring.wait_ring(Duration::from_secs(60));

    let mut rng = Rng(11);
    let live = ring.live();
    let (mut values, mut lost, mut nil, mut wrong) = (0, 0, Vec::new(), Vec::new());
    for (k, v) in &keys {
        let mut c = ring.conn(live[rng.below(live.len())]);
        let got: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(k).query(&mut c);
        match got {
            Ok(Some(g)) if &g == v => values += 1,
            Ok(Some(g)) => wrong.push(format!("{k} = {g}, want {v}")),
            Ok(None) => nil.push(k.clone()),
            Err(e) if e.to_string().contains("LOST") => {
                assert!(
                    gone.contains(&k),
                    "{k} answered LOST but has a live copy: {e}"
                );
                lost += 1;
            }
            Err(e) => panic!("GET {k}: {e}"),
        }
    }
    eprintln!(
        "3 adjacent of 8 killed, 3 copies: {} keys, {} gone with every copy, {values} read their value, {lost} answered LOST, {} nil, {} wrong",
        keys.len(),
        gone.len(),
        nil.len(),
        wrong.len()
    );
    assert!(wrong.is_empty(), "wrong values: {wrong:?}");
    assert!(
        nil.is_empty(),
        "lost keys read as nil: {:?}",
        &nil[..nil.len().min(10)]
    );
    assert_eq!(lost, gone.len(), "every key with no copy left answers LOST");
    assert_eq!(values, keys.len() - gone.len());

    // EXISTS says so too, and a new write makes the key readable again.
    let mut c = ring.conn(live[0]);
    let e: redis::RedisResult<i64> = redis::cmd("EXISTS").arg(gone[0]).query(&mut c);
    assert!(e.is_err_and(|e| e.to_string().contains("LOST")));
    let _: () = redis::cmd("SET")
        .arg(gone[0])
        .arg("again")
        .query(&mut c)
        .unwrap();
    let g: Option<String> = redis::cmd("GET").arg(gone[0]).query(&mut c).unwrap();
    assert_eq!(g.as_deref(), Some("again"));
}

/// Churn under writers: with 3 copies, nodes are killed with SIGKILL and
/// restarted (at most one down at a time) and new nodes join, while clients
/// write their own keys through random live nodes. Once the ring heals,
/// every key reads the last acknowledged write or a later one, and every
/// value read is one a client wrote under that key.
#[test]
fn churn_under_writers_loses_no_acknowledged_write() {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut ring = Ring::start(6, 3);
    ring.wait_ring(Duration::from_secs(60));
    let ports: Arc<Mutex<Vec<u16>>> =
        Arc::new(Mutex::new(ring.nodes.iter().map(|n| n.port).collect()));
    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3u64 {
        let (ports, acked, stop) = (ports.clone(), acked.clone(), stop.clone());
        writers.push(std::thread::spawn(move || {
            let mut rng = Rng(w + 100);
            let mut seq = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let port = {
                    let p = ports.lock().unwrap();
                    p[rng.below(p.len())]
                };
                let Ok(mut c) = common::try_conn(port) else {
                    continue;
                };
                let _ = c.set_read_timeout(Some(Duration::from_secs(25)));
                for _ in 0..20 {
                    let key = format!("w{w}-{}", seq % 100);
                    let r: redis::RedisResult<()> = redis::cmd("SET")
                        .arg(&key)
                        .arg(format!("w{w}:{seq}"))
                        .query(&mut c);
                    seq += 1;
                    if r.is_err() {
                        break;
                    }
                    acked.lock().unwrap().insert(key, seq - 1);
                }
            }
        }));
    }
    let mut rng = Rng(5);
    let mut trials = 0;
    for round in 0..4 {
        std::thread::sleep(Duration::from_millis(800));
        let live = ring.live();
        let victim = live[rng.below(live.len())];
        ring.kill(victim);
        trials += 1;
        ring.wait_ring(Duration::from_secs(60));
        ring.restart(victim);
        if round % 2 == 1 {
            let i = ring.add_node();
            ports.lock().unwrap().push(ring.nodes[i].port);
        }
        ring.wait_ring(Duration::from_secs(60));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 100, "too few keys written: {}", acked.len());
    // Anti-entropy settles the copies; then every key, through every node.
    std::thread::sleep(Duration::from_secs(2));
    let (mut lost, mut corrupted) = (Vec::new(), Vec::new());
    for i in ring.live() {
        let mut c = ring.conn(i);
        for (k, &seq) in &acked {
            let got: Option<String> = redis::cmd("GET").arg(k).query(&mut c).unwrap();
            let parsed = got.as_deref().and_then(|v| {
                let (w, s) = v.split_once(':')?;
                let s: u64 = s.parse().ok()?;
                (k == &format!("{w}-{}", s % 100)).then_some(s)
            });
            match (got, parsed) {
                (None, _) => lost.push(format!("{k} missing at node {i}, acked {seq}")),
                (Some(v), None) => corrupted.push(format!("{k} = {v:?} at node {i}")),
                (Some(_), Some(s)) if s < seq => {
                    lost.push(format!("{k} = {s} at node {i}, acked {seq}"))
                }
                _ => {}
            }
        }
    }
    eprintln!(
        "chord churn: {trials} kills and restarts, 2 joins, {} keys acknowledged, {} lost, {} corrupted values served",
        acked.len(),
        lost.len(),
        corrupted.len()
    );
    assert!(lost.is_empty(), "lost: {:?}", &lost[..lost.len().min(10)]);
    assert!(corrupted.is_empty(), "corrupted: {corrupted:?}");
}

/// One byte of a stored value changed while a node was stopped: the node
/// starts, does not load the damaged record (its checksum fails), and the
/// key's other copies bring it back; no read returns the damaged value.
#[test]
fn a_changed_byte_in_a_stopped_nodes_file_is_never_served() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut ring = Ring::start(4, 3);
    ring.wait_ring(Duration::from_secs(60));
    let keys = ring.write_keys("c", 300, 3);
    wait_until(Duration::from_secs(60), "3 copies of every key", || {
        ring.copies_are(&keys, 3).is_ok()
    });
    let victim = ring.live()[1];
    ring.stop(victim);
    let file = ring.nodes[victim].dir.join("records.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    let mut damaged = 0;
    for (i, w) in bytes.clone().windows(6).enumerate() {
        if w == b"value-" {
            bytes[i + 6] ^= 0x01; // a digit becomes another character
            damaged += 1;
        }
    }
    assert!(damaged > 10, "values found in the file: {damaged}");
    std::fs::write(&file, &bytes).unwrap();
    // The node either starts and leaves the damaged records out (their
    // checksums fail), or, when redb must repair the file first (a node
    // stopped without closing it), refuses to start naming the damage; the
    // operator's remedy is then to start it with an empty directory.
    let outcome = match ring.try_restart(victim) {
        Ok(()) => "started without the damaged records".to_string(),
        Err(e) => {
            assert!(e.contains("corrupt"), "the refusal names the damage: {e}");
            std::fs::remove_dir_all(&ring.nodes[victim].dir).unwrap();
            ring.restart(victim);
            format!("refused ({}), wiped and restarted", e.trim())
        }
    };
    ring.wait_ring(Duration::from_secs(60));
    // Every read, through every node, the victim included: never a damaged
    // value; after anti-entropy, every key is whole again.
    wait_until(Duration::from_secs(30), "3 copies again", || {
        ring.copies_are(&keys, 3).is_ok()
    });
    for i in ring.live() {
        let mut c = ring.conn(i);
        for (k, v) in &keys {
            let got: Option<String> = redis::cmd("GET").arg(k).query(&mut c).unwrap();
            assert_eq!(got.as_deref(), Some(v.as_str()), "{k} through node {i}");
        }
    }
    eprintln!(
        "chord corruption: {damaged} values changed in a stopped node's file; the node {outcome}; 0 damaged values served, {} keys whole after anti-entropy",
        keys.len()
    );
}
