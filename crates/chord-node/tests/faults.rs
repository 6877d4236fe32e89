//! The fault suite for Chord on real processes. Each test records what
//! clients were told and checks every later read against it.

mod common;

use std::time::Duration;

use common::{Ring, Rng, SERIAL, wait_until};

/// With 3 copies, three adjacent nodes are killed at once: the keys whose
/// every copy was on them are gone. A read of such a key must not say the
/// key does not exist (nil, `EXISTS` 0): the new owner never held the range
/// and answers `LOST`. Every other key reads its value (SIGCOMM §5.2: the
/// successor list keeps the rest).
#[test]
fn keys_whose_every_copy_died_answer_lost_not_nil() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut ring = Ring::start(8, 3);
    ring.wait_ring(Duration::from_secs(60));
    let keys = ring.write_keys("k", 2000, 7);
    wait_until(Duration::from_secs(60), "3 copies of every key", || {
        ring.copies_are(&keys, 3).is_ok()
    });
    // A few anti-entropy rounds (--sync-ms 200): each replica hears that
    // its copies are complete.
    std::thread::sleep(Duration::from_secs(1));
    // Who held what, before the kill.
    let holders = ring.holders(false);
    let order = ring.ring_order();
    let victims: Vec<usize> = order[2..5].to_vec();
    let gone: Vec<&String> = keys
        .keys()
        .filter(|k| holders[*k].iter().all(|h| victims.contains(h)))
        .collect();
    assert!(
        !gone.is_empty(),
        "some keys lived only on the three victims"
    );
    for &v in &victims {
        ring.kill(v);
    }
    ring.wait_ring(Duration::from_secs(60));

    let mut rng = Rng(11);
    let live = ring.live();
    let (mut values, mut lost, mut nil, mut wrong) = (0, 0, Vec::new(), Vec::new());
    for (k, v) in &keys {
        let mut c = ring.conn(live[rng.below(live.len())]);
        let got: redis::RedisResult<Option<String>> = redis::cmd("GET").arg(k).query(&mut c);
        match got {
            Ok(Some(g)) if &g == v => values += 1,
            Ok(Some(g)) => wrong.push(format!("{k} = {g}, want {v}")),
            Ok(None) => nil.push(k.clone()),
            Err(e) if e.to_string().contains("LOST") => {
                assert!(
                    gone.contains(&k),
                    "{k} answered LOST but has a live copy: {e}"
                );
                lost += 1;
            }
            Err(e) => panic!("GET {k}: {e}"),
        }
    }
    eprintln!(
        "3 adjacent of 8 killed, 3 copies: {} keys, {} gone with every copy, {values} read their value, {lost} answered LOST, {} nil, {} wrong",
        keys.len(),
        gone.len(),
        nil.len(),
        wrong.len()
    );
    assert!(wrong.is_empty(), "wrong values: {wrong:?}");
    assert!(
        nil.is_empty(),
        "lost keys read as nil: {:?}",
        &nil[..nil.len().min(10)]
    );
    assert_eq!(lost, gone.len(), "every key with no copy left answers LOST");
    assert_eq!(values, keys.len() - gone.len());

    // EXISTS says so too, and a new write makes the key readable again.
    let mut c = ring.conn(live[0]);
    let e: redis::RedisResult<i64> = redis::cmd("EXISTS").arg(gone[0]).query(&mut c);
    assert!(e.is_err_and(|e| e.to_string().contains("LOST")));
    let _: () = redis::cmd("SET")
        .arg(gone[0])
        .arg("again")
        .query(&mut c)
        .unwrap();
    let g: Option<String> = redis::cmd("GET").arg(gone[0]).query(&mut c).unwrap();
    assert_eq!(g.as_deref(), Some("again"));
}
