//! Session guarantees over RESP on real processes ([T94 §3–4]):
//! `BAYOU.SESSION` tokens carried between replicas, anti-entropy on demand,
//! and `-NOTYET` when a replica cut off from its peers cannot serve a
//! session.

mod common;

use common::Cluster;
use redis::Value;

fn text(v: redis::RedisResult<Value>) -> String {
    match v {
        Ok(Value::BulkString(b)) => String::from_utf8(b).unwrap(),
        Ok(Value::SimpleString(s)) => s,
        Ok(Value::Nil) => "(nil)".into(),
        Ok(Value::Int(n)) => n.to_string(),
        Ok(Value::Okay) => "OK".into(),
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("error: {e}"),
    }
}

fn q(c: &mut redis::Connection, args: &[&str]) -> String {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    text(cmd.query(c))
}

#[test]
fn a_token_carries_read_your_writes_to_another_replica() {
    // [T94 §3]: RYW across servers. No periodic anti-entropy: only the
    // session's on-demand pull can bring the write to B.
    let c = Cluster::start(&["P", "A", "B"], &["--sync-interval-ms", "0"]);
    let mut a = c.r("A").conn();
    let token = q(&mut a, &["BAYOU.SESSION", "OPEN", "RYW", "MR"]);
    assert_eq!(q(&mut a, &["SET", "x", "1"]), "OK");
    let token2 = q(&mut a, &["BAYOU.SESSION", "TOKEN"]);
    assert_ne!(token, token2, "the write is in the token");

    // A session-less read at B does not see it; the session's read does.
    let mut plain = c.r("B").conn();
    assert_eq!(q(&mut plain, &["GET", "x"]), "(nil)");
    let mut b = c.r("B").conn();
    assert_eq!(q(&mut b, &["BAYOU.SESSION", "USE", &token2]), "OK");
    assert_eq!(q(&mut b, &["GET", "x"]), "1");
    let info = q(&mut b, &["BAYOU.SESSION", "INFO"]);
    assert!(info.contains("RYW MR"), "{info}");

    // Cut off from its peers, a replica answers NOTYET naming the guarantee
    // and the write it lacks.
    assert_eq!(q(&mut a, &["SET", "y", "2"]), "OK");
    let token3 = q(&mut a, &["BAYOU.SESSION", "TOKEN"]);
    c.r("B").ok(&["BAYOU.OFFLINE"]);
    assert_eq!(q(&mut b, &["BAYOU.SESSION", "USE", &token3]), "OK");
    let refused = q(&mut b, &["GET", "y"]);
    assert!(
        refused.contains("NOTYET") && refused.contains("RYW"),
        "{refused}"
    );
    assert!(refused.contains(":A (has "), "{refused}");
    // Writes are unaffected by read guarantees.
    assert_eq!(q(&mut b, &["SET", "z", "3"]), "OK");
    c.r("B").ok(&["BAYOU.ONLINE"]);
    assert_eq!(q(&mut b, &["GET", "y"]), "2");
}

#[test]
fn monotonic_writes_hold_a_write_back_until_the_sessions_earlier_writes_arrive() {
    // [T94 §3]: MW. The write at B waits for the session's write at A, so
    // it is ordered after it everywhere.
    let c = Cluster::start(&["P", "A", "B"], &["--sync-interval-ms", "0"]);
    let mut a = c.r("A").conn();
    q(&mut a, &["BAYOU.SESSION", "OPEN", "MW"]);
    assert_eq!(q(&mut a, &["APPEND", "doc", "v1;"]), "3");
    let token = q(&mut a, &["BAYOU.SESSION", "TOKEN"]);
    c.r("B").ok(&["BAYOU.OFFLINE"]);
    let mut b = c.r("B").conn();
    q(&mut b, &["BAYOU.SESSION", "USE", &token]);
    q(&mut b, &["BAYOU.SESSION", "WAIT", "0"]);
    let refused = q(&mut b, &["APPEND", "doc", "v2;"]);
    assert!(
        refused.contains("NOTYET") && refused.contains("MW: this replica lacks"),
        "{refused}"
    );
    // Reads are unaffected by write guarantees.
    assert_eq!(q(&mut b, &["GET", "doc"]), "(nil)");
    c.r("B").ok(&["BAYOU.ONLINE"]);
    q(&mut b, &["BAYOU.SESSION", "WAIT", "2000"]);
    assert_eq!(q(&mut b, &["APPEND", "doc", "v2;"]), "6");
    assert_eq!(q(&mut b, &["GET", "doc"]), "v1;v2;");
}

