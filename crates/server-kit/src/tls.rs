//! Optional TLS for clients and peers, on the one port both runtimes serve
//! (rustls with the `ring` provider, certificates from PEM files).
//!
//! # Design
//!
//! * **Off by default.** A node serves TLS when given `--tls-cert`,
//!   `--tls-key` and `--tls-ca` ([`TlsFlags`]). Then *every* connection on
//!   its port is TLS: the server does the handshake first ([`accept`],
//!   under [`HANDSHAKE_TIMEOUT`]) and only then tells a peer from a Redis
//!   client with the magic prefix, on the decrypted bytes
//!   ([`crate::open`]). A plain-text client on a TLS port fails the
//!   handshake and is closed (logged at debug level); nothing else is
//!   affected.
//! * **One stream type.** [`Stream`] is an enum of a plain `TcpStream` and
//!   the two TLS streams; both nodes use it for client and peer
//!   connections. A plain connection costs one `match` per read or write,
//!   no allocation and no indirection (the TLS streams are boxed, so the
//!   enum stays the size of a `TcpStream` plus a tag). [`Stream::into_split`]
//!   splits a plain stream into tokio's owned halves as before, and a TLS
//!   stream with [`tokio::io::split`] (a TLS session cannot be shared
//!   without a lock).
//! * **Peers are mutual TLS.** An outbound peer connection ([`connect`])
//!   verifies the peer's server certificate against `--tls-ca`, for the
//!   host part of the peer's address (an IP address must be an IP SAN of
//!   the certificate), and presents this node's own certificate as its
//!   client certificate. On the accepting side a connection that turns out
//!   to be a peer must have presented a certificate signed by `--tls-ca`,
//!   or it is closed ([`accept_connection`]); so a node with certificates
//!   from another CA can neither push to nor pull from this one. (With
//!   `--tls-auth-clients no` the server asks no one for a certificate, and
//!   peers are then checked only by the connecting side.)
//! * **Clients** are asked for a certificate as Redis' `tls-auth-clients`
//!   says ([`AuthClients`]): `no` never asks, `optional` (the default)
//!   verifies one against `--tls-ca` when the client presents one, `yes`
//!   refuses a client without one.
//! * **Connections in the handshake are not yet clients**: the
//!   [`crate::ClientGate`] counts a connection once its handshake is done;
//!   the handshake timeout bounds how long one can sit unencrypted.
//! * **Test certificates**: [`generate`] makes a local CA and a server and
//!   a client certificate with `rcgen` (`bayou tls-certs`, `chord
//!   tls-certs`, [`CertsArgs`]).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};
use tracing::debug;

use crate::Opened;
use crate::limits::{ClientGate, ClientSlot};

/// How long the server waits for a TLS handshake to complete.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The hosts a generated server certificate names when no `--host` is
/// given.
pub const DEFAULT_HOSTS: &[&str] = &["127.0.0.1", "localhost", "::1"];

/// Whether clients must present a certificate (Redis' `tls-auth-clients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AuthClients {
    /// Never ask a client for a certificate.
    No,
    /// Verify a client's certificate against `--tls-ca` if it presents
    /// one; a client without one is served.
    #[default]
    Optional,
    /// Refuse a client without a certificate signed by `--tls-ca`.
    Yes,
}

impl AuthClients {
    /// The flag's value as typed.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthClients::No => "no",
            AuthClients::Optional => "optional",
            AuthClients::Yes => "yes",
        }
    }
}

/// The TLS flags of both node binaries (flattened into each one's clap
/// arguments, like [`crate::limits::ClientLimitFlags`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, clap::Args)]
pub struct TlsFlags {
    /// Serve TLS (to clients and peers, on the one port) with this
    /// certificate chain (PEM); needs --tls-key and --tls-ca.
    #[arg(long, value_name = "PATH", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The CA certificate(s) (PEM) that signed the peers' certificates:
    /// peers verify each other with it, and a client's certificate is
    /// verified against it.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,
    /// Whether clients must present a certificate signed by --tls-ca
    /// (as Redis' tls-auth-clients).
    #[arg(long, value_enum, value_name = "no|optional|yes", default_value_t = AuthClients::Optional)]
    pub tls_auth_clients: AuthClients,
}

