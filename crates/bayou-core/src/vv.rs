//! Version vectors.
//!
//! `V(X)` is the highest accept-stamp of any write a server holds that server
//! `X` accepted from a client ([P97 §2]). Because anti-entropy propagates each
//! server's writes in accept order (the prefix property), holding `X`'s write
//! stamped `t` means holding every earlier write of `X`, so the vector is an
//! exact summary of the writes a server holds: it holds `<t, X>` iff
//! `t <= V(X)`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::{ServerId, Stamp, WriteId};

/// A version vector: per server, the highest accept-stamp held. Missing
/// entries are 0 (nothing held).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<ServerId, Stamp>);

impl VersionVector {
    /// The empty vector.
    pub fn new() -> Self {
        VersionVector::default()
    }

    /// The highest stamp held from `server` (0 when none).
    pub fn get(&self, server: &ServerId) -> Stamp {
        self.0.get(server).copied().unwrap_or(0)
    }

    /// The entry of `server`, if the vector has one (perhaps 0: a server
    /// whose creation is held but none of whose writes is).
    pub fn entry(&self, server: &ServerId) -> Option<Stamp> {
        self.0.get(server).copied()
    }

    /// Adds an entry of 0 for `server` if it has none: the server's
    /// creation is held ([P97 §4.3]).
    pub fn ensure(&mut self, server: &ServerId) {
        self.0.entry(server.clone()).or_insert(0);
    }

    /// Removes the entry of `server`: its retirement is held
    /// ([P97 §4.3]).
    pub fn remove(&mut self, server: &ServerId) {
        self.0.remove(server);
    }

    /// Whether the write `id` is covered, i.e. held by a server with this vector.
    pub fn covers(&self, id: &WriteId) -> bool {
        id.stamp <= self.get(&id.server)
    }

    /// Raises the entry of `id.server` to `id.stamp` if it is lower.
    pub fn advance(&mut self, id: &WriteId) {
        let entry = self.0.entry(id.server.clone()).or_insert(0);
        if *entry < id.stamp {
            *entry = id.stamp;
        }
    }

    /// Whether every entry of `self` is at least that of `other`.
    pub fn dominates(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(s, &t)| self.get(s) >= t)
    }

    /// Raises every entry to at least that of `other` (the pointwise maximum).
    pub fn merge(&mut self, other: &VersionVector) {
        for (s, &t) in &other.0 {
            let entry = self.0.entry(s.clone()).or_insert(0);
            if *entry < t {
                *entry = t;
            }
        }
    }

    /// The largest stamp in the vector (0 when empty).
    pub fn max_stamp(&self) -> Stamp {
        self.0.values().copied().max().unwrap_or(0)
    }

    /// The non-zero entries, in server-id order.
    pub fn iter(&self) -> impl Iterator<Item = (&ServerId, Stamp)> {
        self.0.iter().map(|(s, &t)| (s, t)).filter(|&(_, t)| t > 0)
    }
}

impl fmt::Debug for VersionVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (s, t) in self.iter() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{s}: {t}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str) -> ServerId {
        ServerId::new(id).unwrap()
    }

    #[test]
    fn covers_uses_the_non_strict_test() {
        // [P97 Figs 1-2]: R lacks w iff R.V(w.server) < w.stamp.
        let mut v = VersionVector::new();
        v.advance(&WriteId::new(12, s("A")));
        assert!(v.covers(&WriteId::new(12, s("A"))));
        assert!(v.covers(&WriteId::new(7, s("A"))));
        assert!(!v.covers(&WriteId::new(13, s("A"))));
        assert!(!v.covers(&WriteId::new(1, s("B"))));
    }

    #[test]
    fn advance_never_lowers_an_entry() {
        let mut v = VersionVector::new();
        v.advance(&WriteId::new(12, s("A")));
        v.advance(&WriteId::new(7, s("A")));
        assert_eq!(v.get(&s("A")), 12);
        let mut w = VersionVector::new();
        w.advance(&WriteId::new(5, s("A")));
        assert!(v.dominates(&w));
        assert!(!w.dominates(&v));
    }
}
