//! Bad input from clients and peers: each gets an error or a closed
//! connection, everyone else keeps being served, and no stored data changes.
//! Also: data directories that are corrupt or belong to someone else.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use bayou_core::{Item, ServerId, WriteId};
use bayou_node::wire::{self, MAGIC, Msg, PROTOCOL_VERSION};
use common::Cluster;

fn raw(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads until the server closes the connection; returns what it sent.
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("server closes the connection");
    out
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

/// A connection that has passed the peer magic and the open
/// authentication exchange ([`server_kit::peer_auth`]) of a replica
/// without a cluster secret; what it writes next is read as peer messages.
fn peer(port: u16) -> TcpStream {
    let mut s = raw(port);
    s.write_all(MAGIC).unwrap();
    s.write_all(&server_kit::peer_auth::open_hello_frame())
        .unwrap();
    s
}

/// Decodes the peer messages in `bytes`, after the authentication
/// exchange's challenge frame.
fn frames(bytes: &[u8]) -> Vec<Msg> {
    let mut buf = bytes::BytesMut::from(bytes);
    assert!(
        server_kit::peer_auth::skip_challenge(&mut buf).unwrap(),
        "no challenge frame"
    );
    let mut bytes = &buf[..];
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let n = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
        out.push(wire::decode(&bytes[4..4 + n]).unwrap());
        bytes = &bytes[4 + n..];
    }
    out
}

fn snapshot(c: &Cluster) -> (Vec<String>, Vec<String>, String) {
    let p = c.r("P");
    (p.log_lines(), p.vv(), p.status("durable_batches"))
}

#[test]
fn bad_clients_and_peers_get_errors_and_change_nothing() {
    let c = Cluster::start(&["P", "A"], &["--sync-interval-ms", "0", "--logical-clock"]);
    let p = c.r("P");
    p.ok(&["SET", "k", "v"]);
    // A client that stays connected throughout.
    let mut good = p.conn();
    let before = snapshot(&c);

    let check_alive = |good: &mut redis::Connection| {
        let v: Option<String> = redis::cmd("GET").arg("k").query(good).unwrap();
        assert_eq!(v.as_deref(), Some("v"));
    };

    // Malformed RESP: an integer where a bulk string belongs.
    let mut s = raw(p.port);
    s.write_all(b"*2\r\n$3\r\nGET\r\n:12\r\n").unwrap();
    let out = String::from_utf8(read_to_close(&mut s)).unwrap();
    assert!(out.starts_with("-ERR Protocol error"), "{out}");
    check_alive(&mut good);

    // A bulk length of 2^40.
    let mut s = raw(p.port);
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1099511627776\r\n")
        .unwrap();
    let out = String::from_utf8(read_to_close(&mut s)).unwrap();
    assert_eq!(out, "-ERR Protocol error: invalid bulk length\r\n");
    check_alive(&mut good);

    // Valid commands before the bad one in the same packet are answered.
    let mut s = raw(p.port);
    s.write_all(b"*1\r\n$4\r\nPING\r\n*1\r\n$-7\r\n").unwrap();
    let out = String::from_utf8(read_to_close(&mut s)).unwrap();
    assert!(out.starts_with("+PONG\r\n-ERR Protocol error"), "{out}");

    // Unknown commands and wrong arity: errors, and the connection stays.
    let e = redis::cmd("NOPE")
        .arg("x")
        .query::<String>(&mut good)
        .unwrap_err();
    assert!(e.to_string().contains("unknown command"), "{e}");
    let e = redis::cmd("SET")
        .arg("k")
        .query::<String>(&mut good)
        .unwrap_err();
    assert!(e.to_string().contains("wrong number of arguments"), "{e}");
    let e = redis::cmd("BAYOU.GET")
        .arg("k")
        .arg("SOMETIMES")
        .query::<String>(&mut good)
        .unwrap_err();
    assert!(e.to_string().contains("syntax"), "{e}");
    check_alive(&mut good);

    // Garbage on the peer protocol: a frame header of 4 GiB.
    let mut s = peer(p.port);
    s.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).unwrap();
    read_to_close(&mut s);
    check_alive(&mut good);

    // Garbage inside a well-sized frame: an Error, then close.
    let mut s = peer(p.port);
    s.write_all(&frame(&[0, 1, 0xee, 0xee, 0xee, 0xee]))
        .unwrap();
    let msgs = frames(&read_to_close(&mut s));
    assert!(matches!(&msgs[..], [Msg::Error { .. }]), "{msgs:?}");

    // A zero byte and then noise (not our magic).
    let mut s = raw(p.port);
    s.write_all(b"\0\x13\x37garbagegarbage").unwrap();
    read_to_close(&mut s);
    check_alive(&mut good);

    // A peer speaking the next protocol version.
    let mut s = peer(p.port);
    let hello = Msg::Hello {
        from: ServerId::new("A").unwrap(),
        to: ServerId::new("P").unwrap(),
    };
    s.write_all(&frame(&wire::encode_with_version(
        &hello,
        PROTOCOL_VERSION + 1,
    )))
    .unwrap();
    let msgs = frames(&read_to_close(&mut s));
    match &msgs[..] {
        [Msg::Error { message, version }] => {
            assert_eq!(*version, PROTOCOL_VERSION);
            assert!(
                message.contains(&format!("version {}", PROTOCOL_VERSION + 1)),
                "{message}"
            );
        }
        other => panic!("expected one Error, got {other:?}"),
    }

    // A Hello meant for another replica.
    let mut s = peer(p.port);
    let wrong = Msg::Hello {
        from: ServerId::new("A").unwrap(),
        to: ServerId::new("B").unwrap(),
    };
    s.write_all(&frame(&wire::encode(&wrong))).unwrap();
    let msgs = frames(&read_to_close(&mut s));
    assert!(matches!(&msgs[..], [Msg::Error { .. }]), "{msgs:?}");

    // A peer pushing an item that breaks the protocol: a commit for a write
    // P does not hold, to the primary.
    let mut s = peer(p.port);
    s.write_all(&frame(&wire::encode(&hello))).unwrap();
    s.write_all(&frame(&wire::encode(&Msg::PushOffer))).unwrap();
    let bogus = Item::Commit {
        id: WriteId::new(99, ServerId::new("A").unwrap()),
        csn: 2,
    };
    s.write_all(&frame(&wire::encode(&Msg::Chunk {
        chunk: bayou_core::Chunk::Items(vec![bogus]),
    })))
    .unwrap();
    s.write_all(&frame(&wire::encode(&Msg::End))).unwrap();
    let msgs = frames(&read_to_close(&mut s));
    assert!(
        matches!(
            &msgs[..],
            [Msg::Welcome { .. }, Msg::Pull { .. }, Msg::Error { .. }]
        ),
        "{msgs:?}"
    );

    check_alive(&mut good);
    assert_eq!(snapshot(&c), before, "stored data changed");
    // And the real peer still syncs.
    c.r("A").ok(&["BAYOU.SYNC", "P"]);
    assert_eq!(c.r("A").get("k").as_deref(), Some("v"));
}

