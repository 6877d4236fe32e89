//! The listener: tells peers (which start with [`MAGIC`]) from Redis clients,
//! serves the peer protocol to the former and RESP to the latter.
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
//! | `CHORD.LEAVE` | hands the keys off, leaves the ring, replies the count, exits |
//! | `PING [msg]`, `ECHO msg`, `HELLO [2]`, `INFO`, `COMMAND`, `CONFIG GET`, `SELECT 0`, `CLIENT ...`, `DBSIZE`, `QUIT` | as Redis, as far as redis-cli and redis-benchmark need |
//!
//! With several virtual nodes, `CHORD.FINGERS`, `CHORD.SUCCESSORS` and
//! `CHORD.PREDECESSOR` describe the first one (or the one named by a trailing
//! `VNODE i` argument).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use chord_core::Id;
use chord_core::node::LookupMode;
use server_kit::{self as resp, Limits, Opened, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::debug;

use crate::data;
use crate::node::{CoreEvent, Peer, Shared};
use crate::store::hex;
use crate::transport::{read_frame, write_frame};
use crate::wire::{self, Body, MAGIC};
use chord_core::data::KeyStore;

/// Most requests of one pipeline handled in one round.
const MAX_PIPELINE: usize = 1024;

/// Most keys of one MGET/MSET/DEL/EXISTS in flight at once.
const MAX_FAN_OUT: usize = 256;

/// How long a peer may take to finish sending the magic prefix.
const PEER_MAGIC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Most bytes a client may have buffered without completing a request.
const MAX_QUERY_BUFFER_BYTES: usize = 128 << 20;

/// Accepts connections until shutdown.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let shutdown = shared.shutdown.subscribe();
    server_kit::accept_loop(listener, shutdown, move |stream| {
        handle(shared.clone(), stream)
    })
    .await
}

async fn handle(shared: Arc<Shared>, mut stream: TcpStream) {
    match resp::open(&mut stream, MAGIC, PEER_MAGIC_TIMEOUT).await {
        Some(Opened::Peer(rest)) => serve_peer(shared, stream, rest).await,
        Some(Opened::Client(buf)) => {
            if let Err(e) = serve_client(&shared, &mut stream, buf).await {
                debug!("client connection ended: {e}");
            }
        }
        None => {}
    }
}

