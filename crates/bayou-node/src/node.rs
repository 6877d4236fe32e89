//! One replica in a process: the task that owns the [`Replica`], the storage
//! thread that makes its changes durable, and the shared handle ([`Node`])
//! that connections and anti-entropy sessions use.
//!
//! # Threads and the durability barrier
//!
//! * The [`Replica`] sits behind a mutex, held only for pure, in-memory
//!   work: connection tasks and anti-entropy sessions lock it, run their
//!   commands, drain what the replica queued for persistence into a numbered
//!   batch for the storage thread, and take that number as their *barrier*.
//!   No I/O happens under the lock, and no `.await`.
//! * The **storage thread** (the kit's group-commit thread,
//!   [`server_kit::commit`], the same as Chord's) writes batches to the
//!   [`Storage`]; when several are waiting it merges them into one
//!   transaction (group commit: while one fsync runs, the batches of every
//!   other client pile up for the next), then advances the kit's
//!   [`DurableMark`] to the number of the last durable batch, which wakes
//!   the tasks waiting for it (each once).
//! * Whoever holds a barrier waits until that number reaches it before
//!   letting anything out of the process: a reply to a client, items to a
//!   peer. That is the persistence contract of `bayou_core::replica`: nothing
//!   leaves a server before the state it reflects is durable.
//!
//! A storage error is fatal (the kit's storage-failure policy): the process
//! logs it, naming the store's path, and exits with status 70 without
//! acknowledging anything the failed write covered; a restart recovers from
//! what is durable.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bayou_core::bundle::{self, ImportError};
use bayou_core::member::is_reserved;
use bayou_core::{
    Chunk, ChunkLimits, Op, ProtocolError, ReceiveReport, Replica, Retention, Role, ServerId,
    SessionSender, Summary, View, WriteAuthority, WriteId, format_entry_with_outcome,
};
use bayou_store::{Batch, RedbStore, Storage, StoreError};
use bytes::Bytes;
use server_kit::commit::{Committer, DurableMark};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::member::{Creation, Standing};

use server_kit::Reply;

pub mod metrics;

/// How a replica reads its physical clock for accept-stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockMode {
    /// Milliseconds since the Unix epoch, as Bayou servers do ([T95 §5]).
    WallMillis,
    /// No physical clock (reading 0): stamps are the logical clock alone,
    /// 1, 2, 3, … — easier to read in `BAYOU.LOG`.
    Logical,
}

/// A clock reading for accept-stamps in `mode`.
fn clock_reading(mode: ClockMode) -> u64 {
    match mode {
        ClockMode::WallMillis => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        ClockMode::Logical => 0,
    }
}

/// A client command that reads or writes the replica.
#[derive(Debug, Clone)]
pub(crate) enum Query {
    Get(Bytes, View),
    Set(Bytes, Bytes),
    Del(Vec<Bytes>),
    Exists(Vec<Bytes>),
    MGet(Vec<Bytes>),
    MSet(Vec<(Bytes, Bytes)>),
    /// `SET key value [NX|XX] [GET]`, `GETSET`: `present` is `Some(false)`
    /// for NX, `Some(true)` for XX.
    SetWith {
        key: Bytes,
        value: Bytes,
        present: Option<bool>,
        get: bool,
    },
    /// `SETNX`.
    SetNx(Bytes, Bytes),
    /// `GETDEL`.
    GetDel(Bytes),
    /// `TYPE`.
    Type(Bytes),
    /// `STRLEN`.
    Strlen(Bytes),
    /// `INCR`, `INCRBY`, `DECR`, `DECRBY`.
    Incr(Bytes, i64),
    /// `APPEND`.
    Append(Bytes, Bytes),
    /// `KEYS pattern`.
    Keys(Bytes),
    /// `SCAN cursor [MATCH p] [COUNT n] [TYPE t]`.
    KeyScan {
        cursor: u64,
        pattern: Option<Bytes>,
        count: usize,
        strings: bool,
    },
    /// `FLUSHDB`, `FLUSHALL`.
    FlushAll,
    /// `BAYOU.WRITE`: any operation, replied to with the write's id.
    Write(Op),
    /// `BAYOU.SCAN prefix view`.
    Scan(Bytes, View),
    DbSize,
    /// `BAYOU.TRUNCATE [KEEP n]`.
    Truncate(Option<u64>),
    /// `BAYOU.SUMMARY`: this replica's summary, encoded for `BAYOU.EXPORT`.
    Summary,
    /// `BAYOU.EXPORT [summary] [MAXBYTES n]`: bundle files.
    Export(Summary, usize),
    /// `BAYOU.IMPORT file`.
    Import(Bytes),
    /// `BAYOU.JOIN id addr`: sponsor a new server.
    Join(ServerId, String),
    /// `BAYOU.HANDOFF id`.
    Handoff(ServerId),
    /// `BAYOU.ADDRESS addr`: this server's peers reach it at `addr` now.
    Address(String),
    /// `BAYOU.RETIRE [id]`: a primary hands off to `id` (or to the first
    /// live member) first.
    Retire(Option<ServerId>),
    /// `BAYOU.MEMBERS`.
    Members,
    Log,
    Vv,
    Status,
    /// `INFO [section …]`.
    Info(Vec<Bytes>),
}

impl Query {
    /// Whether this is a write a client submits here: accepted only while
    /// this server may write ([`Standing::refusal`]).
    fn is_client_write(&self) -> bool {
        matches!(
            self,
            Query::Set(..)
                | Query::Del(_)
                | Query::MSet(_)
                | Query::SetWith { .. }
                | Query::SetNx(..)
                | Query::GetDel(_)
                | Query::Incr(..)
                | Query::Append(..)
                | Query::FlushAll
                | Query::Write(_)
                | Query::Join(..)
        )
    }

