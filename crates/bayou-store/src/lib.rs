//! Durable storage for one Bayou replica.
//!
//! The protocol core ([`bayou_core::Replica`]) queues every change to its log
//! as an [`Item`] and requires the driver to make those items durable before it
//! acknowledges a client or sends anything produced afterwards. This crate is
//! where they go: the [`Storage`] trait, and [`RedbStore`], its implementation
//! on [redb](https://docs.rs/redb) (one file, copy-on-write B-trees, checksummed
//! commit slots, fsync on commit).
//!
//! # What is stored
//!
//! One redb file, `bayou.redb`, in the data directory, with four tables:
//!
//! * `identity`: `magic = "bayou-store"`, `format = FORMAT_VERSION` (u32 LE),
//!   `server = <id>`. Written once when the directory is created and checked
//!   on every open: a directory of another program, another format version or
//!   another replica is refused with a [`StoreError`], never reset.
//! * `log`: `seq (u64) -> record`, one record per durable batch holding
//!   its items, in the order they were made durable (format 5: each write
//!   with its author and its accepting server's signature,
//!   `bayou_core::auth`). Older stores are read as they are and upgraded in
//!   place: a format 4 store holds batches of writes without author or
//!   signature, a format 3 store one such item per record; their records
//!   stay and are read as writes with neither, new records are format 5.
//!   Replaying them through [`Replica::recover`] rebuilds the replica (log,
//!   version vector, CSN, logical clock, both views). One record a batch
//!   rather than one an item: a group commit of a hundred writes is one
//!   B-tree insert, not two hundred (a write and its commit), which was
//!   most of the storage thread's CPU under load.
//! * `meta`: `state -> record` holding the version vector, the CSN and the
//!   logical clock as of the last batch, and `checkpoint -> record` with the
//!   checkpoint's CSN and commit vector and the truncation point (OSN and
//!   omitted vector `O`, [P97 §3.3]).
//! * `checkpoint`: `key -> value`, the committed database after the first
//!   `csn` committed writes (the Tuple Store checkpoint of [T95 §7]). The
//!   core decides when to take one (`bayou_core::Retention`); the store
//!   replaces the table, and deletes every log record all of whose items
//!   the new `O` covers, in the same transaction as the batch it rides
//!   with (a record that also holds a write still retained stays, and its
//!   covered items are skipped when it is read). So the file holds the
//!   live data plus the retained log, never the whole history.
//!
//! Every record is sealed (`server_kit::sealed`): a one-byte format, a
//! CRC-32 of the format, the key it is stored under and the body, then the
//! body (postcard for log and meta records, the value for checkpoint
//! entries). A record whose checksum fails is reported by table and key,
//! and the replica refuses to start: the log is the truth, and a write
//! cannot be skipped. The operator's remedy is to move the data directory
//! away and start the replica empty: anti-entropy, or a full-state transfer
//! when the others have truncated, fills it again (docs/bayou-server.md).
//!
//! Opening reads and verifies every record through a read-only view of the
//! file first (`server_kit::sealed`), so a refused start changes no byte,
//! and a panic of the storage library on a damaged page is a refusal too.
//!
//! # Durability and group commit
//!
//! [`Storage::append`] writes one [`Batch`] in one redb write transaction with
//! `Durability::Immediate`: when it returns, the batch is on stable storage.
//! A driver batches the items of many clients into one call (group commit),
//! so one fsync serves them all. Log, state and checkpoint change in the same
//! transaction, so they can never disagree after a crash.
//!
//! # Recovery
//!
//! [`recover`] loads the checkpoint and replays the retained log on top
//! (`bayou_core::Replica::restore`), then checks the result against the
//! stored state; any disagreement is reported as corruption. Restart time
//! follows the live data and the retention window.

#![warn(missing_docs, unreachable_pub)]

