//! Signed writes in the simulator ([T95 §8]; docs/signed-writes.md): a
//! byzantine relay (`tamper`) changes a write's value or author in transit;
//! servers that sign and verify refuse it and still converge once honest
//! sessions run, and the write-truth checker catches the same relay when
//! verification is switched off (the mutation that shows it can fail).

use bayou_sim::random::{Params, generate};
use bayou_sim::scenario::format_command;
use bayou_sim::{Snapshot, World, parse};

const TAMPERED: &str = "\
servers P A B
primary P
autocommit P
sign
author A alice
write A W(X,1)
tamper A B value
tamper A B author
show
sync A P
sync P B
sync P A
show
expect-converged
";

fn run(text: &str, verify: bool) -> (World, Result<Vec<Snapshot>, bayou_sim::RunError>) {
    let lines = parse(text).unwrap();
    let mut world = World::new(true);
    world.set_verification(verify);
    let mut shows = Vec::new();
    let result = world.run(&lines, |s| shows.push(s)).map(|()| shows);
    (world, result)
}

#[test]
fn a_tampered_write_is_refused_and_the_honest_servers_converge() {
    let (world, result) = run(TAMPERED, true);
    let shows = result.unwrap();
    assert_eq!(world.coverage().forgeries_refused, 2);
    // Both forgeries refused: B holds nothing.
    assert_eq!(shows[0].servers[2].log_lines(), Vec::<String>::new());
    assert_eq!(shows[0].servers[1].log_lines(), ["∞:1:A W(X,1) by alice"]);
    // The honest sessions deliver the real write everywhere.
    for s in &shows[1].servers {
        assert_eq!(s.log_lines(), ["1:1:A W(X,1) by alice"], "{}", s.server);
    }
}

#[test]
fn the_write_truth_checker_catches_a_tampered_write_verification_let_in() {
    let (_, result) = run(TAMPERED, false);
    let err = result.unwrap_err();
    assert!(err.violation);
    assert_eq!(
        err.to_string(),
        "line 7: write truth violated at B: its log holds ∞:1:A W(X,forged) by alice but A accepted ∞:1:A W(X,1) by alice"
    );
    // Without `sign` nothing is verified either: the same relay is caught.
    let unsigned = TAMPERED.replace("sign\n", "");
    let (_, result) = run(&unsigned, true);
    assert_eq!(
        result.unwrap_err().to_string(),
        "line 6: write truth violated at B: its log holds ∞:1:A W(X,forged) by alice but A accepted ∞:1:A W(X,1) by alice"
    );
    // A changed author is caught the same way.
    let author_first = TAMPERED.replace("tamper A B value\n", "");
    let (_, result) = run(&author_first, false);
    assert_eq!(
        result.unwrap_err().to_string(),
        "line 7: write truth violated at B: its log holds ∞:1:A W(X,1) by mallory but A accepted ∞:1:A W(X,1) by alice"
    );
}

#[test]
fn the_new_commands_round_trip_and_bad_ones_are_clear_errors() {
    for line in [
        "sign",
        "author A alice",
        "author A -",
        "tamper A B value",
        "tamper A B author",
    ] {
        let parsed = parse(line).unwrap();
        assert_eq!(format_command(&parsed[0].command), line);
    }
    assert_eq!(
        parse("tamper A B key").unwrap_err().to_string(),
        "line 1: tamper with \"key\"? `value` or `author`"
    );
    assert_eq!(
        parse("author A").unwrap_err().to_string(),
        "line 1: missing author (a user name, or `-`)"
    );
}

/// Seeds whose random run signs writes and tampers with some.
fn signed_seeds(count: usize) -> Vec<u64> {
    (0..)
        .filter(|&seed| {
            let s = generate(seed, Params::default());
            s.lines().any(|l| l == "sign") && s.lines().any(|l| l.starts_with("tamper "))
        })
        .take(count)
        .collect()
}

#[test]
fn random_signed_runs_refuse_every_forgery_and_the_mutant_is_caught() {
    let seeds = signed_seeds(20);
    let mut refused = 0;
    let mut caught = 0;
    for &seed in &seeds {
        let scenario = generate(seed, Params::default());
        let (world, result) = run(&scenario, true);
        if let Err(e) = result {
            panic!("seed {seed}: {e}\n{scenario}");
        }
        refused += world.coverage().forgeries_refused;
        // The same run with verification off: some tampered write that
        // reaches a log must be caught, in every run where the relay
        // carried one.
        let (_, mutant) = run(&scenario, false);
        if let Err(e) = mutant {
            assert!(e.violation, "seed {seed}: {e}");
            assert!(
                e.message.contains("write truth violated"),
                "seed {seed}: {e}"
            );
            caught += 1;
        }
    }
    assert!(refused > 0, "no forgery refused in seeds {seeds:?}");
    assert!(caught > 0, "the mutant passed every seed of {seeds:?}");
}
