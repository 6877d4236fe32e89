//! The lecture's Bayou walk-through (the first half of the seed slides),
//! replayed from `examples/slides.bayou`: every state the slides show, for
//! each of P, A and B, after each step.

use bayou_sim::{Snapshot, World, parse};

fn run_slides() -> Vec<Snapshot> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/slides.bayou");
    let text = std::fs::read_to_string(path).expect("examples/slides.bayou exists");
    let lines = parse(&text).expect("the slides' scenario parses");
    let mut shows = Vec::new();
    // With every invariant checked along the way.
    World::new(true)
        .run(&lines, |s| shows.push(s))
        .expect("the slides' scenario runs");
    shows
}

/// (versions, log) of server `i` (0 = P, 1 = A, 2 = B) at a snapshot.
fn state(s: &Snapshot, i: usize) -> (String, Vec<String>) {
    (s.servers[i].vv_text(), s.servers[i].log_lines())
}

fn expect(s: &Snapshot, i: usize, vv: &str, log: &[&str]) {
    let (got_vv, got_log) = state(s, i);
    let name = &s.servers[i].server;
    assert_eq!(got_vv, vv, "versions of {name}");
    assert_eq!(got_log, log, "log of {name}");
}

const EMPTY: &[&str] = &[];
const AB: &[&str] = &["∞:5:B W(Z,8)", "∞:7:A W(X,3)", "∞:12:A W(Y,4)"];
const FINAL: &[&str] = &[
    "1:1:P W(X,4)",
    "2:7:P W(Y,8)",
    "3:5:B W(Z,8)",
    "4:7:A W(X,3)",
    "5:12:A W(Y,4)",
    "6:13:B D(Y)",
];

#[test]
fn the_slides_walk_through_is_reproduced_step_by_step() {
    let shows = run_slides();
    assert_eq!(shows.len(), 10);
    let ids: Vec<&str> = shows[0].servers.iter().map(|s| s.server.as_str()).collect();
    assert_eq!(ids, ["P", "A", "B"]);

    // Slide "Bayou Writes": W(X,4) at the primary.
    expect(&shows[0], 0, "P: 1 A: 0 B: 0", &["∞:1:P W(X,4)"]);
    expect(&shows[0], 1, "P: 0 A: 0 B: 0", EMPTY);
    expect(&shows[0], 2, "P: 0 A: 0 B: 0", EMPTY);

    // W(Y,8) at P and W(X,3) at A, both at time 7.
    expect(
        &shows[1],
        0,
        "P: 7 A: 0 B: 0",
        &["∞:1:P W(X,4)", "∞:7:P W(Y,8)"],
    );
    expect(&shows[1], 1, "P: 0 A: 7 B: 0", &["∞:7:A W(X,3)"]);
    expect(&shows[1], 2, "P: 0 A: 0 B: 0", EMPTY);

    // W(Y,4) at A (time 12) and W(Z,8) at B (time 5).
    expect(
        &shows[2],
        0,
        "P: 7 A: 0 B: 0",
        &["∞:1:P W(X,4)", "∞:7:P W(Y,8)"],
    );
    expect(
        &shows[2],
        1,
        "P: 0 A: 12 B: 0",
        &["∞:7:A W(X,3)", "∞:12:A W(Y,4)"],
    );
    expect(&shows[2], 2, "P: 0 A: 0 B: 5", &["∞:5:B W(Z,8)"]);

    // "Bayou Anti-Entropy (Sync)": A and B exchange their writes.
    expect(
        &shows[3],
        0,
        "P: 7 A: 0 B: 0",
        &["∞:1:P W(X,4)", "∞:7:P W(Y,8)"],
    );
    expect(&shows[3], 1, "P: 0 A: 12 B: 5", AB);
    expect(&shows[3], 2, "P: 0 A: 12 B: 5", AB);

    // "Bayou Commit": the primary commits its entries.
    expect(
        &shows[4],
        0,
        "P: 7 A: 0 B: 0",
        &["1:1:P W(X,4)", "2:7:P W(Y,8)"],
    );
    expect(&shows[4], 1, "P: 0 A: 12 B: 5", AB);
    expect(&shows[4], 2, "P: 0 A: 12 B: 5", AB);

    // "Bayou Write": D(Y) at B is stamped max(clock, max(TS) + 1) = 13.
    let mut b_log = AB.to_vec();
    b_log.push("∞:13:B D(Y)");
    expect(
        &shows[5],
        0,
        "P: 7 A: 0 B: 0",
        &["1:1:P W(X,4)", "2:7:P W(Y,8)"],
    );
    expect(&shows[5], 1, "P: 0 A: 12 B: 5", AB);
    expect(&shows[5], 2, "P: 0 A: 12 B: 13", &b_log);

    // "Anti-entropy Session P & B", first direction: B learns the commits.
    let b_after: &[&str] = &[
        "1:1:P W(X,4)",
        "2:7:P W(Y,8)",
        "∞:5:B W(Z,8)",
        "∞:7:A W(X,3)",
        "∞:12:A W(Y,4)",
        "∞:13:B D(Y)",
    ];
    expect(
        &shows[6],
        0,
        "P: 7 A: 0 B: 0",
        &["1:1:P W(X,4)", "2:7:P W(Y,8)"],
    );
    expect(&shows[6], 2, "P: 7 A: 12 B: 13", b_after);

    // Second direction: "Primary respects causality".
    expect(&shows[7], 0, "P: 7 A: 12 B: 13", b_after);
    expect(&shows[7], 1, "P: 0 A: 12 B: 5", AB);
    expect(&shows[7], 2, "P: 7 A: 12 B: 13", b_after);

    // "Bayou Commit": the primary commits its entries in its log order.
    expect(&shows[8], 0, "P: 7 A: 12 B: 13", FINAL);
    expect(&shows[8], 1, "P: 0 A: 12 B: 5", AB);
    expect(&shows[8], 2, "P: 7 A: 12 B: 13", b_after);

    // Final slide: all three converge.
    for i in 0..3 {
        expect(&shows[9], i, "P: 7 A: 12 B: 13", FINAL);
        let db: Vec<(&str, &str)> = shows[9].servers[i]
            .db
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(db, [("X", "3"), ("Z", "8")]);
    }
}

