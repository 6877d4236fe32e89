//! Replicas as real processes: offline/online convergence, kill -9 in the
//! middle of a write load, the primary offline, clean shutdown.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Cluster, is_membership, parse_entry};

/// The log without membership writes (the primary's founding write,
/// which a replica may or may not have received when a test starts).
fn user_log(r: &common::Replica) -> Vec<String> {
    r.log_lines()
        .into_iter()
        .filter(|l| !is_membership(l))
        .collect()
}

const FAST: &[&str] = &["--sync-interval-ms", "100", "--logical-clock"];

#[test]
fn writes_while_offline_converge_after_online() {
    let c = Cluster::start(&["P", "A", "B"], FAST);
    let (p, a, b) = (c.r("P"), c.r("A"), c.r("B"));
    a.ok(&["BAYOU.OFFLINE"]);
    b.ok(&["BAYOU.OFFLINE"]);
    a.ok(&["SET", "x", "1"]);
    a.ok(&["SET", "y", "2"]);
    b.ok(&["SET", "y", "3"]);
    b.ok(&["SET", "z", "4"]);
    b.ok(&["DEL", "z"]);
    p.ok(&["SET", "w", "5"]);
    // Offline replicas keep serving, see only their own writes, and nothing
    // reaches them while periodic anti-entropy would have run several times.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(a.get("x").as_deref(), Some("1"));
    assert_eq!(a.get("w"), None);
    assert_eq!(b.get("x"), None);
    let a_log: Vec<_> = user_log(a)
        .iter()
        .map(|l| {
            let (csn, _, server, op) = parse_entry(l);
            (csn, server, op)
        })
        .collect();
    let tentative = |op: &str| (None, "A".to_string(), op.to_string());
    assert_eq!(a_log, [tentative("W(x,1)"), tentative("W(y,2)")]);
    assert!(
        user_log(b)
            .iter()
            .all(|l| l.starts_with("∞:") && l.contains(":B "))
    );
    // BAYOU.SYNC refuses while offline.
    let err = a.cmd(&["BAYOU.SYNC", "P"]).unwrap_err();
    assert!(err.to_string().contains("offline"), "{err}");

    a.ok(&["BAYOU.ONLINE"]);
    b.ok(&["BAYOU.ONLINE"]);
    let log = c.converged(Duration::from_secs(20));
    // The founding write, then the six.
    assert_eq!(log.len(), 7);
    assert_eq!(log[0], c.founding());
    for (i, line) in log.iter().enumerate() {
        assert_eq!(parse_entry(line).0, Some(i as u64 + 1), "{log:?}");
    }
    // Equal data everywhere, in both views.
    let keys = ["w", "x", "y", "z"];
    let data = |r: &common::Replica| -> Vec<Option<String>> {
        redis::cmd("MGET")
            .arg(&keys[..])
            .query(&mut r.conn())
            .unwrap()
    };
    let d = data(p);
    assert_eq!(d, data(a));
    assert_eq!(d, data(b));
    for r in &c.replicas {
        for k in keys {
            let committed: Option<String> = redis::cmd("BAYOU.GET")
                .arg(k)
                .arg("COMMITTED")
                .query(&mut r.conn())
                .unwrap();
            assert_eq!(committed, r.get(k), "{} {k}", r.id);
        }
        assert_eq!(r.vv(), p.vv());
    }
    assert_eq!(d[0].as_deref(), Some("5"));
    assert_eq!(d[1].as_deref(), Some("1"));
    assert_eq!(d[3], None, "z was deleted after it was set");
}

