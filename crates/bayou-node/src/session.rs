//! Session guarantees over RESP ([T94 §3–4]): `BAYOU.SESSION`.
//!
//! Each client connection is served through a [`Conn`], which holds the
//! connection's session, if it opened or continued one. Without a session
//! every command goes straight to the replica ([`Node`]'s handler), as
//! before. With one, the node's commands run through [`run_checked`]: the
//! rules themselves are `bayou_core::guarantee`'s; this module only decides
//! which commands read and which write, holds the replica lock while it
//! checks, runs and records, and, when this replica cannot serve the
//! session yet, pulls from its peers (anti-entropy on demand) for up to
//! the connection's wait before answering
//! `-NOTYET <guarantee>: this replica lacks <write> (has <write>) …`.
//!
//! The session lives in the client's token, not here: `BAYOU.SESSION USE`
//! on a connection to any replica continues it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bayou_core::{
    ClientSession, Guarantee, Guarantees, NotYet, ServerId, VersionVector, View, WriteId,
    WriteStatus,
};
use bytes::Bytes;
use server_kit::command::CommandSpec;
use server_kit::{Handler, Queued, Reply, Stopped};

use crate::node::{Locked, Node, Query};
use crate::server::{Action, classify};

/// How long a replica that cannot yet serve a session pulls from its peers
/// before it answers `NOTYET`, unless the connection set another wait.
pub const DEFAULT_WAIT: Duration = Duration::from_millis(2000);

/// The most a connection may ask to wait (`BAYOU.SESSION WAIT`).
pub const MAX_WAIT_MS: u64 = 60_000;

/// The `BAYOU.SESSION` command's table entry.
pub const SESSION_COMMAND: CommandSpec = CommandSpec::new(
    "bayou.session",
    -2,
    // `connection`: it acts on the connection's session only, so every
    // authenticated user may run it.
    &["fast", "no_multi", "connection"],
    "BAYOU.SESSION OPEN [RYW] [MR] [WFR] [MW] [ALL] | USE token | TOKEN | INFO | PENDING | WAIT ms | CLOSE: session guarantees",
);

/// The `BAYOU.WAITCOMMIT` command's table entry.
pub const WAITCOMMIT_COMMAND: CommandSpec = CommandSpec::new(
    "bayou.waitcommit",
    -2,
    &["readonly", "no_multi"],
    "BAYOU.WAITCOMMIT stamp:server [timeout-ms]: blocks until the write commits; its CSN and outcome",
);

/// The default and largest time `BAYOU.WAITCOMMIT` waits, in milliseconds.
pub const WAITCOMMIT_DEFAULT_MS: u64 = 5_000;
/// See [`WAITCOMMIT_DEFAULT_MS`].
pub const WAITCOMMIT_MAX_MS: u64 = 600_000;

/// `SUBSCRIBE channel [channel ...]`: pub/sub for commit notifications.
pub const SUBSCRIBE_COMMAND: CommandSpec = CommandSpec::new(
    "subscribe",
    -2,
    &["pubsub", "noscript", "loading", "stale", "no_multi"],
    "SUBSCRIBE channel [channel ...]: bayou:commits carries every commit this replica learns, bayou:outcomes every committed write whose outcome differs from its tentative one",
);

/// `UNSUBSCRIBE [channel ...]`.
pub const UNSUBSCRIBE_COMMAND: CommandSpec = CommandSpec::new(
    "unsubscribe",
    -1,
    &["pubsub", "noscript", "loading", "stale", "no_multi"],
    "UNSUBSCRIBE [channel ...]",
);

/// The channel of commit notifications: one message per write this
/// replica learns is committed, `<csn> <stamp:server> <outcome>`.
pub const COMMITS_CHANNEL: &str = "bayou:commits";

/// The channel of changed outcomes: one message per write this replica
/// executed tentatively and learns is committed with another outcome than
/// its last tentative execution here, `<csn> <stamp:server> tentative
/// <old outcome> committed <new outcome>`.
pub const OUTCOMES_CHANNEL: &str = "bayou:outcomes";

/// The channels the commit watcher serves.
const WATCHED_CHANNELS: [&str; 2] = [COMMITS_CHANNEL, OUTCOMES_CHANNEL];

/// How often a subscribed connection looks for new commits.
const COMMIT_POLL: Duration = Duration::from_millis(10);

