//! Checksummed storage records, and opening a store so that damage is a
//! clear refusal rather than a panic or a silently served bad value.
//!
//! A **sealed record** is what both nodes store for each log entry,
//! checkpoint entry or key record:
//!
//! ```text
//! format (u8) | crc32 (u32, little-endian) of format, key and body | body
//! ```
//!
//! The key the record is stored under is part of the checksum (it is not
//! stored again): a byte changed in a key makes the record fail too, rather
//! than turn it into a valid record of another key.
//!
//! It is sealed when the node writes it, right after accepting the write,
//! and opened (its checksum verified) whenever it is read back from disk,
//! before anything uses it. redb keeps its pages consistent across crashes,
//! but does not verify a page's contents on a normal read: one flipped byte
//! of a value would be served as it is. The record's own checksum catches
//! it.
//!
//! [`open_checked`] opens a redb file for a node: it first opens it
//! read-only and lets the node verify every record it will need, and only
//! then opens it for writing. Damage found while reading, and a panic
//! inside the storage library on damaged pages, become [`OpenError`]s that
//! name the file, and leave its bytes as they were. (A file that was not
//! closed cleanly must be repaired by redb, which writes; such a file is
//! opened for writing first and verified after the repair.)

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use redb::{Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase};

/// Why a sealed record does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Shorter than its header.
    #[error("record of {0} bytes is shorter than its 5-byte header")]
    Short(usize),
    /// A format this build does not read.
    #[error("record format {found}, expected {expected}")]
    Format {
        /// The format byte found.
        found: u8,
        /// The one expected.
        expected: u8,
    },
    /// The bytes are not what was written.
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum {
        /// The checksum stored with the record.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
}

fn crc(format: u8, key: &[u8], body: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[format]);
    h.update(&(key.len() as u32).to_le_bytes());
    h.update(key);
    h.update(body);
    h.finalize()
}

/// Seals `body`, stored under `key`, as a record of `format`.
pub fn seal(format: u8, key: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(format);
    out.extend_from_slice(&crc(format, key, body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The body of a sealed record of `format` stored under `key`, once its
/// checksum matches.
pub fn unseal<'a>(record: &'a [u8], format: u8, key: &[u8]) -> Result<&'a [u8], SealError> {
    if record.len() < 5 {
        return Err(SealError::Short(record.len()));
    }
    if record[0] != format {
        return Err(SealError::Format {
            found: record[0],
            expected: format,
        });
    }
    let stored = u32::from_le_bytes([record[1], record[2], record[3], record[4]]);
    let body = &record[5..];
    let computed = crc(format, key, body);
    if stored != computed {
        return Err(SealError::Checksum { stored, computed });
    }
    Ok(body)
}

/// Why the storage library could not open or read a store. Nothing in the
/// file was changed, except by redb's own repair of a file that was not
/// closed cleanly.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The storage library could not open or read the file.
    #[error("the store {path} cannot be read: {detail}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the library said.
        detail: String,
    },
    /// The storage library panicked on the file's contents.
    #[error("the store {path} is damaged: the storage library failed on it ({detail})")]
    Panicked {
        /// The file.
        path: PathBuf,
        /// The panic's message.
        detail: String,
    },
    /// The file is open in this process already.
    #[error("the store {0} is in use")]
    InUse(PathBuf),
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Runs `f` and turns a panic into [`OpenError::Panicked`]: for every call
/// into the storage library on a file that may be damaged.
pub fn guarded<T>(path: &Path, f: impl FnOnce() -> T) -> Result<T, OpenError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| OpenError::Panicked {
        path: path.to_path_buf(),
        detail: panic_text(p),
    })
}

/// When a node's reading of its store happened ([`open_checked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Through a read-only view, before anything was written to the file.
    ReadOnly,
    /// After redb repaired a file that was not closed cleanly (the repair
    /// writes to it).
    AfterRepair,
}

