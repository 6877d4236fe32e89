//! The SOSP'95 applications run on replicas: tests MR-1, MR-2, MR-3, BIB-1
//! and BIB-2 of the research notes ([T95 §2, §4, §6]).

use bayou_apps::bib;
use bayou_apps::meeting::{self, Request, Slot};
use bayou_core::{Item, Op, Outcome, Replica, Role, ServerId, View};

fn s(id: &str) -> ServerId {
    ServerId::new(id).unwrap()
}

fn sync(from: &Replica, to: &mut Replica) {
    let items: Vec<Item> = from.items_for(&to.summary()).collect();
    to.receive(items).unwrap();
}

fn get(r: &Replica, key: &str, view: View) -> Option<String> {
    r.get(key.as_bytes(), view)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A one-hour request for room R1, at `preferred` then `alternates`.
fn request(name: &str, preferred: Slot, alternates: Vec<Slot>) -> Op {
    Op::Bayou(Box::new(
        Request {
            name: name.into(),
            room: "R1".into(),
            hours: 1,
            preferred,
            alternates,
        }
        .to_write()
        .unwrap(),
    ))
}

fn budget(alternates: Vec<Slot>) -> Op {
    // [T95 Fig. 3]: Budget Meeting on 12/18 at 1:30pm (here: day 352, hour
    // 13), alternates 12/18 3pm and 12/19 9:30am (hour 15 and day 353 hour 9).
    request("Budget", Slot { day: 352, hour: 13 }, alternates)
}

fn book(r: &mut Replica, clock: u64, name: &str, day: u32, hour: u32) {
    r.client_write(clock, request(name, Slot { day, hour }, vec![]));
}

/// "At 10 or 11" on day 1.
fn ten_or_eleven(name: &str) -> Op {
    request(
        name,
        Slot { day: 1, hour: 10 },
        vec![Slot { day: 1, hour: 11 }],
    )
}

fn fig3_alternates() -> Vec<Slot> {
    vec![Slot { day: 352, hour: 15 }, Slot { day: 353, hour: 9 }]
}

#[test]
fn mr1_the_merge_procedure_picks_the_first_free_alternate_or_logs_an_error() {
    // Empty database: the preferred time.
    let mut r = Replica::new(s("A"), Role::Secondary);
    let w = r.client_write(1, budget(fig3_alternates()));
    assert_eq!(r.outcome(&w), Outcome::Applied);
    assert_eq!(
        get(&r, "meeting/Budget", View::Full).as_deref(),
        Some("R1 352 13 1")
    );

    // 13:00 taken: the first alternate, 15:00.
    let mut r = Replica::new(s("A"), Role::Secondary);
    book(&mut r, 1, "Other", 352, 13);
    let w = r.client_write(2, budget(fig3_alternates()));
    assert_eq!(r.outcome(&w), Outcome::Merged);
    assert_eq!(
        get(&r, "meeting/Budget", View::Full).as_deref(),
        Some("R1 352 15 1")
    );

    // 15:00 taken too: the next day at 9.
    book(&mut r, 3, "Third", 352, 15);
    let mut r2 = Replica::new(s("B"), Role::Secondary);
    book(&mut r2, 1, "Other", 352, 13);
    book(&mut r2, 2, "Third", 352, 15);
    r2.client_write(3, budget(fig3_alternates()));
    assert_eq!(
        get(&r2, "meeting/Budget", View::Full).as_deref(),
        Some("R1 353 9 1")
    );

    // Everything taken: the request goes to the error log.
    book(&mut r2, 4, "Fourth", 353, 9);
    let mut r3 = Replica::new(s("C"), Role::Secondary);
    sync(&r2, &mut r3);
    let w = r3.client_write(10, budget(fig3_alternates()));
    assert_eq!(r3.outcome(&w), Outcome::Merged);
    assert_eq!(
        get(&r3, "meeting/Budget", View::Full).as_deref(),
        Some("R1 353 9 1")
    );
    let mut r4 = Replica::new(s("D"), Role::Secondary);
    book(&mut r4, 1, "Other", 352, 13);
    book(&mut r4, 2, "Third", 352, 15);
    book(&mut r4, 3, "Fourth", 353, 9);
    r4.client_write(4, budget(fig3_alternates()));
    assert_eq!(get(&r4, "meeting/Budget", View::Full), None);
    assert!(get(&r4, "errorlog/Budget", View::Full).is_some());
    meeting::check_schedule(r4.db(View::Full).iter().map(|(k, v)| (&k[..], &v[..]))).unwrap();
}

#[test]
fn mr2_replicas_receiving_conflicting_requests_in_different_orders_converge() {
    // Staff meeting <10,A> and hiring meeting <20,B>, both "at 10 or 11".
    let mut a = Replica::new(s("A"), Role::Secondary);
    let mut b = Replica::new(s("B"), Role::Secondary);
    a.client_write(10, ten_or_eleven("staff"));
    b.client_write(20, ten_or_eleven("hiring"));
    // Before syncing, each shows its own meeting at 10.
    assert_eq!(
        get(&b, "meeting/hiring", View::Full).as_deref(),
        Some("R1 1 10 1")
    );
    let mut x = Replica::new(s("X"), Role::Secondary);
    let mut y = Replica::new(s("Y"), Role::Secondary);
    sync(&a, &mut x);
    sync(&b, &mut x);
    sync(&b, &mut y);
    sync(&a, &mut y);
    sync(&a, &mut b); // B rolls back its hiring meeting and replays it.
    for r in [&x, &y, &b] {
        assert_eq!(
            get(r, "meeting/staff", View::Full).as_deref(),
            Some("R1 1 10 1")
        );
        assert_eq!(
            get(r, "meeting/hiring", View::Full).as_deref(),
            Some("R1 1 11 1")
        );
    }
    assert_eq!(x.db(View::Full), y.db(View::Full));
}

#[test]
fn mr3_a_tentative_reservation_moves_when_an_earlier_ordered_write_commits() {
    // [T95 §6]: W1 <10,A> and W2 <20,B> both want 10:00. C orders them W1,
    // W2 tentatively; B reaches the primary first, so W2 commits first and
    // C's schedule flips, for good.
    let mut p = Replica::new(s("P"), Role::Primary { autocommit: true });
    let mut a = Replica::new(s("A"), Role::Secondary);
    let mut b = Replica::new(s("B"), Role::Secondary);
    let mut c = Replica::new(s("C"), Role::Secondary);
    a.client_write(10, ten_or_eleven("W1"));
    b.client_write(20, ten_or_eleven("W2"));
    sync(&a, &mut c);
    sync(&b, &mut c);
    assert_eq!(
        get(&c, "meeting/W1", View::Full).as_deref(),
        Some("R1 1 10 1")
    );
    assert_eq!(
        get(&c, "meeting/W2", View::Full).as_deref(),
        Some("R1 1 11 1")
    );
    assert_eq!(get(&c, "meeting/W1", View::Committed), None);
    sync(&b, &mut p);
    sync(&p, &mut c);
    // W2 committed first: it holds 10:00 in both views; W1 moves to 11:00.
    assert_eq!(
        get(&c, "meeting/W2", View::Committed).as_deref(),
        Some("R1 1 10 1")
    );
    assert_eq!(
        get(&c, "meeting/W1", View::Full).as_deref(),
        Some("R1 1 11 1")
    );
    assert_eq!(get(&c, "meeting/W1", View::Committed), None);
    sync(&a, &mut p);
    sync(&p, &mut c);
    assert_eq!(
        get(&c, "meeting/W1", View::Committed).as_deref(),
        Some("R1 1 11 1")
    );
    assert_eq!(c.db(View::Full), c.db(View::Committed));
}

#[test]
fn bib1_two_papers_under_one_key_get_different_suffixes() {
    let mut a = Replica::new(s("A"), Role::Secondary);
    let mut b = Replica::new(s("B"), Role::Secondary);
    let mut p = Replica::new(s("P"), Role::Primary { autocommit: true });
    a.client_write(
        5,
        Op::Bayou(Box::new(bib::add_entry("Jones95", "Paper one").unwrap())),
    );
    b.client_write(
        3,
        Op::Bayou(Box::new(bib::add_entry("Jones95", "Paper two").unwrap())),
    );
    // Tentatively each server shows its own paper as Jones95.
    assert_eq!(
        get(&a, "bib/Jones95", View::Full).as_deref(),
        Some("Paper one")
    );
    assert_eq!(
        get(&b, "bib/Jones95", View::Full).as_deref(),
        Some("Paper two")
    );
    sync(&a, &mut p);
    sync(&b, &mut p);
    sync(&p, &mut a);
    sync(&p, &mut b);
    // Commit order decides: A's write reached the primary first.
    for r in [&a, &b, &p] {
        assert_eq!(
            get(r, "bib/Jones95", View::Committed).as_deref(),
            Some("Paper one")
        );
        assert_eq!(
            get(r, "bib/Jones95b", View::Committed).as_deref(),
            Some("Paper two")
        );
    }
}

#[test]
fn bib2_one_paper_entered_twice_becomes_one_entry() {
    let mut a = Replica::new(s("A"), Role::Secondary);
    let mut b = Replica::new(s("B"), Role::Secondary);
    a.client_write(
        1,
        Op::Bayou(Box::new(bib::add_entry("Jones95", "Same paper").unwrap())),
    );
    let w = b.client_write(
        2,
        Op::Bayou(Box::new(bib::add_entry("Jones95a", "Same paper").unwrap())),
    );
    sync(&a, &mut b);
    sync(&b, &mut a);
    for r in [&a, &b] {
        let entries: Vec<_> = r.db(View::Full).scan_prefix(b"bib/").collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(
            get(r, "bib/Jones95", View::Full).as_deref(),
            Some("Same paper")
        );
    }
    assert_eq!(b.outcome(&w), Outcome::Merged);
}

#[test]
fn requests_with_bad_names_are_refused() {
    let bad = Request {
        name: "a\"b".into(),
        room: "R1".into(),
        hours: 1,
        preferred: Slot { day: 1, hour: 1 },
        alternates: vec![],
    };
    assert!(bad.to_write().is_err());
    assert!(bib::add_entry("Jones95", "quote \" inside").is_err());
    assert!(bib::add_entry("Jo nes", "ok").is_err());
}

/// A second request under a meeting name that is already scheduled must not
/// move or duplicate it: it goes to the error log, and every booked hour
/// still belongs to a scheduled meeting (found by the `bayou_scenario` fuzz
/// target, fuzz/regressions/bayou_scenario/same-meeting-name-twice).
#[test]
fn a_second_request_under_a_scheduled_name_goes_to_the_error_log() {
    let mut b = Replica::new(s("B"), Role::Primary { autocommit: true });
    b.client_write(1, request("budget", Slot { day: 352, hour: 9 }, vec![]));
    b.client_write(
        2,
        request(
            "budget",
            Slot { day: 352, hour: 13 },
            vec![Slot { day: 352, hour: 9 }],
        ),
    );
    assert_eq!(
        get(&b, "meeting/budget", View::Full).as_deref(),
        Some("R1 352 9 1")
    );
    assert_eq!(get(&b, "room/R1/352/13", View::Full), None);
    assert_eq!(
        get(&b, "errorlog/budget", View::Full).as_deref(),
        Some("budget is already scheduled")
    );
    assert_eq!(
        meeting::check_schedule(b.db(View::Full).iter().map(|(k, v)| (&k[..], &v[..]))),
        Ok(1)
    );
}
