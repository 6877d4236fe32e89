//! The `bayou` commands the documentation shows print what it shows: every
//! `$ bayou …` line of a `console` block in README.md and docs/*.md is run and
//! its output compared (see `doc_blocks`). Run with
//! `cargo test --release -p bayou-cli --test docs`.

mod doc_blocks;

use doc_blocks::{console_commands, matches, split_words};

#[test]
fn documented_bayou_commands_print_what_the_docs_show() {
    let ran = doc_blocks::check("bayou", env!("CARGO_BIN_EXE_bayou"));
    // The walk-through, its JSON form and the random runs at least.
    assert!(
        ran >= 3,
        "only {ran} `bayou` commands found in console blocks"
    );
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}

#[test]
fn an_ellipsis_matches_any_number_of_lines() {
    assert!(matches(&lines("a\n...\nd"), &lines("a\nb\nc\nd")));
    assert!(matches(&lines("a\n...\nd"), &lines("a\nd")));
    assert!(matches(&lines("...\nc\n..."), &lines("a\nb\nc\nd")));
    assert!(!matches(&lines("a\n...\nd"), &lines("a\nb\nc")));
    assert!(!matches(&lines("a\nb"), &lines("a\nb\nc")));
    assert!(matches(&lines("a  "), &lines("a")));
}

#[test]
fn commands_are_split_like_a_shell_would_but_never_interpreted() {
    assert_eq!(
        split_words("bayou sim 'a b' \"c\" d\\ e").unwrap(),
        ["bayou", "sim", "a b", "c", "d e"]
    );
    assert!(split_words("bayou random --seed 1 --emit > s.bayou").is_err());
    assert!(split_words("bayou sim 'open").is_err());
}

#[test]
fn console_blocks_hold_only_checked_programs_and_output_follows_a_command() {
    let page = "text\n```console\n$ bayou random --seed 1\nseed 1: ok\n```\n\n```text\n$ redis-cli PING\nPONG\n```\n";
    let shown = console_commands("p.md", page).unwrap();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].place, "p.md:3");
    assert_eq!(shown[0].expected, ["seed 1: ok"]);
    assert!(console_commands("p.md", "```console\n$ redis-cli PING\n```\n").is_err());
    assert!(console_commands("p.md", "```console\nPONG\n```\n").is_err());
    assert!(console_commands("p.md", "```console\n$ bayou x\n").is_err());
}

/// The README's crate map names exactly the crates under `crates/`, and
/// the workspace lists them all.
#[test]
fn the_crate_map_matches_the_tree() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let mut on_disk: Vec<String> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| format!("crates/{}", e.file_name().to_string_lossy()))
        .collect();
    on_disk.sort();
    let mut in_map: Vec<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `crates/"))
        .filter_map(|l| l.split('`').next())
        .map(|c| format!("crates/{c}"))
        .collect();
    in_map.sort();
    assert_eq!(in_map, on_disk, "README.md's crate map against crates/");
    for c in &on_disk {
        assert!(
            workspace.contains(&format!("\"{c}\"")),
            "{c} is not a workspace member"
        );
    }
}