impl TlsFlags {
    /// Whether the flags turn TLS on.
    pub fn enabled(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// Loads the certificates the flags name; `None` when TLS is off.
    pub fn load(&self) -> Result<Option<Tls>, TlsError> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => {
                Tls::load(cert, key, ca, self.tls_auth_clients).map(Some)
            }
            _ => Err(TlsError::Incomplete),
        }
    }

    /// The flags as command-line arguments, to pass on to a child process.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        for (flag, path) in [
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
            ("--tls-ca", &self.tls_ca),
        ] {
            if let Some(p) = path {
                args.push(flag.to_string());
                args.push(p.display().to_string());
            }
        }
        args.push("--tls-auth-clients".into());
        args.push(self.tls_auth_clients.as_str().into());
        args
    }

    /// The TLS flags a `cluster` command's nodes run with: with its
    /// `--tls` (`local`), those naming the certificates in
    /// `DATA_DIR/tls` ([`TlsFlags::for_local_cluster`]); otherwise these
    /// flags as given.
    pub fn for_cluster(
        &self,
        local: bool,
        data_dir: &Path,
        host: &str,
    ) -> Result<TlsFlags, TlsError> {
        if local {
            self.for_local_cluster(&data_dir.join("tls"), host)
        } else {
            Ok(self.clone())
        }
    }

    /// What a local cluster's `--tls` runs with: the certificates in
    /// `dir`, made there first (for `host` and the [`DEFAULT_HOSTS`]) if
    /// any is missing, and reused after, so clients keep trusting the same
    /// CA across restarts.
    pub fn for_local_cluster(&self, dir: &Path, host: &str) -> Result<TlsFlags, TlsError> {
        if CERT_FILES.iter().any(|f| !dir.join(f).exists()) {
            let mut hosts = vec![host.to_string()];
            for h in DEFAULT_HOSTS {
                if !hosts.iter().any(|x| x == h) {
                    hosts.push(h.to_string());
                }
            }
            generate(dir, &hosts, false)?;
        }
        Ok(self.in_dir(dir))
    }

    /// The flags naming the certificates `generate` wrote to `dir`, with
    /// these flags' `--tls-auth-clients`.
    pub fn in_dir(&self, dir: &Path) -> TlsFlags {
        TlsFlags {
            tls_cert: Some(dir.join(SERVER_CERT)),
            tls_key: Some(dir.join(SERVER_KEY)),
            tls_ca: Some(dir.join(CA_CERT)),
            tls_auth_clients: self.tls_auth_clients,
        }
    }
}

/// Why TLS could not be set up, or test certificates not made.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// --tls-cert, --tls-key and --tls-ca go together.
    #[error("--tls-cert, --tls-key and --tls-ca must be given together")]
    Incomplete,
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file is not PEM, or has no item of the kind expected.
    #[error("{}: {message}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The private key is not the certificate's.
    #[error("{} is not the private key of the certificate in {}", key.display(), cert.display())]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused a certificate or key.
    #[error("{}: {message}", path.display())]
    Rejected {
        /// The file.
        path: PathBuf,
        /// rustls' reason.
        message: String,
    },
    /// `tls-certs` would overwrite a file.
    #[error("{} exists (pass --force to overwrite)", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// `tls-certs` could not write a file.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// rcgen could not make a certificate (e.g. a host that is neither an
    /// IP address nor a DNS name).
    #[error("cannot make the certificates: {0}")]
    Generate(String),
}

