//! Reads that ride through failures: a client reads one key in a loop while
//! the key's owner is killed with SIGKILL, then (on the repaired ring) while
//! the owner of another key and the node two places after it (so one of its
//! three copies is left) are killed together. Every read must succeed and
//! return the written value; the latency figures are printed (speed goals
//! live in benchmarks, not in tests).
//!
//! The nodes run the `chord serve` default timings (stabilization every
//! 0.5 s, 1 s RPC timeout, reads hedged after 100 ms), as `chord cluster` does.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use chord_core::IdSpace;
use common::*;

/// One read: when it started (since the loop began), how long it took, and
/// whether it returned the expected value.
struct Sample {
    at: Duration,
    took: Duration,
    ok: bool,
}

/// Reads `key` through the node at `port` until `stop` says so.
fn read_loop(
    port: u16,
    key: String,
    want: String,
    t0: Instant,
    stop: mpsc::Receiver<()>,
) -> Vec<Sample> {
    let mut c = try_conn(port).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = Vec::new();
    while stop.try_recv().is_err() {
        let at = t0.elapsed();
        let t = Instant::now();
        let got: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(&key).query(&mut c);
        let took = t.elapsed();
        let ok = matches!(&got, Ok(Some(v)) if *v == want);
        if !ok {
            eprintln!("read of {key} at {at:?} failed: {got:?}");
            // A failed connection is replaced (the node it talks to stays up).
            c = try_conn(port).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        }
        out.push(Sample { at, took, ok });
    }
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Reads `key` through `reader` for 1 s, kills `victims` with SIGKILL, reads
/// on for `window`; returns (reads, failed) in the window after the kill and
/// prints p50/p99/max.
fn measure(
    ring: &mut Ring,
    what: &str,
    key: &str,
    value: &str,
    reader: usize,
    victims: &[usize],
    window: Duration,
) -> (usize, usize) {
    let (stop_tx, stop_rx) = mpsc::channel();
    let port = ring.nodes[reader].port;
    let (k, v) = (key.to_string(), value.to_string());
    let t0 = Instant::now();
    let h = thread::spawn(move || read_loop(port, k, v, t0, stop_rx));
    thread::sleep(Duration::from_secs(1));
    // A read in flight when the kill starts counts as a read during the failure.
    let kill_at = t0.elapsed().saturating_sub(Duration::from_millis(50));
    for &i in victims {
        ring.kill(i);
    }
    thread::sleep(window);
    stop_tx.send(()).unwrap();
    let samples = h.join().unwrap();
    let before: Vec<&Sample> = samples.iter().filter(|s| s.at < kill_at).collect();
    let during: Vec<&Sample> = samples.iter().filter(|s| s.at >= kill_at).collect();
    let mut lat: Vec<Duration> = during.iter().map(|s| s.took).collect();
    lat.sort();
    let mut base: Vec<Duration> = before.iter().map(|s| s.took).collect();
    base.sort();
    let failed = during.iter().filter(|s| !s.ok).count();
    eprintln!(
        "{what}: before the kill {} reads, p50 {:?}; in the {window:?} after it {} reads, \
         p50 {:?}, p99 {:?}, max {:?}, failed {failed}",
        before.len(),
        percentile(&base, 0.5),
        during.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default(),
    );
    (during.len(), failed)
}

#[test]
fn reads_succeed_through_the_kill_of_the_owner_and_of_two_non_adjacent_nodes() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut ring = Ring::start_default_timing(8, 3, 4);
    ring.wait_ring(Duration::from_secs(60));
    let space = IdSpace::default();
    let mut c = ring.conn(0);
    for (k, v) in [("hot", "one"), ("hot2", "two")] {
        let _: () = redis::cmd("SET").arg(k).arg(v).query(&mut c).unwrap();
    }
    let keys = [("hot", "one"), ("hot2", "two")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    wait_until(Duration::from_secs(30), "3 copies", || {
        ring.copies_are(&keys, 3).is_ok()
    });

    // 1. The owner of "hot" dies.
    let order = ring.ring_order();
    let n = order.len();
    let owner_pos = |ring: &Ring, order: &[usize], key: &str| {
        let kid = space.hash(key.as_bytes());
        order
            .iter()
            .position(|i| ring.nodes[*i].id() >= kid)
            .unwrap_or(0)
    };
    let o = owner_pos(&ring, &order, "hot");
    let reader = order[(o + 4) % n];
    let (reads, failed) = measure(
        &mut ring,
        "owner killed",
        "hot",
        "one",
        reader,
        &[order[o]],
        Duration::from_secs(8),
    );
    assert!(reads > 0);
    assert_eq!(failed, 0, "reads failed while the owner was dead");

    // The ring repairs and "hot2" has 3 copies again.
    ring.wait_ring(Duration::from_secs(60));
    wait_until(Duration::from_secs(60), "3 copies again", || {
        ring.copies_are(&keys, 3).is_ok()
    });

    // 2. The owner of "hot2" and the node two after it die together (not
    //    adjacent: the node between them keeps the last copy).
    let order = ring.ring_order();
    let n = order.len();
    let o = owner_pos(&ring, &order, "hot2");
    let reader = order[(o + 4) % n];
    let (reads, failed) = measure(
        &mut ring,
        "owner and owner+2 killed",
        "hot2",
        "two",
        reader,
        &[order[o], order[(o + 2) % n]],
        Duration::from_secs(8),
    );
    assert!(reads > 0);
    assert_eq!(failed, 0, "reads failed with two non-adjacent nodes dead");
    ring.wait_ring(Duration::from_secs(60));
    wait_until(Duration::from_secs(60), "3 copies after two deaths", || {
        ring.copies_are(&keys, 3).is_ok()
    });
}
