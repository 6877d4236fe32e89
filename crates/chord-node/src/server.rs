//! The listener: tells peers (which start with [`MAGIC`]) from Redis clients,
//! serves the peer protocol to the former and RESP to the latter.
//! With TLS on (`--tls-cert` …) every connection is TLS: the handshake comes
//! first, then peers and clients are told apart on the decrypted bytes, and
//! a peer must have presented a certificate of the CA (the kit's
//! [`server_kit::tls`]).
//!
//! Client commands:
//!
//! | command | reply |
//! |---|---|
//! | `GET key` | the value or nil, from the key's owner |
//! | `SET key value` | `OK` once stored at the owner and pushed to its replicas |
//! | `DEL key [key ...]` | how many existed |
//! | `EXISTS key [key ...]` | how many exist |
//! | `MGET key [key ...]` | the values, in order |
//! | `MSET key value [key value ...]` | `OK` |
//! | `CHORD.LOOKUP key [ITERATIVE\|RECURSIVE]` | owner id, owner address, path of `[id, address]` pairs |
//! | `CHORD.FINGERS [ALL]` | rows `[i, start, node id, node address]`: where the finger changes, or all `m` |
//! | `CHORD.SUCCESSORS` | the successor list as `[id, address]` pairs |
//! | `CHORD.PREDECESSOR` | `[id, address]` or nil |
//! | `CHORD.INFO` | field/value pairs |
//! | `CHORD.KEYS [OWNED]` | names of the live keys stored here (all, or owned only) |
//! | `CHORD.RECORD key` | the newest copy's value, version and author, as field/value pairs |
//! | `CHORD.LEAVE` | hands the keys off, leaves the ring, replies the count, exits |
//! | `PING [msg]`, `ECHO msg`, `HELLO [2\|3]`, `CLIENT ...`, `SELECT 0`, `COMMAND [DOCS\|INFO\|COUNT\|LIST]`, `MULTI`/`EXEC`/`DISCARD`, `QUIT` | as Redis, answered by the kit's connection state ([`server_kit::Client`]) |
//! | `INFO`, `CONFIG GET`, `DBSIZE`, `READONLY`, `READWRITE` | as Redis, as far as redis-cli and redis-benchmark need |
//! | `AUTH [user] password`, `ACL WHOAMI\|USERS\|LIST\|LOAD\|CAT` | users and permissions from `--acl-file` (docs/acl.md), answered by the kit |
//!
//! With several virtual nodes, `CHORD.FINGERS`, `CHORD.SUCCESSORS` and
//! `CHORD.PREDECESSOR` describe the first one (or the one named by a trailing
//! `VNODE i` argument).
//!
//! Clients are served by the kit's pipelined client loop
//! ([`server_kit::serve_client`]), the same as Bayou's: the same limits,
//! RESP2 and RESP3 (`HELLO 3`), and the same texts for unknown commands and
//! wrong arities, from the command table [`TABLE`]. In a pipeline, a run of
//! `GET`/`SET` on distinct keys runs concurrently (no request in it can
//! observe another's effect); everything else runs in order.
//!
//! Users: with `--acl-file` the kit checks every command against the
//! connection's user (the keys from [`TABLE`]: by position; every key for
//! `DBSIZE` and `CHORD.KEYS`) before [`Handler::run`], which is told the
//! user's name.
//!
//! `MULTI`/`EXEC`: the commands are queued by the kit and `EXEC` runs them
//! in order, each routed to its key's owner as if sent one by one. It is
//! **not atomic** across keys: other clients' commands may interleave, and
//! a failed command (e.g. `TRYAGAIN` while the owner is unreachable) does
//! not undo the ones before it; each has its own reply in `EXEC`'s array.
//! `WATCH` is not offered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use chord_core::Id;
use chord_core::node::LookupMode;
use server_kit::command::{self as cmd, CommandSpec, CommandTable};
use server_kit::frame::FrameError;
use server_kit::peer_auth::{self, PeerAuthError};
use server_kit::{CONNECTION_COMMANDS, Handler, Opened, Queued, Reply, Service, Stopped};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::debug;