#[test]
fn bad_tokens_and_bad_subcommands_are_clear_errors() {
    let c = Cluster::start(&["P"], &[]);
    let mut p = c.r("P").conn();
    for bad in ["", "zz", "0102", "not a token", &"ab".repeat(40_000)] {
        let e = q(&mut p, &["BAYOU.SESSION", "USE", bad]);
        assert!(e.contains("bad session token"), "{bad:?}: {e}");
    }
    let e = q(&mut p, &["BAYOU.SESSION", "OPEN", "RYW", "XYZ"]);
    assert!(e.contains("unknown guarantee"), "{e}");
    let e = q(&mut p, &["BAYOU.SESSION", "TOKEN"]);
    assert!(e.contains("no session"), "{e}");
    let e = q(&mut p, &["BAYOU.SESSION", "FROB"]);
    assert!(e.contains("syntax error"), "{e}");
    let e = q(&mut p, &["BAYOU.SESSION", "WAIT", "-1"]);
    assert!(e.contains("milliseconds"), "{e}");
    // The connection still works, and a session opens.
    let token = q(&mut p, &["BAYOU.SESSION", "OPEN", "ALL"]);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
    assert_eq!(q(&mut p, &["SET", "k", "v"]), "OK");
    assert_eq!(q(&mut p, &["GET", "k"]), "v");
    assert_eq!(q(&mut p, &["BAYOU.SESSION", "CLOSE"]), "OK");
    assert_eq!(q(&mut p, &["GET", "k"]), "v");
}

#[test]
fn the_client_library_moves_on_when_a_replica_dies_or_lags_and_keeps_the_guarantees() {
    // [T94 §4]: the session manager. Writes at A, A is killed, the session
    // moves to a replica that lacks them (cut off: it answers NOTYET) and
    // then to one that has them.
    use bayou_client::{Guarantees, Options, Session};
    let mut c = Cluster::start(&["P", "A", "B"], &["--sync-interval-ms", "0"]);
    let addr = |id: &str| format!("127.0.0.1:{}", c.r(id).port);
    let (a, b, p) = (addr("A"), addr("B"), addr("P"));
    let mut s = Session::open(&[&a, &b, &p], Guarantees::ALL)
        .unwrap()
        .with_options(Options {
            wait: std::time::Duration::from_millis(100),
            ..Options::default()
        });
    s.set("cart", "apples").unwrap();
    assert_eq!(s.replica(), a);
    // P learns the write, B does not (it is cut off); then A dies.
    c.r("P").ok(&["BAYOU.SYNC", "A"]);
    c.r("B").ok(&["BAYOU.OFFLINE"]);
    c.r_mut("A").kill9();
    assert_eq!(s.get("cart").unwrap().as_deref(), Some("apples"));
    assert_eq!(s.replica(), p, "A is down and B lacks the write: P serves");
    assert_eq!(s.moves(), 2);
    // A session token carried to a fresh client keeps the guarantees.
    let token = s.token().to_string();
    let mut again = Session::resume(&[&b], &token)
        .unwrap()
        .with_options(Options {
            wait: std::time::Duration::from_millis(50),
            rounds: 1,
            ..Options::default()
        });
    let refused = again.get("cart").unwrap_err().to_string();
    assert!(
        refused.contains("NOTYET") && refused.contains("RYW"),
        "{refused}"
    );
    c.r("B").ok(&["BAYOU.ONLINE"]);
    again = again.with_options(Options::default());
    assert_eq!(again.get("cart").unwrap().as_deref(), Some("apples"));
}

