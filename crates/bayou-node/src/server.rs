//! The listener: accepts connections on `--listen`, tells peers (which start
//! with [`crate::wire::MAGIC`]) from Redis clients, and serves RESP.
//!
//! Pipelined requests are read together and the replica's part of them is
//! sent to the replica task as one request, so `-P 16` costs one round trip
//! and at most one durable batch, and many clients share one fsync.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bayou_core::{BayouWrite, Op, ServerId, View};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::node::{Node, Query};
use crate::peer;
use resp_server::{self as resp, Limits, Opened, Reply};

/// Most bytes a client may have buffered without completing a request.
pub const MAX_QUERY_BUFFER_BYTES: usize = 128 << 20;

/// Most requests handled in one round for one connection.
const MAX_PIPELINE: usize = 1024;

/// Accepts connections until `shutdown` flips.
pub async fn accept_loop(node: Arc<Node>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
    resp_server::accept_loop(listener, shutdown, move |stream| {
        handle(node.clone(), stream)
    })
    .await
}

async fn handle(node: Arc<Node>, mut stream: TcpStream) {
    match resp::open(&mut stream, crate::wire::MAGIC, peer::IDLE_TIMEOUT).await {
        Some(Opened::Peer(rest)) => peer::serve_peer(node, stream, rest).await,
        Some(Opened::Client(buf)) => {
            if let Err(e) = serve_client(&node, &mut stream, buf).await {
                debug!("client connection ended: {e}");
            }
        }
        None => {}
    }
}

