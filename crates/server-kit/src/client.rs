//! The pipelined client loop both servers run for every Redis connection:
//! [`serve_client`] reads requests with the limits ([`Limits`],
//! [`MAX_QUERY_BUFFER_BYTES`], at most [`MAX_PIPELINE`] requests a round),
//! feeds each to [`Client::step`] (connection commands, arity and
//! unknown-command errors, `MULTI` queueing), hands the node's own commands
//! to its [`Handler`], and encodes every reply in the protocol (RESP2 or
//! RESP3) the connection spoke when it sent the request.
//!
//! A *round* is every complete request already received, up to
//! [`MAX_PIPELINE`]: its node commands go to [`Handler::run`] together, so
//! a node can serve a pipeline in one step (Bayou: one replica query and
//! one durable batch; Chord: distinct keys concurrently). Connection
//! commands never touch a node's data, so they are answered at once. An
//! `EXEC` first runs what the round queued before it, then the
//! transaction's node commands in one [`Handler::run`] call with `exec`
//! set; the reply is the array of the transaction's replies, in order.
//! What `EXEC` guarantees beyond "in order" is the node's to say.
//!
//! Users ([`crate::acl`]): the loop starts each connection with the
//! node's users file ([`Handler::acl`]); [`Client::step`] refuses what the
//! connection's user may not do, and [`Handler::run`] is told the user's
//! name, so a node can record who wrote what. Commands sent as different
//! users in one round (an `AUTH` between them) go to [`Handler::run`] in
//! separate calls.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::debug;

use crate::acl::Acl;
use crate::command::{CommandSpec, CommandTable};
use crate::conn::{Client, Queued, ServerInfo, Step};
use crate::limits::{ClientLimits, OUTPUT_CHUNK_BYTES};
use crate::resp::{self, Limits, Protocol, Reply};

/// Most requests handled in one round for one connection.
pub const MAX_PIPELINE: usize = 1024;

/// Most bytes a client may have buffered without completing a request;
/// beyond it the connection gets [`QUERY_BUFFER_EXCEEDED`] and is closed.
pub const MAX_QUERY_BUFFER_BYTES: usize = 128 << 20;

/// The error text for a client over [`MAX_QUERY_BUFFER_BYTES`].
pub const QUERY_BUFFER_EXCEEDED: &str = "Protocol error: query buffer limit exceeded";

/// The node is stopping: the client loop closes the connection without
/// answering the rest of the round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the node is stopping")]
pub struct Stopped;

/// What a server is, for the client loop: its command table, who it is
/// (for `HELLO`), and the request limits.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    /// Every command a client may send (connection commands included).
    pub table: CommandTable,
    /// The server's name and version.
    pub info: ServerInfo,
    /// Request parsing limits.
    pub limits: Limits,
}

impl Service {
    /// Server `name` at `version` with the kit's connection commands and
    /// its own `commands`, and the default limits.
    pub const fn new(
        name: &'static str,
        version: &'static str,
        table: &'static [&'static [CommandSpec]],
    ) -> Service {
        Service {
            table: CommandTable::new(table),
            info: ServerInfo { name, version },
            limits: Limits::DEFAULT,
        }
    }
}

/// A node's side of the client loop: it runs the commands of its table
/// that are not connection commands.
pub trait Handler: Send + Sync {
    /// The node's counter of client requests, which the loop advances by
    /// every request it reads; `None` for no counter.
    fn request_counter(&self) -> Option<&AtomicU64> {
        None
    }

    /// An error for a command the node knows and refuses outright (a Redis
    /// command it does not support, say why), before the table lookup;
    /// `None` to look it up as usual. `name` is as the client sent it.
    fn refuse(&self, _name: &[u8]) -> Option<Reply> {
        None
    }

    /// The users file clients authenticate against; `None` (the default)
    /// for none: every client is the `default` user and may run every
    /// command. Asked once per connection.
    fn acl(&self) -> Option<Arc<Acl>> {
        None
    }

