//! The `--http` listener of real node processes: `/metrics` scraped from a
//! ring under load and through a node's death (the values move as the
//! protocol says they must), `/healthz`, and the ring view of `chord
//! cluster --http` loaded in headless Chromium.

mod common;

#[path = "../../server-kit/tests/support/browser.rs"]
mod browser;
#[path = "../../server-kit/tests/support/http.rs"]
mod http;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use http::{http_get, scrape};

fn metric(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key)
        .copied()
        .unwrap_or_else(|| panic!("no sample {key} in {:#?}", m.keys().collect::<Vec<_>>()))
}

/// The sum of a metric's samples whose key starts with `prefix`.
fn sum_of(m: &BTreeMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// Node processes started with `--http`, killed when dropped.
struct Nodes {
    children: Vec<Option<Child>>,
    ports: Vec<u16>,
    http: Vec<String>,
    _tmp: tempfile::TempDir,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Nodes {
    fn start(n: usize, replicas: usize, successors: usize) -> Nodes {
        let tmp = tempfile::tempdir().unwrap();
        let ports = free_ports(2 * n);
        let (ports, http_ports) = ports.split_at(n);
        let http: Vec<String> = http_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let mut nodes = Nodes {
            children: Vec::new(),
            ports: ports.to_vec(),
            http: http.clone(),
            _tmp: tmp,
        };
        for i in 0..n {
            let mut cmd = Command::new(BIN);
            cmd.arg("serve")
                .arg("--listen")
                .arg(format!("127.0.0.1:{}", ports[i]))
                .arg("--data-dir")
                .arg(nodes._tmp.path().join(format!("n{i}")))
                .arg("--http")
                .arg(&http[i])
                .args(fast_flags_with(replicas, successors))
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if i > 0 {
                cmd.arg("--join").arg(format!("127.0.0.1:{}", ports[0]));
            }
            nodes
                .children
                .push(Some(cmd.spawn().expect("spawn chord-node")));
            wait_until(Duration::from_secs(10), "the node's HTTP listener", || {
                TcpStream::connect(&http[i]).is_ok()
            });
        }
        nodes
    }
}

#[test]
fn metrics_follow_the_ring_under_load_and_through_a_death() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut nodes = Nodes::start(4, 3, 3);
    for h in &nodes.http {
        assert_eq!(http_get(h, "/healthz"), (200, "ok\n".to_string()));
    }
    // The ring settles: full successor lists, every node ready.
    wait_until(Duration::from_secs(30), "a settled ring", || {
        nodes.http.iter().all(|h| {
            let m = scrape(h);
            m.get("chord_successor_list_length") == Some(&3.0)
                && m.get("chord_virtual_nodes_ready") == Some(&1.0)
                && m.get("chord_predecessors_known") == Some(&1.0)
        })
    });
    let before = scrape(&nodes.http[0]);
    assert_eq!(metric(&before, "chord_successor_list_capacity"), 3.0);
    assert!(metric(&before, "chord_fingers_set") > 0.0);
    assert!(metric(&before, "process_resident_memory_bytes") > 1e6);

    // Load: 200 writes and 200 reads through node 0.
    let keys = 200;
    let mut c = try_conn(nodes.ports[0]).unwrap();
    for i in 0..keys {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut c)
            .unwrap();
    }
    for i in 0..keys {
        let v: String = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut c)
            .unwrap();
        assert_eq!(v, i.to_string());
    }
    let after = scrape(&nodes.http[0]);
    // Every client operation looked its key's owner up from node 0.
    let lookups =
        metric(&after, "chord_lookup_hops_count") - metric(&before, "chord_lookup_hops_count");
    assert!(lookups >= (2 * keys) as f64, "{lookups}");
    assert_eq!(
        metric(&after, "chord_lookup_seconds_count")
            - metric(&before, "chord_lookup_seconds_count"),
        lookups
    );
    assert!(metric(&after, "chord_lookups_total") > metric(&before, "chord_lookups_total"));
    assert_eq!(metric(&after, "chord_lookups_started_failed_total"), 0.0);
    assert!(metric(&after, "chord_client_commands_total") >= (2 * keys) as f64);
    // Requests answered, by peer: at least the successor (stabilize) and
    // the predecessor (check_predecessor), distinct in a ring of 4; every
    // peer label is another node.
    let answered: Vec<&String> = after
        .iter()
        .filter(|(k, v)| k.starts_with("chord_rpc_seconds_count{") && **v > 0.0)
        .map(|(k, _)| k)
        .collect();
    assert!(answered.len() >= 2, "{answered:?}");
    for k in &answered {
        assert!(
            nodes.ports[1..]
                .iter()
                .any(|p| k.contains(&format!("peer=\"127.0.0.1:{p}\""))),
            "{k}"
        );
    }
    // Every key is owned once and stored three times in all.
    let counts = |nodes: &Nodes, alive: &[usize]| -> (f64, f64, f64) {
        let ms: Vec<_> = alive.iter().map(|i| scrape(&nodes.http[*i])).collect();
        (
            ms.iter().map(|m| metric(m, "chord_keys_owned")).sum(),
            ms.iter().map(|m| metric(m, "chord_keys_stored")).sum(),
            ms.iter().map(|m| metric(m, "chord_keys_replicated")).sum(),
        )
    };
    wait_until(Duration::from_secs(20), "3 copies of every key", || {
        counts(&nodes, &[0, 1, 2, 3]) == (keys as f64, 3.0 * keys as f64, 2.0 * keys as f64)
    });

    // Node 3 dies. The others time out on it, shorten their successor
    // lists, and repair: three copies again, on the three left.
    let before: Vec<_> = (0..3).map(|i| scrape(&nodes.http[i])).collect();
    let total = |ms: &[BTreeMap<String, f64>], name: &str| -> f64 {
        ms.iter().map(|m| metric(m, name)).sum()
    };
    let pushed_before = total(&before, "chord_records_pushed_total");
    let repaired_before = total(&before, "chord_records_repaired_total");
    let mut dead = nodes.children[3].take().unwrap();
    dead.kill().unwrap();
    dead.wait().unwrap();
    let dead_peer = format!("peer=\"127.0.0.1:{}\"", nodes.ports[3]);
    wait_until(Duration::from_secs(30), "the ring to repair", || {
        let ms: Vec<_> = (0..3).map(|i| scrape(&nodes.http[i])).collect();
        ms.iter()
            .all(|m| metric(m, "chord_successor_list_length") == 2.0)
            && counts(&nodes, &[0, 1, 2]) == (keys as f64, 3.0 * keys as f64, 2.0 * keys as f64)
    });
    let ms: Vec<_> = (0..3).map(|i| scrape(&nodes.http[i])).collect();
    let timeouts: f64 = ms
        .iter()
        .map(|m| sum_of(m, &format!("chord_rpc_timeouts_total{{{dead_peer}")))
        .sum();
    assert!(timeouts > 0.0, "no timeouts recorded for the dead node");
    assert!(
        ms.iter()
            .map(|m| metric(m, "chord_core_timeouts_total"))
            .sum::<f64>()
            > 0.0
    );
    let pushed = total(&ms, "chord_records_pushed_total");
    assert!(pushed > pushed_before, "{pushed} <= {pushed_before}");
    // The copies lost with node 3 come back by repair, not by hand-off.
    let repaired = total(&ms, "chord_records_repaired_total");
    assert!(
        repaired > repaired_before,
        "{repaired} <= {repaired_before}"
    );
}

