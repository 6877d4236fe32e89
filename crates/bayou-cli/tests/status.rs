//! `bayou status` against a cluster that serves TLS and authenticates its
//! clients (`bayou cluster --tls --acl-file`): without `--tls-ca` it says
//! the node needs it, without a password it reports `NOAUTH`, and with
//! both it prints every replica up.

mod common;

use std::process::Command;

use common::{BIN, Cluster};

/// alice's password is "alice-secret".
const USERS: &str =
    "user alice on #0c848abb03307b06cf70cd4e29c157dc81af5e94ab3eb1d0c59a120269572376 ~* +@all\n";

fn status(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).arg("status").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn status_reaches_a_cluster_over_tls_with_a_password() {
    let users = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(users.path(), USERS).unwrap();
    let users_arg = users.path().display().to_string();
    let cluster = Cluster::start(&["--tls", "--acl-file", &users_arg]);
    let node = format!("127.0.0.1:{}", cluster.base + 1);
    let ca = cluster.dir.path().join("tls/ca.pem").display().to_string();

    let (ok, _, err) = status(&["--node", &node]);
    assert!(!ok);
    assert!(err.contains("a node serving TLS needs --tls-ca"), "{err}");

    let (ok, _, err) = status(&["--node", &node, "--tls-ca", &ca]);
    assert!(!ok);
    assert!(err.contains("NOAUTH"), "{err}");

    let (ok, _, err) = status(&[
        "--node", &node, "--tls-ca", &ca, "--user", "alice", "--pass", "wrong",
    ]);
    assert!(!ok);
    assert!(err.contains("WRONGPASS"), "{err}");

    let (ok, out, err) = status(&[
        "--node",
        &node,
        "--tls-ca",
        &ca,
        "--user",
        "alice",
        "--pass",
        "alice-secret",
    ]);
    assert!(ok, "{err}");
    assert!(out.starts_with("3 replicas, 3 up; primary P (up)"), "{out}");
    for id in ["P", "A", "B"] {
        assert!(
            out.lines().any(|l| l.starts_with(id) && l.contains(" up ")),
            "{id} not up in:\n{out}"
        );
    }
}
