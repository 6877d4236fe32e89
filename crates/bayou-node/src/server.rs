//! The listener: accepts connections on `--listen`, tells peers (which start
//! with [`crate::wire::MAGIC`]) from Redis clients, and serves RESP.
//! With TLS on (`--tls-cert` …) every connection is TLS: the handshake comes
//! first, then peers and clients are told apart on the decrypted bytes, and
//! a peer must have presented a certificate of the CA (the kit's
//! [`server_kit::tls`]).
//!
//! Clients are served by the kit's pipelined client loop
//! ([`server_kit::serve_client`]): it reads requests with the shared
//! limits and answers the connection commands (`HELLO 2|3`, `CLIENT`,
//! `SELECT`, `COMMAND`, `MULTI` …); the rest are in [`TABLE`] and run here
//! (the [`Handler`] for [`Node`]). Pipelined requests are read together and
//! the replica's part of them is sent to the replica task as one request,
//! so `-P 16` costs one round trip and at most one durable batch, and many
//! clients share one fsync.
//!
//! `EXEC` runs the queued commands under one acquisition
//! of the replica lock, so no other client's command interleaves with them
//! at this replica; each write among them is still its own Bayou write,
//! ordered and committed like any other.
//!
//! Users (`--acl-file`, docs/acl.md): the kit checks every command against
//! the connection's user before it reaches [`Handler::run`], from the
//! command's flags and the keys its [`TABLE`] entry names: by position, every
//! key (`DBSIZE`, `FLUSHALL`, `BAYOU.LOG`, `BAYOU.EXPORT`, `BAYOU.IMPORT`),
//! or a finder for the keys that are not positional (`SET … GET` reads too,
//! `KEYS`/`SCAN MATCH` patterns, the `BAYOU.SCAN` prefix, the keys of a
//! `BAYOU.WRITE`). `run` is told the user's name, for writes to record as
//! their author.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use bayou_core::{BayouWrite, Op, ServerId, View};
use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::node::{Node, Query};
use crate::peer;
use server_kit::command::{self as cmd, CommandSpec, CommandTable, KeyTarget, KeyUse};
use server_kit::{
    self as resp, CONNECTION_COMMANDS, Handler, Opened, Queued, Reply, Service, Stopped,
};

/// Accepts connections until `shutdown` flips.
pub async fn accept_loop(node: Arc<Node>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
    server_kit::accept_loop(listener, shutdown, move |stream| {
        handle(node.clone(), stream)
    })
    .await
}

/// Serves one accepted connection: the TLS handshake when TLS is on, then
/// a peer or a client, told apart by the first bytes (the kit's
/// [`server_kit::tls::accept_connection`]).
async fn handle(node: Arc<Node>, tcp: TcpStream) {
    let gate = node.clients.clone();
    let tls = node.config.tls.as_ref();
    let opened =
        server_kit::tls::accept_connection(&gate, tls, tcp, crate::wire::MAGIC, peer::IDLE_TIMEOUT)
            .await;
    match opened {
        Some((stream, Opened::Peer(rest), _)) => peer::serve_peer(node, stream, rest).await,
        Some((mut stream, Opened::Client(buf), _slot)) => {
            let conn = crate::session::Conn::new(node);
            let limits = gate.limits();
            if let Err(e) =
                server_kit::serve_client_limited(&mut stream, buf, &SERVICE, &conn, limits).await
            {
                debug!("client connection ended: {e}");
            }
        }
        None => {}
    }
}

/// What one request turns into.
pub(crate) enum Action {
    /// A reply that needs nothing from the replica.
    Now(Reply),
    /// A replica query.
    Query(Query),
    /// `BAYOU.SYNC peer`.
    Sync(String),
}

/// The server, for the kit's client loop: every command a client may send
/// is one of the kit's connection commands or one of [`BAYOU_COMMANDS`].
const SERVICE: Service = Service::new(
    "bayou",
    env!("CARGO_PKG_VERSION"),
    &[CONNECTION_COMMANDS, BAYOU_COMMANDS],
);

/// The command table (`COMMAND`, `COMMAND DOCS`).
pub const TABLE: CommandTable = SERVICE.table;

impl From<crate::node::Gone> for Stopped {
    fn from(_: crate::node::Gone) -> Stopped {
        Stopped
    }
}

