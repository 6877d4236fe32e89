//! The `serve` and `cluster` subcommands, shared by the `bayou` binary and
//! this crate's `bayou-node` binary (which the integration tests run).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use bayou_core::ServerId;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

use crate::node::{ClockMode, Config, Node};
use crate::{peer, server};

/// `bayou serve`: one replica.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// This replica's id (ASCII letters and digits).
    #[arg(long)]
    pub id: String,
    /// Address for Redis clients and for peers, e.g. 127.0.0.1:7001.
    #[arg(long)]
    pub listen: String,
    /// Data directory (created if missing; refused if it holds anything else).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Another replica, as ID=HOST:PORT (its --listen address). Repeatable.
    #[arg(long = "peer", value_name = "ID=ADDR")]
    pub peers: Vec<String>,
    /// The founder's id: the replica with this id is the first primary
    /// (it commits on receipt until it hands off) and records itself as
    /// the first member on a fresh data directory. Required unless the
    /// replica joins (--join) or has joined (its data directory holds its
    /// creation).
    #[arg(long)]
    pub primary: Option<String>,
    /// Join a running cluster: ask the replica at this address (any
    /// member, its --listen address) to sponsor this one with a creation
    /// write, then start with it as the first peer. Only on a fresh data
    /// directory; after that the directory remembers the creation.
    #[arg(long, value_name = "SPONSOR_ADDR")]
    pub join: Option<String>,
    /// Serve Prometheus metrics (/metrics), a health check (/healthz) and
    /// the live web view (/) over HTTP on this address, e.g. 127.0.0.1:9001.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Another replica's --http address, as ID=HOST:PORT, so the web view
    /// shows its log too. Repeatable.
    #[arg(long = "peer-http", value_name = "ID=ADDR")]
    pub peer_http: Vec<String>,
    #[allow(missing_docs)]
    #[command(flatten)]
    pub signing: crate::keys::SigningFlags,
    #[allow(missing_docs)]
    #[command(flatten)]
    pub tuning: Tuning,
}

/// Flags shared by `serve` and `cluster`.
#[derive(Debug, Clone, clap::Args)]
pub struct Tuning {
    /// Anti-entropy with a random peer every this many milliseconds (0: only
    /// on BAYOU.SYNC).
    #[arg(long, default_value_t = 500)]
    pub sync_interval_ms: u64,
    /// Accept-stamps from the logical clock alone (1, 2, 3…) instead of
    /// wall-clock milliseconds: easier to read in BAYOU.LOG.
    #[arg(long)]
    pub logical_clock: bool,
    /// Largest peer protocol frame, in bytes.
    #[arg(long, default_value_t = crate::wire::DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,
    /// Most writes in one anti-entropy frame.
    #[arg(long, default_value_t = 1024)]
    pub items_per_frame: usize,
    /// Time limit of one anti-entropy session, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub session_timeout_ms: u64,
    /// Time limit to connect to a peer, in milliseconds.
    #[arg(long, default_value_t = 1_000)]
    pub connect_timeout_ms: u64,
    /// Keep at most this many committed writes in the log; older ones are
    /// discarded at the next checkpoint, and a replica that still lacks
    /// them catches up by full-state transfer.
    #[arg(long, default_value_t = bayou_core::Retention::default().writes)]
    pub retain_writes: u64,
    /// Keep at most about this many bytes of committed writes in the log.
    #[arg(long, default_value_t = bayou_core::Retention::default().bytes)]
    pub retain_bytes: u64,
    /// Take a checkpoint of the committed database (and truncate the log)
    /// once this many writes committed since the last one, or an eighth of
    /// the database's key count if that is larger.
    #[arg(long, default_value_t = bayou_core::Retention::default().checkpoint_every)]
    pub checkpoint_every: u64,
    /// Threads for networking and the replica: 0 for one per core, 1 for a
    /// single-threaded runtime. Storage always has a thread of its own.
    #[arg(long, default_value_t = 0)]
    pub worker_threads: usize,
    /// Client connection limits.
    #[command(flatten)]
    pub client_limits: server_kit::limits::ClientLimitFlags,
    /// Peer authentication.
    #[command(flatten)]
    pub peer_auth: server_kit::peer_auth::PeerAuthFlags,
    /// Client users and permissions (`--acl-file`).
    #[command(flatten)]
    pub acl: server_kit::acl::AclFlags,
    /// TLS for clients and peers (off unless --tls-cert is given).
    #[command(flatten)]
    pub tls: server_kit::tls::TlsFlags,
}