/// The loaded TLS set-up of a node: the acceptor for its port and the
/// connector for its outbound peer connections.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    client_config: Arc<ClientConfig>,
    auth_clients: AuthClients,
    files: [String; 3],
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.files[0])
            .field("key", &self.files[1])
            .field("ca", &self.files[2])
            .field("auth_clients", &self.auth_clients)
            .finish()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            message: format!("not a valid PEM file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            message: "no certificate in it (expected a PEM \"BEGIN CERTIFICATE\" block)".into(),
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        message: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no private key in it (expected a PEM \"BEGIN PRIVATE KEY\" block)".into()
            }
            e => format!("not a valid PEM file: {e}"),
        },
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls error about a key or certificate, as [`TlsError`].
fn rejected(e: rustls::Error, cert: &Path, key: &Path) -> TlsError {
    match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        },
        e => TlsError::Rejected {
            path: key.to_owned(),
            message: e.to_string(),
        },
    }
}

impl Tls {
    /// Loads this node's certificate chain and key and the CA, and builds
    /// the server and client configurations.
    pub fn load(cert: &Path, key: &Path, ca: &Path, auth: AuthClients) -> Result<Tls, TlsError> {
        let chain = certificates(cert)?;
        let key_der = private_key(key)?;
        let mut roots = RootCertStore::empty();
        for c in certificates(ca)? {
            roots.add(c).map_err(|e| TlsError::Rejected {
                path: ca.to_owned(),
                message: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let roots = Arc::new(roots);
        let provider = provider();
        let versions = |e: rustls::Error| TlsError::Rejected {
            path: cert.to_owned(),
            message: e.to_string(),
        };
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(versions)?;
        let server = match auth {
            AuthClients::No => server.with_no_client_auth(),
            AuthClients::Optional | AuthClients::Yes => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
                let verifier = match auth {
                    AuthClients::Optional => verifier.allow_unauthenticated(),
                    _ => verifier,
                };
                let verifier = verifier.build().map_err(|e| TlsError::Rejected {
                    path: ca.to_owned(),
                    message: e.to_string(),
                })?;
                server.with_client_cert_verifier(verifier)
            }
        };
        let server = server
            .with_single_cert(chain.clone(), key_der.clone_key())
            .map_err(|e| rejected(e, cert, key))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(versions)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der)
            .map_err(|e| rejected(e, cert, key))?;
        let client = Arc::new(client);
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(client.clone()),
            client_config: client,
            auth_clients: auth,
            files: [cert, key, ca].map(|p| p.display().to_string()),
        })
    }

    /// `--tls-auth-clients`.
    pub fn auth_clients(&self) -> AuthClients {
        self.auth_clients
    }

    /// The settings `CONFIG GET tls-*` reports, named as Redis names them.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("tls-cert-file", self.files[0].clone()),
            ("tls-key-file", self.files[1].clone()),
            ("tls-ca-cert-file", self.files[2].clone()),
            ("tls-auth-clients", self.auth_clients.as_str().into()),
        ]
    }

    /// The TLS handshake of an accepted connection, under
    /// [`HANDSHAKE_TIMEOUT`].
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<Stream> {
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await {
            Ok(Ok(s)) => Ok(Stream::Server(Box::new(s))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            )),
        }
    }

    /// The TLS handshake of an outbound peer connection to `addr`
    /// (`HOST:PORT`), verifying the peer's certificate for `HOST`.
    pub async fn connect(&self, tcp: TcpStream, addr: &str) -> io::Result<Stream> {
        let name = server_name(addr)?;
        let s = self.connector.connect(name, tcp).await?;
        Ok(Stream::Client(Box::new(s)))
    }

    /// A blocking TLS connection to `addr`, verified as [`Tls::connect`]
    /// does (for a launcher's readiness check, outside any runtime).
    pub fn connect_blocking(
        &self,
        addr: &SocketAddr,
        timeout: Duration,
    ) -> io::Result<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
        let tcp = std::net::TcpStream::connect_timeout(addr, timeout)?;
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        let name = server_name(&addr.to_string())?;
        let conn = rustls::ClientConnection::new(self.client_config.clone(), name)
            .map_err(io::Error::other)?;
        Ok(rustls::StreamOwned::new(conn, tcp))
    }
}