/// One client connection: the node and the connection's session.
pub struct Conn {
    node: Arc<Node>,
    state: Mutex<State>,
    pubsub: PubSub,
}

/// A connection's subscriptions and the messages waiting to go out.
struct PubSub {
    /// Whether the connection ever subscribed: until then an idle
    /// connection waits on its socket alone.
    used: std::sync::atomic::AtomicBool,
    /// Shared with the commit watcher, which publishes on the channels
    /// subscribed when it finds a commit.
    channels: Arc<Mutex<Vec<Bytes>>>,
    tx: tokio::sync::mpsc::Sender<Reply>,
    rx: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Reply>>,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(task) = self.pubsub.watcher.lock().expect("pubsub lock").take() {
            task.abort();
        }
    }
}

struct State {
    session: Option<ClientSession>,
    wait: Duration,
}

impl Conn {
    /// A connection to `node` without a session.
    pub fn new(node: Arc<Node>) -> Conn {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        Conn {
            node,
            state: Mutex::new(State {
                session: None,
                wait: DEFAULT_WAIT,
            }),
            pubsub: PubSub {
                used: std::sync::atomic::AtomicBool::new(false),
                channels: Arc::new(Mutex::new(Vec::new())),
                tx,
                rx: tokio::sync::Mutex::new(rx),
                watcher: Mutex::new(None),
            },
        }
    }

    fn session(&self) -> Option<ClientSession> {
        self.state.lock().expect("session lock").session.clone()
    }

    fn set_session(&self, session: Option<ClientSession>) {
        self.state.lock().expect("session lock").session = session;
    }

    fn wait(&self) -> Duration {
        self.state.lock().expect("session lock").wait
    }
}

impl Handler for Conn {
    fn request_counter(&self) -> Option<&std::sync::atomic::AtomicU64> {
        self.node.request_counter()
    }

    fn refuse(&self, name: &[u8]) -> Option<Reply> {
        if name.eq_ignore_ascii_case(b"subscribe") || name.eq_ignore_ascii_case(b"unsubscribe") {
            return None;
        }
        self.node.refuse(name)
    }

    fn acl(&self) -> Option<Arc<server_kit::acl::Acl>> {
        self.node.config.acl.clone()
    }

    async fn next_push(&self) -> Reply {
        if !self.pubsub.used.load(std::sync::atomic::Ordering::Relaxed) {
            return std::future::pending().await;
        }
        let mut rx = self.pubsub.rx.lock().await;
        match rx.recv().await {
            Some(r) => r,
            // The connection holds a sender: never closed.
            None => std::future::pending().await,
        }
    }

    async fn run(
        &self,
        user: &str,
        commands: Vec<Queued>,
        exec: bool,
    ) -> Result<Vec<Reply>, Stopped> {
        let is_session = |(spec, _): &Queued| {
            [
                SESSION_COMMAND.name,
                WAITCOMMIT_COMMAND.name,
                SUBSCRIBE_COMMAND.name,
                UNSUBSCRIBE_COMMAND.name,
            ]
            .contains(&spec.name)
        };
        if self.session().is_none() && !commands.iter().any(is_session) {
            return self.node.run(user, commands, exec).await;
        }
        // In order: a BAYOU.SESSION command ends the run of commands before
        // it, which are checked and run together.
        let mut replies = Vec::with_capacity(commands.len());
        let mut segment = Vec::new();
        for command in commands {
            if is_session(&command) {
                replies.extend(
                    self.segment(user, std::mem::take(&mut segment), exec)
                        .await?,
                );
                replies.push(match command.0.name {
                    "bayou.waitcommit" => wait_commit(&self.node, &command.1).await?,
                    "subscribe" => self.subscribe(&command.1[1..]).await,
                    "unsubscribe" => self.unsubscribe(&command.1[1..]).await,
                    _ => self.session_command(&command.1).await?,
                });
            } else {
                segment.push(command);
            }
        }
        replies.extend(self.segment(user, segment, exec).await?);
        Ok(replies)
    }
}