use std::collections::BTreeMap;
#[cfg(test)]
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bayou_core::{
    Checkpoint, Csn, Db, Item, ProtocolError, Replica, Retention, Role, ServerId, Snapshot, Stamp,
    VersionVector, WriteId,
};
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use server_kit::datadir::{DataDir, DataDirError, IDENTITY_FILE, Kind};
use server_kit::sealed::{self, OpenError, Phase};

/// The on-disk format version this build writes (5: one sealed log record
/// per batch, writes with author and signature). It also reads format 4
/// (batches of writes without them) and format 3 (one sealed record per
/// item), and upgrades such a store to 5 when it opens it.
pub const FORMAT_VERSION: u32 = 5;

/// The oldest format version this build reads.
pub const OLDEST_FORMAT_READ: u32 = 3;

/// The name of the database file inside a data directory.
pub const DB_FILE: &str = "bayou.redb";

const MAGIC: &[u8] = b"bayou-store";
/// redb's page cache. Its default (1 GiB) lets the cache of a replica grow to
/// the size of its file (a large checkpoint is read whole at start and
/// rewritten whole by a full-state install), far beyond the live data the
/// replica holds in memory anyway; the operating system's page cache serves
/// re-reads.
const CACHE_BYTES: usize = 32 << 20;

/// Format byte of every sealed record but a batch's log record: meta and
/// checkpoint records, and the one-item log records of format 3.
const RECORD_VERSION: u8 = 2;
/// Format byte of a log record holding a batch of items whose writes have
/// no author or signature (format 4).
const BATCH_RECORD_VERSION: u8 = 3;
/// Format byte of a log record holding a batch of items whose writes carry
/// author and signature (format 5).
const SIGNED_BATCH_RECORD_VERSION: u8 = 4;

/// A log item as formats 3 and 4 stored it: the same encoding as
/// [`Item`] but for the write's two later fields.
#[derive(Serialize, Deserialize)]
enum LegacyItem {
    Write {
        write: LegacyWrite,
        csn: Option<Csn>,
    },
    Commit {
        id: WriteId,
        csn: Csn,
    },
}

/// A write as formats 3 and 4 stored it.
#[derive(Serialize, Deserialize)]
struct LegacyWrite {
    id: WriteId,
    op: bayou_core::Op,
}

#[cfg(test)]
impl From<&Item> for LegacyItem {
    /// What a format 3 or 4 build wrote for `item` (tests build old stores
    /// with it).
    fn from(item: &Item) -> LegacyItem {
        match item {
            Item::Write { write, csn } => LegacyItem::Write {
                write: LegacyWrite {
                    id: write.id.clone(),
                    op: write.op.clone(),
                },
                csn: *csn,
            },
            Item::Commit { id, csn } => LegacyItem::Commit {
                id: id.clone(),
                csn: *csn,
            },
        }
    }
}

impl From<LegacyItem> for Item {
    fn from(item: LegacyItem) -> Item {
        match item {
            LegacyItem::Write { write, csn } => Item::Write {
                write: bayou_core::Write::new(write.id, write.op),
                csn,
            },
            LegacyItem::Commit { id, csn } => Item::Commit { id, csn },
        }
    }
}

const IDENTITY: TableDefinition<&str, &[u8]> = TableDefinition::new("identity");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const CHECKPOINT: TableDefinition<&[u8], &[u8]> = TableDefinition::new("checkpoint");

/// The replica's counters as of the last durable batch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The version vector.
    pub vv: VersionVector,
    /// The highest CSN known.
    pub csn: Csn,
    /// The logical clock.
    pub logical_clock: Stamp,
}

impl State {
    /// The state of `replica` now.
    pub fn of(replica: &Replica) -> State {
        State {
            vv: replica.vv().clone(),
            csn: replica.csn(),
            logical_clock: replica.logical_clock(),
        }
    }
}

/// The checkpoint's small fields, stored in `meta` beside its table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct CheckpointMeta {
    csn: Csn,
    vv: VersionVector,
    osn: Csn,
    omitted: VersionVector,
}

