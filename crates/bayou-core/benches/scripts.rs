//! The cost of Bayou writes with a dependency check and a merge procedure,
//! printed as figures (`cargo bench -p bayou-core --bench scripts`).
//!
//! 1. Writes per second on one replica: plain `W(key,value)` against a write
//!    whose dependency check passes (update applied) and one whose check
//!    fails so the merge procedure runs. The write is the meeting-room
//!    request shape of [T95 Fig. 3], written out here so the bench does not
//!    depend on the application crate.
//! 2. Redo: one write that sorts before 10^4 tentative scripted writes
//!    arrives; every one of them is undone and re-executed (check, and merge
//!    where it conflicts), as [T95 Table 2] measured.

use std::hint::black_box;
use std::time::Instant;

use bayou_core::{
    BayouWrite, DependencyCheck, Item, Mutation, Op, Outcome, Replica, Role, ServerId,
};

fn sid(s: &str) -> ServerId {
    ServerId::new(s).unwrap()
}

/// A request for `slot` (free or not), falling back to a distinct free
/// alternate key when it conflicts.
fn request(i: usize, slot: &str) -> Op {
    let merge = format!(
        r#"for alt in ["alt{i}a", "alt{i}b"] {{
    if !exists(alt) {{ put(alt, "m{i}"); return; }}
}}
put("errorlog/m{i}", "no room");"#
    );
    Op::Bayou(Box::new(BayouWrite {
        update: vec![Mutation::Put(slot.to_string(), format!("m{i}"))],
        check: Some(DependencyCheck {
            query: format!("exists(\"{slot}\")"),
            expected: "false".into(),
        }),
        merge: Some(merge),
        label: None,
    }))
}

fn rate(label: &str, n: usize, make: impl Fn(usize) -> Op, expect: Outcome) -> f64 {
    let mut r = Replica::new(sid("A"), Role::Secondary);
    // Pre-build ops so only execution is timed.
    let ops: Vec<Op> = (0..n).map(&make).collect();
    let start = Instant::now();
    let mut last = None;
    for (i, op) in ops.into_iter().enumerate() {
        last = Some(r.client_write(i as u64, op));
        if i % 1000 == 0 {
            black_box(r.take_persist());
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(r.outcome(&last.unwrap()), expect);
    let per_sec = n as f64 / secs;
    println!("{label:<52} {n:>7} writes {secs:>7.3} s {per_sec:>10.0} writes/s");
    per_sec
}

fn redo_under(tentative: usize) {
    let mut r = Replica::new(sid("R"), Role::Secondary);
    for i in 0..tentative {
        // Half the requests compete for a few slots, so redo runs merges too.
        let slot = if i % 2 == 0 {
            format!("slot{}", i % 50)
        } else {
            format!("own{i}")
        };
        r.client_write(1000 + i as u64, request(i, &slot));
    }
    r.take_persist();
    let mut old = Replica::new(sid("O"), Role::Secondary);
    old.client_write(1, request(usize::MAX, "slot0"));
    let items: Vec<Item> = old.items_for(&r.summary()).collect();
    let start = Instant::now();
    let report = r.receive(items).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(report.undone, tentative);
    println!(
        "redo: one early write under {tentative:>6} tentative scripted writes: {:>8.2} ms, {:>6.1} us per redone write",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e6 / tentative as f64
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 100_000 } else { 1_000 };
    let plain = rate(
        "plain W(key,value)",
        n,
        |i| Op::put(format!("key{i}"), "value"),
        Outcome::Applied,
    );
    let checked = rate(
        "check passes (update applied)",
        n,
        |i| request(i, &format!("free{i}")),
        Outcome::Applied,
    );
    let merged = rate(
        "check fails, merge procedure runs",
        n,
        |i| request(i, "taken"),
        Outcome::Merged,
    );
    println!(
        "ratio to plain writes: check {:.3}, check+merge {:.3}",
        checked / plain,
        merged / plain
    );
    let t: &[usize] = if full { &[1_000, 10_000] } else { &[100] };
    for &t in t {
        redo_under(t);
    }
}
