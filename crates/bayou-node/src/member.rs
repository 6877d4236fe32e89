//! Servers that come and go, as the network server drives them
//! ([P97 §4.3]; the protocol side is `bayou_core::member`).
//!
//! # Founding, joining, standing
//!
//! * The **founder** (the server whose `--id` equals `--primary`) records
//!   itself as the first member on an empty log ([`Replica::found`]).
//! * A **joiner** (`serve --join SPONSOR_ADDR` on a fresh data directory)
//!   asks an existing server over RESP, `BAYOU.JOIN <id> <addr>`, for a
//!   creation write ([`request_creation`]). The sponsor accepts it like a
//!   client write and replies with its id once it is durable. The joiner
//!   stores that id in its data directory ([`CREATION_FILE`], written after
//!   the store has made the directory its own and before anything is
//!   served) and starts with the sponsor as its first peer; a restart
//!   reads the file and needs no `--join`. A refused join (the name is
//!   taken) stops the process before it serves anything.
//! * A server's **standing** ([`Standing`]) decides whether it accepts
//!   client writes. A joiner is only a member once its creation is
//!   *committed* and the committed record of its name names *that* write:
//!   until then two servers may believe they own the name (two sponsors in
//!   two partitions), and the one whose creation commits first wins. The
//!   loser has accepted nothing when it learns it lost, so it stops
//!   ([`Standing::Lost`]) without having written under a name that is not
//!   its own. A server that retired accepts nothing either.
//! * A server started with a static peer list and no creation write (the
//!   clusters of before membership) keeps working as before
//!   ([`Standing::Static`]); it can sponsor, but not retire or receive a
//!   handoff, since it has no record. If the committed table binds its
//!   name to a creation made for another server, it is lost too.
//! * At every anti-entropy session the initiator names the creation it
//!   holds (`HelloMember`, [`crate::wire`]); a responder whose committed
//!   table binds that name to another creation reads what it pushes and
//!   drops it ([`Node::identity_mismatch`](crate::node::Node::identity_mismatch)),
//!   and the session goes on so the impostor pulls the record of its name
//!   and stops. A server not yet a member only pulls: it has no write of
//!   its own.
//!
//! # Who the peers are
//!
//! Anti-entropy partners are the static `--peer` list, the sponsor named in
//! the creation file, and every live member of the *committed* membership
//! table with its address, minus this server and every server whose
//! retirement is held here ([`Node::peers`](crate::node::Node::peers)).
//! The committed view, not the full one: a tentative creation may still
//! lose, and its address would lead to the loser.
//!
//! # Retiring
//!
//! `BAYOU.RETIRE` writes the retirement (a primary first hands off to a
//! live member, in the same step). The server then refuses client writes
//! and keeps serving anti-entropy until another server holds the
//! retirement: the first session *it* starts whose push is acknowledged
//! (the peer has made durable everything this server held, retirement
//! included, before it acknowledges). Then it shuts down cleanly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bayou_core::{Replica, ServerId, View, WriteId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The file in a joined server's data directory that holds its creation.
pub const CREATION_FILE: &str = "CREATION";

/// A joined server's creation: the write that binds its name, and the
/// sponsor that accepted it (its first peer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creation {
    /// The creation write's id; its server is the sponsor.
    pub created: WriteId,
    /// Where the sponsor listens.
    pub sponsor_addr: String,
}

impl Creation {
    /// The sponsor's id (the server that accepted the creation write).
    pub fn sponsor(&self) -> &ServerId {
        &self.created.server
    }

    /// The file's text.
    fn encode(&self) -> String {
        format!(
            "created {}\nsponsor {} {}\n",
            self.created,
            self.sponsor(),
            self.sponsor_addr
        )
    }

