//! How the operator commands (`bayou status`, `chord ring`) reach a node:
//! plain TCP, or TLS trusting a given CA (`--tls-ca`, as the nodes'
//! `--tls-*` flags and `cluster --tls` set them up), then `AUTH` when a
//! password is given (`--user`, `--pass`, as redis-cli's), with one time
//! limit for connecting and for every answer.

use std::path::PathBuf;
use std::time::Duration;

/// The flags a command that talks to nodes takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct RemoteFlags {
    /// Connect over TLS, trusting this CA (PEM), e.g. the `ca.pem` of
    /// `tls-certs` or of `cluster --tls` (DATA_DIR/tls/ca.pem).
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// The user to authenticate as (with --pass; `default` without it).
    #[arg(long, requires = "pass")]
    pub user: Option<String>,
    /// The password to authenticate with (`AUTH`), for a node with
    /// --acl-file.
    #[arg(long)]
    pub pass: Option<String>,
}

/// Why a node could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The CA file could not be read.
    #[error("--tls-ca {path}: {source}")]
    Ca {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Connecting, the handshake, `AUTH` or the timeouts failed.
    #[error("{0}")]
    Redis(String),
}

// The redis crate's errors repeat their cause in their text: keep one.
fn one(e: redis::RedisError) -> RemoteError {
    RemoteError::Redis(e.to_string())
}

impl RemoteFlags {
    /// A connection to the node at `addr` (`HOST:PORT`), with `timeout`
    /// for connecting and for each answer, authenticated when a password
    /// was given.
    pub fn connect(&self, addr: &str, timeout: Duration) -> Result<redis::Connection, RemoteError> {
        let client = match &self.tls_ca {
            None => redis::Client::open(format!("redis://{addr}/")).map_err(one)?,
            Some(path) => {
                let root = std::fs::read(path).map_err(|source| RemoteError::Ca {
                    path: path.clone(),
                    source,
                })?;
                redis::Client::build_with_tls(
                    format!("rediss://{addr}/"),
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(root),
                    },
                )
                .map_err(one)?
            }
        };
        let mut con = client
            .get_connection_with_timeout(timeout)
            .map_err(|e| self.hint(e))?;
        con.set_read_timeout(Some(timeout)).map_err(one)?;
        con.set_write_timeout(Some(timeout)).map_err(one)?;
        if let Some(pass) = &self.pass {
            let mut auth = redis::cmd("AUTH");
            if let Some(user) = &self.user {
                auth.arg(user);
            }
            auth.arg(pass)
                .query::<()>(&mut con)
                .map_err(|e| self.hint(e))?;
        }
        Ok(con)
    }

    /// `e`, with a hint when it is what a TLS server's first bytes look
    /// like to a plain-text client (a TLS alert does not parse as RESP).
    pub fn hint(&self, e: redis::RedisError) -> RemoteError {
        // The kind the redis crate gives depends on where the parse
        // failed; its text always says so.
        let unparsable = e.kind() == redis::ErrorKind::ParseError
            || e.to_string().to_ascii_lowercase().contains("parse error");
        if self.tls_ca.is_none() && unparsable {
            // Its text goes on to list the bytes it did not expect.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default();
            RemoteError::Redis(format!(
                "{first}: the node's answer is not RESP (a node serving TLS needs --tls-ca)"
            ))
        } else {
            one(e)
        }
    }
}