#[test]
fn a_writes_life_from_tentative_to_committed_with_its_final_outcome() {
    // [T95 §6]: a write is tentative until the primary commits it; its
    // committed execution may differ from the tentative one. A counter
    // incremented at A while P set the key to text fails once committed.
    let c = Cluster::start(&["P", "A", "B"], &["--sync-interval-ms", "0"]);
    let mut p = c.r("P").conn();
    let mut a = c.r("A").conn();
    assert_eq!(q(&mut p, &["SET", "c", "abc"]), "OK");
    q(&mut a, &["BAYOU.SESSION", "OPEN", "RYW"]);
    let incr = q(&mut a, &["BAYOU.WRITE", "INCR(c,1)"]);
    assert!(incr.ends_with(":A"), "{incr}");
    assert_eq!(q(&mut a, &["SET", "d", "1"]), "OK");
    let pending = q(&mut a, &["BAYOU.SESSION", "PENDING"]);
    assert!(
        pending.contains(&incr) && pending.contains("tentative"),
        "{pending}"
    );
    // Cut off from the primary, the wait times out, saying why.
    c.r("A").ok(&["BAYOU.OFFLINE"]);
    let e = q(&mut a, &["BAYOU.WAITCOMMIT", &incr, "100"]);
    assert!(
        e.contains("TIMEOUT") && e.contains("still tentative"),
        "{e}"
    );
    c.r("A").ok(&["BAYOU.ONLINE"]);
    // The wait pulls from the primary; the write committed after P's SET
    // (CSN 1 is P's founding write), so its final execution failed.
    let done = q(&mut a, &["BAYOU.WAITCOMMIT", &incr, "5000"]);
    assert!(done.contains("csn") && done.contains("int(3)"), "{done}");
    assert!(done.contains("failed: value is not an integer"), "{done}");
    let pending = q(&mut a, &["BAYOU.SESSION", "PENDING"]);
    assert!(
        !pending.contains(&incr) && pending.contains("array([])"),
        "{pending}"
    );
    // A write B has never seen.
    let mut b = c.r("B").conn();
    c.r("B").ok(&["BAYOU.OFFLINE"]);
    let e = q(&mut b, &["BAYOU.WAITCOMMIT", &incr, "0"]);
    assert!(e.contains("has not reached this replica"), "{e}");
    for bad in [
        &["BAYOU.WAITCOMMIT", "x"][..],
        &["BAYOU.WAITCOMMIT", "0:A"],
        &["BAYOU.WAITCOMMIT", "1:A", "-5"],
    ] {
        let e = q(&mut b, bad);
        assert!(e.contains("syntax error"), "{bad:?}: {e}");
    }
}

#[test]
fn subscribers_of_bayou_commits_hear_every_commit_with_its_outcome() {
    // [T95 §6]: commit notifications over RESP pub/sub, at a secondary
    // that learns the commits by anti-entropy.
    let c = Cluster::start(&["P", "A"], &["--sync-interval-ms", "50"]);
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", c.r("A").port)).unwrap();
    let mut sub = client.get_connection().unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe("bayou:commits").unwrap();
    pubsub
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut p = c.r("P").conn();
    let mut a = c.r("A").conn();
    assert_eq!(q(&mut p, &["SET", "c", "abc"]), "OK");
    let id = q(&mut a, &["BAYOU.WRITE", "INCR(n,1)"]);
    let mut heard = Vec::new();
    while heard.len() < 2 {
        let m = pubsub.get_message().unwrap();
        assert_eq!(m.get_channel_name(), "bayou:commits");
        let payload = m.get_payload::<String>().unwrap();
        // CSN 1, P's founding write, may have come before the subscription.
        if payload.starts_with("1 ") {
            assert!(payload.ends_with(":P applied"), "{payload}");
        } else {
            heard.push(payload);
        }
    }
    assert!(
        heard[0].starts_with("2 ") && heard[0].ends_with(":P applied"),
        "{heard:?}"
    );
    assert_eq!(heard[1], format!("3 {id} applied"), "{heard:?}");
    // Other connections are unaffected, and PUBLISH is not offered.
    let e = q(&mut a, &["PUBLISH", "x", "y"]);
    assert!(e.contains("not supported"), "{e}");
}