/// The name to verify a peer's certificate for: the host part of
/// `HOST:PORT` (`[v6]:PORT` too); an IP address is matched against the
/// certificate's IP SANs, a name against its DNS names.
fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = match addr.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host:?} cannot name a TLS server: {e}"),
        )
    })
}

/// The handshake of a newly accepted connection when TLS is on (the plain
/// stream otherwise); `None`, after a debug log, when it failed, e.g. a
/// plain-text client on a TLS port.
pub async fn accept(tls: Option<&Tls>, tcp: TcpStream) -> Option<Stream> {
    let Some(tls) = tls else {
        return Some(Stream::Plain(tcp));
    };
    let remote = tcp.peer_addr().ok();
    match tls.accept(tcp).await {
        Ok(s) => Some(s),
        Err(e) => {
            debug!(?remote, "TLS handshake failed: {e}");
            None
        }
    }
}

/// A newly accepted connection made ready to serve: the TLS handshake
/// ([`accept`]), then [`ClientGate::open`] on the decrypted stream; a peer
/// that did not present a certificate signed by the CA (when the server
/// asks for one) is closed here. `None` when the connection is to be
/// dropped.
pub async fn accept_connection(
    gate: &Arc<ClientGate>,
    tls: Option<&Tls>,
    tcp: TcpStream,
    magic: &[u8],
    magic_timeout: Duration,
) -> Option<(Stream, Opened, Option<ClientSlot>)> {
    let mut stream = accept(tls, tcp).await?;
    let (opened, slot) = gate.open(&mut stream, magic, magic_timeout).await?;
    let asked = tls.is_some_and(|t| t.auth_clients != AuthClients::No);
    if matches!(opened, Opened::Peer(_)) && !stream.may_be_peer(asked) {
        debug!(
            remote = ?stream.peer_addr().ok(),
            "peer connection without a client certificate signed by --tls-ca: closed"
        );
        return None;
    }
    Some((stream, opened, slot))
}

/// Opens an outbound peer connection to `addr` (`HOST:PORT`): TCP with
/// `TCP_NODELAY`, then the TLS handshake when TLS is on. The caller puts
/// its own time limit around it.
pub async fn connect(tls: Option<&Tls>, addr: &str) -> io::Result<Stream> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(Stream::Plain(tcp)),
        Some(tls) => tls.connect(tcp, addr).await,
    }
}

/// The CA's certificate, one of the files [`generate`] writes (for
/// `--tls-ca`).
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key.
pub const CA_KEY: &str = "ca-key.pem";
/// The server (and peer) certificate, for `--tls-cert`.
pub const SERVER_CERT: &str = "server.pem";
/// Its key, for `--tls-key`.
pub const SERVER_KEY: &str = "server-key.pem";
/// A client certificate, for clients when `--tls-auth-clients yes`.
pub const CLIENT_CERT: &str = "client.pem";
/// Its key.
pub const CLIENT_KEY: &str = "client-key.pem";

/// The six files, in the order they are written.
pub const CERT_FILES: [&str; 6] = [
    CA_CERT,
    CA_KEY,
    SERVER_CERT,
    SERVER_KEY,
    CLIENT_CERT,
    CLIENT_KEY,
];

/// `bayou tls-certs` / `chord tls-certs`: a local test CA and certificates.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct CertsArgs {
    /// Directory to write ca.pem, ca-key.pem, server.pem, server-key.pem,
    /// client.pem and client-key.pem to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// A host name or IP address the server certificate is valid for
    /// (repeatable; default 127.0.0.1, localhost and ::1).
    #[arg(long = "host", value_name = "NAME_OR_IP")]
    pub hosts: Vec<String>,
    /// Overwrite files that exist.
    #[arg(long)]
    pub force: bool,
}

