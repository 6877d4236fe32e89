//! Signing keys and keyrings on disk, for signed writes
//! (`bayou_core::auth`, docs/signed-writes.md).
//!
//! * `--signing-key PATH`: this replica's ed25519 private key, PKCS#8 PEM
//!   (what `openssl genpkey -algorithm ed25519` writes). Created with mode
//!   0600 from the operating system's randomness on first start when the
//!   file does not exist; a file that exists but is not such a key is a
//!   startup error, never replaced.
//! * `--keyring PATH`: one `<server-id> <hex public key>` a line, `#`
//!   comments; `bayou keys` prints a replica's line. A malformed line is a
//!   startup error naming the file and the line.
//!
//! The protocol core never draws randomness or reads files: this module
//! hands it the key's bytes and the parsed keyring.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use bayou_core::auth::Permissions;
use bayou_core::{Ed25519Authority, Keyring, ServerId, WriteAuthority};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};

/// The signed-writes flags of `bayou serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SigningFlags {
    /// Sign the writes this replica accepts with this ed25519 private key
    /// (PKCS#8 PEM; created, mode 0600, if missing), and verify every write
    /// received. See docs/signed-writes.md.
    #[arg(long, value_name = "PATH")]
    pub signing_key: Option<PathBuf>,
    /// The public keys of the cluster's replicas, one `<server-id> <hex
    /// public key>` a line (`bayou keys` prints them). Writes accepted by a
    /// replica not listed are refused. Needs --signing-key.
    #[arg(long, value_name = "PATH", requires = "signing_key")]
    pub keyring: Option<PathBuf>,
}

/// `bayou keys`: create a replica's signing key if missing and print its
/// keyring line.
#[derive(Debug, Clone, clap::Args)]
pub struct KeysArgs {
    /// The key file (PKCS#8 PEM); created, mode 0600, if missing.
    #[arg(long, value_name = "PATH")]
    pub signing_key: PathBuf,
    /// The replica the key belongs to.
    #[arg(long)]
    pub id: String,
}

/// The secret key in `path`, created there first if the file does not
/// exist. Returns the key and whether it was created.
pub fn load_or_create(path: &Path) -> anyhow::Result<(SigningKey, bool)> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let key = SigningKey::from_pkcs8_pem(&text).map_err(|e| {
                anyhow::anyhow!(
                    "signing key {}: not an ed25519 private key in PKCS#8 PEM ({e}); refusing to start (it is never overwritten: move it away to have a new one created)",
                    path.display()
                )
            })?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((create(path)?, true)),
        Err(e) => Err(e).with_context(|| format!("signing key {}: cannot read", path.display())),
    }
}

/// Writes a new key to `path`, which must not exist, readable by its owner
/// only.
fn create(path: &Path) -> anyhow::Result<SigningKey> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| anyhow::anyhow!("no randomness for a new signing key: {e}"))?;
    let key = SigningKey::from_bytes(&secret);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("cannot encode the new signing key: {e}"))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "signing key {}: cannot create its directory",
                path.display()
            )
        })?;
    }
    let mut options = std::fs::OpenOptions::new();
    // `create_new`: two processes creating the same key cannot both win.
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("signing key {}: cannot create", path.display()))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("signing key {}: cannot write", path.display()))?;
    Ok(key)
}

/// The keyring in `path`.
pub fn load_keyring(path: &Path) -> anyhow::Result<Keyring> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("keyring {}: cannot read", path.display()))?;
    Keyring::parse(&text).with_context(|| format!("keyring {}", path.display()))
}

/// The execution-time permission check of signed writes from the users
/// file (`--acl-file`): an author may write a key its key patterns let it
/// write, under the users in force when the write executes. `None`
/// without a users file: every author may write every key.
pub fn permissions(acl: Option<&Arc<server_kit::acl::Acl>>) -> Option<Permissions> {
    acl.map(|acl| {
        let acl = acl.clone();
        Arc::new(move |user: &str, key: &[u8]| acl.may_write_key(user, key)) as Permissions
    })
}

/// `authority` checking authors with `permissions`, if any.
fn with(authority: Ed25519Authority, permissions: Option<&Permissions>) -> Arc<dyn WriteAuthority> {
    match permissions {
        Some(p) => Arc::new(authority.with_permissions(p.clone())),
        None => Arc::new(authority),
    }
}

