//! Deterministic simulation of Bayou.
//!
//! * [`scenario`]: the scenario language (`servers`, `write`, `sync`, …).
//! * [`world`]: runs scenarios over in-process servers with simulated disks,
//!   and renders `show` as text in the slides' notation or as JSON.
//! * [`check`]: the invariants, each citing the paper section it comes from.
//! * [`random`]: seeded random runs with crashes, cut-off sessions, log
//!   truncation, full-state transfers and bundles carried between servers,
//!   then healing, checked by [`check`]; and servers that come and go
//!   ([P97 §4.3]: creation, concurrent creations of one id, retirement,
//!   primary handoff).
//! * [`mobile`]: mobile clients hopping between servers with session
//!   guarantees ([T94]), and one checker per guarantee over their history.
//! * [`render`]: servers side by side as on the slides, as text or SVG.
//!
//! Everything is deterministic: the same scenario or seed gives the same run.

#![warn(missing_docs, unreachable_pub)]

pub mod check;
pub mod mobile;
pub mod random;
pub mod render;
pub mod scenario;
pub mod world;

pub use scenario::{Command, Line, ParseError, parse};
pub use world::{Coverage, RunError, Snapshot, World};
