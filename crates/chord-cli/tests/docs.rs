//! The `chord` commands the documentation shows print what it shows: every
//! `$ chord …` line of a `console` block in README.md and docs/*.md is run and
//! its output compared. The parser is `bayou-cli`'s (`doc_blocks`). Run with
//! `cargo test --release -p chord-cli --test docs`.

#[path = "../../bayou-cli/tests/doc_blocks/mod.rs"]
mod doc_blocks;

#[test]
fn documented_chord_commands_print_what_the_docs_show() {
    let ran = doc_blocks::check("chord", env!("CARGO_BIN_EXE_chord"));
    // The lecture's finger table and lookup at least.
    assert!(
        ran >= 2,
        "only {ran} `chord` commands found in console blocks"
    );
}