/// Opens (or creates) the redb file at `path` for writing, after `read` has
/// read what exists: through a read-only view first, so that a refusal
/// (an error of `read`, or of the library, or a panic of the library)
/// leaves the file as it was; or, when redb must first repair a file that
/// was not closed cleanly, right after the writable open. Returns the
/// database and, for a file that existed, what `read` returned. The
/// library's failures become `E` through `library`. `cache_bytes` is redb's
/// page cache (`None`: redb's default). See the module documentation.
pub fn open_checked<T, E>(
    path: &Path,
    cache_bytes: Option<usize>,
    read: impl Fn(&ReadTransaction, Phase) -> Result<T, E>,
    library: impl Fn(OpenError) -> E,
) -> Result<(Database, Option<T>), E> {
    let unreadable = |detail: String| {
        library(OpenError::Unreadable {
            path: path.to_path_buf(),
            detail,
        })
    };
    let read_through = |begin: &dyn Fn() -> Result<ReadTransaction, redb::TransactionError>,
                        phase: Phase|
     -> Result<T, E> {
        let tx = guarded(path, begin)
            .map_err(&library)?
            .map_err(|e| unreadable(e.to_string()))?;
        guarded(path, || read(&tx, phase)).map_err(&library)?
    };
    let exists = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
    let mut found = None;
    if exists {
        // Read-only first: nothing is written while we look. If that open
        // fails, redb needs to repair the file, which only a writable open
        // does; the file is read after it, below.
        if let Ok(ro) = guarded(path, || ReadOnlyDatabase::open(path)).map_err(&library)? {
            found = Some(read_through(&|| ro.begin_read(), Phase::ReadOnly)?);
        }
    }
    let db = guarded(path, || {
        let mut builder = Database::builder();
        if let Some(bytes) = cache_bytes {
            builder.set_cache_size(bytes);
        }
        builder.create(path)
    })
    .map_err(&library)?
    .map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => library(OpenError::InUse(path.to_path_buf())),
        e => unreadable(e.to_string()),
    })?;
    if exists && found.is_none() {
        found = Some(read_through(&|| db.begin_read(), Phase::AfterRepair)?);
    }
    Ok((db, found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_record_opens_and_any_changed_byte_is_caught() {
        let rec = seal(3, b"k", b"hello");
        assert_eq!(unseal(&rec, 3, b"k"), Ok(&b"hello"[..]));
        for i in 0..rec.len() {
            for bit in 0..8 {
                let mut bad = rec.clone();
                bad[i] ^= 1 << bit;
                assert!(unseal(&bad, 3, b"k").is_err(), "byte {i} bit {bit}");
            }
        }
        assert!(unseal(&rec, 3, b"j").is_err(), "under another key");
        assert_eq!(unseal(&rec[..4], 3, b"k"), Err(SealError::Short(4)));
        assert!(matches!(
            unseal(&rec, 2, b"k"),
            Err(SealError::Format {
                found: 3,
                expected: 2
            })
        ));
    }

    #[test]
    fn a_store_that_fails_its_check_is_refused_without_a_change() {
        use redb::TableDefinition;
        const T: TableDefinition<&str, &[u8]> = TableDefinition::new("t");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let library = |e: OpenError| e.to_string();
        {
            let (db, found) = open_checked(&path, Some(1 << 20), |_, _| Ok(()), library).unwrap();
            assert!(found.is_none(), "a new file has nothing to read");
            let tx = db.begin_write().unwrap();
            tx.open_table(T).unwrap().insert("k", &b"v"[..]).unwrap();
            tx.commit().unwrap();
        }
        let (_, found) = open_checked(&path, None, |_, phase| Ok(phase), library).unwrap();
        assert_eq!(
            found,
            Some(Phase::ReadOnly),
            "a cleanly closed file is read read-only"
        );
        let before = std::fs::read(&path).unwrap();
        let Err(err) = open_checked(
            &path,
            None,
            |_, _| Err::<(), _>("record k: checksum mismatch".to_string()),
            library,
        ) else {
            panic!("a store that fails its check was opened");
        };
        assert_eq!(err, "record k: checksum mismatch");
        assert_eq!(std::fs::read(&path).unwrap(), before, "the file changed");
        // Garbage in place of the file: an error naming it, not a panic.
        std::fs::write(&path, vec![0xAB; 8192]).unwrap();
        let Err(err) = open_checked(&path, None, |_, _| Ok(()), library) else {
            panic!("garbage was opened");
        };
        assert!(err.contains("s.redb"), "{err}");
    }
}
