//! Heap bytes per key of a replica's databases, printed as figures (run with
//! `cargo bench -p bayou-core --bench memory`).
//!
//! The large key space of the soak (`bench/bayou-soak.py`) in one process,
//! without network or disk: 10^6 SETs of 100-byte values over 10^6 random
//! 16-byte keys (about 632,000 distinct keys), as redis-benchmark `-r
//! 1000000` sends them, with the default retention. Three replicas:
//!
//! * P, the primary, taking the client writes itself;
//! * A, a secondary taking the client writes, which P commits (batches of
//!   1,000, as anti-entropy delivers them);
//! * B, a secondary receiving the committed writes.
//!
//! First the map alone: the same keys and values (allocated beforehand) in a
//! `std::collections::BTreeMap` and in the `imbl::OrdMap` that [`Db`] uses,
//! bytes of map per entry.
//!
//! A global allocator counts live heap bytes. For each replica the figures
//! are the live heap once it is alone in the process, its peak during the
//! run, and both per key against the 116 bytes of a key and its value.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bayou_core::{Op, Replica, Retention, Role, ServerId, Summary};
use bytes::Bytes;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                - layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const WRITES: u64 = 1_000_000;
const KEYS: u64 = 1_000_000;
const BATCH: u64 = 1_000;

fn sid(s: &str) -> ServerId {
    ServerId::new(s).unwrap()
}

/// redis-benchmark's `key:%012d` with a random suffix, and a 100-byte value.
fn op(rng: &mut u64) -> Op {
    *rng = rng
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let k = (*rng >> 33) % KEYS;
    Op::put(format!("key:{k:012}"), vec![b'x'; 100])
}

/// Drops what a driver would have made durable.
fn drain(r: &mut Replica) {
    r.take_persist();
    r.take_checkpoint();
}

fn report(name: &str, r: &Replica, peak: Option<usize>) {
    let live = LIVE.load(Ordering::Relaxed);
    let keys = r.db(bayou_core::View::Full).len();
    let peak = peak.map_or(String::new(), |p| {
        format!(
            ", peak {:.1} MB = {:.0} B/key",
            p as f64 / 1e6,
            p as f64 / keys as f64
        )
    });
    println!(
        "{name}: {keys} keys, {} retained writes; live heap {:.1} MB = {:.0} B/key{peak}",
        r.retained_len(),
        live as f64 / 1e6,
        live as f64 / keys as f64,
    );
}

fn main() {
    // The maps alone, over the keys and values the replicas will hold.
    let mut rng = 1;
    let entries: Vec<(Bytes, Bytes)> = (0..WRITES)
        .filter_map(|_| match op(&mut rng) {
            Op::Put { key, value } => Some((key, value)),
            _ => None,
        })
        .collect();
    // The first clone of a `Bytes` made from a `Vec` allocates its shared
    // header; do that outside the measurement.
    drop(entries.clone());
    let before = LIVE.load(Ordering::Relaxed);
    // Inserted one at a time in the writes' (random) order, as a replica
    // does: `collect` would sort and bulk-load a `BTreeMap` into full nodes.
    let mut btree = std::collections::BTreeMap::new();
    for (k, v) in &entries {
        btree.insert(k.clone(), v.clone());
    }
    let btree_bytes = LIVE.load(Ordering::Relaxed) - before;
    let n = btree.len();
    drop(btree);
    let before = LIVE.load(Ordering::Relaxed);
    let mut ord = imbl::OrdMap::new();
    for (k, v) in &entries {
        ord.insert(k.clone(), v.clone());
    }
    let ord_bytes = LIVE.load(Ordering::Relaxed) - before;
    drop(ord);
    drop(entries);
    println!(
        "map alone, {n} entries (keys and values allocated beforehand): BTreeMap {:.0} B/entry, imbl::OrdMap {:.0} B/entry",
        btree_bytes as f64 / n as f64,
        ord_bytes as f64 / n as f64
    );

    // P alone.
    PEAK.store(0, Ordering::Relaxed);
    let mut p = Replica::new(sid("P"), Role::Primary { autocommit: true });
    p.set_retention(Retention::default());
    let mut rng = 1;
    for i in 0..WRITES {
        p.client_write(i, op(&mut rng));
        drain(&mut p);
    }
    report(
        "P (primary, client writes)",
        &p,
        Some(PEAK.load(Ordering::Relaxed)),
    );
    drop(p);

    // A with a primary committing its writes, and B receiving them from
    // the primary; then A and B alone, then B alone.
    PEAK.store(0, Ordering::Relaxed);
    let mut p = Replica::new(sid("P"), Role::Primary { autocommit: true });
    p.set_retention(Retention::default());
    let mut a = Replica::new(sid("A"), Role::Secondary);
    a.set_retention(Retention::default());
    let mut b = Replica::new(sid("B"), Role::Secondary);
    b.set_retention(Retention::default());
    let mut rng = 1;
    for i in 0..WRITES {
        a.client_write(i, op(&mut rng));
        drain(&mut a);
        if (i + 1) % BATCH == 0 {
            let s = p.summary();
            let items: Vec<_> = a.items_for(&s).collect();
            p.receive(items).unwrap();
            drain(&mut p);
            for r in [&mut a, &mut b] {
                let s: Summary = r.summary();
                let items: Vec<_> = p.items_for(&s).collect();
                r.receive(items).unwrap();
                drain(r);
            }
        }
    }
    let peak = PEAK.load(Ordering::Relaxed);
    drop(p);
    let both = LIVE.load(Ordering::Relaxed);
    let b_keys = b.db(bayou_core::View::Full).len();
    drop(a);
    let b_live = LIVE.load(Ordering::Relaxed);
    report("B (secondary, receives commits)", &b, None);
    let a_live = both - b_live;
    println!(
        "A (secondary, client writes): live heap {:.1} MB = {:.0} B/key; peak of P, A and B together {:.1} MB",
        a_live as f64 / 1e6,
        a_live as f64 / b_keys as f64,
        peak as f64 / 1e6,
    );
}