    /// Runs `commands` (already checked against the table and the user's
    /// permissions) for the user named `user` and returns one reply for
    /// each, in order. `exec` is set for the commands of one `EXEC`.
    /// `Err(Stopped)` closes the connection.
    fn run(
        &self,
        user: &str,
        commands: Vec<Queued>,
        exec: bool,
    ) -> impl Future<Output = Result<Vec<Reply>, Stopped>> + Send;

    /// The next out-of-band message for this connection (a pub/sub
    /// message), awaited while the connection waits for requests and sent
    /// as soon as it comes, in the connection's protocol (a RESP3 push, an
    /// array in RESP2). Never, by default. Must be cancel-safe.
    fn next_push(&self) -> impl Future<Output = Reply> + Send {
        std::future::pending()
    }
}

/// Serves one Redis client until it quits, hangs up, breaks the protocol
/// or the node stops; `buf` holds the bytes already read. I/O errors are
/// returned for the caller to log. No connection limits: see
/// [`serve_client_limited`].
pub async fn serve_client<S, H>(
    stream: &mut S,
    buf: BytesMut,
    service: &Service,
    handler: &H,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    serve_client_limited(stream, buf, service, handler, &ClientLimits::NONE).await
}

/// [`serve_client`] with the per-connection [`ClientLimits`]: a client idle
/// for [`ClientLimits::idle_timeout`] is closed; replies are written in
/// chunks of [`OUTPUT_CHUNK_BYTES`] and a write blocked longer than
/// [`ClientLimits::write_timeout`], or pending output over
/// [`ClientLimits::output_limit_bytes`], ends the connection with an error
/// (`TimedOut`, `OutOfMemory`) for the caller to log.
pub async fn serve_client_limited<S, H>(
    stream: &mut S,
    mut buf: BytesMut,
    service: &Service,
    handler: &H,
    limits: &ClientLimits,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    H: Handler,
{
    let mut client = Client::with_acl(handler.acl());
    let mut out = BytesMut::with_capacity(16 << 10);
    loop {
        let mut requests = Vec::new();
        let mut error = None;
        while requests.len() < MAX_PIPELINE {
            match resp::parse(&mut buf, &service.limits) {
                Ok(Some(args)) if args.is_empty() => {}
                Ok(Some(args)) => requests.push(args),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let got_any = !requests.is_empty();
        let mut quit = false;
        if got_any {
            if let Some(c) = handler.request_counter() {
                c.fetch_add(requests.len() as u64, Ordering::Relaxed);
            }
            let replies = match round(&mut client, requests, service, handler).await {
                Ok(r) => r,
                Err(Stopped) => return Ok(()),
            };
            for (r, protocol, q) in replies {
                r.encode_as(protocol, &mut out);
                drop(r);
                quit |= q;
                check_output(&out, limits)?;
                if out.len() >= OUTPUT_CHUNK_BYTES {
                    send(stream, &mut out, limits).await?;
                }
            }
        }
        if let Some(e) = &error {
            Reply::err(e).encode_as(client.protocol, &mut out);
        }
        if !out.is_empty() {
            send(stream, &mut out, limits).await?;
        }
        if quit || error.is_some() {
            return Ok(());
        }
        if buf.len() > MAX_QUERY_BUFFER_BYTES {
            Reply::err(QUERY_BUFFER_EXCEEDED).encode(&mut out);
            send(stream, &mut out, limits).await?;
            return Ok(());
        }
        if !got_any {
            buf.reserve(64 << 10);
            let push = tokio::select! {
                read = stream.read_buf(&mut buf) => {
                    if read? == 0 {
                        return Ok(());
                    }
                    None
                }
                push = handler.next_push() => Some(push),
                _ = sleep_for(limits.idle_timeout) => {
                    debug!("closing a client idle for {:?}", limits.idle_timeout.unwrap_or_default());
                    return Ok(());
                }
            };
            if let Some(push) = push {
                push.encode_as(client.protocol, &mut out);
                check_output(&out, limits)?;
                send(stream, &mut out, limits).await?;
            }
        }
    }
}

/// Sleeps for `d`, or forever for `None`.
async fn sleep_for(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Writes `out` to the client and clears it, within the write timeout.
async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    out: &mut BytesMut,
    limits: &ClientLimits,
) -> std::io::Result<()> {
    let write = stream.write_all(out);
    match limits.write_timeout {
        None => write.await?,
        Some(t) => tokio::time::timeout(t, write).await.map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the client did not read its replies for {} ms (client write timeout)",
                    t.as_millis()
                ),
            )
        })??,
    }
    out.clear();
    Ok(())
}