    /// A key of the membership table this write names, if any: refused at
    /// accept, since it could only fail where it executes.
    fn reserved_key(&self) -> Option<&[u8]> {
        fn reserved(k: &Bytes) -> Option<&[u8]> {
            is_reserved(k).then_some(k.as_ref())
        }
        match self {
            Query::Set(k, _)
            | Query::SetWith { key: k, .. }
            | Query::SetNx(k, _)
            | Query::GetDel(k)
            | Query::Incr(k, _)
            | Query::Append(k, _) => reserved(k),
            Query::Del(keys) => keys.iter().find_map(reserved),
            Query::MSet(pairs) => pairs.iter().find_map(|(k, _)| reserved(k)),
            Query::Write(op) => match op {
                Op::Put { key, .. }
                | Op::Delete { key }
                | Op::Incr { key, .. }
                | Op::Append { key, .. }
                | Op::SetIfAbsent { key, .. }
                | Op::SetIfPresent { key, .. } => reserved(key),
                Op::Bayou(w) => w.update.iter().find_map(|m| match m {
                    bayou_core::script::Mutation::Put(k, _)
                    | bayou_core::script::Mutation::Del(k) => {
                        is_reserved(k.as_bytes()).then_some(k.as_bytes())
                    }
                }),
                Op::DeleteAll | Op::Member(_) => None,
            },
            _ => None,
        }
    }
}

/// Counters shown by `BAYOU.STATUS` and `INFO`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Peer protocol bytes written (frames and magic).
    pub peer_bytes_sent: AtomicU64,
    /// Peer protocol bytes read.
    pub peer_bytes_received: AtomicU64,
    /// Anti-entropy items sent.
    pub items_sent: AtomicU64,
    /// Anti-entropy items received.
    pub items_received: AtomicU64,
    /// Sessions that completed.
    pub sessions_ok: AtomicU64,
    /// Sessions that failed (peer down, refused, protocol error).
    pub sessions_failed: AtomicU64,
    /// Durable batches (transactions) written.
    pub batches: AtomicU64,
    /// Client commands served.
    pub commands: AtomicU64,
    /// Writes refused because their signature did not verify
    /// (`bayou_core::auth`), from peers and from bundles.
    pub forged_writes_refused: AtomicU64,
}

/// Static configuration of one replica.
#[derive(Debug, Clone)]
pub struct Config {
    /// This replica's id.
    pub id: ServerId,
    /// The address to listen on, for clients and peers.
    pub listen: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The other replicas: id -> address.
    pub peers: BTreeMap<ServerId, String>,
    /// The founder's id (`--primary`): the primary until a handoff
    /// commits; `None` for a server that joined and was not told.
    pub primary: Option<ServerId>,
    /// A creation write just obtained by `--join`, to be recorded in the
    /// data directory ([`crate::member`]); `None` otherwise.
    pub joined: Option<Creation>,
    /// Period of anti-entropy with a random peer, in milliseconds (0: never).
    pub sync_interval_ms: u64,
    /// The physical clock.
    pub clock: ClockMode,
    /// Largest peer frame, in bytes.
    pub max_frame_bytes: usize,
    /// Most items in one anti-entropy frame.
    pub items_per_frame: usize,
    /// Time limit of one anti-entropy session, in milliseconds.
    pub session_timeout_ms: u64,
    /// Time limit to connect to a peer, in milliseconds.
    pub connect_timeout_ms: u64,
    /// How much committed history the log keeps.
    pub retention: Retention,
    /// Client connection limits (`--max-clients`, timeouts, output limit).
    pub client_limits: server_kit::ClientLimits,
    /// The cluster secret peers must prove they hold
    /// (`--cluster-secret-file`); `None`: peers are not authenticated.
    pub cluster_secret: Option<server_kit::peer_auth::ClusterSecret>,
    /// The users clients authenticate as (`--acl-file`); `None`: clients
    /// are not authenticated.
    pub acl: Option<Arc<server_kit::acl::Acl>>,
    /// TLS for clients and peers (`--tls-cert` …); `None` for plain TCP.
    pub tls: Option<server_kit::tls::Tls>,
    /// Signs accepted writes, verifies received ones and checks authors'
    /// permissions (`--signing-key`, `--keyring`; `bayou_core::auth`).
    /// `None`: an open cluster.
    pub authority: Option<Arc<dyn WriteAuthority>>,
}

impl Config {
    /// A configuration with the defaults for everything but the essentials.
    pub fn new(
        id: ServerId,
        listen: String,
        data_dir: PathBuf,
        primary: Option<ServerId>,
    ) -> Config {
        Config {
            id,
            listen,
            data_dir,
            peers: BTreeMap::new(),
            primary,
            joined: None,
            sync_interval_ms: 500,
            clock: ClockMode::WallMillis,
            max_frame_bytes: crate::wire::DEFAULT_MAX_FRAME_BYTES,
            items_per_frame: 1024,
            session_timeout_ms: 60_000,
            connect_timeout_ms: 1_000,
            retention: Retention::default(),
            client_limits: server_kit::ClientLimits::DEFAULT,
            cluster_secret: None,
            acl: None,
            tls: None,
            authority: None,
        }
    }

    /// The role this configuration gives the replica at start; once a
    /// handoff commits, the committed membership decides
    /// ([`Replica::role`]).
    pub fn role(&self) -> Role {
        if self.primary.as_ref() == Some(&self.id) {
            Role::Primary { autocommit: true }
        } else {
            Role::Secondary
        }
    }
}

/// The shared handle of a running replica.
#[derive(Debug)]
pub struct Node {
    /// The configuration.
    pub config: Config,
    core: Mutex<Core>,
    durable: Arc<DurableMark>,
    offline: AtomicBool,
    /// Counters.
    pub counters: Counters,
    /// Metrics and the last sessions, for `--http`.
    pub metrics: metrics::Metrics,
    /// Admits clients up to `--max-clients` and counts them.
    pub clients: Arc<server_kit::ClientGate>,
    /// Logs refused peers (rate-limited).
    pub(crate) refused_peers: server_kit::peer_auth::RefusalLog,
    /// The creation this server joined with (its data directory's
    /// [`crate::member::CREATION_FILE`]); `None` for a founder or a static
    /// server.
    pub creation: Option<Creation>,
    /// Why this server leaves, once it must: `Ok` once its retirement is
    /// held elsewhere, `Err` once it learns its name belongs to another
    /// server. `bayou serve` stops on it.
    leave: watch::Sender<Option<Result<String, String>>>,
    /// The standing last logged, to log each change once.
    standing: Mutex<Option<Standing>>,
}

