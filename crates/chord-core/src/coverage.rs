//! Which parts of the ring a process is known to hold completely.
//!
//! A key that is missing from its owner's store is either a key nobody wrote
//! or a key whose every copy was on nodes that failed together (with `k`
//! copies, `k` adjacent processes). Chord's lookup cannot tell the two
//! apart: the new owner simply has no record. What the data plane *can*
//! know is where its copy came from. A process holds a **complete copy** of
//! an arc `(lo, hi]` when someone vouched for it:
//!
//! * a process alone on the ring holds the whole ring (it created it);
//! * after a clean anti-entropy round of an owner over its range, the owner
//!   and every replica target hold identical, durable copies; if any of
//!   them held a complete copy before the round, all of them do after it
//!   (the owner tells its targets with [`crate::data::DataMsg::Covered`]);
//! * a leaving node that held its range completely says so to its successor
//!   once the hand-off is acknowledged.
//!
//! A process loses an arc when it is told to drop its copies there. The
//! owner of a key with no record answers "no record" only when the key lies
//! in an arc it holds; otherwise its answer is "unsure", and a read that
//! finds no copy anywhere fails with [`crate::data::DataError::MaybeLost`]
//! instead of returning nil.
//!
//! Arcs live in memory: after a restart a process holds nothing until a
//! round or a join hand-off vouches for its range again.
//!
//! [`ArcSet`] keeps the arcs as disjoint, sorted, inclusive intervals of the
//! linear id space `[0, 2^m)`; an arc that wraps through 0 is two intervals.

use crate::id::{Id, IdSpace};

/// A set of ring arcs `(lo, hi]`. See the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArcSet {
    /// Disjoint, sorted, non-adjacent inclusive intervals `[a, b]`.
    intervals: Vec<(Id, Id)>,
}

impl ArcSet {
    /// The empty set.
    pub fn new() -> ArcSet {
        ArcSet::default()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.intervals.is_empty()
    }

    /// The arc `(lo, hi]` as inclusive intervals (`lo == hi`: the whole ring).
    fn pieces(space: &IdSpace, lo: Id, hi: Id) -> Vec<(Id, Id)> {
        let max = space.max();
        if lo == hi {
            return vec![(Id::ZERO, max)];
        }
        let start = space.add(lo, space.id(1));
        if lo < hi {
            vec![(start, hi)]
        } else if lo == max {
            // (max, hi] starts at 0.
            vec![(Id::ZERO, hi)]
        } else {
            vec![(start, max), (Id::ZERO, hi)]
        }
    }

    /// Whether `x` lies in the set.
    pub fn contains(&self, x: Id) -> bool {
        // The last interval starting at or before x.
        let i = self.intervals.partition_point(|(a, _)| *a <= x);
        i > 0 && x <= self.intervals[i - 1].1
    }

    /// Whether the whole arc `(lo, hi]` lies in the set.
    pub fn covers(&self, space: &IdSpace, lo: Id, hi: Id) -> bool {
        Self::pieces(space, lo, hi).into_iter().all(|(a, b)| {
            let i = self.intervals.partition_point(|(s, _)| *s <= a);
            i > 0 && b <= self.intervals[i - 1].1
        })
    }

    /// Adds the arc `(lo, hi]`.
    pub fn insert(&mut self, space: &IdSpace, lo: Id, hi: Id) {
        for (a, b) in Self::pieces(space, lo, hi) {
            self.intervals.push((a, b));
        }
        self.intervals.sort();
        let one = space.id(1);
        let mut merged: Vec<(Id, Id)> = Vec::with_capacity(self.intervals.len());
        for (a, b) in self.intervals.drain(..) {
            if let Some(last) = merged.last_mut() {
                // Overlapping or adjacent (last.1 + 1 == a, without wrapping).
                if a <= last.1 || (last.1 != space.max() && space.add(last.1, one) == a) {
                    last.1 = last.1.max(b);
                    continue;
                }
            }
            merged.push((a, b));
        }
        self.intervals = merged;
    }

    /// Removes the arc `(lo, hi]`.
    pub fn remove(&mut self, space: &IdSpace, lo: Id, hi: Id) {
        let one = space.id(1);
        for (a, b) in Self::pieces(space, lo, hi) {
            let mut kept = Vec::with_capacity(self.intervals.len() + 1);
            for &(s, e) in &self.intervals {
                if e < a || s > b {
                    kept.push((s, e));
                    continue;
                }
                if s < a {
                    kept.push((s, space.sub(a, one)));
                }
                if e > b {
                    kept.push((space.add(b, one), e));
                }
            }
            self.intervals = kept;
        }
    }

    /// The number of disjoint intervals (for bounds and tests).
    pub fn len(&self) -> usize {
        self.intervals.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interval::in_open_closed;
    use proptest::prelude::*;

    fn sp() -> IdSpace {
        IdSpace::new(6).unwrap()
    }

    fn id(v: u64) -> Id {
        sp().id(v)
    }

    #[test]
    fn arcs_that_wrap_through_zero_are_held_on_both_sides() {
        let s = sp();
        let mut set = ArcSet::new();
        set.insert(&s, id(60), id(3));
        for x in [61, 62, 63, 0, 1, 2, 3] {
            assert!(set.contains(id(x)), "{x}");
        }
        for x in [60, 4, 30] {
            assert!(!set.contains(id(x)), "{x}");
        }
        assert!(set.covers(&s, id(62), id(2)));
        assert!(!set.covers(&s, id(59), id(2)));
        set.remove(&s, id(63), id(1));
        assert!(set.contains(id(63)) && !set.contains(id(0)) && !set.contains(id(1)));
        assert!(set.contains(id(2)));
    }

    #[test]
    fn adjacent_arcs_merge_and_the_whole_ring_is_one_interval() {
        let s = sp();
        let mut set = ArcSet::new();
        set.insert(&s, id(10), id(20));
        set.insert(&s, id(20), id(30));
        assert_eq!(set.len(), 1);
        assert!(set.covers(&s, id(10), id(30)));
        set.insert(&s, id(5), id(5));
        assert_eq!(set.len(), 1);
        assert!(set.covers(&s, id(40), id(40)));
    }

    proptest! {
        /// The set agrees with a model: a point is in it iff the last arc
        /// operation that mentions it was an insert.
        #[test]
        fn agrees_with_a_point_model(ops in prop::collection::vec((any::<bool>(), 0u64..64, 0u64..64), 0..30)) {
            let s = sp();
            let mut set = ArcSet::new();
            let mut model = [false; 64];
            for (add, lo, hi) in ops {
                if add { set.insert(&s, id(lo), id(hi)) } else { set.remove(&s, id(lo), id(hi)) }
                for (x, m) in model.iter_mut().enumerate() {
                    if in_open_closed(&id(x as u64), &id(lo), &id(hi)) {
                        *m = add;
                    }
                }
            }
            for (x, m) in model.iter().enumerate() {
                prop_assert_eq!(set.contains(id(x as u64)), *m, "point {}", x);
            }
            for lo in 0..64u64 {
                for hi in [lo, (lo + 1) % 64, (lo + 17) % 64, (lo + 40) % 64] {
                    let all = (0..64u64)
                        .filter(|x| in_open_closed(&id(*x), &id(lo), &id(hi)))
                        .all(|x| model[x as usize]);
                    prop_assert_eq!(set.covers(&s, id(lo), id(hi)), all, "arc ({}, {}]", lo, hi);
                }
            }
        }
    }
}
