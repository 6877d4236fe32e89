//! Opening a node's data directory, the same way for both nodes: a
//! [`DataDir`] is a directory with an identity file ([`IDENTITY_FILE`]:
//! magic, format version, node kind, node id) and an exclusive lock on
//! [`LOCK_FILE`] held as long as the `DataDir` lives.
//!
//! [`DataDir::open`] creates the directory (or uses an empty one) and
//! writes the identity; it reopens a directory whose identity names the
//! same kind and node; and it refuses, with an error naming the path and
//! what it found, and **without changing anything**:
//!
//! * a directory that is not empty and has no identity (someone else's
//!   files), unless everything in it is one of the files the node lists as
//!   its own from before identity files existed (then the identity is
//!   added);
//! * a directory of another kind of node (a Bayou directory given to
//!   Chord) or of another node id;
//! * an identity of another magic or format version;
//! * a directory another running process has locked.
//!
//! The identity is a small text file, so an operator can read it:
//!
//! ```text
//! server-kit data directory
//! format 1
//! kind chord
//! node 5a0f…
//! ```

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The identity file in a data directory.
pub const IDENTITY_FILE: &str = "IDENTITY";

/// The lock file in a data directory.
pub const LOCK_FILE: &str = "LOCK";

/// The first line of an identity file.
const MAGIC: &str = "server-kit data directory";

/// The identity file format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// What kind of node a directory belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// As written in the identity file, e.g. `bayou`.
    pub name: &'static str,
    /// As shown in errors, e.g. `Bayou`.
    pub title: &'static str,
    /// What a node of this kind is called, e.g. `replica`.
    pub node: &'static str,
    /// Files a node of this kind kept in its directory before identity
    /// files existed: a directory holding only these is adopted.
    pub legacy_files: &'static [&'static str],
}

