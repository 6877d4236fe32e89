//! Peer authentication: a cluster secret and a challenge, before any item.
//!
//! Every peer connection of both nodes starts, right after the node's magic
//! prefix ([`crate::open`]), with this exchange; only when it succeeds does
//! the node read its first protocol message. A node started with a cluster
//! secret (`--cluster-secret-file`) accepts only peers that prove they hold
//! the same secret, and proves it holds it in turn:
//!
//! ```text
//! initiator -> acceptor   Hello     { mode, nonce_i }
//! acceptor  -> initiator  Challenge { mode, nonce_a, tag_a }
//! initiator -> acceptor   Proof     { tag_i }                 (mode "secret")
//! acceptor  -> initiator  Verdict   { ok | refused: reason }  (mode "secret")
//!
//! tag_a = HMAC-SHA256(secret, "acceptor"  | nonce_i | nonce_a)
//! tag_i = HMAC-SHA256(secret, "initiator" | nonce_i | nonce_a)
//! ```
//!
//! Both nonces are 32 fresh random bytes, so a recorded exchange proves
//! nothing on another connection (no replay), and the two labels keep one
//! side's tag from being reflected back as the other's. The acceptor proves
//! itself first, so an initiator never sends its proof to a node that does
//! not hold the secret. The secret itself never crosses the wire.
//!
//! Mode "open" (no secret on either side) costs one round trip and checks
//! nothing: today's behaviour of a local cluster on loopback. A node with a
//! secret refuses a peer without one, and a node without a secret refuses
//! a peer that offers one (the operator configured one side only): both
//! are logged with the remote address, so a stray client that learned the
//! magic, a forged peer, or a replica of another cluster changes nothing.
//!
//! What this does not do: it authenticates the start of a connection, not
//! each byte after it. On a network where someone can take over a TCP
//! connection, use TLS as well (`--tls-*`), which protects the rest of the
//! connection. A node that holds the secret is trusted as a peer; what a
//! trusted but modified peer can still do is bounded by signed writes
//! (docs/security.md).
//!
//! Frames use the kit's framing ([`crate::frame`]) with their own version,
//! so a peer of another protocol generation is told apart from garbage.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::warn;

use crate::frame::{self, FrameError};

/// The version of the authentication frames.
pub const AUTH_VERSION: u16 = 1;

/// The largest authentication frame (a refusal carries a short reason).
const MAX_AUTH_FRAME: usize = 1024;

/// Bytes of each side's nonce.
const NONCE_BYTES: usize = 32;

/// Bytes of an HMAC-SHA256 tag.
const TAG_BYTES: usize = 32;

/// The fewest bytes a cluster secret may have.
pub const MIN_SECRET_BYTES: usize = 16;

/// How long the whole exchange may take before the connection is dropped.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(5);

const MODE_OPEN: u8 = 0;
const MODE_SECRET: u8 = 1;

const KIND_HELLO: u8 = 1;
const KIND_CHALLENGE: u8 = 2;
const KIND_PROOF: u8 = 3;
const KIND_VERDICT: u8 = 4;

/// The secret every member of one cluster holds.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// Why a cluster secret could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file could not be read or written.
    #[error("cluster secret file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file holds too little.
    #[error(
        "cluster secret file {path} holds {len} bytes after trimming whitespace; at least {MIN_SECRET_BYTES} are needed (make one with: head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > {path})"
    )]
    TooShort {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
}

impl ClusterSecret {
    /// A secret from its bytes (at least [`MIN_SECRET_BYTES`]).
    pub fn from_bytes(bytes: &[u8]) -> Option<ClusterSecret> {
        (bytes.len() >= MIN_SECRET_BYTES).then(|| ClusterSecret(bytes.to_vec()))
    }