fn serve_once(args: &[String]) -> (bool, String) {
    let out = Command::new(common::BIN)
        .arg("serve")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn serve_args(id: &str, dir: &std::path::Path) -> Vec<String> {
    let port = common::free_ports(1)[0];
    vec![
        "--id".into(),
        id.into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        dir.display().to_string(),
        "--primary".into(),
        "P".into(),
    ]
}

#[test]
fn corrupt_or_foreign_data_directories_are_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    // A directory with someone else's files.
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("thesis.tex"), "precious").unwrap();
    let (ok, err) = serve_once(&serve_args("A", &foreign));
    assert!(!ok);
    assert!(err.contains("not a Bayou data directory"), "{err}");
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 1);

    // A corrupt database file.
    let corrupt = tmp.path().join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    let garbage = vec![0x5a; 8192];
    std::fs::write(corrupt.join("bayou.redb"), &garbage).unwrap();
    let (ok, err) = serve_once(&serve_args("A", &corrupt));
    assert!(!ok);
    assert!(err.contains("corrupt"), "{err}");
    assert!(std::fs::read(corrupt.join("bayou.redb")).unwrap() == garbage);

    // Another replica's directory.
    let mut c = Cluster::start(&["P", "A"], &["--sync-interval-ms", "0"]);
    c.r("A").ok(&["SET", "k", "v"]);
    assert!(c.r_mut("A").terminate().success());
    let a_dir = c.r("A").dir.clone();
    let before = common::dir_bytes(&a_dir);
    let (ok, err) = serve_once(&serve_args("B", &a_dir));
    assert!(!ok);
    assert!(err.contains("belongs to replica A"), "{err}");
    assert!(
        common::dir_bytes(&a_dir) == before,
        "refusal changed the file"
    );
    c.r_mut("A").start();
    assert_eq!(c.r("A").get("k").as_deref(), Some("v"));
}

#[test]
fn redis_benchmark_runs_clean() {
    let c = Cluster::start(&["P"], &["--sync-interval-ms", "0"]);
    let port = c.r("P").port.to_string();
    for pipeline in ["1", "16"] {
        let out = Command::new("redis-benchmark")
            .args([
                "-p", &port, "-t", "set,get", "-n", "1500", "-q", "-P", pipeline,
            ])
            .output()
            .expect("redis-benchmark must be installed (Debian package redis-tools)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &*String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("SET: ") && text.contains("GET: "), "{text}");
        assert!(!text.contains("WARN") && !text.contains("ERR"), "{text}");
    }
    // Without -r every SET goes to the one key `key:__rand_int__`, with the
    // default 3-byte payload; each SET was one write, committed (with -P,
    // redis-benchmark rounds its requests up to whole pipelines).
    assert_eq!(c.r("P").get("key:__rand_int__").map(|v| v.len()), Some(3));
    let csn: u64 = c.r("P").status("csn").parse().unwrap();
    assert!((3000..3000 + 16 * 50).contains(&csn), "{csn}");
}
