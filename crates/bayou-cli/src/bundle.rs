//! `bayou bundle`: anti-entropy over files ([P97 §4.1]). A replica exports
//! what another replica lacks into bundle files; the files travel on any
//! medium; the other replica imports them. Replicas never talk to each
//! other: this command talks to one replica at a time over RESP.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::app::connect;

/// `bayou bundle …`.
#[derive(Debug, clap::Subcommand)]
pub enum BundleCmd {
    /// Save a replica's summary (version vector, CSN), to export for it
    /// later from another replica it cannot reach.
    Summary {
        /// The replica (its RESP address).
        #[arg(long)]
        from: String,
        /// Where to write the summary.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write what a receiver lacks into bundle files OUT.1.bundle,
    /// OUT.2.bundle, …
    Export {
        /// The sending replica (its RESP address).
        #[arg(long)]
        from: String,
        /// The receiving replica's address, to ask for its summary now.
        #[arg(long, conflicts_with = "summary")]
        to: Option<String>,
        /// The receiver's summary saved by `bayou bundle summary`. Without
        /// --to or --summary the bundle holds everything (for an empty
        /// replica).
        #[arg(long)]
        summary: Option<PathBuf>,
        /// The files' path prefix.
        #[arg(long)]
        out: PathBuf,
        /// Largest file, in bytes (a larger session is split).
        #[arg(long, default_value_t = 64 << 20)]
        max_bytes: usize,
    },
    /// Import bundle files into a replica, in the order given. A file the
    /// replica cannot use yet (an earlier part is missing) or that is
    /// damaged is refused with nothing changed.
    Import {
        /// The receiving replica (its RESP address).
        #[arg(long)]
        to: String,
        /// The bundle files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

/// Runs a `bundle` subcommand.
pub fn run(cmd: BundleCmd) -> anyhow::Result<()> {
    match cmd {
        BundleCmd::Summary { from, out } => {
            let summary: Vec<u8> = redis::cmd("BAYOU.SUMMARY").query(&mut connect(&from)?)?;
            write(&out, &summary)?;
            println!("{}: summary of {from}", out.display());
        }
        BundleCmd::Export {
            from,
            to,
            summary,
            out,
            max_bytes,
        } => {
            let base: Option<Vec<u8>> = match (to, summary) {
                (Some(to), _) => Some(redis::cmd("BAYOU.SUMMARY").query(&mut connect(&to)?)?),
                (None, Some(path)) => Some(
                    std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                ),
                (None, None) => None,
            };
            let mut cmd = redis::cmd("BAYOU.EXPORT");
            if let Some(b) = base {
                cmd.arg(b);
            }
            cmd.arg("MAXBYTES").arg(max_bytes);
            let files: Vec<Vec<u8>> = cmd.query(&mut connect(&from)?)?;
            for (i, f) in files.iter().enumerate() {
                let path = PathBuf::from(format!("{}.{}.bundle", out.display(), i + 1));
                write(&path, f)?;
                println!("{}: {} bytes", path.display(), f.len());
            }
        }
        BundleCmd::Import { to, files } => {
            let mut con = connect(&to)?;
            for path in files {
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let reply: redis::RedisResult<Vec<redis::Value>> =
                    redis::cmd("BAYOU.IMPORT").arg(bytes).query(&mut con);
                match reply {
                    Ok(fields) => {
                        let text: Vec<String> = fields
                            .iter()
                            .map(|v| match v {
                                redis::Value::Int(n) => n.to_string(),
                                redis::Value::BulkString(b) => {
                                    String::from_utf8_lossy(b).into_owned()
                                }
                                other => format!("{other:?}"),
                            })
                            .collect();
                        let pairs: Vec<String> = text.chunks(2).map(|kv| kv.join("=")).collect();
                        println!("{}: imported ({})", path.display(), pairs.join(", "));
                    }
                    Err(e) => bail!("{}: {e}", path.display()),
                }
            }
        }
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