/// Why a node is gone.
#[derive(Debug, thiserror::Error)]
#[error("replica {0} is shutting down")]
pub struct Gone(pub ServerId);

impl Node {
    /// Opens the data directory, recovers the replica and starts its storage
    /// thread.
    pub fn start(config: Config) -> Result<(Arc<Node>, std::thread::JoinHandle<()>), StoreError> {
        let started = std::time::Instant::now();
        let mut store = RedbStore::open(&config.data_dir, &config.id)?;
        let role = config.role();
        let mut replica = bayou_store::recover_with_authority(
            &mut store,
            role,
            config.retention,
            config.authority.clone(),
        )?;
        // The founder records itself as the first member, once, on an
        // empty log ([P97 §4.3]).
        if replica.is_primary()
            && replica.csn() == 0
            && replica.tentative_len() == 0
            && replica.member(&config.id, View::Full).is_none()
        {
            match replica.found(clock_reading(config.clock), &config.listen) {
                Ok(w) => info!(id = %config.id, created = %w, "founded the cluster"),
                Err(e) => warn!(id = %config.id, "cannot found the cluster: {e}"),
            }
        }
        // Persist what recovery itself produced before anything else.
        if let Some(batch) = bayou_store::take_batch(&mut replica) {
            store.append(&batch)?;
        }
        info!(
            id = %config.id,
            dir = %config.data_dir.display(),
            log_records = store.retained_records(),
            csn = replica.csn(),
            osn = replica.osn(),
            tentative = replica.tentative_len(),
            keys = replica.db(View::Full).len(),
            ms = started.elapsed().as_millis() as u64,
            "recovered"
        );
        // The creation of a joined server: recorded now that the store owns
        // the directory, before anything is served.
        let creation = match Creation::load(&config.data_dir) {
            Ok(Some(c)) => Some(c),
            Ok(None) => match &config.joined {
                Some(c) => {
                    let path = c.store(&config.data_dir).map_err(|source| StoreError::Io {
                        path: config.data_dir.join(crate::member::CREATION_FILE),
                        source,
                    })?;
                    info!(id = %config.id, created = %c.created, file = %path.display(), "joined: creation recorded");
                    Some(c.clone())
                }
                None => None,
            },
            Err(e) => {
                return Err(StoreError::Corrupt {
                    path: config.data_dir.join(crate::member::CREATION_FILE),
                    reason: format!("{e:#}"),
                });
            }
        };
        // The replica compares it with the committed table: a server whose
        // name went to another creation is never the primary.
        if let Some(c) = &creation {
            replica.set_creation(c.created.clone());
        }
        // A member restarted on another address tells its peers by a write
        // ([P97 §4.3]: addresses travel in the log).
        let own_record = replica
            .member(&config.id, View::Full)
            .filter(|m| match &creation {
                Some(c) => m.created == c.created,
                // The founder created itself.
                None => m.created.server == config.id,
            });
        if let Some(m) = own_record
            && m.is_live()
            && m.addr != config.listen
        {
            match replica.set_address(clock_reading(config.clock), &config.listen) {
                Ok(w) => {
                    info!(id = %config.id, old = %m.addr, new = %config.listen, write = %w, "address changed")
                }
                Err(e) => warn!(id = %config.id, "cannot record the new address: {e}"),
            }
            if let Some(batch) = bayou_store::take_batch(&mut replica) {
                store.append(&batch)?;
            }
        }
        let (durable, advancer) = DurableMark::new();
        let clock = config.clock;
        let config_peers: Vec<ServerId> = config.peers.keys().cloned().collect();
        let clients = server_kit::ClientGate::new(config.client_limits);
        let node = Arc::new(Node {
            config,
            core: Mutex::new(Core {
                replica,
                issued: 0,
                batches: None,
                clock,
                accepted: 0,
                author: None,
                authors: BTreeSet::new(),
                standing: None,
            }),
            durable,
            offline: AtomicBool::new(false),
            counters: Counters::default(),
            metrics: metrics::Metrics::new(config_peers.iter()),
            clients,
            refused_peers: Default::default(),
            creation,
            leave: watch::channel(None).0,
            standing: Mutex::new(None),
        });
        // The kit's group-commit thread: queued batches merged into one
        // transaction; a failed write stops the process (exit status 70).
        let storage_node = node.clone();
        let fsync_node = node.clone();
        let (committer, storage) = server_kit::commit::spawn(
            format!("bayou-store-{}", node.config.id),
            store.path().to_path_buf(),
            |batch: &mut Batch, next| batch.merge(next),
            move |batch: &Batch| {
                let started = std::time::Instant::now();
                let result = store.append(batch);
                fsync_node.metrics.observe_fsync(started.elapsed());
                result
            },
            move |seq| {
                storage_node
                    .counters
                    .batches
                    .fetch_add(1, Ordering::Relaxed);
                advancer.advance(seq);
            },
        );
        node.core.lock().expect("replica lock").batches = Some(committer);
        Ok((node, storage))
    }

    /// The anti-entropy partners, id -> address: the static `--peer` list,
    /// the sponsor of a joined server, and every live member of the
    /// committed membership table, minus this server and every server whose
    /// retirement is held here ([`crate::member`]).
    pub fn peers(&self) -> BTreeMap<ServerId, String> {
        self.core.lock().expect("replica lock").peers_of(self)
    }

    /// The address of peer `id`, if it is one ([`Node::peers`]).
    pub fn peer_addr(&self, id: &ServerId) -> Option<String> {
        if id == &self.config.id {
            return None;
        }
        self.peers().remove(id)
    }

    /// The primary as the committed membership names it (the founder,
    /// `--primary`, until a handoff commits).
    pub fn primary(&self) -> Option<ServerId> {
        let core = self.core.lock().expect("replica lock");
        crate::member::effective_primary(&core.replica, self.config.primary.as_ref())
    }

    /// Where this server stands in the membership.
    pub fn standing(&self) -> Standing {
        let core = self.core.lock().expect("replica lock");
        Standing::of(&core.replica, self.creation.as_ref())
    }

