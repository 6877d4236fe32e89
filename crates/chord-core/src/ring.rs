//! A static, fully stabilized ring: consistent hashing, finger tables and lookups.
//!
//! When every node's successor, predecessor and fingers are correct (the state
//! that stabilization converges to, SIGCOMM §5 Thm. 5), all routing state is a
//! function of the sorted set of node ids. [`StaticRing`] stores exactly that
//! sorted vector (about 32 bytes per node, so `10^6` nodes take 32 MB) and
//! computes each finger on demand by binary search:
//!
//! * **Consistent hashing** (SIGCOMM §4.2): key `k` lives at `successor(k)`, the
//!   first node whose id is `>= k`, wrapping around.
//! * **Finger table** (SIGCOMM §4.3, Table 1): `finger[i].start = (n + 2^(i-1)) mod
//!   2^m`, `finger[i].interval = [start_i, start_(i+1))`, `finger[i].node =
//!   successor(start_i)`, for `1 <= i <= m`.
//! * **Successor walk** (SIGCOMM §4.3, "each node need only be aware of its
//!   successor"): forward to the successor until `key ∈ (n, successor]`; O(N) hops.
//! * **Finger walk** (SIGCOMM Fig. 4 / ToN Fig. 5): forward to the
//!   `closest_preceding_finger(key)` until `key ∈ (n, successor]`, then to the
//!   successor; O(log N) hops because each hop at least halves the remaining
//!   distance (Thm. 2).
//!
//! Iterative and recursive lookups visit the same nodes on a stable ring; they
//! differ only in who sends the messages (see [`crate::node`]), so the path here
//! serves both.
//!
//! A lookup starts with one local check that the papers leave implicit: if the
//! origin itself owns the key (`key ∈ (predecessor, n]`) the path is just the
//! origin. Without it, Fig. 5 would send a lookup for the origin's own id once
//! around the ring.

use serde::Serialize;

use crate::ChordError;
use crate::id::{Id, IdSpace};
use crate::interval::{in_open, in_open_closed};

/// One row of a finger table: the interval `[start, end)` and `successor(start)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FingerRow {
    /// `finger[i].start = (n + 2^(i-1)) mod 2^m`.
    pub start: Id,
    /// `finger[i+1].start` (for the last row, `n` itself): the interval is `[start, end)`.
    pub end: Id,
    /// `finger[i].node = successor(start)`.
    pub node: Id,
}

/// Which routing state a lookup may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walk {
    /// Follow successor pointers only (O(N) hops).
    Successor,
    /// Follow the closest preceding finger (O(log N) hops).
    Finger,
}

/// A stable ring held as a sorted vector of distinct node ids.
#[derive(Clone, Debug)]
pub struct StaticRing {
    space: IdSpace,
    ids: Vec<Id>,
}

