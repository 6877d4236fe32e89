//! The scenario language: one command a line, `#` starts a comment.
//!
//! ```text
//! servers P A B        # create servers with these ids (letters and digits)
//! primary P            # P assigns CSNs
//! autocommit P         # ... as soon as it holds a write (else only on `commit`)
//! clock A 7            # A's physical clock reads 7 until set again (0 at start)
//! write A W(X,3)       # a client write at A; also D(key), BAYOU{json}
//! meeting A Budget R1 1 352/13 352/15 353/9
//!                      # meeting-room request: name, room, hours, preferred
//!                      # day/hour, then alternates ([T95 Fig. 3])
//! bib A Jones95 A title of the paper
//!                      # bibliography entry under a key ([T95 §2.2])
//! sync A B             # one one-way anti-entropy session from A to B
//! sync A B 2           # ... cut off after the first 2 chunks (one item, or
//!                      # one database entry of a full-state transfer, each)
//! commit P             # the primary commits every tentative write it holds
//! redeliver A B        # A's last session to B arrives again, late (a
//!                      # delayed duplicate of old messages)
//! crash B              # B crashes and restarts from its durable state
//!                      # (its last durable checkpoint plus durable items)
//! truncate A 2         # A checkpoints and discards all but its last 2
//!                      # committed writes ([P97 §3.3]); durable at once
//! retain A 4           # A's retention policy: keep at most 4 committed
//!                      # writes, checkpoint every 3 commits (automatic
//!                      # truncation from now on)
//! export A B F         # A writes a bundle for B's current state ([P97 §4.1])
//!                      # into files kept under the name F (A flushes first)
//! export A B F 300     # ... split into files of about 300 bytes each
//! import F C           # every file of F is imported at C, in order; a file
//!                      # C is not ready for is refused, harmlessly
//! import-part F 2 C    # only F's second file, e.g. out of order (nothing
//!                      # arrives if the export wrote fewer files)
//! sign                 # every server signs the writes it accepts and
//!                      # verifies those it receives (bayou_core::auth)
//! author A alice       # A's client is alice from now on: A's writes
//!                      # record her as their author (`author A -`: none)
//! tamper A B value     # a byzantine relay: A's session to B with the
//!                      # first write's value changed on the way (or
//!                      # `author`: its author changed); a server that
//!                      # verifies refuses it
//! found P              # the primary records itself as the cluster's first
//!                      # member ([P97 §4.3]; the first `create` does it if
//!                      # no `found` came before)
//! create C by A        # A sponsors a new server C ([P97 §4.3]): C starts
//!                      # empty and accepts client writes only once its
//!                      # creation is committed and bound to it
//! create C by B as C2  # a second server named C (a concurrent creation,
//!                      # e.g. in another partition), addressed as C2 here
//! retire X             # X writes its retirement, its last write; it stops
//!                      # once another server durably holds it
//! handoff X            # the current primary hands CSN assignment to X
//! commit *             # whichever server is the primary now commits
//! show                 # print every server's state
//! expect-converged     # fail unless all servers hold the same log, vv and db
//! ```

use bayou_apps::{bib, meeting};
use bayou_core::{Op, ServerId};

