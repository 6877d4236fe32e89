//! `bayou status --node ADDR`: the cluster at a glance from one replica.
//! Asks that replica for `BAYOU.STATUS` (which names its peers), then each
//! peer, and prints one line per replica: up or down, role, anti-entropy,
//! CSN and how many commits it is behind the primary (or the highest CSN
//! seen), tentative writes held, sessions, version vector.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;

/// How long to wait for a replica to connect or answer.
const TIMEOUT: Duration = Duration::from_secs(2);

/// `bayou status`.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    /// A replica's address (its --listen), e.g. 127.0.0.1:7001.
    #[arg(long)]
    node: String,
    /// TLS and AUTH, for replicas that need them.
    #[command(flatten)]
    remote: server_kit::remote::RemoteFlags,
}

type Status = HashMap<String, String>;

fn status(remote: &server_kit::remote::RemoteFlags, addr: &str) -> anyhow::Result<Status> {
    let mut con = remote.connect(addr, TIMEOUT)?;
    Ok(redis::cmd("BAYOU.STATUS")
        .query(&mut con)
        .map_err(|e| remote.hint(e))?)
}

struct Row {
    id: String,
    addr: String,
    status: Result<Status, String>,
}

fn field<'a>(s: &'a Status, k: &str) -> &'a str {
    s.get(k).map_or("-", String::as_str)
}

fn num(s: &Status, k: &str) -> u64 {
    s.get(k).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub(crate) fn run(args: StatusArgs) -> anyhow::Result<()> {
    let first = status(&args.remote, &args.node)
        .with_context(|| format!("cannot read BAYOU.STATUS from {}", args.node))?;
    let primary = field(&first, "primary").to_string();
    let mut rows = vec![Row {
        id: field(&first, "id").to_string(),
        addr: args.node.clone(),
        status: Ok(first.clone()),
    }];
    for peer in field(&first, "peers").split(',').filter(|p| !p.is_empty()) {
        let (id, addr) = peer.split_once('=').unwrap_or((peer, ""));
        rows.push(Row {
            id: id.to_string(),
            addr: addr.to_string(),
            status: status(&args.remote, addr).map_err(|e| format!("{e:#}")),
        });
    }
    rows.sort_by(|a, b| (a.id != primary, &a.id).cmp(&(b.id != primary, &b.id)));
    let up: Vec<&Status> = rows.iter().filter_map(|r| r.status.as_ref().ok()).collect();
    let primary_csn = rows
        .iter()
        .find(|r| r.id == primary)
        .and_then(|r| r.status.as_ref().ok())
        .map(|s| num(s, "csn"));
    let top = primary_csn.unwrap_or_else(|| up.iter().map(|s| num(s, "csn")).max().unwrap_or(0));
    let down: Vec<&str> = rows
        .iter()
        .filter(|r| r.status.is_err())
        .map(|r| r.id.as_str())
        .collect();
    println!(
        "{} replicas, {} up{}; primary {primary} ({}); CSN {top}{}",
        rows.len(),
        up.len(),
        if down.is_empty() {
            String::new()
        } else {
            format!(" (down: {})", down.join(", "))
        },
        if primary_csn.is_some() { "up" } else { "down" },
        if primary_csn.is_some() {
            " at the primary"
        } else {
            " (highest seen)"
        },
    );
    println!(
        "{:<4} {:<21} {:<5} {:<9} {:<12} {:>7} {:>6} {:>9} {:>11}  version vector",
        "id", "address", "state", "role", "anti-entropy", "csn", "behind", "tentative", "sessions"
    );
    for r in &rows {
        match &r.status {
            Ok(s) => println!(
                "{:<4} {:<21} {:<5} {:<9} {:<12} {:>7} {:>6} {:>9} {:>11}  {}",
                r.id,
                r.addr,
                "up",
                field(s, "role"),
                field(s, "anti_entropy"),
                num(s, "csn"),
                top.saturating_sub(num(s, "csn")),
                num(s, "tentative"),
                format!("{}/{}", num(s, "sessions_ok"), num(s, "sessions_failed")),
                field(s, "vv"),
            ),
            Err(e) => println!("{:<4} {:<21} {:<5} {e}", r.id, r.addr, "down"),
        }
    }
    println!("(behind: commits this replica lacks; sessions: ok/failed, started by the replica)");
    Ok(())
}
