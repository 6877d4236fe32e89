//! Keys on the ring: ownership, routing, replication, hand-off and repair.
//!
//! * **Ownership.** Virtual node `n` owns the keys in `(predecessor, n]`. It
//!   serves them only once it is *ready*: a node that created the ring is
//!   ready at once; a joining node becomes ready after its first complete
//!   anti-entropy round with its successor (which held the range until then),
//!   i.e. after it has pulled its range: the join hand-off.
//! * **Routing.** Any node serves any key: it looks up `successor(key)` with
//!   the core (iterative or recursive) and sends the request there. A node that
//!   does not own the key (views differ while the ring changes) answers
//!   `NotOwner`, one not yet ready `NotReady`; the request is retried with a
//!   fresh lookup and a growing back-off until `op_timeout_ms`.
//! * **Writes** are applied durably at the owner (version `max(old + 1,
//!   clock)`) and pushed to the replica set, the first `replicas - 1`
//!   successors on other processes, before the client is answered; a replica
//!   that does not answer is repaired later.
//! * **Anti-entropy** (every `sync_ms` and whenever the ring view changes):
//!   each owner compares a digest of its range with each replica; on a
//!   mismatch they exchange `(id, version)` lists, the owner pulls what is newer
//!   there and pushes what is newer here. This one mechanism is the join
//!   hand-off (the joiner pulls from its successor), the re-replication after
//!   failures (a successor that inherits a range pushes it to its new replica
//!   set), and the repair of missed writes. Once all replicas are confirmed, the
//!   nodes after the replica set that still hold copies of the range (left over
//!   from a join) are told to drop them, so a key ends with exactly `replicas`
//!   copies.
//! * **Leave** (`CHORD.LEAVE`): the node stops serving, pushes its ranges to
//!   its successor, then tells its neighbours (the core's `Leaving`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chord_core::Id;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::node::{CoreEvent, Ownership, Peer, RingView, Shared, is_ready, now_us, set_ready};
use crate::store::{Op, Outcome, StoreError};
use crate::wire::{MAX_RECORDS_PER_FRAME, Record, Request, Response, digest};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The ring did not settle on an owner in time.
    #[error("TRYAGAIN no owner answered for the key within {0} ms (ring changing?)")]
    Timeout(u64),
    /// Storage failed.
    #[error("ERR storage: {0}")]
    Store(#[from] StoreError),
    /// The owner reported an error.
    #[error("ERR remote: {0}")]
    Remote(String),
}

/// The processes holding copies of `vnode`'s range besides this one: its
/// first successors on other processes, `replicas - 1` of them.
pub fn replica_targets(shared: &Shared, view: &RingView, vnode: Id) -> Vec<Peer> {
    let Some(v) = view.vnode(vnode) else {
        return Vec::new();
    };
    let me = shared.me();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for s in &v.succs {
        if out.len() + 1 >= shared.cfg.replicas {
            break;
        }
        if s.addr != me && seen.insert(s.addr) {
            out.push(s.clone());
        }
    }
    out
}

fn ownership(shared: &Shared, key: Id) -> Ownership {
    if shared.leaving.load(Ordering::Relaxed) {
        return Ownership::NotMine;
    }
    shared.view().ownership(key)
}

/// Serves a storage request, from a peer or from this node's own router.
pub async fn handle_request(shared: &Arc<Shared>, req: Request) -> Response {
    match handle(shared, req).await {
        Ok(r) => r,
        Err(e) => Response::Error(e.to_string()),
    }
}