/// The replica's side of the kit's client loop. A round's replica queries
/// go to the replica task as one request ([`Node::queries`]: one
/// acquisition of the replica, at most one durable batch), except that
/// `BAYOU.SYNC` runs after the queries before it. An `EXEC`'s commands are
/// one such request, so no other client's command interleaves with them at
/// this replica.
impl Handler for Node {
    fn request_counter(&self) -> Option<&AtomicU64> {
        Some(&self.counters.commands)
    }

    fn refuse(&self, name: &[u8]) -> Option<Reply> {
        unsupported(name)
    }

    fn acl(&self) -> Option<Arc<server_kit::acl::Acl>> {
        self.config.acl.clone()
    }

    async fn run(
        &self,
        user: &str,
        commands: Vec<Queued>,
        _exec: bool,
    ) -> Result<Vec<Reply>, Stopped> {
        // Who sent these commands: their writes' author.
        let author = self.author(user);
        let mut replies: Vec<Option<Reply>> = Vec::with_capacity(commands.len());
        let mut pending: Vec<(usize, Query)> = Vec::new();
        for (spec, args) in commands {
            match classify(self, spec, &args) {
                Action::Now(r) => replies.push(Some(r)),
                Action::Query(q) => {
                    pending.push((replies.len(), q));
                    replies.push(None);
                }
                // Refused inside MULTI (`no_multi`), so never part of an
                // EXEC's commands.
                Action::Sync(peer) => {
                    flush(self, &mut pending, &mut replies, &author).await?;
                    replies.push(Some(sync(self, &peer).await));
                }
            }
        }
        flush(self, &mut pending, &mut replies, &author).await?;
        Ok(replies
            .into_iter()
            .map(|r| r.expect("every query answered"))
            .collect())
    }
}