impl CertsArgs {
    /// Writes the files and returns what to tell the user: the files and
    /// the flags to use them with.
    pub fn run(&self) -> Result<String, TlsError> {
        let hosts = if self.hosts.is_empty() {
            DEFAULT_HOSTS.iter().map(|h| h.to_string()).collect()
        } else {
            self.hosts.clone()
        };
        generate(&self.out, &hosts, self.force)?;
        let d = self.out.display();
        Ok(format!(
            "wrote {files} in {d} (server certificate for {hosts})\n\
             serve with:\n  --tls-cert {d}/{SERVER_CERT} --tls-key {d}/{SERVER_KEY} --tls-ca {d}/{CA_CERT}\n\
             connect with:\n  redis-cli --tls --cacert {d}/{CA_CERT} -p PORT\n\
             and, if the server has --tls-auth-clients yes, --cert {d}/{CLIENT_CERT} --key {d}/{CLIENT_KEY}\n",
            files = CERT_FILES.join(", "),
            hosts = hosts.join(", "),
        ))
    }
}

fn generate_error(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// Makes a local CA (ECDSA P-256, self-signed) and, signed by it, a server
/// certificate for `hosts` (IP addresses become IP SANs, names DNS SANs)
/// usable for both server and client authentication (a node presents it
/// to its peers both ways), and a client certificate; writes the six
/// [`CERT_FILES`] to `dir`, keys with mode 0600. Refuses, writing nothing,
/// when one of them exists and not `force`.
pub fn generate(dir: &Path, hosts: &[String], force: bool) -> Result<(), TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    if hosts.iter().any(|h| h.trim().is_empty()) {
        return Err(TlsError::Generate("a --host is empty".into()));
    }
    if !force {
        for f in CERT_FILES {
            let path = dir.join(f);
            if path.exists() {
                return Err(TlsError::Exists { path });
            }
        }
    }
    let named = |cn: &str| {
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        dn
    };
    let ca_key = KeyPair::generate().map_err(generate_error)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(generate_error)?;
    // A name of its own per CA (from its public key), so a certificate from
    // another run's CA is an unknown issuer, not a bad signature, and the
    // two are told apart in a certificate viewer.
    let tag: String = ca_key.public_key_raw()[1..7]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    ca.distinguished_name = named(&format!("local test CA {tag} (tls-certs)"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(generate_error)?;
    let issuer = Issuer::new(ca, &ca_key);
    let leaf = |sans: Vec<String>, cn: &str, usages: Vec<ExtendedKeyUsagePurpose>| {
        let key = KeyPair::generate().map_err(generate_error)?;
        let mut params = CertificateParams::new(sans).map_err(|e| {
            TlsError::Generate(format!(
                "{e} (a --host must be an IP address or a DNS name)"
            ))
        })?;
        params.distinguished_name = named(cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &issuer).map_err(generate_error)?;
        Ok::<_, TlsError>((cert.pem(), key.serialize_pem()))
    };
    let (server_pem, server_key) = leaf(
        hosts.to_vec(),
        &hosts[0],
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )?;
    let (client_pem, client_key) = leaf(
        Vec::new(),
        "client",
        vec![ExtendedKeyUsagePurpose::ClientAuth],
    )?;
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let contents = [
        ca_cert.pem(),
        ca_key.serialize_pem(),
        server_pem,
        server_key,
        client_pem,
        client_key,
    ];
    for (name, text) in CERT_FILES.iter().zip(contents) {
        write_file(&dir.join(name), text.as_bytes(), name.ends_with("-key.pem"))?;
    }
    Ok(())
}

/// Writes `bytes` to `path`, readable by the owner only when `secret`
/// (also when the file existed with wider permissions).
fn write_file(path: &Path, bytes: &[u8], secret: bool) -> Result<(), TlsError> {
    use std::io::Write;
    let err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        if path.exists() {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        }
    }
    let mut f = options.open(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

/// A client or peer connection, plain or TLS.
#[derive(Debug)]
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, accepted by this node.
    Server(Box<server::TlsStream<TcpStream>>),
    /// TLS, opened by this node to a peer.
    Client(Box<client::TlsStream<TcpStream>>),
}

impl Stream {
    /// The underlying TCP connection.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Server(s) => s.get_ref().0,
            Stream::Client(s) => s.get_ref().0,
        }
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    /// Whether this is a TLS connection.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }

    /// Whether an accepted connection may serve as a peer: plain, or TLS
    /// where the remote presented a certificate the server verified
    /// against the CA, or TLS where the server asks no one for a
    /// certificate (`--tls-auth-clients no`, so `asked` is false).
    fn may_be_peer(&self, asked: bool) -> bool {
        match self {
            Stream::Plain(_) | Stream::Client(_) => true,
            Stream::Server(s) => {
                !asked
                    || s.get_ref()
                        .1
                        .peer_certificates()
                        .is_some_and(|c| !c.is_empty())
            }
        }
    }

    /// Splits the stream into a read half and a write half that can be
    /// used by two tasks: tokio's owned halves for plain TCP (as without
    /// TLS), [`tokio::io::split`] for TLS.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            tls => {
                let (r, w) = tokio::io::split(tls);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }
}

