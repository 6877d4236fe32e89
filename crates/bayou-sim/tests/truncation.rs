//! `examples/truncation.bayou`: log truncation, a full-state transfer that
//! is cut off, lost in a crash and restarted, and bundles imported out of
//! order and twice ([P97 §3.3, §4.1]), with every invariant checked.

use bayou_sim::{Coverage, Snapshot, World, parse};

fn run_example() -> (Vec<Snapshot>, Coverage) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/truncation.bayou"
    );
    let text = std::fs::read_to_string(path).expect("examples/truncation.bayou exists");
    let mut shows = Vec::new();
    let mut world = World::new(true);
    world
        .run(&parse(&text).expect("parses"), |s| shows.push(s))
        .expect("runs with every invariant checked");
    (shows, *world.coverage())
}

/// The text of server `i` at a show.
fn server(s: &Snapshot, i: usize) -> String {
    let whole = Snapshot {
        servers: vec![s.servers[i].clone()],
    };
    whole.to_text()
}

#[test]
fn truncation_full_state_transfer_and_bundles_walk_through() {
    let (shows, coverage) = run_example();
    assert_eq!(shows.len(), 5);
    let (p, a, b, c) = (0, 1, 2, 3);
    // Before truncation: no `omitted:` line, as in every older scenario.
    assert!(!server(&shows[0], p).contains("omitted"));
    assert!(!shows[0].to_json().contains("omitted"));
    assert!(
        shows[1]
            .to_json()
            .contains(r#""osn":2,"omitted":{"P":0,"A":2,"B":0,"C":0}"#),
        "{}",
        shows[1].to_json()
    );
    // P keeps only CSN 3; its committed view is unchanged.
    assert_eq!(
        server(&shows[1], p),
        "server P (primary)\n  versions: P: 3 A: 2 B: 0 C: 0\n  omitted: P: 0 A: 2 B: 0 C: 0 (OSN 2)\n  log:\n    3:3:P W(Z,3)\n  db: X=1 Y=2 Z=3\n  committed db: X=1 Y=2 Z=3\n"
    );
    // B installed P's committed database as of CSN 3 and redid its own
    // tentative write on top.
    assert_eq!(
        server(&shows[2], b),
        "server B\n  versions: P: 3 A: 2 B: 4 C: 0\n  omitted: P: 3 A: 2 B: 0 C: 0 (OSN 3)\n  log:\n    ∞:4:B W(X,9)\n  db: X=9 Y=2 Z=3\n  committed db: X=1 Y=2 Z=3\n"
    );
    // The bundle carried exactly that to C.
    assert_eq!(
        server(&shows[3], c).replacen("server C", "server B", 1),
        server(&shows[3], b)
    );
    // In the end A, which never synced after its writes were truncated at
    // P, got a full-state transfer: its own writes are in it, not in its log.
    assert_eq!(
        server(&shows[4], a),
        "server A\n  versions: P: 3 A: 2 B: 4 C: 0\n  omitted: P: 3 A: 2 B: 4 C: 0 (OSN 4)\n  log: (empty)\n  db: X=9 Y=2 Z=3\n  committed db: X=9 Y=2 Z=3\n"
    );
    // The cut transfer was lost in B's crash, restarted and resumed; the
    // bundle's second file, imported first, was refused harmlessly.
    assert_eq!(coverage.cut_transfers, 2, "{coverage:?}");
    assert_eq!(coverage.resumed_transfers, 1, "{coverage:?}");
    assert_eq!(coverage.installs, 3, "{coverage:?}");
    assert_eq!(coverage.bundle_files_stale, 1, "{coverage:?}");
    assert!(coverage.bundle_files_applied >= 4, "{coverage:?}");
}
