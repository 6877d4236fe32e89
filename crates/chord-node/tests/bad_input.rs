//! Bad input as for any server: malformed peer frames and malformed RESP never
//! crash a node or corrupt its store. Also redis-cli and redis-benchmark
//! against a node, and `chord-node cluster`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use chord_core::data::{DataMsg, Record, Version};
use chord_node::wire::{self, Body, MAGIC, PROTOCOL_VERSION};
use common::*;

fn send_raw(port: u16, bytes: &[u8]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let _ = s.write_all(bytes);
    let mut buf = [0u8; 4096];
    // Read whatever comes back until the node closes or goes quiet.
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
    }
}

/// The peer prefix and the open authentication hello a node without a
/// cluster secret accepts (`server_kit::peer_auth`): what follows is read
/// as peer frames.
fn after_auth() -> Vec<u8> {
    let mut f = MAGIC.to_vec();
    f.extend_from_slice(&server_kit::peer_auth::open_hello_frame());
    f
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = after_auth();
    f.extend((payload.len() as u32).to_be_bytes());
    f.extend(payload);
    f
}

fn ping(port: u16) {
    let mut c = try_conn(port).expect("node still accepts clients");
    let p: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(p, "PONG");
}

/// A connection that sends the peer prefix and then nothing (or half a
/// frame) is closed after the peer idle timeout, as Bayou's are.
#[test]
fn a_peer_connection_that_sends_only_the_prefix_is_closed_after_the_idle_timeout() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ring = Ring::start_opts(1, 1, 4, &["--peer-idle-timeout-ms", "500"]);
    ring.wait_ring(Duration::from_secs(10));
    let port = ring.nodes[0].port;
    for sent in [MAGIC.to_vec(), [&MAGIC[..], &[0, 0][..]].concat()] {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&sent).unwrap();
        let start = std::time::Instant::now();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).expect("closed, not timed out");
        let took = start.elapsed();
        assert_eq!(n, 0, "the node sent {:?}", &buf[..n]);
        assert!(
            took >= Duration::from_millis(400) && took < Duration::from_secs(3),
            "closed after {took:?}"
        );
    }
    ping(port);
}

