//! Servers that come and go, as real processes ([P97 §4.3]): a cluster
//! that grows by `--join` and shrinks by `BAYOU.RETIRE` while a client
//! writes, the primary handed off under load, and a second server that
//! claims a name already taken.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Replica, free_ports, parse_entry};
use rand::{RngExt, SeedableRng};

const FAST: &[&str] = &["--sync-interval-ms", "50", "--retain-writes", "1000000"];

/// A replica process description (not started).
fn replica(dir: &Path, id: &str, port: u16, args: &[&str]) -> Replica {
    let data = dir.join(id);
    let mut all = vec![
        "--id".to_string(),
        id.into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    all.extend(FAST.iter().map(|s| s.to_string()));
    Replica {
        id: id.into(),
        port,
        dir: data,
        args: all,
        log: dir.join(format!("{id}.log")),
        child: None,
        env: Vec::new(),
        wrap: Vec::new(),
        host: "127.0.0.1".into(),
    }
}

/// P founds a cluster on `ports[0]` and A joins it through P on
/// `ports[1]`: both running, A a member; P's address.
fn founder_and_member(dir: &Path, ports: &[u16]) -> (Replica, Replica, String) {
    let mut p = replica(dir, "P", ports[0], &["--primary", "P"]);
    p.start();
    let sponsor = format!("127.0.0.1:{}", ports[0]);
    let mut a = replica(dir, "A", ports[1], &["--join", &sponsor]);
    a.start();
    wait_until("A is a member", Duration::from_secs(30), || {
        a.status("membership") == "member"
    });
    (p, a, sponsor)
}

/// `BAYOU.MEMBERS` as lines.
fn members(r: &Replica) -> Vec<String> {
    redis::cmd("BAYOU.MEMBERS").query(&mut r.conn()).unwrap()
}

/// Waits until `f` holds, or panics with `what`.
fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the process exits by itself; its status.
fn wait_exit(r: &mut Replica, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = r.child.as_mut().expect("running").try_wait().unwrap() {
            r.child = None;
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not exit; log:\n{}",
            r.id,
            r.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The acknowledged writes of the client thread: key -> value.
type Acked = Arc<Mutex<BTreeMap<String, String>>>;

/// A client that writes unique keys to a random replica of `ports` (shared,
/// changing as servers come and go) until `stop`, recording every write
/// acknowledged. Refusals (a joiner not yet a member, a retired server,
/// a server gone) are not acknowledgements.
fn writer(
    ports: Arc<Mutex<Vec<u16>>>,
    acked: Acked,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64)> {
    std::thread::spawn(move || {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (mut ok, mut refused) = (0u64, 0u64);
        let mut i = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let port = {
                let p = ports.lock().unwrap();
                p[rng.random_range(0..p.len())]
            };
            let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
                continue;
            };
            let Ok(mut c) = client.get_connection_with_timeout(Duration::from_secs(1)) else {
                refused += 1;
                continue;
            };
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            for _ in 0..20 {
                i += 1;
                let (k, v) = (format!("k{i}"), format!("v{i}@{port}"));
                match redis::cmd("SET").arg(&k).arg(&v).query::<String>(&mut c) {
                    Ok(_) => {
                        ok += 1;
                        acked.lock().unwrap().insert(k, v);
                    }
                    Err(_) => {
                        refused += 1;
                        break;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        (ok, refused)
    })
}

/// Waits until `r` is the primary (it has received the handoff's commit).
fn wait_primary(r: &Replica) {
    wait_until(
        &format!("{} becomes primary", r.id),
        Duration::from_secs(30),
        || r.status("role") == "primary",
    );
}

#[test]
fn a_cluster_grows_from_one_to_five_and_shrinks_to_two_under_load_with_two_handoffs() {
    // [P97 §4.3]: creation by a sponsor, retirement, and the primary's
    // duties handed over, while a client keeps writing.
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(5);
    let ids = ["P", "A", "B", "C", "D"];
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let mut rs: BTreeMap<&str, Replica> = BTreeMap::new();
    let mut p = replica(dir.path(), "P", ports[0], &["--primary", "P"]);
    p.start();
    rs.insert("P", p);
    assert_eq!(rs["P"].status("membership"), "member");

    let live: Arc<Mutex<Vec<u16>>> = Arc::new(Mutex::new(vec![ports[0]]));
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let client = writer(live.clone(), acked.clone(), stop.clone());

    // Grow: each joins through a random server already there.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    for (i, id) in ids.iter().enumerate().skip(1) {
        let sponsor = rng.random_range(0..i);
        let mut r = replica(dir.path(), id, ports[i], &["--join", &addr(sponsor)]);
        r.start();
        live.lock().unwrap().push(ports[i]);
        // Until its creation commits it refuses writes, with TRYAGAIN.
        let early = r.cmd(&["SET", "early", "1"]);
        if let Err(e) = &early {
            assert_eq!(e.code(), Some("TRYAGAIN"), "{e}");
            assert!(e.to_string().contains("not yet a member"), "{e}");
        }
        wait_until(
            &format!("{id} is a member"),
            Duration::from_secs(30),
            || r.status("membership") == "member",
        );
        rs.insert(id, r);
    }
    // Every server knows every other from the log, though none was given a
    // --peer.
    wait_until("all know the five members", Duration::from_secs(30), || {
        rs.values().all(|r| r.status("members") == "5")
    });
    let table = members(&rs["A"]);
    assert_eq!(table.len(), 5, "{table:?}");
    assert!(
        table[0].starts_with("A ") && table[4].starts_with("P "),
        "{table:?}"
    );
    assert!(table[4].ends_with(" primary"), "{table:?}");
    assert_eq!(rs["P"].status("peers").split(',').count(), 4);
    std::thread::sleep(Duration::from_millis(300));

    // Hand off P -> A under load, then P retires.
    let w = rs["P"].cmd(&["BAYOU.HANDOFF", "A"]).unwrap();
    assert!(matches!(w, redis::Value::BulkString(_)), "{w:?}");
    assert_eq!(rs["P"].status("role"), "secondary");
    // A primary cannot retire (P no longer is one).
    live.lock().unwrap().retain(|p| *p != ports[0]);
    rs["P"].ok(&["BAYOU.RETIRE"]);
    let refused = rs["P"].cmd(&["SET", "late", "1"]).unwrap_err();
    assert!(refused.to_string().contains("retired"), "{refused}");
    wait_primary(&rs["A"]);
    let status = wait_exit(rs.get_mut("P").unwrap(), Duration::from_secs(30));
    assert!(status.success(), "{status}");
    assert!(rs["P"].log_text().contains("holds the retirement"));
    std::thread::sleep(Duration::from_millis(300));

    // A -> B, A retires; then C retires too: B and D remain.
    let err = rs["A"].cmd(&["BAYOU.RETIRE", "P"]).unwrap_err();
    assert!(err.to_string().contains("not a live member"), "{err}");
    live.lock().unwrap().retain(|p| *p != ports[1]);
    let replies = rs["A"].cmd(&["BAYOU.RETIRE", "B"]).unwrap();
    assert!(format!("{replies:?}").contains("handoff"), "{replies:?}");
    wait_primary(&rs["B"]);
    assert!(wait_exit(rs.get_mut("A").unwrap(), Duration::from_secs(30)).success());
    std::thread::sleep(Duration::from_millis(300));
    live.lock().unwrap().retain(|p| *p != ports[3]);
    rs["C"].ok(&["BAYOU.RETIRE"]);
    assert!(wait_exit(rs.get_mut("C").unwrap(), Duration::from_secs(30)).success());
    std::thread::sleep(Duration::from_millis(300));

    stop.store(true, Ordering::SeqCst);
    let (ok, refused) = client.join().unwrap();
    eprintln!("client: {ok} acknowledged, {refused} refused or failed");
    assert!(ok > 100, "too few writes acknowledged: {ok}");

    // B and D converge on one committed log, CSNs 1..N, no gap, no
    // duplicate, and every acknowledged write in it.
    let (b, d) = (&rs["B"], &rs["D"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let log = loop {
        let (lb, ld) = (b.log_lines(), d.log_lines());
        if lb == ld && lb.iter().all(|l| !l.starts_with('∞')) {
            break lb;
        }
        assert!(
            Instant::now() < deadline,
            "no convergence: B {} D {}",
            lb.len(),
            ld.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut ids_seen = std::collections::BTreeSet::new();
    for (i, line) in log.iter().enumerate() {
        let (csn, stamp, server, _) = parse_entry(line);
        assert_eq!(csn, Some(i as u64 + 1), "gap or duplicate at {line}");
        assert!(ids_seen.insert((stamp, server)), "write twice: {line}");
    }
    let acked = acked.lock().unwrap();
    let mut conn = b.conn();
    for (k, v) in acked.iter() {
        let got: Option<String> = redis::cmd("BAYOU.GET")
            .arg(k)
            .arg("COMMITTED")
            .query(&mut conn)
            .unwrap();
        assert_eq!(
            got.as_deref(),
            Some(v.as_str()),
            "acknowledged write {k} lost"
        );
    }
    assert_eq!(common::committed(b), common::committed(d));
    // The membership: B (primary) and D live, the others retired.
    let table = members(b);
    assert_eq!(table, members(d));
    let live_ones: Vec<&String> = table.iter().filter(|l| l.contains(" live ")).collect();
    assert_eq!(live_ones.len(), 2, "{table:?}");
    assert!(
        table
            .iter()
            .any(|l| l.starts_with("B ") && l.ends_with(" primary"))
    );
    for gone in ["A", "C", "P"] {
        assert!(
            table
                .iter()
                .any(|l| l.starts_with(&format!("{gone} ")) && l.contains(" retired ")),
            "{gone}: {table:?}"
        );
    }
    // Retired servers' entries are gone from the version vectors.
    assert_eq!(b.status("vv"), d.status("vv"));
    assert!(!b.status("vv").contains("P:"), "{}", b.status("vv"));
}

#[test]
fn a_second_server_claiming_a_taken_id_is_refused_and_writes_nothing() {
    // [P97 §4.3]: a name is bound to its creation write; a second creation
    // for it is refused where it is asked for.
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(3);
    let (p, mut a, sponsor) = founder_and_member(dir.path(), &ports);
    a.ok(&["SET", "x", "1"]);
    let before = p.log_lines();

    let dup_dir = dir.path().join("second");
    std::fs::create_dir_all(&dup_dir).unwrap();
    let mut dup = replica(&dup_dir, "A", ports[2], &["--join", &sponsor]);
    let err = dup.try_start().unwrap_err();
    assert!(err.contains("exited with exit status: 1"), "{err}");
    assert!(err.contains("already taken"), "{err}");
    assert!(err.contains("refused to create A"), "{err}");
    // Nothing of it anywhere: P's log is unchanged, and the second data
    // directory holds no creation.
    wait_until("A's write reaches P", Duration::from_secs(10), || {
        p.get("x").is_some()
    });
    let after = p.log_lines();
    assert!(after.starts_with(&before[..before.len().min(after.len())]));
    assert!(
        after
            .iter()
            .all(|l| !l.contains(&format!("127.0.0.1:{}", ports[2]))),
        "{after:?}"
    );
    assert!(!dup_dir.join("A").join("CREATION").exists());
    // A restart of the real A needs no --join.
    a.terminate();
    a.args.retain(|x| x != "--join" && x != &sponsor);
    a.start();
    assert_eq!(a.status("membership"), "member");
    a.ok(&["SET", "y", "2"]);
}

#[test]
fn membership_keys_are_hidden_from_clients_and_refused_to_their_writes() {
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(1);
    let mut p = replica(dir.path(), "P", ports[0], &["--primary", "P"]);
    p.start();
    p.ok(&["SET", "x", "1"]);
    // The founder's record is there, but no client command shows it.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut p.conn()).unwrap();
    assert_eq!(keys, ["x"]);
    let n: i64 = redis::cmd("DBSIZE").query(&mut p.conn()).unwrap();
    assert_eq!(n, 1);
    let (_, scanned): (String, Vec<String>) = redis::cmd("SCAN")
        .arg(0)
        .arg("COUNT")
        .arg(100)
        .query(&mut p.conn())
        .unwrap();
    assert_eq!(scanned, ["x"]);
    let raw = b"\xffbayou/server/P".to_vec();
    let got: Option<Vec<u8>> = redis::cmd("GET").arg(&raw).query(&mut p.conn()).unwrap();
    assert_eq!(got, None);
    let exists: i64 = redis::cmd("EXISTS").arg(&raw).query(&mut p.conn()).unwrap();
    assert_eq!(exists, 0);
    assert_eq!(members(&p).len(), 1);
    // Writes to them are refused at accept and leave no write.
    let before = p.log_lines();
    for cmd in [&["SET"][..], &["APPEND"], &["DEL"]] {
        let mut c = redis::cmd(cmd[0]);
        c.arg(&raw);
        if cmd[0] != "DEL" {
            c.arg("v");
        }
        let err = c.query::<redis::Value>(&mut p.conn()).unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
    }
    assert_eq!(p.log_lines(), before);
    // FLUSHALL leaves the table.
    p.ok(&["FLUSHALL"]);
    assert_eq!(members(&p).len(), 1);
}

#[test]
fn of_two_concurrent_creations_of_one_name_the_first_committed_wins_and_the_loser_stops() {
    // [P97 §4.3]: two sponsors in two partitions create X; the name is
    // bound to the creation that commits first. The loser accepts no write
    // while it waits, and stops when it learns it lost.
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(4);
    let mut p = replica(dir.path(), "P", ports[0], &["--primary", "P"]);
    p.start();
    let at = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let mut a = replica(dir.path(), "A", ports[1], &["--join", &at(0)]);
    a.start();
    wait_until("A is a member", Duration::from_secs(30), || {
        a.status("membership") == "member"
    });
    // A is cut off; each side creates X.
    a.ok(&["BAYOU.OFFLINE"]);
    let mut winner = replica(dir.path(), "X", ports[2], &["--join", &at(0)]);
    winner.start();
    let loser_dir = dir.path().join("other");
    std::fs::create_dir_all(&loser_dir).unwrap();
    let mut loser = replica(&loser_dir, "X", ports[3], &["--join", &at(1)]);
    loser.start();
    wait_until("the first X is a member", Duration::from_secs(30), || {
        winner.status("membership") == "member"
    });
    winner.ok(&["SET", "w", "1"]);
    // The loser cannot know yet; it refuses writes all the same.
    let err = loser.cmd(&["SET", "l", "1"]).unwrap_err();
    assert_eq!(err.code(), Some("TRYAGAIN"), "{err}");
    // The partition heals: the loser learns that X is bound to the other
    // creation, and stops with an error.
    a.ok(&["BAYOU.ONLINE"]);
    let status = wait_exit(&mut loser, Duration::from_secs(30));
    assert!(!status.success(), "{status}");
    let log = loser.log_text();
    assert!(log.contains("belongs to another server"), "{log}");
    // Nothing was ever written under the loser's X, and everyone's table
    // binds X to the winner's creation and address.
    wait_until("A and P agree", Duration::from_secs(30), || {
        p.log_lines() == a.log_lines()
    });
    let x = members(&p)
        .into_iter()
        .find(|l| l.starts_with("X "))
        .unwrap();
    assert!(x.contains(&at(2)) && x.contains(" live "), "{x}");
    let writes_by_x = p
        .log_lines()
        .iter()
        .filter(|l| parse_entry(l).2 == "X")
        .count();
    assert_eq!(writes_by_x, 1, "{:?}", p.log_lines());
    assert_eq!(winner.status("membership"), "member");
    // Both creations are in the log; the second failed where it executed.
    let creations: Vec<String> = p
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("CREATE(X,"))
        .collect();
    assert_eq!(creations.len(), 2, "{creations:?}");
}

#[test]
fn a_static_server_under_a_joined_servers_name_has_its_push_dropped_and_stops() {
    // [P97 §4.3]: a name is bound to its creation write. A server started
    // the old way (a static peer list, no creation) under a name created
    // for another presents no creation; the members drop what it pushes,
    // and it refuses writes and stops once it pulls the record of its name.
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(3);
    let (p, a, sponsor) = founder_and_member(dir.path(), &ports);
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let peer = format!("P={sponsor}");
    let mut fake = replica(&other, "A", ports[2], &["--primary", "P", "--peer", &peer]);
    // No periodic anti-entropy: its first session is the one below, and
    // pushes its write.
    let at = fake
        .args
        .iter()
        .position(|x| x == "--sync-interval-ms")
        .unwrap();
    fake.args[at + 1] = "0".into();
    fake.start();
    assert_eq!(fake.status("membership"), "static");
    fake.ok(&["SET", "fake", "1"]);
    // One session: its push is dropped, its pull brings A's record.
    fake.ok(&["BAYOU.SYNC", "P"]);
    assert_eq!(p.get("fake"), None);
    assert!(p.log_lines().iter().all(|l| !l.contains("W(fake,1)")));
    assert!(p.log_text().contains("refused a push"), "{}", p.log_text());
    // It learned whose the name is at that session, and stops.
    let status = wait_exit(&mut fake, Duration::from_secs(10));
    assert!(!status.success(), "{status}");
    let log = fake.log_text();
    assert!(
        log.contains("belongs to another server") && log.contains("without a creation"),
        "{log}"
    );
    // The real A is untouched, and still accepts writes.
    a.ok(&["SET", "real", "1"]);
    wait_until("A's write reaches P", Duration::from_secs(10), || {
        p.get("real").is_some()
    });
}

#[test]
fn a_member_that_moves_tells_its_peers_by_a_write() {
    // [P97 §4.3]: addresses travel with the creation write and change by a
    // write: A restarted on another port records it at start, and P, which
    // learns its partners from the log, syncs with A there.
    let dir = tempfile::tempdir().unwrap();
    let ports = free_ports(3);
    let (p, mut a, sponsor) = founder_and_member(dir.path(), &ports);
    a.terminate();
    let moved = format!("127.0.0.1:{}", ports[2]);
    a.args = a
        .args
        .iter()
        .filter(|x| *x != "--join" && *x != &sponsor)
        .map(|x| {
            if x == &format!("127.0.0.1:{}", ports[1]) {
                moved.clone()
            } else {
                x.clone()
            }
        })
        .collect();
    a.port = ports[2];
    a.start();
    wait_until("P learns A's new address", Duration::from_secs(30), || {
        members(&p)
            .iter()
            .any(|l| l.starts_with(&format!("A {moved} live")))
    });
    // They go on exchanging writes.
    p.ok(&["SET", "after-move", "1"]);
    wait_until("P's write reaches A", Duration::from_secs(30), || {
        a.get("after-move").is_some()
    });
    // And by command, for an address a peer should use from now on.
    let w: String = redis::cmd("BAYOU.ADDRESS")
        .arg(&moved)
        .query(&mut a.conn())
        .unwrap();
    assert!(w.ends_with(":A"), "{w}");
    wait_until(
        "the command's write reaches P",
        Duration::from_secs(30),
        || p.log_lines().iter().any(|l| l.contains("ADDRESS(A,")),
    );
}
