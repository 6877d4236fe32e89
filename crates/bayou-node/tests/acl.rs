//! Client users and permissions with a real `bayou-node` process started
//! with `--acl-file` (docs/acl.md): the checks both nodes share
//! (`server-kit/tests/support/acl.rs`), the Bayou commands whose keys are
//! not positional, redis-py with a username and password, and the log line
//! of a server without users.

mod common;

#[path = "../../server-kit/tests/support/acl.rs"]
mod acl;
#[path = "../../server-kit/tests/support/clients.rs"]
mod clients;
#[allow(dead_code)]
#[path = "../../../tests/clients/libs.rs"]
mod libs;

use acl::{conn_as, raw, say};
use common::Cluster;

const FAST: &[&str] = &["--sync-interval-ms", "100", "--logical-clock"];

/// One replica with the users of [`acl::users_file`] in `users.acl`.
fn with_users() -> (Cluster, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.keep().join("users.acl");
    std::fs::write(&file, acl::users_file()).unwrap();
    let mut args = FAST.to_vec();
    let path = file.display().to_string();
    args.extend(["--acl-file", &path]);
    (Cluster::start(&["P"], &args), file)
}

#[test]
fn users_authenticate_and_permissions_apply_and_reload_on_sighup() {
    let (c, file) = with_users();
    let p = c.r("P");
    let pid = p.child.as_ref().unwrap().id();
    let log = || p.log_text();
    acl::check_users_and_permissions(p.port, pid, &file, &log);
}

#[test]
fn bayou_commands_that_name_keys_without_positions_are_checked() {
    let (c, _file) = with_users();
    let port = c.r("P").port;
    let mut s = raw(port);
    assert_eq!(say(&mut s, "AUTH app app-secret"), "+OK\r\n");
    let noperm = "-NOPERM No permissions to access a key\r\n";
    // BAYOU.WRITE: the keys of the operation, or of the JSON write.
    assert!(say(&mut s, "BAYOU.WRITE W(app:w,1)").starts_with('$'));
    assert_eq!(say(&mut s, "BAYOU.WRITE W(other,1)"), noperm);
    assert_eq!(say(&mut s, "BAYOU.WRITE FLUSH()"), noperm);
    assert!(
        say(
            &mut s,
            r#"BAYOU.WRITE '{"update":[{"put":["app:j","1"]}]}'"#
        )
        .starts_with('$')
    );
    assert_eq!(
        say(
            &mut s,
            r#"BAYOU.WRITE '{"update":[{"put":["app:j","1"]},{"del":"other"}]}'"#
        ),
        noperm
    );
    // A merge procedure may touch any key: every key is needed.
    assert_eq!(
        say(
            &mut s,
            r#"BAYOU.WRITE '{"update":[{"put":["app:m","1"]}],"merge":"put(\"x\",\"1\")"}'"#
        ),
        noperm
    );
    // SET … GET reads too; KEYS, SCAN and BAYOU.SCAN within the prefix.
    assert_eq!(say(&mut s, "SET app:g 1 GET"), "$-1\r\n");
    assert_eq!(say(&mut s, "KEYS app:*").chars().next(), Some('*'));
    assert_eq!(say(&mut s, "KEYS *"), noperm);
    assert!(say(&mut s, "SCAN 0 MATCH app:* COUNT 100").starts_with("*2\r\n"));
    assert_eq!(say(&mut s, "SCAN 0"), noperm);
    assert!(say(&mut s, "BAYOU.SCAN app:").starts_with('*'));
    assert_eq!(say(&mut s, "BAYOU.SCAN ap"), noperm);
    assert_eq!(say(&mut s, "BAYOU.LOG"), noperm);
    assert_eq!(say(&mut s, "FLUSHALL"), noperm);
    // The reader may not use a write-only path either.
    let mut r = conn_as(port, "reader", "reader-secret", false);
    let e = redis::cmd("BAYOU.WRITE")
        .arg("W(app:w,2)")
        .query::<String>(&mut r)
        .unwrap_err();
    assert_eq!(
        e.detail(),
        Some("User reader has no permissions to run the 'bayou.write' command")
    );
    // Sessions are the connection's own: any user may open one.
    let token: String = redis::cmd("BAYOU.SESSION")
        .arg("OPEN")
        .arg("RYW")
        .query(&mut r)
        .unwrap();
    assert!(!token.is_empty());
}

#[test]
fn redis_py_authenticates_with_username_and_password() {
    let (c, _file) = with_users();
    if let Some(cmd) = libs::python("acl_py.py", c.r("P").port) {
        libs::run(cmd, "redis-py with ACL users");
    }
}

#[test]
fn without_a_users_file_the_server_says_it_is_open() {
    let c = Cluster::start(&["P"], FAST);
    let p = c.r("P");
    assert!(
        p.log_text().contains(
            "no --acl-file: clients are not authenticated; every client may run every command"
        ),
        "{}",
        p.log_text()
    );
    let mut s = raw(p.port);
    assert_eq!(
        say(&mut s, "AUTH pw"),
        "-ERR AUTH <password> called without any password configured for the default user. \
         Are you sure your configuration is correct?\r\n"
    );
    assert_eq!(say(&mut s, "AUTH default anything"), "+OK\r\n");
    assert_eq!(say(&mut s, "ACL WHOAMI"), "$7\r\ndefault\r\n");
    let info = say(&mut s, "INFO clients");
    assert!(info.contains("acl_enabled:0\r\n"), "{info}");
}

#[test]
fn a_broken_users_file_stops_the_server_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.acl");
    std::fs::write(&file, "user app on #1234 ~app:*\n").unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new(common::BIN)
        .args(["serve", "--id", "P", "--primary", "P", "--listen"])
        .arg(format!("127.0.0.1:{}", common::free_ports(1)[0]))
        .arg("--data-dir")
        .arg(&data)
        .arg("--acl-file")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{} line 1, '#1234': a password hash must be 64 hex digits",
            file.display()
        )),
        "{err}"
    );
}

/// Two consecutive free ports, the first returned.
fn two_ports() -> u16 {
    loop {
        let p = common::free_ports(1)[0];
        if p < 65_000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

#[test]
fn a_local_cluster_shares_one_users_file_and_one_sighup_reloads_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.acl");
    std::fs::write(&file, acl::users_file()).unwrap();
    let base = two_ports();
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let cluster = Stop(
        std::process::Command::new(common::BIN)
            .args([
                "cluster",
                "--replicas",
                "2",
                "--base-port",
                &base.to_string(),
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--acl-file")
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = std::time::Instant::now();
    for port in [base, base + 1] {
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(start.elapsed() < std::time::Duration::from_secs(20));
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let mut readers: Vec<_> = [base, base + 1]
        .iter()
        .map(|&port| {
            let mut s = raw(port);
            assert_eq!(
                say(&mut s, "GET app:1"),
                "-NOAUTH Authentication required.\r\n"
            );
            assert_eq!(say(&mut s, "AUTH reader reader-secret"), "+OK\r\n");
            assert_eq!(
                say(&mut s, "SET app:1 x"),
                "-NOPERM User reader has no permissions to run the 'set' command\r\n"
            );
            s
        })
        .collect();
    std::fs::write(&file, acl::users_file_reader_writes()).unwrap();
    acl::hangup(cluster.0.id());
    let start = std::time::Instant::now();
    for s in &mut readers {
        while say(s, "SET app:1 x") != "+OK\r\n" {
            assert!(start.elapsed() < std::time::Duration::from_secs(10));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