    /// Reads a secret file: its contents with surrounding whitespace
    /// trimmed, at least [`MIN_SECRET_BYTES`] long. Warns when the file can
    /// be read by other users.
    pub fn load(path: &Path) -> Result<ClusterSecret, SecretError> {
        let io = |source| SecretError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = std::fs::read(path).map_err(io)?;
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort {
                path: path.to_path_buf(),
                len: trimmed.len(),
            });
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(path)
                && meta.permissions().mode() & 0o077 != 0
            {
                warn!(
                    path = %path.display(),
                    "the cluster secret file can be read by other users; chmod 600 it"
                );
            }
        }
        Ok(ClusterSecret(trimmed.to_vec()))
    }

    /// Returns the secret in `path`, creating it first (32 random bytes as
    /// hex, mode 0600) when the file does not exist: what the local cluster
    /// launchers do, so a cluster on loopback is authenticated by default.
    pub fn load_or_create(path: &Path) -> Result<ClusterSecret, SecretError> {
        if !path.exists() {
            let mut raw = [0u8; 32];
            fill_random(&mut raw);
            let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            let io = |source| SecretError::Io {
                path: path.to_path_buf(),
                source,
            };
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            match options.open(path) {
                Ok(mut f) => {
                    use std::io::Write;
                    f.write_all(hex.as_bytes()).map_err(io)?;
                    f.write_all(b"\n").map_err(io)?;
                    f.sync_all().map_err(io)?;
                }
                // Another launcher made it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(e)),
            }
        }
        ClusterSecret::load(path)
    }

    fn tag(&self, label: &[u8], nonce_i: &[u8], nonce_a: &[u8]) -> [u8; TAG_BYTES] {
        self.mac(label, nonce_i, nonce_a)
            .finalize()
            .into_bytes()
            .into()
    }

    fn verify(&self, label: &[u8], nonce_i: &[u8], nonce_a: &[u8], tag: &[u8]) -> bool {
        // Constant time: hmac's verify compares without an early exit.
        self.mac(label, nonce_i, nonce_a).verify_slice(tag).is_ok()
    }

    fn mac(&self, label: &[u8], nonce_i: &[u8], nonce_a: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"peer-auth v1 ");
        mac.update(label);
        mac.update(nonce_i);
        mac.update(nonce_a);
        mac
    }
}

/// `--cluster-secret-file`, flattened into both nodes' arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct PeerAuthFlags {
    /// A file holding the cluster's shared secret (at least 16 bytes; e.g.
    /// 64 hex digits). Peers must prove they hold the same secret before
    /// anything they send is accepted; without it peers are not
    /// authenticated. `bayou cluster` and `chord cluster` make one in their
    /// data directory unless this is given.
    #[arg(long, value_name = "PATH")]
    pub cluster_secret_file: Option<PathBuf>,
}

impl PeerAuthFlags {
    /// The flags as command-line arguments, for a launcher starting a
    /// child node.
    pub fn to_args(&self) -> Vec<String> {
        match &self.cluster_secret_file {
            Some(p) => vec![
                "--cluster-secret-file".into(),
                p.to_string_lossy().into_owned(),
            ],
            None => Vec::new(),
        }
    }

    /// The secret, if a file was given.
    pub fn load(&self) -> Result<Option<ClusterSecret>, SecretError> {
        self.cluster_secret_file
            .as_deref()
            .map(ClusterSecret::load)
            .transpose()
    }
}

/// Why a peer connection was not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum PeerAuthError {
    /// The peer holds no cluster secret but this node requires one.
    #[error("peer sent no credentials; this node requires the cluster secret")]
    MissingCredentials,
    /// The peer offers a secret but this node has none configured.
    #[error("peer offers a cluster secret but this node has none (--cluster-secret-file)")]
    UnexpectedCredentials,
    /// The peer's proof does not match this node's secret.
    #[error(
        "peer's proof does not match the cluster secret (a node of another cluster, or a forged peer)"
    )]
    WrongSecret,
    /// The other side refused us, with its reason.
    #[error("refused by the peer: {0}")]
    Refused(String),
    /// A frame of the exchange was not what the protocol allows.
    #[error("malformed authentication frame: {0}")]
    Malformed(&'static str),
    /// Framing failed (closed, damaged, wrong version).
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// Writing failed.
    #[error("write failed: {0}")]
    Io(#[from] std::io::Error),
    /// The exchange took too long.
    #[error("authentication timed out")]
    Timeout,
}

/// The initiator's side: after writing the magic, prove this node holds
/// `secret` (or say it holds none) and check the acceptor does too.
/// `leftover` receives any bytes read past the exchange, for the caller's
/// frame reader.
pub async fn initiate<S>(
    stream: &mut S,
    secret: Option<&ClusterSecret>,
    leftover: &mut BytesMut,
) -> Result<(), PeerAuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut nonce_i = [0u8; NONCE_BYTES];
    fill_random(&mut nonce_i);
    let mode = if secret.is_some() {
        MODE_SECRET
    } else {
        MODE_OPEN
    };
    send(stream, &hello_body(mode, &nonce_i)).await?;
    let body = recv(stream, leftover).await?;
    let (their_mode, nonce_a, tag_a) = match body.split_first() {
        Some((&KIND_CHALLENGE, [mode, rest @ ..])) if rest.len() >= NONCE_BYTES => {
            let (nonce, tag) = rest.split_at(NONCE_BYTES);
            (*mode, nonce.to_vec(), tag.to_vec())
        }
        Some((&KIND_VERDICT, rest)) => return Err(refusal(rest)),
        _ => return Err(PeerAuthError::Malformed("expected a challenge")),
    };
    match (secret, their_mode) {
        (None, MODE_OPEN) => Ok(()),
        (None, _) => Err(PeerAuthError::MissingCredentials),
        (Some(_), MODE_OPEN) => Err(PeerAuthError::Refused(
            "the peer holds no cluster secret".into(),
        )),
        (Some(secret), _) => {
            if !secret.verify(b"acceptor", &nonce_i, &nonce_a, &tag_a) {
                return Err(PeerAuthError::WrongSecret);
            }
            let mut proof = vec![KIND_PROOF];
            proof.extend_from_slice(&secret.tag(b"initiator", &nonce_i, &nonce_a));
            send(stream, &proof).await?;
            match recv(stream, leftover).await?.split_first() {
                Some((&KIND_VERDICT, [0])) => Ok(()),
                Some((&KIND_VERDICT, rest)) => Err(refusal(rest)),
                _ => Err(PeerAuthError::Malformed("expected a verdict")),
            }
        }
    }
}

