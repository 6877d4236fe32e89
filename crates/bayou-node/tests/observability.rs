//! The `--http` listener of real replica processes: `/metrics` scraped
//! from a cluster under load (the values move as the protocol says they
//! must), `/healthz`, the bounded state JSON, and the web view loaded in
//! headless Chromium.

mod common;

#[path = "../../server-kit/tests/support/browser.rs"]
mod browser;
#[path = "../../server-kit/tests/support/http.rs"]
mod http;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Cluster, free_ports, settled};
use http::{http_get, scrape};

fn metric(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {:#?}", m.keys().collect::<Vec<_>>()))
}

/// A cluster P, A, B whose replicas also serve `--http` (A's page knows
/// P's and B's listeners). The harness starts plain replicas; each is
/// restarted with its HTTP flags.
fn cluster_with_http(extra: &[&str]) -> (Cluster, BTreeMap<String, String>) {
    let mut c = Cluster::start(&["P", "A", "B"], extra);
    if !extra.contains(&"0") {
        // Every replica holds P's founding write before its restart, so
        // the restarted processes' counters start from the same place.
        common::settled(&c, std::time::Duration::from_secs(20));
    }
    let ports = free_ports(3);
    let http: BTreeMap<String, String> = ["P", "A", "B"]
        .iter()
        .zip(&ports)
        .map(|(id, p)| (id.to_string(), format!("127.0.0.1:{p}")))
        .collect();
    for r in &mut c.replicas {
        r.terminate();
        r.args.extend(["--http".into(), http[&r.id].clone()]);
        for (id, addr) in &http {
            if *id != r.id {
                r.args
                    .extend(["--peer-http".into(), format!("{id}={addr}")]);
            }
        }
        r.start();
    }
    (c, http)
}

#[test]
fn metrics_follow_the_protocol_under_load() {
    // Wall-clock stamps, so the commit lag is a time.
    let (c, http) = cluster_with_http(&["--sync-interval-ms", "100"]);
    let (a, b) = (c.r("A"), c.r("B"));
    for addr in http.values() {
        assert_eq!(http_get(addr, "/healthz"), (200, "ok\n".to_string()));
    }
    let before = scrape(&http["A"]);
    assert_eq!(
        metric(&before, "bayou_writes_accepted_total{replica=\"A\"}"),
        0.0
    );
    assert!(metric(&before, "process_resident_memory_bytes") > 1e6);

    // B is cut off; clients write at A and B (two threads each) meanwhile.
    b.ok(&["BAYOU.OFFLINE"]);
    let per_thread = 50;
    std::thread::scope(|s| {
        for r in [a, a, b, b] {
            s.spawn(move || {
                let mut con = r.conn();
                for i in 0..per_thread {
                    let key = format!("k{}", i % 7);
                    let _: () = redis::cmd("SET").arg(&key).arg(i).query(&mut con).unwrap();
                }
            });
        }
    });
    let total = 4 * per_thread;
    // A's writes commit at the primary; B holds all of its own tentatively.
    let held = scrape(&http["B"]);
    assert_eq!(
        metric(&held, "bayou_tentative_writes{replica=\"B\"}"),
        (2 * per_thread) as f64
    );
    assert_eq!(metric(&held, "bayou_offline{replica=\"B\"}"), 1.0);
    assert_eq!(
        metric(&held, "bayou_writes_accepted_total{replica=\"B\"}"),
        (2 * per_thread) as f64
    );

    b.ok(&["BAYOU.ONLINE"]);
    settled(&c, Duration::from_secs(30));
    let mut accepted = 0.0;
    for (id, addr) in &http {
        let m = scrape(addr);
        let l = |name: &str| format!("{name}{{replica=\"{id}\"}}");
        let csn = metric(&m, &l("bayou_csn"));
        // The load, after P's founding write (CSN 1), which every replica
        // learned before its restart with --http (cluster_with_http).
        assert_eq!(csn, total as f64 + 1.0, "{id}");
        // Every write of the load committed once, and this replica observed
        // the commit lag of each (none was truncated away before it learned
        // of it).
        assert_eq!(
            metric(&m, &l("bayou_writes_committed_total")),
            total as f64,
            "{id}"
        );
        assert_eq!(
            metric(&m, &l("bayou_commit_lag_seconds_count")),
            total as f64,
            "{id}"
        );
        assert!(metric(&m, &l("bayou_commit_lag_seconds_sum")) >= 0.0);
        assert_eq!(metric(&m, &l("bayou_tentative_writes")), 0.0, "{id}");
        assert_eq!(metric(&m, &l("bayou_offline")), 0.0, "{id}");
        assert_eq!(metric(&m, &l("bayou_log_writes")), csn, "{id}");
        assert!(metric(&m, &l("bayou_retained_bytes")) > 0.0, "{id}");
        assert!(metric(&m, &l("bayou_fsync_seconds_count")) > 0.0, "{id}");
        assert!(
            metric(&m, &l("bayou_anti_entropy_sessions_total")) > 0.0,
            "{id}"
        );
        accepted += metric(&m, &l("bayou_writes_accepted_total"));
        // Traffic by peer (which peers a replica picked is random): the
        // sessions by peer add up to the totals BAYOU.STATUS keeps, and
        // every replica received items and bytes from its peers.
        let peers = |name: &str| -> f64 {
            let prefix = format!("{name}{{replica=\"{id}\",peer=");
            m.iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(_, v)| v)
                .sum()
        };
        assert_eq!(
            peers("bayou_peer_sessions_total"),
            metric(&m, &l("bayou_anti_entropy_sessions_total")),
            "{id}"
        );
        assert_eq!(
            peers("bayou_peer_sessions_failed_total"),
            metric(&m, &l("bayou_anti_entropy_sessions_failed_total")),
            "{id}"
        );
        assert!(peers("bayou_peer_items_received_total") > 0.0, "{id}");
        assert!(peers("bayou_peer_received_bytes_total") > 0.0, "{id}");
        assert!(peers("bayou_peer_sent_bytes_total") > 0.0, "{id}");
    }
    assert_eq!(accepted, total as f64);
    let m = scrape(&http["B"]);
    assert!(
        metric(&m, "bayou_tentative_executions_total{replica=\"B\"}") >= (2 * per_thread) as f64
    );
}