use crate::data;
use crate::node::{CoreEvent, Peer, Shared};
use crate::store::hex;
use crate::wire::{self, Body, MAGIC};
use chord_core::data::KeyStore;
use server_kit::frame::{FrameReader, write_frame};
use server_kit::tls::Stream;

/// Most keys of one MGET/MSET/DEL/EXISTS in flight at once.
const MAX_FAN_OUT: usize = 256;

/// Accepts connections until shutdown.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let shutdown = shared.shutdown.subscribe();
    server_kit::accept_loop(listener, shutdown, move |stream| {
        handle(shared.clone(), stream)
    })
    .await
}

/// Serves one accepted connection: the TLS handshake when TLS is on, then
/// a peer or a client, told apart by the first bytes (the kit's
/// [`server_kit::tls::accept_connection`]).
async fn handle(shared: Arc<Shared>, tcp: TcpStream) {
    let gate = shared.clients.clone();
    let opened = server_kit::tls::accept_connection(
        &gate,
        shared.cfg.tls.as_ref(),
        tcp,
        MAGIC,
        shared.cfg.peer_idle_timeout(),
    )
    .await;
    match opened {
        Some((stream, Opened::Peer(rest), _)) => serve_peer(shared, stream, rest).await,
        Some((mut stream, Opened::Client(buf), _slot)) => {
            let clients = Clients(shared);
            let limits = gate.limits();
            if let Err(e) =
                server_kit::serve_client_limited(&mut stream, buf, &SERVICE, &clients, limits).await
            {
                debug!("client connection ended: {e}");
            }
        }
        None => {}
    }
}