/// The acceptor's side: `leftover` holds the bytes read after the magic
/// and keeps any read past the exchange. On failure the peer is told why
/// (when it can be) and the caller drops the connection.
pub async fn accept<S>(
    stream: &mut S,
    secret: Option<&ClusterSecret>,
    leftover: &mut BytesMut,
) -> Result<(), PeerAuthError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let body = recv_or_refuse(stream, leftover).await?;
    let (mode, nonce_i) = match body.split_first() {
        Some((&KIND_HELLO, [mode, nonce @ ..])) if nonce.len() == NONCE_BYTES => {
            (*mode, nonce.to_vec())
        }
        _ => {
            return refused(stream, PeerAuthError::Malformed("expected a hello")).await;
        }
    };
    let mut nonce_a = [0u8; NONCE_BYTES];
    fill_random(&mut nonce_a);
    let secret = match (secret, mode) {
        (None, MODE_OPEN) => {
            send(stream, &challenge_body(MODE_OPEN, &nonce_a, None)).await?;
            return Ok(());
        }
        (None, _) => {
            return refused(stream, PeerAuthError::UnexpectedCredentials).await;
        }
        (Some(_), MODE_OPEN) => {
            return refused(stream, PeerAuthError::MissingCredentials).await;
        }
        (Some(secret), _) => secret,
    };
    let tag_a = secret.tag(b"acceptor", &nonce_i, &nonce_a);
    send(stream, &challenge_body(MODE_SECRET, &nonce_a, Some(&tag_a))).await?;
    let proof = recv_or_refuse(stream, leftover).await?;
    match proof.split_first() {
        Some((&KIND_PROOF, tag)) if secret.verify(b"initiator", &nonce_i, &nonce_a, tag) => {
            send(stream, &[KIND_VERDICT, 0]).await?;
            Ok(())
        }
        Some((&KIND_PROOF, _)) => refused(stream, PeerAuthError::WrongSecret).await,
        _ => refused(stream, PeerAuthError::Malformed("expected a proof")).await,
    }
}

/// The first frame an open initiator sends (mode "open", a zero nonce): for
/// tests and tools that speak the peer protocol by hand to a node without
/// a cluster secret. The node answers with one challenge frame, which the
/// caller reads past ([`skip_challenge`]).
pub fn open_hello_frame() -> BytesMut {
    let mut out = BytesMut::new();
    frame::frame_into(
        &frame::payload(AUTH_VERSION, &hello_body(MODE_OPEN, &[0; NONCE_BYTES])),
        &mut out,
    );
    out
}

/// Takes the challenge frame an open acceptor sends off the front of `buf`
/// (`Ok(false)` until it is all there).
pub fn skip_challenge(buf: &mut BytesMut) -> Result<bool, PeerAuthError> {
    match frame::decode(buf, MAX_AUTH_FRAME)? {
        None => Ok(false),
        Some(payload) => match frame::open_payload(&payload, AUTH_VERSION)?.first() {
            Some(&KIND_CHALLENGE) => Ok(true),
            _ => Err(PeerAuthError::Malformed("expected a challenge")),
        },
    }
}