async fn serve_client(
    node: &Node,
    stream: &mut TcpStream,
    mut buf: BytesMut,
) -> std::io::Result<()> {
    let limits = Limits::default();
    let mut out = BytesMut::with_capacity(16 << 10);
    loop {
        let mut requests = Vec::new();
        let mut error = None;
        while requests.len() < MAX_PIPELINE {
            match resp::parse(&mut buf, &limits) {
                Ok(Some(args)) if args.is_empty() => {}
                Ok(Some(args)) => requests.push(args),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let got_any = !requests.is_empty();
        let mut quit = false;
        if got_any {
            node.counters
                .commands
                .fetch_add(requests.len() as u64, Ordering::Relaxed);
            let (replies, q) = match execute(node, requests).await {
                Ok(r) => r,
                // The replica is shutting down: close the connection.
                Err(_) => return Ok(()),
            };
            quit = q;
            for r in &replies {
                r.encode(&mut out);
            }
        }
        if let Some(e) = &error {
            Reply::err(e).encode(&mut out);
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if quit || error.is_some() {
            return Ok(());
        }
        if buf.len() > MAX_QUERY_BUFFER_BYTES {
            Reply::err("Protocol error: query buffer limit exceeded").encode(&mut out);
            stream.write_all(&out).await?;
            return Ok(());
        }
        if !got_any {
            buf.reserve(64 << 10);
            if stream.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
    }
}

/// What one request turns into.
enum Action {
    /// A reply that needs nothing from the replica.
    Now(Reply),
    /// A replica query.
    Query(Query),
    /// `BAYOU.SYNC peer`.
    Sync(String),
    /// `QUIT`.
    Quit,
}

async fn execute(
    node: &Node,
    requests: Vec<Vec<Bytes>>,
) -> Result<(Vec<Reply>, bool), crate::node::Gone> {
    let mut replies: Vec<Option<Reply>> = Vec::with_capacity(requests.len());
    let mut pending: Vec<(usize, Query)> = Vec::new();
    let mut quit = false;
    for args in requests {
        match classify(node, &args) {
            Action::Now(r) => replies.push(Some(r)),
            Action::Query(q) => {
                pending.push((replies.len(), q));
                replies.push(None);
            }
            Action::Sync(peer) => {
                flush(node, &mut pending, &mut replies).await?;
                replies.push(Some(sync(node, &peer).await));
            }
            Action::Quit => {
                replies.push(Some(Reply::ok()));
                quit = true;
                break;
            }
        }
    }
    flush(node, &mut pending, &mut replies).await?;
    Ok((
        replies
            .into_iter()
            .map(|r| r.expect("every query answered"))
            .collect(),
        quit,
    ))
}

async fn flush(
    node: &Node,
    pending: &mut Vec<(usize, Query)>,
    replies: &mut [Option<Reply>],
) -> Result<(), crate::node::Gone> {
    if pending.is_empty() {
        return Ok(());
    }
    let (slots, queries): (Vec<usize>, Vec<Query>) = pending.drain(..).unzip();
    let answers = node.queries(queries).await?;
    for (slot, answer) in slots.into_iter().zip(answers) {
        replies[slot] = Some(answer);
    }
    Ok(())
}

async fn sync(node: &Node, peer: &str) -> Reply {
    let id = match ServerId::new(peer) {
        Ok(id) => id,
        Err(e) => return Reply::err(e),
    };
    match peer::sync_with(node, &id).await {
        Ok(r) => {
            info!(id = %node.config.id, %peer, ?r, "BAYOU.SYNC");
            crate::node::int_fields(&[
                ("received_writes", r.received_writes as i64),
                ("received_commits", r.received_commits as i64),
                ("sent_writes", r.sent_writes as i64),
                ("sent_commits", r.sent_commits as i64),
            ])
        }
        Err(e) => Reply::err(e),
    }
}

/// The default size limit of one bundle file from `BAYOU.EXPORT`.
const DEFAULT_BUNDLE_BYTES: usize = 64 << 20;

/// A command's name, arity (negative: at least) and flags, for `COMMAND`.
const COMMANDS: &[(&str, i64, &[&str], i64, i64)] = &[
    ("ping", -1, &["fast"], 0, 0),
    ("echo", 2, &["fast"], 0, 0),
    ("get", 2, &["readonly", "fast"], 1, 1),
    ("set", 3, &["write", "denyoom"], 1, 1),
    ("del", -2, &["write"], 1, -1),
    ("exists", -2, &["readonly", "fast"], 1, -1),
    ("mget", -2, &["readonly", "fast"], 1, -1),
    ("mset", -3, &["write", "denyoom"], 1, -1),
    ("dbsize", 1, &["readonly", "fast"], 0, 0),
    ("info", -1, &["loading", "stale"], 0, 0),
    ("hello", -1, &["fast", "no_auth"], 0, 0),
    ("command", -1, &["loading", "stale"], 0, 0),
    ("config", -2, &["admin", "loading", "stale"], 0, 0),
    ("client", -2, &["loading", "stale"], 0, 0),
    ("select", 2, &["loading", "stale", "fast"], 0, 0),
    ("quit", -1, &["fast", "no_auth"], 0, 0),
    ("bayou.get", -2, &["readonly", "fast"], 1, 1),
    ("bayou.log", 1, &["readonly"], 0, 0),
    ("bayou.write", 2, &["write", "denyoom"], 0, 0),
    ("bayou.scan", -2, &["readonly"], 0, 0),
    ("bayou.vv", 1, &["readonly", "fast"], 0, 0),
    ("bayou.sync", 2, &["admin"], 0, 0),
    ("bayou.offline", 1, &["admin", "fast"], 0, 0),
    ("bayou.online", 1, &["admin", "fast"], 0, 0),
    ("bayou.status", 1, &["readonly", "fast"], 0, 0),
    ("bayou.truncate", -1, &["admin"], 0, 0),
    ("bayou.summary", 1, &["readonly", "fast"], 0, 0),
    ("bayou.export", -1, &["readonly"], 0, 0),
    ("bayou.import", 2, &["write", "denyoom"], 0, 0),
];

/// Settings `CONFIG GET` reports. `appendonly`/`appendfsync` describe what
/// Bayou really does: every acknowledged write is fsynced first.
const CONFIG: &[(&str, &str)] = &[
    ("save", ""),
    ("appendonly", "yes"),
    ("appendfsync", "always"),
    ("databases", "1"),
    ("maxmemory", "0"),
];

fn command_info(c: &(&str, i64, &[&str], i64, i64)) -> Reply {
    let (name, arity, flags, first, last) = *c;
    Reply::Array(vec![
        Reply::text(name),
        Reply::Int(arity),
        Reply::Array(flags.iter().map(|f| Reply::Simple(f.to_string())).collect()),
        Reply::Int(first),
        Reply::Int(last),
        Reply::Int(if first > 0 { 1 } else { 0 }),
    ])
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

fn classify(node: &Node, args: &[Bytes]) -> Action {
    let n = args.len();
    let Some(spec) = COMMANDS
        .iter()
        .find(|c| c.0.as_bytes().eq_ignore_ascii_case(&args[0]))
    else {
        let mut msg = format!(
            "unknown command '{}', with args beginning with:",
            String::from_utf8_lossy(&args[0])
        );
        for a in args[1..].iter().take(8) {
            msg += &format!(" '{}'", String::from_utf8_lossy(a));
        }
        return Action::Now(Reply::err(msg));
    };
    let name = spec.0;
    let arity = spec.1;
    if (arity > 0 && n as i64 != arity) || (arity < 0 && (n as i64) < -arity) {
        return Action::Now(Reply::err(format!(
            "wrong number of arguments for '{name}' command"
        )));
    }
    let keys = || args[1..].to_vec();
    let q = Action::Query;
    match name {
        "ping" => match n {
            1 => Action::Now(Reply::Simple("PONG".into())),
            2 => Action::Now(Reply::bulk(args[1].clone())),
            _ => Action::Now(Reply::err("wrong number of arguments for 'ping' command")),
        },
        "echo" => Action::Now(Reply::bulk(args[1].clone())),
        "get" => q(Query::Get(args[1].clone(), View::Full)),
        "set" => q(Query::Set(args[1].clone(), args[2].clone())),
        "del" => q(Query::Del(keys())),
        "exists" => q(Query::Exists(keys())),
        "mget" => q(Query::MGet(keys())),
        "mset" => {
            if n.is_multiple_of(2) {
                return Action::Now(Reply::err("wrong number of arguments for 'mset' command"));
            }
            q(Query::MSet(
                args[1..]
                    .chunks(2)
                    .map(|kv| (kv[0].clone(), kv[1].clone()))
                    .collect(),
            ))
        }
        "dbsize" => q(Query::DbSize),
        "info" => q(Query::Info),
        "hello" => {
            if n >= 2 && &args[1][..] != b"2" {
                return Action::Now(Reply::Error("NOPROTO unsupported protocol version".into()));
            }
            Action::Now(resp::hello("bayou", env!("CARGO_PKG_VERSION")))
        }
        "command" => {
            let sub = args.get(1).map(|a| lower(a));
            Action::Now(match sub.as_deref() {
                None => Reply::Array(COMMANDS.iter().map(command_info).collect()),
                Some("count") => Reply::Int(COMMANDS.len() as i64),
                // No documentation to offer; an empty map is a valid answer.
                Some("docs") => Reply::Array(vec![]),
                Some("info") => Reply::Array(
                    args[2..]
                        .iter()
                        .map(|a| match COMMANDS.iter().find(|c| c.0 == lower(a)) {
                            Some(c) => command_info(c),
                            None => Reply::Bulk(None),
                        })
                        .collect(),
                ),
                Some(other) => Reply::err(format!("unknown subcommand '{other}'")),
            })
        }
        "config" => {
            let sub = lower(&args[1]);
            Action::Now(match sub.as_str() {
                "get" if n >= 3 => resp::config_get(CONFIG, &args[2..]),
                "resetstat" => Reply::ok(),
                "get" => Reply::err("wrong number of arguments for 'config|get' command"),
                _ => Reply::err(format!("unsupported CONFIG subcommand '{sub}'")),
            })
        }
        "client" => {
            let sub = lower(&args[1]);
            Action::Now(match sub.as_str() {
                "setname" | "setinfo" => Reply::ok(),
                "getname" => Reply::Bulk(None),
                "id" => Reply::Int(0),
                _ => Reply::err(format!("unsupported CLIENT subcommand '{sub}'")),
            })
        }
        "select" => Action::Now(if &args[1][..] == b"0" {
            Reply::ok()
        } else {
            Reply::err("DB index is out of range")
        }),
        "quit" => Action::Quit,
        "bayou.get" => {
            let view = match args.get(2).map(|a| lower(a)).as_deref() {
                None | Some("full") if n <= 3 => View::Full,
                Some("committed") if n == 3 => View::Committed,
                _ => {
                    return Action::Now(Reply::err("syntax error: BAYOU.GET key [COMMITTED|FULL]"));
                }
            };
            q(Query::Get(args[1].clone(), view))
        }
        "bayou.log" => q(Query::Log),
        "bayou.write" => {
            let text = String::from_utf8_lossy(&args[1]);
            let t = text.trim();
            let op = if t.starts_with('{') {
                BayouWrite::from_json(t).map(|w| Op::Bayou(Box::new(w)))
            } else {
                Op::parse(t).map_err(|e| e.to_string())
            };
            match op {
                Ok(op) => q(Query::Write(op)),
                Err(e) => Action::Now(Reply::err(e)),
            }
        }
        "bayou.scan" => {
            let view = match args.get(2).map(|a| lower(a)).as_deref() {
                None | Some("full") if n <= 3 => View::Full,
                Some("committed") if n == 3 => View::Committed,
                _ => {
                    return Action::Now(Reply::err(
                        "syntax error: BAYOU.SCAN prefix [COMMITTED|FULL]",
                    ));
                }
            };
            q(Query::Scan(args[1].clone(), view))
        }
        "bayou.vv" => q(Query::Vv),
        "bayou.truncate" => match (n, args.get(1).map(|a| lower(a)).as_deref()) {
            (1, _) => q(Query::Truncate(None)),
            (3, Some("keep")) => match std::str::from_utf8(&args[2])
                .ok()
                .and_then(|t| t.parse().ok())
            {
                Some(keep) => q(Query::Truncate(Some(keep))),
                None => Action::Now(Reply::err("value is not an integer or out of range")),
            },
            _ => Action::Now(Reply::err("syntax error: BAYOU.TRUNCATE [KEEP n]")),
        },
        "bayou.summary" => q(Query::Summary),
        "bayou.export" => {
            let mut base = bayou_core::Summary::default();
            let mut max_bytes = DEFAULT_BUNDLE_BYTES;
            let mut i = 1;
            while i < n {
                if lower(&args[i]) == "maxbytes" && i + 1 < n {
                    match std::str::from_utf8(&args[i + 1])
                        .ok()
                        .and_then(|t| t.parse::<usize>().ok())
                    {
                        Some(m) if m >= 1024 => max_bytes = m,
                        _ => {
                            return Action::Now(Reply::err(
                                "MAXBYTES must be an integer of at least 1024",
                            ));
                        }
                    }
                    i += 2;
                } else {
                    match crate::node::decode_summary(&args[i]) {
                        Ok(s) => base = s,
                        Err(e) => {
                            return Action::Now(Reply::err(format!(
                                "syntax error: BAYOU.EXPORT [summary] [MAXBYTES n]: {e}"
                            )));
                        }
                    }
                    i += 1;
                }
            }
            q(Query::Export(base, max_bytes))
        }
        "bayou.import" => q(Query::Import(args[1].clone())),
        "bayou.status" => q(Query::Status),
        "bayou.sync" => Action::Sync(String::from_utf8_lossy(&args[1]).into_owned()),
        "bayou.offline" => {
            node.set_offline(true);
            Action::Now(Reply::ok())
        }
        "bayou.online" => {
            node.set_offline(false);
            Action::Now(Reply::ok())
        }
        _ => unreachable!("every command in COMMANDS is handled"),
    }
}
