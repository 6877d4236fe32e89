//! Ring intervals with wrap-around.
//!
//! All of Chord's decisions are interval tests on the circle (SIGCOMM Fig. 4, 7;
//! ToN Fig. 5, 6): "is `id` in `(n, successor]`", "is the finger in `(n, id)`". An
//! interval from `a` to `b` runs clockwise from `a` to `b`; when `a >= b` it
//! wraps through 0. The degenerate case `a == b` is defined as follows, which is
//! what the single-node ring created by `create` needs (successor = itself):
//!
//! * `(a, a]` is the whole circle (a single node owns every key);
//! * `[a, a)` is the whole circle (a finger interval of a full turn);
//! * `(a, a)` is the whole circle except `a` (every other node precedes any id).
//!
//! The functions are generic over any totally ordered type, so they work for
//! [`crate::Id`] and for compact integer ids in the simulator alike.

/// `x ∈ (a, b)` on the circle.
#[inline]
pub fn in_open<T: Ord>(x: &T, a: &T, b: &T) -> bool {
    if a < b {
        a < x && x < b
    } else {
        // Wraps through 0; a == b means everything except a.
        x > a || x < b
    }
}

/// `x ∈ (a, b]` on the circle.
#[inline]
pub fn in_open_closed<T: Ord>(x: &T, a: &T, b: &T) -> bool {
    if a < b {
        a < x && x <= b
    } else {
        // a == b: the whole circle.
        x > a || x <= b
    }
}

/// `x ∈ [a, b)` on the circle.
#[inline]
pub fn in_closed_open<T: Ord>(x: &T, a: &T, b: &T) -> bool {
    if a < b {
        a <= x && x < b
    } else {
        // a == b: the whole circle.
        x >= a || x < b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference definition: walk clockwise from `a` one step at a time.
    fn walk(size: u32, a: u32, b: u32, include_a: bool, include_b: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if include_a {
            out.push(a);
        }
        let mut x = (a + 1) % size;
        loop {
            if x == b {
                if include_b && !out.contains(&b) {
                    out.push(b);
                }
                break;
            }
            out.push(x);
            x = (x + 1) % size;
        }
        out.sort();
        out
    }

    /// Exhaustive check of every interval kind on every ring of size 2^3..2^5
    /// against the step-by-step clockwise walk.
    #[test]
    fn intervals_match_a_clockwise_walk_on_every_small_ring() {
        for bits in 3..=5u32 {
            let size = 1u32 << bits;
            for a in 0..size {
                for b in 0..size {
                    let oc = if a == b {
                        (0..size).collect::<Vec<_>>()
                    } else {
                        walk(size, a, b, false, true)
                    };
                    let co = if a == b {
                        (0..size).collect::<Vec<_>>()
                    } else {
                        walk(size, a, b, true, false)
                    };
                    let oo = if a == b {
                        (0..size).filter(|&x| x != a).collect::<Vec<_>>()
                    } else {
                        walk(size, a, b, false, false)
                    };
                    for x in 0..size {
                        assert_eq!(
                            in_open_closed(&x, &a, &b),
                            oc.contains(&x),
                            "{x} in ({a},{b}]"
                        );
                        assert_eq!(
                            in_closed_open(&x, &a, &b),
                            co.contains(&x),
                            "{x} in [{a},{b})"
                        );
                        assert_eq!(in_open(&x, &a, &b), oo.contains(&x), "{x} in ({a},{b})");
                    }
                }
            }
        }
    }

    #[test]
    fn seed_ring_examples_hold() {
        // Slides: node 10 owns (120, 10]; node 105 owns (90, 105].
        assert!(in_open_closed(&5u32, &120, &10));
        assert!(in_open_closed(&10u32, &120, &10));
        assert!(!in_open_closed(&120u32, &120, &10));
        assert!(in_open_closed(&100u32, &90, &105));
        // Finger interval [122, 26) of node 90 wraps through 0.
        assert!(in_closed_open(&0u32, &122, &26));
        assert!(!in_closed_open(&26u32, &122, &26));
    }
}
