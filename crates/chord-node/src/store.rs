//! Durable key storage behind a trait.
//!
//! A node keeps every record it holds, owned or replica, in one table keyed by
//! the key's 160-bit id (big-endian, so byte order is ring order and a ring
//! interval is one or two range scans). Which records a node *owns* is not
//! stored: it follows from the ring (`key ∈ (predecessor, n]`).
//!
//! [`Storage::execute`] runs a batch of operations in one transaction and
//! returns once it is durable; [`StoreHandle`] runs a storage thread that
//! gathers the operations of concurrent requests into such batches (group
//! commit), so many clients share one fsync.
//!
//! Writes are last-writer-wins by [`Record::version`]: [`Op::Apply`] keeps the
//! newer of the stored and the incoming record, so replication, hand-off and
//! repair can be repeated and reordered freely.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

use chord_core::Id;
use chord_core::interval::in_open_closed;
use redb::{Database, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use crate::wire::Record;

const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Version byte in front of every stored record.
const RECORD_FORMAT: u8 = 1;

/// Most operations gathered into one transaction.
const MAX_BATCH: usize = 512;

/// Storage failures. The driver treats them as fatal for the request.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded database failed.
    #[error("database: {0}")]
    Db(String),
    /// A stored record does not decode (unknown format or corruption).
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The data directory belongs to another node id.
    #[error("data directory belongs to node {found}, not {expected}")]
    WrongNode {
        /// Id recorded in the directory.
        found: String,
        /// Id of this node.
        expected: String,
    },
    /// The storage thread has stopped.
    #[error("storage thread stopped")]
    Stopped,
}

fn db_err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

/// One storage operation.
#[derive(Debug, Clone)]
pub enum Op {
    /// The record of a key.
    Get(Id),
    /// An owner's write: the new version is `max(old + 1, now_us)`.
    Write {
        /// Key id.
        key: Id,
        /// Key name.
        name: Vec<u8>,
        /// New value, `None` deletes (a tombstone is kept if the key existed).
        value: Option<Vec<u8>>,
        /// Wall clock in microseconds.
        now_us: u64,
    },
    /// Merge records, keeping the newer version of each.
    Apply(Vec<(Id, Record)>),
    /// `(id, version)` of every record in `(lo, hi]`.
    Versions {
        /// Exclusive lower end.
        lo: Id,
        /// Inclusive upper end.
        hi: Id,
    },
    /// The records with these ids (missing ones are skipped).
    Fetch(Vec<Id>),
    /// Removes records in `(lo, hi]` except those in any `keep` interval.
    DropRange {
        /// Exclusive lower end.
        lo: Id,
        /// Inclusive upper end.
        hi: Id,
        /// `(a, b]` intervals to keep.
        keep: Vec<(Id, Id)>,
    },
    /// Every record's id, name and whether it is live (not a tombstone).
    Scan,
}

/// The result of one [`Op`].
#[derive(Debug, Clone)]
pub enum Outcome {
    /// [`Op::Get`].
    Record(Option<Record>),
    /// [`Op::Write`]: the stored record (None if a delete found nothing) and
    /// whether the key was live before.
    Written {
        /// The new record.
        record: Option<Record>,
        /// The key held a live value before.
        existed: bool,
    },
    /// [`Op::Apply`]: how many records were newer and stored.
    Applied(usize),
    /// [`Op::Versions`].
    Versions(Vec<(Id, u64)>),
    /// [`Op::Fetch`].
    Records(Vec<(Id, Record)>),
    /// [`Op::DropRange`]: how many were removed.
    Dropped(usize),
    /// [`Op::Scan`].
    Names(Vec<(Id, Vec<u8>, bool)>),
}

