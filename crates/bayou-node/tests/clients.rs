//! The client compatibility matrix (docs/bayou-server.md, "Client
//! compatibility"): real client libraries, with their defaults, against real
//! `bayou-node` processes, and the INCR-convergence demo.
//!
//! Where the Python and Node clients come from: `tests/clients/libs.rs`.

mod common;
#[path = "../../../tests/clients/libs.rs"]
mod libs;

use std::process::Command;
use std::time::Duration;

use common::Cluster;

const FAST: &[&str] = &["--sync-interval-ms", "100", "--logical-clock"];

#[test]
fn redis_py_sync_and_asyncio_work_with_their_defaults() {
    let c = Cluster::start(&["P"], FAST);
    if let Some(cmd) = libs::python("redis_py.py", c.r("P").port) {
        libs::run(cmd, "redis-py");
    }
}

#[test]
fn node_redis_and_ioredis_work_with_their_defaults() {
    let c = Cluster::start(&["P"], FAST);
    if let Some(cmd) = libs::node("node_clients.js", c.r("P").port) {
        libs::run(cmd, "node clients");
    }
}

/// The `redis` crate, the same checks over RESP2 and RESP3.
#[test]
fn redis_crate_works_over_resp2_and_resp3() {
    let c = Cluster::start(&["P"], FAST);
    let port = c.r("P").port;
    for (url, resp) in [
        (format!("redis://127.0.0.1:{port}/"), "2"),
        (format!("redis://127.0.0.1:{port}/?protocol=resp3"), "3"),
    ] {
        let client = redis::Client::open(url).unwrap();
        let mut con = client.get_connection().unwrap();
        let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut con).unwrap();
        assert!(info.contains(&format!("resp={resp}")), "{info}");
        let k = |s: &str| format!("resp{resp}:{s}");
        let _: () = redis::cmd("FLUSHDB").query(&mut con).unwrap();
        // MULTI/EXEC through an atomic pipeline.
        let (set, n, got): (String, i64, String) = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(k("a"))
            .arg("1")
            .cmd("INCRBY")
            .arg(k("n"))
            .arg(5)
            .cmd("GET")
            .arg(k("a"))
            .query(&mut con)
            .unwrap();
        assert_eq!((set.as_str(), n, got.as_str()), ("OK", 5, "1"));
        let n: i64 = redis::cmd("DECR").arg(k("n")).query(&mut con).unwrap();
        assert_eq!(n, 4);
        let len: i64 = redis::cmd("APPEND")
            .arg(k("a"))
            .arg("2")
            .query(&mut con)
            .unwrap();
        assert_eq!(len, 2);
        let none: Option<String> = redis::cmd("SET")
            .arg(k("a"))
            .arg("x")
            .arg("NX")
            .query(&mut con)
            .unwrap();
        assert_eq!(none, None);
        let old: Option<String> = redis::cmd("GETDEL").arg(k("a")).query(&mut con).unwrap();
        assert_eq!(old.as_deref(), Some("12"));
        let name: Option<String> = redis::cmd("CLIENT").arg("GETNAME").query(&mut con).unwrap();
        assert_eq!(name, None);
        let _: () = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg("rs")
            .query(&mut con)
            .unwrap();
        let name: Option<String> = redis::cmd("CLIENT").arg("GETNAME").query(&mut con).unwrap();
        assert_eq!(name.as_deref(), Some("rs"));
        let keys: Vec<String> = redis::cmd("KEYS").arg("resp*").query(&mut con).unwrap();
        assert_eq!(keys, vec![k("n")]);
        let scanned: Vec<String> = con.scan_match::<_, String>("resp*").unwrap().collect();
        assert_eq!(scanned, vec![k("n")]);
        let hello: redis::Value = redis::cmd("HELLO").arg(resp).query(&mut con).unwrap();
        match (resp, hello) {
            ("3", redis::Value::Map(m)) => assert_eq!(m.len(), 7),
            ("2", redis::Value::Array(a)) => assert_eq!(a.len(), 14),
            (_, other) => panic!("HELLO {resp}: {other:?}"),
        }
        let status: redis::Value = redis::cmd("BAYOU.STATUS").query(&mut con).unwrap();
        match (resp, status) {
            ("3", redis::Value::Map(_)) | ("2", redis::Value::Array(_)) => {}
            (_, other) => panic!("BAYOU.STATUS over RESP{resp}: {other:?}"),
        }
        // A command refused while queueing discards the transaction.
        let _: () = redis::cmd("MULTI").query(&mut con).unwrap();
        let _: () = redis::cmd("SET")
            .arg(k("t"))
            .arg("1")
            .query(&mut con)
            .unwrap();
        let refused = redis::cmd("EXPIRE")
            .arg(k("t"))
            .arg(1)
            .query::<()>(&mut con);
        assert!(refused.is_err());
        let err = redis::cmd("EXEC").query::<()>(&mut con).unwrap_err();
        assert!(err.to_string().contains("Transaction discarded"), "{err}");
        let t: Option<String> = redis::cmd("GET").arg(k("t")).query(&mut con).unwrap();
        assert_eq!(t, None);
        let err = redis::cmd("SET")
            .arg(k("e"))
            .arg("1")
            .arg("EX")
            .arg("10")
            .query::<()>(&mut con)
            .unwrap_err();
        assert!(
            err.to_string().contains("'SET ... EX' is not supported"),
            "{err}"
        );
    }
}