async fn handle(shared: &Arc<Shared>, req: Request) -> Result<Response, StoreError> {
    Ok(match req {
        Request::Get { key } => match ownership(shared, key) {
            Ownership::Owned(v) if is_ready(shared, v) => {
                match shared.store.run(Op::Get(key)).await? {
                    Outcome::Record(r) => Response::Value(r),
                    _ => unreachable!("Get answers Record"),
                }
            }
            Ownership::Owned(_) | Ownership::Unsure => Response::NotReady,
            Ownership::NotMine => Response::NotOwner,
        },
        Request::Write { key, ref name, .. } if !records_valid_name(shared, key, name) => {
            Response::Error("key id is not SHA-1 of its key".into())
        }
        Request::Write { key, name, value } => match ownership(shared, key) {
            Ownership::Owned(v) if is_ready(shared, v) => {
                let out = shared
                    .store
                    .run(Op::Write {
                        key,
                        name,
                        value,
                        now_us: now_us(),
                    })
                    .await?;
                let Outcome::Written { record, existed } = out else {
                    unreachable!("Write answers Written")
                };
                if let Some(rec) = record {
                    replicate(shared, v, vec![(key, rec)]).await;
                }
                Response::Written { existed }
            }
            Ownership::Owned(_) | Ownership::Unsure => Response::NotReady,
            Ownership::NotMine => Response::NotOwner,
        },
        Request::Replicate { records } => {
            if !records_valid(shared, &records) {
                return Ok(Response::Error("record id is not SHA-1 of its key".into()));
            }
            let n = records.len() as u64;
            shared.store.run(Op::Apply(records)).await?;
            shared
                .counters
                .records_received
                .fetch_add(n, Ordering::Relaxed);
            Response::Ack
        }
        Request::SyncDigest {
            lo,
            hi,
            count,
            hash,
        } => {
            let Outcome::Versions(v) = shared.store.run(Op::Versions { lo, hi }).await? else {
                unreachable!("Versions answers Versions")
            };
            if digest(&v) == (count, hash) {
                Response::InSync
            } else {
                Response::Versions(v)
            }
        }
        Request::Fetch { mut ids } => {
            ids.truncate(MAX_RECORDS_PER_FRAME);
            let Outcome::Records(r) = shared.store.run(Op::Fetch(ids)).await? else {
                unreachable!("Fetch answers Records")
            };
            // What does not fit in one frame is asked for again next round.
            let mut r = split_by_size(r, shared.cfg.max_frame_bytes / 2);
            Response::Records(if r.is_empty() {
                Vec::new()
            } else {
                r.swap_remove(0)
            })
        }
        Request::Drop { lo, hi } => {
            // Never drop while unsure of our own ranges.
            let Some(keep) = shared.view().owned_ranges() else {
                return Ok(Response::Ack);
            };
            if let Outcome::Dropped(n) = shared.store.run(Op::DropRange { lo, hi, keep }).await?
                && n > 0
            {
                debug!(n, "dropped copies outside the replica set");
                shared
                    .counters
                    .records_dropped
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            Response::Ack
        }
        Request::Whoami => {
            let view = shared.view();
            Response::Ids(
                view.vnodes
                    .iter()
                    .filter(|v| v.joined)
                    .map(|v| v.id)
                    .collect(),
            )
        }
    })
}

/// Pushes records to `vnode`'s replica set and waits (bounded) for the acks.
async fn replicate(shared: &Arc<Shared>, vnode: Id, records: Vec<(Id, Record)>) {
    let targets = replica_targets(shared, &shared.view(), vnode);
    let mut set = JoinSet::new();
    for t in targets {
        let peers = shared.peers.clone();
        let records = records.clone();
        set.spawn(async move {
            (
                t.addr,
                peers.call(t.addr, Request::Replicate { records }).await,
            )
        });
    }
    while let Some(r) = set.join_next().await {
        if let Ok((addr, Err(e))) = r {
            debug!(%addr, "replication failed (repair will retry): {e}");
        }
    }
}

/// Sends `req` (a `Get` or `Write` for `key`) to the key's owner, wherever it
/// is, retrying while the ring changes.
pub async fn route(shared: &Arc<Shared>, key: Id, req: Request) -> Result<Response, ClientError> {
    let deadline = Instant::now() + Duration::from_millis(shared.cfg.op_timeout_ms);
    let mut backoff = Duration::from_millis(10);
    loop {
        let resp = match ownership(shared, key) {
            Ownership::Owned(_) => Some(handle_request(shared, req.clone()).await),
            _ => match shared.lookup(key, shared.cfg.lookup_mode).await {
                Ok(o) if o.owner.addr == shared.me() => {
                    Some(handle_request(shared, req.clone()).await)
                }
                Ok(o) => {
                    shared.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                    shared.peers.call(o.owner.addr, req.clone()).await.ok()
                }
                Err(_) => None,
            },
        };
        match resp {
            Some(Response::NotOwner) | Some(Response::NotReady) | None => {}
            Some(Response::Error(e)) => return Err(ClientError::Remote(e)),
            Some(r) => return Ok(r),
        }
        if Instant::now() + backoff > deadline {
            return Err(ClientError::Timeout(shared.cfg.op_timeout_ms));
        }
        shared.counters.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(250));
    }
}

/// The value of `name`, from its owner.
pub async fn get(shared: &Arc<Shared>, name: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
    let key = shared.space.hash(name);
    match route(shared, key, Request::Get { key }).await? {
        Response::Value(r) => Ok(r.and_then(|r| r.value)),
        other => Err(ClientError::Remote(format!("unexpected answer {other:?}"))),
    }
}

/// Sets (`Some`) or deletes (`None`) `name` at its owner; whether it existed.
pub async fn write(
    shared: &Arc<Shared>,
    name: &[u8],
    value: Option<Vec<u8>>,
) -> Result<bool, ClientError> {
    let key = shared.space.hash(name);
    let req = Request::Write {
        key,
        name: name.to_vec(),
        value,
    };
    match route(shared, key, req).await? {
        Response::Written { existed } => Ok(existed),
        other => Err(ClientError::Remote(format!("unexpected answer {other:?}"))),
    }
}