/// A key-record store. Laws: `execute` applies the operations in order, as
/// one atomic and durable step (when it returns `Ok`, a crash cannot lose the
/// batch); reads in a batch see the batch's earlier writes; `Apply` never
/// replaces a record by one with a lower or equal version.
pub trait Storage: Send + 'static {
    /// Runs `ops` in one transaction.
    fn execute(&mut self, ops: Vec<Op>) -> Result<Vec<Outcome>, StoreError>;
}

fn encode_record(r: &Record) -> Vec<u8> {
    let mut out = vec![RECORD_FORMAT];
    out.extend(postcard::to_stdvec(r).expect("records always encode"));
    out
}

fn decode_record(b: &[u8]) -> Result<Record, StoreError> {
    match b.split_first() {
        Some((&RECORD_FORMAT, rest)) => {
            postcard::from_bytes(rest).map_err(|e| StoreError::Corrupt(e.to_string()))
        }
        Some((v, _)) => Err(StoreError::Corrupt(format!("record format {v}"))),
        None => Err(StoreError::Corrupt("empty record".into())),
    }
}

/// The `(lo, hi]` ring interval as at most two key ranges (whole ring if `lo == hi`).
type KeyRange = (Bound<[u8; 20]>, Bound<[u8; 20]>);

fn ranges(lo: Id, hi: Id) -> Vec<KeyRange> {
    let (l, h) = (lo.to_be_bytes(), hi.to_be_bytes());
    if lo < hi {
        vec![(Bound::Excluded(l), Bound::Included(h))]
    } else {
        vec![
            (Bound::Excluded(l), Bound::Unbounded),
            (Bound::Unbounded, Bound::Included(h)),
        ]
    }
}

fn as_slice(b: &Bound<[u8; 20]>) -> Bound<&[u8]> {
    match b {
        Bound::Included(x) => Bound::Included(&x[..]),
        Bound::Excluded(x) => Bound::Excluded(&x[..]),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn id_of(b: &[u8]) -> Result<Id, StoreError> {
    let a: [u8; 20] = b
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("key of {} bytes", b.len())))?;
    Ok(Id::from_be_bytes(a))
}

/// The redb implementation: one file `records.redb` in the data directory.
pub struct RedbStore {
    db: Database,
}

impl RedbStore {
    /// Opens or creates the store in `dir` for node `node_id`; refuses a
    /// directory created by another node.
    pub fn open(dir: &Path, node_id: Id) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(db_err)?;
        let db = Database::create(dir.join("records.redb")).map_err(db_err)?;
        let tx = db.begin_write().map_err(db_err)?;
        {
            let mut meta = tx.open_table(META).map_err(db_err)?;
            let mine = node_id.to_be_bytes();
            let found = meta
                .get("node_id")
                .map_err(db_err)?
                .map(|v| v.value().to_vec());
            match found {
                Some(f) if f != mine => {
                    let found = id_of(&f).map(hex).unwrap_or_else(|_| "?".into());
                    return Err(StoreError::WrongNode {
                        found,
                        expected: hex(node_id),
                    });
                }
                Some(_) => {}
                None => {
                    meta.insert("node_id", &mine[..]).map_err(db_err)?;
                }
            }
            tx.open_table(RECORDS).map_err(db_err)?;
        }
        tx.commit().map_err(db_err)?;
        Ok(RedbStore { db })
    }

    fn scan_range(
        table: &impl ReadableTable<&'static [u8], &'static [u8]>,
        lo: Id,
        hi: Id,
        mut f: impl FnMut(Id, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for (a, b) in ranges(lo, hi) {
            for item in table
                .range::<&[u8]>((as_slice(&a), as_slice(&b)))
                .map_err(db_err)?
            {
                let (k, v) = item.map_err(db_err)?;
                f(id_of(k.value())?, v.value())?;
            }
        }
        Ok(())
    }
}