#[test]
fn the_state_json_is_bounded_rollbacks_are_counted_and_a_taken_http_address_is_refused() {
    let (mut c, http) = cluster_with_http(&["--sync-interval-ms", "0", "--logical-clock"]);
    let a = c.r("A");
    let mut con = a.conn();
    for i in 0..250 {
        let _: () = redis::cmd("SET").arg("k").arg(i).query(&mut con).unwrap();
    }
    let (code, body) = http_get(&http["A"], "/api/state/A");
    assert_eq!(code, 200);
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["tentative"], 250);
    assert_eq!(state["tentative_writes"].as_array().unwrap().len(), 100);
    assert_eq!(state["tentative_writes"][0]["csn"], serde_json::Value::Null);
    assert_eq!(state["tentative_writes"][0]["op"], "W(k,0)");
    assert_eq!(http_get(&http["A"], "/api/state/Z").0, 404);

    // Rollbacks and redos: B's first write, <1,B>, sorts between A's <1,A>
    // and <2,A>. One session each way: B undoes <1,B> to insert <1,A> and
    // redoes it; A undoes its 249 writes after <1,B> and redoes them.
    let b = c.r("B");
    b.ok(&["SET", "b", "1"]);
    b.ok(&["BAYOU.SYNC", "A"]);
    let (ma, mb) = (scrape(&http["A"]), scrape(&http["B"]));
    assert_eq!(metric(&mb, "bayou_rollbacks_total{replica=\"B\"}"), 1.0);
    assert_eq!(
        metric(&mb, "bayou_tentative_executions_total{replica=\"B\"}"),
        1.0 + 250.0 + 1.0
    );
    assert_eq!(metric(&mb, "bayou_redone_writes_total{replica=\"B\"}"), 1.0);
    assert_eq!(metric(&ma, "bayou_rollbacks_total{replica=\"A\"}"), 249.0);
    assert_eq!(
        metric(&ma, "bayou_redone_writes_total{replica=\"A\"}"),
        249.0
    );
    assert_eq!(
        metric(&ma, "bayou_tentative_executions_total{replica=\"A\"}"),
        250.0 + 1.0 + 249.0
    );
    assert_eq!(metric(&mb, "bayou_tentative_writes{replica=\"B\"}"), 251.0);
    assert_eq!(
        metric(
            &mb,
            "bayou_peer_items_received_total{replica=\"B\",peer=\"A\"}"
        ),
        250.0
    );
    assert_eq!(
        metric(&mb, "bayou_peer_items_sent_total{replica=\"B\",peer=\"A\"}"),
        1.0
    );
    let (_, nodes) = http_get(&http["A"], "/api/nodes");
    let nodes: serde_json::Value = serde_json::from_str(&nodes).unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), 3, "{nodes}");

    // Another replica asked to serve HTTP on A's address stops with a
    // clear error.
    let b = c.r_mut("B");
    b.terminate();
    let at = b.args.iter().position(|a| a == "--http").unwrap();
    b.args[at + 1] = http["A"].clone();
    let e = b.try_start().unwrap_err();
    assert!(
        e.contains("cannot listen for HTTP on") && e.contains("choose another --http address"),
        "{e}"
    );
}

