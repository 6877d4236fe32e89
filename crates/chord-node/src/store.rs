//! Durable records: redb under the core's [`KeyStore`].
//!
//! The data plane ([`chord_core::data::DataPlane`]) reads and changes records
//! synchronously through [`KeyStore`]; [`RedbKeyStore`] serves those calls
//! from memory (every record is loaded at start) and remembers which keys
//! changed. When the plane asks for durability (`Persist { token }`), the
//! driver takes the changes ([`RedbKeyStore::take_changes`]) and hands them
//! to the [`Persister`] thread (the kit's group-commit thread,
//! [`server_kit::commit`], the same as Bayou's), which writes them to redb in
//! one transaction with one fsync (`Durability::Immediate`), grouping the
//! batches that queued up meanwhile, and then reports the token back; only
//! then does the plane send the acknowledgements that promise durability. A
//! failed write stops the process with exit status 70, acknowledging
//! nothing it covered (the kit's storage-failure policy, as for Bayou).
//!
//! Records are keyed by the key's 160-bit id in big-endian; each value is a
//! sealed record (`server_kit::sealed`: format byte, CRC-32 of format, key
//! and body) of postcard [`Record`] `{name, value | tombstone, version}`.
//! A record whose checksum fails when the node starts is not loaded: the
//! node logs it by key id (a warning) and serves the key as if it had no
//! copy, so anti-entropy fetches it again
//! from the key's other replicas (and a write replaces it). Records of
//! format 3 (before records named their author) and format 2 (before
//! checksums) are still read, as records without an author. A panic of redb on a damaged
//! file is a refusal to start, checked read-only first so nothing is
//! written.

use std::collections::BTreeMap;
use std::path::Path;

use chord_core::Id;
use chord_core::data::{KeyStore, MemStore, Record};
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition};
use server_kit::commit::{self, Committer};
use server_kit::datadir::{DataDir, DataDirError, Kind};
use server_kit::sealed;

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Format byte of every stored record: 4 is sealed (checksummed) with the
/// record's author; 3 is sealed without an author and 2 the same body
/// without a checksum, both still read (as records without an author); 1
/// was the driver's own record type before the data plane moved into
/// chord-core.
const RECORD_FORMAT: u8 = 4;
const RECORD_FORMAT_NO_AUTHOR: u8 = 3;
const RECORD_FORMAT_UNSEALED: u8 = 2;

/// A record of formats 2 and 3: [`Record`] before it named its author.
#[derive(serde::Deserialize)]
struct RecordWithoutAuthor {
    name: Vec<u8>,
    value: Option<Vec<u8>>,
    version: chord_core::data::Version,
}

impl From<RecordWithoutAuthor> for Record {
    fn from(r: RecordWithoutAuthor) -> Record {
        Record {
            name: r.name,
            value: r.value,
            version: r.version,
            author: None,
        }
    }
}

/// Storage failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded database failed.
    #[error("database: {0}")]
    Db(String),
    /// A stored record does not decode (unknown format or corruption).
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The data directory was refused (someone else's files, another
    /// node's or kind's directory, or in use).
    #[error(transparent)]
    Dir(#[from] DataDirError),
    /// The database belongs to another node id.
    #[error("data directory belongs to node {found}, not {expected}")]
    WrongNode {
        /// Id recorded in the directory.
        found: String,
        /// Id of this node.
        expected: String,
    },
}

fn db_err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Seals record `r` as stored under `key` (public for the fuzz targets).
pub fn encode_record(key: &[u8], r: &Record) -> Vec<u8> {
    let body = postcard::to_stdvec(r).expect("records always encode");
    sealed::seal(RECORD_FORMAT, key, &body)
}

/// Decodes the record stored under `key`: checksum first (format 3), then
/// the record (public for the fuzz targets).
pub fn decode_record(key: &[u8], b: &[u8]) -> Result<Record, StoreError> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(e.to_string());
    let old = |body: &[u8]| {
        postcard::from_bytes::<RecordWithoutAuthor>(body)
            .map(Record::from)
            .map_err(|e| corrupt(&e))
    };
    match b.first() {
        Some(&RECORD_FORMAT) => {
            let body = sealed::unseal(b, RECORD_FORMAT, key).map_err(|e| corrupt(&e))?;
            postcard::from_bytes(body).map_err(|e| corrupt(&e))
        }
        Some(&RECORD_FORMAT_NO_AUTHOR) => {
            old(sealed::unseal(b, RECORD_FORMAT_NO_AUTHOR, key).map_err(|e| corrupt(&e))?)
        }
        Some(&RECORD_FORMAT_UNSEALED) => old(&b[1..]),
        Some(v) => Err(StoreError::Corrupt(format!("record format {v}"))),
        None => Err(StoreError::Corrupt("empty record".into())),
    }
}

