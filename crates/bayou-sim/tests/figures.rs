//! The committed figures under docs/bayou are what the scenarios produce
//! now (regenerate with `bayou sim examples/NAME.bayou --svg docs/bayou/NAME.svg`).

use bayou_sim::render::{captions, svg};
use bayou_sim::{World, parse};

#[test]
fn committed_figures_match_their_scenarios() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    for name in ["slides", "meetings", "bibliography"] {
        let text = std::fs::read_to_string(format!("{root}/examples/{name}.bayou")).unwrap();
        let lines = parse(&text).unwrap();
        let mut shows = Vec::new();
        World::new(false).run(&lines, |s| shows.push(s)).unwrap();
        let steps: Vec<_> = captions(&lines).into_iter().zip(shows).collect();
        let committed = std::fs::read_to_string(format!("{root}/docs/bayou/{name}.svg")).unwrap();
        assert!(
            svg(&steps) == committed,
            "docs/bayou/{name}.svg is stale: run `cargo run --bin bayou -- sim examples/{name}.bayou --svg docs/bayou/{name}.svg`"
        );
    }
}
