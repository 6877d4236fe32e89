//! Where the client libraries of the compatibility matrix are, and how to
//! run a client script: shared by `crates/bayou-node/tests/clients.rs` and
//! `crates/chord-node/tests/clients.rs` (each includes this file).
//!
//! The Python and Node clients are installed by `.ci/run` into
//! `$BAYOU_TEST_CLIENTS` (default `$CARGO_TARGET_DIR/clients`, else
//! `target/clients`). Without them the tests say SKIPPED loudly and pass,
//! unless `BAYOU_REQUIRE_CLIENTS` is set (CI sets it), when they fail.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory the clients are installed in.
pub fn clients_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BAYOU_TEST_CLIENTS") {
        return d.into();
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return Path::new(&d).join("clients");
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/clients")
}

/// A script under `tests/clients/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/clients")
        .join(name)
}

/// `None` after a loud message when `what` is missing and CI does not
/// require it.
pub fn missing(what: &str) -> Option<()> {
    let msg = format!(
        "SKIPPED: {what} is not installed in {} (run .ci/run, or see docs/bayou-server.md)",
        clients_dir().display()
    );
    if std::env::var_os("BAYOU_REQUIRE_CLIENTS").is_some() {
        panic!("{msg}, and BAYOU_REQUIRE_CLIENTS is set");
    }
    eprintln!("\n!!!!!!!! {msg}\n");
    None
}

/// Runs a client script and fails with its output unless it succeeds.
pub fn run(mut cmd: Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &*String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{text}");
    eprintln!("{text}");
}

/// `python SCRIPT PORT` with redis-py 8 from the venv, if installed.
pub fn python(name: &str, port: u16) -> Option<Command> {
    let python = clients_dir().join("py/bin/python");
    if !python.exists() {
        return missing("redis-py 8 (a venv at py/)").and(None);
    }
    let mut cmd = Command::new(python);
    cmd.arg(script(name)).arg(port.to_string());
    Some(cmd)
}

/// `node SCRIPT PORT` with node-redis and ioredis, if installed.
pub fn node(name: &str, port: u16) -> Option<Command> {
    let modules = clients_dir().join("node/node_modules");
    if !modules.join("redis").exists() || !modules.join("ioredis").exists() {
        return missing("node-redis and ioredis (node/node_modules)").and(None);
    }
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", modules)
        .arg(script(name))
        .arg(port.to_string());
    Some(cmd)
}