#[test]
fn the_web_view_shows_every_replica_log_in_a_browser() {
    let Some(chromium) = browser::require() else {
        return;
    };
    let (c, http) = cluster_with_http(&["--sync-interval-ms", "100", "--logical-clock"]);
    let (a, b) = (c.r("A"), c.r("B"));
    for (k, v) in [("x", "1"), ("y", "2"), ("z", "3")] {
        a.ok(&["SET", k, v]);
    }
    settled(&c, Duration::from_secs(20));
    // B goes offline and writes: tentative entries (∞) in its column only.
    b.ok(&["BAYOU.OFFLINE"]);
    b.ok(&["SET", "room", "booked-by-B"]);
    b.ok(&["SET", "y", "20"]);
    a.ok(&["SET", "w", "4"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    // CSN 1 is P's founding write.
    while c.r("P").status("csn") != "5" || a.status("csn") != "5" || a.status("tentative") != "0" {
        assert!(Instant::now() < deadline, "A's write did not commit");
        std::thread::sleep(Duration::from_millis(50));
    }
    // A's page: its own log and, through --peer-http, P's and B's.
    let url = format!("http://{}/", http["A"]);
    let dom = browser::dump_dom(&chromium, &url);
    for id in ["P", "A", "B"] {
        let at = dom
            .find(&format!("data-replica=\"{id}\""))
            .unwrap_or_else(|| panic!("no column for {id}:\n{dom}"));
        let column = &dom[at..];
        let column = &column[..column.find("</ol>").unwrap_or(column.len())];
        let committed = column.matches("class=\"write committed\"").count();
        let tentative = column.matches("class=\"write tentative\"").count();
        // P's founding write, then A's.
        let expected = if id == "B" { (4, 2) } else { (5, 0) };
        assert_eq!((committed, tentative), expected, "{id}:\n{column}");
        assert!(!column.contains("badge down"), "{id} shown down:\n{column}");
    }
    assert!(dom.contains("booked-by-B"), "{dom}");
    assert!(dom.contains("badge offline"), "{dom}");
    assert!(dom.contains("<circle"), "no SVG graph:\n{dom}");
    let png = browser::screenshot_path("bayou-web.png");
    browser::screenshot(&chromium, &url, &png);
    eprintln!("screenshot: {}", png.display());
}

#[test]
fn a_cluster_process_serves_every_replica_under_one_listener() {
    let dir = tempfile::tempdir().unwrap();
    let http = format!("127.0.0.1:{}", free_ports(1)[0]);
    // Two replicas on two consecutive free ports.
    let base = loop {
        let p = free_ports(1)[0];
        if std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _cluster = Stop(
        std::process::Command::new(common::BIN)
            .args([
                "cluster",
                "--replicas",
                "2",
                "--base-port",
                &base.to_string(),
            ])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--http", &http, "--sync-interval-ms", "50"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&http).is_err() {
        assert!(
            Instant::now() < deadline,
            "the cluster's HTTP listener did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The HTTP listener is bound before the replicas start: wait for A's.
    let client = redis::Client::open(format!("redis://127.0.0.1:{}/", base + 1)).unwrap();
    let mut a = loop {
        match client.get_connection() {
            Ok(c) => break c,
            Err(e) => assert!(Instant::now() < deadline, "A did not start: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _: () = redis::cmd("SET").arg("x").arg("1").query(&mut a).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = scrape(&http);
        // CSN 1 is P's founding write, CSN 2 A's.
        if m.get("bayou_csn{replica=\"A\"}") == Some(&2.0) {
            assert_eq!(metric(&m, "bayou_csn{replica=\"P\"}"), 2.0);
            assert_eq!(
                metric(&m, "bayou_writes_accepted_total{replica=\"A\"}"),
                1.0
            );
            assert_eq!(
                metric(&m, "bayou_writes_accepted_total{replica=\"P\"}"),
                0.0
            );
            assert_eq!(
                metric(&m, "bayou_commit_lag_seconds_count{replica=\"A\"}"),
                2.0
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A never learned its write committed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, nodes) = http_get(&http, "/api/nodes");
    assert_eq!(
        nodes,
        r#"[{"id":"P","url":"api/state/P"},{"id":"A","url":"api/state/A"}]"#
    );
    assert_eq!(http_get(&http, "/healthz"), (200, "ok\n".to_string()));
}
