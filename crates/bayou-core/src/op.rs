//! Operations and the database they act on.
//!
//! A Bayou write carries an *update*; every server executes it at the write's
//! place in the log order, and again whenever the order changes under it
//! ([T95 §4–5]). This module holds the operations of the lecture's walk-through,
//! `W(key,value)` and `D(key)`, and the key-value database they act on.
//!
//! Execution is the one place where an operation touches data, and it always
//! goes through [`Db::execute`], which records an [`Undo`] so the replica can
//! roll the database back when a write arrives that sorts before writes it has
//! already executed ([T95 §7], the Undo Log). Bayou's dependency checks and
//! merge procedures (a later addition) are further [`Op`] variants executed the
//! same way: they read the database, decide, then write through the same
//! undo-recording path, so rollback, redo and re-execution at commit need no
//! change.

use std::fmt;
use std::ops::Bound;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::member::{MemberOp, is_reserved};
use crate::script::{BayouWrite, Outcome, mutation_key_value};

/// An update carried by a write.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    /// `W(key,value)`: set `key` to `value`.
    Put {
        /// The key written.
        key: Bytes,
        /// The value stored.
        value: Bytes,
    },
    /// `D(key)`: remove `key`.
    Delete {
        /// The key removed.
        key: Bytes,
    },
    /// A Bayou write with a dependency check and a merge procedure
    /// ([T95 §4]); see [`crate::script`].
    Bayou(Box<BayouWrite>),
    /// `INCR(key,by)`: add `by` to the integer in `key` (a missing key
    /// counts as 0). Like every write it is re-executed in log order, so
    /// replicas that each incremented a counter while apart agree on the
    /// sum once they converge. On a value that is not a 64-bit integer, or
    /// on overflow, it has no effect and its outcome is
    /// [`Outcome::Failed`], the same everywhere.
    Incr {
        /// The counter.
        key: Bytes,
        /// The amount added (negative to decrement).
        by: i64,
    },
    /// `APPEND(key,value)`: append `value` to the string in `key` (a
    /// missing key counts as empty).
    Append {
        /// The key extended.
        key: Bytes,
        /// The bytes appended.
        value: Bytes,
    },
    /// `SETNX(key,value)`: set `key` only if it has no value when the write
    /// executes.
    SetIfAbsent {
        /// The key written.
        key: Bytes,
        /// The value stored.
        value: Bytes,
    },
    /// `SETXX(key,value)`: set `key` only if it has a value when the write
    /// executes.
    SetIfPresent {
        /// The key written.
        key: Bytes,
        /// The value stored.
        value: Bytes,
    },
    /// `FLUSH()`: delete every key the database holds when the write
    /// executes (`FLUSHDB`, `FLUSHALL`), except the membership table.
    /// Writes after it in the log order apply on top of the empty database.
    DeleteAll,
    /// A membership write: creation, retirement, handoff, address
    /// ([`crate::member`]).
    Member(MemberOp),
}

/// Why a piece of text is not an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpParseError {
    /// None of the operations' notations.
    #[error(
        "expected W(key,value) or D(key) (or INCR(key,n), APPEND(key,value), SETNX(key,value), SETXX(key,value), FLUSH()), got {0:?}"
    )]
    Malformed(String),
    /// An empty key.
    #[error("the key in {0:?} is empty")]
    EmptyKey(String),
    /// A `BAYOU{...}` write whose JSON is malformed or breaks a limit.
    #[error("{0}")]
    Bayou(String),
}

