//! `bayou cluster`, the README's main command: three replicas in one
//! process, reachable with a Redis client, converging, stopped by SIGINT.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Cluster, conn};

#[test]
fn cluster_starts_three_replicas_that_converge_and_stops_on_sigint() {
    let mut cluster = Cluster::start(&["--sync-interval-ms", "100", "--logical-clock"]);
    let (base, banner, dir) = (cluster.base, cluster.banner.clone(), &cluster.dir);
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
        // P's founding write and the two.
        if logs[0].len() == 3
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
        .args(["-INT", &cluster.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = cluster.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit after SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
}