/// One unit of durability: everything to write in one transaction.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// Items drained from [`Replica::take_persist`], in order.
    pub items: Vec<Item>,
    /// The replica's state after the items.
    pub state: State,
    /// A new checkpoint to replace the stored one, from
    /// [`Replica::take_checkpoint`].
    pub checkpoint: Option<Arc<Checkpoint>>,
}

impl Batch {
    /// Appends `later`, which was taken from the same replica after `self`.
    pub fn merge(&mut self, later: Batch) {
        self.items.extend(later.items);
        self.state = later.state;
        self.checkpoint = match (self.checkpoint.take(), later.checkpoint) {
            (Some(a), Some(b)) => Some(Arc::new(a.merge(&b))),
            (a, b) => b.or(a),
        };
    }
}

/// Everything a data directory holds, as read at start-up.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The retained log items in the order they were made durable.
    pub items: Vec<Item>,
    /// The state stored with the last batch (`None` in a new directory).
    pub state: Option<State>,
    /// The last checkpoint (`None` until the first).
    pub checkpoint: Option<Checkpoint>,
}

/// Why storage failed. Every variant is fatal for the replica: the driver
/// stops, and a restart recovers from what is durable.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory holds files but no Bayou database.
    #[error(
        "{0} is not a Bayou data directory (it is not empty and has no {DB_FILE}); refusing to use it"
    )]
    Foreign(PathBuf),
    /// The database file is not one this program wrote, or is damaged.
    #[error("{path} is corrupt or not a Bayou store: {reason}; refusing to start")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The directory was written by another on-disk format version.
    #[error(
        "{path} has store format version {found}; this build reads versions {OLDEST_FORMAT_READ} to {FORMAT_VERSION}"
    )]
    UnsupportedFormat {
        /// The database file.
        path: PathBuf,
        /// The version found.
        found: u32,
    },
    /// The directory belongs to another replica.
    #[error("{path} belongs to replica {found}, not {expected}")]
    WrongServer {
        /// The database file.
        path: PathBuf,
        /// The replica that was asked to open it.
        expected: ServerId,
        /// The replica that created it.
        found: String,
    },
    /// The log does not replay into a valid replica.
    #[error("the log in {path} is not a valid history: {source}")]
    InvalidHistory {
        /// The database file.
        path: PathBuf,
        /// The protocol rule the log breaks.
        source: ProtocolError,
    },
    /// A checkpoint ahead of the state stored with it.
    #[error("checkpoint at CSN {checkpoint_csn} is ahead of the batch's CSN {state_csn}")]
    BadBatch {
        /// The checkpoint's CSN.
        checkpoint_csn: Csn,
        /// The CSN the batch's state claims.
        state_csn: Csn,
    },
    /// Another process (or another store in this one) has the database open.
    #[error("{0} is in use by another running replica")]
    Locked(PathBuf),
    /// The file system failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The database engine failed.
    #[error("database error: {0}")]
    Db(#[from] redb::Error),
}

fn db_err<E: Into<redb::Error>>(e: E) -> StoreError {
    StoreError::Db(e.into())
}

/// Durable storage for one replica. See the crate documentation.
pub trait Storage: Send {
    /// The replica this storage belongs to.
    fn server(&self) -> &ServerId;

    /// Reads everything stored.
    fn load(&mut self) -> Result<Loaded, StoreError>;

    /// Writes `batch` in one transaction. When this returns `Ok`, the batch is
    /// durable; on `Err`, nothing of it may be assumed durable.
    fn append(&mut self, batch: &Batch) -> Result<(), StoreError>;
}