use redis::Commands as _;

#[test]
fn redis_cli_and_redis_benchmark_work_over_resp2_and_resp3() {
    let c = Cluster::start(&["P"], &["--sync-interval-ms", "0"]);
    let port = c.r("P").port.to_string();
    let cli = |args: &[&str]| -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port])
            .args(args)
            .output()
            .expect("redis-cli must be installed (Debian package redis-tools)");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["INCR", "cli"]), "1");
    assert_eq!(cli(&["-3", "INCRBY", "cli", "4"]), "5");
    assert!(cli(&["-3", "HELLO", "3"]).contains("proto"));
    assert_eq!(cli(&["-3", "--no-raw", "GET", "missing"]), "(nil)");
    assert_eq!(cli(&["-3", "--no-raw", "CLIENT", "GETNAME"]), "(nil)");
    let err = cli(&["SET", "e", "1", "EX", "10"]);
    assert!(
        err.starts_with("ERR 'SET ... EX' is not supported"),
        "{err}"
    );
    for resp in [&[][..], &["-3"][..]] {
        let out = Command::new("redis-benchmark")
            .args([
                "-p",
                &port,
                "-t",
                "ping,set,get,incr,mset",
                "-n",
                "300",
                "-q",
            ])
            .args(resp)
            .output()
            .expect("redis-benchmark must be installed (Debian package redis-tools)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &*String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("INCR: ") && text.contains("MSET (10 keys): "),
            "{text}"
        );
        assert!(!text.contains("WARN") && !text.contains("ERR"), "{text}");
    }
}

/// The demo: two replicas disconnected from everyone each increment
/// a counter; once they reconnect every replica agrees on the sum, because
/// INCR is a Bayou write re-executed in log order, not a value.
#[test]
fn incr_on_disconnected_replicas_converges_to_the_sum() {
    let c = Cluster::start(&["P", "A", "B"], FAST);
    let (p, a, b) = (c.r("P"), c.r("A"), c.r("B"));
    a.ok(&["BAYOU.OFFLINE"]);
    b.ok(&["BAYOU.OFFLINE"]);
    let incr = |r: &common::Replica, by: i64| -> i64 {
        redis::cmd("INCRBY")
            .arg("counter")
            .arg(by)
            .query(&mut r.conn())
            .unwrap()
    };
    // Each replica replies with the value in its own full view.
    assert_eq!(incr(a, 1), 1);
    assert_eq!(incr(a, 1), 2);
    assert_eq!(incr(b, 10), 10);
    assert_eq!(incr(b, 10), 20);
    assert_eq!(incr(p, 100), 100);
    assert_eq!(a.get("counter").as_deref(), Some("2"));
    assert_eq!(b.get("counter").as_deref(), Some("20"));
    a.ok(&["BAYOU.ONLINE"]);
    b.ok(&["BAYOU.ONLINE"]);
    let log = c.converged(Duration::from_secs(20));
    // The founding write, then the five increments.
    assert_eq!(log.len(), 6, "{log:?}");
    assert_eq!(log[0], c.founding());
    assert!(
        log[1..].iter().all(|l| l.contains("INCR(counter,")),
        "{log:?}"
    );
    for r in &c.replicas {
        assert_eq!(r.get("counter").as_deref(), Some("122"), "{}", r.id);
        let committed: Option<String> = redis::cmd("BAYOU.GET")
            .arg("counter")
            .arg("COMMITTED")
            .query(&mut r.conn())
            .unwrap();
        assert_eq!(committed.as_deref(), Some("122"), "{}", r.id);
    }
}

/// An INCR accepted where its key held a number can meet a non-integer
/// once the writes are reordered at commit: it then has no effect, the same
/// at every replica, and `BAYOU.LOG` says why.
#[test]
fn incr_reordered_after_a_non_integer_fails_alike_everywhere() {
    let c = Cluster::start(
        &["P", "A", "B"],
        &["--sync-interval-ms", "0", "--logical-clock"],
    );
    let (p, a, b) = (c.r("P"), c.r("A"), c.r("B"));
    a.ok(&["SET", "c", "x"]);
    let n: i64 = redis::cmd("INCR").arg("c").query(&mut b.conn()).unwrap();
    assert_eq!(n, 1, "B has not seen A's SET");
    // A's SET reaches the primary first, so it commits first.
    let _ = a.cmd(&["BAYOU.SYNC", "P"]).unwrap();
    let _ = b.cmd(&["BAYOU.SYNC", "P"]).unwrap();
    let _ = a.cmd(&["BAYOU.SYNC", "P"]).unwrap();
    let log = c.converged(Duration::from_secs(20));
    assert_eq!(
        log,
        vec![
            c.founding(),
            "2:1:A W(c,x)".into(),
            "3:1:B INCR(c,1) [failed: value is not an integer or out of range]".into()
        ]
    );
    for r in [p, a, b] {
        assert_eq!(r.get("c").as_deref(), Some("x"), "{}", r.id);
    }
}
