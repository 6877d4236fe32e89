//! A client connection's own state and the commands that act only on it,
//! the same on every server: `HELLO`, `CLIENT …`, `SELECT`, `PING`, `ECHO`,
//! `COMMAND`, and the queueing half of `MULTI`/`EXEC`/`DISCARD`.
//!
//! A server feeds each request to [`Client::step`], which either answers it
//! or tells the server to run it ([`Step::Run`]), or to run a whole queued
//! transaction ([`Step::Exec`]) and answer with one array.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::command::{CommandSpec, CommandTable, parse_i64, wrong_arity};
use crate::resp::{Protocol, Reply};

/// Ids handed to connections, unique within the process, as `CLIENT ID`
/// reports them.
static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// The connection commands [`Client::step`] answers itself; a server puts
/// them in its [`CommandTable`] beside its own.
pub const CONNECTION_COMMANDS: &[CommandSpec] = &[
    CommandSpec::new(
        "ping",
        -1,
        &["fast", "connection"],
        "PING [message]: PONG, or the message",
    ),
    CommandSpec::new(
        "echo",
        2,
        &["fast", "connection"],
        "ECHO message: the message",
    ),
    CommandSpec::new(
        "hello",
        -1,
        &["fast", "no_auth", "connection"],
        "HELLO [2|3 [AUTH user pass] [SETNAME name]]: switch protocol; the server's details",
    ),
    CommandSpec::new(
        "client",
        -2,
        &["loading", "stale", "connection"],
        "CLIENT ID|GETNAME|SETNAME name|SETINFO LIB-NAME|LIB-VER value|INFO|LIST",
    ),
    CommandSpec::new(
        "select",
        2,
        &["loading", "stale", "fast", "connection"],
        "SELECT 0: there is one database, number 0",
    ),
    CommandSpec::new(
        "command",
        -1,
        &["loading", "stale", "connection"],
        "COMMAND [COUNT|LIST|INFO name...|DOCS [name...]]: this table",
    ),
    CommandSpec::new(
        "multi",
        1,
        &["fast", "no_multi", "connection"],
        "MULTI: queue the following commands until EXEC",
    ),
    CommandSpec::new(
        "exec",
        1,
        &["no_multi", "connection"],
        "EXEC: run the queued commands together",
    ),
    CommandSpec::new(
        "discard",
        1,
        &["fast", "no_multi", "connection"],
        "DISCARD: drop the queued commands",
    ),
    CommandSpec::new(
        "quit",
        -1,
        &["fast", "no_auth", "connection"],
        "QUIT: close the connection",
    ),
];

/// Who the server is, for `HELLO`.
#[derive(Debug, Clone, Copy)]
pub struct ServerInfo {
    /// E.g. `bayou`.
    pub name: &'static str,
    /// The server's version.
    pub version: &'static str,
}