/// An error when the pending output is over the output limit.
fn check_output(out: &BytesMut, limits: &ClientLimits) -> std::io::Result<()> {
    if limits.output_limit_bytes > 0 && out.len() > limits.output_limit_bytes {
        return Err(std::io::Error::new(
            std::io::ErrorKind::OutOfMemory,
            format!(
                "{} bytes of replies pending, over the client output limit of {} bytes",
                out.len(),
                limits.output_limit_bytes
            ),
        ));
    }
    Ok(())
}

/// One reply slot: the reply (once known), the protocol to encode it in,
/// and whether the connection closes after it (`QUIT`).
type Slot = (Option<Reply>, Protocol, bool);

/// Answers one round of requests, in order.
async fn round<H: Handler>(
    client: &mut Client,
    requests: Vec<Vec<bytes::Bytes>>,
    service: &Service,
    handler: &H,
) -> Result<Vec<(Reply, Protocol, bool)>, Stopped> {
    let mut slots: Vec<Slot> = Vec::with_capacity(requests.len());
    let mut pending: Vec<(usize, Queued)> = Vec::new();
    // The user the pending commands were sent as, and the authentication
    // that made it: an AUTH in the round ends the batch before it.
    let mut epoch = client.auth_epoch();
    let mut user = current_user(client);
    for args in requests {
        let protocol = client.protocol;
        if let Some(refused) = handler.refuse(&args[0]) {
            slots.push((Some(client.refuse(refused)), protocol, false));
            continue;
        }
        match client.step(args, &service.table, &service.info) {
            Step::Reply(r) => {
                slots.push((Some(r), client.protocol, false));
                // Only a connection command (answered here) changes the
                // user: the commands before it run as the user they were
                // sent as. Checked here, not for every node command.
                if client.auth_epoch() != epoch {
                    flush(handler, &user, &mut pending, &mut slots).await?;
                    (epoch, user) = (client.auth_epoch(), current_user(client));
                }
            }
            Step::Run(spec, args) => {
                pending.push((slots.len(), (spec, args)));
                slots.push((None, protocol, false));
            }
            Step::Exec(queued) => {
                flush(handler, &user, &mut pending, &mut slots).await?;
                (epoch, user) = (client.auth_epoch(), current_user(client));
                let reply = exec(client, queued, service, handler).await?;
                slots.push((Some(reply), client.protocol, false));
            }
            Step::Quit => {
                slots.push((Some(Reply::ok()), protocol, true));
                break;
            }
        }
    }
    flush(handler, &user, &mut pending, &mut slots).await?;
    Ok(slots
        .into_iter()
        .map(|(r, p, q)| (r.expect("every request answered"), p, q))
        .collect())
}

/// The connection's user now. A node command never runs unauthenticated
/// ([`Client::step`] refuses it), so the fallback is never used for one.
fn current_user(client: &Client) -> Arc<str> {
    client
        .user()
        .cloned()
        .unwrap_or_else(|| Arc::from(crate::conn::DEFAULT_USER))
}

/// Runs the pending node commands as `user` and puts their replies in
/// their slots.
async fn flush<H: Handler>(
    handler: &H,
    user: &str,
    pending: &mut Vec<(usize, Queued)>,
    slots: &mut [Slot],
) -> Result<(), Stopped> {
    if pending.is_empty() {
        return Ok(());
    }
    let (at, commands): (Vec<usize>, Vec<Queued>) = pending.drain(..).unzip();
    let replies = handler.run(user, commands, false).await?;
    debug_assert_eq!(replies.len(), at.len(), "one reply per command");
    for (i, r) in at.into_iter().zip(replies) {
        slots[i].0 = Some(r);
    }
    Ok(())
}

