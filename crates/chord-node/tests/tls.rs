//! TLS (docs/tls.md): real `chord-node` processes with certificates made by
//! `chord-node tls-certs`, reached over `rediss://` with the `redis` crate,
//! `redis-cli --tls` and redis-py; a ring whose nodes talk over TLS, and a
//! node with another CA's certificates that cannot join it.

mod common;
#[path = "../../../tests/clients/libs.rs"]
#[allow(dead_code)]
mod libs;
#[path = "../../server-kit/tests/support/tls.rs"]
mod tls_support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{BIN, Ring, SERIAL, info_field, wait_until};
use redis::Value;

/// `chord-node tls-certs --out DIR`, checked.
fn make_certs(dir: &Path) -> PathBuf {
    tls_support::make_certs(BIN, dir)
}

/// The `serve` flags for the certificates in `dir`.
fn flags(dir: &Path) -> Vec<String> {
    tls_support::serve_flags(dir, dir)
}

/// A TLS connection to `port`, trusting the CA in `dir`.
fn try_tls(port: u16, dir: &Path) -> redis::RedisResult<redis::Connection> {
    tls_support::connect(&tls_support::client(port, dir, None))
}

fn tls(port: u16, dir: &Path) -> redis::Connection {
    try_tls(port, dir).unwrap_or_else(|e| panic!("TLS connection to {port}: {e}"))
}

/// Whether every node of `ring` has joined and its successor is another
/// node.
fn joined(ring: &Ring, dir: &Path) -> bool {
    ring.live().into_iter().all(|i| {
        let Ok(mut c) = try_tls(ring.nodes[i].port, dir) else {
            return false;
        };
        let succs: Vec<Vec<String>> = redis::cmd("CHORD.SUCCESSORS")
            .query(&mut c)
            .unwrap_or_default();
        info_field(&mut c, "joined") == "1"
            && info_field(&mut c, "ready") == "1"
            && succs.first().is_some_and(|s| s[1] != ring.nodes[i].addr())
    })
}

fn tls_ring(n: usize, dir: &Path) -> Ring {
    let extra = flags(dir);
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    Ring::start_opts(n, 2, 4, &extra)
}

#[test]
fn a_tls_ring_of_three_stores_and_reads_keys_through_non_owners() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("certs"));
    let ring = tls_ring(3, &certs);
    wait_until(Duration::from_secs(30), "a joined TLS ring", || {
        joined(&ring, &certs)
    });
    let mut first = tls(ring.nodes[0].port, &certs);
    for k in 0..30 {
        let ok: String = redis::cmd("SET")
            .arg(format!("k{k}"))
            .arg(format!("v{k}"))
            .query(&mut first)
            .unwrap();
        assert_eq!(ok, "OK");
    }
    let mut owners = std::collections::BTreeSet::new();
    for k in 0..30 {
        let key = format!("k{k}");
        let lookup: Vec<Value> = redis::cmd("CHORD.LOOKUP")
            .arg(&key)
            .query(&mut first)
            .unwrap();
        let owner: String = redis::from_redis_value(&lookup[1]).unwrap();
        owners.insert(owner.clone());
        // Read through a node that is not the owner: the request goes on
        // to the owner over a TLS peer connection.
        let reader = ring
            .nodes
            .iter()
            .find(|n| n.addr() != owner)
            .expect("a non-owner");
        let got: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query(&mut tls(reader.port, &certs))
            .unwrap();
        assert_eq!(
            got,
            Some(format!("v{k}")),
            "{key} through {}",
            reader.addr()
        );
    }
    assert!(owners.len() > 1, "every key on one node: {owners:?}");
}