/// `bayou cluster`: a whole local cluster in one process.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// How many replicas (1 to 26): P, the primary, then A, B, C…
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// P listens on this port, the others on the next ones.
    #[arg(long, default_value_t = 7000)]
    pub base_port: u16,
    /// Host to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Parent of the replicas' data directories (one subdirectory each).
    #[arg(long, default_value = "./cluster")]
    pub data_dir: PathBuf,
    /// Serve Prometheus metrics of every replica (/metrics), a health
    /// check (/healthz) and the live web view of all the replicas (/) over
    /// HTTP on this address, e.g. 127.0.0.1:9000.
    #[arg(long, value_name = "ADDR")]
    pub http: Option<String>,
    /// Serve TLS with a local test CA and certificates, made under
    /// DATA_DIR/tls on the first run (for --host, 127.0.0.1, localhost and
    /// ::1) and reused after.
    #[arg(long, conflicts_with = "tls_cert")]
    pub tls: bool,
    /// Sign every write with its accepting replica's key and verify it
    /// wherever it arrives: a key per replica in DATA_DIR/keys/ID.pem and
    /// their keyring in DATA_DIR/keys/keyring (created if missing).
    #[arg(long)]
    pub sign_writes: bool,
    #[allow(missing_docs)]
    #[command(flatten)]
    pub tuning: Tuning,
}

impl Tuning {
    fn apply(&self, c: &mut Config, tls: Option<&server_kit::tls::Tls>) -> anyhow::Result<()> {
        c.sync_interval_ms = self.sync_interval_ms;
        c.clock = if self.logical_clock {
            ClockMode::Logical
        } else {
            ClockMode::WallMillis
        };
        c.max_frame_bytes = self.max_frame_bytes.max(1024);
        c.items_per_frame = self.items_per_frame.max(1);
        c.session_timeout_ms = self.session_timeout_ms;
        c.connect_timeout_ms = self.connect_timeout_ms;
        c.retention = bayou_core::Retention {
            writes: self.retain_writes,
            bytes: self.retain_bytes,
            checkpoint_every: self.checkpoint_every.max(1),
        };
        c.client_limits = server_kit::ClientLimits::from_flags(&self.client_limits)?;
        c.cluster_secret = self.peer_auth.load()?;
        c.tls = tls.cloned();
        Ok(())
    }
}

/// The cluster secret `bayou cluster` makes in its data directory when
/// `--cluster-secret-file` is not given; a `bayou serve` joining the local
/// cluster passes this file.
pub const CLUSTER_SECRET_FILE: &str = "cluster.secret";

fn server_id(s: &str) -> anyhow::Result<ServerId> {
    ServerId::new(s).with_context(|| format!("bad replica id {s:?}"))
}

impl ServeArgs {
    /// The replica configuration these flags describe.
    pub fn config(&self) -> anyhow::Result<Config> {
        let id = server_id(&self.id)?;
        let primary = self.primary.as_deref().map(server_id).transpose()?;
        let joined = crate::member::Creation::load(&self.data_dir)?.is_some();
        if primary.is_none() && self.join.is_none() && !joined {
            bail!("--primary is required unless the replica joins a cluster (--join SPONSOR_ADDR)");
        }
        if self.join.is_some() && primary.as_ref() == Some(&id) {
            bail!("--join: a joining replica is not the founder (--primary {id})");
        }
        let mut c = Config::new(
            id.clone(),
            self.listen.clone(),
            self.data_dir.clone(),
            primary,
        );
        let mut peers = BTreeMap::new();
        for p in &self.peers {
            let Some((pid, addr)) = p.split_once('=') else {
                bail!("--peer {p:?}: expected ID=HOST:PORT");
            };
            let pid = server_id(pid)?;
            if pid == id {
                bail!("--peer {p:?} names this replica itself");
            }
            if peers.insert(pid.clone(), addr.to_string()).is_some() {
                bail!("--peer {pid} given twice");
            }
        }
        c.peers = peers;
        let tls = self.tuning.tls.load()?;
        self.tuning.apply(&mut c, tls.as_ref())?;
        c.acl = self.tuning.acl.load(server::TABLE)?;
        let permissions = crate::keys::permissions(c.acl.as_ref());
        c.authority = crate::keys::authority(&id, &self.signing, permissions.as_ref())?;
        Ok(c)
    }

