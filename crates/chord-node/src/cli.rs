//! `chord serve` (one node) and `chord cluster` (a local ring of node
//! processes), shared by the `chord` binary and this crate's `chord-node`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chord_core::node::LookupMode;
use chord_core::{Id, IdSpace, NodeRef, VirtualHost};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::info;

use crate::data::DataEvent;
use crate::node::{CoreEvent, NodeConfig, RingView, Shared, run_core};
use crate::store::{Persister, RedbKeyStore, RedbStore, hex};
use crate::transport::Peers;
use crate::{data, server};

/// What ring positions are bound to (`--id-binding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IdBindingArg {
    /// Ids are whatever a node claims (`--id`): for experiments only.
    None,
    /// An id is SHA-1 of the node's ip:port (with #i per virtual node).
    Address,
    /// An id is SHA-1 of the node's IP alone (with #i per virtual node):
    /// one process per IP address, as in the Chord paper.
    Host,
}

impl IdBindingArg {
    fn binding(self) -> chord_core::host::IdBinding {
        use chord_core::host::IdBinding;
        match self {
            IdBindingArg::None => IdBinding::None,
            IdBindingArg::Address => IdBinding::Address,
            IdBindingArg::Host => IdBinding::Host,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            IdBindingArg::None => "none",
            IdBindingArg::Address => "address",
            IdBindingArg::Host => "host",
        }
    }
}

/// How lookups are carried out.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LookupArg {
    /// The origin asks every hop itself.
    Iterative,
    /// Every hop forwards the request.
    Recursive,
}

/// Ring and storage parameters shared by `serve` and `cluster`.
#[derive(Debug, Clone, clap::Args)]
pub struct Tuning {
    /// Successor-list length r.
    #[arg(long, default_value_t = 8)]
    pub successors: usize,
    /// Copies of every key: the owner plus `replicas - 1` successors (on distinct processes).
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Virtual nodes per process.
    #[arg(long = "virtual", default_value_t = 1)]
    pub virtual_nodes: usize,
    /// Mean stabilization period in ms (each interval uniform in 0.5x..1.5x).
    #[arg(long, default_value_t = 500)]
    pub stabilize_ms: u64,
    /// fix_fingers period in ms (one finger lookup per period).
    #[arg(long, default_value_t = 250)]
    pub fix_fingers_ms: u64,
    /// check_predecessor period in ms.
    #[arg(long, default_value_t = 500)]
    pub check_predecessor_ms: u64,
    /// Timeout of every node-to-node request in ms.
    #[arg(long, default_value_t = 1000)]
    pub rpc_timeout_ms: u64,
    /// Unanswered requests in a row before a node is presumed dead.
    #[arg(long, default_value_t = 2)]
    pub failure_strikes: u32,
    /// Anti-entropy period in ms (replica repair, join hand-off, garbage collection).
    #[arg(long, default_value_t = 1000)]
    pub sync_ms: u64,
    /// A read asks the key's other replicas after this many ms without an
    /// answer from the owner (hedged read).
    #[arg(long, default_value_t = 100)]
    pub read_try_ms: u64,
    /// Deletes are purged this many ms after they reached every replica; a
    /// node down longer than this restarts with an empty store.
    #[arg(long, default_value_t = 600_000)]
    pub tombstone_grace_ms: u64,
    /// How client requests find a key's owner.
    #[arg(long, value_enum, default_value_t = LookupArg::Recursive)]
    pub lookup: LookupArg,
    /// A client request gives up (TRYAGAIN) after this many ms of ring changes.
    #[arg(long, default_value_t = 10_000)]
    pub op_timeout_ms: u64,
    /// Largest node-to-node frame in bytes.
    #[arg(long, default_value_t = crate::wire::DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,
    /// A peer connection that sends the magic prefix but no complete first
    /// frame within this many ms is closed.
    #[arg(long, default_value_t = 10_000)]
    pub peer_idle_timeout_ms: u64,
    /// Log filter (tracing-subscriber syntax), e.g. info or chord_node=debug.
    #[arg(long, default_value = "warn")]
    pub log: String,
    /// Threads for networking and the node's logic: 0 for one per core, 1
    /// for a single-threaded runtime; storage always has a thread of its
    /// own. `chord cluster` passes each node the cores shared among the
    /// nodes (at least 1) unless this is given.
    #[arg(long, default_value_t = 0)]
    pub worker_threads: usize,
    /// Client connection limits.
    #[command(flatten)]
    pub client_limits: server_kit::limits::ClientLimitFlags,
    /// Peer authentication.
    #[command(flatten)]
    pub peer_auth: server_kit::peer_auth::PeerAuthFlags,
    /// What a node's ring position is bound to: `address` (SHA-1 of
    /// ip:port), `host` (SHA-1 of the IP; one node process per IP) or
    /// `none` (any id, needed for --id). Peer messages naming a node whose
    /// id its address does not bind are dropped. Every node of a ring must
    /// use the same binding.
    #[arg(long, value_enum, default_value_t = IdBindingArg::Address)]
    pub id_binding: IdBindingArg,
    /// Client users and permissions (`--acl-file`).
    #[command(flatten)]
    pub acl: server_kit::acl::AclFlags,
    /// TLS for clients and peers (off unless --tls-cert is given).
    #[command(flatten)]
    pub tls: server_kit::tls::TlsFlags,
}