/// [`recv`] for the acceptor: a frame that cannot be read (wrong version,
/// damaged, too long) is answered with a refusal before the connection is
/// dropped, so whoever sent it learns why.
async fn recv_or_refuse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Vec<u8>, PeerAuthError> {
    match recv(stream, buf).await {
        Ok(body) => Ok(body),
        Err(e @ PeerAuthError::Frame(FrameError::Truncated | FrameError::Io(_))) => Err(e),
        Err(e) => {
            let why = match e {
                PeerAuthError::Frame(FrameError::Version { .. }) => {
                    "not an authentication frame (wrong version)"
                }
                _ => "unreadable frame",
            };
            refused(stream, PeerAuthError::Malformed(why)).await
        }
    }
}

fn hello_body(mode: u8, nonce: &[u8]) -> Vec<u8> {
    let mut body = vec![KIND_HELLO, mode];
    body.extend_from_slice(nonce);
    body
}

fn challenge_body(mode: u8, nonce: &[u8], tag: Option<&[u8; TAG_BYTES]>) -> Vec<u8> {
    let mut body = vec![KIND_CHALLENGE, mode];
    body.extend_from_slice(nonce);
    if let Some(tag) = tag {
        body.extend_from_slice(tag);
    }
    body
}

fn refusal(rest: &[u8]) -> PeerAuthError {
    match rest.split_first() {
        Some((1, reason)) => PeerAuthError::Refused(String::from_utf8_lossy(reason).into_owned()),
        _ => PeerAuthError::Malformed("bad verdict"),
    }
}

/// Tells the peer why it is refused, then fails with that reason.
async fn refused<S: AsyncWrite + Unpin, T>(
    stream: &mut S,
    why: PeerAuthError,
) -> Result<T, PeerAuthError> {
    refuse(stream, &why).await;
    Err(why)
}

/// Tells the peer why it is refused (best effort: it may already be gone).
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, why: &PeerAuthError) {
    let mut body = vec![KIND_VERDICT, 1];
    body.extend_from_slice(why.to_string().as_bytes());
    body.truncate(MAX_AUTH_FRAME - 16);
    let _ = tokio::time::timeout(Duration::from_secs(1), send(stream, &body)).await;
}

async fn send<S: AsyncWrite + Unpin>(stream: &mut S, body: &[u8]) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(body.len() + 16);
    frame::frame_into(&frame::payload(AUTH_VERSION, body), &mut out);
    stream.write_all(&out).await?;
    stream.flush().await
}

async fn recv<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Vec<u8>, PeerAuthError> {
    loop {
        if let Some(payload) = frame::decode(buf, MAX_AUTH_FRAME)? {
            return Ok(frame::open_payload(&payload, AUTH_VERSION)?.to_vec());
        }
        buf.reserve(MAX_AUTH_FRAME);
        if stream.read_buf(buf).await? == 0 {
            return Err(FrameError::Truncated.into());
        }
    }
}

fn fill_random(out: &mut [u8]) {
    // The operating system's generator; a machine without one cannot run a
    // node safely at all.
    getrandom::fill(out).expect("the operating system's random number generator failed");
}

/// Logs refused peers at warn, at most once a second per node (a flood of
/// forged peers must not flood the log); the rest at debug.
#[derive(Debug, Default)]
pub struct RefusalLog {
    last: Mutex<Option<Instant>>,
}

impl RefusalLog {
    /// Records that the peer at `remote` was refused for `why`.
    pub fn refused(&self, node: &str, remote: &str, why: &dyn std::fmt::Display) {
        let due = {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            warn!(%node, %remote, "peer refused: {why}");
        } else {
            tracing::debug!(%node, %remote, "peer refused: {why}");
        }
    }
}

