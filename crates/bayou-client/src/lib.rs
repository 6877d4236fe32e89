//! A Bayou client that keeps session guarantees while it moves between
//! replicas: the *session manager* of Terry et al., "Session Guarantees for
//! Weakly Consistent Replicated Data" (PDIS 1994, [T94 §4]).
//!
//! A [`Session`] knows several replicas and holds the session's token
//! (`BAYOU.SESSION`, see docs/sessions.md). It sends each command to its
//! current replica in one pipeline between `BAYOU.SESSION USE token` and
//! `BAYOU.SESSION TOKEN`, so any connection serves the session and the
//! token it holds always reflects every read and write that succeeded. When the
//! replica cannot be reached, or answers `NOTYET` (it lacks writes the
//! session's guarantees need, even after pulling from its peers), the
//! session moves on to the next replica and repeats the command there; the guarantees hold
//! whichever replica answers, because every replica checks them against
//! the token. Only when no replica can serve the command, for a few rounds,
//! does a call fail with [`Error::Unavailable`].
//!
//! A write is repeated elsewhere only when it certainly did not run: the
//! session first checks the connection with `BAYOU.SESSION USE`, then sends
//! the write. If the connection is lost after the write went out, the
//! replica may have made it durable before it failed, and sending it again
//! would make it twice (an `APPEND` would append twice), so the call fails
//! with [`Error::Uncertain`] and the caller decides.
//!
//! ```no_run
//! use bayou_client::{Guarantees, Session};
//!
//! let mut s = Session::open(&["127.0.0.1:7001", "127.0.0.1:7002"], Guarantees::ALL)?;
//! s.set("cart", "apples")?;
//! assert_eq!(s.get("cart")?.as_deref(), Some("apples")); // at whichever replica answers
//! let token = s.token().to_string(); // carry it to another process
//! # Ok::<(), bayou_client::Error>(())
//! ```

#![warn(missing_docs)]

use std::time::Duration;

pub use bayou_core::{ClientSession, Guarantee, Guarantees, TokenError};
use redis::Value;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No replica could serve the command: each attempt's error, in order.
    #[error("no replica could serve the command: {}", .0.join("; "))]
    Unavailable(Vec<String>),
    /// A replica refused the command itself (wrong type, syntax, …): the
    /// same answer would come from any replica.
    #[error("the replica refused the command: {0}")]
    Refused(String),
    /// The connection to the replica was lost after a write was sent: the
    /// write may or may not have been made (and may still reach every
    /// replica). The session's token does not include it.
    #[error("the outcome of the write is unknown: {0}")]
    Uncertain(String),
    /// The session token is not valid.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The client was given no replica.
    #[error("no replica addresses were given")]
    NoReplicas,
}

/// How a [`Session`] moves between replicas.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long a replica that lacks what the session needs pulls from its
    /// peers before answering `NOTYET` (`BAYOU.SESSION WAIT`).
    pub wait: Duration,
    /// Rounds over every replica before a call gives up.
    pub rounds: usize,
    /// The pause between rounds.
    pub pause: Duration,
    /// The time limit to connect to a replica and for each reply.
    pub timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            wait: Duration::from_millis(300),
            rounds: 3,
            pause: Duration::from_millis(100),
            timeout: Duration::from_secs(5),
        }
    }
}

/// A session with guarantees over several replicas. See the crate docs.
pub struct Session {
    replicas: Vec<String>,
    current: usize,
    /// One connection per replica, opened when first needed.
    conns: Vec<Option<redis::Connection>>,
    token: String,
    options: Options,
    moves: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("replica", &self.replicas[self.current])
            .field("token", &self.token)
            .finish()
    }
}

/// What one attempt at one replica gave.
enum Attempt {
    Done(Value),
    /// Try another replica: why not this one.
    Move(String),
    Refused(String),
    /// A write went out and the connection was lost before its reply.
    Uncertain(String),
}

/// Whether a command changes data (so must not be sent twice) or only reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

impl Session {
    /// A new session with `guarantees` over `replicas` (`host:port`). No
    /// replica is contacted yet: the token is made here, since a token is
    /// self-contained.
    pub fn open(replicas: &[&str], guarantees: Guarantees) -> Result<Session, Error> {
        Session::resume(replicas, &ClientSession::new(guarantees).token())
    }