/// `EXEC`: connection commands answered here, the node's in one
/// [`Handler::run`] call; the array of replies in order.
async fn exec<H: Handler>(
    client: &mut Client,
    queued: Vec<Queued>,
    service: &Service,
    handler: &H,
) -> Result<Reply, Stopped> {
    let mut replies: Vec<Option<Reply>> = Vec::with_capacity(queued.len());
    let mut at = Vec::new();
    let mut commands = Vec::new();
    for (spec, args) in queued {
        if let Some(denied) = client.recheck(spec, &args) {
            replies.push(Some(denied));
            continue;
        }
        match client.connection_command(spec, &args, &service.table, &service.info) {
            Some(r) => replies.push(Some(r)),
            None => {
                at.push(replies.len());
                replies.push(None);
                commands.push((spec, args));
            }
        }
    }
    if !commands.is_empty() {
        let user = current_user(client);
        let answers = handler.run(&user, commands, true).await?;
        for (i, r) in at.into_iter().zip(answers) {
            replies[i] = Some(r);
        }
    }
    Ok(Reply::Array(
        replies
            .into_iter()
            .map(|r| r.expect("every queued command answered"))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::CONNECTION_COMMANDS;

    const SPECS: &[CommandSpec] = &[
        CommandSpec::new("get", 2, &["readonly"], "GET key").keys(1, 1, 1),
        CommandSpec::new("expire", 3, &["write"], "EXPIRE key s").keys(1, 1, 1),
    ];
    const SERVICE: Service = Service::new("test", "1", &[CONNECTION_COMMANDS, SPECS]);

    /// Answers `GET k` with `k`, and counts the `run` calls.
    struct Echo(std::sync::atomic::AtomicUsize);

    impl Handler for Echo {
        fn refuse(&self, name: &[u8]) -> Option<Reply> {
            name.eq_ignore_ascii_case(b"expire")
                .then(|| Reply::err("'EXPIRE' is not supported"))
        }
        async fn run(
            &self,
            _user: &str,
            commands: Vec<Queued>,
            _exec: bool,
        ) -> Result<Vec<Reply>, Stopped> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(commands
                .into_iter()
                .map(|(_, args)| Reply::bulk(args[1].clone()))
                .collect())
        }
    }

    async fn talk(input: &[u8]) -> (String, usize) {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(input).await.unwrap();
        a.shutdown().await.unwrap();
        let h = Echo(Default::default());
        serve_client(&mut b, BytesMut::new(), &SERVICE, &h)
            .await
            .unwrap();
        drop(b);
        let mut out = Vec::new();
        a.read_to_end(&mut out).await.unwrap();
        (String::from_utf8(out).unwrap(), h.0.into_inner())
    }

    #[tokio::test]
    async fn a_pipeline_is_one_run_and_replies_in_order() {
        let (out, runs) =
            talk(b"GET a\r\nPING\r\nGET b\r\nGET\r\nEXPIRE k 1\r\nQUIT\r\nGET c\r\n").await;
        assert_eq!(
            out,
            "$1\r\na\r\n+PONG\r\n$1\r\nb\r\n-ERR wrong number of arguments for 'get' command\r\n\
             -ERR 'EXPIRE' is not supported\r\n+OK\r\n"
        );
        assert_eq!(runs, 1);
    }

    #[tokio::test]
    async fn hello_3_switches_the_encoding_and_exec_answers_an_array() {
        let (out, runs) =
            talk(b"HELLO 3\r\nMULTI\r\nGET a\r\nCLIENT SETNAME me\r\nEXEC\r\nCLIENT GETNAME\r\n")
                .await;
        assert!(out.starts_with('%'), "{out}");
        assert!(
            out.ends_with("+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n$1\r\na\r\n+OK\r\n$2\r\nme\r\n"),
            "{out}"
        );
        assert_eq!(runs, 1);
    }

    /// Serves `input` on a pipe of `pipe` bytes whose other end never
    /// reads nor closes, with `limits`.
    async fn unread(input: Vec<u8>, pipe: usize, limits: ClientLimits) -> std::io::Result<()> {
        let (_a, mut b) = tokio::io::duplex(pipe);
        let h = Echo(Default::default());
        let serve = serve_client_limited(&mut b, BytesMut::from(&input[..]), &SERVICE, &h, &limits);
        tokio::time::timeout(Duration::from_secs(5), serve)
            .await
            .expect("the limits end the connection")
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_is_closed_after_the_write_timeout() {
        let value = "x".repeat(10_000);
        let input = format!("GET {value}\r\n").repeat(100).into_bytes();
        let limits = ClientLimits {
            write_timeout: Some(Duration::from_millis(100)),
            ..ClientLimits::NONE
        };
        let e = unread(input, 4096, limits).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    }

    #[tokio::test]
    async fn a_reply_over_the_output_limit_closes_the_connection() {
        let input = format!("GET {}\r\n", "x".repeat(2000)).into_bytes();
        let limits = ClientLimits {
            output_limit_bytes: 1000,
            ..ClientLimits::NONE
        };
        let e = unread(input, 1 << 20, limits).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::OutOfMemory, "{e}");
    }

    #[tokio::test]
    async fn an_idle_client_is_closed_after_the_idle_timeout() {
        let limits = ClientLimits {
            idle_timeout: Some(Duration::from_millis(50)),
            ..ClientLimits::NONE
        };
        unread(b"PING\r\n".to_vec(), 1 << 20, limits).await.unwrap();
    }

    #[tokio::test]
    async fn a_protocol_error_is_answered_then_the_connection_closes() {
        let (out, _) = talk(b"PING\r\n*1\r\n$-5\r\n").await;
        assert!(out.starts_with("+PONG\r\n-ERR Protocol error"), "{out}");
    }

    /// Answers every command with the user it ran as, and records the
    /// users of each `run` call.
    struct Who(Arc<Acl>, std::sync::Mutex<Vec<Vec<String>>>);

    impl Handler for Who {
        fn acl(&self) -> Option<Arc<Acl>> {
            Some(self.0.clone())
        }
        async fn run(
            &self,
            user: &str,
            commands: Vec<Queued>,
            _exec: bool,
        ) -> Result<Vec<Reply>, Stopped> {
            self.1
                .lock()
                .unwrap()
                .push(commands.iter().map(|_| user.to_string()).collect());
            Ok(commands.iter().map(|_| Reply::text(user)).collect())
        }
    }

    #[tokio::test]
    async fn commands_run_as_the_user_they_were_sent_as_within_one_round() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.acl");
        // "pw", hashed.
        let pw = "30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4";
        std::fs::write(
            &path,
            format!("user default on nopass ~* +@read\nuser app on #{pw} ~* +@read"),
        )
        .unwrap();
        let acl = Acl::load(&path, SERVICE.table).unwrap();
        let h = Who(acl, Default::default());
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        a.write_all(b"GET a\r\nGET b\r\nAUTH app nope\r\nGET c\r\nAUTH app pw\r\nGET d\r\n")
            .await
            .unwrap();
        a.shutdown().await.unwrap();
        serve_client(&mut b, BytesMut::new(), &SERVICE, &h)
            .await
            .unwrap();
        drop(b);
        let mut out = Vec::new();
        a.read_to_end(&mut out).await.unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "$7\r\ndefault\r\n$7\r\ndefault\r\n\
             -WRONGPASS invalid username-password pair or user is disabled.\r\n\
             $7\r\ndefault\r\n+OK\r\n$3\r\napp\r\n"
        );
        assert_eq!(
            h.1.into_inner().unwrap(),
            vec![vec!["default".to_string(); 3], vec!["app".to_string()],]
        );
    }
}
