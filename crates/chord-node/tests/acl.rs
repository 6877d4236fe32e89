//! Client users and permissions with a real one-node `chord-node` ring
//! started with `--acl-file` (docs/acl.md): the checks both nodes share
//! (`server-kit/tests/support/acl.rs`), Chord's own commands, redis-py
//! with a username and password, and the log line of a server without
//! users.

mod common;

#[path = "../../server-kit/tests/support/acl.rs"]
mod acl;
#[path = "../../server-kit/tests/support/clients.rs"]
mod clients;
#[allow(dead_code)]
#[path = "../../../tests/clients/libs.rs"]
mod libs;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use acl::{raw, say};

/// One chord-node process creating its own ring, logging at info to a
/// file; killed when dropped.
struct Node {
    port: u16,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts a node with more `serve` flags and waits until it listens.
    fn start(dir: tempfile::TempDir, extra: &[&str]) -> Node {
        let port = common::free_ports(1)[0];
        let log = dir.path().join("node.log");
        let child = Command::new(common::BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--replicas", "1", "--log", "info"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let node = Node {
            port,
            child,
            log,
            _dir: dir,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "not listening: {}",
                node.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        node
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A node with the users of [`acl::users_file`] in `users.acl`.
fn with_users() -> (Node, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.acl");
    std::fs::write(&file, acl::users_file()).unwrap();
    let path = file.display().to_string();
    (Node::start(dir, &["--acl-file", &path]), file)
}

#[test]
fn users_authenticate_and_permissions_apply_and_reload_on_sighup() {
    let (node, file) = with_users();
    let log = || node.log_text();
    acl::check_users_and_permissions(node.port, node.child.id(), &file, &log);
}

#[test]
fn chord_commands_that_reach_every_key_need_every_key() {
    let (node, _file) = with_users();
    let mut s = raw(node.port);
    assert_eq!(say(&mut s, "AUTH app app-secret"), "+OK\r\n");
    assert_eq!(say(&mut s, "SET app:1 v"), "+OK\r\n");
    assert_eq!(
        say(&mut s, "CHORD.KEYS"),
        "-NOPERM No permissions to access a key\r\n"
    );
    // Ring state holds no data: any reader may see it.
    assert!(say(&mut s, "CHORD.SUCCESSORS").starts_with('*'));
    assert_eq!(say(&mut s, "READONLY"), "+OK\r\n");
    let mut a = raw(node.port);
    assert_eq!(say(&mut a, "AUTH admin admin-secret"), "+OK\r\n");
    assert_eq!(say(&mut a, "CHORD.KEYS"), "*1\r\n$5\r\napp:1\r\n");
    assert_eq!(
        say(&mut s, "CHORD.LEAVE"),
        "-NOPERM User app has no permissions to run the 'chord.leave' command\r\n"
    );
}

#[test]
fn redis_py_authenticates_with_username_and_password() {
    let (node, _file) = with_users();
    if let Some(cmd) = libs::python("acl_py.py", node.port) {
        libs::run(cmd, "redis-py with ACL users");
    }
}

#[test]
fn without_a_users_file_the_server_says_it_is_open() {
    let node = Node::start(tempfile::tempdir().unwrap(), &[]);
    assert!(
        node.log_text().contains(
            "no --acl-file: clients are not authenticated; every client may run every command"
        ),
        "{}",
        node.log_text()
    );
    let mut s = raw(node.port);
    assert_eq!(say(&mut s, "ACL WHOAMI"), "$7\r\ndefault\r\n");
    let info = say(&mut s, "INFO");
    assert!(info.contains("acl_enabled:0\r\n"), "{info}");
}

#[test]
fn a_broken_users_file_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.acl");
    std::fs::write(&file, "\nuser app on ~app:* +@nosuch\n").unwrap();
    let out = Command::new(common::BIN)
        .args(["serve", "--listen"])
        .arg(format!("127.0.0.1:{}", common::free_ports(1)[0]))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--acl-file")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{} line 2, '+@nosuch': unknown command category 'nosuch'",
            Path::new(&file).display()
        )),
        "{err}"
    );
}

#[test]
fn chord_cluster_passes_the_users_file_to_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.acl");
    std::fs::write(&file, acl::users_file()).unwrap();
    let base = loop {
        let p = common::free_ports(1)[0];
        if p < 65_000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            break p;
        }
    };
    let mut cluster = Command::new(common::BIN)
        .args(["cluster", "--nodes", "2", "--replicas", "1"])
        .args(["--base-port", &base.to_string(), "--log", "warn"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--acl-file")
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The banner comes once every node answered PING (here -NOAUTH); the
    // nodes print their own lines to the same stdout first.
    let lines = std::io::BufRead::lines(std::io::BufReader::new(cluster.stdout.take().unwrap()));
    let banner = lines
        .map_while(Result::ok)
        .find(|l| l.starts_with("chord cluster:"))
        .unwrap_or_default();
    let stop = |mut c: Child| {
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        let _ = c.wait();
    };
    if !banner.starts_with("chord cluster: 2 of 2 nodes") {
        stop(cluster);
        panic!("{banner}");
    }
    for port in [base, base + 1] {
        let mut s = raw(port);
        assert_eq!(
            say(&mut s, "GET app:1"),
            "-NOAUTH Authentication required.\r\n"
        );
        assert_eq!(say(&mut s, "AUTH app app-secret"), "+OK\r\n");
        assert_eq!(
            say(&mut s, "SET other x"),
            "-NOPERM No permissions to access a key\r\n"
        );
    }
    stop(cluster);
}