#[test]
fn the_ring_view_shows_the_ring_fingers_and_a_lookup_path_in_a_browser() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some(chromium) = browser::require() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let n = 5;
    // `chord cluster` gives node i the HTTP port after the page's plus i:
    // find a run of free ports.
    let (base, web) = loop {
        let p = free_ports(1)[0];
        if (1..=n as u16).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            let base = free_ports(1)[0];
            if (1..n as u16).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
                && base.abs_diff(p) > n as u16
            {
                break (base, p);
            }
        }
    };
    struct Cluster(Child);
    impl Drop for Cluster {
        fn drop(&mut self) {
            // SIGTERM: the cluster stops its nodes.
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
        }
    }
    let _cluster = Cluster(
        Command::new(BIN)
            .arg("cluster")
            .args(["--nodes", &n.to_string(), "--base-port", &base.to_string()])
            .arg("--data-dir")
            .arg(tmp.path())
            .args(["--http", &format!("127.0.0.1:{web}")])
            .args(fast_flags_with(3, 4))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chord-node cluster"),
    );
    let node_http: Vec<String> = (1..=n as u16)
        .map(|i| format!("127.0.0.1:{}", web + i))
        .collect();
    wait_until(Duration::from_secs(60), "a settled ring", || {
        node_http.iter().all(|h| {
            TcpStream::connect(h).is_ok() && {
                let m = scrape(h);
                m.get("chord_successor_list_length") == Some(&4.0)
                    && m.get("chord_virtual_nodes_ready") == Some(&1.0)
            }
        })
    });
    let mut c = try_conn(base).unwrap();
    for k in ["greeting", "alpha", "beta", "gamma"] {
        let _: () = redis::cmd("SET").arg(k).arg("v").query(&mut c).unwrap();
    }
    let url = format!("http://127.0.0.1:{web}/?lookup=greeting");
    let dom = browser::dump_dom(&chromium, &url);
    // Every node on the ring (polled, so filled) and in the table.
    assert_eq!(dom.matches("class=\"node\"").count(), n, "{dom}");
    assert_eq!(
        dom.matches("class=\"node-row\"").count()
            + dom.matches("class=\"node-row chosen\"").count(),
        n,
        "{dom}"
    );
    assert!(!dom.contains("node-row down"), "{dom}");
    for p in 0..n as u16 {
        assert!(
            dom.contains(&format!("data-addr=\"127.0.0.1:{}\"", base + p)),
            "{dom}"
        );
    }
    // The chosen node's fingers as chords, and the lookup's path.
    assert!(dom.contains("class=\"finger\""), "{dom}");
    let path = dom
        .split("<ol id=\"lookup-path\">")
        .nth(1)
        .unwrap_or_else(|| panic!("no lookup path:\n{dom}"));
    let path = &path[..path.find("</ol>").unwrap()];
    assert!(path.matches("<li>").count() >= 1, "{path}");
    assert!(dom.contains("key greeting"), "{dom}");
    assert!(dom.contains("4 keys owned in all"), "{dom}");
    let png = browser::screenshot_path("chord-web.png");
    browser::screenshot(&chromium, &url, &png);
    eprintln!("screenshot: {}", png.display());
}
