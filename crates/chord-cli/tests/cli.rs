//! The `chord` binary: exact JSON shapes from the issue, and clean failures on
//! bad arguments (a message and a non-zero exit, never a panic).

use std::process::Command;

fn chord(args: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chord"))
        .args(args.split_whitespace())
        .output()
        .expect("run chord");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn last_json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout.lines().last().expect("some output")).expect("JSON last line")
}

const SEED_RING: &str = "--bits 7 --nodes 10,32,60,90,105,120";

/// Reference: seed slides "Finger Table Notations"; the last interval ends at n
/// (definition), where the slide writes n + 1.
#[test]
fn fingers_json_of_node_90_has_the_issue_shape() {
    let (code, out, _) = chord(&format!("sim fingers {SEED_RING} --node 90 --json"));
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().last().unwrap(),
        r#"{"node":90,"fingers":[{"start":91,"end":92,"node":105},{"start":92,"end":94,"node":105},{"start":94,"end":98,"node":105},{"start":98,"end":106,"node":105},{"start":106,"end":122,"node":120},{"start":122,"end":26,"node":10},{"start":26,"end":90,"node":32}]}"#
    );
}

/// Reference: seed slides "Route k = 15".
#[test]
fn lookup_json_of_key_15_from_90_is_90_10_32_in_both_styles() {
    for route in ["iterative", "recursive"] {
        let (code, out, _) = chord(&format!(
            "sim lookup {SEED_RING} --from 90 --key-id 15 --route {route} --json"
        ));
        assert_eq!(code, 0);
        assert_eq!(
            out.lines().last().unwrap(),
            r#"{"key":15,"owner":32,"path":[90,10,32]}"#
        );
    }
}

/// Reference: seed slides "Basic Lookups" (successor pointers only).
#[test]
fn successor_route_visits_every_node_up_to_the_owner() {
    let (code, out, _) = chord(&format!(
        "sim lookup {SEED_RING} --from 32 --key-id 80 --route successor --json"
    ));
    assert_eq!(code, 0);
    assert_eq!(
        out.lines().last().unwrap(),
        r#"{"key":80,"owner":90,"path":[32,60,90]}"#
    );
}

#[test]
fn lookup_by_name_hashes_the_name_with_sha1() {
    // SHA-1("hello") ends in 0x4d; 0x4d & 0x7f = 77, owned by node 90.
    let (code, out, _) = chord(&format!(
        "sim lookup {SEED_RING} --from 10 --key hello --json"
    ));
    assert_eq!(code, 0);
    let v = last_json(&out);
    assert_eq!(v["key"], 77);
    assert_eq!(v["owner"], 90);
    assert_eq!(v["path"][0], 10);
    assert_eq!(v["path"].as_array().unwrap().last().unwrap(), 90);
}

#[test]
fn experiment_commands_print_the_documented_json_keys() {
    let cases: [(&str, &[&str]); 4] = [
        (
            "sim path-length --nodes 512 --lookups 2000 --seed 3 --json",
            &["nodes", "lookups", "mean_hops", "p1", "p99", "histogram"],
        ),
        (
            "sim load-balance --nodes 100 --keys 10000 --virtual 2 --seed 3 --json",
            &["mean", "p1", "p99", "max"],
        ),
        (
            "sim failures --nodes 200 --keys 2000 --fail 0.3 --successors 6 --seed 3 --lookups 500 --json",
            &["failed_lookup_fraction", "lost_key_fraction"],
        ),
        (
            "sim churn --nodes 60 --rate 0.05 --seed 3 --duration-s 900 --json",
            &["failed_lookup_fraction"],
        ),
    ];
    for (args, keys) in cases {
        let (code, out, err) = chord(args);
        assert_eq!(code, 0, "{args}: {err}");
        let v = last_json(&out);
        let obj = v.as_object().unwrap();
        for k in keys {
            assert!(obj.contains_key(*k), "{args}: missing {k} in {v}");
        }
    }
    let (_, out, _) = chord("sim path-length --nodes 512 --lookups 2000 --seed 3 --json");
    let v = last_json(&out);
    assert_eq!(v["nodes"], 512);
    let total: u64 = v["histogram"]
        .as_object()
        .unwrap()
        .values()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(total, 2000);
    let (_, out, _) =
        chord("sim load-balance --nodes 100 --keys 10000 --virtual 2 --seed 3 --json");
    assert_eq!(last_json(&out)["mean"], 100.0);
}

#[test]
fn bad_arguments_fail_with_a_message_not_a_panic() {
    for args in [
        "sim fingers --bits 2 --nodes 1,2 --node 1",
        "sim fingers --bits 161 --nodes 1,2 --node 1",
        "sim fingers --bits 7 --nodes 10,10 --node 10",
        "sim fingers --bits 7 --nodes 10,32 --node 11",
        "sim fingers --bits 7 --nodes 10,300 --node 10",
        "sim fingers --bits 7 --nodes ten --node 10",
        "sim lookup --bits 7 --nodes 10,32 --from 11 --key-id 5",
        "sim lookup --bits 7 --nodes 10,32 --from 10 --key-id 500",
        "sim lookup --bits 7 --nodes 10,32 --from 10",
        "sim path-length --nodes 0 --lookups 10",
        "sim path-length --nodes 100 --lookups 10 --bits 3",
        "sim load-balance --nodes 10 --keys 10 --virtual 0",
        "sim failures --nodes 100 --keys 10 --fail 1.5 --successors 4",
        "sim failures --nodes 100 --keys 10 --fail 0.1 --successors 4 --replicas 9",
        "sim churn --nodes 1 --rate 0.1",
        "sim churn --nodes 50 --rate -1",
        "sim nonsense",
    ] {
        let (code, _, err) = chord(args);
        assert_ne!(code, 0, "{args} should fail");
        assert!(!err.contains("panicked"), "{args} panicked: {err}");
        assert!(err.contains("error"), "{args}: no message: {err}");
    }
}

/// `chord sim data` runs the data-plane simulation with its checkers and
/// reports what it did; a bad configuration is an error, not a panic.
#[test]
fn sim_data_runs_seeds_with_faults_and_reports_no_violation() {
    let (code, out, err) = chord("sim data --seeds 5 --from 40 --json");
    assert_eq!(code, 0, "{err}");
    let j = last_json(&out);
    assert_eq!(j["seeds"], 5);
    assert_eq!(j["violations"].as_array().unwrap().len(), 0);
    assert!(j["writes_acked"].as_u64().unwrap() > 0);
    let (code, _, err) = chord("sim data --seeds 1 --nodes 2 --copies 3");
    assert_ne!(code, 0);
    assert!(err.contains("--copies"), "{err}");
}