fn id_of(b: &[u8]) -> Result<Id, StoreError> {
    let a: [u8; 20] = b
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("key of {} bytes", b.len())))?;
    Ok(Id::from_be_bytes(a))
}

/// Wall clock in ms since the Unix epoch.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Lower-case hex of an id (40 digits).
pub fn hex(id: Id) -> String {
    id.to_be_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Refuses a store written by another node id.
fn check_node(tx: &ReadTransaction, node_id: Id) -> Result<(), StoreError> {
    let Ok(meta) = tx.open_table(META) else {
        return Ok(()); // a new store
    };
    match meta.get("node_id").map_err(db_err)? {
        Some(f) if f.value() != node_id.to_be_bytes() => Err(StoreError::WrongNode {
            found: id_of(f.value()).map(hex).unwrap_or_else(|_| "?".into()),
            expected: hex(node_id),
        }),
        _ => Ok(()),
    }
}

/// Every stored record that verifies; a record that fails its checksum or
/// does not decode is left out, with a warning naming its key id (the key's
/// other replicas hold it; anti-entropy brings it back).
fn read_records(tx: &ReadTransaction) -> Result<Vec<(Id, Record)>, StoreError> {
    let Ok(t) = tx.open_table(RECORDS) else {
        return Ok(Vec::new()); // a new store
    };
    let mut out = Vec::new();
    for item in t.iter().map_err(db_err)? {
        let (k, v) = item.map_err(db_err)?;
        let id = id_of(k.value())?;
        match decode_record(k.value(), v.value()) {
            Ok(r) => out.push((id, r)),
            Err(e) => tracing::warn!(
                key = %hex(id),
                "damaged record not loaded ({e}); its other copies will replace it"
            ),
        }
    }
    Ok(out)
}

/// A change to write: a record, or `None` to remove the key.
pub type Change = (Id, Option<Record>);

/// What the kit's [`DataDir`] records for a Chord node's directory.
pub const KIND: Kind = Kind {
    name: "chord",
    title: "Chord",
    node: "node",
    legacy_files: &[DB_FILE],
};

/// The database file in a data directory.
pub const DB_FILE: &str = "records.redb";

/// The redb file `records.redb` of a data directory.
pub struct RedbStore {
    db: Database,
    /// The directory, locked while the store is open.
    dir: DataDir,
    /// The records read when the file was opened, for
    /// [`RedbStore::load_for_start`], so a start reads the file once.
    loaded: std::sync::Mutex<Option<Vec<(Id, Record)>>>,
}

impl RedbStore {
    /// Opens or creates the store in `dir` for node `node_id`, through the
    /// kit's [`DataDir`]: refuses (and leaves alone) a directory that holds
    /// someone else's files, or belongs to another node or kind of node, or
    /// is in use.
    pub fn open(dir: &Path, node_id: Id) -> Result<RedbStore, StoreError> {
        let data_dir = DataDir::open(dir, &KIND, &hex(node_id))?;
        let path = dir.join(DB_FILE);
        // The node id checked and every record read before the file is
        // opened for writing (or, for a file redb must repair first, right
        // after): a damaged file, a panic of redb included, is refused
        // before anything is written to it.
        let (db, records) = sealed::open_checked(
            &path,
            None,
            |tx, _| {
                check_node(tx, node_id)?;
                read_records(tx)
            },
            |e| StoreError::Corrupt(e.to_string()),
        )?;
        let tx = db.begin_write().map_err(db_err)?;
        {
            let mut meta = tx.open_table(META).map_err(db_err)?;
            if meta.get("node_id").map_err(db_err)?.is_none() {
                meta.insert("node_id", &node_id.to_be_bytes()[..])
                    .map_err(db_err)?;
            }
            tx.open_table(RECORDS).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(RedbStore {
            db,
            dir: data_dir,
            loaded: std::sync::Mutex::new(records),
        })
    }

    /// The records to start with: all of them, or none if the node was last
    /// alive longer than `grace_ms` ago (its deletes may have been purged
    /// elsewhere meanwhile, so its old records must not come back).
    pub fn load_for_start(&self, grace_ms: u64) -> Result<Vec<(Id, Record)>, StoreError> {
        let alive_at = {
            let tx = self.db.begin_read().map_err(db_err)?;
            let meta = tx.open_table(META).map_err(db_err)?;
            meta.get("alive_at")
                .map_err(db_err)?
                .and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes))
        };
        let preloaded = self.loaded.lock().expect("loaded lock").take();
        let records = match preloaded {
            Some(records) => records,
            None => self.load()?,
        };
        match alive_at {
            Some(t) if wall_clock_ms().saturating_sub(t) > grace_ms && !records.is_empty() => {
                tracing::warn!(
                    records = records.len(),
                    "down longer than the tombstone grace period: starting with an empty store"
                );
                let changes: Vec<Change> = records.into_iter().map(|(k, _)| (k, None)).collect();
                self.write(&changes)?;
                Ok(Vec::new())
            }
            _ => Ok(records),
        }
    }

    /// Every stored record that verifies (see [`read_records`]).
    pub fn load(&self) -> Result<Vec<(Id, Record)>, StoreError> {
        let path = self.dir.path().join(DB_FILE);
        sealed::guarded(&path, || {
            let tx = self.db.begin_read().map_err(db_err)?;
            read_records(&tx)
        })
        .map_err(|e| StoreError::Corrupt(e.to_string()))?
    }

    /// Writes `changes` in one transaction, with the current time as the
    /// node's "alive at" mark; durable when it returns `Ok`.
    pub fn write(&self, changes: &[Change]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        {
            let mut meta = tx.open_table(META).map_err(db_err)?;
            meta.insert("alive_at", &wall_clock_ms().to_be_bytes()[..])
                .map_err(db_err)?;
        }
        {
            let mut t = tx.open_table(RECORDS).map_err(db_err)?;
            for (k, r) in changes {
                let k = k.to_be_bytes();
                match r {
                    Some(r) => {
                        t.insert(&k[..], &encode_record(&k, r)[..])
                            .map_err(db_err)?;
                    }
                    None => {
                        t.remove(&k[..]).map_err(db_err)?;
                    }
                }
            }
        }
        tx.commit().map_err(db_err)
    }
}

