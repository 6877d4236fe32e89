//! # chord-node
//!
//! Chord nodes on the network: a distributed hash table that any Redis client
//! can use. This crate is the tokio driver of the sans-IO `chord-core`:
//!
//! * [`wire`]: the node-to-node protocol (framed, versioned, length-limited);
//! * [`transport`]: outgoing peer connections with bounded queues and timeouts;
//! * [`node`]: configuration, shared state and the core task that runs the
//!   Chord state machines (stabilize, fix_fingers, check_predecessor, lookups,
//!   join, leave) on real timers and sockets;
//! * [`data`]: the task that runs chord-core's data plane
//!   ([`chord_core::data::DataPlane`]: ownership, replica sets, records and
//!   their merge, durable acknowledgements, hedged reads, anti-entropy,
//!   hand-off, garbage collection, tombstone purge) on real timers, sockets
//!   and the store;
//! * [`store`]: redb under the plane's `KeyStore` trait, and the group-commit
//!   thread that makes the plane's changes durable;
//! * [`server`]: the listener, peer connections and the RESP commands;
//! * [`cli`]: `chord serve` and `chord cluster`;
//! * [`web`]: the `--http` listener: Prometheus metrics ([`metrics`]),
//!   `/healthz` and the live ring view.
//!
//! The protocol decisions (who is whose successor, where a lookup goes, who
//! owns a key, where its copies live, which record wins) are chord-core's;
//! this crate moves bytes, keeps time, and writes records to disk.

#![warn(missing_docs)]

pub mod cli;
pub mod data;
pub mod metrics;
pub mod node;
pub mod server;
pub mod store;
pub mod transport;
pub mod web;
pub mod wire;