#[test]
fn a_tls_node_answers_redis_cli_and_redis_py_and_closes_plain_text_clients() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("certs"));
    let ring = tls_ring(1, &certs);
    let port = ring.nodes[0].port;
    wait_until(Duration::from_secs(10), "the node to serve TLS", || {
        try_tls(port, &certs).is_ok()
    });
    let mut c = tls(port, &certs);
    let info: String = redis::cmd("INFO").query(&mut c).unwrap();
    assert!(info.contains("\r\ntls_enabled:1\r\n"), "{info}");
    let ca: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("tls-ca-cert-file")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        ca,
        [
            "tls-ca-cert-file".to_string(),
            certs.join("ca.pem").display().to_string()
        ]
    );
    // A plain-text client gets no answer and is closed.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain.write_all(b"PING\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.windows(4).any(|w| w == b"PONG"), "{got:?}");
    // The node keeps serving: redis-cli --tls.
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(certs.join("ca.pem"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(cli(&["SET", "cli", "over-tls"]), "OK\n");
    assert_eq!(cli(&["GET", "cli"]), "over-tls\n");
    // redis-py, sync and asyncio.
    if let Some(mut cmd) = libs::python("tls_py.py", port) {
        cmd.arg(certs.join("ca.pem"));
        libs::run(cmd, "redis-py over TLS");
    }
}

#[test]
fn a_node_with_another_cas_certificates_cannot_join() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let ours = make_certs(&tmp.path().join("ours"));
    let theirs = make_certs(&tmp.path().join("theirs"));
    let mut ring = tls_ring(1, &ours);
    wait_until(Duration::from_secs(10), "the first node", || {
        try_tls(ring.nodes[0].port, &ours).is_ok()
    });
    let mut first = tls(ring.nodes[0].port, &ours);
    let ok: String = redis::cmd("SET")
        .arg("ours")
        .arg("1")
        .query(&mut first)
        .unwrap();
    assert_eq!(ok, "OK");
    // The stranger joins through the first node, with its own CA.
    ring.extra = flags(&theirs);
    let stranger = ring.add_node();
    let port = ring.nodes[stranger].port;
    wait_until(Duration::from_secs(10), "the stranger to serve TLS", || {
        try_tls(port, &theirs).is_ok()
    });
    // Several stabilization rounds later, it has found no way in (its
    // requests to the first node fail the handshake: it keeps asking) and
    // the first node has no successor.
    std::thread::sleep(Duration::from_secs(3));
    let mut c = tls(port, &theirs);
    assert_eq!(info_field(&mut c, "successor"), "");
    assert_eq!(info_field(&mut c, "predecessor"), "");
    let succs: Vec<Vec<String>> = redis::cmd("CHORD.SUCCESSORS").query(&mut first).unwrap();
    assert_eq!(succs, Vec::<Vec<String>>::new());
    let keys: Vec<String> = redis::cmd("CHORD.KEYS").query(&mut c).unwrap();
    assert_eq!(keys, Vec::<String>::new());
}

#[test]
fn chord_cluster_tls_starts_a_ring_that_serves_over_tls() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cluster");
    let base = loop {
        let base = common::free_ports(1)[0];
        if base < 65000 && std::net::TcpListener::bind(("127.0.0.1", base + 1)).is_ok() {
            break base;
        }
    };
    let mut child = Command::new(BIN)
        .args(["cluster", "--tls", "--nodes", "2"])
        .args(["--base-port", &base.to_string()])
        .arg("--data-dir")
        .arg(&data)
        .args(common::fast_flags(2))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The banner comes once both nodes answer PING over TLS.
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut banner = String::new();
    while !banner.starts_with("chord cluster:") {
        banner.clear();
        if std::io::BufRead::read_line(&mut out, &mut banner).unwrap() == 0 {
            break;
        }
    }
    let ca = data.join("tls");
    let stop = |child: &mut std::process::Child| {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    };
    let expected = format!(
        "chord cluster: 2 of 2 nodes on 127.0.0.1:{base}..{}; try: redis-cli --tls --cacert {}/ca.pem -p {base} CHORD.INFO; Ctrl-C stops them\n",
        base + 1,
        ca.display()
    );
    if banner != expected {
        stop(&mut child);
        panic!("banner {banner:?}, want {expected:?}");
    }
    let result = std::panic::catch_unwind(|| {
        wait_until(Duration::from_secs(30), "a SET over TLS", || {
            try_tls(base + 1, &ca)
                .and_then(|mut c| redis::cmd("SET").arg("k").arg("v").query::<String>(&mut c))
                .is_ok()
        });
        let got: Option<String> = redis::cmd("GET")
            .arg("k")
            .query(&mut tls(base, &ca))
            .unwrap();
        assert_eq!(got.as_deref(), Some("v"));
    });
    stop(&mut child);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