/// `chord serve`: one node.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address for Redis clients and for other nodes, e.g. 127.0.0.1:8001.
    #[arg(long)]
    pub listen: String,
    /// A ring member to join through; without it the node creates a ring.
    #[arg(long)]
    pub join: Option<String>,
    /// Data directory (created if missing; refused if another node id made it).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Node id (decimal, or 0x-prefixed hex up to 160 bits) instead of SHA-1(listen address).
    #[arg(long)]
    pub id: Option<String>,
    /// Serve Prometheus metrics (/metrics), a health check (/healthz) and
    /// the live ring view (/) over HTTP on this address, e.g. 127.0.0.1:9100.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Another node's --http address, so the ring view shows it too.
    /// Repeatable.
    #[arg(long = "peer-http", value_name = "ADDR")]
    pub peer_http: Vec<String>,
    #[allow(missing_docs)]
    #[command(flatten)]
    pub tuning: Tuning,
}

/// `chord cluster`: a local ring of `--nodes` processes.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Number of node processes.
    #[arg(long, default_value_t = 8)]
    pub nodes: usize,
    /// The first node listens on this port, the others on the following ones.
    #[arg(long, default_value_t = 8000)]
    pub base_port: u16,
    /// Parent of the nodes' data directories (n0, n1, ...).
    #[arg(long, default_value = "chord-cluster")]
    pub data_dir: PathBuf,
    /// Host to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Serve the ring view of the whole cluster (/) over HTTP on this
    /// address; node i serves its own --http listener (metrics, health,
    /// its view) on the port of this address plus 1 + i.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Serve TLS with a local test CA and certificates, made under
    /// DATA_DIR/tls on the first run (for --host, 127.0.0.1, localhost and
    /// ::1) and reused after.
    #[arg(long, conflicts_with = "tls_cert")]
    pub tls: bool,
    #[allow(missing_docs)]
    #[command(flatten)]
    pub tuning: Tuning,
}

/// The cluster secret `chord cluster` makes in its data directory when
/// `--cluster-secret-file` is not given; a `chord serve --join` joining the
/// local ring passes this file.
pub const CLUSTER_SECRET_FILE: &str = "cluster.secret";
impl ClusterArgs {
    /// The TLS flags the nodes run with: with `--tls`, the certificates in
    /// DATA_DIR/tls, made there first if they are not; otherwise `--tls-cert`
    /// … as given.
    pub fn tls_flags(&self) -> anyhow::Result<server_kit::tls::TlsFlags> {
        self.tuning
            .tls
            .for_cluster(self.tls, &self.data_dir, &self.host)
            .with_context(|| {
                format!(
                    "chord cluster --tls: {}",
                    self.data_dir.join("tls").display()
                )
            })
    }
}

fn resolve(s: &str) -> anyhow::Result<SocketAddr> {
    s.to_socket_addrs()
        .with_context(|| format!("bad address {s:?}"))?
        .next()
        .with_context(|| format!("{s:?} resolves to nothing"))
}