/// Calls `$call` on the pinned inner stream `$s` of whichever variant
/// `$self` is: the one `match` a plain connection pays per read or write.
macro_rules! delegate {
    ($self:ident, |$s:ident| $call:expr, $($variant:path),+) => {
        match $self.get_mut() {
            $($variant($s) => {
                let $s = Pin::new($s);
                $call
            })+
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(
            self,
            |s| s.poll_read(cx, buf),
            Stream::Plain,
            Stream::Server,
            Stream::Client
        )
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(
            self,
            |s| s.poll_write(cx, buf),
            Stream::Plain,
            Stream::Server,
            Stream::Client
        )
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(
            self,
            |s| s.poll_write_vectored(cx, bufs),
            Stream::Plain,
            Stream::Server,
            Stream::Client
        )
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Server(s) => s.is_write_vectored(),
            Stream::Client(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(
            self,
            |s| s.poll_flush(cx),
            Stream::Plain,
            Stream::Server,
            Stream::Client
        )
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(
            self,
            |s| s.poll_shutdown(cx),
            Stream::Plain,
            Stream::Server,
            Stream::Client
        )
    }
}

/// The read half of a [`Stream`] ([`Stream::into_split`]).
#[derive(Debug)]
pub enum ReadHalf {
    /// Plain TCP.
    Plain(OwnedReadHalf),
    /// TLS.
    Tls(tokio::io::ReadHalf<Stream>),
}

/// The write half of a [`Stream`] ([`Stream::into_split`]).
#[derive(Debug)]
pub enum WriteHalf {
    /// Plain TCP.
    Plain(OwnedWriteHalf),
    /// TLS.
    Tls(tokio::io::WriteHalf<Stream>),
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(
            self,
            |s| s.poll_read(cx, buf),
            ReadHalf::Plain,
            ReadHalf::Tls
        )
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(
            self,
            |s| s.poll_write(cx, buf),
            WriteHalf::Plain,
            WriteHalf::Tls
        )
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(
            self,
            |s| s.poll_write_vectored(cx, bufs),
            WriteHalf::Plain,
            WriteHalf::Tls
        )
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Plain(s) => s.is_write_vectored(),
            WriteHalf::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, |s| s.poll_flush(cx), WriteHalf::Plain, WriteHalf::Tls)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(
            self,
            |s| s.poll_shutdown(cx),
            WriteHalf::Plain,
            WriteHalf::Tls
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn hosts() -> Vec<String> {
        DEFAULT_HOSTS.iter().map(|h| h.to_string()).collect()
    }

    fn certs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), &hosts(), false).unwrap();
        dir
    }

    fn load(dir: &Path, auth: AuthClients) -> Tls {
        Tls::load(
            &dir.join(SERVER_CERT),
            &dir.join(SERVER_KEY),
            &dir.join(CA_CERT),
            auth,
        )
        .unwrap()
    }

    #[test]
    fn flags_pass_on_to_a_child_process_unchanged() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            tls: TlsFlags,
        }
        let parse = |args: Vec<String>| {
            <Cli as clap::Parser>::try_parse_from(std::iter::once("node".to_string()).chain(args))
                .map(|c| c.tls)
        };
        let off = parse(vec![]).unwrap();
        assert_eq!(off, TlsFlags::default());
        assert!(!off.enabled());
        assert!(off.load().unwrap().is_none());
        let on = TlsFlags::default().in_dir(Path::new("/certs"));
        let on = TlsFlags {
            tls_auth_clients: AuthClients::Yes,
            ..on
        };
        assert_eq!(parse(on.to_args()).unwrap(), on);
        assert_eq!(
            on.to_args(),
            [
                "--tls-cert",
                "/certs/server.pem",
                "--tls-key",
                "/certs/server-key.pem",
                "--tls-ca",
                "/certs/ca.pem",
                "--tls-auth-clients",
                "yes"
            ]
        );
        // A certificate without its key and CA is refused by clap.
        assert!(parse(vec!["--tls-cert".into(), "a.pem".into()]).is_err());
    }

    #[test]
    fn generated_files_load_and_keys_are_private() {
        let dir = certs();
        for f in CERT_FILES {
            let meta = std::fs::metadata(dir.path().join(f)).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o777;
                if f.ends_with("-key.pem") {
                    assert_eq!(mode, 0o600, "{f}");
                }
            }
            assert!(meta.len() > 100, "{f}");
        }
        let tls = load(dir.path(), AuthClients::Optional);
        assert_eq!(tls.auth_clients(), AuthClients::Optional);
        assert_eq!(tls.settings()[3], ("tls-auth-clients", "optional".into()));
    }

    #[test]
    fn generate_refuses_to_overwrite_without_force() {
        let dir = certs();
        let before = std::fs::read(dir.path().join(CA_CERT)).unwrap();
        let err = generate(dir.path(), &hosts(), false).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} exists (pass --force to overwrite)",
                dir.path().join(CA_CERT).display()
            )
        );
        assert_eq!(std::fs::read(dir.path().join(CA_CERT)).unwrap(), before);
        generate(dir.path(), &hosts(), true).unwrap();
        assert_ne!(std::fs::read(dir.path().join(CA_CERT)).unwrap(), before);
    }

    #[test]
    fn bad_files_are_errors_naming_the_file() {
        let dir = certs();
        let d = dir.path();
        let missing = d.join("nope.pem");
        let err = Tls::load(
            &missing,
            &d.join(SERVER_KEY),
            &d.join(CA_CERT),
            AuthClients::No,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("cannot read {}: ", missing.display())),
            "{err}"
        );
        let text = d.join("text.pem");
        std::fs::write(&text, "hello\n").unwrap();
        let err = Tls::load(
            &text,
            &d.join(SERVER_KEY),
            &d.join(CA_CERT),
            AuthClients::No,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: no certificate in it (expected a PEM \"BEGIN CERTIFICATE\" block)",
                text.display()
            )
        );
        let err = Tls::load(
            &d.join(SERVER_CERT),
            &text,
            &d.join(CA_CERT),
            AuthClients::No,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: no private key in it (expected a PEM \"BEGIN PRIVATE KEY\" block)",
                text.display()
            )
        );
        // The client's key with the server's certificate.
        let err = Tls::load(
            &d.join(SERVER_CERT),
            &d.join(CLIENT_KEY),
            &d.join(CA_CERT),
            AuthClients::No,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} is not the private key of the certificate in {}",
                d.join(CLIENT_KEY).display(),
                d.join(SERVER_CERT).display()
            )
        );
    }

    /// Accepts one connection with `server` and runs `accept_connection`
    /// on it, while `client` talks to it; the client's task is returned
    /// to be awaited.
    async fn serve_one<F, Fut>(
        server: &Tls,
        client: F,
    ) -> (Option<(Stream, Opened)>, tokio::task::JoinHandle<()>)
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let client = tokio::spawn(client(addr));
        let (tcp, _) = listener.accept().await.unwrap();
        let gate = ClientGate::new(crate::ClientLimits::DEFAULT);
        let got = accept_connection(&gate, Some(server), tcp, b"\0MAGIC", Duration::from_secs(1))
            .await
            .map(|(s, o, _)| (s, o));
        (got, client)
    }

    use std::future::Future;

    #[tokio::test]
    async fn peers_with_the_same_ca_talk_over_tls() {
        let dir = certs();
        let tls = load(dir.path(), AuthClients::Optional);
        let peer = tls.clone();
        let got = serve_one(&tls, move |addr| async move {
            let mut s = connect(Some(&peer), &addr).await.unwrap();
            assert!(s.is_tls());
            s.write_all(b"\0MAGIChello").await.unwrap();
            s.flush().await.unwrap();
            let mut back = [0u8; 2];
            s.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"ok");
        })
        .await;
        let (Some((mut stream, Opened::Peer(rest))), client) = got else {
            panic!("not served as a peer")
        };
        assert_eq!(&rest[..], b"hello");
        stream.write_all(b"ok").await.unwrap();
        stream.flush().await.unwrap();
        client.await.unwrap();
    }

    #[tokio::test]
    async fn a_peer_of_another_ca_cannot_connect() {
        let ours = certs();
        let theirs = certs();
        let tls = load(ours.path(), AuthClients::Optional);
        let stranger = load(theirs.path(), AuthClients::Optional);
        let got = serve_one(&tls, move |addr| async move {
            // Our certificate is not signed by their CA: the stranger's
            // handshake fails on its side.
            let err = connect(Some(&stranger), &addr).await.unwrap_err();
            assert!(
                err.to_string().contains("invalid peer certificate"),
                "{err}"
            );
        })
        .await;
        assert!(got.0.is_none());
        got.1.await.unwrap();
    }

    #[tokio::test]
    async fn a_peer_without_a_client_certificate_is_closed() {
        let dir = certs();
        let tls = load(dir.path(), AuthClients::Optional);
        // Trusts the server, presents no certificate: fine for a client,
        // not for a peer.
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(certificates(&dir.path().join(CA_CERT)).unwrap());
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = TlsConnector::from(Arc::new(config));
        let anonymous = connector.clone();
        let got = serve_one(&tls, move |addr| async move {
            let tcp = TcpStream::connect(&addr).await.unwrap();
            let name = server_name(&addr).unwrap();
            let mut s = anonymous.connect(name, tcp).await.unwrap();
            s.write_all(b"\0MAGIChello").await.unwrap();
            s.flush().await.unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        })
        .await;
        assert!(got.0.is_none());
        got.1.await.unwrap();
        let got = serve_one(&tls, move |addr| async move {
            let tcp = TcpStream::connect(&addr).await.unwrap();
            let name = server_name(&addr).unwrap();
            let mut s = connector.connect(name, tcp).await.unwrap();
            s.write_all(b"PING\r\n").await.unwrap();
            s.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        })
        .await;
        match got.0 {
            Some((_, Opened::Client(buf))) => assert_eq!(&buf[..], b"PING\r\n"),
            other => panic!("{:?}", other.map(|(_, o)| o)),
        }
        got.1.await.unwrap();
    }

    #[tokio::test]
    async fn plain_text_on_a_tls_port_is_closed() {
        let dir = certs();
        let tls = load(dir.path(), AuthClients::Optional);
        let got = serve_one(&tls, |addr| async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            s.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            assert!(!rest.starts_with(b"+PONG"));
        })
        .await;
        assert!(got.0.is_none());
        got.1.await.unwrap();
    }

    #[test]
    fn server_names_come_from_the_host_part() {
        assert_eq!(
            server_name("127.0.0.1:7000").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        assert_eq!(
            server_name("[::1]:7000").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        assert_eq!(
            server_name("db.example:7000").unwrap(),
            ServerName::try_from("db.example").unwrap()
        );
    }
}
