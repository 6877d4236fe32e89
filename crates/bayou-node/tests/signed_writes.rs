//! Signed writes between real replica processes (docs/signed-writes.md):
//! a modified peer, written here, relays a real write with its value or
//! its author changed, and the replica it reaches refuses it, logs and
//! counts it, and changes nothing; honest anti-entropy still delivers the
//! real write. A bundle file edited on the way is refused on import. Bad
//! key files and keyrings stop a replica at startup with a clear message.

mod common;

#[path = "../../server-kit/tests/support/http.rs"]
mod http;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bayou_core::{Chunk, Item, Op, ServerId, Summary};
use bayou_node::wire::{self, MAGIC, Msg};
use common::{Cluster, Replica, free_ports};

fn sid(s: &str) -> ServerId {
    ServerId::new(s).unwrap()
}

/// `bayou-node keys`: creates the key, prints the keyring line.
fn keys(path: &Path, id: &str) -> String {
    let out = Command::new(common::BIN)
        .args(["keys", "--signing-key"])
        .arg(path)
        .args(["--id", id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// P (primary), A and B, each with its own --signing-key and the one
/// keyring; no periodic anti-entropy, logical clocks; B also serves
/// `--http` (returned) for its metrics.
fn signed_cluster() -> (Cluster, String) {
    signed_cluster_with(&[])
}

/// [`signed_cluster`] with more `serve` flags for every replica.
fn signed_cluster_with(extra: &[String]) -> (Cluster, String) {
    let dir = tempfile::tempdir().unwrap();
    let ids = ["P", "A", "B"];
    let mut keyring = String::from("# test cluster\n");
    for id in ids {
        keyring += &keys(&dir.path().join(format!("{id}.pem")), id);
    }
    std::fs::write(dir.path().join("keyring"), keyring).unwrap();
    let ports = free_ports(4);
    let http = format!("127.0.0.1:{}", ports[3]);
    let mut replicas = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let data = dir.path().join(id);
        let mut args: Vec<String> = vec![
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            format!("127.0.0.1:{}", ports[i]),
            "--data-dir".into(),
            data.display().to_string(),
            "--primary".into(),
            "P".into(),
            "--sync-interval-ms".into(),
            "0".into(),
            "--logical-clock".into(),
            "--signing-key".into(),
            dir.path().join(format!("{id}.pem")).display().to_string(),
            "--keyring".into(),
            dir.path().join("keyring").display().to_string(),
        ];
        for (j, other) in ids.iter().enumerate() {
            if j != i {
                args.push("--peer".into());
                args.push(format!("{other}=127.0.0.1:{}", ports[j]));
            }
        }
        if *id == "B" {
            args.extend(["--http".into(), http.clone()]);
        }
        args.extend(extra.iter().cloned());
        replicas.push(Replica {
            id: id.to_string(),
            port: ports[i],
            dir: data,
            args,
            log: dir.path().join(format!("{id}.log")),
            child: None,
            env: Vec::new(),
            wrap: Vec::new(),
            host: "127.0.0.1".into(),
        });
    }
    for r in &mut replicas {
        r.start();
    }
    (Cluster { dir, replicas }, http)
}

/// A peer connection: the magic, the peer authentication exchange, then
/// `Hello` from `from` to `to`. The replicas here run without a cluster
/// secret, so the exchange is the open one: this stands for a modified
/// peer that holds the secret (peer authentication lets it in; the
/// signatures are what stop it).
fn peer(port: u16, from: &str, to: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(MAGIC).unwrap();
    s.write_all(&server_kit::peer_auth::open_hello_frame())
        .unwrap();
    // The replica's challenge frame.
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut challenge = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut challenge).unwrap();
    send(
        &mut s,
        &Msg::Hello {
            from: sid(from),
            to: sid(to),
        },
    );
    s
}

fn send(s: &mut TcpStream, msg: &Msg) {
    let payload = wire::encode(msg);
    let mut f = (payload.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&payload);
    s.write_all(&f).unwrap();
}

fn recv(s: &mut TcpStream) -> Msg {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut payload).unwrap();
    wire::decode(&payload).unwrap()
}