/// What a query does, for the guarantees: the view it reads, if it reads,
/// and whether it writes. A write whose reply depends on the state it found
/// (`INCR`, `SETNX`, `DEL`'s count, `SET … GET`) reads too.
fn access(q: &Query) -> (Option<View>, bool) {
    match q {
        Query::Get(_, view) | Query::Scan(_, view) => (Some(*view), false),
        Query::Exists(_)
        | Query::MGet(_)
        | Query::Type(_)
        | Query::Strlen(_)
        | Query::Keys(_)
        | Query::KeyScan { .. }
        | Query::DbSize => (Some(View::Full), false),
        Query::Set(..) | Query::MSet(_) | Query::Write(_) | Query::FlushAll => (None, true),
        Query::SetWith { present, get, .. } => {
            ((present.is_some() || *get).then_some(View::Full), true)
        }
        Query::SetNx(..)
        | Query::GetDel(_)
        | Query::Incr(..)
        | Query::Append(..)
        | Query::Del(_) => (Some(View::Full), true),
        // Administration and introspection: outside the session.
        Query::Truncate(_)
        | Query::Summary
        | Query::Export(..)
        | Query::Import(_)
        | Query::Log
        | Query::Vv
        | Query::Status
        | Query::Info(_)
        | Query::Join(..)
        | Query::Handoff(_)
        | Query::Address(_)
        | Query::Retire(_)
        | Query::Members => (None, false),
    }
}

/// The vector describing the database a read in `view` sees. The full
/// view's is complete ([`bayou_core::Replica::complete_vv`]): a retired
/// server's entry is gone from the vector but every write of it is held,
/// so it counts as +∞ against a session's vectors ([P97 §4.3]).
fn observed(replica: &bayou_core::Replica, view: View) -> std::borrow::Cow<'_, VersionVector> {
    match view {
        View::Full => replica.complete_vv(),
        View::Committed => std::borrow::Cow::Borrowed(replica.commit_vv()),
    }
}

/// Checks every guarantee the queries need against the replica as it is.
fn check(
    session: &ClientSession,
    replica: &bayou_core::Replica,
    needs: &[(Option<View>, bool)],
) -> Result<(), NotYet> {
    for (read, write) in needs {
        if let Some(view) = read {
            session.check_read(&observed(replica, *view))?;
        }
        if *write {
            session.check_write(&replica.complete_vv())?;
        }
    }
    Ok(())
}

/// Runs `queries` of `session` at the locked replica if every guarantee
/// holds now, recording what they read and wrote; otherwise changes nothing.
/// The same rules as the simulator's mobile clients.
pub(crate) fn run_checked(
    locked: &mut Locked<'_>,
    session: &mut ClientSession,
    queries: Vec<Query>,
) -> Result<Vec<Reply>, NotYet> {
    let needs: Vec<(Option<View>, bool)> = queries.iter().map(access).collect();
    check(session, locked.replica(), &needs)?;
    let me: ServerId = locked.replica().id().clone();
    let mut replies = Vec::with_capacity(queries.len());
    for (q, (read, write)) in queries.into_iter().zip(needs) {
        let before = locked.replica().vv().get(&me);
        let reply = locked.query(q);
        if let Some(view) = read {
            session.record_read(&observed(locked.replica(), view));
        }
        if write {
            // The replica's own entry rose by the writes this query made
            // (the lock is held, so no other client's).
            let after = locked.replica().vv().get(&me);
            if after > before {
                session.record_write(&WriteId::new(after, me.clone()));
            }
        }
        replies.push(reply);
    }
    let replica = locked.replica();
    session.prune_pending(|id| committed(replica, id));
    Ok(replies)
}