impl Op {
    /// `W(key,value)`.
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Op {
        Op::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    /// `D(key)`.
    pub fn delete(key: impl Into<Bytes>) -> Op {
        Op::Delete { key: key.into() }
    }

    /// Parses the slides' notation: `W(X,4)` or `D(Y)`. Spaces around the
    /// parts are ignored; the value runs to the closing parenthesis, so it may
    /// hold commas.
    pub fn parse(text: &str) -> Result<Op, OpParseError> {
        let malformed = || OpParseError::Malformed(text.to_string());
        let t = text.trim();
        if let Some(json) = t.strip_prefix("BAYOU") {
            let w = BayouWrite::from_json(json.trim()).map_err(OpParseError::Bayou)?;
            return Ok(Op::Bayou(Box::new(w)));
        }
        for name in ["INCR", "APPEND", "SETNX", "SETXX", "FLUSH"] {
            if let Some(rest) = t.strip_prefix(name) {
                let inner = rest
                    .trim_start()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(malformed)?;
                if name == "FLUSH" {
                    return if inner.trim().is_empty() {
                        Ok(Op::DeleteAll)
                    } else {
                        Err(malformed())
                    };
                }
                let (key, value) = key_value(inner, text)?;
                return Ok(match name {
                    "INCR" => Op::Incr {
                        key,
                        by: parse_integer(&value).ok_or_else(malformed)?,
                    },
                    "APPEND" => Op::Append { key, value },
                    "SETNX" => Op::SetIfAbsent { key, value },
                    _ => Op::SetIfPresent { key, value },
                });
            }
        }
        let (kind, rest) = t.split_at_checked(1).ok_or_else(malformed)?;
        let inner = rest
            .trim_start()
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(malformed)?;
        match kind {
            "W" => {
                let (key, value) = key_value(inner, text)?;
                Ok(Op::put(key, value))
            }
            "D" => {
                let key = inner.trim();
                if key.is_empty() {
                    return Err(OpParseError::EmptyKey(text.to_string()));
                }
                if key.contains([',', '(', ')']) {
                    return Err(malformed());
                }
                Ok(Op::delete(Bytes::copy_from_slice(key.as_bytes())))
            }
            _ => Err(malformed()),
        }
    }
}

/// The `key,value` inside `W(…)`, `APPEND(…)` and the like: the key is
/// trimmed, non-empty and free of parentheses; the value runs to the end.
fn key_value(inner: &str, text: &str) -> Result<(Bytes, Bytes), OpParseError> {
    let malformed = || OpParseError::Malformed(text.to_string());
    let (key, value) = inner.split_once(',').ok_or_else(malformed)?;
    let key = key.trim();
    if key.is_empty() {
        return Err(OpParseError::EmptyKey(text.to_string()));
    }
    if key.contains(['(', ')']) {
        return Err(malformed());
    }
    Ok((
        Bytes::copy_from_slice(key.as_bytes()),
        Bytes::copy_from_slice(value.trim().as_bytes()),
    ))
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put { key, value } => write!(
                f,
                "W({},{})",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            ),
            Op::Delete { key } => write!(f, "D({})", String::from_utf8_lossy(key)),
            Op::Bayou(w) => match &w.label {
                Some(label) => f.write_str(label),
                None => write!(f, "BAYOU{}", w.to_json()),
            },
            Op::Incr { key, by } => write!(f, "INCR({},{by})", String::from_utf8_lossy(key)),
            Op::Append { key, value } => write!(
                f,
                "APPEND({},{})",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            ),
            Op::SetIfAbsent { key, value } => write!(
                f,
                "SETNX({},{})",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            ),
            Op::SetIfPresent { key, value } => write!(
                f,
                "SETXX({},{})",
                String::from_utf8_lossy(key),
                String::from_utf8_lossy(value)
            ),
            Op::DeleteAll => f.write_str("FLUSH()"),
            Op::Member(m) => fmt::Display::fmt(m, f),
        }
    }
}