    /// Logs a change of standing, and leaves (with an error) once the
    /// name turns out to belong to another server.
    pub fn check_standing(&self) {
        let now = self.standing();
        let mut last = self.standing.lock().expect("standing lock");
        if last.as_ref() == Some(&now) {
            return;
        }
        let id = &self.config.id;
        match &now {
            Standing::Member if last.is_some() => {
                info!(%id, "creation committed: a member now, accepting writes")
            }
            Standing::Joining(w) => {
                info!(%id, creation = %w, "not yet a member: waiting for the creation to commit")
            }
            Standing::Lost { mine, winner } => {
                let mine = match mine {
                    Some(w) => format!("this server was created by {w}"),
                    None => "this server was started without a creation".into(),
                };
                let why = format!(
                    "server id {id} belongs to another server: creation {winner} committed, {mine}; \
                     it accepts no write and stops"
                );
                error!(%id, "{why}");
                self.leave.send_replace(Some(Err(why)));
            }
            Standing::Retired => {
                info!(%id, "retired: waiting until another server holds the retirement")
            }
            _ => {}
        }
        *last = Some(now);
    }

    /// Why a peer claiming to be `from`, created by `created` (`None`: a
    /// founder or a static server), is not who the committed membership
    /// says owns that name; `None` if it may be. Only a name bound to a
    /// creation is checked: a founder created itself, and a name with no
    /// committed record may still be joining.
    pub fn identity_mismatch(&self, from: &ServerId, created: Option<&WriteId>) -> Option<String> {
        let core = self.core.lock().expect("replica lock");
        let record = core.replica.member(from, View::Committed)?;
        let presented = match created {
            Some(w) => w.clone(),
            None if &record.created.server == from => return None,
            None => {
                return Some(format!(
                    "server id {from} is bound to creation {}; this peer presents none",
                    record.created
                ));
            }
        };
        (presented != record.created).then(|| {
            format!(
                "server id {from} is bound to creation {}; this peer presents {presented}",
                record.created
            )
        })
    }

    /// After a session this server started whose push `peer`
    /// acknowledged: if this server had retired before it, `peer` now holds
    /// the retirement durably, and this server may go.
    pub fn retirement_delivered(&self, peer: &ServerId) {
        if self.leave.borrow().is_none() {
            let why = format!("retired: {peer} holds the retirement; shutting down");
            info!(id = %self.config.id, "{why}");
            self.leave.send_replace(Some(Ok(why)));
        }
    }

    /// Whether this server's retirement is committed here and it is not the
    /// primary: once a peer durably holds what this server holds, the
    /// retirement is committed elsewhere too, so this server may go. (Held
    /// only tentatively elsewhere is not enough: a handoff to this server
    /// may have committed before it retired, and then only it can commit
    /// its retirement, which passes the primary's role on.)
    pub fn retirement_committed(&self) -> bool {
        let core = self.core.lock().expect("replica lock");
        let r = &core.replica;
        r.member(r.id(), View::Committed)
            .is_some_and(|m| m.retired.is_some())
            && !r.is_primary()
    }

    /// Resolves once this server must leave: `Ok` with a message once its
    /// retirement is held elsewhere, `Err` once its name is another's.
    pub async fn left(&self) -> Result<String, String> {
        let mut rx = self.leave.subscribe();
        let seen = rx.wait_for(|l| l.is_some()).await;
        match seen {
            Ok(l) => l.clone().expect("waited for Some"),
            // The sender lives as long as the node: never reached.
            Err(_) => std::future::pending().await,
        }
    }

    /// Whether anti-entropy is switched off (`BAYOU.OFFLINE`).
    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::SeqCst)
    }

    /// Switches anti-entropy off or on.
    pub fn set_offline(&self, offline: bool) {
        self.offline.store(offline, Ordering::SeqCst);
        info!(id = %self.config.id, offline, "anti-entropy switched");
    }

    fn gone(&self) -> Gone {
        Gone(self.config.id.clone())
    }

    /// Runs `f` on the replica, hands what it changed to storage, and
    /// returns its result with the barrier to wait for.
    fn with_core<T>(&self, f: impl FnOnce(&mut Core) -> T) -> Result<(T, u64), Gone> {
        let mut core = self.core.lock().expect("replica lock");
        if core.batches.is_none() {
            return Err(self.gone());
        }
        let mark = metrics::Mark::new(&core.replica);
        let t = f(&mut core);
        mark.observe(&core.replica, &self.metrics, core.clock);
        let barrier = core.persist().ok_or_else(|| self.gone())?;
        Ok((t, barrier))
    }

    /// Waits until batch `barrier` is durable.
    pub async fn wait_durable(&self, barrier: u64) -> Result<(), Gone> {
        self.durable.wait(barrier).await.map_err(|_| self.gone())
    }

    /// The author the writes of a client authenticated as `user` record:
    /// the user's name when clients authenticate (`--acl-file`), none on
    /// an open replica.
    pub(crate) fn author(&self, user: &str) -> Option<Arc<str>> {
        self.config.acl.as_ref().map(|_| Arc::from(user))
    }

    /// Runs client queries; returns the replies once they may be sent.
    /// The writes among them are submitted by `author` (the connection's
    /// user; `None` on an open server), which they record and which their
    /// permissions are checked against where they execute.
    pub(crate) async fn queries(
        &self,
        queries: Vec<Query>,
        author: Option<Arc<str>>,
    ) -> Result<Vec<Reply>, Gone> {
        let (replies, barrier) = self.with_core(|core| {
            core.set_author(author);
            let replies = queries
                .into_iter()
                .map(|q| core.query(q, self))
                .collect::<Vec<_>>();
            core.author = None;
            replies
        })?;
        self.wait_durable(barrier).await?;
        Ok(replies)
    }

    /// This replica's summary, durable.
    pub async fn summary(&self) -> Result<Summary, Gone> {
        let (s, barrier) = self.with_core(|core| core.replica.summary())?;
        self.wait_durable(barrier).await?;
        Ok(s)
    }

    /// The next chunk of `session`, once what it reflects is durable here;
    /// `None` when the receiver lacks nothing more.
    pub async fn next_chunk(
        &self,
        session: &mut SessionSender,
        limits: ChunkLimits,
    ) -> Result<Option<Chunk>, Gone> {
        let (chunk, barrier) =
            self.with_core(|core| session.next_chunk(&mut core.replica, limits))?;
        self.wait_durable(barrier).await?;
        Ok(chunk)
    }

    /// Counts and logs a forged write refused (`bayou_core::auth`), and
    /// where it came from.
    pub fn forged(&self, from: &str, id: &bayou_core::WriteId, reason: &bayou_core::ForgedWrite) {
        self.counters
            .forged_writes_refused
            .fetch_add(1, Ordering::Relaxed);
        warn!(id = %self.config.id, from, write = %id, %reason, "refused a forged write");
    }

    /// Applies a received chunk; returns the result with the barrier to
    /// wait for before acknowledging it.
    pub async fn receive(
        &self,
        chunk: Chunk,
    ) -> Result<(Result<ReceiveReport, ProtocolError>, u64), Gone> {
        self.with_core(|core| {
            let mut chunk = chunk;
            core.intern_authors(&mut chunk);
            core.replica.receive_chunk(chunk)
        })
    }

    /// Persists what is pending (with a fresh checkpoint) and stops the
    /// storage thread once it has written everything.
    pub async fn shutdown(&self) {
        let barrier = {
            let mut core = self.core.lock().expect("replica lock");
            // A final checkpoint, so the next start replays little.
            core.replica.checkpoint(None);
            let barrier = core.persist();
            // Dropping the sender lets the storage thread finish and exit.
            core.batches = None;
            barrier
        };
        if let Some(b) = barrier {
            let _ = self.wait_durable(b).await;
        }
    }
}