/// One scenario command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `servers P A B`.
    Servers(Vec<ServerId>),
    /// `primary P`.
    Primary(ServerId),
    /// `autocommit P`.
    Autocommit(ServerId),
    /// `clock S T`.
    Clock(ServerId, u64),
    /// `write S OP`.
    Write(ServerId, Op),
    /// `sync S R [LIMIT]`: anti-entropy from `from` to `to`, cut off after
    /// `limit` items when given.
    Sync {
        /// The sender.
        from: ServerId,
        /// The receiver.
        to: ServerId,
        /// How many items get through before the session is cut off.
        limit: Option<usize>,
    },
    /// `commit P`.
    Commit(ServerId),
    /// `commit *`: the server that is the primary now commits (after a
    /// handoff it is not the one `primary` named).
    CommitAtPrimary,
    /// `found P`: the primary records itself as the first member.
    Found(ServerId),
    /// `create C by A [as H]`: `sponsor` accepts the creation of `server`
    /// ([P97 §4.3]); the new server is addressed as `handle` (`server`
    /// unless given: a second server of one name needs another handle).
    Create {
        /// The new server's name.
        server: ServerId,
        /// The server that accepts its creation write.
        sponsor: ServerId,
        /// How later commands address it, when not by its name.
        handle: Option<ServerId>,
    },
    /// `retire X`: X writes its retirement ([P97 §4.3]).
    Retire(ServerId),
    /// `handoff X`: the current primary hands off to X ([P97 §4.3]).
    Handoff(ServerId),
    /// `redeliver S R`: the items of the last session from S to R arrive at
    /// R again, late: a delayed, duplicated copy of old messages.
    Redeliver {
        /// The sender of the original session.
        from: ServerId,
        /// Its receiver.
        to: ServerId,
    },
    /// `crash S`.
    Crash(ServerId),
    /// `truncate S KEEP`: checkpoint, keeping the last KEEP committed writes.
    Truncate(ServerId, u64),
    /// `retain S WRITES`: the retention policy keeps at most WRITES committed
    /// writes and checkpoints often.
    Retain(ServerId, u64),
    /// `export S R NAME [MAXBYTES]`: S writes a bundle for R's current state.
    Export {
        /// The sender.
        from: ServerId,
        /// The receiver whose state the bundle is computed for.
        to: ServerId,
        /// The bundle's name in the world.
        name: String,
        /// About how many bytes each file holds at most.
        max_bytes: usize,
    },
    /// `import NAME R` (every file, in order) or `import-part NAME I R` (the
    /// I-th file only, 1-based).
    Import {
        /// The bundle's name.
        name: String,
        /// One file only.
        part: Option<usize>,
        /// The importing server.
        to: ServerId,
    },
    /// `sign`: every server signs and verifies writes from now on.
    Sign,
    /// `author S USER` (`-` for none): the author of S's writes from now on.
    Author(ServerId, Option<String>),
    /// `tamper S R WHAT`: S's session to R, relayed by a byzantine peer that
    /// changes the first write in it.
    Tamper {
        /// The sender.
        from: ServerId,
        /// The receiver.
        to: ServerId,
        /// What the relay changes.
        what: Tampering,
    },
    /// `show`.
    Show,
    /// `expect-converged`.
    ExpectConverged,
}

/// What a byzantine relay changes in a write (`tamper`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tampering {
    /// The write's operation: another value.
    Value,
    /// The write's author.
    Author,
}

/// A command and the line it came from (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// 1-based line number in the file.
    pub number: usize,
    /// The command.
    pub command: Command,
    /// The comment at the end of the line, if any (a `show`'s caption).
    pub comment: Option<String>,
}

/// A scenario that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// Parses a whole scenario. Only syntax is checked here; whether the servers
/// exist is checked when it runs.
pub fn parse(text: &str) -> Result<Vec<Line>, ParseError> {
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let number = i + 1;
        let (content, comment) = match raw.split_once('#') {
            Some((c, comment)) => (c.trim(), Some(comment.trim().to_string())),
            None => (raw.trim(), None),
        };
        if content.is_empty() {
            continue;
        }
        let command = parse_command(content).map_err(|message| ParseError {
            line: number,
            message,
        })?;
        lines.push(Line {
            number,
            command,
            comment: comment.filter(|c| !c.is_empty()),
        });
    }
    Ok(lines)
}

fn server(word: Option<&str>, what: &str) -> Result<ServerId, String> {
    let word = word.ok_or_else(|| format!("missing {what}"))?;
    ServerId::new(word).map_err(|e| format!("bad {what} {word:?}: {e}"))
}

/// The default file size limit of `export`: large enough for one file.
pub const DEFAULT_BUNDLE_BYTES: usize = 1 << 20;

fn number<T: std::str::FromStr>(word: Option<&str>, what: &str) -> Result<T, String> {
    let w = word.ok_or_else(|| format!("missing {what}"))?;
    w.parse::<T>()
        .map_err(|_| format!("{what} {w:?} is not a non-negative integer"))
}