/// A command checked against the table, with its arguments.
pub type Queued = (&'static CommandSpec, Vec<Bytes>);

/// What the server does with a request after [`Client::step`].
#[derive(Debug)]
pub enum Step {
    /// Send this reply; nothing else to do.
    Reply(Reply),
    /// Run the command (already checked against the table) and send its
    /// reply.
    Run(&'static CommandSpec, Vec<Bytes>),
    /// `EXEC`: run these queued commands together and reply with an array
    /// of their replies, in order. Each may itself be a connection command:
    /// pass it through [`Client::connection_command`] first.
    Exec(Vec<Queued>),
    /// `QUIT`: reply `+OK` and close.
    Quit,
}

/// A client connection's state.
#[derive(Debug)]
pub struct Client {
    /// The protocol replies are encoded in.
    pub protocol: Protocol,
    /// `CLIENT ID`.
    pub id: u64,
    /// `CLIENT SETNAME`.
    pub name: Option<Bytes>,
    /// `CLIENT SETINFO LIB-NAME`.
    pub lib_name: Option<Bytes>,
    /// `CLIENT SETINFO LIB-VER`.
    pub lib_ver: Option<Bytes>,
    /// Commands queued since `MULTI`, and whether one was refused (then
    /// `EXEC` discards them all).
    transaction: Option<(Vec<Queued>, bool)>,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

impl Client {
    /// A new connection, speaking RESP2, with a fresh id.
    pub fn new() -> Client {
        Client {
            protocol: Protocol::Resp2,
            id: NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed),
            name: None,
            lib_name: None,
            lib_ver: None,
            transaction: None,
        }
    }

    /// Whether a `MULTI` is open.
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    /// Returns `error`, for a request the server refuses before
    /// [`Client::step`] (e.g. a command it knows it does not support);
    /// inside `MULTI` it also marks the transaction, so `EXEC` discards it,
    /// as Redis does for a command refused while queueing.
    pub fn refuse(&mut self, error: Reply) -> Reply {
        if let Some((_, refused)) = &mut self.transaction {
            *refused = true;
        }
        error
    }

    /// Handles one non-empty request: checks it against `table`, queues it
    /// inside a transaction, answers connection commands, and says what is
    /// left for the server to do.
    pub fn step(&mut self, args: Vec<Bytes>, table: &CommandTable, server: &ServerInfo) -> Step {
        let spec = match table.lookup(&args) {
            Ok(spec) => spec,
            Err(e) => {
                if let Some((_, refused)) = &mut self.transaction {
                    *refused = true;
                }
                return Step::Reply(e);
            }
        };
        if spec.name == "quit" {
            return Step::Quit;
        }
        if let Some((queued, refused)) = &mut self.transaction {
            return match spec.name {
                "exec" => {
                    let (queued, refused) = self.transaction.take().unwrap_or_default();
                    if refused {
                        Step::Reply(Reply::Error(
                            "EXECABORT Transaction discarded because of previous errors.".into(),
                        ))
                    } else {
                        Step::Exec(queued)
                    }
                }
                "discard" => {
                    self.transaction = None;
                    Step::Reply(Reply::ok())
                }
                "multi" => Step::Reply(Reply::err("MULTI calls can not be nested")),
                _ if spec.has_flag("no_multi") => {
                    *refused = true;
                    Step::Reply(Reply::err(format!(
                        "Command not allowed inside a transaction: '{}'",
                        spec.name
                    )))
                }
                _ => {
                    queued.push((spec, args));
                    Step::Reply(Reply::Simple("QUEUED".into()))
                }
            };
        }
        match spec.name {
            "multi" => {
                self.transaction = Some((Vec::new(), false));
                Step::Reply(Reply::ok())
            }
            "exec" => Step::Reply(Reply::err("EXEC without MULTI")),
            "discard" => Step::Reply(Reply::err("DISCARD without MULTI")),
            _ => match self.connection_command(spec, &args, table, server) {
                Some(r) => Step::Reply(r),
                None => Step::Run(spec, args),
            },
        }
    }

    /// Answers a connection command (`HELLO`, `CLIENT`, `SELECT`, `PING`,
    /// `ECHO`, `COMMAND`); `None` for any other command.
    pub fn connection_command(
        &mut self,
        spec: &CommandSpec,
        args: &[Bytes],
        table: &CommandTable,
        server: &ServerInfo,
    ) -> Option<Reply> {
        Some(match spec.name {
            "ping" => match args.len() {
                1 => Reply::Simple("PONG".into()),
                2 => Reply::bulk(args[1].clone()),
                _ => wrong_arity("ping"),
            },
            "echo" => Reply::bulk(args[1].clone()),
            "hello" => self.hello(args, server),
            "client" => self.client(args),
            "select" => match parse_i64(&args[1]) {
                Some(0) => Reply::ok(),
                Some(_) => Reply::err("DB index is out of range"),
                None => Reply::err("value is not an integer or out of range"),
            },
            "command" => table.command(args),
            _ => return None,
        })
    }

    /// `HELLO [protover [AUTH username password] [SETNAME clientname]]`.
    /// There is no authentication: `AUTH` is accepted for the `default`
    /// user with any password, as Redis does for a user with `nopass`.
    fn hello(&mut self, args: &[Bytes], server: &ServerInfo) -> Reply {
        let mut protocol = self.protocol;
        let mut name = None;
        if let Some(v) = args.get(1) {
            protocol = match parse_i64(v) {
                Some(2) => Protocol::Resp2,
                Some(3) => Protocol::Resp3,
                Some(_) => return Reply::Error("NOPROTO unsupported protocol version".into()),
                None => return Reply::err("Protocol version is not an integer or out of range"),
            };
            let mut i = 2;
            while i < args.len() {
                let opt = String::from_utf8_lossy(&args[i]).to_ascii_lowercase();
                match opt.as_str() {
                    "auth" if i + 2 < args.len() => {
                        if !args[i + 1].eq_ignore_ascii_case(b"default") {
                            return Reply::Error(
                                "WRONGPASS invalid username-password pair or user is disabled."
                                    .into(),
                            );
                        }
                        i += 3;
                    }
                    "setname" if i + 1 < args.len() => {
                        if let Err(e) = check_name(&args[i + 1]) {
                            return e;
                        }
                        name = Some(args[i + 1].clone());
                        i += 2;
                    }
                    _ => return Reply::err(format!("Syntax error in HELLO option '{opt}'")),
                }
            }
        }
        self.protocol = protocol;
        if let Some(n) = name {
            self.name = (!n.is_empty()).then_some(n);
        }
        hello_map(server, protocol, self.id)
    }

    /// `CLIENT ID|GETNAME|SETNAME|SETINFO|INFO|LIST`.
    fn client(&mut self, args: &[Bytes]) -> Reply {
        let sub = String::from_utf8_lossy(&args[1]).to_ascii_lowercase();
        match (sub.as_str(), args.len()) {
            ("id", 2) => Reply::Int(self.id as i64),
            ("getname", 2) => match &self.name {
                Some(n) => Reply::bulk(n.clone()),
                None => Reply::Null,
            },
            ("setname", 3) => match check_name(&args[2]) {
                Ok(()) => {
                    self.name = (!args[2].is_empty()).then(|| args[2].clone());
                    Reply::ok()
                }
                Err(e) => e,
            },
            ("setinfo", 4) => {
                let attr = String::from_utf8_lossy(&args[2]).to_ascii_lowercase();
                let slot = match attr.as_str() {
                    "lib-name" => &mut self.lib_name,
                    "lib-ver" => &mut self.lib_ver,
                    _ => return Reply::err(format!("Unrecognized option '{attr}'")),
                };
                if args[3].iter().any(|&b| b == b' ' || b == b'\n' || b < 0x21) {
                    return Reply::err(format!(
                        "{attr} cannot contain spaces, newlines or special characters."
                    ));
                }
                *slot = Some(args[3].clone());
                Reply::ok()
            }
            ("info", 2) | ("list", 2) => Reply::text(format!("{}\n", self.info_line())),
            ("id" | "getname" | "setname" | "setinfo" | "info" | "list", _) => {
                wrong_arity(&format!("client|{sub}"))
            }
            _ => Reply::err(format!(
                "'CLIENT {}' is not supported: this server supports CLIENT ID, GETNAME, SETNAME, SETINFO, INFO and LIST",
                sub.to_ascii_uppercase()
            )),
        }
    }

    /// The line `CLIENT INFO` shows.
    pub fn info_line(&self) -> String {
        let s = |b: &Option<Bytes>| {
            b.as_ref()
                .map_or(String::new(), |b| String::from_utf8_lossy(b).into_owned())
        };
        format!(
            "id={} name={} db=0 multi={} resp={} lib-name={} lib-ver={}",
            self.id,
            s(&self.name),
            self.transaction
                .as_ref()
                .map_or(-1, |(q, _)| q.len() as i64),
            self.protocol.version(),
            s(&self.lib_name),
            s(&self.lib_ver)
        )
    }
}

/// Redis refuses names with spaces, newlines or other special characters.
fn check_name(name: &[u8]) -> Result<(), Reply> {
    if name.iter().any(|&b| !(0x21..=0x7e).contains(&b)) {
        return Err(Reply::err(
            "Client names cannot contain spaces, newlines or special characters.",
        ));
    }
    Ok(())
}

/// The reply to `HELLO`: a map in RESP3, a flat array in RESP2 (the same
/// fields as Redis).
pub fn hello_map(server: &ServerInfo, protocol: Protocol, id: u64) -> Reply {
    Reply::map([
        ("server", Reply::text(server.name)),
        ("version", Reply::text(server.version)),
        ("proto", Reply::Int(protocol.version())),
        ("id", Reply::Int(id as i64)),
        ("mode", Reply::text("standalone")),
        ("role", Reply::text("master")),
        ("modules", Reply::Array(vec![])),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: CommandTable = CommandTable::new(&[
        CONNECTION_COMMANDS,
        &[CommandSpec::new("get", 2, &["readonly"], "GET key").keys(1, 1, 1)],
    ]);
    const SERVER: ServerInfo = ServerInfo {
        name: "test",
        version: "1",
    };

    fn args(v: &[&str]) -> Vec<Bytes> {
        v.iter().map(|s| Bytes::from(s.to_string())).collect()
    }

    fn reply(c: &mut Client, v: &[&str]) -> Reply {
        match c.step(args(v), &TABLE, &SERVER) {
            Step::Reply(r) => r,
            other => panic!("{v:?}: {other:?}"),
        }
    }

    #[test]
    fn hello_3_switches_to_resp3_and_answers_a_map() {
        let mut c = Client::new();
        let r = reply(
            &mut c,
            &["HELLO", "3", "AUTH", "default", "x", "SETNAME", "me"],
        );
        assert_eq!(c.protocol, Protocol::Resp3);
        let Reply::Map(fields) = r else {
            panic!("{r:?}")
        };
        assert!(fields.contains(&(Reply::text("proto"), Reply::Int(3))));
        assert_eq!(reply(&mut c, &["CLIENT", "GETNAME"]), Reply::text("me"));
        reply(&mut c, &["HELLO", "2"]);
        assert_eq!(c.protocol, Protocol::Resp2);
        assert_eq!(
            reply(&mut c, &["HELLO", "4"]),
            Reply::Error("NOPROTO unsupported protocol version".into())
        );
        assert_eq!(c.protocol, Protocol::Resp2);
    }

    #[test]
    fn client_getname_returns_what_setname_set() {
        let mut c = Client::new();
        assert_eq!(reply(&mut c, &["CLIENT", "GETNAME"]), Reply::Null);
        assert_eq!(
            reply(&mut c, &["client", "setname", "worker-1"]),
            Reply::ok()
        );
        assert_eq!(
            reply(&mut c, &["CLIENT", "GETNAME"]),
            Reply::text("worker-1")
        );
        assert!(matches!(
            reply(&mut c, &["CLIENT", "SETNAME", "a b"]),
            Reply::Error(_)
        ));
        assert_eq!(reply(&mut c, &["CLIENT", "ID"]), Reply::Int(c.id as i64));
        assert_eq!(
            reply(&mut c, &["CLIENT", "SETINFO", "LIB-NAME", "redis-py"]),
            Reply::ok()
        );
    }

    #[test]
    fn multi_queues_until_exec_and_a_refused_command_aborts_it() {
        let mut c = Client::new();
        assert_eq!(reply(&mut c, &["EXEC"]), Reply::err("EXEC without MULTI"));
        assert_eq!(reply(&mut c, &["MULTI"]), Reply::ok());
        assert_eq!(reply(&mut c, &["GET", "k"]), Reply::Simple("QUEUED".into()));
        assert_eq!(reply(&mut c, &["PING"]), Reply::Simple("QUEUED".into()));
        match c.step(args(&["EXEC"]), &TABLE, &SERVER) {
            Step::Exec(q) => {
                assert_eq!(q.len(), 2);
                assert_eq!(q[0].0.name, "get");
            }
            other => panic!("{other:?}"),
        }
        assert!(!c.in_transaction());
        reply(&mut c, &["MULTI"]);
        assert!(matches!(reply(&mut c, &["GET"]), Reply::Error(_)));
        assert!(matches!(reply(&mut c, &["NOPE"]), Reply::Error(_)));
        assert_eq!(
            reply(&mut c, &["EXEC"]),
            Reply::Error("EXECABORT Transaction discarded because of previous errors.".into())
        );
        reply(&mut c, &["MULTI"]);
        reply(&mut c, &["GET", "k"]);
        assert_eq!(reply(&mut c, &["DISCARD"]), Reply::ok());
        assert!(!c.in_transaction());
    }
}
