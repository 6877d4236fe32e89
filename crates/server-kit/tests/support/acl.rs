//! The users-and-permissions checks both nodes pass with a real process
//! started with `--acl-file` (included with `#[path]` by bayou-node's and
//! chord-node's `acl` tests; not a test target of its own): NOAUTH,
//! WRONGPASS, NOPERM for a key and for a command (with the key unchanged),
//! HELLO 3 AUTH, a reload on SIGHUP seen by an open connection, a broken
//! file on reload keeping the users in force, `ACL …`, redis-cli with
//! `--user/--pass` and redis-py with username/password.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The SHA-256 of `admin-secret`, `app-secret`, `reader-secret`, as
/// `echo -n 'app-secret' | sha256sum` prints them.
pub const ADMIN_HASH: &str = "16175223c8ddce5ace0493c948569c211b03c4c6bb3d3e484434999448cffe01";
pub const APP_HASH: &str = "6c904c5190e8b45c2f0af062eefdb2f5b41ce3809b0e6b5bc50aafdd60b290d8";
pub const READER_HASH: &str = "f03319dee240faa729e0cfa7ab5ffd80a1d64a127e3643f239009abff6382914";

/// The users file the checks start with: an administrator, `app` reading
/// and writing `app:*`, `reader` reading `app:*` only.
pub fn users_file() -> String {
    format!(
        "# users of the ACL tests\n\
         user admin on #{ADMIN_HASH} allkeys +@all\n\
         \n\
         user app on #{APP_HASH} ~app:* +@read +@write\n\
         user reader on #{READER_HASH} %R~app:* +@read\n"
    )
}

/// The same users, with `reader` allowed to write `app:*` too.
pub fn users_file_reader_writes() -> String {
    users_file().replace(
        &format!("user reader on #{READER_HASH} %R~app:* +@read"),
        &format!("user reader on #{READER_HASH} ~app:* +@read +@write"),
    )
}

// The raw connection helpers are the limits tests' (support/clients.rs,
// included by every test that includes this file, as `clients`).
pub use super::clients::{raw, say};

/// A connection authenticated as `user` by the `redis` crate (RESP2:
/// `AUTH user password`; RESP3: `HELLO 3 AUTH user password`).
pub fn conn_as(port: u16, user: &str, password: &str, resp3: bool) -> redis::Connection {
    let proto = if resp3 { "?protocol=resp3" } else { "" };
    let url = format!("redis://{user}:{password}@127.0.0.1:{port}/{proto}");
    let c = redis::Client::open(url).unwrap();
    let con = c
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect as {user}: {e}"));
    con.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    con
}

fn get(c: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query(c).unwrap()
}

fn set(c: &mut redis::Connection, key: &str, value: &str) -> redis::RedisResult<String> {
    redis::cmd("SET").arg(key).arg(value).query(c)
}

/// The error's code and text, as the server sent it (`NOPERM No
/// permissions…`).
fn error_text(e: &redis::RedisError) -> String {
    format!("{} {}", e.code().unwrap_or("?"), e.detail().unwrap_or(""))
}