    /// Continues the session of `token` (from [`Session::token`], perhaps
    /// of another process) over `replicas`.
    pub fn resume(replicas: &[&str], token: &str) -> Result<Session, Error> {
        ClientSession::from_token(token)?;
        if replicas.is_empty() {
            return Err(Error::NoReplicas);
        }
        Ok(Session {
            replicas: replicas.iter().map(|r| r.to_string()).collect(),
            current: 0,
            conns: replicas.iter().map(|_| None).collect(),
            token: token.to_string(),
            options: Options::default(),
            moves: 0,
        })
    }

    /// Changes how the session moves between replicas.
    pub fn with_options(mut self, options: Options) -> Session {
        self.options = options;
        self.conns.iter_mut().for_each(|c| *c = None);
        self
    }

    /// The session's token, reflecting every command that succeeded.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The session's guarantees and vectors, decoded from the token.
    pub fn state(&self) -> ClientSession {
        ClientSession::from_token(&self.token).expect("tokens held here were checked")
    }

    /// The replica the next command goes to first.
    pub fn replica(&self) -> &str {
        &self.replicas[self.current]
    }

    /// How many times the session moved to another replica.
    pub fn moves(&self) -> u64 {
        self.moves
    }

    /// Makes `index` the replica the next command goes to first.
    pub fn prefer(&mut self, index: usize) {
        if index < self.replicas.len() {
            self.current = index;
        }
    }

    /// `GET key`.
    pub fn get(&mut self, key: &str) -> Result<Option<String>, Error> {
        match self.command(redis::cmd("GET").arg(key))? {
            Value::Nil => Ok(None),
            v => text(v).map(Some),
        }
    }