impl Storage for RedbStore {
    fn execute(&mut self, ops: Vec<Op>) -> Result<Vec<Outcome>, StoreError> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let mut dirty = false;
        let mut out = Vec::with_capacity(ops.len());
        {
            let mut t = tx.open_table(RECORDS).map_err(db_err)?;
            for op in ops {
                let res = match op {
                    Op::Get(key) => {
                        let v = t.get(&key.to_be_bytes()[..]).map_err(db_err)?;
                        Outcome::Record(v.map(|v| decode_record(v.value())).transpose()?)
                    }
                    Op::Write {
                        key,
                        name,
                        value,
                        now_us,
                    } => {
                        let k = key.to_be_bytes();
                        let old = t
                            .get(&k[..])
                            .map_err(db_err)?
                            .map(|v| decode_record(v.value()))
                            .transpose()?;
                        let existed = old.as_ref().is_some_and(|r| r.value.is_some());
                        if value.is_none() && !existed {
                            Outcome::Written {
                                record: None,
                                existed,
                            }
                        } else {
                            let version =
                                old.as_ref().map_or(now_us, |r| now_us.max(r.version + 1));
                            let rec = Record {
                                name,
                                value,
                                version,
                            };
                            t.insert(&k[..], &encode_record(&rec)[..]).map_err(db_err)?;
                            dirty = true;
                            Outcome::Written {
                                record: Some(rec),
                                existed,
                            }
                        }
                    }
                    Op::Apply(records) => {
                        let mut n = 0;
                        for (key, rec) in records {
                            let k = key.to_be_bytes();
                            let newer = match t.get(&k[..]).map_err(db_err)? {
                                Some(v) => decode_record(v.value())?.version < rec.version,
                                None => true,
                            };
                            if newer {
                                t.insert(&k[..], &encode_record(&rec)[..]).map_err(db_err)?;
                                n += 1;
                            }
                        }
                        dirty |= n > 0;
                        Outcome::Applied(n)
                    }
                    Op::Versions { lo, hi } => {
                        let mut v = Vec::new();
                        Self::scan_range(&t, lo, hi, |id, b| {
                            v.push((id, decode_record(b)?.version));
                            Ok(())
                        })?;
                        Outcome::Versions(v)
                    }
                    Op::Fetch(ids) => {
                        let mut v = Vec::new();
                        for id in ids {
                            if let Some(b) = t.get(&id.to_be_bytes()[..]).map_err(db_err)? {
                                v.push((id, decode_record(b.value())?));
                            }
                        }
                        Outcome::Records(v)
                    }
                    Op::DropRange { lo, hi, keep } => {
                        let mut ids = Vec::new();
                        Self::scan_range(&t, lo, hi, |id, _| {
                            if !keep.iter().any(|(a, b)| in_open_closed(&id, a, b)) {
                                ids.push(id);
                            }
                            Ok(())
                        })?;
                        for id in &ids {
                            t.remove(&id.to_be_bytes()[..]).map_err(db_err)?;
                        }
                        dirty |= !ids.is_empty();
                        Outcome::Dropped(ids.len())
                    }
                    Op::Scan => {
                        let mut v = Vec::new();
                        for item in t.iter().map_err(db_err)? {
                            let (k, b) = item.map_err(db_err)?;
                            let r = decode_record(b.value())?;
                            v.push((id_of(k.value())?, r.name, r.value.is_some()));
                        }
                        Outcome::Names(v)
                    }
                };
                out.push(res);
            }
        }
        if dirty {
            tx.commit().map_err(db_err)?;
        } else {
            tx.abort().map_err(db_err)?;
        }
        Ok(out)
    }
}

/// An in-memory [`Storage`], for tests of the laws (not durable).
#[derive(Default)]
pub struct MemStore {
    map: BTreeMap<Id, Record>,
}