fn bundle_name(word: Option<&str>) -> Result<String, String> {
    let w = word.ok_or("missing bundle name")?;
    if w.chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        Ok(w.to_string())
    } else {
        Err(format!(
            "bad bundle name {w:?}: use letters, digits, `-` and `_`"
        ))
    }
}

fn parse_command(content: &str) -> Result<Command, String> {
    let (name, rest) = content
        .split_once(char::is_whitespace)
        .map(|(n, r)| (n, r.trim()))
        .unwrap_or((content, ""));
    let mut words = rest.split_whitespace();
    let done = |mut words: std::str::SplitWhitespace<'_>| match words.next() {
        Some(extra) => Err(format!("unexpected {extra:?} after `{name}`")),
        None => Ok(()),
    };
    let command = match name {
        "servers" => {
            let ids = words
                .by_ref()
                .map(|w| server(Some(w), "server id"))
                .collect::<Result<Vec<_>, _>>()?;
            if ids.is_empty() {
                return Err("`servers` needs at least one server id".into());
            }
            Command::Servers(ids)
        }
        "primary" => Command::Primary(server(words.next(), "server")?),
        "autocommit" => Command::Autocommit(server(words.next(), "server")?),
        "commit" => match words.next() {
            Some("*") => Command::CommitAtPrimary,
            w => Command::Commit(server(w, "server")?),
        },
        "found" => Command::Found(server(words.next(), "server")?),
        "create" => {
            let new = server(words.next(), "new server")?;
            match words.next() {
                Some("by") => {}
                Some(w) => return Err(format!("expected `by SPONSOR`, found {w:?}")),
                None => return Err("missing `by SPONSOR`".into()),
            }
            let sponsor = server(words.next(), "sponsor")?;
            let handle = match words.next() {
                None => None,
                Some("as") => Some(server(words.next(), "handle")?),
                Some(w) => return Err(format!("expected `as HANDLE`, found {w:?}")),
            };
            Command::Create {
                server: new,
                sponsor,
                handle,
            }
        }
        "retire" => Command::Retire(server(words.next(), "server")?),
        "handoff" => Command::Handoff(server(words.next(), "server")?),
        "crash" => Command::Crash(server(words.next(), "server")?),
        "clock" => {
            let s = server(words.next(), "server")?;
            let t = words.next().ok_or("missing clock reading")?;
            let t = t
                .parse::<u64>()
                .map_err(|_| format!("clock reading {t:?} is not a non-negative integer"))?;
            Command::Clock(s, t)
        }
        "write" => {
            let s = server(words.next(), "server")?;
            // The operation is the rest of the line, so `W(X, 4)` may hold spaces.
            let op_text = rest
                .split_once(char::is_whitespace)
                .map(|(_, op)| op.trim())
                .unwrap_or("");
            if op_text.is_empty() {
                return Err("missing operation, e.g. W(X,4) or D(Y)".into());
            }
            let op = Op::parse(op_text).map_err(|e| e.to_string())?;
            return Ok(Command::Write(s, op));
        }
        "sync" => {
            let from = server(words.next(), "sending server")?;
            let to = server(words.next(), "receiving server")?;
            let limit = match words.next() {
                None => None,
                Some(n) => Some(
                    n.parse::<usize>()
                        .map_err(|_| format!("item limit {n:?} is not a non-negative integer"))?,
                ),
            };
            Command::Sync { from, to, limit }
        }
        "meeting" => {
            let s = server(words.next(), "server")?;
            let name = words.next().ok_or("missing meeting name")?;
            let room = words.next().ok_or("missing room")?;
            let hours = words.next().ok_or("missing length in hours")?;
            let hours = hours
                .parse::<u32>()
                .map_err(|_| format!("length {hours:?} is not a whole number of hours"))?;
            let mut slots = words.by_ref().map(|w| {
                let (d, h) = w
                    .split_once('/')
                    .ok_or_else(|| format!("time {w:?} is not DAY/HOUR"))?;
                match (d.parse(), h.parse()) {
                    (Ok(day), Ok(hour)) => Ok(meeting::Slot { day, hour }),
                    _ => Err(format!("time {w:?} is not DAY/HOUR")),
                }
            });
            let preferred = slots.next().ok_or("missing preferred time DAY/HOUR")??;
            let alternates = slots.collect::<Result<Vec<_>, String>>()?;
            let write = meeting::Request {
                name: name.into(),
                room: room.into(),
                hours,
                preferred,
                alternates,
            }
            .to_write()
            .map_err(|e| e.to_string())?;
            return Ok(Command::Write(s, Op::Bayou(Box::new(write))));
        }
        "bib" => {
            let s = server(words.next(), "server")?;
            let key = words.next().ok_or("missing bibliography key")?;
            let title = words.collect::<Vec<_>>().join(" ");
            if title.is_empty() {
                return Err("missing title".into());
            }
            let write = bib::add_entry(key, &title).map_err(|e| e.to_string())?;
            return Ok(Command::Write(s, Op::Bayou(Box::new(write))));
        }
        "redeliver" => Command::Redeliver {
            from: server(words.next(), "sending server")?,
            to: server(words.next(), "receiving server")?,
        },
        "truncate" => Command::Truncate(
            server(words.next(), "server")?,
            number(words.next(), "number of writes to keep")?,
        ),
        "retain" => Command::Retain(
            server(words.next(), "server")?,
            number(words.next(), "number of writes to retain")?,
        ),
        "export" => {
            let from = server(words.next(), "sending server")?;
            let to = server(words.next(), "receiving server")?;
            let name = bundle_name(words.next())?;
            let max_bytes = match words.next() {
                None => DEFAULT_BUNDLE_BYTES,
                w => number(w, "file size limit")?,
            };
            if max_bytes == 0 {
                return Err("file size limit must be at least 1 byte".into());
            }
            Command::Export {
                from,
                to,
                name,
                max_bytes,
            }
        }
        "import" => Command::Import {
            name: bundle_name(words.next())?,
            part: None,
            to: server(words.next(), "importing server")?,
        },
        "import-part" => {
            let name = bundle_name(words.next())?;
            let part: usize = number(words.next(), "file number")?;
            if part == 0 {
                return Err("file numbers start at 1".into());
            }
            Command::Import {
                name,
                part: Some(part),
                to: server(words.next(), "importing server")?,
            }
        }
        "sign" => Command::Sign,
        "author" => {
            let s = server(words.next(), "server")?;
            let who = words.next().ok_or("missing author (a user name, or `-`)")?;
            Command::Author(s, (who != "-").then(|| who.to_string()))
        }
        "tamper" => Command::Tamper {
            from: server(words.next(), "sending server")?,
            to: server(words.next(), "receiving server")?,
            what: match words.next() {
                Some("value") => Tampering::Value,
                Some("author") => Tampering::Author,
                Some(w) => return Err(format!("tamper with {w:?}? `value` or `author`")),
                None => return Err("missing what to tamper with: `value` or `author`".into()),
            },
        },
        "show" => Command::Show,
        "expect-converged" => Command::ExpectConverged,
        other => return Err(format!("unknown command {other:?}")),
    };
    done(words)?;
    Ok(command)
}

