//! `chord ring` against a ring that serves TLS and authenticates its
//! clients (`chord cluster --tls --acl-file`): without `--tls-ca` it says
//! the node needs it, without a password it reports `NOAUTH`, and with
//! both it walks the whole ring.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_chord");

/// alice's password is "alice-secret".
const USERS: &str =
    "user alice on #0c848abb03307b06cf70cd4e29c157dc81af5e94ab3eb1d0c59a120269572376 ~* +@all\n";

/// A base port with `n` consecutive free ports after it.
fn free_base(n: u16) -> u16 {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = l.local_addr().unwrap().port();
        drop(l);
        if base <= 65535 - n && (0..n).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

struct Ring(Child);

impl Drop for Ring {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn ring(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).arg("ring").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ring_walks_a_ring_over_tls_with_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users.acl");
    std::fs::write(&users, USERS).unwrap();
    let base = free_base(3);
    let _ring = Ring(
        Command::new(BIN)
            .args(["cluster", "--nodes", "3", "--base-port", &base.to_string()])
            .args(["--tls", "--stabilize-ms", "100", "--fix-fingers-ms", "50"])
            .arg("--acl-file")
            .arg(&users)
            .arg("--data-dir")
            .arg(dir.path().join("ring"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let node = format!("127.0.0.1:{base}");
    let ca = dir.path().join("ring/tls/ca.pem").display().to_string();
    let full = [
        "--node",
        node.as_str(),
        "--tls-ca",
        ca.as_str(),
        "--user",
        "alice",
        "--pass",
        "alice-secret",
    ];
    // Until the three nodes have joined and stabilized.
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let (ok, out, err) = ring(&full);
        if ok && out.starts_with("ring of 3 nodes") && out.matches(" up").count() >= 3 {
            break out;
        }
        assert!(Instant::now() < deadline, "{out}{err}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(out.contains(": 3 up;"), "{out}");

    let (ok, _, err) = ring(&["--node", &node]);
    assert!(!ok);
    assert!(err.contains("a node serving TLS needs --tls-ca"), "{err}");
    let (ok, _, err) = ring(&["--node", &node, "--tls-ca", &ca]);
    assert!(!ok);
    assert!(err.contains("NOAUTH"), "{err}");
}