// ----- anti-entropy ----------------------------------------------------------

/// Runs anti-entropy rounds every `sync_ms` and after ring changes until shutdown.
pub async fn sync_loop(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    let period = Duration::from_millis(shared.cfg.sync_ms.max(10));
    let mut gc_done: BTreeMap<Id, (Id, Vec<SocketAddr>)> = BTreeMap::new();
    let mut round = 0u64;
    loop {
        let changed = shared.ring_changed.notified();
        round += 1;
        let view = shared.view();
        for v in view.vnodes.iter().filter(|v| v.joined) {
            if shared.leaving.load(Ordering::Relaxed) {
                return;
            }
            let Some(pred) = v.pred.as_ref() else {
                if v.succs.is_empty() {
                    set_ready(&shared, v.id);
                }
                continue;
            };
            let mut targets = replica_targets(&shared, &view, v.id);
            let ready = is_ready(&shared, v.id);
            if !ready {
                // The hand-off: the first successor on another process held
                // our range until we joined; pull from it even when it is not
                // a replica (replicas = 1). A copy left there is collected later.
                let me = shared.me();
                if let Some(s) = v.succs.iter().find(|s| s.addr != me)
                    && !targets.iter().any(|t| t.addr == s.addr)
                {
                    targets.insert(0, s.clone());
                }
            }
            match sync_range(&shared, pred.id, v.id, &targets).await {
                Ok(true) => {
                    if !ready {
                        info!(vnode = %crate::store::hex(v.id), "range taken over; serving");
                        set_ready(&shared, v.id);
                    }
                    shared.counters.sync_rounds.fetch_add(1, Ordering::Relaxed);
                    let targets = replica_targets(&shared, &view, v.id);
                    let key = (pred.id, targets.iter().map(|t| t.addr).collect::<Vec<_>>());
                    if gc_done.get(&v.id) != Some(&key) || round.is_multiple_of(10) {
                        collect_garbage(&shared, v, pred.id, &targets).await;
                        gc_done.insert(v.id, key);
                    }
                }
                Ok(false) => {}
                Err(e) => warn!("anti-entropy failed: {e}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = changed => {
                // Let a burst of changes settle.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// One owner-side anti-entropy pass over `(lo, hi]` with every target. True if
/// every target confirmed and nothing had to be pulled (so the replica set is
/// complete and identical).
async fn sync_range(
    shared: &Arc<Shared>,
    lo: Id,
    hi: Id,
    targets: &[Peer],
) -> Result<bool, StoreError> {
    for _attempt in 0..3 {
        let Outcome::Versions(local) = shared.store.run(Op::Versions { lo, hi }).await? else {
            unreachable!()
        };
        let (count, hash) = digest(&local);
        let local: BTreeMap<Id, u64> = local.into_iter().collect();
        let mut all_ok = true;
        let mut pulled = false;
        for t in targets {
            let resp = shared
                .peers
                .call(
                    t.addr,
                    Request::SyncDigest {
                        lo,
                        hi,
                        count,
                        hash,
                    },
                )
                .await;
            let remote = match resp {
                Ok(Response::InSync) => continue,
                Ok(Response::Versions(v)) => v,
                _ => {
                    all_ok = false;
                    continue;
                }
            };
            let remote: BTreeMap<Id, u64> = remote.into_iter().collect();
            let pull: Vec<Id> = remote
                .iter()
                .filter(|(k, v)| local.get(k).is_none_or(|l| l < v))
                .map(|(k, _)| *k)
                .collect();
            let push: Vec<Id> = local
                .iter()
                .filter(|(k, v)| remote.get(k).is_none_or(|r| r < v))
                .map(|(k, _)| *k)
                .collect();
            for chunk in pull.chunks(MAX_RECORDS_PER_FRAME) {
                match shared
                    .peers
                    .call(
                        t.addr,
                        Request::Fetch {
                            ids: chunk.to_vec(),
                        },
                    )
                    .await
                {
                    Ok(Response::Records(recs)) if records_valid(shared, &recs) => {
                        let n = recs.len() as u64;
                        shared.store.run(Op::Apply(recs)).await?;
                        shared
                            .counters
                            .records_received
                            .fetch_add(n, Ordering::Relaxed);
                        pulled = true;
                    }
                    _ => all_ok = false,
                }
            }
            for chunk in push.chunks(MAX_RECORDS_PER_FRAME) {
                let Outcome::Records(records) = shared.store.run(Op::Fetch(chunk.to_vec())).await?
                else {
                    unreachable!()
                };
                for records in split_by_size(records, shared.cfg.max_frame_bytes / 2) {
                    let n = records.len() as u64;
                    match shared
                        .peers
                        .call(t.addr, Request::Replicate { records })
                        .await
                    {
                        Ok(Response::Ack) => {
                            shared.counters.records_sent.fetch_add(n, Ordering::Relaxed);
                        }
                        _ => all_ok = false,
                    }
                }
            }
        }
        if !all_ok {
            return Ok(false);
        }
        if !pulled {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Tells the processes after the replica set to drop their copies of `(lo, hi]`.
async fn collect_garbage(
    shared: &Arc<Shared>,
    v: &crate::node::VnodeView,
    lo: Id,
    targets: &[Peer],
) {
    let me = shared.me();
    let mut skip: BTreeSet<SocketAddr> = targets.iter().map(|t| t.addr).collect();
    skip.insert(me);
    for s in &v.succs {
        if skip.insert(s.addr) {
            let _ = shared
                .peers
                .call(s.addr, Request::Drop { lo, hi: v.id })
                .await;
        }
    }
}

/// Voluntary leave: stop serving, hand every owned range to the successor,
/// then leave the ring. Returns how many records were handed off.
pub async fn leave(shared: &Arc<Shared>) -> Result<usize, ClientError> {
    shared.leaving.store(true, Ordering::Relaxed);
    let view = shared.view();
    let me = shared.me();
    let mut sent = 0;
    for v in view.vnodes.iter().filter(|v| v.joined) {
        let Some(succ) = v.succs.iter().find(|s| s.addr != me) else {
            continue;
        };
        let lo = v.pred.as_ref().map_or(v.id, |p| p.id);
        let Outcome::Versions(ids) = shared.store.run(Op::Versions { lo, hi: v.id }).await? else {
            unreachable!()
        };
        let ids: Vec<Id> = ids.into_iter().map(|(k, _)| k).collect();
        for chunk in ids.chunks(MAX_RECORDS_PER_FRAME) {
            let Outcome::Records(records) = shared.store.run(Op::Fetch(chunk.to_vec())).await?
            else {
                unreachable!()
            };
            for records in split_by_size(records, shared.cfg.max_frame_bytes / 2) {
                let n = records.len();
                match shared
                    .peers
                    .call(succ.addr, Request::Replicate { records })
                    .await
                {
                    Ok(Response::Ack) => sent += n,
                    other => {
                        shared.leaving.store(false, Ordering::Relaxed);
                        return Err(ClientError::Remote(format!(
                            "hand-off to {} failed: {other:?}",
                            succ.addr
                        )));
                    }
                }
            }
        }
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    let _ = shared.core.send(CoreEvent::Leave { reply: tx });
    let _ = rx.await;
    info!(records = sent, "left the ring");
    Ok(sent)
}

/// Whether every record sits under the id of its own key, so a peer's bytes
/// can never put a record where reads and ownership would not find it.
fn records_valid(shared: &Shared, records: &[(Id, Record)]) -> bool {
    records
        .iter()
        .all(|(id, r)| records_valid_name(shared, *id, &r.name))
}

fn records_valid_name(shared: &Shared, id: Id, name: &[u8]) -> bool {
    shared.space.hash(name) == id
}

/// Splits records into groups of at most `max_bytes` of names and values
/// (a record larger than that travels alone).
fn split_by_size(records: Vec<(Id, Record)>, max_bytes: usize) -> Vec<Vec<(Id, Record)>> {
    let mut out: Vec<Vec<(Id, Record)>> = Vec::new();
    let mut size = 0;
    for r in records {
        let n = 48 + r.1.name.len() + r.1.value.as_ref().map_or(0, |v| v.len());
        if out.is_empty() || (size + n > max_bytes && !out.last().expect("non-empty").is_empty()) {
            out.push(Vec::new());
            size = 0;
        }
        size += n;
        out.last_mut().expect("non-empty").push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_split_by_size_in_order() {
        let rec = |i: u64, n: usize| {
            (
                Id::from_u64(i),
                Record {
                    name: vec![b'k'],
                    value: Some(vec![0; n]),
                    version: 1,
                },
            )
        };
        let groups = split_by_size(
            vec![rec(1, 100), rec(2, 100), rec(3, 1000), rec(4, 10)],
            300,
        );
        let ids: Vec<Vec<u64>> = groups
            .iter()
            .map(|g| g.iter().map(|(k, _)| k.to_u64().unwrap()).collect())
            .collect();
        assert_eq!(ids, vec![vec![1, 2], vec![3], vec![4]]);
        assert!(split_by_size(Vec::new(), 10).is_empty());
    }
}