#[test]
fn kill9_during_a_write_load_loses_no_acknowledged_write() {
    // Small frames: anti-entropy of the load runs through many chunks.
    let mut c = Cluster::start(
        &["P", "A", "B"],
        &[
            "--sync-interval-ms",
            "100",
            "--logical-clock",
            "--items-per-frame",
            "7",
        ],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let port = c.r("A").port;
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (stop, acked) = (stop.clone(), acked.clone());
            std::thread::spawn(move || {
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
                let Ok(mut con) = client.get_connection() else {
                    return;
                };
                let _ = con.set_read_timeout(Some(Duration::from_secs(5)));
                for i in 0.. {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let (k, v) = (format!("k{t}-{i}"), format!("v{i}"));
                    match redis::cmd("SET").arg(&k).arg(&v).query::<String>(&mut con) {
                        Ok(_) => {
                            acked.lock().unwrap().insert(k, v);
                        }
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    // Let the load run, then kill A in the middle of it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while acked.lock().unwrap().len() < 400 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    c.r_mut("A").kill9();
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 400,
        "only {} writes acknowledged",
        acked.len()
    );

    c.r_mut("A").start();
    let a = c.r("A");
    let mut con = a.conn();
    for (k, v) in &acked {
        let got: Option<String> = redis::cmd("GET").arg(k).query(&mut con).unwrap();
        assert_eq!(got.as_ref(), Some(v), "acknowledged {k} lost by A");
    }
    let log = c.converged(Duration::from_secs(30));
    assert!(log.len() >= acked.len());
    for r in &c.replicas {
        let mut con = r.conn();
        for (k, v) in acked.iter().step_by(7) {
            let got: Option<String> = redis::cmd("GET").arg(k).query(&mut con).unwrap();
            assert_eq!(got.as_ref(), Some(v), "{k} at {}", r.id);
        }
    }
}

#[test]
fn with_the_primary_offline_writes_stay_tentative_then_commit_in_causal_order() {
    // Wall-clock stamps here: causality must hold without the logical mode.
    let c = Cluster::start(&["P", "A", "B"], &["--sync-interval-ms", "100"]);
    let (p, a, b) = (c.r("P"), c.r("A"), c.r("B"));
    p.ok(&["BAYOU.OFFLINE"]);
    a.ok(&["SET", "x", "1"]);
    // B sees A's write, then writes something that depends on it.
    a.ok(&["BAYOU.SYNC", "B"]);
    assert_eq!(b.get("x").as_deref(), Some("1"));
    b.ok(&["SET", "y", "after-x"]);
    a.ok(&["BAYOU.SYNC", "B"]);
    std::thread::sleep(Duration::from_millis(500));
    for r in [a, b] {
        let log = user_log(r);
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(log.iter().all(|l| l.starts_with("∞:")), "{log:?}");
        assert_eq!(r.get("y").as_deref(), Some("after-x"));
        let committed: Option<String> = redis::cmd("BAYOU.GET")
            .arg("x")
            .arg("COMMITTED")
            .query(&mut r.conn())
            .unwrap();
        assert_eq!(committed, None);
    }
    assert!(user_log(p).is_empty());

    p.ok(&["BAYOU.ONLINE"]);
    let log = c.converged(Duration::from_secs(20));
    assert!(is_membership(&log[0]), "the founding write: {log:?}");
    let entries: Vec<_> = log[1..].iter().map(|l| parse_entry(l)).collect();
    assert_eq!(entries.len(), 2);
    assert_eq!(
        (entries[0].2.as_str(), entries[0].3.as_str()),
        ("A", "W(x,1)")
    );
    assert_eq!(
        (entries[1].2.as_str(), entries[1].3.as_str()),
        ("B", "W(y,after-x)")
    );
    assert!(
        entries[0].1 < entries[1].1,
        "stamps respect causality: {log:?}"
    );
}

#[test]
fn sigterm_shuts_down_cleanly_and_a_restart_recovers() {
    let mut c = Cluster::start(&["P", "A"], FAST);
    c.r("A").ok(&["SET", "k", "v"]);
    c.r("A").ok(&["MSET", "k2", "v2", "k3", "v3"]);
    c.converged(Duration::from_secs(10));
    let before = c.r("A").log_lines();
    let status = c.r_mut("A").terminate();
    assert!(status.success(), "exit status {status}");
    assert!(c.r("A").log_text().contains("SIGTERM"));
    c.r_mut("A").start();
    assert_eq!(c.r("A").log_lines(), before);
    assert_eq!(c.r("A").get("k3").as_deref(), Some("v3"));
}

#[test]
fn a_sync_with_a_dead_or_stalled_peer_fails_without_stalling_clients() {
    // A "peer" that accepts connections and never answers.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stalled_addr = stalled.local_addr().unwrap();
    let dead = common::free_ports(1)[0];
    let c = Cluster::start(
        &["P", "A"],
        &[
            "--sync-interval-ms",
            "0",
            "--session-timeout-ms",
            "3000",
            "--peer",
            &format!("S={stalled_addr}"),
            "--peer",
            &format!("D=127.0.0.1:{dead}"),
        ],
    );
    let a = c.r("A");
    let port = a.port;
    let syncer = std::thread::spawn(move || {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
        let mut con = client.get_connection().unwrap();
        let t = std::time::Instant::now();
        let r: redis::RedisResult<redis::Value> = redis::cmd("BAYOU.SYNC").arg("S").query(&mut con);
        (r, t.elapsed())
    });
    // While that session hangs, clients are served at once.
    std::thread::sleep(Duration::from_millis(200));
    let t = std::time::Instant::now();
    a.ok(&["SET", "during", "stall"]);
    assert_eq!(a.get("during").as_deref(), Some("stall"));
    a.ok(&["BAYOU.SYNC", "P"]);
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );
    let (r, took) = syncer.join().unwrap();
    let err = r.unwrap_err().to_string();
    assert!(err.contains("timed out"), "{err}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    // A dead peer: refused quickly. An unknown one: an error.
    let err = a.cmd(&["BAYOU.SYNC", "D"]).unwrap_err().to_string();
    assert!(err.contains("peer D"), "{err}");
    let err = a.cmd(&["BAYOU.SYNC", "Q"]).unwrap_err().to_string();
    assert!(err.contains("unknown peer"), "{err}");
    assert_eq!(c.r("P").get("during").as_deref(), Some("stall"));
    drop(stalled);
}

fn booking(who: &str) -> String {
    format!(
        r#"{{"update":[{{"put":["room/1","{who}"]}}],"check":{{"query":"exists(\"room/1\")","expected":"false"}},"merge":"if !exists(\"room/2\") {{ put(\"room/2\", \"{who}\"); }} else {{ put(\"errorlog/{who}\", \"no room\"); }}","label":"BOOK({who})"}}"#
    )
}

fn scan(r: &common::Replica, prefix: &str, view: &str) -> Vec<String> {
    redis::cmd("BAYOU.SCAN")
        .arg(prefix)
        .arg(view)
        .query(&mut r.conn())
        .unwrap()
}

#[test]
fn bayou_writes_with_checks_and_merges_resolve_the_same_everywhere() {
    let c = Cluster::start(&["P", "A", "B"], FAST);
    let (a, b) = (c.r("A"), c.r("B"));
    a.ok(&["BAYOU.OFFLINE"]);
    b.ok(&["BAYOU.OFFLINE"]);
    let id: String = redis::cmd("BAYOU.WRITE")
        .arg(booking("A"))
        .query(&mut a.conn())
        .unwrap();
    // Stamp 1, or 2 if A heard of P's founding write (stamp 1) first.
    assert!(id == "1:A" || id == "2:A", "{id}");
    let _: String = redis::cmd("BAYOU.WRITE")
        .arg(booking("B"))
        .query(&mut b.conn())
        .unwrap();
    // Tentatively, each got the room it asked for.
    assert_eq!(scan(a, "room/", "FULL"), ["room/1", "A"]);
    assert_eq!(scan(b, "room/", "FULL"), ["room/1", "B"]);
    assert!(scan(a, "room/", "COMMITTED").is_empty());
    assert_eq!(user_log(a), [format!("∞:{id} BOOK(A) [applied]")]);
    // Plain operations go through BAYOU.WRITE too; bad JSON is an error.
    let _: String = redis::cmd("BAYOU.WRITE")
        .arg("W(note,hi)")
        .query(&mut a.conn())
        .unwrap();
    let err = a.cmd(&["BAYOU.WRITE", "{\"update\": 5}"]).unwrap_err();
    assert!(err.to_string().contains("bad Bayou write"), "{err}");

    a.ok(&["BAYOU.ONLINE"]);
    b.ok(&["BAYOU.ONLINE"]);
    c.converged(Duration::from_secs(20));
    // One of them got room 1; the other's merge procedure booked room 2.
    let rooms = scan(a, "room/", "COMMITTED");
    assert_eq!(rooms.len(), 4, "{rooms:?}");
    assert_eq!((rooms[0].as_str(), rooms[2].as_str()), ("room/1", "room/2"));
    let mut who = vec![rooms[1].clone(), rooms[3].clone()];
    who.sort();
    assert_eq!(who, ["A", "B"]);
    for r in &c.replicas {
        assert_eq!(scan(r, "room/", "COMMITTED"), rooms, "{}", r.id);
        assert_eq!(scan(r, "room/", "FULL"), rooms, "{}", r.id);
        assert!(scan(r, "errorlog/", "FULL").is_empty());
    }
}
