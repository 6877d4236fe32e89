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
//! * [`store`]: durable storage behind the [`store::Storage`] trait (redb);
//! * [`data`]: ownership, request routing, replication, hand-off, repair and
//!   garbage collection of keys;
//! * [`server`]: the listener, peer connections and the RESP commands;
//! * [`cli`]: `chord serve` and `chord cluster`.
//!
//! The protocol decisions (who is whose successor, where a lookup goes) are
//! chord-core's; this crate moves bytes, keeps time, and stores keys.

#![warn(missing_docs)]

pub mod cli;
pub mod data;
pub mod node;
pub mod server;
pub mod store;
pub mod transport;
pub mod wire;