    /// The peers' HTTP addresses (`--peer-http`), as (id, address).
    pub fn peer_http(&self) -> anyhow::Result<Vec<(String, String)>> {
        self.peer_http
            .iter()
            .map(|p| match p.split_once('=') {
                Some((id, addr)) => Ok((server_id(id)?.to_string(), addr.to_string())),
                None => bail!("--peer-http {p:?}: expected ID=HOST:PORT"),
            })
            .collect()
    }
}

/// Binds the `--http` address, if given, before anything else starts.
async fn bind_http(addr: Option<&str>) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        Some(a) => Ok(Some(server_kit::http::bind(a).await?)),
        None => Ok(None),
    }
}

impl ClusterArgs {
    /// The configurations of the cluster's replicas.
    pub fn configs(&self) -> anyhow::Result<Vec<Config>> {
        if !(1..=26).contains(&self.replicas) {
            bail!("--replicas must be between 1 and 26");
        }
        if self.base_port as usize + self.replicas > 65536 {
            bail!("--base-port too high for {} replicas", self.replicas);
        }
        let ids: Vec<String> = std::iter::once("P".to_string())
            .chain(('A'..='Z').filter(|c| *c != 'P').map(|c| c.to_string()))
            .take(self.replicas)
            .collect();
        let addr = |i: usize| format!("{}:{}", self.host, self.base_port as usize + i);
        let primary = server_id("P")?;
        // A local cluster authenticates its peers by default: a secret in
        // its data directory, made on first start, unless one is given.
        let secret = match self.tuning.peer_auth.load()? {
            Some(s) => s,
            None => {
                std::fs::create_dir_all(&self.data_dir)
                    .with_context(|| format!("cannot create {}", self.data_dir.display()))?;
                server_kit::peer_auth::ClusterSecret::load_or_create(
                    &self.data_dir.join(CLUSTER_SECRET_FILE),
                )?
            }
        };
        // One users file for the whole cluster: one reload on SIGHUP.
        let acl = self.tuning.acl.load(server::TABLE)?;
        // The certificates are loaded once and shared by the replicas.
        let tls = self.tls_flags()?.load()?;
        let mut configs = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let mut c = Config::new(
                server_id(id)?,
                addr(i),
                self.data_dir.join(id),
                Some(primary.clone()),
            );
            for (j, other) in ids.iter().enumerate() {
                if j != i {
                    c.peers.insert(server_id(other)?, addr(j));
                }
            }
            self.tuning.apply(&mut c, tls.as_ref())?;
            c.cluster_secret = Some(secret.clone());
            c.acl = acl.clone();
            configs.push(c);
        }
        if self.sign_writes {
            let ids: Vec<ServerId> = configs.iter().map(|c| c.id.clone()).collect();
            let permissions = crate::keys::permissions(acl.as_ref());
            let authorities =
                crate::keys::cluster_authorities(&self.data_dir, &ids, permissions.as_ref())?;
            for (c, a) in configs.iter_mut().zip(authorities) {
                c.authority = Some(a);
            }
        }
        Ok(configs)
    }

    /// The TLS flags the replicas run with: with `--tls`, the certificates in
    /// DATA_DIR/tls, made there first if they are not; otherwise `--tls-cert`
    /// … as given.
    pub fn tls_flags(&self) -> anyhow::Result<server_kit::tls::TlsFlags> {
        self.tuning
            .tls
            .for_cluster(self.tls, &self.data_dir, &self.host)
            .with_context(|| {
                format!(
                    "bayou cluster --tls: {}",
                    self.data_dir.join("tls").display()
                )
            })
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`): the kit's
/// [`server_kit::init_tracing`].
pub fn init_tracing() {
    server_kit::init_tracing(None);
}

fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(server_kit::runtime(threads)?)
}

/// A receiver that flips to `true` on SIGINT or SIGTERM (the kit's
/// [`server_kit::shutdown_signal`]).
fn shutdown_signal() -> anyhow::Result<watch::Receiver<bool>> {
    let signal = server_kit::shutdown_signal()?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let which = signal.await;
        info!("{which}: shutting down");
        let _ = tx.send(true);
    });
    Ok(rx)
}

/// A replica that is running: what [`start`] returns.
pub struct Running {
    /// The replica's shared handle.
    pub node: Arc<Node>,
    storage: std::thread::JoinHandle<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Opens the data directory, binds the listener and starts serving clients,
/// peers and periodic anti-entropy until `shutdown` flips.
pub async fn start(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<Running> {
    let id = config.id.clone();
    let listen = config.listen.clone();
    let dir = config.data_dir.clone();
    let (node, storage) = Node::start(config)
        .with_context(|| format!("replica {id}: cannot open {}", dir.display()))?;
    let listener = match TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            node.shutdown().await;
            return Err(e).with_context(|| format!("replica {id}: cannot listen on {listen}"));
        }
    };
    let tls = node.config.tls.is_some();
    let primary = node.primary().map(|p| p.to_string()).unwrap_or_default();
    info!(%id, %listen, %primary, standing = %node.standing().name(), tls, "serving");
    let tasks = vec![
        tokio::spawn(server::accept_loop(
            node.clone(),
            listener,
            shutdown.clone(),
        )),
        tokio::spawn(peer::anti_entropy_loop(node.clone(), shutdown)),
    ];
    Ok(Running {
        node,
        storage,
        tasks,
    })
}

impl Running {
    /// Persists what is pending and stops.
    pub async fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.node.shutdown().await;
        let storage = self.storage;
        let _ = tokio::task::spawn_blocking(move || storage.join()).await;
        info!(id = %self.node.config.id, "stopped");
    }
}

/// Logs whether clients authenticate, and reloads the users file (if any)
/// on SIGHUP.
fn serve_users(config: &Config) -> anyhow::Result<()> {
    server_kit::acl::log_mode(config.acl.as_deref(), &config.listen);
    if let Some(acl) = &config.acl {
        server_kit::acl::reload_on_hangup(acl.clone())?;
    }
    Ok(())
}

/// `--join`: asks the sponsor for a creation write, unless the data
/// directory already holds one (a restart). Nothing is written here: the
/// node records the creation once its store owns the directory.
async fn join(config: &mut Config, sponsor: &str) -> anyhow::Result<()> {
    if let Some(c) = crate::member::Creation::load(&config.data_dir)? {
        info!(id = %config.id, created = %c.created, "already joined (the data directory holds the creation); --join ignored");
        return Ok(());
    }
    let dir = &config.data_dir;
    if dir.join(server_kit::datadir::IDENTITY_FILE).exists() {
        bail!(
            "--join: {} already holds replica data; joining needs a fresh data directory",
            dir.display()
        );
    }
    let limit = std::time::Duration::from_millis(config.session_timeout_ms.max(1_000));
    let created = crate::member::request_creation(
        sponsor,
        &config.id,
        &config.listen,
        config.tls.as_ref(),
        limit,
    )
    .await?;
    info!(id = %config.id, %sponsor, %created, "joined: the sponsor accepted the creation write");
    config.joined = Some(crate::member::Creation {
        created,
        sponsor_addr: sponsor.to_string(),
    });
    Ok(())
}

/// Runs `bayou serve` until SIGINT or SIGTERM, or until the replica must
/// leave: its retirement is held by another replica (exit 0), or its id
/// turned out to belong to another replica (an error).
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = args.config()?;
    let peer_http = args.peer_http()?;
    runtime(args.tuning.worker_threads)?.block_on(async move {
        let mut shutdown = shutdown_signal()?;
        if let Some(sponsor) = &args.join {
            join(&mut config, sponsor).await?;
        }
        serve_users(&config)?;
        let http = bind_http(args.http.as_deref()).await?;
        let running = start(config, shutdown.clone()).await?;
        if let Some(listener) = http {
            crate::web::serve(
                listener,
                vec![running.node.clone()],
                peer_http,
                shutdown.clone(),
            );
        }
        let node = running.node.clone();
        let left = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => None,
            why = node.left() => Some(why),
        };
        running.stop().await;
        match left {
            Some(Err(why)) => bail!("{why}"),
            Some(Ok(why)) => {
                info!(id = %node.config.id, "{why}");
                Ok(())
            }
            None => Ok(()),
        }
    })
}

/// Runs `bayou cluster` until SIGINT or SIGTERM.
pub fn cluster(args: ClusterArgs) -> anyhow::Result<()> {
    let configs = args.configs()?;
    runtime(args.tuning.worker_threads)?.block_on(async move {
        let mut shutdown = shutdown_signal()?;
        serve_users(&configs[0])?;
        let http = bind_http(args.http.as_deref()).await?;
        let mut running: Vec<Running> = Vec::new();
        for c in configs.clone() {
            match start(c, shutdown.clone()).await {
                Ok(r) => running.push(r),
                Err(e) => {
                    for r in running {
                        r.stop().await;
                    }
                    return Err(e);
                }
            }
        }
        println!("bayou cluster: {} replicas, primary P", configs.len());
        let web = match http {
            Some(listener) => {
                let addr = listener.local_addr()?;
                let nodes = running.iter().map(|r| r.node.clone()).collect();
                crate::web::serve(listener, nodes, Vec::new(), shutdown.clone());
                Some(addr)
            }
            None => None,
        };
        for c in &configs {
            println!(
                "  {:<2} {:<21} data {}{}",
                c.id.as_str(),
                c.listen,
                c.data_dir.display(),
                if c.primary.as_ref() == Some(&c.id) {
                    "  (primary)"
                } else {
                    ""
                }
            );
        }
        let port = |c: &Config| c.listen.rsplit(':').next().unwrap_or("").to_string();
        let some = configs.get(1).unwrap_or(&configs[0]);
        let cli = match &configs[0].tls {
            Some(_) => {
                let flags = args.tls_flags()?;
                let ca = flags.tls_ca.unwrap_or_default();
                println!("TLS on (CA {})", ca.display());
                format!("redis-cli --tls --cacert {}", ca.display())
            }
            None => "redis-cli".to_string(),
        };
        let secret = match &args.tuning.peer_auth.cluster_secret_file {
            Some(path) => path.clone(),
            None => args.data_dir.join(CLUSTER_SECRET_FILE),
        };
        println!("peers authenticate with the secret in {}", secret.display());
        if args.sign_writes {
            println!(
                "writes signed (keys and keyring in {})",
                args.data_dir.join("keys").display()
            );
        }
        println!("connect with any Redis client, e.g.:");
        println!("  {cli} -p {} SET x 1", port(some));
        println!("  {cli} -p {} BAYOU.LOG", port(&configs[0]));
        if let Some(addr) = web {
            println!("web view http://{addr}/, metrics http://{addr}/metrics");
        }
        println!("stop with Ctrl-C");
        let _ = shutdown.wait_for(|s| *s).await;
        for r in running {
            r.stop().await;
        }
        Ok(())
    })
}

/// Runs `bayou tls-certs`: writes a local test CA and certificates and
/// prints the flags to use them with.
pub fn tls_certs(args: server_kit::tls::CertsArgs) -> anyhow::Result<()> {
    print!("{}", args.run()?);
    Ok(())
}