/// [`Storage`] in a redb file. See the crate documentation.
pub struct RedbStore {
    /// The data directory, locked while the store is open.
    _dir: DataDir,
    /// `None` only while the store is dropped.
    db: Option<Database>,
    path: PathBuf,
    server: ServerId,
    next_seq: u64,
    /// The writes each stored log record concerns that no checkpoint covers
    /// yet, by sequence number, so a checkpoint can delete the records it
    /// covers without reading them.
    index: BTreeMap<u64, Vec<WriteId>>,
    /// What the read-only verification at open read, handed to the first
    /// [`Storage::load`] so the file is read once.
    preloaded: Option<(Loaded, BTreeMap<u64, Vec<WriteId>>)>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("server", &self.server)
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

impl RedbStore {
    /// Opens the data directory `dir` for replica `server`, creating it (and
    /// the database) when it does not exist or is empty. A directory that
    /// holds anything else, or a database of another format or replica, is
    /// refused.
    pub fn open(dir: &Path, server: &ServerId) -> Result<RedbStore, StoreError> {
        // The kit's data directory: identity file and lock, and refusal of
        // someone else's directory, the same as Chord's. A directory from
        // before identity files (only `bayou.redb`) is adopted.
        const KIND: Kind = Kind {
            name: "bayou",
            title: "Bayou",
            node: "replica",
            legacy_files: &[DB_FILE],
        };
        let data_dir = DataDir::open(dir, &KIND, server.as_str()).map_err(|e| match e {
            DataDirError::Foreign { path, .. } => StoreError::Foreign(path),
            DataDirError::WrongNode { path, found, .. } => StoreError::WrongServer {
                path,
                expected: server.clone(),
                found,
            },
            DataDirError::Locked(path) => StoreError::Locked(path),
            DataDirError::Io { path, source } => StoreError::Io { path, source },
            e @ (DataDirError::WrongKind { .. } | DataDirError::BadIdentity { .. }) => {
                StoreError::Corrupt {
                    path: dir.join(IDENTITY_FILE),
                    reason: e.to_string(),
                }
            }
        })?;
        let path = dir.join(DB_FILE);
        let exists = path.exists();
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        // Identity checked and every record read and verified before the
        // file is opened for writing (or, for a file redb must repair first,
        // right after); the library's failures and panics are refusals.
        let (db, preloaded) = sealed::open_checked(
            &path,
            Some(CACHE_BYTES),
            |tx, phase| {
                check_identity(tx, &path, server)?;
                read_all(tx, &path).map_err(|e| match (e, phase) {
                    (StoreError::Corrupt { path, reason }, Phase::ReadOnly) => {
                        StoreError::Corrupt {
                            path,
                            reason: format!("{reason} (nothing was changed)"),
                        }
                    }
                    (e, _) => e,
                })
            },
            |e| match e {
                OpenError::InUse(path) => StoreError::Locked(path),
                e => corrupt(e.to_string()),
            },
        )?;
        if !exists {
            let tx = db.begin_write().map_err(db_err)?;
            {
                let mut t = tx.open_table(IDENTITY).map_err(db_err)?;
                t.insert("magic", MAGIC).map_err(db_err)?;
                t.insert("format", &FORMAT_VERSION.to_le_bytes()[..])
                    .map_err(db_err)?;
                t.insert("server", server.as_str().as_bytes())
                    .map_err(db_err)?;
                tx.open_table(LOG).map_err(db_err)?;
                tx.open_table(META).map_err(db_err)?;
                tx.open_table(CHECKPOINT).map_err(db_err)?;
            }
            tx.commit().map_err(db_err)?;
        } else if stored_format(&db)? < FORMAT_VERSION {
            // Every record it holds stays readable; new log records are
            // format 5 batches (writes with author and signature), which an
            // older build could not read, so the format field says so.
            let tx = db.begin_write().map_err(db_err)?;
            tx.open_table(IDENTITY)
                .map_err(db_err)?
                .insert("format", &FORMAT_VERSION.to_le_bytes()[..])
                .map_err(db_err)?;
            tx.commit().map_err(db_err)?;
        }
        // Check the identity of what we opened.
        let tx = db.begin_read().map_err(db_err)?;
        check_identity(&tx, &path, server)?;
        let log = tx
            .open_table(LOG)
            .map_err(|e| corrupt(format!("no log table ({e})")))?;
        let next_seq = match log.last().map_err(db_err)? {
            Some((k, _)) => k.value() + 1,
            None => 0,
        };
        tx.open_table(META)
            .map_err(|e| corrupt(format!("no meta table ({e})")))?;
        drop(log);
        drop(tx);
        Ok(RedbStore {
            _dir: data_dir,
            db: Some(db),
            path,
            server: server.clone(),
            next_seq,
            index: BTreeMap::new(),
            preloaded,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sequence number the next log record gets (records below it
    /// were written, some since deleted by checkpoints).
    pub fn log_len(&self) -> u64 {
        self.next_seq
    }

    /// How many log records are stored now.
    pub fn retained_records(&self) -> usize {
        self.index.len()
    }

    /// How many stored log items no checkpoint covers yet.
    pub fn retained_items(&self) -> usize {
        self.index.values().map(Vec::len).sum()
    }

    fn db(&self) -> &Database {
        self.db
            .as_ref()
            .expect("the database is open until the store drops")
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }
}

impl Drop for RedbStore {
    /// Closing a file that turned out to be damaged (a replica refused to
    /// start on it) can panic inside redb; the refusal is the answer, so
    /// the panic is caught rather than turned into an abort of the process.
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            let _ = sealed::guarded(&self.path, move || drop(db));
        }
    }
}

/// Checks the identity table: magic, format version, server id.
fn check_identity(
    tx: &redb::ReadTransaction,
    path: &Path,
    server: &ServerId,
) -> Result<(), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let ident = tx
        .open_table(IDENTITY)
        .map_err(|e| corrupt(format!("no identity table ({e})")))?;
    let field = |name: &str| -> Result<Vec<u8>, StoreError> {
        Ok(ident
            .get(name)
            .map_err(db_err)?
            .map(|v| v.value().to_vec())
            .unwrap_or_default())
    };
    if field("magic")? != MAGIC {
        return Err(corrupt("identity record has no Bayou magic".into()));
    }
    let format = parse_format(&field("format")?).map_err(corrupt)?;
    if !(OLDEST_FORMAT_READ..=FORMAT_VERSION).contains(&format) {
        return Err(StoreError::UnsupportedFormat {
            path: path.to_path_buf(),
            found: format,
        });
    }
    let found = String::from_utf8_lossy(&field("server")?).into_owned();
    if found != server.as_str() {
        return Err(StoreError::WrongServer {
            path: path.to_path_buf(),
            expected: server.clone(),
            found,
        });
    }
    Ok(())
}

/// The stored format version field.
fn parse_format(field: &[u8]) -> Result<u32, String> {
    let format: [u8; 4] = field
        .try_into()
        .map_err(|_| "format version is not 4 bytes".to_string())?;
    Ok(u32::from_le_bytes(format))
}

/// The format version of an opened store whose identity was checked.
fn stored_format(db: &Database) -> Result<u32, StoreError> {
    let tx = db.begin_read().map_err(db_err)?;
    let ident = tx.open_table(IDENTITY).map_err(db_err)?;
    let field = ident.get("format").map_err(db_err)?;
    let field = field.map(|v| v.value().to_vec()).unwrap_or_default();
    parse_format(&field).map_err(|reason| StoreError::Corrupt {
        path: PathBuf::from(DB_FILE),
        reason,
    })
}

/// Decodes the log record stored under sequence number `seq`, as a
/// replica's start does: checksum first, then the items (a batch of
/// format 5 or 4, or the single item of a format 3 record). Public for the
/// fuzz targets (`crates/fuzz-targets`).
pub fn decode_log_record(seq: u64, bytes: &[u8]) -> Result<Vec<Item>, String> {
    let key = seq.to_be_bytes();
    let items: Vec<Item> = match bytes.first() {
        Some(&RECORD_VERSION) => {
            return decode::<LegacyItem>(&key, bytes).map(|item| vec![item.into()]);
        }
        Some(&BATCH_RECORD_VERSION) => {
            let body =
                sealed::unseal(bytes, BATCH_RECORD_VERSION, &key).map_err(|e| e.to_string())?;
            let items: Vec<LegacyItem> = postcard::from_bytes(body).map_err(|e| e.to_string())?;
            items.into_iter().map(Item::from).collect()
        }
        _ => {
            let body = sealed::unseal(bytes, SIGNED_BATCH_RECORD_VERSION, &key)
                .map_err(|e| e.to_string())?;
            postcard::from_bytes(body).map_err(|e| e.to_string())?
        }
    };
    if items.is_empty() {
        return Err("empty batch".into());
    }
    Ok(items)
}

/// Seals `items` as the log record stored under `seq`.
pub fn encode_log_record(seq: u64, items: &[Item]) -> Vec<u8> {
    // Serialising our own plain data into a Vec cannot fail.
    let body = postcard::to_stdvec(items).expect("postcard encodes plain data");
    sealed::seal(SIGNED_BATCH_RECORD_VERSION, &seq.to_be_bytes(), &body)
}

/// `value` sealed as the record stored under `key`.
fn encode<T: Serialize>(key: &[u8], value: &T) -> Vec<u8> {
    // Serialising our own plain data into a Vec cannot fail.
    let body = postcard::to_stdvec(value).expect("postcard encodes plain data");
    sealed::seal(RECORD_VERSION, key, &body)
}

/// The value of the record stored under `key`, checksum verified.
fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T, String> {
    let body = sealed::unseal(bytes, RECORD_VERSION, key).map_err(|e| e.to_string())?;
    postcard::from_bytes(body).map_err(|e| e.to_string())
}

impl Storage for RedbStore {
    fn server(&self) -> &ServerId {
        &self.server
    }