/// Serves one incoming peer connection: core messages go to the core task,
/// requests are answered on this connection (concurrently, in any order).
async fn serve_peer(shared: Arc<Shared>, stream: TcpStream, already: BytesMut) {
    let (r, mut w) = stream.into_split();
    let mut r = tokio::io::AsyncReadExt::chain(std::io::Cursor::new(already.to_vec()), r);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
    let writer = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if write_frame(&mut w, &f).await.is_err() {
                return;
            }
        }
    });
    let max = shared.cfg.max_frame_bytes;
    let mut buf = Vec::new();
    loop {
        match read_frame(&mut r, &mut buf, max).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                debug!("peer connection closed: {e}");
                break;
            }
        }
        match wire::decode(&buf) {
            Ok(Body::Chord { to, from, msg }) => {
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

async fn serve_client(
    shared: &Arc<Shared>,
    stream: &mut TcpStream,
    mut buf: BytesMut,
) -> std::io::Result<()> {
    let limits = Limits::default();
    let mut out = BytesMut::with_capacity(16 << 10);
    loop {
        // Every request already received, in order (a pipeline).
        let mut batch: Vec<Vec<Bytes>> = Vec::new();
        let mut error = None;
        while batch.len() < MAX_PIPELINE {
            match resp::parse(&mut buf, &limits) {
                Ok(Some(args)) if args.is_empty() => {}
                Ok(Some(args)) => batch.push(args),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        shared
            .counters
            .commands
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let mut i = 0;
        while i < batch.len() {
            // A run of GET/SET on distinct keys may run concurrently: no
            // request in it can observe another's effect, so the replies are
            // those of running them one by one.
            let mut keys = std::collections::HashSet::new();
            let mut j = i;
            while j < batch.len() && is_simple(&batch[j]) && keys.insert(batch[j][1].clone()) {
                j += 1;
            }
            if j - i >= 2 {
                let mut set = tokio::task::JoinSet::new();
                for (k, args) in batch[i..j].iter().cloned().enumerate() {
                    let s = shared.clone();
                    set.spawn(async move { (k, execute(&s, args).await.0) });
                }
                let mut replies: Vec<Option<Reply>> = (i..j).map(|_| None).collect();
                while let Some(r) = set.join_next().await {
                    match r {
                        Ok((k, reply)) => replies[k] = Some(reply),
                        Err(e) => return Err(std::io::Error::other(e.to_string())),
                    }
                }
                for r in replies {
                    r.expect("every request answered").encode(&mut out);
                }
                i = j;
            } else {
                let (reply, quit) = execute(shared, batch[i].clone()).await;
                reply.encode(&mut out);
                if quit {
                    stream.write_all(&out).await?;
                    return Ok(());
                }
                i += 1;
            }
            if out.len() > 64 << 10 {
                stream.write_all(&out).await?;
                out.clear();
            }
        }
        if let Some(e) = error {
            Reply::err(e).encode(&mut out);
            stream.write_all(&out).await?;
            return Ok(());
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if batch.len() == MAX_PIPELINE {
            // More requests may be buffered already.
            continue;
        }
        if buf.len() > MAX_QUERY_BUFFER_BYTES {
            Reply::err("Protocol error: query buffer limit exceeded").encode(&mut out);
            stream.write_all(&out).await?;
            return Ok(());
        }
        buf.reserve(64 << 10);
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// `GET key` or `SET key value`.
fn is_simple(args: &[Bytes]) -> bool {
    (args.len() == 2 && args[0].eq_ignore_ascii_case(b"GET"))
        || (args.len() == 3 && args[0].eq_ignore_ascii_case(b"SET"))
}

fn peer_reply(p: &Peer) -> Reply {
    Reply::Array(vec![
        Reply::text(hex(p.id)),
        Reply::text(p.addr.to_string()),
    ])
}

fn wrong_args(cmd: &str) -> Reply {
    Reply::err(format!(
        "wrong number of arguments for '{}' command",
        cmd.to_lowercase()
    ))
}

fn client_err(e: data::ClientError) -> Reply {
    // The error text starts with its code (TRYAGAIN, ERR).
    Reply::Error(e.to_string())
}

async fn execute(shared: &Arc<Shared>, args: Vec<Bytes>) -> (Reply, bool) {
    let cmd = String::from_utf8_lossy(&args[0]).to_uppercase();
    let n = args.len();
    let reply = match cmd.as_str() {
        "PING" => match n {
            1 => Reply::Simple("PONG".into()),
            2 => Reply::Bulk(Some(args[1].clone())),
            _ => wrong_args(&cmd),
        },
        "ECHO" if n == 2 => Reply::Bulk(Some(args[1].clone())),
        "QUIT" => return (Reply::ok(), true),
        "GET" if n == 2 => match data::get(shared, &args[1]).await {
            Ok(v) => Reply::Bulk(v.map(Bytes::from)),
            Err(e) => client_err(e),
        },
        "SET" if n >= 3 => {
            if n > 3 {
                Reply::err("syntax error (SET options are not supported)")
            } else if too_big(shared, &args[1..]) {
                Reply::err("key and value too large for a node-to-node frame")
            } else {
                match data::write(shared, &args[1], Some(args[2].to_vec())).await {
                    Ok(_) => Reply::ok(),
                    Err(e) => client_err(e),
                }
            }
        }
        "DEL" if n >= 2 => {
            let names: Vec<Bytes> = args[1..].to_vec();
            fan_out(shared, names, |s, k| async move {
                data::write(&s, &k, None).await.map(|e| e as i64)
            })
            .await
            .map(|v| Reply::Int(v.into_iter().sum()))
            .unwrap_or_else(client_err)
        }
        "EXISTS" if n >= 2 => {
            let names: Vec<Bytes> = args[1..].to_vec();
            fan_out(shared, names, |s, k| async move {
                data::get(&s, &k).await.map(|v| v.is_some() as i64)
            })
            .await
            .map(|v| Reply::Int(v.into_iter().sum()))
            .unwrap_or_else(client_err)
        }
        "MGET" if n >= 2 => {
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
        "MSET" if n >= 3 && n % 2 == 1 && args[1..].chunks(2).any(|kv| too_big(shared, kv)) => {
            Reply::err("key and value too large for a node-to-node frame")
        }
        "MSET" if n >= 3 && n % 2 == 1 => {
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
            fan_out(shared, pairs, |s, (k, v)| async move {
                data::write(&s, &k, Some(v.to_vec())).await
            })
            .await
            .map(|_| Reply::ok())
            .unwrap_or_else(client_err)
        }
        "CHORD.LOOKUP" if n == 2 || n == 3 => {
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
        "CHORD.SUCCESSORS" | "CHORD.PREDECESSOR" | "CHORD.FINGERS" => {
            let mut all = false;
            let mut vi = 0usize;
            let mut i = 1;
            let mut bad = false;
            while i < n {
                let a = String::from_utf8_lossy(&args[i]).to_uppercase();
                if a == "ALL" && cmd == "CHORD.FINGERS" {
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
                Reply::err("syntax error")
            } else {
                ring_state(shared, &cmd, vi, all).await
            }
        }
        "CHORD.INFO" if n == 1 => chord_info(shared).await,
        "CHORD.KEYS" if n <= 2 => {
            let owned_only = match args.get(1) {
                None => Some(false),
                Some(a) if a.eq_ignore_ascii_case(b"OWNED") => Some(true),
                Some(_) => None,
            };
            match owned_only {
                None => Reply::err("syntax error"),
                Some(owned_only) => match local_keys(shared, owned_only).await {
                    Ok(names) => Reply::Array(names.into_iter().map(Reply::bulk).collect()),
                    Err(e) => Reply::err(e),
                },
            }
        }
        "CHORD.LEAVE" if n == 1 => match data::leave(shared).await {
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
        "DBSIZE" if n == 1 => match local_keys(shared, true).await {
            Ok(v) => Reply::Int(v.len() as i64),
            Err(e) => Reply::err(e),
        },
        "HELLO" => match args.get(1).map(|a| a.as_ref()) {
            None | Some(b"2") => resp::hello("chord", env!("CARGO_PKG_VERSION")),
            Some(_) => Reply::Error("NOPROTO this server speaks RESP2 only".into()),
        },
        "SELECT" if n == 2 => {
            if &args[1][..] == b"0" {
                Reply::ok()
            } else {
                Reply::err("DB index is out of range")
            }
        }
        "CLIENT" | "READONLY" | "READWRITE" => Reply::ok(),
        "COMMAND" => {
            let sub = args
                .get(1)
                .map(|a| String::from_utf8_lossy(a).to_uppercase());
            match sub.as_deref() {
                Some("COUNT") => Reply::Int(COMMANDS.len() as i64),
                Some("DOCS") | Some("INFO") | None => Reply::Array(vec![]),
                Some(_) => Reply::Array(vec![]),
            }
        }
        "CONFIG" if n >= 3 && args[1].eq_ignore_ascii_case(b"GET") => resp::config_get(
            &[("save", ""), ("appendonly", "no"), ("databases", "1")],
            &args[2..],
        ),
        "INFO" => redis_info(shared).await,
        _ if COMMANDS.contains(&cmd.as_str()) => wrong_args(&cmd),
        _ => Reply::err(format!(
            "unknown command '{}'",
            String::from_utf8_lossy(&args[0])
                .chars()
                .take(64)
                .collect::<String>()
        )),
    };
    (reply, false)
}

/// Whether a key and value could not travel in one peer frame (with room
/// for the envelope).
fn too_big(shared: &Shared, kv: &[Bytes]) -> bool {
    kv.iter().map(|b| b.len()).sum::<usize>() + 4096 > shared.cfg.max_frame_bytes
}

const COMMANDS: &[&str] = &[
    "GET",
    "SET",
    "DEL",
    "EXISTS",
    "MGET",
    "MSET",
    "PING",
    "ECHO",
    "QUIT",
    "HELLO",
    "INFO",
    "COMMAND",
    "CONFIG",
    "SELECT",
    "CLIENT",
    "DBSIZE",
    "CHORD.LOOKUP",
    "CHORD.FINGERS",
    "CHORD.SUCCESSORS",
    "CHORD.PREDECESSOR",
    "CHORD.INFO",
    "CHORD.KEYS",
    "CHORD.LEAVE",
];

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
        "CHORD.SUCCESSORS" => Reply::Array(v.succs.iter().map(peer_reply).collect()),
        "CHORD.PREDECESSOR" => v.pred.as_ref().map(peer_reply).unwrap_or(Reply::Bulk(None)),
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
        "tcp_port:{}\r\nuptime_in_seconds:{}\r\n\r\n# Chord\r\n",
        shared.me().port(),
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
    Reply::text(text)
}