impl Conn {
    /// Runs a run of the node's commands under the session (or without).
    /// `BAYOU.SYNC` runs after the queries before it, as the node runs it.
    async fn segment(
        &self,
        user: &str,
        commands: Vec<Queued>,
        exec: bool,
    ) -> Result<Vec<Reply>, Stopped> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        if self.session().is_none() {
            return self.node.run(user, commands, exec).await;
        }
        let author = self.node.author(user);
        let mut replies: Vec<Option<Reply>> = Vec::with_capacity(commands.len());
        let mut pending: Vec<(usize, Query)> = Vec::new();
        for (spec, args) in &commands {
            match classify(&self.node, spec, args) {
                Action::Now(r) => replies.push(Some(r)),
                Action::Query(q) => {
                    pending.push((replies.len(), q));
                    replies.push(None);
                }
                // Administration, refused inside MULTI: run as the node
                // runs it, after the queries before it.
                Action::Sync(_) => {
                    self.flush(&mut pending, &mut replies, &author).await?;
                    let mut r = self
                        .node
                        .run(user, vec![(*spec, args.clone())], false)
                        .await?;
                    replies.push(r.pop());
                }
            }
        }
        self.flush(&mut pending, &mut replies, &author).await?;
        Ok(replies
            .into_iter()
            .map(|r| r.expect("every command answered"))
            .collect())
    }

    /// Runs the pending queries under the session, checked together, and
    /// puts their replies (or `NOTYET` for each) in their slots.
    async fn flush(
        &self,
        pending: &mut Vec<(usize, Query)>,
        replies: &mut [Option<Reply>],
        author: &Option<Arc<str>>,
    ) -> Result<(), Stopped> {
        if pending.is_empty() {
            return Ok(());
        }
        let (at, queries): (Vec<usize>, Vec<Query>) = pending.drain(..).unzip();
        let Some(mut session) = self.session() else {
            let answers = self
                .node
                .queries(queries, author.clone())
                .await
                .map_err(Stopped::from)?;
            for (i, r) in at.into_iter().zip(answers) {
                replies[i] = Some(r);
            }
            return Ok(());
        };
        let answers = match self.run_or_pull(&mut session, queries, author).await? {
            Ok(answers) => {
                self.set_session(Some(session));
                answers
            }
            Err(not_yet) => vec![not_yet_reply(&not_yet); at.len()],
        };
        for (i, r) in at.into_iter().zip(answers) {
            replies[i] = Some(r);
        }
        Ok(())
    }

    /// Runs `queries` once the replica can serve the session, pulling from
    /// peers for up to the connection's wait.
    async fn run_or_pull(
        &self,
        session: &mut ClientSession,
        queries: Vec<Query>,
        author: &Option<Arc<str>>,
    ) -> Result<Result<Vec<Reply>, NotYet>, Stopped> {
        let deadline = Instant::now() + self.wait();
        loop {
            let mut trial = session.clone();
            let qs = queries.clone();
            let outcome = self
                .node
                .locked_as(author.clone(), |l| run_checked(l, &mut trial, qs))
                .await
                .map_err(Stopped::from)?;
            match outcome {
                Ok(replies) => {
                    *session = trial;
                    return Ok(Ok(replies));
                }
                Err(not_yet) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || self.node.is_offline() || self.node.peers().is_empty() {
                        return Ok(Err(not_yet));
                    }
                    pull(&self.node, left).await;
                    // Peers that are down answer at once: do not spin.
                    let pause = Duration::from_millis(20)
                        .min(deadline.saturating_duration_since(Instant::now()));
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    async fn session_command(&self, args: &[Bytes]) -> Result<Reply, Stopped> {
        let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
        let rest = &args[2..];
        if sub == "pending" && rest.is_empty() {
            let Some(mut session) = self.session() else {
                return Ok(no_session());
            };
            let listed = self
                .node
                .locked(|l| {
                    let replica = l.replica();
                    session.prune_pending(|id| committed(replica, id));
                    session
                        .pending()
                        .iter()
                        .map(|id| {
                            let here = match replica.status(id) {
                                WriteStatus::Unknown => "not at this replica yet",
                                _ => "tentative",
                            };
                            Reply::Array(vec![Reply::text(id.to_string()), Reply::text(here)])
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .map_err(Stopped::from)?;
            let dropped = session.pending_dropped();
            self.set_session(Some(session));
            return Ok(Reply::map([
                ("tentative", Reply::Array(listed)),
                ("older_untracked", Reply::Int(dropped as i64)),
            ]));
        }
        Ok(match sub.as_str() {
            "open" => {
                let mut guarantees = Guarantees::NONE;
                for a in rest {
                    let text = String::from_utf8_lossy(a);
                    if text.eq_ignore_ascii_case("all") {
                        guarantees = Guarantees::ALL;
                    } else if text.eq_ignore_ascii_case("none") {
                    } else {
                        match Guarantee::parse(&text) {
                            Some(g) => guarantees = guarantees.with(g),
                            None => {
                                return Ok(Reply::err(format!(
                                    "unknown guarantee {text:?}: BAYOU.SESSION OPEN [RYW] [MR] [WFR] [MW] [ALL]"
                                )));
                            }
                        }
                    }
                }
                let session = ClientSession::new(guarantees);
                let token = session.token();
                self.set_session(Some(session));
                Reply::text(token)
            }
            "use" if rest.len() == 1 => {
                let text = String::from_utf8_lossy(&rest[0]);
                match ClientSession::from_token(text.trim()) {
                    Ok(session) => {
                        self.set_session(Some(session));
                        Reply::ok()
                    }
                    Err(e) => Reply::err(format!("bad session token: {e}")),
                }
            }
            "token" if rest.is_empty() => match self.session() {
                Some(s) => Reply::text(s.token()),
                None => no_session(),
            },
            "info" if rest.is_empty() => match self.session() {
                Some(s) => Reply::map([
                    ("guarantees", Reply::text(s.guarantees().to_string())),
                    ("read_set", Reply::text(vv_text(s.read_set()))),
                    ("write_set", Reply::text(vv_text(s.write_set()))),
                    ("wait_ms", Reply::Int(self.wait().as_millis() as i64)),
                ]),
                None => no_session(),
            },
            "wait" if rest.len() == 1 => {
                match std::str::from_utf8(&rest[0])
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok())
                {
                    Some(ms) if ms <= MAX_WAIT_MS => {
                        self.state.lock().expect("session lock").wait = Duration::from_millis(ms);
                        Reply::ok()
                    }
                    _ => Reply::err(format!(
                        "BAYOU.SESSION WAIT takes milliseconds from 0 to {MAX_WAIT_MS}"
                    )),
                }
            }
            "close" if rest.is_empty() => {
                self.set_session(None);
                Reply::ok()
            }
            _ => Reply::err(
                "syntax error: BAYOU.SESSION OPEN [RYW] [MR] [WFR] [MW] [ALL] | USE token | TOKEN | INFO | PENDING | WAIT ms | CLOSE",
            ),
        })
    }
}

/// Whether `id` is committed at `replica` (discarded by truncation
/// counts: only committed writes are).
fn committed(replica: &bayou_core::Replica, id: &WriteId) -> bool {
    matches!(
        replica.status(id),
        WriteStatus::Committed(_) | WriteStatus::Truncated
    )
}

/// `stamp:server`, as `BAYOU.WRITE` and `BAYOU.LOG` print a write id.
fn parse_write_id(text: &[u8]) -> Option<WriteId> {
    let text = std::str::from_utf8(text).ok()?;
    let (stamp, server) = text.split_once(':')?;
    let stamp = stamp.parse().ok().filter(|&s| s > 0)?;
    Some(WriteId::new(stamp, ServerId::new(server).ok()?))
}

/// `BAYOU.WAITCOMMIT stamp:server [timeout-ms]`: waits until the write is
/// committed here, pulling from the primary meanwhile, and replies with its
/// CSN and the outcome of its (final) execution.
async fn wait_commit(node: &Arc<Node>, args: &[Bytes]) -> Result<Reply, Stopped> {
    let usage = "syntax error: BAYOU.WAITCOMMIT stamp:server [timeout-ms]";
    let Some(id) = parse_write_id(&args[1]) else {
        return Ok(Reply::err(format!(
            "{usage}: not a write id {:?}",
            String::from_utf8_lossy(&args[1])
        )));
    };
    let ms = match args.get(2) {
        None if args.len() == 2 => WAITCOMMIT_DEFAULT_MS,
        Some(t) if args.len() == 3 => {
            match std::str::from_utf8(t).ok().and_then(|t| t.parse().ok()) {
                Some(ms) if ms <= WAITCOMMIT_MAX_MS => ms,
                _ => {
                    return Ok(Reply::err(format!(
                        "{usage}: the timeout is milliseconds from 0 to {WAITCOMMIT_MAX_MS}"
                    )));
                }
            }
        }
        _ => return Ok(Reply::err(usage)),
    };
    let deadline = Instant::now() + Duration::from_millis(ms);
    loop {
        // The primary may change (a handoff) while this waits.
        let primary = node.primary();
        let (status, outcome, osn) = node
            .locked(|l| {
                let r = l.replica();
                (r.status(&id), r.outcome(&id), r.osn())
            })
            .await
            .map_err(Stopped::from)?;
        let done = match status {
            WriteStatus::Committed(csn) => Some(Reply::map([
                ("id", Reply::text(id.to_string())),
                ("csn", Reply::Int(csn as i64)),
                ("outcome", Reply::text(outcome.to_string())),
            ])),
            // Committed and discarded from the log: its CSN and outcome
            // are no longer known here, only that it committed by the OSN.
            WriteStatus::Truncated => Some(Reply::map([
                ("id", Reply::text(id.to_string())),
                ("csn", Reply::Null),
                (
                    "outcome",
                    Reply::text("unknown: discarded by log truncation"),
                ),
                ("committed_by_csn", Reply::Int(osn as i64)),
            ])),
            WriteStatus::Tentative | WriteStatus::Unknown => None,
        };
        if let Some(reply) = done {
            return Ok(reply);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let why = if status == WriteStatus::Unknown {
                "has not reached this replica"
            } else {
                "is still tentative here"
            };
            return Ok(Reply::Error(format!(
                "TIMEOUT write {id} {why} after {ms} ms; ask again, or ask the replica that accepted it"
            )));
        }
        if let Some(primary) = primary
            && primary != node.config.id
            && !node.is_offline()
            && node.peer_addr(&primary).is_some()
        {
            let _ = tokio::time::timeout(left, crate::peer::sync_with(node, &primary)).await;
        }
        let pause =
            Duration::from_millis(20).min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(pause).await;
    }
}

impl Conn {
    /// `SUBSCRIBE`: the first confirmation is the reply, the others follow
    /// as pushes, as Redis sends them.
    async fn subscribe(&self, channels: &[Bytes]) -> Reply {
        self.pubsub
            .used
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut confirmations = Vec::new();
        for channel in channels {
            let count = {
                let mut subscribed = self.pubsub.channels.lock().expect("pubsub lock");
                if !subscribed.contains(channel) {
                    subscribed.push(channel.clone());
                }
                subscribed.len()
            };
            if watched(channel) {
                let mut watcher = self.pubsub.watcher.lock().expect("pubsub lock");
                if watcher.is_none() {
                    let (node, tx) = (self.node.clone(), self.pubsub.tx.clone());
                    let channels = self.pubsub.channels.clone();
                    *watcher = Some(tokio::spawn(watch_commits(node, channels, tx)));
                }
            }
            confirmations.push(Reply::Push(vec![
                Reply::text("subscribe"),
                Reply::Bulk(Some(channel.clone())),
                Reply::Int(count as i64),
            ]));
        }
        let mut confirmations = confirmations.into_iter();
        let first = confirmations.next().expect("arity: at least one channel");
        for c in confirmations {
            let _ = self.pubsub.tx.send(c).await;
        }
        first
    }

    /// `UNSUBSCRIBE [channel ...]` (none: all).
    async fn unsubscribe(&self, channels: &[Bytes]) -> Reply {
        let names: Vec<Bytes> = if channels.is_empty() {
            self.pubsub.channels.lock().expect("pubsub lock").clone()
        } else {
            channels.to_vec()
        };
        let mut confirmations = Vec::new();
        for channel in names {
            let count = {
                let mut subscribed = self.pubsub.channels.lock().expect("pubsub lock");
                subscribed.retain(|c| *c != channel);
                let listening = subscribed.iter().any(watched);
                let mut watcher = self.pubsub.watcher.lock().expect("pubsub lock");
                if let Some(task) = watcher.take_if(|_| !listening) {
                    task.abort();
                }
                subscribed.len()
            };
            confirmations.push(Reply::Push(vec![
                Reply::text("unsubscribe"),
                Reply::Bulk(Some(channel)),
                Reply::Int(count as i64),
            ]));
        }
        if confirmations.is_empty() {
            return Reply::Push(vec![Reply::text("unsubscribe"), Reply::Null, Reply::Int(0)]);
        }
        let mut confirmations = confirmations.into_iter();
        let first = confirmations.next().expect("not empty");
        for c in confirmations {
            let _ = self.pubsub.tx.send(c).await;
        }
        first
    }
}

/// Whether `channel` is one the commit watcher serves.
fn watched(channel: &Bytes) -> bool {
    WATCHED_CHANNELS
        .iter()
        .any(|c| channel.as_ref() == c.as_bytes())
}

/// The one watcher of a connection's commit channels. Finds every write
/// this replica learns is committed from now on, once that is durable here,
/// in CSN order, and publishes, on the channels subscribed at that moment:
/// on `bayou:commits` a `<csn> <stamp:server> <outcome>` message for each;
/// on `bayou:outcomes` a `<csn> <stamp:server> tentative <old> committed
/// <new>` message for each whose outcome at commit differs from its last
/// tentative execution here ([`bayou_core::Replica::changed_outcome`]).
/// Commits that arrived inside a full-state transfer (no writes, [P97
/// §3.3]) or were discarded by truncation before they were seen come on
/// `bayou:commits` as one `<first>-<last> (full-state transfer or
/// truncation: no write ids)` message.
async fn watch_commits(
    node: Arc<Node>,
    channels: Arc<Mutex<Vec<Bytes>>>,
    tx: tokio::sync::mpsc::Sender<Reply>,
) {
    let Ok(mut next) = node.locked(|l| l.replica().csn() + 1).await else {
        return;
    };
    loop {
        tokio::time::sleep(COMMIT_POLL).await;
        // `locked` returns once everything queued so far is durable.
        let Ok((messages, after)) = node
            .locked(|l| {
                let r = l.replica();
                let mut messages = Vec::new();
                let mut at = next;
                if r.csn() < at {
                    return (messages, at);
                }
                let (commits, outcomes) = {
                    let subscribed = channels.lock().expect("pubsub lock");
                    let on = |name: &str| subscribed.iter().any(|c| c.as_ref() == name.as_bytes());
                    (on(COMMITS_CHANNEL), on(OUTCOMES_CHANNEL))
                };
                if at <= r.osn() {
                    if commits {
                        messages.push((
                            COMMITS_CHANNEL,
                            format!(
                                "{at}-{} (full-state transfer or truncation: no write ids)",
                                r.osn()
                            ),
                        ));
                    }
                    at = r.osn() + 1;
                }
                let skip = (at - r.osn() - 1) as usize;
                for (csn, w) in r.committed().skip(skip) {
                    let outcome = r.outcome(&w.id);
                    if let Some(before) = r.changed_outcome(&w.id).filter(|_| outcomes) {
                        messages.push((
                            OUTCOMES_CHANNEL,
                            format!("{csn} {} tentative {before} committed {outcome}", w.id),
                        ));
                    }
                    if commits {
                        messages.push((COMMITS_CHANNEL, format!("{csn} {} {outcome}", w.id)));
                    }
                    at = csn + 1;
                }
                (messages, at)
            })
            .await
        else {
            return;
        };
        next = after;
        for (channel, m) in messages {
            let push = Reply::Push(vec![
                Reply::text("message"),
                Reply::text(channel),
                Reply::text(m),
            ]);
            if tx.send(push).await.is_err() {
                return;
            }
        }
    }
}

fn no_session() -> Reply {
    Reply::err("no session on this connection: BAYOU.SESSION OPEN or BAYOU.SESSION USE first")
}

/// `-NOTYET RYW: this replica lacks 17:A (has 12:A); try another replica or retry`.
pub fn not_yet_reply(not_yet: &NotYet) -> Reply {
    Reply::Error(format!("NOTYET {not_yet}; try another replica or retry"))
}

/// A version vector as `A:12,B:13` (server, then stamp), as `BAYOU.VV`
/// prints it.
fn vv_text(vv: &VersionVector) -> String {
    vv.iter()
        .map(|(s, t)| format!("{s}:{t}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Anti-entropy with every peer at once, until the first session
/// completes (or all fail, or `limit` passes): what a replica does when a
/// session needs writes it lacks. The caller checks again; sessions still
/// under way are cut off, which anti-entropy tolerates ([P97 §3.4]).
async fn pull(node: &Arc<Node>, limit: Duration) {
    let mut set = tokio::task::JoinSet::new();
    for peer in node.peers().into_keys() {
        let node = node.clone();
        set.spawn(async move { crate::peer::sync_with(&node, &peer).await.is_ok() });
    }
    let _ = tokio::time::timeout(limit, async {
        while let Some(done) = set.join_next().await {
            if matches!(done, Ok(true)) {
                break;
            }
        }
    })
    .await;
    set.abort_all();
}
