//! Identifiers: servers, writes and commit sequence numbers.
//!
//! A write is named by `<accept-stamp, server-id>` ([T95 §5], [P97 §2]): the
//! server that first accepted it from a client, and that server's logical clock
//! at the time. The pair is unique because each server's stamps strictly
//! increase. Tentative writes are totally ordered by this pair, the stamp first
//! and the server id (compared as bytes) only to break ties, so `7:A` precedes
//! `7:P`.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A commit sequence number, assigned by the primary: 1, 2, 3, …
/// Tentative writes have none (the slides print `∞`).
pub type Csn = u64;

/// An accept-stamp: a server's logical clock when it accepted a write.
pub type Stamp = u64;

/// The longest server id accepted, in bytes.
pub const MAX_SERVER_ID_LEN: usize = 64;

/// The name of a replica. Letters and digits only, so that it prints without
/// quoting in the slides' notation (`5:B`). Ordered by bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServerId(Arc<str>);

/// Why a string is not a valid [`ServerId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerIdError {
    /// The id is empty.
    #[error("a server id cannot be empty")]
    Empty,
    /// The id is longer than [`MAX_SERVER_ID_LEN`].
    #[error("server id is {0} bytes long; the limit is {MAX_SERVER_ID_LEN}")]
    TooLong(usize),
    /// The id holds something other than ASCII letters and digits.
    #[error("server id {0:?} must hold only ASCII letters and digits")]
    BadCharacter(String),
}

impl ServerId {
    /// Checks and wraps a server id.
    pub fn new(id: &str) -> Result<Self, ServerIdError> {
        if id.is_empty() {
            return Err(ServerIdError::Empty);
        }
        if id.len() > MAX_SERVER_ID_LEN {
            return Err(ServerIdError::TooLong(id.len()));
        }
        if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ServerIdError::BadCharacter(id.to_string()));
        }
        Ok(ServerId(Arc::from(id)))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ServerId {
    type Error = ServerIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ServerId::new(&s)
    }
}

impl From<ServerId> for String {
    fn from(id: ServerId) -> String {
        id.0.to_string()
    }
}

impl std::str::FromStr for ServerId {
    type Err = ServerIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServerId::new(s)
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The globally unique name of a write: `<accept-stamp, server-id>`.
///
/// The derived order is the tentative order of [T95 §5]: by stamp, then by
/// server id.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WriteId {
    /// The accepting server's logical clock when it accepted the write.
    pub stamp: Stamp,
    /// The server that accepted the write from a client.
    pub server: ServerId,
}

impl WriteId {
    /// Names a write.
    pub fn new(stamp: Stamp, server: ServerId) -> Self {
        WriteId { stamp, server }
    }
}

impl fmt::Display for WriteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.stamp, self.server)
    }
}

impl fmt::Debug for WriteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str) -> ServerId {
        ServerId::new(id).unwrap()
    }

    #[test]
    fn ties_on_stamp_are_broken_by_server_id_bytes() {
        // The walk-through's `7:A` precedes `7:P` [T95 §5].
        assert!(WriteId::new(7, s("A")) < WriteId::new(7, s("P")));
        assert!(WriteId::new(5, s("P")) < WriteId::new(7, s("A")));
        // Byte order, not numeric: "10" < "9".
        assert!(WriteId::new(1, s("10")) < WriteId::new(1, s("9")));
        // Upper case sorts before lower case in byte order.
        assert!(WriteId::new(1, s("Z")) < WriteId::new(1, s("a")));
    }

    #[test]
    fn server_ids_are_letters_and_digits() {
        assert!(ServerId::new("P").is_ok());
        assert!(ServerId::new("node7").is_ok());
        assert_eq!(ServerId::new(""), Err(ServerIdError::Empty));
        assert!(matches!(
            ServerId::new("a-b"),
            Err(ServerIdError::BadCharacter(_))
        ));
        assert!(matches!(
            ServerId::new("a b"),
            Err(ServerIdError::BadCharacter(_))
        ));
        assert!(matches!(
            ServerId::new(&"x".repeat(65)),
            Err(ServerIdError::TooLong(65))
        ));
    }
}