/// The modified peer's first half: pulls, as an empty replica would, every
/// item `id` (at `port`) has.
fn pull_all(port: u16, id: &str) -> Vec<Item> {
    let mut s = peer(port, "B", id);
    assert!(matches!(recv(&mut s), Msg::Welcome { .. }));
    send(
        &mut s,
        &Msg::Pull {
            summary: Summary::default(),
        },
    );
    let mut items = Vec::new();
    loop {
        match recv(&mut s) {
            Msg::Chunk {
                chunk: Chunk::Items(i),
            } => items.extend(i),
            Msg::End => return items,
            other => panic!("expected items, got {other:?}"),
        }
    }
}

/// The modified peer's second half: pushes `items` to replica `to` as
/// replica A would, and returns the refusal it gets.
fn push(port: u16, to: &str, items: Vec<Item>) -> String {
    let mut s = peer(port, "A", to);
    send(&mut s, &Msg::PushOffer);
    assert!(matches!(recv(&mut s), Msg::Welcome { .. }));
    assert!(matches!(recv(&mut s), Msg::Pull { .. }));
    send(
        &mut s,
        &Msg::Chunk {
            chunk: Chunk::Items(items),
        },
    );
    send(&mut s, &Msg::End);
    match recv(&mut s) {
        Msg::Error { message, .. } => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The one write among `items`, changed by `f`.
fn tampered(items: &[Item], f: impl Fn(&mut bayou_core::Write)) -> Vec<Item> {
    let mut items = items.to_vec();
    match &mut items[..] {
        [Item::Write { write, .. }] => f(write),
        other => panic!("expected one write, got {other:?}"),
    }
    items
}

/// The log without its terminal colours.
fn plain(log: &str) -> String {
    let mut out = String::new();
    let mut rest = log;
    while let Some(i) = rest.find('\x1b') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        rest = rest.find('m').map_or("", |m| &rest[m + 1..]);
    }
    out + rest
}

fn forged_counter(http: &str) -> f64 {
    http::scrape(http)
        .get("bayou_forged_writes_refused_total{replica=\"B\"}")
        .copied()
        .expect("the counter is exported")
}

#[test]
fn a_write_tampered_by_a_modified_peer_is_refused_where_it_arrives() {
    let (c, http) = signed_cluster();
    let (a, b) = (c.r("A"), c.r("B"));
    a.ok(&["SET", "x", "1"]);
    assert_eq!(a.log_lines(), ["∞:1:A W(x,1)"]);
    let real = pull_all(a.port, "A");
    assert_eq!(forged_counter(&http), 0.0);

    // The value changed on the way.
    let message = push(b.port, "B", tampered(&real, |w| w.op = Op::put("x", "666")));
    assert_eq!(
        message,
        "refused a chunk: forged write 1:A refused: its signature does not match its id, author and operation"
    );
    // The author changed on the way (the real write has none: it was
    // accepted on an open connection).
    let message = push(
        b.port,
        "B",
        tampered(&real, |w| w.author = Some(Arc::from("root"))),
    );
    assert_eq!(
        message,
        "refused a chunk: forged write 1:A refused: its signature does not match its id, author and operation"
    );
    // The signature dropped on the way.
    let message = push(b.port, "B", tampered(&real, |w| w.signature = None));
    assert_eq!(
        message,
        "refused a chunk: forged write 1:A refused: it is not signed"
    );

    // Nothing changed at B; it logged and counted each refusal.
    assert_eq!(b.log_lines(), Vec::<String>::new());
    assert_eq!(b.get("x"), None);
    assert_eq!(b.vv(), Vec::<String>::new());
    assert_eq!(forged_counter(&http), 3.0);
    let log = plain(&b.log_text());
    assert_eq!(log.matches("refused a forged write").count(), 3, "{log}");
    assert!(
        log.contains("refused a forged write id=B from=\"A\" write=1:A reason=its signature does not match its id, author and operation"),
        "{log}"
    );
    assert!(
        log.contains("refused a forged write id=B from=\"A\" write=1:A reason=it is not signed"),
        "{log}"
    );

    // Honest anti-entropy delivers the real write, which the primary
    // commits.
    a.ok(&["BAYOU.SYNC", "P"]);
    b.ok(&["BAYOU.SYNC", "P"]);
    assert_eq!(b.get("x").as_deref(), Some("1"));
    assert_eq!(b.log_lines(), [c.founding(), "2:1:A W(x,1)".into()]);
    assert_eq!(forged_counter(&http), 3.0);
}

#[test]
fn a_tampered_bundle_is_refused_on_import_and_the_real_one_imports() {
    let (c, http) = signed_cluster();
    let (a, b) = (c.r("A"), c.r("B"));
    a.ok(&["SET", "y", "2"]);
    let summary: Vec<u8> = redis::cmd("BAYOU.SUMMARY").query(&mut b.conn()).unwrap();
    let files: Vec<Vec<u8>> = redis::cmd("BAYOU.EXPORT")
        .arg(&summary)
        .query(&mut a.conn())
        .unwrap();
    assert_eq!(files.len(), 1);
    let mut bundle = bayou_core::bundle::decode(&files[0]).unwrap();
    for chunk in &mut bundle.chunks {
        if let Chunk::Items(items) = chunk {
            for item in items {
                if let Item::Write { write, .. } = item {
                    write.op = Op::put("y", "666");
                }
            }
        }
    }
    // The file's checksums are recomputed: only the signature can tell.
    let forged = bayou_core::bundle::encode(&bundle);
    let e = redis::cmd("BAYOU.IMPORT")
        .arg(&forged)
        .query::<redis::Value>(&mut b.conn())
        .unwrap_err();
    assert_eq!(
        e.detail(),
        Some(
            "bundle refused, nothing changed: bundle refused by the protocol: forged write 1:A refused: its signature does not match its id, author and operation"
        ),
        "{e}"
    );
    assert_eq!(b.log_lines(), Vec::<String>::new());
    assert_eq!(forged_counter(&http), 1.0);
    let log = plain(&b.log_text());
    assert!(
        log.contains("refused a forged write id=B from=\"bundle from A\" write=1:A reason=its signature does not match its id, author and operation"),
        "{log}"
    );
    let _: redis::Value = redis::cmd("BAYOU.IMPORT")
        .arg(&files[0])
        .query(&mut b.conn())
        .unwrap();
    assert_eq!(b.log_lines(), ["∞:1:A W(y,2)"]);
    assert_eq!(b.get("y").as_deref(), Some("2"));
}

/// Runs `bayou-node serve` with `extra` flags until it exits (it must
/// refuse to start); returns its stderr.
fn refused_start(dir: &Path, extra: &[&str]) -> String {
    let port = free_ports(1)[0];
    let out = Command::new(common::BIN)
        .arg("serve")
        .args(["--id", "A", "--primary", "P", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(extra)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn malformed_keys_and_keyrings_stop_the_replica_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("A.pem");
    std::fs::write(&key, "-----BEGIN PRIVATE KEY-----\nnope\n").unwrap();
    let key_s = key.display().to_string();
    let err = refused_start(dir.path(), &["--signing-key", &key_s]);
    assert!(
        err.contains(&format!(
            "signing key {key_s}: not an ed25519 private key in PKCS#8 PEM"
        )),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        "-----BEGIN PRIVATE KEY-----\nnope\n",
        "a bad key file is never overwritten"
    );

    std::fs::remove_file(&key).unwrap();
    let ring = dir.path().join("keyring");
    std::fs::write(&ring, "P 1234\n").unwrap();
    let ring_s = ring.display().to_string();
    let err = refused_start(dir.path(), &["--signing-key", &key_s, "--keyring", &ring_s]);
    assert!(
        err.contains(&format!(
            "keyring {ring_s}: keyring line 1: \"1234\" is not 64 hex digits (a 32-byte key)"
        )),
        "{err}"
    );
    // The key itself was created, readable by its owner only, and `keys`
    // prints the same line for it every time.
    let line = keys(&key, "A");
    assert!(
        line.starts_with("A ") && line.len() == 2 + 64 + 1,
        "{line:?}"
    );
    assert_eq!(keys(&key, "A"), line);

    let err = refused_start(dir.path(), &["--keyring", &ring_s]);
    assert!(
        err.contains("--signing-key"),
        "a keyring without a key is refused: {err}"
    );
}

/// The users of [`writes_record_their_author_and_are_checked_again_where_they_execute`]:
/// alice may write anything, bob only `bob:*` (passwords "alice-secret"
/// and "bob-secret"); the harness's own connections are `default`.
const USERS: &str = "\
user default on nopass ~* +@all
user alice on #0c848abb03307b06cf70cd4e29c157dc81af5e94ab3eb1d0c59a120269572376 ~* +@all
user bob on #9f03ef1533a68d2f506f81ef463c1183a82a6bd40e45613f36e6fe1889cf1b99 ~bob:* +@all
";

fn authed(r: &Replica, user: &str, password: &str) -> redis::Connection {
    let mut c = r.conn();
    let _: () = redis::cmd("AUTH")
        .arg(user)
        .arg(password)
        .query(&mut c)
        .unwrap();
    c
}

/// T95 §8: a write records the user who submitted it, and its author's
/// permission is checked where it is accepted (NOPERM at once) and again
/// wherever it executes. A modified replica that signs, with its own key,
/// a write under another user's name that the user may not make gets it
/// past the signature check, but the write executes as a failed no-op at
/// every honest replica.
#[test]
fn writes_record_their_author_and_are_checked_again_where_they_execute() {
    let users = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(users.path(), USERS).unwrap();
    let (c, _http) =
        signed_cluster_with(&["--acl-file".into(), users.path().display().to_string()]);
    let (p, a, b) = (c.r("P"), c.r("A"), c.r("B"));

    // Accepted: the author is recorded and travels with the write.
    let _: () = redis::cmd("SET")
        .arg("doc")
        .arg("1")
        .query(&mut authed(a, "alice", "alice-secret"))
        .unwrap();
    // Refused where it is accepted.
    let e = redis::cmd("SET")
        .arg("admin:motd")
        .arg("hi")
        .query::<()>(&mut authed(a, "bob", "bob-secret"))
        .unwrap_err();
    assert_eq!(e.code(), Some("NOPERM"), "{e}");
    a.ok(&["BAYOU.SYNC", "P"]);
    b.ok(&["BAYOU.SYNC", "P"]);
    let admin = authed(b, "alice", "alice-secret");
    let log: Vec<String> = {
        let mut admin = admin;
        redis::cmd("BAYOU.LOG").query(&mut admin).unwrap()
    };
    assert_eq!(log, [c.founding(), "2:1:A W(doc,1) by alice".into()]);

    // A modified A: it signs, with its real key, a write by "bob" to a key
    // bob may not write, and pushes it to B. The signature is A's, so B
    // takes the write; it executes as a failed no-op, and the same at the
    // primary once B passes it on.
    let key = bayou_node::keys::load_or_create(&c.dir.path().join("A.pem"))
        .unwrap()
        .0;
    let keyring =
        bayou_core::Keyring::parse(&std::fs::read_to_string(c.dir.path().join("keyring")).unwrap())
            .unwrap();
    let authority = bayou_core::Ed25519Authority::new(sid("A"), &key.to_bytes(), keyring).unwrap();
    let mut write = bayou_core::Write::new(
        bayou_core::WriteId::new(50, sid("A")),
        Op::put("admin:motd", "pwned"),
    )
    .by(Some(Arc::from("bob")));
    write.signature = Some(bayou_core::WriteAuthority::sign(&authority, &write));
    let mut s = peer(b.port, "A", "B");
    send(&mut s, &Msg::PushOffer);
    assert!(matches!(recv(&mut s), Msg::Welcome { .. }));
    assert!(matches!(recv(&mut s), Msg::Pull { .. }));
    send(
        &mut s,
        &Msg::Chunk {
            chunk: Chunk::Items(vec![Item::Write { write, csn: None }]),
        },
    );
    send(&mut s, &Msg::End);
    assert!(matches!(recv(&mut s), Msg::Ack { .. }), "B took the write");
    b.ok(&["BAYOU.SYNC", "P"]);
    for r in [p, b] {
        let log: Vec<String> = redis::cmd("BAYOU.LOG")
            .query(&mut authed(r, "alice", "alice-secret"))
            .unwrap();
        assert_eq!(
            log.last().map(String::as_str),
            Some("3:50:A W(admin:motd,pwned) by bob [failed: NOPERM bob may not write admin:motd]"),
            "at {}: {log:?}",
            r.id
        );
        let motd: Option<String> = redis::cmd("GET")
            .arg("admin:motd")
            .query(&mut authed(r, "alice", "alice-secret"))
            .unwrap();
        assert_eq!(motd, None, "at {}", r.id);
    }
}