/// Checks the flags and builds the node configuration.
pub fn config(a: &ServeArgs) -> anyhow::Result<NodeConfig> {
    let t = &a.tuning;
    let listen = resolve(&a.listen)?;
    let mut c = NodeConfig::new(listen, a.data_dir.clone());
    c.join = a.join.as_deref().map(resolve).transpose()?;
    if c.join == Some(listen) {
        bail!("--join must name another node");
    }
    if !(1..=64).contains(&t.successors) {
        bail!("--successors must be between 1 and 64");
    }
    if t.replicas < 1 || t.replicas > t.successors + 1 {
        bail!("--replicas must be between 1 and successors + 1");
    }
    if !(1..=64).contains(&t.virtual_nodes) {
        bail!("--virtual must be between 1 and 64");
    }
    if t.rpc_timeout_ms == 0 || t.stabilize_ms == 0 || t.sync_ms == 0 || t.read_try_ms == 0 {
        bail!("periods and timeouts must be positive");
    }
    if t.peer_idle_timeout_ms == 0 {
        bail!("--peer-idle-timeout-ms must be positive");
    }
    if t.max_frame_bytes < 1024 {
        bail!("--max-frame-bytes must be at least 1024");
    }
    c.successors = t.successors;
    c.replicas = t.replicas;
    c.virtual_nodes = t.virtual_nodes;
    c.stabilize_ms = t.stabilize_ms;
    c.fix_fingers_ms = t.fix_fingers_ms;
    c.check_predecessor_ms = t.check_predecessor_ms;
    c.rpc_timeout_ms = t.rpc_timeout_ms;
    c.failure_strikes = t.failure_strikes;
    c.sync_ms = t.sync_ms;
    c.read_try_ms = t.read_try_ms;
    c.tombstone_grace_ms = t.tombstone_grace_ms;
    c.lookup_mode = match t.lookup {
        LookupArg::Iterative => LookupMode::Iterative,
        LookupArg::Recursive => LookupMode::Recursive,
    };
    c.op_timeout_ms = t.op_timeout_ms;
    c.max_frame_bytes = t.max_frame_bytes;
    c.peer_idle_timeout_ms = t.peer_idle_timeout_ms;
    c.client_limits = server_kit::ClientLimits::from_flags(&t.client_limits)?;
    c.cluster_secret = t.peer_auth.load()?;
    c.id_binding = t.id_binding.binding();
    c.acl = t.acl.load(server::TABLE)?;
    c.tls = t.tls.load()?;
    if let Some(id) = &a.id {
        if t.id_binding != IdBindingArg::None {
            bail!(
                "--id places the node at a chosen point of the ring, which peers bound to \
                 addresses refuse; pass --id-binding none to every node of the ring to allow it"
            );
        }
        if t.virtual_nodes > 1 {
            bail!("--id cannot be combined with --virtual > 1");
        }
        let id: Id = id.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        if !IdSpace::default().contains(id) {
            bail!("--id does not fit in 160 bits");
        }
        c.id = Some(id);
    }
    Ok(c)
}

/// Runs `chord serve` until interrupted or until `CHORD.LEAVE`.
pub fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let cfg = config(&a)?;
    server_kit::init_tracing(Some(&a.tuning.log));
    let rt = server_kit::runtime(a.tuning.worker_threads)?;
    rt.block_on(async {
        let http = match &a.http {
            Some(addr) => Some((server_kit::http::bind(addr).await?, a.peer_http.clone())),
            None => None,
        };
        run_with_http(cfg, http).await
    })
}

/// Runs a node with `cfg` until shutdown (signal or `CHORD.LEAVE`).
pub async fn run(cfg: NodeConfig) -> anyhow::Result<()> {
    run_with_http(cfg, None).await
}