/// The data plane's [`KeyStore`]: every record in memory, plus the keys
/// changed since the last [`RedbKeyStore::take_changes`].
#[derive(Debug, Default)]
pub struct RedbKeyStore {
    mem: MemStore,
    changed: BTreeMap<Id, Option<Record>>,
}

impl RedbKeyStore {
    /// A store holding `records` (from [`RedbStore::load`]).
    pub fn new(records: Vec<(Id, Record)>) -> RedbKeyStore {
        let mut mem = MemStore::new();
        for (k, r) in records {
            mem.put(k, r);
        }
        RedbKeyStore {
            mem,
            changed: BTreeMap::new(),
        }
    }

    /// The changes since the last call, for the [`Persister`].
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changed).into_iter().collect()
    }

    /// The records, read in place (for counting without copying them).
    pub fn records(&self) -> impl Iterator<Item = (&Id, &Record)> {
        self.mem.iter()
    }
}

impl KeyStore for RedbKeyStore {
    fn get(&self, key: Id) -> Option<Record> {
        self.mem.get(key)
    }
    fn put(&mut self, key: Id, rec: Record) {
        self.changed.insert(key, Some(rec.clone()));
        self.mem.put(key, rec);
    }
    fn remove(&mut self, key: Id) {
        self.changed.insert(key, None);
        self.mem.remove(key);
    }
    fn range(&self, lo: Id, hi: Id) -> Vec<(Id, Record)> {
        self.mem.range(lo, hi)
    }
    fn all(&self) -> Vec<(Id, Record)> {
        self.mem.all()
    }
}

/// The storage thread: the kit's group-commit thread over the store; it
/// writes batches of changes and reports the highest token made durable.
pub struct Persister {
    committer: Committer<Vec<Change>>,
    thread: std::thread::JoinHandle<()>,
}