    fn decode(text: &str) -> Result<Creation, String> {
        let mut created = None;
        let mut sponsor_addr = None;
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["created", id] => created = Some(parse_write_id(id)?),
                ["sponsor", _, addr] => sponsor_addr = Some(addr.to_string()),
                [] => {}
                _ => return Err(format!("unexpected line {line:?}")),
            }
        }
        match (created, sponsor_addr) {
            (Some(created), Some(sponsor_addr)) => Ok(Creation {
                created,
                sponsor_addr,
            }),
            _ => Err("missing the created or sponsor line".into()),
        }
    }

    /// The creation recorded in `data_dir`, if it holds one.
    pub fn load(data_dir: &Path) -> anyhow::Result<Option<Creation>> {
        let path = data_dir.join(CREATION_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Creation::decode(&text)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the file durably (temporary file, fsync, rename, fsync of the
    /// directory): a crash leaves either no file or the whole of it.
    pub fn store(&self, data_dir: &Path) -> std::io::Result<PathBuf> {
        use std::io::Write;
        let path = data_dir.join(CREATION_FILE);
        let tmp = data_dir.join(format!("{CREATION_FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(self.encode().as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(data_dir)?.sync_all()?;
        Ok(path)
    }
}

/// Parses a write id as `Display` prints it, `stamp:server`.
pub fn parse_write_id(text: &str) -> Result<WriteId, String> {
    let (stamp, server) = text
        .split_once(':')
        .ok_or_else(|| format!("bad write id {text:?} (expected STAMP:SERVER)"))?;
    let stamp = stamp
        .parse()
        .map_err(|_| format!("bad write id {text:?}: the stamp is not a number"))?;
    let server = ServerId::new(server).map_err(|e| format!("bad write id {text:?}: {e}"))?;
    Ok(WriteId::new(stamp, server))
}

/// Where this server stands in the membership ([`crate::member`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Started from a static peer list, with no membership record: accepts
    /// writes, as before membership existed.
    Static,
    /// Its creation (or founding) is committed and bound to it.
    Member,
    /// A joiner whose creation has not committed yet.
    Joining(WriteId),
    /// The committed record of its name names another creation: another
    /// server owns the name.
    Lost {
        /// The creation it was given (`None`: it was started without one,
        /// from a static peer list, and the name was created for another).
        mine: Option<WriteId>,
        /// The creation that won.
        winner: WriteId,
    },
    /// It wrote its retirement.
    Retired,
}

impl Standing {
    /// Where `replica` stands, given the creation it joined with (`None`:
    /// founder or static server).
    pub fn of(replica: &Replica, creation: Option<&Creation>) -> Standing {
        if replica.has_retired() {
            return Standing::Retired;
        }
        let record = replica.member(replica.id(), View::Committed);
        match (creation, record) {
            (Some(c), Some(m)) if m.created == c.created => Standing::Member,
            (Some(c), Some(m)) => Standing::Lost {
                mine: Some(c.created.clone()),
                winner: m.created,
            },
            (Some(c), None) => Standing::Joining(c.created.clone()),
            // The founder created itself; any other creation of this name
            // was made for another server.
            (None, Some(m)) if &m.created.server == replica.id() => Standing::Member,
            (None, Some(m)) => Standing::Lost {
                mine: None,
                winner: m.created,
            },
            (None, None) => Standing::Static,
        }
    }

    /// The error a client write gets, or `None` if writes are accepted.
    pub fn refusal(&self, me: &ServerId) -> Option<String> {
        match self {
            Standing::Static | Standing::Member => None,
            Standing::Joining(id) => Some(format!(
                "TRYAGAIN not yet a member: waiting for creation {id} to commit"
            )),
            Standing::Lost { winner, .. } => Some(format!(
                "ERR server id {me} belongs to another server (created by {winner}); \
                 this server accepts nothing"
            )),
            Standing::Retired => Some(format!(
                "ERR server {me} has retired; write to another server"
            )),
        }
    }

    /// A short name for `BAYOU.STATUS`.
    pub fn name(&self) -> String {
        match self {
            Standing::Static => "static".into(),
            Standing::Member => "member".into(),
            Standing::Joining(id) => format!("joining (creation {id} not committed)"),
            Standing::Lost { winner, .. } => format!("lost (name owned by creation {winner})"),
            Standing::Retired => "retired".into(),
        }
    }
}

/// `BAYOU.MEMBERS`: one line per server of the committed membership table,
/// then those only in the full view (`tentative`), as
/// `ID ADDR live|retired created WRITE [primary]`.
pub fn members_text(replica: &Replica, primary: Option<&ServerId>) -> Vec<String> {
    let committed = replica.members(View::Committed);
    let mut lines: Vec<String> = committed
        .iter()
        .map(|(id, m)| {
            let state = match &m.retired {
                None => "live".to_string(),
                Some(r) => format!("retired {r}"),
            };
            let mark = if primary == Some(id) { " primary" } else { "" };
            format!("{id} {} {state} created {}{mark}", m.addr, m.created)
        })
        .collect();
    for (id, m) in replica.members(View::Full) {
        let same = committed.iter().find(|(c, _)| *c == id).map(|(_, c)| c);
        if same.is_some_and(|c| c.retired.is_some() || m.retired.is_none()) {
            continue;
        }
        let what = if same.is_some() {
            "retiring (tentative)"
        } else {
            "tentative"
        };
        lines.push(format!("{id} {} {what} created {}", m.addr, m.created));
    }
    lines
}

/// The primary as the committed membership names it (the founder, which
/// the table names as it creates itself, then the target of each committed
/// handoff; a joiner need not be told `--primary`); in a static cluster,
/// `--primary`.
pub fn effective_primary(replica: &Replica, primary_flag: Option<&ServerId>) -> Option<ServerId> {
    bayou_core::member::primary(replica.db(View::Committed)).or_else(|| primary_flag.cloned())
}

/// Asks the server at `sponsor_addr` to create `id` reachable at `addr`
/// (`BAYOU.JOIN`); returns the creation write's id once the sponsor has
/// made it durable. A refusal (the name is taken) is an error carrying the
/// sponsor's message.
pub async fn request_creation(
    sponsor_addr: &str,
    id: &ServerId,
    addr: &str,
    tls: Option<&server_kit::tls::Tls>,
    limit: Duration,
) -> anyhow::Result<WriteId> {
    let ask = async {
        let mut stream = server_kit::tls::connect(tls, sponsor_addr)
            .await
            .with_context(|| format!("cannot reach the sponsor at {sponsor_addr}"))?;
        let args: [&[u8]; 3] = [b"BAYOU.JOIN", id.as_str().as_bytes(), addr.as_bytes()];
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        stream.write_all(&req).await?;
        let reply = read_reply(&mut stream).await?;
        let _ = stream.shutdown().await;
        Ok::<_, anyhow::Error>(reply)
    };
    let reply = tokio::time::timeout(limit, ask)
        .await
        .map_err(|_| anyhow::anyhow!("the sponsor at {sponsor_addr} did not answer in time"))??;
    match reply {
        Ok(text) => parse_write_id(&text)
            .map_err(|e| anyhow::anyhow!("the sponsor at {sponsor_addr} answered {text:?}: {e}")),
        Err(e) => bail!("the sponsor at {sponsor_addr} refused to create {id}: {e}"),
    }
}

/// One RESP reply that is a simple string, a bulk string or an error.
async fn read_reply<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> anyhow::Result<Result<String, String>> {
    let mut buf = Vec::new();
    let line_end = |b: &[u8]| b.windows(2).position(|w| w == b"\r\n");
    loop {
        if let Some(end) = line_end(&buf) {
            let line = String::from_utf8_lossy(&buf[1..end]).into_owned();
            match buf[0] {
                b'+' => return Ok(Ok(line)),
                b'-' => return Ok(Err(line)),
                b'$' => {
                    let len: usize = line
                        .parse()
                        .map_err(|_| anyhow::anyhow!("bad RESP bulk length {line:?}"))?;
                    let start = end + 2;
                    while buf.len() < start + len {
                        if stream.read_buf(&mut buf).await? == 0 {
                            bail!("the sponsor closed the connection mid-reply");
                        }
                    }
                    return Ok(Ok(
                        String::from_utf8_lossy(&buf[start..start + len]).into_owned()
                    ));
                }
                _ => bail!("unexpected RESP reply {line:?}"),
            }
        }
        if buf.len() > 64 << 10 {
            bail!("RESP reply too long");
        }
        if stream.read_buf(&mut buf).await? == 0 {
            bail!("the sponsor closed the connection without replying");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creation_file_reads_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Creation::load(dir.path()).unwrap(), None);
        let c = Creation {
            created: WriteId::new(1_764_000_000_123, ServerId::new("P").unwrap()),
            sponsor_addr: "127.0.0.1:7000".into(),
        };
        c.store(dir.path()).unwrap();
        assert_eq!(Creation::load(dir.path()).unwrap(), Some(c.clone()));
        assert_eq!(c.sponsor().as_str(), "P");
        std::fs::write(dir.path().join(CREATION_FILE), "created nonsense\n").unwrap();
        assert!(Creation::load(dir.path()).is_err());
    }

    #[test]
    fn write_ids_parse_as_they_print() {
        let id = WriteId::new(12, ServerId::new("node7").unwrap());
        assert_eq!(parse_write_id(&id.to_string()).unwrap(), id);
        assert!(parse_write_id("12").is_err());
        assert!(parse_write_id("x:P").is_err());
    }
}