/// Sends SIGHUP to the node.
pub fn hangup(pid: u32) {
    let ok = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Waits up to 10 s for `f` to hold.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(10), "never: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The checks, against a node listening on `port` (process `pid`) that
/// was started with `--acl-file file`, `file` holding [`users_file`].
/// `log` reads the node's log so far.
pub fn check_users_and_permissions(port: u16, pid: u32, file: &Path, log: &dyn Fn() -> String) {
    // Unauthenticated: NOAUTH, except AUTH/HELLO/QUIT.
    let mut anon = raw(port);
    assert_eq!(
        say(&mut anon, "GET app:1"),
        "-NOAUTH Authentication required.\r\n"
    );
    assert_eq!(
        say(&mut anon, "SET app:1 x"),
        "-NOAUTH Authentication required.\r\n"
    );
    // A wrong password, an unknown user: WRONGPASS, still unauthenticated.
    assert_eq!(
        say(&mut anon, "AUTH app wrong"),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        say(&mut anon, "AUTH nobody app-secret"),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        say(&mut anon, "PING"),
        "-NOAUTH Authentication required.\r\n"
    );
    let bad = redis::Client::open(format!("redis://app:wrong@127.0.0.1:{port}/"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(5));
    let e = bad.err().expect("a wrong password is refused");
    assert_eq!(e.kind(), redis::ErrorKind::AuthenticationFailed, "{e}");

    // HELLO 3 AUTH: authenticated and RESP3 in one step.
    let hello = say(&mut anon, "HELLO 3 AUTH app app-secret");
    assert!(hello.starts_with("%7\r\n"), "{hello}");
    assert_eq!(say(&mut anon, "ACL WHOAMI"), "$3\r\napp\r\n");
    assert_eq!(say(&mut anon, "SET app:1 one"), "+OK\r\n");
    drop(anon);

    let mut admin = conn_as(port, "admin", "admin-secret", false);
    let mut app = conn_as(port, "app", "app-secret", true);
    let who: String = redis::cmd("ACL").arg("WHOAMI").query(&mut app).unwrap();
    assert_eq!(who, "app");

    // Writing outside its prefix: NOPERM, and the key is unchanged.
    assert_eq!(set(&mut admin, "other", "orig").unwrap(), "OK");
    let e = set(&mut app, "other", "x").unwrap_err();
    assert_eq!(error_text(&e), "NOPERM No permissions to access a key");
    let e = redis::cmd("MSET")
        .arg("app:2")
        .arg("a")
        .arg("other")
        .arg("b")
        .query::<String>(&mut app)
        .unwrap_err();
    assert_eq!(error_text(&e), "NOPERM No permissions to access a key");
    assert_eq!(get(&mut admin, "other").as_deref(), Some("orig"));
    assert_eq!(get(&mut admin, "app:2"), None);
    // Enumerating every key needs every key.
    let e = redis::cmd("DBSIZE").query::<i64>(&mut app).unwrap_err();
    assert_eq!(error_text(&e), "NOPERM No permissions to access a key");
    let n: i64 = redis::cmd("DBSIZE").query(&mut admin).unwrap();
    assert!(n >= 2, "{n}");
    // An administrative command is not @read or @write.
    let e = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query::<redis::Value>(&mut app)
        .unwrap_err();
    assert_eq!(
        error_text(&e),
        "NOPERM User app has no permissions to run the 'config' command"
    );

    // A read-only user reads and cannot write.
    let mut reader = conn_as(port, "reader", "reader-secret", false);
    assert_eq!(get(&mut reader, "app:1").as_deref(), Some("one"));
    let e = set(&mut reader, "app:1", "two").unwrap_err();
    assert_eq!(
        error_text(&e),
        "NOPERM User reader has no permissions to run the 'set' command"
    );
    assert_eq!(get(&mut admin, "app:1").as_deref(), Some("one"));

    // Inside MULTI the refusal comes at queueing and aborts EXEC.
    let mut tx = raw(port);
    assert_eq!(say(&mut tx, "AUTH app app-secret"), "+OK\r\n");
    assert_eq!(say(&mut tx, "MULTI"), "+OK\r\n");
    assert_eq!(say(&mut tx, "SET app:3 x"), "+QUEUED\r\n");
    assert_eq!(
        say(&mut tx, "SET other y"),
        "-NOPERM No permissions to access a key\r\n"
    );
    assert_eq!(
        say(&mut tx, "EXEC"),
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    assert_eq!(get(&mut admin, "app:3"), None);

    // The administrator's ACL commands.
    let users: Vec<String> = redis::cmd("ACL").arg("USERS").query(&mut admin).unwrap();
    assert_eq!(users, ["admin", "app", "reader"]);
    let list: Vec<String> = redis::cmd("ACL").arg("LIST").query(&mut admin).unwrap();
    assert_eq!(
        list,
        [
            format!("user admin on #{ADMIN_HASH} ~* +@all"),
            format!("user app on #{APP_HASH} ~app:* -@all +@read +@write"),
            format!("user reader on #{READER_HASH} %R~app:* -@all +@read"),
        ]
    );
    let e = redis::cmd("ACL")
        .arg("USERS")
        .query::<Vec<String>>(&mut reader)
        .unwrap_err();
    assert_eq!(
        error_text(&e),
        "NOPERM User reader has no permissions to run the 'acl' command"
    );
    let info: String = redis::cmd("INFO").query(&mut admin).unwrap();
    assert!(info.contains("acl_enabled:1\r\n"), "{info}");
    assert!(info.contains("acl_users:3\r\n"), "{info}");

    // redis-cli with --user/--pass.
    let cli = |user: &str, pass: &str, args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "--user", user, "--pass", pass])
            .arg("--no-auth-warning")
            .args(args)
            .output()
            .expect("redis-cli is installed");
        // Not on a terminal, redis-cli prints replies (and errors) bare.
        (String::from_utf8_lossy(&out.stdout).into_owned() + &*String::from_utf8_lossy(&out.stderr))
            .trim()
            .to_string()
    };
    assert_eq!(cli("app", "app-secret", &["SET", "app:cli", "1"]), "OK");
    assert_eq!(cli("app", "app-secret", &["GET", "app:cli"]), "1");
    assert_eq!(
        cli("app", "app-secret", &["SET", "cli", "1"]),
        "NOPERM No permissions to access a key"
    );
    assert!(
        cli("app", "wrong", &["GET", "app:cli"]).contains("WRONGPASS"),
        "redis-cli with a wrong password"
    );

    // A new permission, on SIGHUP, applies to the open connection.
    std::fs::write(file, users_file_reader_writes()).unwrap();
    hangup(pid);
    eventually("the reader may write after SIGHUP", || {
        set(&mut reader, "app:1", "two").is_ok()
    });
    assert_eq!(get(&mut admin, "app:1").as_deref(), Some("two"));
    eventually("the reload is logged", || {
        log().contains("SIGHUP: users file reloaded")
    });

    // A broken file on reload: logged, and the users in force stay.
    std::fs::write(
        file,
        users_file().replace("allkeys", "allkeys >plaintext-pw"),
    )
    .unwrap();
    hangup(pid);
    let refused = format!(
        "{} line 2, '>…': plaintext passwords are refused",
        file.display()
    );
    eventually("the broken reload is logged", || log().contains(&refused));
    assert!(!log().contains("plaintext-pw"), "the log shows a password");
    assert_eq!(set(&mut reader, "app:1", "three").unwrap(), "OK");
    let e = redis::cmd("ACL")
        .arg("LOAD")
        .query::<String>(&mut admin)
        .unwrap_err();
    assert!(error_text(&e).starts_with(&format!("ERR {refused}")), "{e}");
    // A new connection still authenticates against the users in force.
    let mut again = conn_as(port, "reader", "reader-secret", true);
    assert_eq!(get(&mut again, "app:1").as_deref(), Some("three"));
}
