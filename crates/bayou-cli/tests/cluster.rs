//! `bayou cluster`, the README's main command: three replicas in one
//! process, reachable with a Redis client, converging, stopped by SIGINT.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A base port with `n` consecutive free ports after it.
fn free_base(n: u16) -> u16 {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = l.local_addr().unwrap().port();
        drop(l);
        if base > 65535 - n {
            continue;
        }
        if (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

fn conn(port: u16) -> redis::Connection {
    let c = redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap();
    let con = c
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    con.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    con
}

#[test]
fn cluster_starts_three_replicas_that_converge_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base(3);
    let mut child = Command::new(env!("CARGO_BIN_EXE_bayou"))
        .args([
            "cluster",
            "--replicas",
            "3",
            "--base-port",
            &base.to_string(),
        ])
        .args(["--sync-interval-ms", "100", "--logical-clock", "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.contains("stop with Ctrl-C") {
        assert!(out.read_line(&mut banner).unwrap() > 0, "{banner}");
    }
    assert!(banner.contains("3 replicas, primary P"), "{banner}");
    assert!(
        banner.contains(&format!("redis-cli -p {}", base + 1)),
        "{banner}"
    );
    for id in ["P", "A", "B"] {
        assert!(dir.path().join(id).join("bayou.redb").exists());
    }

    let (mut p, mut a, mut b) = (conn(base), conn(base + 1), conn(base + 2));
    let _: () = redis::cmd("SET").arg("x").arg("1").query(&mut a).unwrap();
    let _: () = redis::cmd("SET").arg("y").arg("2").query(&mut b).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let logs: Vec<Vec<String>> = [&mut p, &mut a, &mut b]
            .into_iter()
            .map(|c| redis::cmd("BAYOU.LOG").query(c).unwrap())
            .collect();
        if logs[0].len() == 2
            && logs.iter().all(|l| l == &logs[0])
            && logs[0].iter().all(|e| !e.starts_with('∞'))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no convergence: {logs:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let x: String = redis::cmd("BAYOU.GET")
        .arg("x")
        .arg("COMMITTED")
        .query(&mut b)
        .unwrap();
    assert_eq!(x, "1");

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
}