/// Serves one incoming peer connection: core messages go to the core task,
/// requests are answered on this connection (concurrently, in any order).
/// A connection that sends its magic but no complete first frame within
/// the peer idle timeout is closed; after that a peer may be quiet as long
/// as it likes (a process may have nothing to tell this one for a while).
async fn serve_peer(shared: Arc<Shared>, mut stream: Stream, mut already: BytesMut) {
    // Nothing the peer sends is read as a message before it proves it holds
    // the cluster secret (server_kit::peer_auth).
    let secret = shared.cfg.cluster_secret.as_ref();
    let exchange = peer_auth::accept(&mut stream, secret, &mut already);
    match peer_auth::within(shared.cfg.peer_idle_timeout(), exchange).await {
        Ok(()) => {}
        Err(e @ (PeerAuthError::Timeout | PeerAuthError::Frame(FrameError::Truncated))) => {
            debug!("peer connection closed during authentication: {e}");
            return;
        }
        Err(e) => {
            let remote = stream
                .peer_addr()
                .map_or_else(|_| "?".to_string(), |a| a.to_string());
            let me = shared.cfg.listen.to_string();
            shared.refused_peers.refused(&me, &remote, &e);
            return;
        }
    }
    let (r, mut w) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(1024);
    let writer = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if write_frame(&mut w, &f).await.is_err() {
                return;
            }
        }
    });
    let mut frames = FrameReader::new(r, already, shared.cfg.max_frame_bytes);
    let mut idle = Some(shared.cfg.peer_idle_timeout());
    loop {
        let buf = match frames.next(idle.take()).await {
            Ok(Some(buf)) => buf,
            Ok(None) => break,
            Err(e) => {
                debug!("peer connection closed: {e}");
                break;
            }
        };
        match wire::decode(&buf) {
            Ok(Body::Chord { to, from, msg }) => {
                // A node named with an id its address does not bind it to
                // (--id-binding) never reaches the core: a node cannot
                // place itself, or anyone, at a chosen point of the ring.
                if let Some(bad) = std::iter::once(&from)
                    .chain(msg.node_refs())
                    .find(|n| !shared.is_bound(n))
                {
                    shared.unbound_refused.refused(
                        &shared.cfg.listen.to_string(),
                        &from.addr.to_string(),
                        &format!(
                            "message names node {} at {}, an id that address does not bind \
                             (--id-binding {:?}): dropped",
                            crate::store::hex(bad.id),
                            bad.addr,
                            shared.cfg.id_binding
                        ),
                    );
                    shared
                        .counters
                        .unbound_refused
                        .fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let _ = shared.core.send(CoreEvent::Message { to, from, msg });
            }
            Ok(Body::Request {
                id,
                req: wire::Request::Whoami,
            }) => {
                let view = shared.view();
                let ids = view
                    .vnodes
                    .iter()
                    .filter(|v| v.joined)
                    .map(|v| v.id)
                    .collect();
                let resp = wire::Response::Ids(ids);
                let _ = tx.send(wire::encode(&Body::Response { id, resp })).await;
            }
            Ok(Body::Data { from, msg }) => {
                let _ = shared.data.send(data::DataEvent::Peer { from, msg });
            }
            Ok(Body::Response { .. }) => {}
            Err(e) => {
                debug!("undecodable peer frame: {e}");
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// The server, for the kit's client loop: every command a client may send
/// is one of the kit's connection commands or one of [`CHORD_COMMANDS`].
const SERVICE: Service = Service::new(
    "chord",
    env!("CARGO_PKG_VERSION"),
    &[CONNECTION_COMMANDS, CHORD_COMMANDS],
);

/// The command table (`COMMAND`, `COMMAND DOCS`).
pub const TABLE: CommandTable = SERVICE.table;

/// Chord's commands (the connection commands come from the kit): the
/// reads, the writes, then the server and ring commands.
const CHORD_COMMANDS: &[CommandSpec] = &[
    CommandSpec::new(
        "get",
        2,
        cmd::READ_FAST,
        "GET key: the value, read at the key's owner",
    )
    .keys(1, 1, 1),
    CommandSpec::new(
        "mget",
        -2,
        cmd::READ_FAST,
        "MGET key [key ...]: the values, fetched from their owners concurrently",
    )
    .keys(1, -1, 1),
    CommandSpec::new(
        "exists",
        -2,
        cmd::READ_FAST,
        "EXISTS key [key ...]: how many exist",
    )
    .keys(1, -1, 1),
    CommandSpec::new("dbsize", 1, cmd::READ_FAST, "DBSIZE: keys owned here").all_keys(),
    CommandSpec::new(
        "set",
        -3,
        cmd::WRITE,
        "SET key value: stored durably at the owner and pushed to its replicas (no options)",
    )
    .keys(1, 1, 1),
    CommandSpec::new(
        "mset",
        -3,
        cmd::WRITE,
        "MSET key value [key value ...]: the last value of a repeated key wins",
    )
    .keys(1, -1, 2),
    CommandSpec::new("del", -2, &["write"], "DEL key [key ...]: how many existed").keys(1, -1, 1),
    CommandSpec::new(
        "info",
        -1,
        &["loading", "stale"],
        "INFO [section ...]: a Redis-style text with the CHORD.INFO fields",
    ),
    server_kit::CONFIG_COMMAND,
    CommandSpec::new(
        "readonly",
        1,
        &["fast", "connection"],
        "READONLY: OK (not a cluster)",
    ),
    CommandSpec::new(
        "readwrite",
        1,
        &["fast", "connection"],
        "READWRITE: OK (not a cluster)",
    ),
    CommandSpec::new(
        "chord.lookup",
        -2,
        &["readonly"],
        "CHORD.LOOKUP key [ITERATIVE|RECURSIVE]: owner id, owner address, path",
    ),
    CommandSpec::new(
        "chord.fingers",
        -1,
        &["readonly"],
        "CHORD.FINGERS [ALL] [VNODE i]: rows [i, start, node id, node address]",
    ),
    CommandSpec::new(
        "chord.successors",
        -1,
        &["readonly"],
        "CHORD.SUCCESSORS [VNODE i]: the successor list as [id, address] pairs",
    ),
    CommandSpec::new(
        "chord.predecessor",
        -1,
        &["readonly"],
        "CHORD.PREDECESSOR [VNODE i]: [id, address] or nil",
    ),
    CommandSpec::new(
        "chord.record",
        2,
        &["readonly"],
        "CHORD.RECORD key: the newest copy's value (nil if deleted), version stamp, coordinator id and author",
    )
    .keys(1, 1, 1),
    CommandSpec::new(
        "chord.info",
        1,
        &["readonly"],
        "CHORD.INFO: field/value pairs",
    ),
    CommandSpec::new(
        "chord.keys",
        -1,
        &["readonly"],
        "CHORD.KEYS [OWNED]: names of the live keys stored here",
    )
    .all_keys(),
    CommandSpec::new(
        "chord.leave",
        1,
        &["admin", "no_multi"],
        "CHORD.LEAVE: hand the keys off, leave the ring, exit",
    ),
];

/// Settings `CONFIG GET` reports.
const CONFIG: &[(&str, &str)] = &[("save", ""), ("appendonly", "no"), ("databases", "1")];

/// `CONFIG`: [`CONFIG`], and the TLS settings when TLS is on.
fn config(shared: &Shared, args: &[Bytes]) -> Reply {
    server_kit::config_with_tls(CONFIG, shared.cfg.tls.as_ref(), args)
}

/// The node's side of the kit's client loop.
struct Clients(Arc<Shared>);

impl Handler for Clients {
    fn request_counter(&self) -> Option<&AtomicU64> {
        Some(&self.0.counters.commands)
    }

    fn acl(&self) -> Option<Arc<server_kit::acl::Acl>> {
        self.0.cfg.acl.clone()
    }

    /// Runs the commands in order, except that a run of `GET`/`SET` on
    /// distinct keys runs concurrently: no request in it can observe
    /// another's effect, so the replies are those of running them one by
    /// one. The same for `EXEC` (not atomic, see the module docs).
    async fn run(
        &self,
        user: &str,
        commands: Vec<Queued>,
        _exec: bool,
    ) -> Result<Vec<Reply>, Stopped> {
        let shared = &self.0;
        // Who sent these commands, recorded with every record they write
        // (only when clients authenticate: an open node names nobody).
        let author: Option<String> = shared.cfg.acl.as_ref().map(|_| user.to_string());
        let mut replies = Vec::with_capacity(commands.len());
        let mut i = 0;
        while i < commands.len() {
            let mut keys = std::collections::HashSet::new();
            let mut j = i;
            while j < commands.len()
                && is_simple(&commands[j])
                && keys.insert(commands[j].1[1].clone())
            {
                j += 1;
            }
            if j - i >= 2 {
                let mut set = tokio::task::JoinSet::new();
                for (k, (spec, args)) in commands[i..j].iter().cloned().enumerate() {
                    let s = shared.clone();
                    let author = author.clone();
                    set.spawn(async move { (k, execute(&s, spec, args, author).await) });
                }
                let mut run: Vec<Option<Reply>> = (i..j).map(|_| None).collect();
                while let Some(r) = set.join_next().await {
                    match r {
                        Ok((k, reply)) => run[k] = Some(reply),
                        Err(e) => {
                            tracing::error!("client task failed: {e}");
                            return Err(Stopped);
                        }
                    }
                }
                replies.extend(run.into_iter().map(|r| r.expect("every request answered")));
                i = j;
            } else {
                let (spec, args) = commands[i].clone();
                replies.push(execute(shared, spec, args, author.clone()).await);
                i += 1;
            }
        }
        Ok(replies)
    }
}

/// `GET key` or `SET key value`.
fn is_simple((spec, args): &Queued) -> bool {
    (spec.name == "get" && args.len() == 2) || (spec.name == "set" && args.len() == 3)
}

/// `CHORD.RECORD`'s answer: field/value pairs (a map in RESP3).
fn record_reply(r: &chord_core::data::Record) -> Reply {
    Reply::Map(vec![
        (
            Reply::text("value"),
            Reply::Bulk(r.value.clone().map(Bytes::from)),
        ),
        (Reply::text("deleted"), Reply::Int(r.is_tombstone() as i64)),
        (Reply::text("stamp"), Reply::Int(r.version.stamp as i64)),
        (
            Reply::text("coordinator"),
            Reply::text(hex(r.version.writer)),
        ),
        (
            Reply::text("author"),
            Reply::Bulk(r.author.clone().map(Bytes::from)),
        ),
    ])
}

fn peer_reply(p: &Peer) -> Reply {
    Reply::Array(vec![
        Reply::text(hex(p.id)),
        Reply::text(p.addr.to_string()),
    ])
}

fn client_err(e: data::ClientError) -> Reply {
    // The error text starts with its code (TRYAGAIN, ERR).
    Reply::Error(e.to_string())
}

/// Runs one of [`CHORD_COMMANDS`] (its arity already checked).
async fn execute(
    shared: &Arc<Shared>,
    spec: &CommandSpec,
    args: Vec<Bytes>,
    author: Option<String>,
) -> Reply {
    let n = args.len();
    match spec.name {
        "get" => match data::get(shared, &args[1]).await {
            Ok(v) => Reply::Bulk(v.map(Bytes::from)),
            Err(e) => client_err(e),
        },
        "set" => {
            if n > 3 {
                Reply::err("syntax error (SET options are not supported)")
            } else if too_big(shared, &args[1..]) {
                Reply::err("key and value too large for a node-to-node frame")
            } else {
                match data::write(shared, &args[1], Some(args[2].to_vec()), author).await {
                    Ok(_) => Reply::ok(),
                    Err(e) => client_err(e),
                }
            }
        }
        "del" => {
            let names: Vec<Bytes> = args[1..].to_vec();
            fan_out(shared, names, |s, k| {
                let author = author.clone();
                async move { data::write(&s, &k, None, author).await.map(|e| e as i64) }
            })
            .await
            .map(|v| Reply::Int(v.into_iter().sum()))
            .unwrap_or_else(client_err)
        }
        "exists" => {
            let names: Vec<Bytes> = args[1..].to_vec();
            fan_out(shared, names, |s, k| async move {
                data::get(&s, &k).await.map(|v| v.is_some() as i64)
            })
            .await
            .map(|v| Reply::Int(v.into_iter().sum()))
            .unwrap_or_else(client_err)
        }
        "mget" => {
            let names: Vec<Bytes> = args[1..].to_vec();
            fan_out(shared, names, |s, k| async move { data::get(&s, &k).await })
                .await
                .map(|v| {
                    Reply::Array(
                        v.into_iter()
                            .map(|x| Reply::Bulk(x.map(Bytes::from)))
                            .collect(),
                    )
                })
                .unwrap_or_else(client_err)
        }
        "mset" if n.is_multiple_of(2) => cmd::wrong_arity("mset"),
        "mset" if args[1..].chunks(2).any(|kv| too_big(shared, kv)) => {
            Reply::err("key and value too large for a node-to-node frame")
        }
        "mset" => {
            let pairs: Vec<(Bytes, Bytes)> = args[1..]
                .chunks(2)
                .map(|c| (c[0].clone(), c[1].clone()))
                .collect();
            // Later pairs win for repeated keys, as in Redis.
            let mut last = std::collections::HashMap::new();
            for (i, (k, _)) in pairs.iter().enumerate() {
                last.insert(k.clone(), i);
            }
            let pairs: Vec<(Bytes, Bytes)> = pairs
                .into_iter()
                .enumerate()
                .filter(|(i, (k, _))| last[k] == *i)
                .map(|(_, p)| p)
                .collect();
            fan_out(shared, pairs, |s, (k, v)| {
                let author = author.clone();
                async move { data::write(&s, &k, Some(v.to_vec()), author).await }
            })
            .await
            .map(|_| Reply::ok())
            .unwrap_or_else(client_err)
        }
        "chord.lookup" if n > 3 => cmd::wrong_arity("chord.lookup"),
        "chord.lookup" => {
            let mode = match args
                .get(2)
                .map(|a| String::from_utf8_lossy(a).to_uppercase())
            {
                None => Some(shared.cfg.lookup_mode),
                Some(m) if m == "ITERATIVE" => Some(LookupMode::Iterative),
                Some(m) if m == "RECURSIVE" => Some(LookupMode::Recursive),
                Some(_) => None,
            };
            match mode {
                None => Reply::err("mode must be ITERATIVE or RECURSIVE"),
                Some(mode) => {
                    let key = shared.space.hash(&args[1]);
                    match shared.lookup(key, mode).await {
                        Ok(o) => Reply::Array(vec![
                            Reply::text(hex(o.owner.id)),
                            Reply::text(o.owner.addr.to_string()),
                            Reply::Array(o.path.iter().map(peer_reply).collect()),
                        ]),
                        Err(e) => Reply::Error(format!("TRYAGAIN lookup failed: {e}")),
                    }
                }
            }
        }
        "chord.successors" | "chord.predecessor" | "chord.fingers" => {
            let mut all = false;
            let mut vi = 0usize;
            let mut i = 1;
            let mut bad = false;
            while i < n {
                let a = String::from_utf8_lossy(&args[i]).to_uppercase();
                if a == "ALL" && spec.name == "chord.fingers" {
                    all = true;
                } else if a == "VNODE" && i + 1 < n {
                    match String::from_utf8_lossy(&args[i + 1]).parse() {
                        Ok(x) => vi = x,
                        Err(_) => bad = true,
                    }
                    i += 1;
                } else {
                    bad = true;
                }
                i += 1;
            }
            if bad {
                cmd::syntax_error()
            } else {
                ring_state(shared, spec.name, vi, all).await
            }
        }
        "chord.record" => match data::record(shared, &args[1]).await {
            Ok(Some(r)) => record_reply(&r),
            Ok(None) => Reply::Bulk(None),
            Err(e) => client_err(e),
        },
        "chord.info" => chord_info(shared).await,
        "chord.keys" if n > 2 => cmd::wrong_arity("chord.keys"),
        "chord.keys" => {
            let owned_only = match args.get(1) {
                None => Some(false),
                Some(a) if a.eq_ignore_ascii_case(b"OWNED") => Some(true),
                Some(_) => None,
            };
            match owned_only {
                None => cmd::syntax_error(),
                Some(owned_only) => match local_keys(shared, owned_only).await {
                    Ok(names) => Reply::Array(names.into_iter().map(Reply::bulk).collect()),
                    Err(e) => Reply::err(e),
                },
            }
        }
        "chord.leave" => match data::leave(shared).await {
            Ok(sent) => {
                let s = shared.clone();
                tokio::spawn(async move {
                    // Give the leave messages and this reply time to go out.
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                    crate::node::stop(&s);
                });
                Reply::Int(sent as i64)
            }
            Err(e) => client_err(e),
        },
        "dbsize" => match local_keys(shared, true).await {
            Ok(v) => Reply::Int(v.len() as i64),
            Err(e) => Reply::err(e),
        },
        "readonly" | "readwrite" => Reply::ok(),
        "config" => config(shared, &args),
        "info" => redis_info(shared).await,
        _ => cmd::unknown_command(&args),
    }
}

/// Whether a key and value could not travel in one peer frame (with room
/// for the envelope).
fn too_big(shared: &Shared, kv: &[Bytes]) -> bool {
    kv.iter().map(|b| b.len()).sum::<usize>() + 4096 > shared.cfg.max_frame_bytes
}

/// Runs `f` for every item concurrently, answers in order, fails if any fails.
async fn fan_out<I, T, F, Fut>(
    shared: &Arc<Shared>,
    items: Vec<I>,
    f: F,
) -> Result<Vec<T>, data::ClientError>
where
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(Arc<Shared>, I) -> Fut,
    Fut: std::future::Future<Output = Result<T, data::ClientError>> + Send + 'static,
{
    if items.len() == 1 {
        let item = items.into_iter().next().expect("one item");
        return Ok(vec![f(shared.clone(), item).await?]);
    }
    let mut set = tokio::task::JoinSet::new();
    let n = items.len();
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for (i, item) in items.into_iter().enumerate() {
        // At most MAX_FAN_OUT keys in flight per command.
        if set.len() >= MAX_FAN_OUT
            && let Some(r) = set.join_next().await
        {
            let (j, r) = r.map_err(|e| {
                tracing::error!("client task failed: {e}");
                data::ClientError::Stopped
            })?;
            out[j] = Some(r?);
        }
        let fut = f(shared.clone(), item);
        set.spawn(async move { (i, fut.await) });
    }
    while let Some(r) = set.join_next().await {
        let (i, r) = r.map_err(|e| {
            tracing::error!("client task failed: {e}");
            data::ClientError::Stopped
        })?;
        out[i] = Some(r?);
    }
    Ok(out
        .into_iter()
        .map(|x| x.expect("every task answered"))
        .collect())
}

/// Names of the live keys this process stores (owned by it only, with
/// `owned_only`), as its data plane sees them.
async fn local_keys(shared: &Arc<Shared>, owned_only: bool) -> Result<Vec<Vec<u8>>, String> {
    data::inspect(shared, move |p| {
        p.store()
            .all()
            .into_iter()
            .filter(|(id, r)| !r.is_tombstone() && (!owned_only || p.owner_of(*id).is_some()))
            .map(|(_, r)| r.name)
            .collect()
    })
    .await
    .ok_or_else(|| "node stopping".to_string())
}

async fn ring_state(shared: &Arc<Shared>, cmd: &str, vi: usize, all: bool) -> Reply {
    let view = shared.view();
    let Some(v) = view.vnodes.get(vi) else {
        return Reply::err("no such virtual node");
    };
    match cmd {
        "chord.successors" => Reply::Array(v.succs.iter().map(peer_reply).collect()),
        "chord.predecessor" => v.pred.as_ref().map(peer_reply).unwrap_or(Reply::Bulk(None)),
        _ => {
            let id = v.id;
            let space = shared.space;
            let rows = shared
                .inspect(move |h| {
                    let Some(n) = h.nodes().get(&id) else {
                        return Vec::new();
                    };
                    let mut rows = Vec::new();
                    let mut prev: Option<Id> = None;
                    for i in 1..=space.bits() {
                        let f = n.finger(i).cloned();
                        let fid = f.as_ref().map(|f| f.id);
                        if all || i == 1 || fid != prev {
                            rows.push(Reply::Array(vec![
                                Reply::Int(i as i64),
                                Reply::text(hex(space.finger_start(id, i))),
                                f.as_ref()
                                    .map_or(Reply::Bulk(None), |f| Reply::text(hex(f.id))),
                                f.as_ref()
                                    .map_or(Reply::Bulk(None), |f| Reply::text(f.addr.to_string())),
                            ]));
                        }
                        prev = fid;
                    }
                    rows
                })
                .await
                .unwrap_or_default();
            Reply::Array(rows)
        }
    }
}

async fn chord_info(shared: &Arc<Shared>) -> Reply {
    let view = shared.view();
    let stats = shared.core_stats().await;
    let keys = local_keys(shared, false)
        .await
        .map(|v| v.len())
        .unwrap_or(0);
    let owned = local_keys(shared, true).await.map(|v| v.len()).unwrap_or(0);
    let ids: Vec<Id> = view.vnodes.iter().map(|v| v.id).collect();
    let (ready, ds) = data::inspect(shared, move |p| {
        (ids.iter().all(|v| p.is_ready(*v)), p.stats())
    })
    .await
    .unwrap_or_default();
    let c = &shared.counters;
    let mut f: Vec<(String, Reply)> = vec![
        ("address".into(), Reply::text(shared.me().to_string())),
        (
            "id".into(),
            Reply::text(view.vnodes.first().map(|v| hex(v.id)).unwrap_or_default()),
        ),
        ("virtual_nodes".into(), Reply::Int(view.vnodes.len() as i64)),
        (
            "joined".into(),
            Reply::Int(view.vnodes.iter().all(|v| v.joined) as i64),
        ),
        ("ready".into(), Reply::Int(ready as i64)),
        (
            "predecessor".into(),
            view.vnodes
                .first()
                .and_then(|v| v.pred.as_ref())
                .map_or(Reply::Bulk(None), |p| Reply::text(p.addr.to_string())),
        ),
        (
            "successor".into(),
            view.vnodes
                .first()
                .and_then(|v| v.succs.first())
                .map_or(Reply::Bulk(None), |p| Reply::text(p.addr.to_string())),
        ),
        (
            "successor_list_length".into(),
            Reply::Int(shared.cfg.successors as i64),
        ),
        ("replicas".into(), Reply::Int(shared.cfg.replicas as i64)),
        ("keys_stored".into(), Reply::Int(keys as i64)),
        ("keys_owned".into(), Reply::Int(owned as i64)),
        (
            "messages_sent".into(),
            Reply::Int(stats.messages_sent as i64),
        ),
        ("rpc_timeouts".into(), Reply::Int(stats.timeouts as i64)),
        ("lookups_ok".into(), Reply::Int(stats.lookups_ok as i64)),
        (
            "lookups_failed".into(),
            Reply::Int(stats.lookups_failed as i64),
        ),
    ];
    f.push((
        "commands".into(),
        Reply::Int(c.commands.load(Ordering::Relaxed) as i64),
    ));
    for (name, v) in [
        ("records_pushed", ds.records_pushed),
        ("records_pulled", ds.records_pulled),
        ("sync_rounds_confirmed", ds.rounds_confirmed),
        ("tombstones_purged", ds.tombstones_purged),
        ("hedged_reads", ds.hedged_reads),
    ] {
        f.push((name.into(), Reply::Int(v as i64)));
    }
    f.push((
        "uptime_ms".into(),
        Reply::Int(shared.started.elapsed().as_millis() as i64),
    ));
    Reply::Array(
        f.into_iter()
            .flat_map(|(k, v)| [Reply::text(k), v])
            .collect(),
    )
}

async fn redis_info(shared: &Arc<Shared>) -> Reply {
    let Reply::Array(items) = chord_info(shared).await else {
        unreachable!()
    };
    let mut text = String::from(
        "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nchord_node:1\r\n",
    );
    text.push_str(&format!(
        "tcp_port:{}\r\ntls_enabled:{}\r\nuptime_in_seconds:{}\r\n\r\n# Chord\r\n",
        shared.me().port(),
        shared.cfg.tls.is_some() as u8,
        shared.started.elapsed().as_secs()
    ));
    for pair in items.chunks(2) {
        let k = match &pair[0] {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            _ => continue,
        };
        let v = match &pair[1] {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Int(i) => i.to_string(),
            _ => String::new(),
        };
        text.push_str(&format!("{k}:{v}\r\n"));
    }
    let mut stats = shared.clients.stats_info();
    stats.push((
        "peer_messages_unbound_ids".into(),
        shared
            .counters
            .unbound_refused
            .load(Ordering::Relaxed)
            .to_string(),
    ));
    let security = vec![
        (
            "peer_auth".to_string(),
            if shared.cfg.cluster_secret.is_some() {
                "cluster-secret"
            } else {
                "none"
            }
            .to_string(),
        ),
        (
            "id_binding".to_string(),
            format!("{:?}", shared.cfg.id_binding).to_lowercase(),
        ),
    ];
    let clients = shared
        .clients
        .clients_info()
        .into_iter()
        .chain(server_kit::acl::info_fields(shared.cfg.acl.as_deref()))
        .collect();
    for (title, fields) in [
        ("Clients", clients),
        ("Stats", stats),
        ("Security", security),
    ] {
        text.push_str(&format!("\r\n# {title}\r\n"));
        for (k, v) in fields {
            text.push_str(&format!("{k}:{v}\r\n"));
        }
    }
    Reply::text(text)
}
