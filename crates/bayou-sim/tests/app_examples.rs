//! The SOSP'95 applications' scenario files (`examples/meetings.bayou`,
//! `examples/bibliography.bayou`), checked state by state ([T95 §2, §4, §6]).

use bayou_sim::{Snapshot, World, parse};

fn run(name: &str) -> Vec<Snapshot> {
    let path = format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut shows = Vec::new();
    World::new(true)
        .run(&parse(&text).unwrap(), |s| shows.push(s))
        .unwrap();
    shows
}

fn value(s: &Snapshot, server: usize, key: &str, committed: bool) -> Option<String> {
    let db = if committed {
        &s.servers[server].committed_db
    } else {
        &s.servers[server].db
    };
    db.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

#[test]
fn meeting_requests_reorder_merge_and_commit_as_the_paper_describes() {
    let shows = run("meetings.bayou");
    let (p, a, b, c) = (0, 1, 2, 3);
    // Disconnected, A and B each see their own request at 13:00.
    assert_eq!(
        value(&shows[0], a, "room/R1/352/13", false).as_deref(),
        Some("staff")
    );
    assert_eq!(
        value(&shows[0], b, "room/R1/352/13", false).as_deref(),
        Some("budget")
    );
    // C orders staff (10:A) before budget (20:B): budget's merge moves it to 15:00.
    assert_eq!(
        value(&shows[1], c, "meeting/staff", false).as_deref(),
        Some("R1 352 13 1")
    );
    assert_eq!(
        value(&shows[1], c, "meeting/budget", false).as_deref(),
        Some("R1 352 15 1")
    );
    assert_eq!(
        shows[1].servers[c].log_lines(),
        [
            "∞:10:A MEETING(staff,R1,352/13,1h) [applied]",
            "∞:20:B MEETING(budget,R1,352/13,1h) [merged]"
        ]
    );
    // budget commits first: the tentative staff booking moves to 14:00, and
    // the committed view differs from the full view exactly by it.
    assert_eq!(
        value(&shows[2], c, "meeting/budget", true).as_deref(),
        Some("R1 352 13 1")
    );
    assert_eq!(
        value(&shows[2], c, "meeting/staff", false).as_deref(),
        Some("R1 352 14 1")
    );
    assert_eq!(value(&shows[2], c, "meeting/staff", true), None);
    assert_eq!(
        value(&shows[2], p, "meeting/budget", true).as_deref(),
        Some("R1 352 13 1")
    );
    // All committed, all equal.
    for s in 0..4 {
        assert_eq!(shows[3].servers[s].db, shows[3].servers[s].committed_db);
        assert_eq!(
            value(&shows[3], s, "meeting/staff", true).as_deref(),
            Some("R1 352 14 1")
        );
    }
    // The request that fits nowhere is in the error log, everywhere.
    for s in 0..4 {
        assert!(value(&shows[4], s, "errorlog/late", true).is_some());
        assert_eq!(value(&shows[4], s, "meeting/late", true), None);
    }
}

#[test]
fn bibliography_entries_get_suffixes_and_duplicates_merge() {
    let shows = run("bibliography.bayou");
    // Tentatively, each server shows its own Jones95.
    assert_eq!(
        value(&shows[0], 1, "bib/Jones95", false).as_deref(),
        Some("Weakly consistent replication")
    );
    assert_eq!(
        value(&shows[0], 2, "bib/Jones95", false).as_deref(),
        Some("Disconnected operation in Coda")
    );
    for s in 0..3 {
        let bib: Vec<(String, String)> = shows[1].servers[s]
            .committed_db
            .iter()
            .filter(|(k, _)| k.starts_with("bib/"))
            .cloned()
            .collect();
        assert_eq!(
            bib,
            [
                (
                    "bib/Jones95".into(),
                    "Disconnected operation in Coda".into()
                ),
                (
                    "bib/Jones95b".into(),
                    "Weakly consistent replication".into()
                ),
                ("bib/Smith95a".into(), "A survey of mobile computing".into()),
            ]
        );
    }
}