    fn load(&mut self) -> Result<Loaded, StoreError> {
        let (loaded, index) = match self.preloaded.take() {
            Some(p) => p,
            None => {
                let path = self.path.clone();
                let db = self.db();
                sealed::guarded(&path, || -> Result<_, StoreError> {
                    let tx = db.begin_read().map_err(db_err)?;
                    read_all(&tx, &path)
                })
                .map_err(|e| self.corrupt(e.to_string()))??
            }
        };
        self.index = index;
        Ok(loaded)
    }

    fn append(&mut self, batch: &Batch) -> Result<(), StoreError> {
        if let Some(cp) = &batch.checkpoint
            && cp.snapshot.csn > batch.state.csn
        {
            return Err(StoreError::BadBatch {
                checkpoint_csn: cp.snapshot.csn,
                state_csn: batch.state.csn,
            });
        }
        let tx = self.db().begin_write().map_err(db_err)?;
        // The index changes only once the transaction committed, so a failed
        // append leaves it describing the file; it is not cloned per batch
        // (a clone of the retained window's entries for every group commit
        // was most of the store's allocation traffic).
        let seq = self.next_seq;
        let mut covered = Vec::new();
        {
            let mut log = tx.open_table(LOG).map_err(db_err)?;
            if !batch.items.is_empty() {
                log.insert(seq, encode_log_record(seq, &batch.items).as_slice())
                    .map_err(db_err)?;
            }
            let mut meta = tx.open_table(META).map_err(db_err)?;
            meta.insert("state", encode(b"state", &batch.state).as_slice())
                .map_err(db_err)?;
            if let Some(cp) = &batch.checkpoint {
                let m = CheckpointMeta {
                    csn: cp.snapshot.csn,
                    vv: cp.snapshot.vv.clone(),
                    osn: cp.osn,
                    omitted: cp.omitted.clone(),
                };
                meta.insert("checkpoint", encode(b"checkpoint", &m).as_slice())
                    .map_err(db_err)?;
                // The records all of whose writes are discarded go with the
                // checkpoint (the new one's too, when the checkpoint covers
                // every write it carries).
                let discarded = |id: &WriteId| cp.omitted.covers(id);
                covered.extend(
                    (self.index.iter())
                        .filter(|(_, ids)| ids.iter().all(discarded))
                        .map(|(&seq, _)| seq),
                );
                if !batch.items.is_empty() && batch.items.iter().map(item_write).all(discarded) {
                    covered.push(seq);
                }
                for &seq in &covered {
                    log.remove(seq).map_err(db_err)?;
                }
            }
        }
        if let Some(cp) = &batch.checkpoint {
            match &cp.changed {
                // Only the keys that changed since the stored checkpoint.
                Some(keys) => {
                    let mut table = tx.open_table(CHECKPOINT).map_err(db_err)?;
                    for k in keys {
                        match cp.snapshot.db.get(k) {
                            Some(v) => table
                                .insert(&k[..], sealed::seal(RECORD_VERSION, k, v).as_slice())
                                .map_err(db_err)?,
                            None => table.remove(&k[..]).map_err(db_err)?,
                        };
                    }
                }
                None => {
                    tx.delete_table(CHECKPOINT).map_err(db_err)?;
                    let mut table = tx.open_table(CHECKPOINT).map_err(db_err)?;
                    for (k, v) in cp.snapshot.db.iter() {
                        table
                            .insert(&k[..], sealed::seal(RECORD_VERSION, k, v).as_slice())
                            .map_err(db_err)?;
                    }
                }
            }
        }
        // The default durability is `Immediate`: commit returns once the
        // transaction is fsynced.
        tx.commit().map_err(db_err)?;
        if !batch.items.is_empty() {
            self.index.insert(
                seq,
                batch.items.iter().map(|i| item_write(i).clone()).collect(),
            );
            self.next_seq += 1;
        }
        for seq in covered {
            self.index.remove(&seq);
        }
        if let Some(cp) = &batch.checkpoint {
            // Covered writes of records that stay are forgotten, so a
            // record's list holds only what keeps it.
            for ids in self.index.values_mut() {
                ids.retain(|id| !cp.omitted.covers(id));
            }
        }
        Ok(())
    }
}

/// Reads and verifies every record: the retained log (with the write each
/// item concerns, by sequence number), the state and the checkpoint. The
/// first record that fails its checksum or does not decode is reported by
/// table and key.
fn read_all(
    tx: &redb::ReadTransaction,
    path: &Path,
) -> Result<(Loaded, BTreeMap<u64, Vec<WriteId>>), StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let meta = tx.open_table(META).map_err(db_err)?;
    let state = match meta.get("state").map_err(db_err)? {
        Some(v) => {
            Some(decode(b"state", v.value()).map_err(|e| corrupt(format!("state record: {e}")))?)
        }
        None => None,
    };
    let meta_cp: Option<CheckpointMeta> = match meta.get("checkpoint").map_err(db_err)? {
        Some(v) => Some(
            decode(b"checkpoint", v.value())
                .map_err(|e| corrupt(format!("checkpoint record: {e}")))?,
        ),
        None => None,
    };
    // Items of discarded writes in a record kept for a write still
    // retained are skipped: the checkpoint holds their effect.
    let omitted = meta_cp
        .as_ref()
        .map(|m| m.omitted.clone())
        .unwrap_or_default();
    let mut index = BTreeMap::new();
    let log = tx.open_table(LOG).map_err(db_err)?;
    let mut items = Vec::new();
    let mut previous: Option<u64> = None;
    for entry in log.iter().map_err(db_err)? {
        let (k, v) = entry.map_err(db_err)?;
        let seq = k.value();
        if previous.is_some_and(|p| p >= seq) {
            return Err(corrupt(format!("log record {seq} follows {previous:?}")));
        }
        previous = Some(seq);
        let record = decode_log_record(seq, v.value())
            .map_err(|e| corrupt(format!("log record {seq}: {e}")))?;
        let kept: Vec<Item> = record
            .into_iter()
            .filter(|item| !omitted.covers(item_write(item)))
            .collect();
        index.insert(seq, kept.iter().map(|i| item_write(i).clone()).collect());
        items.extend(kept);
    }
    let checkpoint = match meta_cp {
        None => None,
        Some(m) => {
            let cp = tx.open_table(CHECKPOINT).map_err(db_err)?;
            let mut db = Db::new();
            for entry in cp.iter().map_err(db_err)? {
                let (k, v) = entry.map_err(db_err)?;
                let value = sealed::unseal(v.value(), RECORD_VERSION, k.value()).map_err(|e| {
                    corrupt(format!(
                        "checkpoint entry {:?}: {e}",
                        String::from_utf8_lossy(k.value())
                    ))
                })?;
                db.insert(
                    Bytes::copy_from_slice(k.value()),
                    Bytes::copy_from_slice(value),
                );
            }
            Some(Checkpoint {
                snapshot: Snapshot {
                    csn: m.csn,
                    vv: m.vv,
                    db: Arc::new(db),
                },
                osn: m.osn,
                omitted: m.omitted,
                changed: None,
            })
        }
    };
    Ok((
        Loaded {
            items,
            state,
            checkpoint,
        },
        index,
    ))
}

/// The write a log item concerns.
fn item_write(item: &Item) -> &WriteId {
    match item {
        Item::Write { write, .. } => &write.id,
        Item::Commit { id, .. } => id,
    }
}

/// Drains `replica`'s persistence queue (items and checkpoint) into a
/// [`Batch`], or `None` when there is nothing to persist.
pub fn take_batch(replica: &mut Replica) -> Option<Batch> {
    if !replica.has_unpersisted() {
        return None;
    }
    Some(Batch {
        items: replica.take_persist(),
        checkpoint: replica.take_checkpoint(),
        state: State::of(replica),
    })
}

/// Rebuilds replica `id` from `store` (its checkpoint, then its retained
/// log), and checks the result against the stored state. Commits the
/// recovery itself produced (a primary commits writes it persisted but had
/// not committed) are left in the replica's persistence queue; the caller
/// must persist them first.
pub fn recover(
    store: &mut dyn Storage,
    role: Role,
    retention: Retention,
) -> Result<Replica, StoreError> {
    recover_with_authority(store, role, retention, None)
}

/// [`recover`] for a replica that signs and verifies writes and checks
/// authors' permissions (`bayou_core::auth`): the authority is set before
/// the log is replayed, so replayed writes execute as they did first.
pub fn recover_with_authority(
    store: &mut dyn Storage,
    role: Role,
    retention: Retention,
    authority: Option<Arc<dyn bayou_core::WriteAuthority>>,
) -> Result<Replica, StoreError> {
    let id = store.server().clone();
    let loaded = store.load()?;
    let path = PathBuf::from(format!("data directory of {id}"));
    let had_checkpoint = loaded.checkpoint.is_some();
    let had_items = !loaded.items.is_empty();
    let replica = Replica::restore_with_authority(
        id,
        role,
        retention,
        loaded.checkpoint,
        loaded.items,
        authority,
    )
    .map_err(|source| StoreError::InvalidHistory {
        path: path.clone(),
        source,
    })?;
    let corrupt = |reason: String| StoreError::Corrupt {
        path: path.clone(),
        reason,
    };
    if let Some(state) = &loaded.state {
        if &state.vv != replica.vv() {
            return Err(corrupt(format!(
                "stored version vector {:?} but the log replays to {:?}",
                state.vv,
                replica.vv()
            )));
        }
        // A recovering primary may commit more than was stored; never fewer.
        if state.csn > replica.csn() || (state.csn != replica.csn() && !replica.is_primary()) {
            return Err(corrupt(format!(
                "stored CSN {} but the log replays to {}",
                state.csn,
                replica.csn()
            )));
        }
        if state.logical_clock != replica.logical_clock() {
            return Err(corrupt(format!(
                "stored logical clock {} but the log replays to {}",
                state.logical_clock,
                replica.logical_clock()
            )));
        }
    } else if had_items || had_checkpoint {
        return Err(corrupt("log records but no state record".into()));
    }
    Ok(replica)
}

#[cfg(test)]
mod tests;