/// Parses a 64-bit signed integer the way Redis reads a counter: an
/// optional `-`, then digits without a leading zero (`0` alone is fine), no
/// spaces, no `+`.
pub fn parse_integer(text: &[u8]) -> Option<i64> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    if digits.is_empty()
        || !digits.iter().all(u8::is_ascii_digit)
        || (digits.len() > 1 && digits[0] == b'0')
        || text == b"-0"
    {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

impl Op {
    /// A rough size in bytes of what the operation carries.
    pub fn approx_size(&self) -> usize {
        match self {
            Op::Put { key, value }
            | Op::Append { key, value }
            | Op::SetIfAbsent { key, value }
            | Op::SetIfPresent { key, value } => key.len() + value.len(),
            Op::Delete { key } => key.len(),
            Op::Incr { key, .. } => key.len() + 8,
            Op::Bayou(w) => w.approx_size(),
            Op::DeleteAll => 1,
            Op::Member(m) => m.approx_size(),
        }
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What executing a write did to the database, recorded so that it can be
/// undone: each key it touched with the value the key held before (first
/// touch wins, so undoing restores the state before the write).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Undo {
    previous: Vec<(Bytes, Option<Bytes>)>,
}

impl Undo {
    /// The keys the write touched.
    pub fn keys(&self) -> impl Iterator<Item = &Bytes> {
        self.previous.iter().map(|(k, _)| k)
    }
}

/// A key-value database: the result of executing a log prefix in order.
///
/// The map is persistent ([`imbl::OrdMap`], a B-tree whose nodes are shared
/// by reference count): a clone costs O(1) and shares every node, and a
/// change to either copy copies only the path to the changed key. A replica
/// relies on this three ways: its full view shares all but the keys of
/// executed tentative writes with its committed view, so the database is in
/// memory once, not twice; a checkpoint or a full-state transfer takes the
/// committed view as it is now without copying it; and the store can write a
/// checkpoint while the replica goes on changing its own copy. A key or value
/// is a [`Bytes`], itself shared by reference count between the log, both
/// views and checkpoints.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Db {
    data: imbl::OrdMap<Bytes, Bytes>,
}

impl Db {
    /// An empty database.
    pub fn new() -> Db {
        Db::default()
    }

    /// The value of `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<&Bytes> {
        self.data.get(key)
    }

    /// Every key and value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.data.iter()
    }

    /// Every key after `after` (all of them for `None`), with its value, in
    /// key order: how a full-state transfer walks a snapshot in parts.
    pub fn iter_after(&self, after: Option<Bytes>) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        let start = match after {
            Some(k) => Bound::Excluded(k),
            None => Bound::Unbounded,
        };
        self.data.range::<_, Bytes>((start, Bound::Unbounded))
    }

    /// The number of keys, not counting the membership table
    /// ([`crate::member`]).
    pub fn len(&self) -> usize {
        self.data.len() - self.scan_prefix(crate::member::RESERVED_PREFIX).count()
    }

    /// Every key and value that clients see (the membership table left
    /// out), in key order.
    pub fn user_iter(&self) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.data.iter().filter(|(k, _)| !is_reserved(k))
    }

    /// Whether the database holds no key.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Whether both are the same map in memory (one a clone of the other,
    /// neither changed since): equal without comparing them key by key.
    pub fn ptr_eq(&self, other: &Db) -> bool {
        self.data.ptr_eq(&other.data)
    }

    /// Executes `op` and returns what is needed to undo it, and the outcome.
    pub fn execute(&mut self, op: &Op) -> (Undo, Outcome) {
        let mut undo = Undo::default();
        let outcome = match op {
            Op::Put { key, value } => {
                self.set(&mut undo, key, Some(value.clone()));
                Outcome::Applied
            }
            Op::Delete { key } => {
                self.set(&mut undo, key, None);
                Outcome::Applied
            }
            Op::Bayou(w) => {
                let (changes, outcome) = w.resolve(self);
                for m in &changes {
                    let (key, value) = mutation_key_value(m);
                    self.set(&mut undo, &key, value);
                }
                outcome
            }
            Op::Incr { key, by } => {
                let current = match self.data.get(&key[..]) {
                    None => Some(0),
                    Some(v) => parse_integer(v),
                };
                match current.map(|c| c.checked_add(*by)) {
                    None => Outcome::Failed("value is not an integer or out of range".into()),
                    Some(None) => Outcome::Failed("increment or decrement would overflow".into()),
                    Some(Some(n)) => {
                        self.set(&mut undo, key, Some(Bytes::from(n.to_string())));
                        Outcome::Applied
                    }
                }
            }
            Op::Append { key, value } => {
                let mut v = self
                    .data
                    .get(&key[..])
                    .map_or_else(Vec::new, |v| v.to_vec());
                v.extend_from_slice(value);
                self.set(&mut undo, key, Some(Bytes::from(v)));
                Outcome::Applied
            }
            Op::SetIfAbsent { key, value } => {
                if !self.data.contains_key(&key[..]) {
                    self.set(&mut undo, key, Some(value.clone()));
                }
                Outcome::Applied
            }
            Op::SetIfPresent { key, value } => {
                if self.data.contains_key(&key[..]) {
                    self.set(&mut undo, key, Some(value.clone()));
                }
                Outcome::Applied
            }
            Op::DeleteAll => {
                let keys: Vec<Bytes> = self
                    .data
                    .keys()
                    .filter(|k| !is_reserved(k))
                    .cloned()
                    .collect();
                for key in keys {
                    self.set(&mut undo, &key, None);
                }
                Outcome::Applied
            }
            // Executed with its write id by the replica (`execute_write`).
            Op::Member(_) => Outcome::Failed("a membership write needs its write id".into()),
        };
        if !matches!(op, Op::Member(_)) && undo.keys().any(|k| is_reserved(k)) {
            // Only membership writes change the membership table.
            self.undo(undo);
            return (
                Undo::default(),
                Outcome::Failed("keys starting with \\xffbayou/ are reserved".into()),
            );
        }
        (undo, outcome)
    }

    /// Executes the write `id` carrying `op`; `csn` is its CSN when it
    /// executes as a committed write. Membership writes need both
    /// ([`crate::member`]); other operations are [`Db::execute`].
    pub fn execute_write(
        &mut self,
        id: &crate::WriteId,
        op: &Op,
        csn: Option<crate::Csn>,
    ) -> (Undo, Outcome) {
        match op {
            Op::Member(m) => crate::member::execute(self, id, m, csn),
            _ => self.execute(op),
        }
    }

    /// Every key starting with `prefix`, with its value, in key order.
    pub fn scan_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a Bytes, &'a Bytes)> + 'a {
        self.data
            .range::<_, [u8]>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// Sets `key` to `value` directly, outside any write: used to load a
    /// checkpoint or a received snapshot.
    pub fn insert(&mut self, key: Bytes, value: Bytes) {
        self.data.insert(key, value);
    }

    /// Sets `key` to `value`, or removes it for `None`, outside any write:
    /// used to carry a key's value from one view to another.
    pub(crate) fn put_raw(&mut self, key: &Bytes, value: Option<&Bytes>) {
        match value {
            Some(v) => self.data.insert(key.clone(), v.clone()),
            None => self.data.remove(&key[..]),
        };
    }

    /// Restores the state before the write whose execution produced `undo`.
    pub fn undo(&mut self, undo: Undo) {
        // Reverse order, so a key touched twice ends at its first previous value.
        for (key, previous) in undo.previous.into_iter().rev() {
            match previous {
                Some(v) => self.data.insert(key, v),
                None => self.data.remove(&key[..]),
            };
        }
    }

    pub(crate) fn set_raw(&mut self, undo: &mut Undo, key: &Bytes, value: Option<Bytes>) {
        self.set(undo, key, value)
    }

    fn set(&mut self, undo: &mut Undo, key: &Bytes, value: Option<Bytes>) {
        let previous = match value {
            Some(v) => self.data.insert(key.clone(), v),
            None => self.data.remove(&key[..]),
        };
        undo.previous.push((key.clone(), previous));
    }
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.data
                    .iter()
                    .map(|(k, v)| (String::from_utf8_lossy(k), String::from_utf8_lossy(v))),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_slides_notation() {
        assert_eq!(Op::parse("W(X,4)").unwrap(), Op::put("X", "4"));
        assert_eq!(Op::parse(" W( X , 4 ) ").unwrap(), Op::put("X", "4"));
        assert_eq!(Op::parse("D(Y)").unwrap(), Op::delete("Y"));
        assert_eq!(Op::parse("W(k,a,b)").unwrap(), Op::put("k", "a,b"));
        assert_eq!(Op::put("X", "4").to_string(), "W(X,4)");
        assert_eq!(Op::delete("Y").to_string(), "D(Y)");
    }

    #[test]
    fn rejects_malformed_operations() {
        for bad in [
            "", "W", "W(X)", "X(1,2)", "W(X,4", "D()", "W(,4)", "D(a,b)", "Wx(1,2)",
        ] {
            assert!(Op::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn undo_restores_the_previous_state() {
        let mut db = Db::new();
        db.execute(&Op::put("X", "1"));
        let before = db.clone();
        let (u1, _) = db.execute(&Op::put("X", "2"));
        let (u2, _) = db.execute(&Op::delete("X"));
        let (u3, _) = db.execute(&Op::put("Y", "3"));
        db.undo(u3);
        db.undo(u2);
        db.undo(u1);
        assert_eq!(db, before);
    }

    #[test]
    fn counter_and_string_operations_print_and_parse_in_the_log_notation() {
        let ops = [
            Op::Incr {
                key: Bytes::from("c"),
                by: -3,
            },
            Op::Append {
                key: Bytes::from("s"),
                value: Bytes::from("xy"),
            },
            Op::SetIfAbsent {
                key: Bytes::from("k"),
                value: Bytes::from("v"),
            },
            Op::SetIfPresent {
                key: Bytes::from("k"),
                value: Bytes::from("v"),
            },
            Op::DeleteAll,
        ];
        let texts = [
            "INCR(c,-3)",
            "APPEND(s,xy)",
            "SETNX(k,v)",
            "SETXX(k,v)",
            "FLUSH()",
        ];
        for (op, text) in ops.iter().zip(texts) {
            assert_eq!(op.to_string(), text);
            assert_eq!(&Op::parse(text).unwrap(), op);
        }
        assert!(Op::parse("INCR(c,x)").is_err());
        assert!(Op::parse("FLUSH(a)").is_err());
    }

    #[test]
    fn incr_adds_to_a_counter_and_fails_without_effect_on_a_non_integer() {
        let mut db = Db::new();
        let incr = |by| Op::Incr {
            key: Bytes::from("c"),
            by,
        };
        assert_eq!(db.execute(&incr(5)).1, Outcome::Applied);
        db.execute(&incr(-2));
        assert_eq!(db.get(b"c").unwrap(), &Bytes::from("3"));
        db.execute(&Op::put("c", "x1"));
        let (_, outcome) = db.execute(&incr(1));
        assert_eq!(
            outcome,
            Outcome::Failed("value is not an integer or out of range".into())
        );
        assert_eq!(db.get(b"c").unwrap(), &Bytes::from("x1"));
        db.execute(&Op::put("c", i64::MAX.to_string()));
        assert!(matches!(db.execute(&incr(1)).1, Outcome::Failed(_)));
        for bad in ["", "+1", "01", "-0", " 1", "1.5"] {
            assert_eq!(parse_integer(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse_integer(b"-12"), Some(-12));
    }

    #[test]
    fn conditional_sets_append_and_delete_all_are_undone_exactly() {
        let mut db = Db::new();
        db.execute(&Op::put("a", "1"));
        db.execute(&Op::put("b", "2"));
        let before = db.clone();
        let k = |s: &'static str| Bytes::from(s);
        let (u1, _) = db.execute(&Op::SetIfAbsent {
            key: k("a"),
            value: k("x"),
        });
        let (u2, _) = db.execute(&Op::SetIfAbsent {
            key: k("n"),
            value: k("new"),
        });
        let (u3, _) = db.execute(&Op::SetIfPresent {
            key: k("zz"),
            value: k("x"),
        });
        let (u4, _) = db.execute(&Op::Append {
            key: k("b"),
            value: k("3"),
        });
        assert_eq!(db.get(b"a").unwrap(), &k("1"));
        assert_eq!(db.get(b"n").unwrap(), &k("new"));
        assert_eq!(db.get(b"zz"), None);
        assert_eq!(db.get(b"b").unwrap(), &k("23"));
        let (u5, _) = db.execute(&Op::DeleteAll);
        assert!(db.is_empty());
        for u in [u5, u4, u3, u2, u1] {
            db.undo(u);
        }
        assert_eq!(db, before);
    }
}