async fn flush(
    node: &Node,
    pending: &mut Vec<(usize, Query)>,
    replies: &mut [Option<Reply>],
    author: &Option<Arc<str>>,
) -> Result<(), crate::node::Gone> {
    if pending.is_empty() {
        return Ok(());
    }
    let (slots, queries): (Vec<usize>, Vec<Query>) = pending.drain(..).unzip();
    let answers = node.queries(queries, author.clone()).await?;
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

const R: &[&str] = cmd::READ_FAST;
const W: &[&str] = cmd::WRITE;
const WF: &[&str] = &["write", "denyoom", "fast"];

/// Bayou's commands (the connection commands come from the kit).
const BAYOU_COMMANDS: &[CommandSpec] = &[
    CommandSpec::new("get", 2, R, "GET key: the value in the full view").keys(1, 1, 1),
    CommandSpec::new(
        "set",
        -3,
        W,
        "SET key value [NX|XX] [GET]: a write; NX/XX are checked when the write executes",
    )
    .keys(1, 1, 1)
    .named_keys(set_keys),
    CommandSpec::new(
        "setnx",
        3,
        WF,
        "SETNX key value: SET key value NX, replying 1 or 0",
    )
    .keys(1, 1, 1),
    CommandSpec::new("getset", 3, WF, "GETSET key value: SET key value GET")
        .keys(1, 1, 1)
        .reads_keys(),
    CommandSpec::new("getdel", 2, WF, "GETDEL key: the value, and a delete")
        .keys(1, 1, 1)
        .reads_keys(),
    CommandSpec::new(
        "del",
        -2,
        &["write"],
        "DEL key [key ...]: one delete per key",
    )
    .keys(1, -1, 1),
    CommandSpec::new(
        "unlink",
        -2,
        &["write", "fast"],
        "UNLINK key [key ...]: DEL",
    )
    .keys(1, -1, 1),
    CommandSpec::new("exists", -2, R, "EXISTS key [key ...]: how many exist").keys(1, -1, 1),
    CommandSpec::new("type", 2, R, "TYPE key: string or none").keys(1, 1, 1),
    CommandSpec::new("strlen", 2, R, "STRLEN key: the value's length").keys(1, 1, 1),
    CommandSpec::new("mget", -2, R, "MGET key [key ...]").keys(1, -1, 1),
    CommandSpec::new(
        "mset",
        -3,
        W,
        "MSET key value [key value ...]: one write per key",
    )
    .keys(1, -1, 2),
    CommandSpec::new("incr", 2, WF, "INCR key: a counter write, +1")
        .keys(1, 1, 1)
        .reads_keys(),
    CommandSpec::new("decr", 2, WF, "DECR key: a counter write, -1")
        .keys(1, 1, 1)
        .reads_keys(),
    CommandSpec::new("incrby", 3, WF, "INCRBY key n: a counter write, +n")
        .keys(1, 1, 1)
        .reads_keys(),
    CommandSpec::new("decrby", 3, WF, "DECRBY key n: a counter write, -n")
        .keys(1, 1, 1)
        .reads_keys(),
    CommandSpec::new(
        "append",
        3,
        WF,
        "APPEND key value: a write appending to the value",
    )
    .keys(1, 1, 1)
    .reads_keys(),
    CommandSpec::new(
        "keys",
        2,
        &["readonly"],
        "KEYS pattern: matching keys in the full view",
    )
    .named_keys(|args| vec![KeyUse::read(KeyTarget::Pattern(args[1].clone()))]),
    CommandSpec::new(
        "scan",
        -2,
        &["readonly"],
        "SCAN cursor [MATCH pattern] [COUNT n] [TYPE string]: keys in the full view, in pages",
    )
    .named_keys(scan_keys),
    CommandSpec::new("dbsize", 1, R, "DBSIZE: keys in the full view").all_keys(),
    CommandSpec::new(
        "flushdb",
        -1,
        &["write"],
        "FLUSHDB [ASYNC|SYNC]: one write deleting every key present when it executes",
    )
    .all_keys(),
    CommandSpec::new("flushall", -1, &["write"], "FLUSHALL [ASYNC|SYNC]: FLUSHDB").all_keys(),
    CommandSpec::new(
        "unwatch",
        1,
        &["fast", "connection"],
        "UNWATCH: nothing is ever watched",
    ),
    CommandSpec::new(
        "info",
        -1,
        &["loading", "stale"],
        "INFO [section ...]: server, clients, persistence, bayou, keyspace",
    ),
    server_kit::CONFIG_COMMAND,
    CommandSpec::new("bayou.get", -2, R, "BAYOU.GET key [COMMITTED|FULL]").keys(1, 1, 1),
    CommandSpec::new(
        "bayou.log",
        1,
        &["readonly"],
        "BAYOU.LOG: the log in the slides' notation",
    )
    .all_keys(),
    CommandSpec::new(
        "bayou.write",
        2,
        W,
        "BAYOU.WRITE op: any operation; the write id",
    )
    .named_keys(write_keys),
    CommandSpec::new(
        "bayou.scan",
        -2,
        &["readonly"],
        "BAYOU.SCAN prefix [COMMITTED|FULL]",
    )
    .named_keys(|args| vec![KeyUse::read(KeyTarget::Prefix(args[1].clone()))]),
    CommandSpec::new("bayou.vv", 1, R, "BAYOU.VV: the version vector"),
    CommandSpec::new(
        "bayou.sync",
        2,
        &["admin", "no_multi"],
        "BAYOU.SYNC peer: one anti-entropy session now",
    ),
    CommandSpec::new(
        "bayou.offline",
        1,
        &["admin", "fast", "no_multi"],
        "BAYOU.OFFLINE: stop anti-entropy",
    ),
    CommandSpec::new(
        "bayou.online",
        1,
        &["admin", "fast", "no_multi"],
        "BAYOU.ONLINE: resume anti-entropy",
    ),
    CommandSpec::new("bayou.status", 1, R, "BAYOU.STATUS: the replica's state"),
    CommandSpec::new("bayou.truncate", -1, &["admin"], "BAYOU.TRUNCATE [KEEP n]"),
    CommandSpec::new("bayou.summary", 1, R, "BAYOU.SUMMARY: for BAYOU.EXPORT"),
    CommandSpec::new(
        "bayou.export",
        -1,
        &["readonly"],
        "BAYOU.EXPORT [summary] [MAXBYTES n]: bundle files",
    )
    .all_keys(),
    CommandSpec::new(
        "bayou.import",
        2,
        W,
        "BAYOU.IMPORT file: apply a bundle file",
    )
    .all_keys(),
    CommandSpec::new(
        "bayou.join",
        3,
        &["admin", "write"],
        "BAYOU.JOIN id addr: sponsor a new server (its creation write id, once durable)",
    ),
    CommandSpec::new(
        "bayou.handoff",
        2,
        &["admin", "write"],
        "BAYOU.HANDOFF id: the primary hands CSN assignment to a live member",
    ),
    CommandSpec::new(
        "bayou.address",
        2,
        &["admin", "write"],
        "BAYOU.ADDRESS addr: this member's peers reach it at addr from now on (a write)",
    ),
    CommandSpec::new(
        "bayou.retire",
        -1,
        &["admin", "write"],
        "BAYOU.RETIRE [id]: this server retires (a primary hands off to id first)",
    ),
    CommandSpec::new(
        "bayou.members",
        1,
        &["readonly", "fast"],
        "BAYOU.MEMBERS: the membership table (id, address, live or retired, creation write, primary)",
    ),
    crate::session::SESSION_COMMAND,
    crate::session::WAITCOMMIT_COMMAND,
    crate::session::SUBSCRIBE_COMMAND,
    crate::session::UNSUBSCRIBE_COMMAND,
];

/// Redis commands this server knows it does not support, with why; they
/// answer an error naming the command rather than "unknown command".
const UNSUPPORTED: &[(&[&str], &str)] = &[
    (
        &[
            "expire",
            "pexpire",
            "expireat",
            "pexpireat",
            "ttl",
            "pttl",
            "persist",
            "expiretime",
            "pexpiretime",
            "setex",
            "psetex",
            "getex",
        ],
        "keys never expire in Bayou",
    ),
    (
        &[
            "lpush",
            "rpush",
            "lpop",
            "rpop",
            "lrange",
            "llen",
            "lindex",
            "lrem",
            "hset",
            "hget",
            "hgetall",
            "hdel",
            "hmset",
            "hmget",
            "hincrby",
            "hkeys",
            "hvals",
            "hlen",
            "sadd",
            "srem",
            "smembers",
            "sismember",
            "scard",
            "zadd",
            "zrem",
            "zrange",
            "zscore",
            "zcard",
            "zincrby",
            "xadd",
            "xrange",
            "xread",
            "pfadd",
            "pfcount",
            "setbit",
            "getbit",
            "bitcount",
            "geoadd",
            "json.set",
            "json.get",
        ],
        "this server stores strings only",
    ),
    (
        &["incrbyfloat", "getrange", "setrange", "msetnx"],
        "not implemented as a Bayou write yet",
    ),
    (
        &["psubscribe", "ssubscribe", "publish", "punsubscribe"],
        "pub/sub offers only SUBSCRIBE bayou:commits and bayou:outcomes (commit notifications)",
    ),
    (
        &["watch"],
        "MULTI/EXEC is atomic at one replica, without optimistic locks",
    ),
    (
        &["eval", "evalsha", "script", "fcall", "function"],
        "there is no scripting; see BAYOU.WRITE for Bayou's dependency checks and merge procedures",
    ),
    (
        &[
            "move",
            "swapdb",
            "copy",
            "rename",
            "renamenx",
            "migrate",
            "object",
            "dump",
            "restore",
            "randomkey",
            "touch",
            "wait",
            "waitaof",
            "save",
            "bgsave",
            "bgrewriteaof",
            "shutdown",
            "replicaof",
            "slaveof",
            "monitor",
            "debug",
            "sort",
        ],
        "not offered by this server",
    ),
];

/// The keys of `SET key value [NX|XX] [GET]`: written, and read too with
/// `GET` (the reply shows the old value).
fn set_keys(args: &[Bytes]) -> Vec<KeyUse> {
    let get = args[3..].iter().any(|a| a.eq_ignore_ascii_case(b"get"));
    vec![KeyUse {
        target: KeyTarget::Key(args[1].clone()),
        read: get,
        write: true,
    }]
}

/// The keys `SCAN` reads: those matching its `MATCH` pattern, or all.
fn scan_keys(args: &[Bytes]) -> Vec<KeyUse> {
    let pattern = args[2..]
        .chunks(2)
        .find(|o| o.len() == 2 && o[0].eq_ignore_ascii_case(b"match"))
        .map(|o| o[1].clone());
    vec![KeyUse::read(
        pattern.map_or(KeyTarget::All, KeyTarget::Pattern),
    )]
}

/// The keys `BAYOU.WRITE op` writes, parsed as [`classify`] parses it. A
/// Bayou write with a dependency check or a merge procedure runs scripts
/// that may read and write any key, so it needs read and write on every
/// key; a write that does not parse touches nothing (it is refused).
fn write_keys(args: &[Bytes]) -> Vec<KeyUse> {
    let key = |k: &Bytes| KeyUse::write(KeyTarget::Key(k.clone()));
    match parse_write(&args[1]) {
        Err(_) => Vec::new(),
        Ok(Op::Put { key: k, .. })
        | Ok(Op::Delete { key: k })
        | Ok(Op::Incr { key: k, .. })
        | Ok(Op::Append { key: k, .. })
        | Ok(Op::SetIfAbsent { key: k, .. })
        | Ok(Op::SetIfPresent { key: k, .. }) => vec![key(&k)],
        Ok(Op::DeleteAll) => vec![KeyUse::write(KeyTarget::All)],
        // Not parsed from text: membership writes come from their own
        // commands.
        Ok(Op::Member(_)) => Vec::new(),
        Ok(Op::Bayou(w)) if w.check.is_some() || w.merge.is_some() => vec![KeyUse {
            target: KeyTarget::All,
            read: true,
            write: true,
        }],
        Ok(Op::Bayou(w)) => w
            .update
            .iter()
            .map(|m| match m {
                bayou_core::script::Mutation::Put(k, _) | bayou_core::script::Mutation::Del(k) => {
                    KeyUse::write(KeyTarget::Key(Bytes::from(k.clone())))
                }
            })
            .collect(),
    }
}

/// The operation of `BAYOU.WRITE`: a JSON Bayou write, or an operation in
/// the slides' notation.
fn parse_write(arg: &[u8]) -> Result<Op, String> {
    let text = String::from_utf8_lossy(arg);
    let t = text.trim();
    if t.starts_with('{') {
        BayouWrite::from_json(t).map(|w| Op::Bayou(Box::new(w)))
    } else {
        Op::parse(t).map_err(|e| e.to_string())
    }
}

/// The error for a known-unsupported command, if `name` is one.
fn unsupported(name: &[u8]) -> Option<Reply> {
    let lower = lower(name);
    UNSUPPORTED
        .iter()
        .find(|(names, _)| names.contains(&lower.as_str()))
        .map(|(_, why)| cmd::unsupported(&lower.to_ascii_uppercase(), why))
}

/// Settings `CONFIG GET` reports. `appendonly`/`appendfsync` describe what
/// Bayou really does: every acknowledged write is fsynced first.
const CONFIG: &[(&str, &str)] = &[
    ("save", ""),
    ("appendonly", "yes"),
    ("appendfsync", "always"),
    ("databases", "1"),
    ("maxmemory", "0"),
];

/// `CONFIG`: [`CONFIG`], and the TLS settings when TLS is on.
fn config(node: &Node, args: &[Bytes]) -> Reply {
    resp::config_with_tls(CONFIG, node.config.tls.as_ref(), args)
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

/// `SET key value [NX|XX] [GET] [EX|PX|EXAT|PXAT|KEEPTTL …]`.
fn set_options(args: &[Bytes]) -> Result<Query, Reply> {
    let mut cond = None;
    let mut get = false;
    for a in &args[3..] {
        match lower(a).as_str() {
            "nx" if cond.is_none() => cond = Some(false),
            "xx" if cond.is_none() => cond = Some(true),
            "get" => get = true,
            "nx" | "xx" => return Err(cmd::syntax_error()),
            o @ ("ex" | "px" | "exat" | "pxat" | "keepttl") => {
                return Err(cmd::unsupported(
                    &format!("SET ... {}", o.to_ascii_uppercase()),
                    "keys never expire in Bayou; SET supports NX, XX and GET",
                ));
            }
            _ => return Err(cmd::syntax_error()),
        }
    }
    Ok(Query::SetWith {
        key: args[1].clone(),
        value: args[2].clone(),
        present: cond,
        get,
    })
}

/// `SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]`.
fn scan_options(args: &[Bytes]) -> Result<Query, Reply> {
    let cursor = std::str::from_utf8(&args[1])
        .ok()
        .and_then(|t| t.parse::<u64>().ok())
        .ok_or_else(|| Reply::err("invalid cursor"))?;
    let mut pattern = None;
    let mut count = 10usize;
    let mut strings = true;
    let mut i = 2;
    while i < args.len() {
        let value = args.get(i + 1).ok_or_else(cmd::syntax_error)?;
        match lower(&args[i]).as_str() {
            "match" => pattern = Some(value.clone()),
            "count" => match cmd::parse_i64(value) {
                Some(n) if n >= 1 => count = n.min(1 << 20) as usize,
                _ => return Err(cmd::not_an_integer()),
            },
            "type" => strings = lower(value) == "string",
            _ => return Err(cmd::syntax_error()),
        }
        i += 2;
    }
    Ok(Query::KeyScan {
        cursor,
        pattern,
        count,
        strings,
    })
}

pub(crate) fn classify(node: &Node, spec: &CommandSpec, args: &[Bytes]) -> Action {
    let n = args.len();
    let name = spec.name;
    let keys = || args[1..].to_vec();
    let q = Action::Query;
    let now_or = |r: Result<Query, Reply>| match r {
        Ok(query) => Action::Query(query),
        Err(e) => Action::Now(e),
    };
    let counter = |sign: i64| match cmd::parse_i64(&args[2]).and_then(|by| by.checked_mul(sign)) {
        Some(by) => q(Query::Incr(args[1].clone(), by)),
        None => Action::Now(cmd::not_an_integer()),
    };
    match name {
        "get" => q(Query::Get(args[1].clone(), View::Full)),
        "set" if n == 3 => q(Query::Set(args[1].clone(), args[2].clone())),
        "set" => now_or(set_options(args)),
        "setnx" => q(Query::SetNx(args[1].clone(), args[2].clone())),
        "getset" => q(Query::SetWith {
            key: args[1].clone(),
            value: args[2].clone(),
            present: None,
            get: true,
        }),
        "getdel" => q(Query::GetDel(args[1].clone())),
        "del" | "unlink" => q(Query::Del(keys())),
        "exists" => q(Query::Exists(keys())),
        "type" => q(Query::Type(args[1].clone())),
        "strlen" => q(Query::Strlen(args[1].clone())),
        "mget" => q(Query::MGet(keys())),
        "mset" => {
            if n.is_multiple_of(2) {
                return Action::Now(cmd::wrong_arity("mset"));
            }
            q(Query::MSet(
                args[1..]
                    .chunks(2)
                    .map(|kv| (kv[0].clone(), kv[1].clone()))
                    .collect(),
            ))
        }
        "incr" => q(Query::Incr(args[1].clone(), 1)),
        "decr" => q(Query::Incr(args[1].clone(), -1)),
        "incrby" => counter(1),
        "decrby" => counter(-1),
        "append" => q(Query::Append(args[1].clone(), args[2].clone())),
        "keys" => q(Query::Keys(args[1].clone())),
        "scan" => now_or(scan_options(args)),
        "dbsize" => q(Query::DbSize),
        "flushdb" | "flushall" => match args.get(1).map(|a| lower(a)).as_deref() {
            None | Some("sync") | Some("async") if n <= 2 => q(Query::FlushAll),
            _ => Action::Now(cmd::syntax_error()),
        },
        "unwatch" => Action::Now(Reply::ok()),
        "info" => q(Query::Info(args[1..].to_vec())),
        "config" => Action::Now(config(node, args)),
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
        "bayou.write" => match parse_write(&args[1]) {
            Ok(op) => q(Query::Write(op)),
            Err(e) => Action::Now(Reply::err(e)),
        },
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
        "bayou.join" => match ServerId::new(&String::from_utf8_lossy(&args[1])) {
            Ok(id) => match std::str::from_utf8(&args[2]) {
                Ok(addr) if !addr.is_empty() && !addr.contains(char::is_whitespace) => {
                    q(Query::Join(id, addr.to_string()))
                }
                _ => Action::Now(Reply::err("BAYOU.JOIN id addr: the address is HOST:PORT")),
            },
            Err(e) => Action::Now(Reply::err(format!("BAYOU.JOIN: bad server id: {e}"))),
        },
        "bayou.handoff" => match ServerId::new(&String::from_utf8_lossy(&args[1])) {
            Ok(id) => q(Query::Handoff(id)),
            Err(e) => Action::Now(Reply::err(format!("BAYOU.HANDOFF: bad server id: {e}"))),
        },
        "bayou.address" => match std::str::from_utf8(&args[1]) {
            Ok(addr) if !addr.is_empty() && !addr.contains(char::is_whitespace) => {
                q(Query::Address(addr.to_string()))
            }
            _ => Action::Now(Reply::err("BAYOU.ADDRESS addr: the address is HOST:PORT")),
        },
        "bayou.retire" => match args.get(1) {
            None => q(Query::Retire(None)),
            Some(a) if n == 2 => match ServerId::new(&String::from_utf8_lossy(a)) {
                Ok(id) => q(Query::Retire(Some(id))),
                Err(e) => Action::Now(Reply::err(format!("BAYOU.RETIRE: bad server id: {e}"))),
            },
            Some(_) => Action::Now(Reply::err("syntax error: BAYOU.RETIRE [id]")),
        },
        "bayou.members" => q(Query::Members),
        "bayou.sync" => Action::Sync(String::from_utf8_lossy(&args[1]).into_owned()),
        "bayou.offline" => {
            node.set_offline(true);
            Action::Now(Reply::ok())
        }
        "bayou.online" => {
            node.set_offline(false);
            Action::Now(Reply::ok())
        }
        _ => Action::Now(cmd::unknown_command(args)),
    }
}
