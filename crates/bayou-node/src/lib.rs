//! A Bayou replica as a network server.
//!
//! * the Redis protocol (RESP2) parser, reply encoder and accept loop come
//!   from the shared `server-kit` crate (Chord's runtime uses them too).
//! * [`wire`]: the peer protocol's frames and messages.
//! * [`node`]: the replica task, the storage thread, group commit and the
//!   durability barrier.
//! * [`server`]: the listener and the Redis commands.
//! * [`peer`]: anti-entropy sessions, initiator and responder, and the
//!   periodic loop.
//! * [`session`]: session guarantees over RESP (`BAYOU.SESSION`), anti-entropy
//!   on demand.
//! * [`cli`]: the `serve` and `cluster` subcommands.
//! * [`member`]: founding, joining (`--join`, `BAYOU.JOIN`), handoff and
//!   retirement as the server drives them; who the peers are.
//! * [`keys`]: signing keys and keyrings on disk (`--signing-key`,
//!   `--keyring`, `bayou keys`) for signed writes.
//! * [`web`]: the `--http` listener: Prometheus metrics (kept in
//!   [`node::metrics`]), `/healthz` and the live web view.
//!
//! The protocol itself lives in `bayou-core`, storage in `bayou-store`; this
//! crate only moves bytes and calls them.

#![warn(missing_docs)]

pub mod cli;
pub mod keys;
pub mod member;
pub mod node;
pub mod peer;
pub mod server;
pub mod session;
pub mod web;
pub mod wire;
