//! A compact finger table.
//!
//! A node has `m` fingers (up to 160), but on a ring of `N` nodes only about
//! `log2 N` of them are distinct: fingers `i <= m - 2 log2 N` all equal the
//! immediate successor w.h.p. (ToN §IV-D). The table is therefore stored
//! run-length encoded: a sorted list of `(first index, node)` pairs, each entry
//! covering the indices up to the next entry. This keeps `10^5` simulated nodes
//! with `m = 160` within a few hundred bytes of finger state each.

/// Run-length encoded `finger[1..=m]` of optional entries of type `T`.
#[derive(Clone, Debug)]
pub(crate) struct FingerRuns<T> {
    m: u32,
    /// `(first index, value)`, strictly increasing indices, adjacent values differ.
    runs: Vec<(u32, Option<T>)>,
}

impl<T: Clone + PartialEq> FingerRuns<T> {
    /// An empty table of `m` fingers.
    pub(crate) fn new(m: u32) -> Self {
        FingerRuns {
            m,
            runs: Vec::new(),
        }
    }

    /// `finger[i]`, `1 <= i <= m`.
    pub(crate) fn get(&self, i: u32) -> Option<&T> {
        let p = self.runs.partition_point(|(s, _)| *s <= i);
        if p == 0 {
            None
        } else {
            self.runs[p - 1].1.as_ref()
        }
    }

    /// Sets `finger[lo..=hi] = v`.
    pub(crate) fn set_range(&mut self, lo: u32, hi: u32, v: Option<T>) {
        debug_assert!(1 <= lo && lo <= hi && hi <= self.m);
        let after = if hi < self.m {
            Some(self.get(hi + 1).cloned())
        } else {
            None
        };
        self.runs.retain(|(s, _)| *s < lo || *s > hi + 1);
        let p = self.runs.partition_point(|(s, _)| *s < lo);
        self.runs.insert(p, (lo, v));
        if let Some(a) = after {
            self.runs.insert(p + 1, (hi + 1, a));
        }
        self.normalize();
    }

    /// Clears every finger whose value satisfies `dead`.
    pub(crate) fn clear_where(&mut self, dead: impl Fn(&T) -> bool) {
        let mut changed = false;
        for (_, v) in self.runs.iter_mut() {
            if v.as_ref().is_some_and(&dead) {
                *v = None;
                changed = true;
            }
        }
        if changed {
            self.normalize();
        }
    }

    /// The distinct set values.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.runs.iter().filter_map(|(_, v)| v.as_ref())
    }

    fn normalize(&mut self) {
        let mut out: Vec<(u32, Option<T>)> = Vec::with_capacity(self.runs.len());
        for (s, v) in self.runs.drain(..) {
            match out.last() {
                None if v.is_none() => {}
                Some((_, pv)) if *pv == v => {}
                _ => out.push((s, v)),
            }
        }
        self.runs = out;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_length_table_behaves_like_an_array() {
        let m = 12;
        let mut t = FingerRuns::<u32>::new(m);
        let mut reference: Vec<Option<u32>> = vec![None; m as usize + 1];
        let mut x = 7u32;
        for step in 0..2000u32 {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            let lo = 1 + (x >> 8) % m;
            let hi = lo + (x >> 16) % (m - lo + 1);
            let v = if step % 7 == 0 {
                None
            } else {
                Some((x >> 4) % 4)
            };
            t.set_range(lo, hi, v);
            for i in lo..=hi {
                reference[i as usize] = v;
            }
            if step % 13 == 0 {
                t.clear_where(|v| *v == 2);
                for r in reference.iter_mut() {
                    if *r == Some(2) {
                        *r = None;
                    }
                }
            }
            for i in 1..=m {
                assert_eq!(t.get(i).copied(), reference[i as usize], "index {i}");
            }
        }
    }
}