impl Storage for MemStore {
    fn execute(&mut self, ops: Vec<Op>) -> Result<Vec<Outcome>, StoreError> {
        let in_range = |id: &Id, lo: &Id, hi: &Id| in_open_closed(id, lo, hi);
        Ok(ops
            .into_iter()
            .map(|op| match op {
                Op::Get(k) => Outcome::Record(self.map.get(&k).cloned()),
                Op::Write {
                    key,
                    name,
                    value,
                    now_us,
                } => {
                    let old = self.map.get(&key);
                    let existed = old.is_some_and(|r| r.value.is_some());
                    if value.is_none() && !existed {
                        return Outcome::Written {
                            record: None,
                            existed,
                        };
                    }
                    let version = old.map_or(now_us, |r| now_us.max(r.version + 1));
                    let rec = Record {
                        name,
                        value,
                        version,
                    };
                    self.map.insert(key, rec.clone());
                    Outcome::Written {
                        record: Some(rec),
                        existed,
                    }
                }
                Op::Apply(recs) => {
                    let mut n = 0;
                    for (k, r) in recs {
                        if self.map.get(&k).is_none_or(|o| o.version < r.version) {
                            self.map.insert(k, r);
                            n += 1;
                        }
                    }
                    Outcome::Applied(n)
                }
                Op::Versions { lo, hi } => Outcome::Versions(
                    self.map
                        .iter()
                        .filter(|(k, _)| in_range(k, &lo, &hi))
                        .map(|(k, r)| (*k, r.version))
                        .collect(),
                ),
                Op::Fetch(ids) => Outcome::Records(
                    ids.into_iter()
                        .filter_map(|k| self.map.get(&k).map(|r| (k, r.clone())))
                        .collect(),
                ),
                Op::DropRange { lo, hi, keep } => {
                    let before = self.map.len();
                    self.map.retain(|k, _| {
                        !in_range(k, &lo, &hi) || keep.iter().any(|(a, b)| in_range(k, a, b))
                    });
                    Outcome::Dropped(before - self.map.len())
                }
                Op::Scan => Outcome::Names(
                    self.map
                        .iter()
                        .map(|(k, r)| (*k, r.name.clone(), r.value.is_some()))
                        .collect(),
                ),
            })
            .collect())
    }
}