/// [`run`], serving `--http` on `http` (a bound listener and the other
/// nodes' HTTP addresses) too.
pub async fn run_with_http(
    cfg: NodeConfig,
    http: Option<(TcpListener, Vec<String>)>,
) -> anyhow::Result<()> {
    let space = IdSpace::default();
    let ids = cfg.vnode_ids(space);
    let store = RedbStore::open(&cfg.data_dir, ids[0])
        .with_context(|| format!("opening {}", cfg.data_dir.display()))?;
    let listener = TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let records = store
        .load_for_start(cfg.tombstone_grace_ms)
        .with_context(|| format!("reading {}", cfg.data_dir.display()))?;
    let (core_tx, core_rx) = mpsc::unbounded_channel();
    let (data_tx, data_rx) = mpsc::unbounded_channel();
    let persisted = data_tx.clone();
    let persister = Persister::spawn(store, move |token| {
        let _ = persisted.send(DataEvent::Persisted { token });
    });
    // Request ids of this incarnation start at the wall clock in µs, so late
    // answers to a previous run of this node match nothing.
    let id_base = crate::store::wall_clock_ms().saturating_mul(1000);
    let plane = chord_core::data::DataPlane::new(
        cfg.data_config(space),
        cfg.listen,
        RedbKeyStore::new(records),
        id_base,
    );
    server_kit::acl::log_mode(cfg.acl.as_deref(), &cfg.listen.to_string());
    if let Some(acl) = &cfg.acl {
        server_kit::acl::reload_on_hangup(acl.clone())?;
    }
    let (shutdown, _) = watch::channel(false);
    let seed = u64::from_be_bytes(ids[0].to_be_bytes()[12..20].try_into().expect("8 bytes"));
    let host = VirtualHost::new(&cfg.core_config(space), cfg.listen, &ids, seed);
    let shared = Arc::new(Shared {
        peers: Peers::new(
            cfg.max_frame_bytes,
            Duration::from_millis(cfg.rpc_timeout_ms),
            cfg.tls.clone(),
            cfg.cluster_secret.clone(),
        ),
        cfg: cfg.clone(),
        space,
        view: RwLock::new(Arc::new(RingView::default())),
        core: core_tx,
        data: data_tx,
        shutdown,
        counters: Default::default(),
        metrics: Default::default(),
        started: Instant::now(),
        clients: server_kit::ClientGate::new(cfg.client_limits),
        refused_peers: Default::default(),
        bound_nodes: Default::default(),
        unbound_refused: Default::default(),
    });
    let core = tokio::spawn(run_core(shared.clone(), host, core_rx));
    if let Some((listener, peer_http)) = http {
        crate::web::serve(
            listener,
            shared.clone(),
            peer_http,
            shared.shutdown.subscribe(),
        );
    }
    tokio::spawn(server::accept_loop(shared.clone(), listener));
    let data_task = tokio::spawn(data::run_data(shared.clone(), plane, persister, data_rx));
    let me = cfg.listen;
    match cfg.join {
        None => {
            // The first virtual node creates the ring and owns everything (the
            // data plane serves at once); the others join through it.
            let _ = shared.core.send(CoreEvent::Create { vnode: ids[0] });
            for v in &ids[1..] {
                let bootstrap = NodeRef {
                    id: ids[0],
                    addr: me,
                };
                let _ = shared.core.send(CoreEvent::Join {
                    vnode: *v,
                    bootstrap,
                });
            }
        }
        Some(b) => {
            let s = shared.clone();
            let ids = ids.clone();
            tokio::spawn(async move {
                let remote = s.whoami(b).await;
                if let Some(r) = remote.first() {
                    for v in ids {
                        let bootstrap = NodeRef { id: *r, addr: b };
                        let _ = s.core.send(CoreEvent::Join {
                            vnode: v,
                            bootstrap,
                        });
                    }
                }
            });
        }
    }
    println!(
        "chord node {} id {} listening on {}{}{}",
        env!("CARGO_PKG_VERSION"),
        hex(ids[0]),
        me,
        if cfg.tls.is_some() { " (TLS)" } else { "" },
        cfg.join
            .map(|j| format!(", joining via {j}"))
            .unwrap_or_default()
    );
    let tls = cfg.tls.is_some();
    info!(%me, id = %hex(ids[0]), tls, "serving");
    let mut stop = shared.shutdown.subscribe();
    let signal = server_kit::shutdown_signal()?;
    tokio::select! {
        _ = stop.wait_for(|s| *s) => {}
        which = signal => info!("{which}: shutting down"),
    }
    shared.shutdown.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(1), core).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), data_task).await;
    Ok(())
}