/// The order `SCAN` walks keys in: FNV-1a of the key, so a cursor (the
/// hash to resume from) stays valid while keys come and go, and every key
/// present for the whole scan is returned exactly once.
fn scan_hash(key: &[u8]) -> u64 {
    key.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// One `SCAN` page: up to `count` matching keys whose hash is at least
/// `cursor`, in hash order (keys sharing a hash stay together), and the
/// cursor to continue from, 0 when done. Costs one pass over the keys.
fn scan_page(
    db: &bayou_core::Db,
    cursor: u64,
    pattern: Option<&[u8]>,
    count: usize,
) -> (u64, Vec<Bytes>) {
    let mut found: Vec<(u64, &Bytes)> = db
        .user_iter()
        .map(|(k, _)| (scan_hash(k), k))
        .filter(|(h, k)| *h >= cursor && pattern.is_none_or(|p| server_kit::pattern_match(p, k)))
        .collect();
    found.sort_unstable();
    let mut end = count.min(found.len());
    while end < found.len() && found[end].0 == found[end - 1].0 {
        end += 1;
    }
    let next = found.get(end).map_or(0, |(h, _)| *h);
    (
        next,
        found[..end].iter().map(|(_, k)| (*k).clone()).collect(),
    )
}

/// The replica and what goes with it, behind [`Node`]'s mutex.
#[derive(Debug)]
struct Core {
    replica: Replica,
    /// The number of the last batch handed to storage.
    issued: u64,
    /// `None` once shut down.
    batches: Option<Committer<Batch>>,
    clock: ClockMode,
    /// Writes accepted from clients (for the metrics).
    accepted: u64,
    /// The author of the writes of the batch of queries running now.
    author: Option<Arc<str>>,
    /// One shared name per author seen, so the writes of every connection
    /// of a user share it rather than each holding a copy (the retained
    /// log is memory-bounded).
    authors: BTreeSet<Arc<str>>,
    /// This server's standing, with the CSN and retirement it was computed
    /// at: it changes only with the committed membership (a new CSN or a
    /// full-state install) or this server's retirement, so client writes
    /// do not decode the membership record each.
    standing: Option<(bayou_core::Csn, bool, Standing)>,
}

impl Core {
    /// Hands what the replica queued to storage; returns the barrier, or
    /// `None` if storage is gone.
    fn persist(&mut self) -> Option<u64> {
        if let Some(batch) = bayou_store::take_batch(&mut self.replica) {
            self.issued += 1;
            self.batches.as_ref()?.commit(self.issued, batch).ok()?;
        }
        Some(self.issued)
    }

    fn now(&self) -> u64 {
        clock_reading(self.clock)
    }

    fn write(&mut self, op: Op) -> bayou_core::WriteId {
        let now = self.now();
        self.accepted += 1;
        self.replica.client_write_as(now, op, self.author.clone())
    }

    /// Makes `author` the author of the writes that follow, interned.
    fn set_author(&mut self, author: Option<Arc<str>>) {
        self.author = author.map(|a| self.intern(a));
    }

    /// The one shared copy of the name `author`.
    fn intern(&mut self, author: Arc<str>) -> Arc<str> {
        match self.authors.get(&author) {
            Some(shared) => shared.clone(),
            None => {
                self.authors.insert(author.clone());
                author
            }
        }
    }

    /// Makes the writes of a received chunk share the names of their
    /// authors with the writes already held (each arrives with a copy of
    /// its own).
    fn intern_authors(&mut self, chunk: &mut Chunk) {
        if let Chunk::Items(items) = chunk {
            for item in items {
                if let bayou_core::Item::Write { write, .. } = item
                    && let Some(a) = write.author.take()
                {
                    write.author = Some(self.intern(a));
                }
            }
        }
    }

    /// This server's standing ([`Standing::of`]), cached.
    fn standing(&mut self, node: &Node) -> &Standing {
        let key = (self.replica.csn(), self.replica.has_retired());
        if self
            .standing
            .as_ref()
            .is_none_or(|(csn, retired, _)| (*csn, *retired) != key)
        {
            let now = Standing::of(&self.replica, node.creation.as_ref());
            self.standing = Some((key.0, key.1, now));
        }
        &self.standing.as_ref().expect("just set").2
    }

    /// What clients see of `key` in `view`: nothing for the membership
    /// table's keys.
    fn get(&self, key: &[u8], view: View) -> Option<&Bytes> {
        if is_reserved(key) {
            None
        } else {
            self.replica.get(key, view)
        }
    }

    fn exists(&self, key: &[u8]) -> bool {
        self.get(key, View::Full).is_some()
    }

    fn query(&mut self, q: Query, node: &Node) -> Reply {
        if q.is_client_write() {
            if let Some(why) = self.standing(node).refusal(&node.config.id) {
                return Reply::Error(why);
            }
            if let Some(k) = q.reserved_key() {
                return Reply::err(format!(
                    "key {:?} is reserved: keys starting with \\xffbayou/ hold the membership table",
                    String::from_utf8_lossy(k)
                ));
            }
        }
        match q {
            Query::Get(k, view) => Reply::Bulk(self.get(&k, view).cloned()),
            Query::Set(k, v) => {
                self.write(Op::put(k, v));
                Reply::ok()
            }
            Query::Del(keys) => {
                let mut n = 0;
                for k in keys {
                    n += self.exists(&k) as i64;
                    self.write(Op::delete(k));
                }
                Reply::Int(n)
            }
            Query::Exists(keys) => {
                Reply::Int(keys.iter().filter(|k| self.exists(k)).count() as i64)
            }
            Query::MGet(keys) => Reply::Array(
                keys.iter()
                    .map(|k| Reply::Bulk(self.get(k, View::Full).cloned()))
                    .collect(),
            ),
            Query::MSet(pairs) => {
                for (k, v) in pairs {
                    self.write(Op::put(k, v));
                }
                Reply::ok()
            }
            Query::SetWith {
                key,
                value,
                present,
                get,
            } => {
                let old = self.get(&key, View::Full).cloned();
                let applies = present.is_none_or(|p| p == old.is_some());
                self.write(match present {
                    None => Op::put(key, value),
                    Some(false) => Op::SetIfAbsent { key, value },
                    Some(true) => Op::SetIfPresent { key, value },
                });
                match (get, applies) {
                    (true, _) => Reply::Bulk(old),
                    (false, true) => Reply::ok(),
                    (false, false) => Reply::Null,
                }
            }
            Query::SetNx(key, value) => {
                let absent = !self.exists(&key);
                self.write(Op::SetIfAbsent { key, value });
                Reply::Int(absent as i64)
            }
            Query::GetDel(key) => {
                let old = self.get(&key, View::Full).cloned();
                if old.is_some() {
                    self.write(Op::delete(key));
                }
                Reply::Bulk(old)
            }
            Query::Type(key) => {
                Reply::Simple(if self.exists(&key) { "string" } else { "none" }.into())
            }
            Query::Strlen(key) => {
                Reply::Int(self.get(&key, View::Full).map_or(0, |v| v.len() as i64))
            }
            Query::Incr(key, by) => {
                // Refuse here what would fail now, as Redis does, rather
                // than log a write with no effect; a write accepted here may
                // still fail where it is re-executed in another order.
                let current = match self.replica.get(&key, View::Full) {
                    None => Some(0),
                    Some(v) => bayou_core::parse_integer(v),
                };
                match current.map(|c| c.checked_add(by)) {
                    None => Reply::err("value is not an integer or out of range"),
                    Some(None) => Reply::err("increment or decrement would overflow"),
                    Some(Some(n)) => {
                        self.write(Op::Incr { key, by });
                        Reply::Int(n)
                    }
                }
            }
            Query::Append(key, value) => {
                let len = self.replica.get(&key, View::Full).map_or(0, |v| v.len()) + value.len();
                self.write(Op::Append { key, value });
                Reply::Int(len as i64)
            }
            Query::Keys(pattern) => Reply::Array(
                self.replica
                    .db(View::Full)
                    .user_iter()
                    .filter(|(k, _)| server_kit::pattern_match(&pattern, k))
                    .map(|(k, _)| Reply::bulk(k.clone()))
                    .collect(),
            ),
            Query::KeyScan {
                cursor,
                pattern,
                count,
                strings,
            } => {
                let (next, keys) = if strings {
                    scan_page(
                        self.replica.db(View::Full),
                        cursor,
                        pattern.as_deref(),
                        count,
                    )
                } else {
                    (0, Vec::new())
                };
                Reply::Array(vec![
                    Reply::text(next.to_string()),
                    Reply::Array(keys.into_iter().map(Reply::bulk).collect()),
                ])
            }
            Query::FlushAll => {
                self.write(Op::DeleteAll);
                Reply::ok()
            }
            Query::Write(op) => Reply::text(self.write(op).to_string()),
            // The membership table only when asked for by its prefix.
            Query::Scan(prefix, view) => Reply::Array(
                self.replica
                    .db(view)
                    .scan_prefix(&prefix)
                    .filter(|(k, _)| is_reserved(&prefix) || !is_reserved(k))
                    .flat_map(|(k, v)| [Reply::bulk(k.clone()), Reply::bulk(v.clone())])
                    .collect(),
            ),
            Query::DbSize => Reply::Int(self.replica.db(View::Full).len() as i64),
            Query::Truncate(keep) => {
                let discarded = self.replica.checkpoint(keep);
                info!(id = %node.config.id, discarded, osn = self.replica.osn(), "BAYOU.TRUNCATE");
                int_fields(&[
                    ("discarded", discarded as i64),
                    ("osn", self.replica.osn() as i64),
                    ("retained_writes", self.replica.retained_len() as i64),
                ])
            }
            Query::Join(server, addr) => match self.replica.sponsor(self.now(), server, &addr) {
                Ok(w) => {
                    info!(id = %node.config.id, created = %w, %addr, "BAYOU.JOIN: sponsored a new server");
                    Reply::text(w.to_string())
                }
                Err(e) => Reply::err(e),
            },
            Query::Handoff(to) => match self.replica.handoff(self.now(), to.clone()) {
                Ok(w) => {
                    info!(id = %node.config.id, %to, write = %w, committed = !self.replica.is_primary(), "BAYOU.HANDOFF");
                    Reply::text(w.to_string())
                }
                Err(e) => Reply::err(e),
            },
            Query::Address(addr) => match self.replica.set_address(self.now(), &addr) {
                Ok(w) => {
                    info!(id = %node.config.id, %addr, write = %w, "BAYOU.ADDRESS");
                    Reply::text(w.to_string())
                }
                Err(e) => Reply::err(e),
            },
            Query::Retire(to) => self.retire(to, node),
            Query::Members => {
                let primary =
                    crate::member::effective_primary(&self.replica, node.config.primary.as_ref());
                Reply::Array(
                    crate::member::members_text(&self.replica, primary.as_ref())
                        .into_iter()
                        .map(Reply::text)
                        .collect(),
                )
            }
            Query::Summary => Reply::bulk(encode_summary(&self.replica.summary())),
            Query::Export(base, max_bytes) => Reply::Array(
                bundle::export(&mut self.replica, base, max_bytes, ChunkLimits::default())
                    .into_iter()
                    .map(Reply::bulk)
                    .collect(),
            ),
            Query::Import(file) => {
                let result = bundle::decode(&file)
                    .map_err(ImportError::from)
                    .and_then(|b| self.replica.import_bundle(&b));
                match result {
                    Ok(r) => {
                        info!(id = %node.config.id, new_writes = r.new_writes, commits = r.commits, installed = r.installed, "BAYOU.IMPORT");
                        int_fields(&[
                            ("new_writes", r.new_writes as i64),
                            ("commits", r.commits as i64),
                            ("installed_snapshot", r.installed as i64),
                        ])
                    }
                    Err(e) => {
                        if let ImportError::Protocol(ProtocolError::Forged { id, reason }) = &e {
                            node.forged(
                                &format!("bundle from {}", bundle_sender(&file)),
                                id,
                                reason,
                            );
                        }
                        Reply::err(format!("bundle refused, nothing changed: {e}"))
                    }
                }
            }
            Query::Log => Reply::Array(
                self.replica
                    .log()
                    .map(|(csn, w)| {
                        let outcome = self.replica.outcome(&w.id);
                        Reply::text(format_entry_with_outcome(csn, &w, &outcome))
                    })
                    .collect(),
            ),
            Query::Vv => Reply::Array(
                self.replica
                    .vv()
                    .iter()
                    .flat_map(|(s, stamp)| [Reply::text(s.as_str()), Reply::Int(stamp as i64)])
                    .collect(),
            ),
            // Maps: a flat array of field, value in RESP2 as before.
            Query::Status => Reply::map(self.status(node)),
            Query::Info(sections) => {
                let text = |fields: Vec<(&str, String)>| {
                    fields
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Vec<_>>()
                };
                let bayou = self
                    .status(node)
                    .into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Reply::Int(n) => n.to_string(),
                            Reply::Bulk(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
                            _ => String::new(),
                        };
                        (k.to_string(), v)
                    })
                    .collect();
                let all = [
                    (
                        "server",
                        text(vec![
                            ("redis_version", "7.0.0".into()),
                            ("redis_mode", "standalone".into()),
                            ("bayou_version", env!("CARGO_PKG_VERSION").into()),
                            ("tls_enabled", (node.config.tls.is_some() as u8).to_string()),
                        ]),
                    ),
                    (
                        "clients",
                        text(vec![(
                            "total_commands_processed",
                            node.counters.commands.load(Ordering::Relaxed).to_string(),
                        )])
                        .into_iter()
                        .chain(node.clients.clients_info())
                        .chain(server_kit::acl::info_fields(node.config.acl.as_deref()))
                        .collect(),
                    ),
                    ("stats", node.clients.stats_info()),
                    (
                        "persistence",
                        text(vec![("loading", "0".into()), ("aof_enabled", "1".into())]),
                    ),
                    ("bayou", bayou),
                    (
                        "keyspace",
                        text(vec![(
                            "db0",
                            format!(
                                "keys={},expires=0,avg_ttl=0",
                                self.replica.db(View::Full).len()
                            ),
                        )]),
                    ),
                ];
                Reply::text(server_kit::info_text(&all, &sections))
            }
        }
    }

    /// [`Node::peers`] under the lock already held.
    fn peers_of(&self, node: &Node) -> BTreeMap<ServerId, String> {
        let r = &self.replica;
        let mut peers = node.config.peers.clone();
        if let Some(c) = &node.creation {
            peers
                .entry(c.sponsor().clone())
                .or_insert_with(|| c.sponsor_addr.clone());
        }
        for (id, m) in r.members(View::Committed) {
            if m.is_live() {
                peers.insert(id, m.addr);
            }
        }
        peers.remove(&node.config.id);
        peers.retain(|id, _| !r.is_retired(id));
        peers
    }

    /// `BAYOU.RETIRE [to]`: the retirement write, after a handoff to `to`
    /// (or to the first other live member) when this server is the
    /// primary. Only a member retires: a static server has no record, and a
    /// joiner's creation is not settled.
    fn retire(&mut self, to: Option<ServerId>, node: &Node) -> Reply {
        let standing = Standing::of(&self.replica, node.creation.as_ref());
        if standing != Standing::Member {
            return Reply::err(format!(
                "{} cannot retire: it is not a member ({})",
                node.config.id,
                standing.name()
            ));
        }
        let mut replies = Vec::new();
        if self.replica.is_primary() {
            let me = node.config.id.clone();
            let to = to.or_else(|| {
                self.replica
                    .members(View::Committed)
                    .into_iter()
                    .find(|(id, m)| *id != me && m.is_live() && !self.replica.is_retired(id))
                    .map(|(id, _)| id)
            });
            let Some(to) = to else {
                return Reply::err(format!(
                    "{me} is the primary and the only live member: nobody to hand off to"
                ));
            };
            match self.replica.handoff(self.now(), to.clone()) {
                Ok(w) => {
                    info!(id = %me, %to, write = %w, "BAYOU.RETIRE: handed off first");
                    replies.push(Reply::text(format!("handoff {w} to {to}")));
                }
                Err(e) => return Reply::err(e),
            }
            if self.replica.is_primary() {
                // Without autocommit the handoff is not committed yet.
                return Reply::err(format!(
                    "handoff to {to} written but not committed; retire once it is"
                ));
            }
        }
        match self.replica.retire(self.now()) {
            Ok(w) => {
                info!(id = %node.config.id, write = %w, "BAYOU.RETIRE: retired; serving anti-entropy until a peer holds it");
                replies.push(Reply::text(format!("retire {w}")));
                Reply::Array(replies)
            }
            Err(e) => Reply::err(e),
        }
    }

    fn status(&self, node: &Node) -> Vec<(&'static str, Reply)> {
        let r = &self.replica;
        let mut out = vec![
            ("id", Reply::text(r.id().as_str())),
            (
                "role",
                Reply::text(if r.is_primary() {
                    "primary"
                } else {
                    "secondary"
                }),
            ),
            ("csn", Reply::Int(r.csn() as i64)),
            ("tentative", Reply::Int(r.tentative_len() as i64)),
            ("logical_clock", Reply::Int(r.logical_clock() as i64)),
            ("keys", Reply::Int(r.db(View::Full).len() as i64)),
            ("osn", Reply::Int(r.osn() as i64)),
            ("omitted", Reply::text(vv_text(r.omitted()))),
            ("retained_writes", Reply::Int(r.retained_len() as i64)),
            ("retained_bytes", Reply::Int(r.retained_bytes() as i64)),
            ("checkpoint_csn", Reply::Int(r.checkpoint_csn() as i64)),
            (
                "retain_writes",
                Reply::Int(r.retention().writes.min(i64::MAX as u64) as i64),
            ),
            (
                "retain_bytes",
                Reply::Int(r.retention().bytes.min(i64::MAX as u64) as i64),
            ),
            ("vv", Reply::text(vv_text(r.vv()))),
        ];
        {
            let c = &node.counters;
            let get = |a: &AtomicU64| Reply::Int(a.load(Ordering::Relaxed) as i64);
            out.extend([
                (
                    "anti_entropy",
                    Reply::text(if node.is_offline() {
                        "offline"
                    } else {
                        "online"
                    }),
                ),
                (
                    "primary",
                    Reply::text(
                        crate::member::effective_primary(r, node.config.primary.as_ref())
                            .map_or(String::new(), |p| p.to_string()),
                    ),
                ),
                (
                    "membership",
                    Reply::text(Standing::of(r, node.creation.as_ref()).name()),
                ),
                (
                    "members",
                    Reply::Int(
                        r.members(View::Committed)
                            .iter()
                            .filter(|(_, m)| m.is_live())
                            .count() as i64,
                    ),
                ),
                (
                    "peers",
                    Reply::text(
                        self.peers_of(node)
                            .iter()
                            .map(|(id, a)| format!("{id}={a}"))
                            .collect::<Vec<_>>()
                            .join(","),
                    ),
                ),
                ("sessions_ok", get(&c.sessions_ok)),
                ("sessions_failed", get(&c.sessions_failed)),
                ("items_sent", get(&c.items_sent)),
                ("items_received", get(&c.items_received)),
                ("peer_bytes_sent", get(&c.peer_bytes_sent)),
                ("peer_bytes_received", get(&c.peer_bytes_received)),
                ("durable_batches", get(&c.batches)),
                ("commands", get(&c.commands)),
            ]);
        }
        out
    }
}