#[test]
fn a_write_keeps_its_identity_when_it_commits() {
    // The slides say updates are "uniquely identified by <CSN, Local
    // Timestamp, Node ID>". That contradicts their own definitions: the CSN
    // is ∞ while a write is tentative and changes when it commits, so it
    // cannot be part of an identity. The definition wins: a write is named by
    // <accept-stamp, server-id> alone ([P97 §2]), and 13:B is the same write
    // as ∞:13:B and as 6:13:B.
    let shows = run_slides();
    let b_at = |show: usize| -> Vec<(Option<u64>, u64, String)> {
        shows[show].servers[2]
            .log
            .iter()
            .map(|(c, w)| (*c, w.id.stamp, w.id.server.to_string()))
            .collect()
    };
    assert!(b_at(5).contains(&(None, 13, "B".into())));
    assert!(b_at(9).contains(&(Some(6), 13, "B".into())));
}

#[test]
fn json_output_matches_the_schema_exactly() {
    let text = "servers P A B\nprimary P\nclock P 1\nwrite P W(X,4)\ncommit P\nclock B 5\nwrite B W(Z,8)\nsync B P\nshow\n";
    let mut shows = Vec::new();
    World::new(false)
        .run(&parse(text).unwrap(), |s| shows.push(s))
        .unwrap();
    assert_eq!(
        shows[0].to_json(),
        concat!(
            r#"{"servers":[{"server":"P","vv":{"P":1,"A":0,"B":5},"log":[{"csn":1,"stamp":1,"server":"P","op":"W(X,4)"},{"csn":null,"stamp":5,"server":"B","op":"W(Z,8)"}],"db":{"X":"4","Z":"8"}},"#,
            r#"{"server":"A","vv":{"P":0,"A":0,"B":0},"log":[],"db":{}},"#,
            r#"{"server":"B","vv":{"P":0,"A":0,"B":5},"log":[{"csn":null,"stamp":5,"server":"B","op":"W(Z,8)"}],"db":{"Z":"8"}}]}"#
        )
    );
}