#[test]
fn malformed_frames_and_resp_never_crash_a_node_or_corrupt_its_store() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ring = Ring::start(3, 3);
    ring.wait_ring(Duration::from_secs(30));
    let keys = ring.write_keys("b", 150, 5);
    wait_until(Duration::from_secs(20), "3 copies", || {
        ring.copies_are(&keys, 3).is_ok()
    });
    let port = ring.nodes[1].port;

    let nowhere: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    let x = chord_core::IdSpace::default().hash(b"x");
    let valid = wire::encode(&Body::Data {
        from: nowhere,
        msg: DataMsg::Replicate {
            epoch: 0,
            req: 1,
            records: vec![(
                x,
                Record {
                    name: b"x".to_vec(),
                    value: Some(b"y".to_vec()),
                    version: Version {
                        stamp: 1,
                        writer: x,
                    },
                    author: None,
                },
            )],
        },
    });
    let mut cases: Vec<Vec<u8>> = vec![
        // Peer protocol.
        MAGIC[..5].to_vec(),
        b"\xC4CHORDX\n".to_vec(),
        frame(&[]),
        // Garbage where the authentication hello belongs.
        {
            let mut f = MAGIC.to_vec();
            f.extend(u32::MAX.to_be_bytes());
            f.extend([1u8; 64]);
            f
        },
        {
            let mut f = after_auth();
            f.extend(u32::MAX.to_be_bytes());
            f.extend([1u8; 64]);
            f
        },
        {
            let mut f = after_auth();
            f.extend(((64u32 << 20) + 1).to_be_bytes());
            f
        },
        frame(&[99, 0, 0, 0]),
        frame(&[&PROTOCOL_VERSION.to_be_bytes()[..], &[0x7F, 1, 2, 3]].concat()),
        frame(&valid[..valid.len() - 3]),
        frame(&valid[..2]),
        {
            // A frame announcing more bytes than it sends, then hang up.
            let mut f = after_auth();
            f.extend(1000u32.to_be_bytes());
            f.extend(&valid);
            f
        },
        // RESP.
        b"*-5\r\n".to_vec(),
        b"*2\r\n$abc\r\n".to_vec(),
        b"*1\r\n$99999999999\r\n".to_vec(),
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n:5\r\n".to_vec(),
        b"set \"unbalanced\r\n".to_vec(),
        b"*1\r\n$4\r\nPI".to_vec(),
        b"GET\r\nSET onlykey\r\nMSET a\r\nCHORD.LOOKUP\r\nCHORD.LOOKUP k SIDEWAYS\r\nCHORD.FINGERS VNODE 9\r\nHELLO 3\r\nSELECT 4\r\nNOSUCH\r\n".to_vec(),
    ];
    let mut rng = Rng(77);
    for _ in 0..30 {
        // Random bodies behind a valid header that can never decode: an
        // unknown Body variant tag.
        let len = 1 + rng.below(300);
        let mut p = PROTOCOL_VERSION.to_be_bytes().to_vec();
        p.push(0x40 + (rng.next() % 0x3F) as u8);
        p.extend((0..len).map(|_| rng.next() as u8));
        cases.push(frame(&p));
        // Random RESP-ish junk.
        let mut j: Vec<u8> = vec![b"*$+-:"[rng.below(5)]];
        j.extend((0..len).map(|_| b"0123456789\r\n*$-abc"[rng.below(18)]));
        cases.push(j);
    }
    cases.push(
        (0..1_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1)
            .collect(),
    );
    for (n, c) in cases.iter().enumerate() {
        send_raw(port, c);
        if n % 10 == 0 {
            ping(port);
        }
    }
    ping(port);
    // A well-formed replication whose record sits under another key's id
    // (and claims the highest version) is ignored: nothing is stored.
    let evil = chord_core::IdSpace::default().hash(b"evil");
    let forged = wire::encode(&Body::Data {
        from: nowhere,
        msg: DataMsg::Replicate {
            epoch: 0,
            req: 9,
            records: vec![(
                evil,
                Record {
                    name: b"forged".to_vec(),
                    value: Some(b"z".to_vec()),
                    version: Version {
                        stamp: u64::MAX,
                        writer: evil,
                    },
                    author: None,
                },
            )],
        },
    });
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&frame(&forged)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(s);
    let stored: Vec<String> = redis::cmd("CHORD.KEYS").query(&mut ring.conn(1)).unwrap();
    assert!(
        !stored.iter().any(|k| k == "forged"),
        "forged record stored"
    );
    // The errors are replies, not crashes.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"*1\r\n$5\r\nNOSUC\r\n").unwrap();
    let mut buf = [0u8; 128];
    let n = s.read(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"-ERR unknown command"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    // The store is intact: every key reads back through the attacked node
    // and through the others, with exactly 3 copies and nothing else stored.
    ring.check_keys(&keys, 6);
    let mut c = ring.conn(1);
    for (k, v) in keys.iter().take(50) {
        let got: Option<String> = redis::cmd("GET").arg(k).query(&mut c).unwrap();
        assert_eq!(got.as_deref(), Some(v.as_str()));
    }
    ring.copies_are(&keys, 3).unwrap();
    assert!(ring.ring_correct());

    // redis-cli and redis-benchmark against the attacked node.
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "CHORD.LOOKUP", "b:1"])
        .output()
        .expect("redis-cli is installed (apt install redis-tools)");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("127.0.0.1:"), "{text}");
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "ping,set,get,mset",
            "-n",
            "2000",
            "-c",
            "8",
            "-r",
            "500",
            "-q",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("redis-benchmark is installed (apt install redis-tools)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    for t in ["PING_INLINE: ", "SET: ", "GET: ", "MSET (10 keys): "] {
        assert!(
            text.lines()
                .any(|l| l.contains(t) && l.contains(" requests per second")),
            "no {t} result in {text}"
        );
    }
    assert!(!text.contains("WARNING") && !text.contains("ERR"), "{text}");
    eprintln!(
        "{}",
        text.lines()
            .filter(|l| l.contains("requests per second"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    ring.check_keys(&keys, 7);
}

#[test]
fn the_cluster_command_starts_a_ring_and_stops_it() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    // Four consecutive free ports.
    let base = loop {
        let p = free_ports(1)[0];
        if p < 65_000 && (1..4).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok()) {
            break p;
        }
    };
    let child = Command::new(BIN)
        .args([
            "cluster",
            "--nodes",
            "4",
            "--base-port",
            &base.to_string(),
            "--data-dir",
        ])
        .arg(tmp.path())
        .args([
            "--stabilize-ms",
            "100",
            "--sync-ms",
            "200",
            "--replicas",
            "2",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // SIGTERM on the way out, even if an assertion fails, so that the
    // cluster stops its nodes.
    struct Term(std::process::Child);
    impl Drop for Term {
        fn drop(&mut self) {
            // Only while it runs: a reaped pid may belong to someone else.
            if let Ok(None) = self.0.try_wait() {
                let _ = Command::new("kill").arg(self.0.id().to_string()).status();
                let _ = self.0.wait();
            }
        }
    }
    let mut child = Term(child);
    let ports: Vec<u16> = (0..4).map(|i| base + i).collect();
    wait_until(
        Duration::from_secs(30),
        "4 joined nodes in one ring",
        || {
            ports.iter().all(|p| {
                let Ok(mut c) = try_conn(*p) else {
                    return false;
                };
                let s: redis::RedisResult<Vec<Vec<String>>> =
                    redis::cmd("CHORD.SUCCESSORS").query(&mut c);
                matches!(s, Ok(v) if v.len() == 3)
            })
        },
    );
    let mut c = try_conn(ports[3]).unwrap();
    let () = redis::cmd("SET")
        .arg("hello")
        .arg("ring")
        .query(&mut c)
        .unwrap();
    let v: String = redis::cmd("GET")
        .arg("hello")
        .query(&mut try_conn(ports[0]).unwrap())
        .unwrap();
    assert_eq!(v, "ring");
    // SIGTERM stops the cluster and its nodes.
    Command::new("kill")
        .arg(child.0.id().to_string())
        .status()
        .unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
    wait_until(Duration::from_secs(10), "nodes stopped", || {
        ports.iter().all(|p| try_conn(*p).is_err())
    });
}

#[test]
fn the_cluster_command_reports_nodes_that_fail_and_exits_non_zero_when_none_start() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    // Two consecutive ports, both taken by this test: no node can bind.
    let (base, _held) = loop {
        let p = free_ports(1)[0];
        if p >= 65_000 {
            continue;
        }
        if let (Ok(a), Ok(b)) = (
            std::net::TcpListener::bind(("127.0.0.1", p)),
            std::net::TcpListener::bind(("127.0.0.1", p + 1)),
        ) {
            break (p, (a, b));
        }
    };
    let out = Command::new(BIN)
        .args([
            "cluster",
            "--nodes",
            "2",
            "--base-port",
            &base.to_string(),
            "--data-dir",
        ])
        .arg(tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a cluster with no node reported success"
    );
    assert!(err.contains("node 0 did not start"), "{err}");
}

#[test]
fn the_cluster_command_reports_a_node_that_exits() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let base = loop {
        let p = free_ports(1)[0];
        if p < 65_000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let child = Command::new(BIN)
        .args([
            "cluster",
            "--nodes",
            "2",
            "--base-port",
            &base.to_string(),
            "--data-dir",
        ])
        .arg(tmp.path())
        // Quiet nodes: their logs share the piped stderr, read only at the end.
        .args(["--stabilize-ms", "100", "--log", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(30), "node 1 answers", || {
        try_conn(base + 1).is_ok()
    });
    // Node 1 leaves the ring and its process exits.
    let _: redis::RedisResult<redis::Value> =
        redis::cmd("CHORD.LEAVE").query(&mut try_conn(base + 1).unwrap());
    wait_until(Duration::from_secs(10), "node 1 gone", || {
        try_conn(base + 1).is_err()
    });
    std::thread::sleep(Duration::from_millis(1200));
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("node 1 on 127.0.0.1:{} exited", base + 1)),
        "{err}"
    );
    assert!(out.status.success(), "node 0 still ran: {}", out.status);
}