impl StaticRing {
    /// A ring of the given node ids (any order). Rejects an empty set, ids that do
    /// not fit in `m` bits, and duplicates.
    pub fn new(space: IdSpace, mut ids: Vec<Id>) -> Result<StaticRing, ChordError> {
        if ids.is_empty() {
            return Err(ChordError::EmptyRing);
        }
        if let Some(bad) = ids.iter().find(|id| !space.contains(**id)) {
            return Err(ChordError::IdOutOfRange {
                id: bad.to_string(),
                bits: space.bits(),
            });
        }
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(ChordError::DuplicateNode {
                id: w[0].to_string(),
            });
        }
        Ok(StaticRing { space, ids })
    }

    /// A ring of `n` distinct uniformly random ids drawn from `rng` (duplicates,
    /// vanishingly rare for large `m`, are redrawn).
    pub fn random<R: rand::Rng + ?Sized>(space: IdSpace, n: usize, rng: &mut R) -> StaticRing {
        assert!(n >= 1, "a ring needs at least one node");
        let max_nodes = if space.bits() < 64 {
            1u64 << space.bits()
        } else {
            u64::MAX
        };
        assert!(n as u64 <= max_nodes, "more nodes than identifiers");
        let mut ids: Vec<Id> = (0..n).map(|_| space.random(rng)).collect();
        loop {
            ids.sort_unstable();
            ids.dedup();
            if ids.len() == n {
                break;
            }
            while ids.len() < n {
                ids.push(space.random(rng));
            }
        }
        StaticRing { space, ids }
    }

    /// The identifier space.
    pub fn space(&self) -> IdSpace {
        self.space
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Always false: a ring has at least one node.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The node ids in increasing order.
    pub fn ids(&self) -> &[Id] {
        &self.ids
    }

    /// The id of the node at position `i` in increasing order.
    pub fn id(&self, i: usize) -> Id {
        self.ids[i]
    }

    /// The position of node `id`, or an error if it is not a member.
    pub fn index_of(&self, id: Id) -> Result<usize, ChordError> {
        self.ids
            .binary_search(&id)
            .map_err(|_| ChordError::NotInRing { id: id.to_string() })
    }

    /// Position of `successor(key)`: the first node whose id is `>= key`, wrapping.
    #[inline]
    pub fn successor_index(&self, key: Id) -> usize {
        let i = self.ids.partition_point(|x| *x < key);
        if i == self.ids.len() { 0 } else { i }
    }

    /// `successor(key)` (SIGCOMM §4.2).
    pub fn successor(&self, key: Id) -> Id {
        self.ids[self.successor_index(key)]
    }

    /// Position of the node after position `i`.
    #[inline]
    pub fn next_index(&self, i: usize) -> usize {
        if i + 1 == self.ids.len() { 0 } else { i + 1 }
    }

    /// Position of the node before position `i`.
    #[inline]
    pub fn prev_index(&self, i: usize) -> usize {
        if i == 0 { self.ids.len() - 1 } else { i - 1 }
    }

    /// Whether node `i` is responsible for `key`: `key ∈ (predecessor, n]`.
    #[inline]
    pub fn owns(&self, i: usize, key: Id) -> bool {
        in_open_closed(&key, &self.ids[self.prev_index(i)], &self.ids[i])
    }

    /// Position of `finger[i].node = successor(n + 2^(i-1))` of node position `n`,
    /// `1 <= i <= m`.
    pub fn finger_index(&self, n: usize, i: u32) -> usize {
        self.successor_index(self.space.finger_start(self.ids[n], i))
    }

    /// The full finger table of node position `n`: `m` rows (SIGCOMM Table 1).
    pub fn finger_table(&self, n: usize) -> Vec<FingerRow> {
        let id = self.ids[n];
        (1..=self.space.bits())
            .map(|i| {
                let start = self.space.finger_start(id, i);
                FingerRow {
                    start,
                    end: self.space.finger_start(id, i + 1),
                    node: self.successor(start),
                }
            })
            .collect()
    }

    /// Position of the finger of `n` closest before `key`: the highest `i` with
    /// `finger[i].node ∈ (n, key)`, or `n` itself when there is none (SIGCOMM
    /// Fig. 4 `closest_preceding_finger`).
    ///
    /// Equivalent to scanning `i = m..1`, but starts at the highest `i` whose start
    /// lies in `(n, key)`: a finger whose start is at or past `key` has its node
    /// at or past `key` too (or it wraps to `n`), so it can never qualify.
    pub fn closest_preceding_finger(&self, n: usize, key: Id) -> usize {
        let nid = self.ids[n];
        let d = self.space.distance(nid, key);
        // Highest i with 2^(i-1) < d; d == 0 means (n, n): the whole ring but n.
        let top = if d == Id::ZERO {
            self.space.bits()
        } else {
            self.space.sub(d, self.space.id(1)).bit_len()
        };
        for i in (1..=top).rev() {
            let f = self.finger_index(n, i);
            if in_open(&self.ids[f], &nid, &key) {
                return f;
            }
        }
        n
    }

    /// The nodes a lookup for `key` starting at position `from` visits, origin
    /// and owner included (positions). `hops = path.len() - 1`.
    pub fn lookup_path(&self, from: usize, key: Id, walk: Walk) -> Vec<usize> {
        let mut path = vec![from];
        if self.owns(from, key) {
            return path;
        }
        let mut cur = from;
        loop {
            let succ = self.next_index(cur);
            if in_open_closed(&key, &self.ids[cur], &self.ids[succ]) {
                path.push(succ);
                return path;
            }
            let next = match walk {
                Walk::Successor => succ,
                Walk::Finger => {
                    let f = self.closest_preceding_finger(cur, key);
                    if f == cur { succ } else { f }
                }
            };
            path.push(next);
            cur = next;
        }
    }

    /// Number of hops (`path.len() - 1`) of a finger-walk lookup, without
    /// allocating the path. Used by the large experiments.
    pub fn lookup_hops(&self, from: usize, key: Id) -> u32 {
        if self.owns(from, key) {
            return 0;
        }
        let mut cur = from;
        let mut hops = 0;
        loop {
            let succ = self.next_index(cur);
            hops += 1;
            if in_open_closed(&key, &self.ids[cur], &self.ids[succ]) {
                return hops;
            }
            let f = self.closest_preceding_finger(cur, key);
            cur = if f == cur { succ } else { f };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_ring() -> StaticRing {
        let s = IdSpace::new(7).unwrap();
        StaticRing::new(s, [10, 32, 60, 90, 105, 120].map(|v| s.id(v)).to_vec()).unwrap()
    }

    fn rows(r: &StaticRing, node: u64) -> Vec<(u64, u64, u64)> {
        let i = r.index_of(r.space().id(node)).unwrap();
        r.finger_table(i)
            .iter()
            .map(|f| {
                (
                    f.start.to_u64().unwrap(),
                    f.end.to_u64().unwrap(),
                    f.node.to_u64().unwrap(),
                )
            })
            .collect()
    }

    /// Reference: seed slides "Finger Table Notations" (m = 7, N = 6), SIGCOMM Table 1.
    ///
    /// The slides end the last interval at `n + 1` (`[26, 91)` here, `[74, 11)` for
    /// node 10), i.e. they wrap around to `finger[1].start`. The definition says
    /// `[start_m, start_(m+1))` with `start_(m+1) = (n + 2^m) mod 2^m = n`, which is
    /// also how SIGCOMM Fig. 3(b) writes it (node 1, m = 3: `[5, 1)`). The
    /// definition wins: the last interval is `[26, 90)`. Every `node` column
    /// matches the slide.
    #[test]
    fn seed_finger_table_of_node_90_matches_the_slide() {
        assert_eq!(
            rows(&seed_ring(), 90),
            vec![
                (91, 92, 105),
                (92, 94, 105),
                (94, 98, 105),
                (98, 106, 105),
                (106, 122, 120),
                (122, 26, 10),
                (26, 90, 32), // slide: [26, 91); definition: end = n = 90
            ]
        );
    }

    /// Reference: seed slides "Finger Table of Node 10", SIGCOMM Table 1.
    ///
    /// The slide contradicts the definition in one row: for k = 5 it shows
    /// start 26, interval [26, 42), node **60**. By the definition
    /// `finger[5].node = successor(26)`, and the first node with id >= 26 is **32**
    /// (32 lies inside [26, 42)). The definition wins, so this test asserts 32.
    /// As for node 90, the last interval ends at `n` = 10, where the slide writes 11.
    #[test]
    fn seed_finger_table_of_node_10_follows_the_definition_not_the_slide() {
        assert_eq!(
            rows(&seed_ring(), 10),
            vec![
                (11, 12, 32),
                (12, 14, 32),
                (14, 18, 32),
                (18, 26, 32),
                (26, 42, 32), // slide says 60; successor(26) = 32
                (42, 74, 60),
                (74, 10, 90), // slide: [74, 11); definition: end = n = 10
            ]
        );
    }

    /// Reference: seed slides "Route k = 15": 90 -> 10 -> 32.
    #[test]
    fn seed_lookup_of_key_15_from_node_90_goes_via_10_to_32() {
        let r = seed_ring();
        let s = r.space();
        let from = r.index_of(s.id(90)).unwrap();
        let path: Vec<u64> = r
            .lookup_path(from, s.id(15), Walk::Finger)
            .iter()
            .map(|&i| r.id(i).to_u64().unwrap())
            .collect();
        assert_eq!(path, vec![90, 10, 32]);
        assert_eq!(r.lookup_hops(from, s.id(15)), 2);
        assert_eq!(r.successor(s.id(15)), s.id(32));
    }

    /// Reference: seed slides "Basic Lookups": the successor walk visits every node
    /// between the entry point and the owner.
    #[test]
    fn successor_walk_visits_every_node_up_to_the_owner() {
        let r = seed_ring();
        let s = r.space();
        let from = r.index_of(s.id(32)).unwrap();
        let path: Vec<u64> = r
            .lookup_path(from, s.id(80), Walk::Successor)
            .iter()
            .map(|&i| r.id(i).to_u64().unwrap())
            .collect();
        assert_eq!(path, vec![32, 60, 90]);
    }

    /// Reference: SIGCOMM Fig. 2 (m = 3, nodes 0, 1, 3): key 1 -> 1, 2 -> 3, 6 -> 0;
    /// Fig. 3(b): node 1's fingers are 3, 3, 0.
    #[test]
    fn sigcomm_figure_2_and_3_examples_hold() {
        let s = IdSpace::new(3).unwrap();
        let r = StaticRing::new(s, vec![s.id(0), s.id(1), s.id(3)]).unwrap();
        assert_eq!(r.successor(s.id(1)), s.id(1));
        assert_eq!(r.successor(s.id(2)), s.id(3));
        assert_eq!(r.successor(s.id(6)), s.id(0));
        let f: Vec<Id> = r.finger_table(1).iter().map(|f| f.node).collect();
        assert_eq!(f, vec![s.id(3), s.id(3), s.id(0)]);
    }

    #[test]
    fn single_node_ring_owns_everything_in_zero_hops() {
        let s = IdSpace::new(8).unwrap();
        let r = StaticRing::new(s, vec![s.id(77)]).unwrap();
        for k in 0..256 {
            assert_eq!(r.lookup_path(0, s.id(k), Walk::Finger), vec![0]);
        }
    }

    #[test]
    fn bad_rings_are_rejected() {
        let s = IdSpace::new(7).unwrap();
        assert!(matches!(
            StaticRing::new(s, vec![s.id(1), s.id(1)]),
            Err(ChordError::DuplicateNode { .. })
        ));
        assert!(matches!(
            StaticRing::new(s, vec![Id::from_u64(128)]),
            Err(ChordError::IdOutOfRange { .. })
        ));
        assert!(matches!(
            StaticRing::new(s, vec![]),
            Err(ChordError::EmptyRing)
        ));
    }
}