/// Runs `exchange` under `limit`, mapping a timeout to
/// [`PeerAuthError::Timeout`].
pub async fn within<F>(limit: Duration, exchange: F) -> Result<(), PeerAuthError>
where
    F: std::future::Future<Output = Result<(), PeerAuthError>>,
{
    tokio::time::timeout(limit, exchange)
        .await
        .unwrap_or(Err(PeerAuthError::Timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ClusterSecret {
        ClusterSecret::from_bytes(s.as_bytes()).unwrap()
    }

    /// Runs both sides over an in-memory pipe.
    async fn exchange(
        initiator: Option<ClusterSecret>,
        acceptor: Option<ClusterSecret>,
    ) -> (Result<(), PeerAuthError>, Result<(), PeerAuthError>) {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let i = tokio::spawn(async move {
            let mut left = BytesMut::new();
            initiate(&mut a, initiator.as_ref(), &mut left).await
        });
        let mut left = BytesMut::new();
        let acc = accept(&mut b, acceptor.as_ref(), &mut left).await;
        drop(b);
        (i.await.unwrap(), acc)
    }

    #[tokio::test]
    async fn same_secret_authenticates_both_ways() {
        let (i, a) = exchange(
            Some(secret("0123456789abcdef0123")),
            Some(secret("0123456789abcdef0123")),
        )
        .await;
        assert!(i.is_ok(), "{i:?}");
        assert!(a.is_ok(), "{a:?}");
    }

    #[tokio::test]
    async fn open_nodes_pass_without_checks() {
        let (i, a) = exchange(None, None).await;
        assert!(i.is_ok() && a.is_ok());
    }

    #[tokio::test]
    async fn another_clusters_secret_is_refused_by_the_initiator_first() {
        let (i, a) = exchange(
            Some(secret("0123456789abcdef0123")),
            Some(secret("another cluster's secret")),
        )
        .await;
        // The acceptor proves itself first, so the initiator sees the
        // mismatch and never sends its proof.
        assert!(matches!(i, Err(PeerAuthError::WrongSecret)), "{i:?}");
        assert!(a.is_err());
    }

    #[tokio::test]
    async fn a_peer_without_credentials_is_refused_and_told_why() {
        let (i, a) = exchange(None, Some(secret("0123456789abcdef0123"))).await;
        assert!(matches!(a, Err(PeerAuthError::MissingCredentials)), "{a:?}");
        match i {
            Err(PeerAuthError::Refused(why)) => assert_eq!(
                why,
                "peer sent no credentials; this node requires the cluster secret"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn credentials_offered_to_an_open_node_are_refused() {
        let (i, a) = exchange(Some(secret("0123456789abcdef0123")), None).await;
        assert!(matches!(a, Err(PeerAuthError::UnexpectedCredentials)));
        assert!(matches!(i, Err(PeerAuthError::Refused(_))), "{i:?}");
    }

    #[tokio::test]
    async fn a_forged_proof_is_refused() {
        // A forger that replays the acceptor's own tag as its proof.
        let s = secret("0123456789abcdef0123");
        let (mut a, mut b) = tokio::io::duplex(4096);
        let acceptor = tokio::spawn(async move {
            let mut left = BytesMut::new();
            accept(&mut b, Some(&s), &mut left).await
        });
        let mut left = BytesMut::new();
        send(&mut a, &hello_body(MODE_SECRET, &[7; NONCE_BYTES]))
            .await
            .unwrap();
        let challenge = recv(&mut a, &mut left).await.unwrap();
        let tag_a = &challenge[2 + NONCE_BYTES..];
        let mut proof = vec![KIND_PROOF];
        proof.extend_from_slice(tag_a);
        send(&mut a, &proof).await.unwrap();
        assert!(matches!(
            acceptor.await.unwrap(),
            Err(PeerAuthError::WrongSecret)
        ));
        let verdict = recv(&mut a, &mut left).await.unwrap();
        assert_eq!(verdict[0], KIND_VERDICT);
        assert_eq!(verdict[1], 1);
    }

    #[tokio::test]
    async fn garbage_after_the_magic_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        a.write_all(&[0, 0, 0, 3, 1, 2, 3]).await.unwrap();
        let mut left = BytesMut::new();
        let got = accept(&mut b, None, &mut left).await;
        assert!(got.is_err(), "{got:?}");
    }

    #[tokio::test]
    async fn the_open_hello_frame_is_accepted_by_an_open_node() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        a.write_all(&open_hello_frame()).await.unwrap();
        let mut left = BytesMut::new();
        accept(&mut b, None, &mut left).await.unwrap();
        let mut buf = BytesMut::new();
        while !skip_challenge(&mut buf).unwrap() {
            a.read_buf(&mut buf).await.unwrap();
        }
    }

    #[test]
    fn secret_files_are_trimmed_checked_and_made_private() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").unwrap();
        let err = ClusterSecret::load(&short).unwrap_err().to_string();
        assert!(err.contains("holds 3 bytes"), "{err}");
        let made = dir.path().join("made");
        let s1 = ClusterSecret::load_or_create(&made).unwrap();
        let s2 = ClusterSecret::load_or_create(&made).unwrap();
        assert_eq!(s1.0, s2.0);
        assert_eq!(s1.0.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&made).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let missing = ClusterSecret::load(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().starts_with("cluster secret file "));
    }

    #[test]
    fn flags_round_trip_to_args() {
        let flags = PeerAuthFlags {
            cluster_secret_file: Some("/tmp/s".into()),
        };
        assert_eq!(flags.to_args(), ["--cluster-secret-file", "/tmp/s"]);
        assert!(PeerAuthFlags::default().to_args().is_empty());
    }
}