#[test]
fn subscribers_of_bayou_outcomes_hear_only_the_writes_whose_outcome_changed_at_commit() {
    // [T95 §7]: a write is re-executed at commit. A's INCR ran tentatively
    // on a missing key (applied); P's SET of text commits first, so at
    // commit it fails. A's other write keeps its outcome.
    let c = Cluster::start(&["P", "A"], &["--sync-interval-ms", "0"]);
    let connect = |id: &str| {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", c.r(id).port)).unwrap();
        client.get_connection().unwrap()
    };
    let (mut at_a, mut at_p) = (connect("A"), connect("P"));
    let mut pubsub = at_a.as_pubsub();
    pubsub.subscribe("bayou:outcomes").unwrap();
    pubsub.subscribe("bayou:commits").unwrap();
    pubsub
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut at_p = at_p.as_pubsub();
    at_p.subscribe("bayou:outcomes").unwrap();
    let mut p = c.r("P").conn();
    let mut a = c.r("A").conn();
    assert_eq!(q(&mut p, &["SET", "c", "abc"]), "OK");
    let incr = q(&mut a, &["BAYOU.WRITE", "INCR(c,1)"]);
    assert_eq!(q(&mut a, &["GET", "c"]), "1");
    let plain = q(&mut a, &["BAYOU.WRITE", "INCR(d,1)"]);
    // One session each way: P commits A's writes after its SET, and A
    // learns the four commits (P's founding write first) in one batch.
    c.r("A").ok(&["BAYOU.SYNC", "P"]);
    let mut commits = Vec::new();
    let mut outcomes = Vec::new();
    while commits.len() < 4 {
        let m = pubsub.get_message().unwrap();
        let payload = m.get_payload::<String>().unwrap();
        match m.get_channel_name() {
            "bayou:commits" => commits.push(payload),
            "bayou:outcomes" => outcomes.push(payload),
            other => panic!("{other}: {payload}"),
        }
    }
    assert!(
        commits[2].starts_with(&format!("3 {incr} failed")),
        "{commits:?}"
    );
    assert_eq!(commits[3], format!("4 {plain} applied"), "{commits:?}");
    // Nothing more comes for the unchanged ones.
    pubsub
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    while let Ok(m) = pubsub.get_message() {
        outcomes.push(m.get_payload::<String>().unwrap());
    }
    assert_eq!(
        outcomes,
        [format!(
            "3 {incr} tentative applied committed failed: value is not an integer or out of range"
        )]
    );
    // The primary committed the INCR without executing it tentatively:
    // nothing changed there.
    at_p.set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    assert!(at_p.get_message().is_err());
    assert_eq!(q(&mut a, &["GET", "c"]), "abc");
}

#[test]
fn pipelines_and_transactions_run_under_the_session_in_order() {
    let c = Cluster::start(&["P", "A"], &["--sync-interval-ms", "0"]);
    let mut a = c.r("A").conn();
    let (token, set, get, sync, after): (String, String, String, Value, String) = redis::pipe()
        .cmd("BAYOU.SESSION")
        .arg("OPEN")
        .arg("RYW")
        .arg("MW")
        .cmd("SET")
        .arg("x")
        .arg("1")
        .cmd("GET")
        .arg("x")
        .cmd("BAYOU.SYNC")
        .arg("P")
        .cmd("BAYOU.SESSION")
        .arg("TOKEN")
        .query(&mut a)
        .unwrap();
    assert_eq!((set.as_str(), get.as_str()), ("OK", "1"));
    assert!(matches!(sync, Value::Array(_) | Value::Map(_)), "{sync:?}");
    assert_ne!(token, after, "the write is in the token");
    // MULTI/EXEC under the session at P, which now holds the write.
    let mut p = c.r("P").conn();
    assert_eq!(q(&mut p, &["BAYOU.SESSION", "USE", &after]), "OK");
    let (v, n): (String, i64) = redis::pipe()
        .atomic()
        .cmd("GET")
        .arg("x")
        .cmd("APPEND")
        .arg("x")
        .arg("2")
        .query(&mut p)
        .unwrap();
    assert_eq!((v.as_str(), n), ("1", 2));
    let e = q(&mut p, &["MULTI"]);
    assert_eq!(e, "OK");
    let e = q(&mut p, &["BAYOU.SESSION", "TOKEN"]);
    assert!(e.contains("not allowed inside a transaction"), "{e}");
    q(&mut p, &["DISCARD"]);
}