/// Writes a command back in the scenario language (the inverse of [`parse`]).
pub fn format_command(command: &Command) -> String {
    let join = |ids: &[ServerId]| {
        ids.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    match command {
        Command::Servers(ids) => format!("servers {}", join(ids)),
        Command::Primary(s) => format!("primary {s}"),
        Command::Autocommit(s) => format!("autocommit {s}"),
        Command::Clock(s, t) => format!("clock {s} {t}"),
        Command::Write(s, Op::Bayou(w)) => format!("write {s} BAYOU{}", w.to_json()),
        Command::Write(s, op) => format!("write {s} {op}"),
        Command::Sync { from, to, limit } => match limit {
            Some(n) => format!("sync {from} {to} {n}"),
            None => format!("sync {from} {to}"),
        },
        Command::Commit(s) => format!("commit {s}"),
        Command::CommitAtPrimary => "commit *".into(),
        Command::Found(s) => format!("found {s}"),
        Command::Create {
            server,
            sponsor,
            handle: None,
        } => format!("create {server} by {sponsor}"),
        Command::Create {
            server,
            sponsor,
            handle: Some(h),
        } => format!("create {server} by {sponsor} as {h}"),
        Command::Retire(s) => format!("retire {s}"),
        Command::Handoff(s) => format!("handoff {s}"),
        Command::Redeliver { from, to } => format!("redeliver {from} {to}"),
        Command::Crash(s) => format!("crash {s}"),
        Command::Truncate(s, k) => format!("truncate {s} {k}"),
        Command::Retain(s, w) => format!("retain {s} {w}"),
        Command::Export {
            from,
            to,
            name,
            max_bytes,
        } => format!("export {from} {to} {name} {max_bytes}"),
        Command::Import {
            name,
            part: None,
            to,
        } => format!("import {name} {to}"),
        Command::Import {
            name,
            part: Some(i),
            to,
        } => format!("import-part {name} {i} {to}"),
        Command::Sign => "sign".into(),
        Command::Author(s, Some(a)) => format!("author {s} {a}"),
        Command::Author(s, None) => format!("author {s} -"),
        Command::Tamper { from, to, what } => format!(
            "tamper {from} {to} {}",
            match what {
                Tampering::Value => "value",
                Tampering::Author => "author",
            }
        ),
        Command::Show => "show".into(),
        Command::ExpectConverged => "expect-converged".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command_and_skips_comments() {
        let text = "# walk-through\nservers P A B\nprimary P # the primary\n\nclock A 7\nwrite A W(X, 3)\nwrite B D(Y)\nsync A B\nsync A B 2\nredeliver A B\ncommit P\ncrash B\nautocommit P\nshow\nexpect-converged\nmeeting A Budget R1 1 352/13 352/15\nbib B Jones95 A paper title\ntruncate P 2\nretain A 3\nexport A B F1\nexport A B F2 300\nimport F1 B\nimport-part F2 2 P\nfound P\ncreate C by A\ncreate C by B as C2\nretire C\nhandoff C2\ncommit *\n";
        let lines = parse(text).unwrap();
        assert_eq!(lines.len(), 27);
        assert_eq!(lines[0].number, 2);
        assert_eq!(
            lines[3].command,
            Command::Write(ServerId::new("A").unwrap(), Op::put("X", "3"))
        );
        for line in &lines {
            let again = parse(&format_command(&line.command)).unwrap();
            assert_eq!(again[0].command, line.command);
        }
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let err = parse("servers P A\nfrobnicate P\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert!(
            err.message.contains("unknown command \"frobnicate\""),
            "{err}"
        );
        let err = parse("write A X(1)").unwrap_err();
        assert!(
            err.message.contains("expected W(key,value) or D(key)"),
            "{err}"
        );
        assert!(
            parse("clock A -3")
                .unwrap_err()
                .message
                .contains("not a non-negative")
        );
        assert!(
            parse("servers P-1")
                .unwrap_err()
                .message
                .contains("letters and digits")
        );
        assert!(
            parse("sync A")
                .unwrap_err()
                .message
                .contains("missing receiving server")
        );
        assert!(parse("show me").unwrap_err().message.contains("unexpected"));
        assert!(
            parse("create C from A")
                .unwrap_err()
                .message
                .contains("expected `by SPONSOR`")
        );
        assert!(
            parse("create C by A named D")
                .unwrap_err()
                .message
                .contains("expected `as HANDLE`")
        );
        assert!(
            parse("truncate A x")
                .unwrap_err()
                .message
                .contains("number of writes to keep \"x\" is not a non-negative integer")
        );
        assert!(
            parse("export A B")
                .unwrap_err()
                .message
                .contains("missing bundle name")
        );
        assert!(
            parse("import-part F 0 A")
                .unwrap_err()
                .message
                .contains("start at 1")
        );
        assert!(
            parse("import F")
                .unwrap_err()
                .message
                .contains("missing importing server")
        );
        assert!(
            parse("write A")
                .unwrap_err()
                .message
                .contains("missing operation")
        );
    }
}