/// A key id as 40 hex digits.
pub fn hex(id: Id) -> String {
    id.to_be_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

type Job = (Op, oneshot::Sender<Result<Outcome, String>>);

/// A handle on the storage thread. Cloning shares the thread.
#[derive(Clone)]
pub struct StoreHandle {
    tx: mpsc::UnboundedSender<Job>,
}

impl StoreHandle {
    /// Starts the storage thread over `store`. It runs until every handle is
    /// dropped.
    pub fn spawn(mut store: impl Storage) -> StoreHandle {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
        std::thread::Builder::new()
            .name("chord-store".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(j) => jobs.push(j),
                            Err(_) => break,
                        }
                    }
                    let (ops, replies): (Vec<Op>, Vec<_>) = jobs.into_iter().unzip();
                    match store.execute(ops) {
                        Ok(outs) => {
                            for (r, o) in replies.into_iter().zip(outs) {
                                let _ = r.send(Ok(o));
                            }
                        }
                        Err(e) => {
                            tracing::error!("storage batch failed: {e}");
                            for r in replies {
                                let _ = r.send(Err(e.to_string()));
                            }
                        }
                    }
                }
            })
            .expect("spawn storage thread");
        StoreHandle { tx }
    }

    /// Runs one operation (batched with concurrent ones); durable on return.
    pub async fn run(&self, op: Op) -> Result<Outcome, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((op, tx)).map_err(|_| StoreError::Stopped)?;
        rx.await
            .map_err(|_| StoreError::Stopped)?
            .map_err(StoreError::Db)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chord_core::IdSpace;

    fn rec(name: &str, value: Option<&str>, version: u64) -> Record {
        Record {
            name: name.as_bytes().to_vec(),
            value: value.map(|v| v.as_bytes().to_vec()),
            version,
        }
    }

    /// The laws of [`Storage`], checked on both implementations.
    fn laws(s: &mut dyn Storage) {
        let id = |x: u64| IdSpace::default().id(x);
        let w = |k: u64, v: Option<&str>, now| Op::Write {
            key: id(k),
            name: format!("k{k}").into_bytes(),
            value: v.map(|v| v.as_bytes().to_vec()),
            now_us: now,
        };
        let out = s
            .execute(vec![
                w(10, Some("a"), 100),
                Op::Get(id(10)),
                w(10, Some("b"), 50),
            ])
            .unwrap();
        assert!(
            matches!(&out[0], Outcome::Written { existed: false, record: Some(r) } if r.version == 100)
        );
        assert!(
            matches!(&out[1], Outcome::Record(Some(r)) if r.value.as_deref() == Some(&b"a"[..]))
        );
        // The clock went back: the version still grows.
        assert!(
            matches!(&out[2], Outcome::Written { existed: true, record: Some(r) } if r.version == 101)
        );
        // Older or equal versions never replace newer ones.
        let out = s
            .execute(vec![
                Op::Apply(vec![
                    (id(10), rec("k10", Some("old"), 101)),
                    (id(20), rec("k20", Some("x"), 5)),
                    (id(30), rec("k30", None, 7)),
                ]),
                Op::Get(id(10)),
            ])
            .unwrap();
        assert!(matches!(out[0], Outcome::Applied(2)));
        assert!(
            matches!(&out[1], Outcome::Record(Some(r)) if r.value.as_deref() == Some(&b"b"[..]))
        );
        // Deleting a missing key leaves nothing; deleting a live one a tombstone.
        let out = s.execute(vec![w(40, None, 9), w(20, None, 9)]).unwrap();
        assert!(matches!(
            out[0],
            Outcome::Written {
                record: None,
                existed: false
            }
        ));
        assert!(
            matches!(&out[1], Outcome::Written { record: Some(r), existed: true } if r.value.is_none())
        );
        // Wrapping ranges.
        let out = s
            .execute(vec![
                Op::Versions {
                    lo: id(25),
                    hi: id(15),
                },
                Op::Versions {
                    lo: id(10),
                    hi: id(30),
                },
                Op::Versions {
                    lo: id(5),
                    hi: id(5),
                },
            ])
            .unwrap();
        let ids = |o: &Outcome| match o {
            Outcome::Versions(v) => {
                let mut v = v.iter().map(|(k, _)| *k).collect::<Vec<_>>();
                v.sort();
                v
            }
            _ => panic!(),
        };
        assert_eq!(ids(&out[0]), vec![id(10), id(30)]);
        assert_eq!(ids(&out[1]), vec![id(20), id(30)]);
        assert_eq!(ids(&out[2]).len(), 3);
        let out = s
            .execute(vec![
                Op::DropRange {
                    lo: id(5),
                    hi: id(35),
                    keep: vec![(id(15), id(25))],
                },
                Op::Scan,
            ])
            .unwrap();
        assert!(matches!(out[0], Outcome::Dropped(2)));
        assert!(matches!(&out[1], Outcome::Names(v) if v.len() == 1 && v[0].0 == id(20)));
    }

    #[test]
    fn the_memory_store_obeys_the_laws() {
        laws(&mut MemStore::default());
    }

    #[test]
    fn the_redb_store_obeys_the_laws_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let me = IdSpace::default().hash(b"me");
        {
            let mut s = RedbStore::open(dir.path(), me).unwrap();
            laws(&mut s);
        }
        let mut s = RedbStore::open(dir.path(), me).unwrap();
        let out = s.execute(vec![Op::Scan]).unwrap();
        assert!(matches!(&out[0], Outcome::Names(v) if v.len() == 1));
        let other = IdSpace::default().hash(b"other");
        drop(s);
        assert!(matches!(
            RedbStore::open(dir.path(), other),
            Err(StoreError::WrongNode { .. })
        ));
    }
}