/// The write authority of replica `id` from its flags, or `None` when
/// writes are not signed (no --signing-key); authors are checked with
/// `permissions` where writes execute.
pub fn authority(
    id: &ServerId,
    flags: &SigningFlags,
    permissions: Option<&Permissions>,
) -> anyhow::Result<Option<Arc<dyn WriteAuthority>>> {
    let Some(key_path) = &flags.signing_key else {
        if flags.keyring.is_some() {
            bail!("--keyring needs --signing-key");
        }
        return Ok(None);
    };
    let (key, created) = load_or_create(key_path)?;
    if created {
        tracing::info!(%id, path = %key_path.display(), "created a signing key");
    }
    let keyring = match &flags.keyring {
        Some(p) => load_keyring(p)?,
        None => Keyring::new(),
    };
    let authority = Ed25519Authority::new(id.clone(), &key.to_bytes(), keyring)
        .with_context(|| format!("signing key {}", key_path.display()))?;
    Ok(Some(with(authority, permissions)))
}

/// The keyring line of replica `id` whose key is `key`.
pub fn keyring_line(id: &ServerId, key: &SigningKey) -> String {
    bayou_core::auth::keyring_line(id, &key.verifying_key().to_bytes())
}

/// Runs `bayou keys`: the keyring line, to print.
pub fn keys(args: &KeysArgs) -> anyhow::Result<String> {
    let id = ServerId::new(&args.id).with_context(|| format!("bad replica id {:?}", args.id))?;
    let (key, created) = load_or_create(&args.signing_key)?;
    if created {
        eprintln!("created signing key {}", args.signing_key.display());
    }
    Ok(keyring_line(&id, &key))
}

/// `bayou cluster --sign-writes`: a key per replica in `dir/keys/<id>.pem`
/// (created if missing), and `dir/keys/keyring` listing them all. Returns
/// the authority of each replica, in the order of `ids`.
pub fn cluster_authorities(
    dir: &Path,
    ids: &[ServerId],
    permissions: Option<&Permissions>,
) -> anyhow::Result<Vec<Arc<dyn WriteAuthority>>> {
    let keys_dir = dir.join("keys");
    let mut keys = Vec::new();
    let mut text = String::from("# written by `bayou cluster --sign-writes`\n");
    let mut keyring = Keyring::new();
    for id in ids {
        let (key, _) = load_or_create(&keys_dir.join(format!("{id}.pem")))?;
        text.push_str(&keyring_line(id, &key));
        text.push('\n');
        keyring.insert(id.clone(), key.verifying_key().to_bytes())?;
        keys.push(key);
    }
    std::fs::write(keys_dir.join("keyring"), text)
        .with_context(|| format!("cannot write {}", keys_dir.join("keyring").display()))?;
    ids.iter()
        .zip(keys)
        .map(|(id, key)| {
            let a = Ed25519Authority::new(id.clone(), &key.to_bytes(), keyring.clone())?;
            Ok(with(a, permissions))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_key_is_created_private_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/a.pem");
        let (first, created) = load_or_create(&path).unwrap();
        assert!(created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(
            std::fs::read_to_string(&path)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----\n")
        );
        let (again, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(first.to_bytes(), again.to_bytes());
    }

    #[test]
    fn a_malformed_key_file_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.pem");
        std::fs::write(&path, "not a key\n").unwrap();
        let err = load_or_create(&path).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "signing key {}: not an ed25519 private key in PKCS#8 PEM (",
                path.display()
            )),
            "{err}"
        );
        assert!(err.ends_with("refusing to start (it is never overwritten: move it away to have a new one created)"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key\n");
    }

    #[test]
    fn a_malformed_keyring_line_is_a_startup_error_naming_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keyring");
        std::fs::write(&path, "# cluster\nA 00zz\n").unwrap();
        let err = format!("{:#}", load_keyring(&path).unwrap_err());
        assert_eq!(
            err,
            format!(
                "keyring {}: keyring line 2: \"00zz\" is not 64 hex digits (a 32-byte key)",
                path.display()
            )
        );
    }

    #[test]
    fn cluster_keys_are_made_once_and_listed_in_one_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<ServerId> = ["P", "A"]
            .iter()
            .map(|s| ServerId::new(s).unwrap())
            .collect();
        cluster_authorities(dir.path(), &ids, None).unwrap();
        let ring = load_keyring(&dir.path().join("keys/keyring")).unwrap();
        assert_eq!(ring.len(), 2);
        let (p, created) = load_or_create(&dir.path().join("keys/P.pem")).unwrap();
        assert!(!created);
        assert_eq!(ring.get(&ids[0]), Some(p.verifying_key().to_bytes()));
        // A second start keeps the keys.
        cluster_authorities(dir.path(), &ids, None).unwrap();
        assert_eq!(
            load_keyring(&dir.path().join("keys/keyring")).unwrap(),
            ring
        );
    }
}
