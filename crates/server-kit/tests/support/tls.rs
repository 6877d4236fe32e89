//! TLS helpers both nodes' TLS tests share (`crates/*/tests/tls.rs`):
//! making test certificates with a node binary's `tls-certs`, the `serve`
//! flags that use them, and `redis` clients over `rediss://`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Runs `BIN tls-certs --out DIR`, checking it succeeds and prints the
/// flags that use the certificates.
pub fn make_certs(bin: &str, dir: &Path) -> PathBuf {
    let out = Command::new(bin)
        .args(["tls-certs", "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = dir.display();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "--tls-cert {d}/server.pem --tls-key {d}/server-key.pem --tls-ca {d}/ca.pem"
        )),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    dir.to_owned()
}

/// The `serve` flags for the server certificate in `certs` and the CA in
/// `ca` (both directories from `tls-certs`).
pub fn serve_flags(certs: &Path, ca: &Path) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        certs.join("server.pem").display().to_string(),
        "--tls-key".into(),
        certs.join("server-key.pem").display().to_string(),
        "--tls-ca".into(),
        ca.join("ca.pem").display().to_string(),
    ]
}

/// A `redis` client for `port` over TLS, trusting the CA in `ca_dir`,
/// presenting the client certificate in `client_dir` if given.
pub fn client(port: u16, ca_dir: &Path, client_dir: Option<&Path>) -> redis::Client {
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    let client_tls = client_dir.map(|d| redis::ClientTlsConfig {
        client_cert: read(d, "client.pem"),
        client_key: read(d, "client-key.pem"),
    });
    redis::Client::build_with_tls(
        format!("rediss://127.0.0.1:{port}/"),
        redis::TlsCertificates {
            client_tls,
            root_cert: Some(read(ca_dir, "ca.pem")),
        },
    )
    .unwrap()
}

/// A connection from `client`, with the timeouts the tests use.
pub fn connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let c = client.get_connection_with_timeout(Duration::from_secs(5))?;
    c.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(c)
}