/// Runs `chord-node serve` on `dir` (with `id`) and returns whether it
/// succeeded and its stderr; a refused directory exits at once.
fn serve_once(dir: &std::path::Path, id: &str) -> (bool, String) {
    let port = free_ports(1)[0];
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--id",
            id,
            "--id-binding",
            "none",
        ])
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run chord-node");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// As for Bayou: someone else's directory, another node's and a Bayou
/// replica's are refused, and left as they were.
#[test]
fn foreign_or_other_nodes_data_directories_are_refused_and_left_alone() {
    use server_kit::datadir::{DataDir, IDENTITY_FILE, Kind};
    let tmp = tempfile::tempdir().unwrap();
    let count = |d: &std::path::Path| std::fs::read_dir(d).unwrap().count();

    // A directory with someone else's files.
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("thesis.tex"), "precious").unwrap();
    let (ok, err) = serve_once(&foreign, "7");
    assert!(!ok);
    assert!(err.contains("not a Chord data directory"), "{err}");
    assert!(err.contains("thesis.tex"), "{err}");
    assert!(err.contains(&foreign.display().to_string()), "{err}");
    assert_eq!(count(&foreign), 1);

    // Another Chord node's directory.
    let other = tmp.path().join("other");
    drop(DataDir::open(&other, &chord_node::store::KIND, &"ab".repeat(20)).unwrap());
    let identity = std::fs::read(other.join(IDENTITY_FILE)).unwrap();
    let (ok, err) = serve_once(&other, "7");
    assert!(!ok);
    assert!(
        err.contains(&format!("belongs to node {}", "ab".repeat(20))),
        "{err}"
    );
    assert_eq!(std::fs::read(other.join(IDENTITY_FILE)).unwrap(), identity);
    assert_eq!(count(&other), 2);

    // A Bayou replica's directory.
    let bayou = tmp.path().join("bayou");
    let kind = Kind {
        name: "bayou",
        title: "Bayou",
        node: "replica",
        legacy_files: &[],
    };
    drop(DataDir::open(&bayou, &kind, "A").unwrap());
    let (ok, err) = serve_once(&bayou, "7");
    assert!(!ok);
    assert!(err.contains("belongs to a bayou node"), "{err}");
    assert_eq!(count(&bayou), 2);
}
