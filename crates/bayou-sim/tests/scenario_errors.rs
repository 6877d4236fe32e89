//! Bad scenarios stop with the line and the problem, never a panic.

use bayou_sim::{World, parse};

fn run(text: &str) -> String {
    let lines = match parse(text) {
        Ok(lines) => lines,
        Err(e) => return e.to_string(),
    };
    match World::new(false).run(&lines, |_| {}) {
        Ok(()) => "ok".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn run_errors_name_the_line_and_the_problem() {
    assert_eq!(
        run("servers P A\nwrite Q W(X,1)\n"),
        "line 2: unknown server Q"
    );
    assert_eq!(
        run("servers P A\nprimary P\nprimary A\n"),
        "line 3: P is already the primary; there is exactly one"
    );
    assert_eq!(
        run("servers P A\nprimary P\ncommit A\n"),
        "line 3: commit A: A is not the primary"
    );
    assert_eq!(
        run("servers P A\ncommit P\n"),
        "line 2: commit P: P is not the primary"
    );
    assert_eq!(
        run("write P W(X,1)\n"),
        "line 1: no servers yet: start with `servers ...`"
    );
    assert_eq!(
        run("servers P\nservers A\n"),
        "line 2: `servers` may appear only once"
    );
    assert_eq!(run("servers P P\n"), "line 1: server P is named twice");
    assert_eq!(
        run("servers P A\nsync P P\n"),
        "line 2: sync P P: a server cannot sync with itself"
    );
    assert_eq!(
        run("servers P A\nautocommit A\n"),
        "line 2: autocommit A: A is not the primary"
    );
    assert!(run("servers P A\nwrite P W(X\n").starts_with("line 2: expected W(key,value)"));
}

#[test]
fn an_unconverged_world_fails_expect_converged() {
    let out = run("servers P A\nwrite P W(X,1)\nexpect-converged\n");
    assert!(
        out.starts_with("line 3: not converged: P has log [∞:1:P W(X,1)] but A has []"),
        "{out}"
    );
}

#[test]
fn a_crash_loses_what_was_received_but_not_flushed() {
    // A received P's write by anti-entropy; A never flushed, so a crash
    // loses it, and the next session sends it again.
    let text = "servers P A\nwrite P W(X,1)\nsync P A\ncrash A\nshow\nsync P A\nshow\n";
    let mut shows = Vec::new();
    World::new(true)
        .run(&parse(text).unwrap(), |s| shows.push(s))
        .unwrap();
    assert!(shows[0].servers[1].log.is_empty());
    assert_eq!(shows[1].servers[1].log_lines(), ["∞:1:P W(X,1)"]);
}

#[test]
fn truncation_and_bundle_commands_report_bad_input() {
    assert_eq!(
        run("servers P A\nimport F A\n"),
        "line 2: import F: no bundle F was exported"
    );
    assert_eq!(
        run("servers P A\nexport P A F\nexport P A F\n"),
        "line 3: export P A F: bundle F was already exported"
    );
    assert_eq!(
        run("servers P A\nexport P P F\n"),
        "line 2: export P P: a server cannot export to itself"
    );
    assert_eq!(
        run("servers P A\ntruncate Q 1\n"),
        "line 2: unknown server Q"
    );
    assert_eq!(
        run("servers P A\nretain P x\n"),
        "line 2: number of writes to retain \"x\" is not a non-negative integer"
    );
    // A file the export never wrote does not arrive; nothing fails.
    assert_eq!(run("servers P A\nexport P A F\nimport-part F 7 A\n"), "ok");
}

#[test]
fn a_late_bundle_and_a_late_session_are_refused_harmlessly() {
    // A's bundle for B's empty state, imported after B crashed and lost
    // what it had received, and again after B moved on.
    let text = "servers P A B\nprimary P\nautocommit P\nwrite A W(X,1)\nexport A B F\nsync A B\nwrite A W(Y,2)\nexport A B G 60\nsync A B 1\ncrash B\nimport G B\nimport F B\nimport G B\nimport F B\nredeliver A B\nsync A P\ntruncate P 0\nsync P B 1\nredeliver P B\nsync P B\nsync P A\nsync A B\nexpect-converged\n";
    let mut world = World::new(true);
    world.run(&parse(text).unwrap(), |_| {}).unwrap();
    let c = world.coverage();
    assert!(c.bundle_files_stale >= 1, "{c:?}");
    assert!(c.installs >= 1, "{c:?}");
}