/// Why a data directory was refused.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Not empty, and no identity.
    #[error(
        "{path} is not a {title} data directory (it is not empty and has no {IDENTITY_FILE}; found {found}); refusing to use it"
    )]
    Foreign {
        /// The directory.
        path: PathBuf,
        /// Its kind's title.
        title: &'static str,
        /// Some of what it holds.
        found: String,
    },
    /// Another kind of node's directory.
    #[error("{path} belongs to a {found} node, not a {expected} one; refusing to use it")]
    WrongKind {
        /// The directory.
        path: PathBuf,
        /// The kind in the identity.
        found: String,
        /// This node's kind.
        expected: &'static str,
    },
    /// Another node's directory.
    #[error("{path} belongs to {noun} {found}, not {expected}; refusing to use it")]
    WrongNode {
        /// The directory.
        path: PathBuf,
        /// What a node is called.
        noun: &'static str,
        /// The node in the identity.
        found: String,
        /// This node.
        expected: String,
    },
    /// An identity file this build cannot read.
    #[error("{path} is not an identity this program wrote: {reason}; refusing to use it")]
    BadIdentity {
        /// The identity file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another running process holds the lock.
    #[error("{0} is in use by another running node")]
    Locked(PathBuf),
    /// The file system failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// An open, locked data directory. The lock is released when it drops.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

impl DataDir {
    /// Opens (or creates) the data directory `path` for node `node` of
    /// `kind`. See the module documentation for what is refused.
    pub fn open(path: &Path, kind: &Kind, node: &str) -> Result<DataDir, DataDirError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| DataDirError::Io { path: p, source }
        };
        fs::create_dir_all(path).map_err(io(path))?;
        let identity = path.join(IDENTITY_FILE);
        let known = match fs::read_to_string(&identity) {
            Ok(text) => {
                check(&identity, &text, path, kind, node)?;
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut found = Vec::new();
                for entry in fs::read_dir(path).map_err(io(path))? {
                    let name = entry.map_err(io(path))?.file_name();
                    let name = name.to_string_lossy().into_owned();
                    if name != LOCK_FILE
                        && !name.starts_with(IDENTITY_FILE)
                        && !kind.legacy_files.contains(&name.as_str())
                    {
                        found.push(name);
                    }
                }
                if !found.is_empty() {
                    found.sort();
                    let more = found.len().saturating_sub(3);
                    found.truncate(3);
                    let mut found = found.join(", ");
                    if more > 0 {
                        found += &format!(" and {more} more");
                    }
                    return Err(DataDirError::Foreign {
                        path: path.to_path_buf(),
                        title: kind.title,
                        found,
                    });
                }
                false
            }
            Err(e) => return Err(io(&identity)(e)),
        };
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(DataDirError::Locked(path.to_path_buf())),
            Err(TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        if !known {
            write_identity(path, kind, node).map_err(io(&identity))?;
        }
        Ok(DataDir {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Checks an identity file's text.
fn check(
    identity: &Path,
    text: &str,
    path: &Path,
    kind: &Kind,
    node: &str,
) -> Result<(), DataDirError> {
    let bad = |reason: String| DataDirError::BadIdentity {
        path: identity.to_path_buf(),
        reason,
    };
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(bad(format!("the first line is not \"{MAGIC}\"")));
    }
    let mut field = |name: &str| -> Result<String, DataDirError> {
        lines
            .next()
            .and_then(|l| l.strip_prefix(name))
            .and_then(|v| v.strip_prefix(' '))
            .map(str::to_string)
            .ok_or_else(|| bad(format!("no `{name}` line")))
    };
    let format = field("format")?;
    if format != FORMAT_VERSION.to_string() {
        return Err(bad(format!(
            "format {format}, this build reads format {FORMAT_VERSION}"
        )));
    }
    let found_kind = field("kind")?;
    if found_kind != kind.name {
        return Err(DataDirError::WrongKind {
            path: path.to_path_buf(),
            found: found_kind,
            expected: kind.name,
        });
    }
    let found = field("node")?;
    if found != node {
        return Err(DataDirError::WrongNode {
            path: path.to_path_buf(),
            noun: kind.node,
            found,
            expected: node.to_string(),
        });
    }
    Ok(())
}

/// Writes the identity durably: a temporary file, fsynced, renamed into
/// place, and the directory fsynced.
fn write_identity(path: &Path, kind: &Kind, node: &str) -> std::io::Result<()> {
    let tmp = path.join(format!("{IDENTITY_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    write!(
        f,
        "{MAGIC}\nformat {FORMAT_VERSION}\nkind {}\nnode {node}\n",
        kind.name
    )?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path.join(IDENTITY_FILE))?;
    File::open(path)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHORD: Kind = Kind {
        name: "chord",
        title: "Chord",
        node: "node",
        legacy_files: &["records.redb"],
    };
    const BAYOU: Kind = Kind {
        name: "bayou",
        title: "Bayou",
        node: "replica",
        legacy_files: &["bayou.redb"],
    };

    fn entries(p: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_new_directory_gets_an_identity_and_reopens_for_the_same_node_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let d = DataDir::open(&dir, &CHORD, "ab").unwrap();
        assert_eq!(entries(&dir), vec![IDENTITY_FILE, LOCK_FILE]);
        // Locked while open.
        assert!(matches!(
            DataDir::open(&dir, &CHORD, "ab"),
            Err(DataDirError::Locked(_))
        ));
        drop(d);
        DataDir::open(&dir, &CHORD, "ab").unwrap();
        let e = DataDir::open(&dir, &CHORD, "cd").unwrap_err();
        assert!(matches!(e, DataDirError::WrongNode { .. }), "{e}");
        assert!(e.to_string().contains("belongs to node ab, not cd"), "{e}");
        let e = DataDir::open(&dir, &BAYOU, "ab").unwrap_err();
        assert!(
            e.to_string()
                .contains("belongs to a chord node, not a bayou one"),
            "{e}"
        );
    }

    #[test]
    fn a_foreign_directory_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("thesis.tex"), "precious").unwrap();
        let e = DataDir::open(tmp.path(), &CHORD, "ab").unwrap_err();
        assert!(
            e.to_string().contains("not a Chord data directory")
                && e.to_string().contains("thesis.tex"),
            "{e}"
        );
        assert_eq!(entries(tmp.path()), vec!["thesis.tex"]);
        // A bad identity is refused too.
        let other = tmp.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::write(other.join(IDENTITY_FILE), "hello\n").unwrap();
        assert!(matches!(
            DataDir::open(&other, &CHORD, "ab"),
            Err(DataDirError::BadIdentity { .. })
        ));
    }

    #[test]
    fn a_directory_of_only_legacy_files_is_adopted() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("records.redb"), "x").unwrap();
        DataDir::open(tmp.path(), &CHORD, "ab").unwrap();
        assert_eq!(
            entries(tmp.path()),
            vec![IDENTITY_FILE, LOCK_FILE, "records.redb"]
        );
    }
}