    /// `SET key value`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), Error> {
        self.write(redis::cmd("SET").arg(key).arg(value))
            .map(|_| ())
    }

    /// `APPEND key value`: the new length at the replica that took it.
    pub fn append(&mut self, key: &str, value: &str) -> Result<i64, Error> {
        match self.write(redis::cmd("APPEND").arg(key).arg(value))? {
            Value::Int(n) => Ok(n),
            other => Err(Error::Refused(format!("unexpected reply {other:?}"))),
        }
    }

    /// A command that only reads (or is safe to run twice), under the
    /// session, at whichever replica can serve it.
    pub fn command(&mut self, cmd: &redis::Cmd) -> Result<Value, Error> {
        self.run(cmd, Kind::Read)
    }

    /// A command that changes data, under the session, at whichever replica
    /// can serve it; never sent twice (see [`Error::Uncertain`]).
    pub fn write(&mut self, cmd: &redis::Cmd) -> Result<Value, Error> {
        self.run(cmd, Kind::Write)
    }

    fn run(&mut self, cmd: &redis::Cmd, kind: Kind) -> Result<Value, Error> {
        let mut why = Vec::new();
        let n = self.replicas.len();
        for round in 0..self.options.rounds.max(1) {
            if round > 0 {
                std::thread::sleep(self.options.pause);
            }
            for _ in 0..n {
                match self.attempt(cmd, kind) {
                    Attempt::Done(v) => return Ok(v),
                    Attempt::Refused(e) => return Err(Error::Refused(e)),
                    Attempt::Uncertain(e) => {
                        return Err(Error::Uncertain(format!(
                            "{}: {e}",
                            self.replicas[self.current]
                        )));
                    }
                    Attempt::Move(e) => {
                        why.push(format!("{}: {e}", self.replicas[self.current]));
                        self.current = (self.current + 1) % n;
                        self.moves += 1;
                    }
                }
            }
        }
        Err(Error::Unavailable(why))
    }

    fn connect(&mut self) -> Result<&mut redis::Connection, String> {
        let slot = self.current;
        if self.conns[slot].is_none() {
            let addr = &self.replicas[slot];
            let client =
                redis::Client::open(format!("redis://{addr}/")).map_err(|e| e.to_string())?;
            let mut conn = client
                .get_connection_with_timeout(self.options.timeout)
                .map_err(|e| e.to_string())?;
            let _ = conn.set_read_timeout(Some(self.options.timeout));
            let _ = conn.set_write_timeout(Some(self.options.timeout));
            redis::cmd("BAYOU.SESSION")
                .arg("WAIT")
                .arg(self.options.wait.as_millis() as u64)
                .query::<()>(&mut conn)
                .map_err(|e| e.to_string())?;
            self.conns[slot] = Some(conn);
        }
        Ok(self.conns[slot].as_mut().expect("connected above"))
    }

    /// One round trip: the session's token, the command, the new token.
    /// Carrying the token each time keeps a connection that another
    /// session of this process used, or that missed the session's latest
    /// commands elsewhere, in step.
    ///
    /// A write takes two round trips: `USE` alone first, so that a
    /// connection that died while idle (the replica restarted) is found
    /// before the write is sent, and the write is moved elsewhere only when
    /// it certainly did not run.
    fn attempt(&mut self, cmd: &redis::Cmd, kind: Kind) -> Attempt {
        let token = self.token.clone();
        let conn = match self.connect() {
            Ok(c) => c,
            Err(e) => return Attempt::Move(e),
        };
        let mut pipe = redis::pipe();
        let use_token = redis::cmd("BAYOU.SESSION").arg("USE").arg(&token).clone();
        if kind == Kind::Write {
            if let Err(e) = use_token.query::<()>(conn) {
                self.conns[self.current] = None;
                return Attempt::Move(e.to_string());
            }
        } else {
            pipe.add_command(use_token).ignore();
        }
        pipe.add_command(cmd.clone())
            .cmd("BAYOU.SESSION")
            .arg("TOKEN");
        let result = pipe.query::<Vec<Value>>(conn);
        let (outcome, keep) = match result {
            Ok(mut replies) if replies.len() == 2 => {
                let token = replies.pop().expect("two replies");
                match text(token) {
                    Ok(t) if ClientSession::from_token(&t).is_ok() => {
                        self.token = t;
                        (Attempt::Done(replies.pop().expect("two replies")), true)
                    }
                    _ => (
                        Attempt::Move("the replica sent no valid token".into()),
                        false,
                    ),
                }
            }
            Ok(other) => (
                Attempt::Move(format!("unexpected replies {other:?}")),
                false,
            ),
            // Nothing ran; the connection is fine for later.
            Err(e) if e.code() == Some("NOTYET") => (Attempt::Move(e.to_string()), true),
            Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                match kind {
                    Kind::Read => (Attempt::Move(e.to_string()), false),
                    Kind::Write => (Attempt::Uncertain(e.to_string()), false),
                }
            }
            Err(e) => {
                // The command itself was refused; the session may still
                // have recorded a read, so fetch the token before failing.
                let refreshed = redis::cmd("BAYOU.SESSION")
                    .arg("TOKEN")
                    .query::<String>(conn);
                let ok = match refreshed {
                    Ok(t) if ClientSession::from_token(&t).is_ok() => {
                        self.token = t;
                        true
                    }
                    _ => false,
                };
                (Attempt::Refused(e.to_string()), ok)
            }
        };
        if !keep {
            self.conns[self.current] = None;
        }
        outcome
    }
}

fn text(v: Value) -> Result<String, Error> {
    match v {
        Value::BulkString(b) => {
            String::from_utf8(b).map_err(|_| Error::Refused("a reply that is not UTF-8".into()))
        }
        Value::SimpleString(s) => Ok(s),
        Value::Okay => Ok("OK".into()),
        other => Err(Error::Refused(format!("unexpected reply {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_needs_replicas_and_a_valid_token() {
        assert!(matches!(
            Session::open(&[], Guarantees::ALL),
            Err(Error::NoReplicas)
        ));
        assert!(matches!(
            Session::resume(&["127.0.0.1:1"], "00"),
            Err(Error::Token(_))
        ));
        let s = Session::open(&["127.0.0.1:1"], Guarantees::ALL).unwrap();
        assert_eq!(s.state().guarantees(), Guarantees::ALL);
    }

    #[test]
    fn no_reachable_replica_is_unavailable_after_every_round() {
        // Port 1 on loopback refuses connections.
        let mut s = Session::open(&["127.0.0.1:1", "127.0.0.1:2"], Guarantees::ALL)
            .unwrap()
            .with_options(Options {
                rounds: 2,
                pause: Duration::from_millis(1),
                ..Options::default()
            });
        match s.get("k") {
            Err(Error::Unavailable(why)) => assert_eq!(why.len(), 4, "{why:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.moves(), 4);
    }
}
