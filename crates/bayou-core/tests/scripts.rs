//! Bayou writes with dependency checks and merge procedures ([T95 §4-5]).

use bayou_core::{
    BayouWrite, DependencyCheck, Item, Mutation, Op, Outcome, Replica, Role, ServerId, View,
};

fn s(id: &str) -> ServerId {
    ServerId::new(id).unwrap()
}

fn put(k: &str, v: &str) -> Mutation {
    Mutation::Put(k.into(), v.into())
}

fn write(update: Vec<Mutation>, check: Option<(&str, &str)>, merge: Option<&str>) -> Op {
    Op::Bayou(Box::new(BayouWrite {
        update,
        check: check.map(|(q, e)| DependencyCheck {
            query: q.into(),
            expected: e.into(),
        }),
        merge: merge.map(String::from),
        label: None,
    }))
}

fn get(r: &Replica, key: &str) -> Option<String> {
    r.get(key.as_bytes(), View::Full)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn sync(from: &Replica, to: &mut Replica) {
    let items: Vec<Item> = from.items_for(&to.summary()).collect();
    to.receive(items).unwrap();
}

#[test]
fn a_passing_check_applies_the_update() {
    let mut r = Replica::new(s("A"), Role::Secondary);
    let w = r.client_write(
        1,
        write(vec![put("X", "1")], Some(("get(\"X\")", "()")), None),
    );
    assert_eq!(r.outcome(&w), Outcome::Applied);
    assert_eq!(get(&r, "X").as_deref(), Some("1"));
}

#[test]
fn a_failing_check_without_merge_has_no_effect() {
    // The write-write check of the MIT FAQ: set 10:00 only if it is nil.
    let mut r = Replica::new(s("A"), Role::Secondary);
    r.client_write(1, Op::put("10:00", "staff"));
    let w = r.client_write(
        2,
        write(
            vec![put("10:00", "hiring")],
            Some(("exists(\"10:00\")", "false")),
            None,
        ),
    );
    assert_eq!(r.outcome(&w), Outcome::Conflict);
    assert_eq!(get(&r, "10:00").as_deref(), Some("staff"));
}

#[test]
fn the_bank_transfer_check_is_a_constraint_not_an_equality() {
    // [T95 §4.2]: transfer 100 from A if A holds at least 100; a deposit
    // that raises the balance does not conflict, a withdrawal does.
    let transfer = || {
        write(
            vec![put("A", "done")],
            Some(("parse_int(get(\"A\")) >= 100", "true")),
            Some(
                "let b = parse_int(get(\"A\")); put(\"A\", `${b}`); put(\"log\", `insufficient: ${b}`);",
            ),
        )
    };
    let mut r = Replica::new(s("R"), Role::Secondary);
    r.client_write(1, Op::put("A", "160"));
    let w = r.client_write(2, transfer());
    assert_eq!(r.outcome(&w), Outcome::Applied);
    let mut r = Replica::new(s("R"), Role::Secondary);
    r.client_write(1, Op::put("A", "60"));
    let w = r.client_write(2, transfer());
    assert_eq!(r.outcome(&w), Outcome::Merged);
    assert_eq!(get(&r, "log").as_deref(), Some("insufficient: 60"));
}

#[test]
fn a_query_cannot_write() {
    let mut r = Replica::new(s("A"), Role::Secondary);
    let w = r.client_write(
        1,
        write(vec![], Some(("put(\"X\", \"1\"); true", "true")), None),
    );
    assert!(matches!(r.outcome(&w), Outcome::Failed(why) if why.contains("a query only reads")));
    assert_eq!(get(&r, "X"), None);
}

#[test]
fn scripts_that_exceed_limits_fail_identically_everywhere() {
    // [T95 §5]: uniform bounds, enforced consistently. A merge procedure
    // that loops forever, one that allocates without bound, one that builds
    // an endless update: each fails at the same point on every server, the
    // write has no effect, and servers converge.
    let always_conflict = Some(("true", "false"));
    let cases = [
        ("loop", "loop { }"),
        ("grow", "let s = \"x\"; loop { s += s; }"),
        ("array", "let a = []; loop { a.push(1); }"),
        ("update", "let i = 0; loop { put(`k${i}`, \"v\"); i += 1; }"),
        ("recursion", "fn f(n) { f(n + 1) } f(0)"),
        ("error", "let x = 1 / 0;"),
    ];
    let mut a = Replica::new(s("A"), Role::Secondary);
    let mut ids = Vec::new();
    for (i, (_, merge)) in cases.iter().enumerate() {
        a.client_write(0, Op::put(format!("before{i}"), "1"));
        ids.push(a.client_write(
            0,
            write(vec![put("never", "1")], always_conflict, Some(merge)),
        ));
    }
    let mut b = Replica::new(s("B"), Role::Secondary);
    sync(&a, &mut b);
    for (id, (name, _)) in ids.iter().zip(cases) {
        let outcome = a.outcome(id);
        assert!(matches!(outcome, Outcome::Failed(_)), "{name}: {outcome:?}");
        assert_eq!(b.outcome(id), outcome, "{name} fails the same way at B");
    }
    assert_eq!(get(&a, "never"), None);
    assert!(a.db(View::Full).scan_prefix(b"k").next().is_none());
    assert_eq!(a.db(View::Full), b.db(View::Full));
}

#[test]
fn scripts_see_no_clock_randomness_or_files() {
    let mut r = Replica::new(s("A"), Role::Secondary);
    for probe in ["timestamp()", "rand()", "import \"x\" as y; 1", "1.5 + 1.0"] {
        let w = r.client_write(1, write(vec![], Some((probe, "true")), None));
        assert!(
            matches!(r.outcome(&w), Outcome::Failed(_)),
            "{probe} must not run"
        );
    }
}

#[test]
fn bayou_writes_round_trip_through_the_slides_notation_and_recovery() {
    let op = write(
        vec![put("X", "1")],
        Some(("exists(\"X\")", "false")),
        Some("put(\"Y\", \"2\");"),
    );
    let text = op.to_string();
    assert!(text.starts_with("BAYOU{"), "{text}");
    assert_eq!(Op::parse(&text).unwrap(), op);
    let mut r = Replica::new(s("A"), Role::Secondary);
    r.client_write(1, Op::put("X", "0"));
    let w = r.client_write(2, op);
    let recovered = Replica::recover(s("A"), Role::Secondary, r.take_persist()).unwrap();
    assert_eq!(recovered.outcome(&w), Outcome::Merged);
    assert_eq!(recovered.db(View::Full), r.db(View::Full));
    assert!(Op::parse("BAYOU{\"update\": 3}").is_err());
    assert!(Op::parse("BAYOU{\"update\":[],\"merge\":\"let = ;\"}").is_err());
}
