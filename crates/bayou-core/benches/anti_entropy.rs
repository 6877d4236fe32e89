//! Anti-entropy and rollback costs, printed as figures (run with
//! `cargo bench -p bayou-core --bench anti_entropy`).
//!
//! 1. Catch-up: a receiver with nothing gets N = 10^5 and 10^6 missing
//!    writes (committed, and tentative), encoded with postcard as the wire
//!    does: time, writes per second, bytes on the wire per write against the
//!    bytes of the writes' keys and values.
//! 2. Linearity: a receiver that already holds L writes gets 1,000 more, for
//!    L = 10^4, 10^5, 10^6: the time must not grow with L.
//! 3. Rollback and redo: one old write arrives under T = 10^3, 10^4, 10^5
//!    tentative writes: the cost grows with T (every tentative write is
//!    undone and redone once), and per undone write it is constant.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bayou_core::{Item, Op, Replica, Role, ServerId};

const VALUE: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

fn sid(s: &str) -> ServerId {
    ServerId::new(s).unwrap()
}

/// A sender holding `n` writes accepted round-robin at three servers; all
/// committed when `committed`.
fn sender(n: usize, committed: bool) -> Replica {
    let mut p = Replica::new(sid("P"), Role::Primary { autocommit: true });
    let mut a = Replica::new(sid("A"), Role::Secondary);
    let mut b = Replica::new(sid("B"), Role::Secondary);
    let mut origin = Replica::new(sid("S"), Role::Secondary);
    for i in 0..n {
        let op = Op::put(format!("key{}", i % 10_000), &VALUE[..]);
        match i % 3 {
            0 => a.client_write(i as u64, op),
            1 => b.client_write(i as u64, op),
            _ => origin.client_write(i as u64, op),
        };
        if i % 50_000 == 0 {
            a.take_persist();
            b.take_persist();
            origin.take_persist();
        }
    }
    let mut out = if committed {
        for r in [&a, &b, &origin] {
            let items: Vec<Item> = r.items_for(&p.summary()).collect();
            p.receive(items).unwrap();
            p.take_persist();
        }
        p
    } else {
        for r in [&a, &b] {
            let items: Vec<Item> = r.items_for(&origin.summary()).collect();
            origin.receive(items).unwrap();
        }
        origin
    };
    out.take_persist();
    out
}

struct Transfer {
    elapsed: Duration,
    wire_bytes: usize,
    payload_bytes: usize,
    items: usize,
}

/// One full session from `from` to `to`, through postcard encoding, in
/// batches of 1,000 items as a network driver sends them.
fn session(from: &Replica, to: &mut Replica) -> Transfer {
    let start = Instant::now();
    let summary = to.summary();
    let mut wire_bytes = postcard::to_stdvec(&summary).unwrap().len();
    let mut payload_bytes = 0;
    let mut items = 0;
    let mut batch = Vec::with_capacity(1000);
    let mut all = from.items_for(&summary).peekable();
    while all.peek().is_some() {
        batch.clear();
        batch.extend(all.by_ref().take(1000));
        for item in &batch {
            if let Item::Write { write, .. } = item
                && let Op::Put { key, value } = &write.op
            {
                payload_bytes += key.len() + value.len();
            }
        }
        items += batch.len();
        let frame = postcard::to_stdvec(&batch).unwrap();
        wire_bytes += frame.len();
        let decoded: Vec<Item> = postcard::from_bytes(&frame).unwrap();
        to.receive(decoded).unwrap();
        black_box(to.take_persist());
    }
    Transfer {
        elapsed: start.elapsed(),
        wire_bytes,
        payload_bytes,
        items,
    }
}

fn catch_up(n: usize, committed: bool) {
    let from = sender(n, committed);
    let mut to = Replica::new(sid("R"), Role::Secondary);
    let t = session(&from, &mut to);
    assert_eq!(t.items, n);
    assert_eq!(to.log().count(), n);
    let secs = t.elapsed.as_secs_f64();
    println!(
        "catch-up {:>9} {:<9} writes: {:>8.3} s  {:>10.0} writes/s  {:>6.1} wire bytes/write  ({:.1} bytes of key+value; overhead x{:.2})",
        n,
        if committed { "committed" } else { "tentative" },
        secs,
        n as f64 / secs,
        t.wire_bytes as f64 / n as f64,
        t.payload_bytes as f64 / n as f64,
        t.wire_bytes as f64 / t.payload_bytes as f64
    );
}

fn incremental(held: usize) {
    let extra = 1000;
    let mut from = sender(held, true);
    let mut to = Replica::new(sid("R"), Role::Secondary);
    session(&from, &mut to);
    for i in 0..extra {
        from.client_write((held + i) as u64, Op::put(format!("new{i}"), &VALUE[..]));
    }
    from.take_persist();
    let t = session(&from, &mut to);
    assert_eq!(t.items, extra);
    println!(
        "incremental: 1000 new writes to a replica holding {:>8}: {:>8.3} ms",
        held,
        t.elapsed.as_secs_f64() * 1e3
    );
}

fn rollback(tentative: usize) {
    let mut r = Replica::new(sid("R"), Role::Secondary);
    for i in 0..tentative {
        r.client_write(
            1000 + i as u64,
            Op::put(format!("key{}", i % 1000), &VALUE[..]),
        );
    }
    r.take_persist();
    // One write older than every tentative write here.
    let mut old = Replica::new(sid("O"), Role::Secondary);
    old.client_write(1, Op::put("key0", "old"));
    let items: Vec<Item> = old.items_for(&r.summary()).collect();
    let before = r.stats();
    let start = Instant::now();
    let report = r.receive(items).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(report.undone, tentative);
    let redone = r.stats().tentative_executions - before.tentative_executions;
    println!(
        "rollback+redo: one old write under {:>6} tentative: {:>8.3} ms  ({} undone, {} executed, {:.0} ns per undone write)",
        tentative,
        elapsed.as_secs_f64() * 1e3,
        report.undone,
        redone,
        elapsed.as_nanos() as f64 / tentative as f64
    );
}

fn main() {
    // `cargo test --benches` runs this with `--bench` absent: keep that quick.
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[usize] = if full {
        &[100_000, 1_000_000]
    } else {
        &[1_000]
    };
    for &n in sizes {
        catch_up(n, true);
        catch_up(n, false);
    }
    let held: &[usize] = if full {
        &[10_000, 100_000, 1_000_000]
    } else {
        &[1_000]
    };
    for &l in held {
        incremental(l);
    }
    let tent: &[usize] = if full {
        &[1_000, 10_000, 100_000]
    } else {
        &[100]
    };
    for &t in tent {
        rollback(t);
    }
}