impl Persister {
    /// Starts the thread over `store`; `done(token)` is called after each
    /// durable commit with the highest token it covered. A failed commit
    /// stops the process (the kit's storage-failure policy,
    /// [`server_kit::commit`]), so nothing waiting on it is acknowledged.
    pub fn spawn(store: RedbStore, done: impl Fn(u64) + Send + 'static) -> Persister {
        let path = store.dir.path().join(DB_FILE);
        let (committer, thread) = commit::spawn(
            "chord-store".into(),
            path,
            |changes: &mut Vec<Change>, more| changes.extend(more),
            move |changes: &Vec<Change>| store.write(changes),
            done,
        );
        Persister { committer, thread }
    }

    /// Writes what is queued, then stops the thread and closes the store.
    pub fn close(self) {
        drop(self.committer);
        let _ = self.thread.join();
    }

    /// Queues `changes` under `token`.
    pub fn persist(&self, token: u64, changes: Vec<Change>) {
        let _ = self.committer.commit(token, changes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chord_core::IdSpace;
    use chord_core::data::Version;

    fn rec(name: &str, value: Option<&str>, stamp: u64) -> Record {
        Record {
            name: name.as_bytes().to_vec(),
            value: value.map(|v| v.as_bytes().to_vec()),
            version: Version {
                stamp,
                writer: Id::from_u64(1),
            },
            author: None,
        }
    }

    #[test]
    fn changes_written_by_the_persister_survive_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let space = IdSpace::new(160).unwrap();
        let me = space.hash(b"me");
        let (a, b) = (space.hash(b"a"), space.hash(b"b"));
        {
            let db = RedbStore::open(dir.path(), me).unwrap();
            let mut ks = RedbKeyStore::new(db.load().unwrap());
            ks.put(a, rec("a", Some("1"), 1));
            ks.put(b, rec("b", Some("2"), 1));
            ks.remove(b);
            ks.put(a, rec("a", None, 2));
            let (tx, rx) = std::sync::mpsc::channel();
            let p = Persister::spawn(db, move |t| tx.send(t).unwrap());
            p.persist(7, ks.take_changes());
            assert_eq!(rx.recv().unwrap(), 7);
            assert!(ks.take_changes().is_empty());
            p.close();
        }
        let db = RedbStore::open(dir.path(), me).unwrap();
        assert_eq!(db.load().unwrap(), vec![(a, rec("a", None, 2))]);
        // Alive a moment ago: the records stay; with a grace of 0 they go.
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(db.load_for_start(60_000).unwrap().len(), 1);
        assert!(db.load_for_start(0).unwrap().is_empty());
        assert!(db.load().unwrap().is_empty());
        drop(db);
        let other = space.hash(b"other");
        assert!(matches!(
            RedbStore::open(dir.path(), other),
            Err(StoreError::Dir(DataDirError::WrongNode { .. }))
        ));
    }

    #[test]
    fn a_record_of_an_unknown_format_is_an_error() {
        assert!(decode_record(b"k", &[1, 0]).is_err());
        assert!(decode_record(b"k", &[]).is_err());
        let r = rec("k", Some("v"), 3);
        assert_eq!(decode_record(b"k", &encode_record(b"k", &r)).unwrap(), r);
        let mut bad = encode_record(b"k", &r);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(
            decode_record(b"k", &bad).is_err(),
            "a changed byte is caught"
        );
        assert!(
            decode_record(b"j", &encode_record(b"k", &r)).is_err(),
            "under another key"
        );
    }

    #[test]
    fn records_keep_their_author_and_older_formats_read_without_one() {
        let mut r = rec("k", Some("v"), 3);
        r.author = Some("alice".into());
        assert_eq!(decode_record(b"k", &encode_record(b"k", &r)).unwrap(), r);
        // Format 3 (sealed) and 2 (unsealed): the same fields, no author.
        #[derive(serde::Serialize)]
        struct Old<'a> {
            name: &'a [u8],
            value: Option<&'a [u8]>,
            version: Version,
        }
        let body = postcard::to_stdvec(&Old {
            name: b"k",
            value: Some(b"v"),
            version: r.version,
        })
        .unwrap();
        let mut want = r.clone();
        want.author = None;
        let sealed3 = sealed::seal(RECORD_FORMAT_NO_AUTHOR, b"k", &body);
        assert_eq!(decode_record(b"k", &sealed3).unwrap(), want);
        let unsealed2 = [&[RECORD_FORMAT_UNSEALED][..], &body].concat();
        assert_eq!(decode_record(b"k", &unsealed2).unwrap(), want);
    }
}