/// Names and integers, as `BAYOU.STATUS` and friends reply: a map in
/// RESP3, a flat array of name, value in RESP2.
pub(crate) fn int_fields(fields: &[(&str, i64)]) -> Reply {
    Reply::map(fields.iter().map(|&(k, v)| (k, Reply::Int(v))))
}

/// A version vector as `A:12,B:13`.
fn vv_text(vv: &bayou_core::VersionVector) -> String {
    vv.iter()
        .map(|(s, t)| format!("{s}:{t}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The prefix of an encoded summary (`BAYOU.SUMMARY`).
const SUMMARY_MAGIC: &[u8; 8] = b"BAYOUSUM";

/// Encodes a replica's summary for `BAYOU.EXPORT`.
pub fn encode_summary(summary: &Summary) -> Vec<u8> {
    let mut out = SUMMARY_MAGIC.to_vec();
    out.extend(postcard::to_stdvec(summary).expect("postcard encodes plain data"));
    out
}

/// Decodes what `BAYOU.SUMMARY` returned.
pub fn decode_summary(bytes: &[u8]) -> Result<Summary, String> {
    match bytes.strip_prefix(SUMMARY_MAGIC) {
        Some(body) => postcard::from_bytes(body).map_err(|e| format!("bad summary: {e}")),
        None => Err("not a Bayou summary (use the output of BAYOU.SUMMARY)".into()),
    }
}

/// The replica as a client session sees it under the lock
/// ([`Node::locked`]): session guarantees ([`crate::session`]) check and
/// record version vectors around the queries they run, atomically.
pub(crate) struct Locked<'a> {
    core: &'a mut Core,
    node: &'a Node,
}

impl Locked<'_> {
    /// The replica, to read its vectors.
    pub(crate) fn replica(&self) -> &Replica {
        &self.core.replica
    }

    /// Runs one client query, as [`Node::queries`] does.
    pub(crate) fn query(&mut self, q: Query) -> Reply {
        self.core.query(q, self.node)
    }
}

impl Node {
    /// Runs `f` under one acquisition of the replica and returns its result
    /// once what it changed is durable.
    pub(crate) async fn locked<T>(&self, f: impl FnOnce(&mut Locked<'_>) -> T) -> Result<T, Gone> {
        self.locked_as(None, f).await
    }

    /// [`Node::locked`] for queries whose writes are submitted by `author`
    /// (as [`Node::queries`]).
    pub(crate) async fn locked_as<T>(
        &self,
        author: Option<Arc<str>>,
        f: impl FnOnce(&mut Locked<'_>) -> T,
    ) -> Result<T, Gone> {
        let (t, barrier) = self.with_core(|core| {
            core.set_author(author);
            let t = f(&mut Locked { core, node: self });
            core.author = None;
            t
        })?;
        self.wait_durable(barrier).await?;
        Ok(t)
    }
}

/// The sender named in a bundle file, for the log of a refused import.
fn bundle_sender(file: &[u8]) -> String {
    bundle::decode(file).map_or_else(|_| "?".into(), |b| b.sender.to_string())
}
