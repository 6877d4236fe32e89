//! Replays every committed fuzz input through its target: the seed corpus
//! and what the fuzzer found (`fuzz/corpus/<target>`) and the inputs that
//! once crashed a decoder (`fuzz/regressions/<target>`, each named after
//! what it broke). A target that panics on any of them fails this test, and
//! the message names the file, so `cargo test` keeps every fuzz finding
//! fixed.

use std::path::PathBuf;

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_committed_fuzz_input_passes_its_target() {
    let mut failures = Vec::new();
    for (name, target) in fuzz_targets::TARGETS {
        let corpus = inputs("corpus", name);
        assert!(
            !corpus.is_empty(),
            "fuzz/corpus/{name} is empty: run `cargo run -p fuzz-targets --example seeds -- fuzz/corpus`"
        );
        for path in corpus.iter().chain(inputs("regressions", name).iter()) {
            let data = std::fs::read(path).expect("read a corpus file");
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                failures.push(path.display().to_string());
            }
        }
    }
    assert!(
        failures.is_empty(),
        "fuzz inputs that fail their target: {failures:#?}"
    );
}

#[test]
fn every_target_has_a_fuzzer_entry_point() {
    // fuzz/Cargo.toml names one [[bin]] per target; a target added here but
    // not there would never be fuzzed.
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in fuzz_targets::TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] for {name}"
        );
        assert!(
            fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{name}.rs"))
                .is_file()
        );
    }
}
