//! # chord-sim
//!
//! The [`chord_core`] protocol over a simulated network ([`sim`]), the
//! experiments of the Chord paper ([`experiments`]), and the data plane
//! ([`chord_core::data`]) under faults with its checkers ([`data_sim`]). Everything is seeded and
//! runs in simulated time, so every figure is reproducible from its command line.

#![warn(missing_docs, unreachable_pub)]

pub mod data_sim;
pub mod experiments;
pub mod sim;

pub use sim::{NetConfig, Sim};
