//! TLS (docs/tls.md): real `bayou-node` processes with certificates made by
//! `bayou-node tls-certs`, reached over `rediss://` with the `redis`
//! crate, `redis-cli --tls` and redis-py; replicas that sync over TLS, and
//! replicas whose certificates come from another CA that cannot.

mod common;
#[path = "../../../tests/clients/libs.rs"]
#[allow(dead_code)]
mod libs;
#[path = "../../server-kit/tests/support/tls.rs"]
mod tls;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, free_ports};
use tls::{client as tls_client_of, connect};

/// `bayou-node tls-certs --out DIR`, checked.
fn make_certs(dir: &Path) -> PathBuf {
    tls::make_certs(BIN, dir)
}

/// The certificates one replica runs with: its own (`certs`) and the CA it
/// trusts (`ca`, a directory from `tls-certs`).
#[derive(Clone)]
struct Certs {
    certs: PathBuf,
    ca: PathBuf,
}

impl Certs {
    fn same(dir: &Path) -> Certs {
        Certs {
            certs: dir.to_owned(),
            ca: dir.to_owned(),
        }
    }

    fn flags(&self) -> Vec<String> {
        tls::serve_flags(&self.certs, &self.ca)
    }
}

/// A `redis` client for `port` over TLS, trusting the CA in `ca_dir` and,
/// with `client_cert`, presenting the client certificate made beside it.
fn tls_client(port: u16, ca_dir: &Path, client_cert: bool) -> redis::Client {
    tls_client_of(port, ca_dir, client_cert.then_some(ca_dir))
}

/// One replica process serving TLS.
struct Replica {
    id: String,
    port: u16,
    certs: Certs,
    log: PathBuf,
    child: Child,
}

impl Replica {
    /// A client trusting the CA of the replica's certificate and
    /// presenting a client certificate of the CA the replica trusts (so
    /// that it is served with any --tls-auth-clients).
    fn client(&self) -> redis::Client {
        tls_client_of(self.port, &self.certs.certs, Some(&self.certs.ca))
    }

    fn conn(&self) -> redis::Connection {
        connect(&self.client()).unwrap_or_else(|e| panic!("{}: {e}", self.id))
    }

    fn cmd(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query(&mut self.conn())
    }

    fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query(&mut self.conn()).unwrap()
    }

    fn sync(&self, peer: &str) -> redis::RedisResult<redis::Value> {
        self.cmd(&["BAYOU.SYNC", peer])
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Replicas `ids` (the first is the primary), each peering with all the
/// others, replica i with `certs[i]`, and `extra` flags.
fn start(dir: &Path, ids: &[&str], certs: &[Certs], extra: &[&str]) -> Vec<Replica> {
    let ports = free_ports(ids.len());
    let mut replicas = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let log = dir.join(format!("{id}.log"));
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(["--id", id, "--primary", ids[0]])
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", ports[i]))
            .arg("--data-dir")
            .arg(dir.join(id))
            .args(certs[i].flags())
            .args(extra);
        for (j, other) in ids.iter().enumerate() {
            if j != i {
                cmd.arg("--peer")
                    .arg(format!("{other}=127.0.0.1:{}", ports[j]));
            }
        }
        let child = cmd
            .env("RUST_LOG", "info,server_kit=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        replicas.push(Replica {
            id: id.to_string(),
            port: ports[i],
            certs: certs[i].clone(),
            log,
            child,
        });
    }
    for r in &mut replicas {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = connect(&r.client())
                && redis::cmd("PING").query::<String>(&mut c).is_ok()
            {
                break;
            }
            if let Ok(Some(status)) = r.child.try_wait() {
                panic!("{} exited with {status}: {}", r.id, r.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer over TLS: {}",
                r.id,
                r.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    replicas
}

const QUIET: &[&str] = &["--sync-interval-ms", "0", "--logical-clock"];

#[test]
fn tls_certs_writes_six_files_and_will_not_overwrite_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let out = Command::new(BIN)
        .args(["tls-certs", "--out"])
        .arg(&dir)
        .args(["--host", "127.0.0.1", "--host", "db.example"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let d = dir.display();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "wrote ca.pem, ca-key.pem, server.pem, server-key.pem, client.pem, client-key.pem in {d} (server certificate for 127.0.0.1, db.example)\n\
             serve with:\n  --tls-cert {d}/server.pem --tls-key {d}/server-key.pem --tls-ca {d}/ca.pem\n\
             connect with:\n  redis-cli --tls --cacert {d}/ca.pem -p PORT\n\
             and, if the server has --tls-auth-clients yes, --cert {d}/client.pem --key {d}/client-key.pem\n"
        )
    );
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let again = Command::new(BIN)
        .args(["tls-certs", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert_eq!(
        String::from_utf8_lossy(&again.stderr),
        format!("bayou-node: {d}/ca.pem exists (pass --force to overwrite)\n")
    );
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);
    let forced = Command::new(BIN)
        .args(["tls-certs", "--force", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(forced.status.success());
    assert_ne!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);
}

#[test]
fn a_bad_key_is_a_startup_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("certs"));
    let out = Command::new(BIN)
        .args([
            "serve",
            "--id",
            "P",
            "--primary",
            "P",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(tmp.path().join("P"))
        .arg("--tls-cert")
        .arg(certs.join("server.pem"))
        .arg("--tls-key")
        .arg(certs.join("client-key.pem"))
        .arg("--tls-ca")
        .arg(certs.join("ca.pem"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let d = certs.display();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "bayou-node: {d}/client-key.pem is not the private key of the certificate in {d}/server.pem\n"
        )
    );
}

/// Waits up to 5 s for `text` in the replica's log: a replica closes a
/// failed handshake's connection before it logs why.
fn wait_for_log(r: &Replica, text: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !r.log_text().contains(text) {
        assert!(
            std::time::Instant::now() < deadline,
            "no {text:?} in the log:\n{}",
            r.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_tls_replica_serves_tls_clients_and_closes_plain_text_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("certs"));
    let rs = start(tmp.path(), &["P"], &[Certs::same(&certs)], QUIET);
    let p = &rs[0];
    // The redis crate over rediss://, trusting the test CA, without a
    // client certificate.
    let mut c = connect(&tls_client(p.port, &certs, false)).unwrap();
    let ok: String = redis::cmd("SET").arg("k").arg("v1").query(&mut c).unwrap();
    assert_eq!(ok, "OK");
    let info: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
    assert!(info.contains("\r\ntls_enabled:1\r\n"), "{info}");
    let auth: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("tls-auth-clients")
        .query(&mut c)
        .unwrap();
    assert_eq!(auth, ["tls-auth-clients", "optional"]);
    // A plain-text client gets no answer, and the connection is closed.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain.write_all(b"PING\r\n").unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.windows(4).any(|w| w == b"PONG"), "{got:?}");
    wait_for_log(p, "TLS handshake failed");
    // The replica still serves TLS clients, and a client certificate is
    // accepted when presented (--tls-auth-clients optional).
    let mut with_cert = connect(&tls_client(p.port, &certs, true)).unwrap();
    let v: String = redis::cmd("GET").arg("k").query(&mut with_cert).unwrap();
    assert_eq!(v, "v1");
    // redis-cli --tls.
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["--tls", "--cacert"])
            .arg(certs.join("ca.pem"))
            .args(["-h", "127.0.0.1", "-p", &p.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is installed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(cli(&["SET", "cli", "from-redis-cli"]), "OK\n");
    assert_eq!(cli(&["GET", "cli"]), "from-redis-cli\n");
    assert_eq!(p.get("cli").as_deref(), Some("from-redis-cli"));
}

#[test]
fn tls_auth_clients_yes_refuses_a_client_without_a_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("certs"));
    let rs = start(
        tmp.path(),
        &["P"],
        &[Certs::same(&certs)],
        &["--sync-interval-ms", "0", "--tls-auth-clients", "yes"],
    );
    let port = rs[0].port;
    let anonymous = connect(&tls_client(port, &certs, false))
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
    assert!(anonymous.is_err(), "{anonymous:?}");
    let mut c = connect(&tls_client(port, &certs, true)).unwrap();
    let pong: String = redis::cmd("PING").query(&mut c).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn three_replicas_converge_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("certs"));
    let same = Certs::same(&certs);
    let rs = start(
        tmp.path(),
        &["P", "A", "B"],
        &[same.clone(), same.clone(), same],
        &["--sync-interval-ms", "100", "--logical-clock"],
    );
    rs[1].cmd(&["SET", "x", "from-A"]).unwrap();
    rs[2].cmd(&["SET", "y", "from-B"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen: Vec<(Option<String>, Option<String>)> =
            rs.iter().map(|r| (r.get("x"), r.get("y"))).collect();
        let want = (Some("from-A".to_string()), Some("from-B".to_string()));
        if seen.iter().all(|s| *s == want) {
            break;
        }
        assert!(Instant::now() < deadline, "not converged: {seen:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // And the writes are committed by the primary everywhere.
    let committed: Option<String> = redis::cmd("BAYOU.GET")
        .arg("x")
        .arg("COMMITTED")
        .query(&mut rs[2].conn())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut committed = committed;
    while committed.is_none() {
        assert!(Instant::now() < deadline, "x never committed at B");
        std::thread::sleep(Duration::from_millis(50));
        committed = redis::cmd("BAYOU.GET")
            .arg("x")
            .arg("COMMITTED")
            .query(&mut rs[2].conn())
            .unwrap();
    }
    assert_eq!(committed.as_deref(), Some("from-A"));
}

/// The error text of a failed `BAYOU.SYNC`.
fn sync_error(r: &Replica, peer: &str) -> String {
    match r.sync(peer) {
        Ok(v) => panic!("{} synced with {peer}: {v:?}", r.id),
        Err(e) => e.to_string(),
    }
}

#[test]
fn replicas_without_the_right_ca_cannot_sync() {
    let tmp = tempfile::tempdir().unwrap();
    let ours = make_certs(&tmp.path().join("ours"));
    let theirs = make_certs(&tmp.path().join("theirs"));
    let good = Certs::same(&ours);
    // B's certificates and CA are another CA's; C trusts our CA but its
    // own certificate is signed by the other.
    let b = Certs::same(&theirs);
    let c = Certs {
        certs: theirs.clone(),
        ca: ours.clone(),
    };
    let rs = start(
        tmp.path(),
        &["P", "A", "B", "C"],
        &[good.clone(), good, b, c],
        QUIET,
    );
    let [p, a, b, c] = &rs[..] else {
        unreachable!()
    };
    a.cmd(&["SET", "from-a", "1"]).unwrap();
    b.cmd(&["SET", "from-b", "1"]).unwrap();
    c.cmd(&["SET", "from-c", "1"]).unwrap();
    // A peer with our CA syncs.
    a.sync("P").unwrap();
    assert_eq!(p.get("from-a").as_deref(), Some("1"));
    // B does not trust P's certificate, nor P B's, either way round.
    let e = sync_error(b, "P");
    assert!(
        e.contains("peer P: invalid peer certificate: UnknownIssuer"),
        "{e}"
    );
    let e = sync_error(p, "B");
    assert!(
        e.contains("peer B: invalid peer certificate: UnknownIssuer"),
        "{e}"
    );
    // C trusts P, but P refuses C's certificate during the handshake; and
    // P does not trust C's server certificate.
    // (C sees its connection fail: a broken pipe or a reset, depending on
    // timing; P logs why.)
    let e = sync_error(c, "P");
    assert!(e.contains("peer P: "), "{e}");
    wait_for_log(
        p,
        "TLS handshake failed: invalid peer certificate: UnknownIssuer",
    );
    let e = sync_error(p, "C");
    assert!(
        e.contains("peer C: invalid peer certificate: UnknownIssuer"),
        "{e}"
    );
    // Nothing moved.
    assert_eq!(p.get("from-b"), None);
    assert_eq!(p.get("from-c"), None);
    assert_eq!(b.get("from-a"), None);
    assert_eq!(c.get("from-a"), None);
}

#[test]
fn redis_py_works_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = make_certs(&tmp.path().join("certs"));
    let rs = start(tmp.path(), &["P"], &[Certs::same(&certs)], QUIET);
    if let Some(mut cmd) = libs::python("tls_py.py", rs[0].port) {
        cmd.arg(certs.join("ca.pem"));
        libs::run(cmd, "redis-py over TLS");
    }
}

/// `n` consecutive loopback ports that were free a moment ago.
fn consecutive_free_ports(n: u16) -> u16 {
    for _ in 0..100 {
        let base = free_ports(1)[0];
        if base > 65535 - n {
            continue;
        }
        let held: Vec<_> = (base..base + n)
            .map_while(|p| std::net::TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == n as usize {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

/// `bayou-node cluster --tls`, until dropped (SIGTERM).
struct TlsCluster(Child);

impl TlsCluster {
    fn start(base: u16, data: &Path) -> TlsCluster {
        let child = Command::new(BIN)
            .args(["cluster", "--tls", "--sync-interval-ms", "100"])
            .args(["--base-port", &base.to_string()])
            .arg("--data-dir")
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let cluster = TlsCluster(child);
        let ca = data.join("tls");
        for port in base..base + 3 {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !ca.join("ca.pem").exists()
                || connect(&tls_client(port, &ca, false))
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_err()
            {
                assert!(Instant::now() < deadline, "port {port} not serving TLS");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

#[test]
fn cluster_tls_makes_its_certificates_once_and_replicates_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cluster");
    let base = consecutive_free_ports(3);
    let ca = data.join("tls");
    let get = |port: u16, key: &str| -> Option<String> {
        let mut c = connect(&tls_client(port, &ca, false)).unwrap();
        redis::cmd("GET").arg(key).query(&mut c).unwrap()
    };
    let first_ca = {
        let _cluster = TlsCluster::start(base, &data);
        let mut a = connect(&tls_client(base + 1, &ca, false)).unwrap();
        let ok: String = redis::cmd("SET").arg("x").arg("1").query(&mut a).unwrap();
        assert_eq!(ok, "OK");
        let deadline = Instant::now() + Duration::from_secs(20);
        // On P and B too, so the restarted cluster holds it everywhere.
        while get(base, "x").is_none() || get(base + 2, "x").is_none() {
            assert!(Instant::now() < deadline, "x never reached P and B");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::fs::read(ca.join("ca.pem")).unwrap()
    };
    // Restarted, the cluster reuses its certificates (clients keep
    // trusting the same CA) and its data.
    let _cluster = TlsCluster::start(base, &data);
    assert_eq!(std::fs::read(ca.join("ca.pem")).unwrap(), first_ca);
    assert_eq!(get(base, "x").as_deref(), Some("1"));
}