/// Runs `chord cluster`: starts the node processes (this executable's
/// `serve`), prints their addresses, and stops them all on Ctrl-C.
pub fn cluster(a: ClusterArgs) -> anyhow::Result<()> {
    if a.nodes == 0 || a.nodes > 256 {
        bail!("--nodes must be between 1 and 256");
    }
    if u32::from(a.base_port) + a.nodes as u32 > 65_536 {
        bail!("ports beyond 65535");
    }
    let exe = std::env::current_exe()?;
    // The cluster's page, bound before any node starts; node i serves its
    // own listener on the next ports.
    let web = match &a.http {
        Some(addr) => {
            let listener = server_kit::http::bind_std(addr)?;
            let port = listener.local_addr()?.port();
            if u32::from(port) + a.nodes as u32 > 65_535 {
                bail!("--http port too high for {} nodes", a.nodes);
            }
            let host = addr.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
            let nodes: Vec<String> = (0..a.nodes)
                .map(|i| format!("{host}:{}", port + 1 + i as u16))
                .collect();
            Some((listener, nodes))
        }
        None => None,
    };
    std::fs::create_dir_all(&a.data_dir)?;
    // Loaded here too, so bad certificates stop the cluster before any node
    // starts, and the readiness check speaks TLS.
    let tls_flags = a.tls_flags()?;
    let tls = tls_flags.load()?;
    let t = &a.tuning;
    // A local ring authenticates its peers by default: a secret in its data
    // directory, made on first start, unless one is given.
    let peer_auth = match &t.peer_auth.cluster_secret_file {
        Some(_) => t.peer_auth.clone(),
        None => {
            let path = a.data_dir.join(CLUSTER_SECRET_FILE);
            server_kit::peer_auth::ClusterSecret::load_or_create(&path)?;
            server_kit::peer_auth::PeerAuthFlags {
                cluster_secret_file: Some(std::path::absolute(&path)?),
            }
        }
    };
    let first = format!("{}:{}", a.host, a.base_port);
    let mut children = Vec::new();
    for i in 0..a.nodes {
        let listen = format!("{}:{}", a.host, a.base_port + i as u16);
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("serve")
            .arg("--listen")
            .arg(&listen)
            .arg("--data-dir")
            .arg(a.data_dir.join(format!("n{i}")));
        if i > 0 {
            cmd.arg("--join").arg(&first);
        }
        if let Some((_, nodes)) = &web {
            cmd.arg("--http").arg(&nodes[i]);
        }
        cmd.args([
            "--successors".into(),
            t.successors.to_string(),
            "--replicas".into(),
            t.replicas.to_string(),
            "--virtual".into(),
            t.virtual_nodes.to_string(),
            "--stabilize-ms".into(),
            t.stabilize_ms.to_string(),
            "--fix-fingers-ms".into(),
            t.fix_fingers_ms.to_string(),
            "--check-predecessor-ms".into(),
            t.check_predecessor_ms.to_string(),
            "--rpc-timeout-ms".into(),
            t.rpc_timeout_ms.to_string(),
            "--failure-strikes".into(),
            t.failure_strikes.to_string(),
            "--sync-ms".into(),
            t.sync_ms.to_string(),
            "--read-try-ms".into(),
            t.read_try_ms.to_string(),
            "--tombstone-grace-ms".into(),
            t.tombstone_grace_ms.to_string(),
            "--op-timeout-ms".into(),
            t.op_timeout_ms.to_string(),
            "--max-frame-bytes".into(),
            t.max_frame_bytes.to_string(),
            "--peer-idle-timeout-ms".into(),
            t.peer_idle_timeout_ms.to_string(),
            "--log".into(),
            t.log.clone(),
            "--worker-threads".into(),
            server_kit::process::cluster_worker_threads(t.worker_threads, a.nodes).to_string(),
        ]);
        cmd.args(t.client_limits.to_args());
        cmd.args(peer_auth.to_args());
        cmd.arg("--id-binding").arg(t.id_binding.as_str());
        cmd.args(t.acl.to_args());
        cmd.args(tls_flags.to_args());
        cmd.arg("--lookup").arg(match t.lookup {
            LookupArg::Iterative => "iterative",
            LookupArg::Recursive => "recursive",
        });
        let child = cmd.spawn().with_context(|| format!("starting node {i}"))?;
        children.push((listen.clone(), child));
        if i == 0 {
            // The others join through the first: wait until it listens.
            if !wait_listening(&mut children[0], tls.as_ref())? {
                stop_all(&mut children);
                bail!("node 0 did not start on {listen} (see its log above); no node started");
            }
        }
    }
    // Report every node that did not come up; fail if none did.
    let mut started = 1;
    for (i, child) in children.iter_mut().enumerate().skip(1) {
        if wait_listening(child, tls.as_ref())? {
            started += 1;
        } else {
            eprintln!("chord cluster: node {i} did not start on {}", child.0);
        }
    }
    let cli = match &tls_flags.tls_ca {
        Some(ca) if tls.is_some() => format!("redis-cli --tls --cacert {}", ca.display()),
        _ => "redis-cli".to_string(),
    };
    println!(
        "chord cluster: {started} of {} nodes on {}:{}..{}; try: {cli} -p {} CHORD.INFO; Ctrl-C stops them",
        a.nodes,
        a.host,
        a.base_port,
        a.base_port + a.nodes as u16 - 1,
        a.base_port
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (_web_stop, web_stopped) = watch::channel(false);
    let all_died = rt.block_on(async {
        if let Some((listener, nodes)) = web {
            let addr = listener.local_addr()?;
            server_kit::http::serve_std(listener, crate::web::cluster_router(&nodes), web_stopped)?;
            println!(
                "chord cluster: ring view http://{addr}/; node i serves /metrics on port {} + i",
                addr.port() + 1
            );
        }
        let mut watch = tokio::time::interval(Duration::from_millis(500));
        let mut reported = vec![false; children.len()];
        let mut stop = std::pin::pin!(server_kit::shutdown_signal()?);
        loop {
            tokio::select! {
                _ = &mut stop => return anyhow::Ok(false),
                _ = watch.tick() => {}
            }
            // A node that died is reported once; when all have, stop.
            for (i, (listen, c)) in children.iter_mut().enumerate() {
                if !reported[i]
                    && let Ok(Some(status)) = c.try_wait()
                {
                    eprintln!("chord cluster: node {i} on {listen} exited: {status}");
                    reported[i] = true;
                }
            }
            if reported.iter().all(|r| *r) {
                return anyhow::Ok(true);
            }
        }
    })?;
    stop_all(&mut children);
    if all_died {
        bail!("every node of the cluster exited");
    }
    Ok(())
}

/// Waits up to 10 s until a started node accepts connections; `false` if
/// it exited first or never listened.
fn wait_listening(
    child: &mut (String, std::process::Child),
    tls: Option<&server_kit::tls::Tls>,
) -> anyhow::Result<bool> {
    let addr = resolve(&child.0)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // An exited node failed, even if something else answers on its port.
        if child.1.try_wait()?.is_some() {
            return Ok(false);
        }
        if answers_ping(&addr, tls) {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a Redis `PING` to `addr` gets `+PONG` (or `-NOAUTH`, from a
/// node with a users file and no `default` user): the node itself is up,
/// not just something listening on its port. Over TLS when the cluster
/// runs with it.
fn answers_ping(addr: &std::net::SocketAddr, tls: Option<&server_kit::tls::Tls>) -> bool {
    use std::io::{Read, Write};
    fn ping(s: &mut (impl Read + Write)) -> bool {
        let mut reply = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok()
            && s.flush().is_ok()
            && s.read_exact(&mut reply).is_ok()
            && (&reply == b"+PONG\r\n" || &reply == b"-NOAUTH")
    }
    if let Some(tls) = tls {
        return tls
            .connect_blocking(addr, Duration::from_millis(500))
            .is_ok_and(|mut s| ping(&mut s));
    }
    let Ok(mut s) = std::net::TcpStream::connect_timeout(addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    ping(&mut s)
}

/// Runs `chord tls-certs`: writes a local test CA and certificates and
/// prints the flags to use them with.
pub fn tls_certs(args: server_kit::tls::CertsArgs) -> anyhow::Result<()> {
    print!("{}", args.run()?);
    Ok(())
}

/// Kills every node and waits for them.
fn stop_all(children: &mut [(String, std::process::Child)]) {
    for (_, c) in children.iter_mut() {
        let _ = c.kill();
    }
    for (_, c) in children.iter_mut() {
        let _ = c.wait();
    }
}
