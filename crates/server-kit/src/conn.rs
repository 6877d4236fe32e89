//! A client connection's own state and the commands that act only on it,
//! the same on every server: `HELLO`, `AUTH`, `ACL`, `CLIENT …`, `SELECT`,
//! `PING`, `ECHO`, `COMMAND`, and the queueing half of
//! `MULTI`/`EXEC`/`DISCARD`.
//!
//! A server feeds each request to [`Client::step`], which either answers it
//! or tells the server to run it ([`Step::Run`]), or to run a whole queued
//! transaction ([`Step::Exec`]) and answer with one array.
//!
//! With a users file ([`crate::acl`]), the connection holds the name of
//! the user it authenticated as, and [`Client::step`] checks every command
//! against that user's rules in force *now* (before queueing it inside
//! `MULTI`; [`Client::recheck`] again at `EXEC`): `-NOAUTH` before
//! authentication, `-NOPERM` for what the user may not do. Without one
//! ([`Client::new`]) the connection is the `default` user and nothing is
//! checked: the check is one branch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::acl::{self, Acl, Denied, Users};
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
    CommandSpec::new(
        "auth",
        -2,
        // `no_multi`: the commands of one EXEC run as one user.
        &[
            "fast",
            "no_auth",
            "no_multi",
            "noscript",
            "loading",
            "stale",
            "connection",
        ],
        "AUTH [username] password: authenticate the connection as a user",
    ),
    CommandSpec::new(
        "acl",
        -2,
        &["admin", "noscript", "loading", "stale"],
        "ACL WHOAMI|USERS|LIST|LOAD|CAT [category]: the users and their rules",
    ),
];

/// The user of a connection to a server without a users file.
pub const DEFAULT_USER: &str = "default";

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
    /// The users file in force, if the server has one.
    acl: Option<Arc<Acl>>,
    /// The user the connection authenticated as (`None`: not yet); shared
    /// cheaply with the commands of a round.
    user: Option<Arc<str>>,
    /// Advanced at every authentication, so the client loop does not run
    /// commands sent as different users in one batch.
    auth_epoch: u64,
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
            acl: None,
            user: Some(Arc::from(DEFAULT_USER)),
            auth_epoch: 0,
        }
    }

    /// A new connection to a server with the users file `acl` (or none):
    /// it starts as `default` if the file has `user default on nopass`,
    /// otherwise it must authenticate first.
    pub fn with_acl(acl: Option<Arc<Acl>>) -> Client {
        let mut c = Client::new();
        if let Some(acl) = acl {
            c.user = acl.users().initial_user().map(|u| Arc::from(u.name()));
            c.acl = Some(acl);
        }
        c
    }

    /// The name of the user the connection authenticated as; `None` before
    /// authentication. Without a users file, `default`.
    pub fn user(&self) -> Option<&Arc<str>> {
        self.user.as_ref()
    }

    /// Advances at every successful `AUTH` or `HELLO … AUTH`.
    pub fn auth_epoch(&self) -> u64 {
        self.auth_epoch
    }

    /// The connection's user among `users`, if it is there and `on`.
    fn current<'u>(&self, users: &'u Users) -> Option<&'u acl::User> {
        self.user
            .as_deref()
            .and_then(|n| users.get(n))
            .filter(|u| u.enabled())
    }

    /// Checks a command against the users in force: `-NOAUTH` unless the
    /// connection is authenticated (as a user still `on`) or the command
    /// needs none; `-NOPERM` for what the user may not do.
    fn authorize(&self, users: &Users, spec: &CommandSpec, args: &[Bytes]) -> Result<(), Reply> {
        let Some(user) = self.current(users) else {
            return match spec.has_flag("no_auth") {
                true => Ok(()),
                false => Err(Reply::Error(acl::NOAUTH.into())),
            };
        };
        if open_to_all_users(spec, args) {
            return Ok(());
        }
        user.check(spec, args)
            .map_err(|denied| denied.reply(user.name(), spec))
    }

    /// At `EXEC`, a queued command checked again against the rules in force
    /// now: `Some(error)` if they no longer allow it (Redis' text).
    pub fn recheck(&self, spec: &CommandSpec, args: &[Bytes]) -> Option<Reply> {
        let users = self.acl.as_ref()?.users();
        let Some(user) = self.current(&users) else {
            return Some(Reply::Error(acl::NOAUTH.into()));
        };
        if open_to_all_users(spec, args) {
            return None;
        }
        user.check(spec, args).err().map(Denied::exec_reply)
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
        if let Some(acl) = &self.acl {
            let users = acl.users();
            if let Err(e) = self.authorize(&users, spec, &args) {
                return Step::Reply(self.refuse(e));
            }
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
                _ if spec.has_flag("no_multi") || authenticates(spec, &args) => {
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
            "auth" => self.auth(args),
            "acl" => self.acl_command(args, table),
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
    /// With `AUTH`, authenticates and switches protocol in one step; a bad
    /// pair changes nothing. Without a users file, `AUTH default <any>` is
    /// accepted, as Redis does for a `default` user with `nopass`.
    fn hello(&mut self, args: &[Bytes], server: &ServerInfo) -> Reply {
        let mut protocol = self.protocol;
        let mut name = None;
        let mut auth = None;
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
                        auth = Some((&args[i + 1], &args[i + 2]));
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
        let user = match auth {
            Some((user, password)) => match self.credentials_ok(user, password) {
                Some(user) => Some(user),
                None => return Reply::Error(acl::WRONGPASS.into()),
            },
            None if self.authenticated() => None,
            None => return Reply::Error(acl::HELLO_NOAUTH.into()),
        };
        if let Some(user) = user {
            self.become_user(user);
        }
        self.protocol = protocol;
        if let Some(n) = name {
            self.name = (!n.is_empty()).then_some(n);
        }
        hello_map(server, protocol, self.id)
    }

    /// Whether the connection is authenticated as a user still `on`.
    fn authenticated(&self) -> bool {
        match (&self.acl, &self.user) {
            (None, _) => true,
            (Some(acl), Some(name)) => acl.users().get(name).is_some_and(|u| u.enabled()),
            (Some(_), None) => false,
        }
    }

    /// The user `user` with `password` opens, if any. Without a users file
    /// only `default`, with any password.
    fn credentials_ok(&self, user: &[u8], password: &[u8]) -> Option<String> {
        match &self.acl {
            None => (user == DEFAULT_USER.as_bytes()).then(|| DEFAULT_USER.to_string()),
            Some(acl) => acl
                .users()
                .authenticate(user, password)
                .map(|u| u.name().to_string()),
        }
    }

    fn become_user(&mut self, user: String) {
        self.user = Some(Arc::from(user));
        self.auth_epoch += 1;
    }

    /// `AUTH password` (the `default` user) or `AUTH username password`.
    fn auth(&mut self, args: &[Bytes]) -> Reply {
        let (user, password) = match args.len() {
            2 if self.acl.is_none() => {
                return Reply::err(acl::AUTH_NOT_CONFIGURED);
            }
            2 => (DEFAULT_USER.as_bytes(), &args[1][..]),
            3 => (&args[1][..], &args[2][..]),
            _ => return crate::command::syntax_error(),
        };
        match self.credentials_ok(user, password) {
            Some(user) => {
                self.become_user(user);
                Reply::ok()
            }
            None => Reply::Error(acl::WRONGPASS.into()),
        }
    }

    /// `ACL WHOAMI|USERS|LIST|LOAD|CAT [category]`.
    fn acl_command(&mut self, args: &[Bytes], table: &CommandTable) -> Reply {
        let sub = acl_subcommand(args).unwrap_or_default();
        let users = self.acl.as_ref().map(|a| a.users());
        match (sub.as_str(), args.len()) {
            ("whoami", 2) => Reply::text(self.user.as_deref().unwrap_or(DEFAULT_USER)),
            ("users", 2) => match &users {
                Some(u) => Reply::Array(u.iter().map(|u| Reply::text(u.name())).collect()),
                None => Reply::Array(vec![Reply::text(DEFAULT_USER)]),
            },
            ("list", 2) => match &users {
                Some(u) => Reply::Array(u.iter().map(|u| Reply::text(u.rules())).collect()),
                None => Reply::Array(vec![Reply::text("user default on nopass ~* +@all")]),
            },
            ("load", 2) => match &self.acl {
                Some(acl) => match acl.reload_logged("ACL LOAD") {
                    Ok(_) => Reply::ok(),
                    Err(e) => Reply::err(e),
                },
                None => Reply::err(
                    "this server was started without --acl-file: there is no users file to load",
                ),
            },
            ("cat", 2) => Reply::Array(acl::CATEGORIES.iter().map(|c| Reply::text(*c)).collect()),
            ("cat", 3) => {
                let category = String::from_utf8_lossy(&args[2]).to_ascii_lowercase();
                if !acl::CATEGORIES.contains(&category.as_str()) {
                    return Reply::err(format!("Unknown category '{category}'"));
                }
                Reply::Array(
                    table
                        .iter()
                        .filter(|c| acl::in_category(c, &category))
                        .map(|c| Reply::text(c.name))
                        .collect(),
                )
            }
            ("whoami" | "users" | "list" | "load" | "cat", _) => wrong_arity(&format!("acl|{sub}")),
            _ => Reply::err(format!(
                "unknown subcommand '{sub}'. This server supports ACL WHOAMI, USERS, LIST, LOAD and CAT"
            )),
        }
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
            "id={} name={} db=0 multi={} user={} resp={} lib-name={} lib-ver={}",
            self.id,
            s(&self.name),
            self.transaction
                .as_ref()
                .map_or(-1, |(q, _)| q.len() as i64),
            self.user.as_deref().unwrap_or(""),
            self.protocol.version(),
            s(&self.lib_name),
            s(&self.lib_ver)
        )
    }
}

/// `ACL WHOAMI` and `ACL CAT` (of the `@admin` command `ACL`), which every
/// authenticated user may run, as in Redis.
fn open_to_all_users(spec: &CommandSpec, args: &[Bytes]) -> bool {
    spec.name == "acl" && acl_subcommand(args).is_some_and(|s| s == "whoami" || s == "cat")
}

/// Whether the request is `HELLO … AUTH …`, which (like `AUTH`) is refused
/// inside `MULTI`, so that the commands of one `EXEC` run as one user.
fn authenticates(spec: &CommandSpec, args: &[Bytes]) -> bool {
    spec.name == "hello" && args.iter().skip(2).any(|a| a.eq_ignore_ascii_case(b"auth"))
}

/// The lower-case subcommand of a request (`ACL WHOAMI` → `whoami`).
fn acl_subcommand(args: &[Bytes]) -> Option<String> {
    args.get(1)
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
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
        &[
            CommandSpec::new("get", 2, &["readonly"], "GET key").keys(1, 1, 1),
            CommandSpec::new("set", 3, &["write"], "SET key value").keys(1, 1, 1),
        ],
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

    /// SHA-256 of "pw".
    const PW: &str = "30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4";

    /// A connection to a server with these users (written to a file, so
    /// `ACL LOAD` can read it again), and the file.
    fn with_users(text: &str) -> (Client, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.acl");
        std::fs::write(&path, text).unwrap();
        let acl = Acl::load(&path, TABLE).unwrap();
        (Client::with_acl(Some(acl)), dir)
    }

    fn err(text: &str) -> Reply {
        Reply::Error(text.into())
    }

    #[test]
    fn without_authentication_only_auth_hello_and_quit_are_answered() {
        let (mut c, _dir) = with_users(&format!("user app on #{PW} ~app:* +@all"));
        assert_eq!(c.user(), None);
        assert_eq!(
            reply(&mut c, &["GET", "app:1"]),
            err("NOAUTH Authentication required.")
        );
        assert_eq!(
            reply(&mut c, &["PING"]),
            err("NOAUTH Authentication required.")
        );
        assert_eq!(reply(&mut c, &["HELLO", "3"]), err(acl::HELLO_NOAUTH));
        assert_eq!(c.protocol, Protocol::Resp2);
        // Unknown commands and wrong arities are told first, as in Redis.
        assert_eq!(
            reply(&mut c, &["NOPE"]),
            Reply::err("unknown command 'NOPE', with args beginning with:")
        );
        assert_eq!(
            reply(&mut c, &["AUTH", "app", "nope"]),
            err("WRONGPASS invalid username-password pair or user is disabled.")
        );
        assert_eq!(
            reply(&mut c, &["AUTH", "nope"]),
            err("WRONGPASS invalid username-password pair or user is disabled.")
        );
        assert_eq!(reply(&mut c, &["AUTH", "app", "pw"]), Reply::ok());
        assert_eq!(c.user().map(|u| &**u), Some("app"));
        assert_eq!(reply(&mut c, &["ACL", "WHOAMI"]), Reply::text("app"));
        assert_eq!(
            reply(&mut c, &["CLIENT", "INFO"]),
            Reply::text(format!(
                "id={} name= db=0 multi=-1 user=app resp=2 lib-name= lib-ver=\n",
                c.id
            ))
        );
        assert!(matches!(
            c.step(args(&["GET", "app:1"]), &TABLE, &SERVER),
            Step::Run(..)
        ));
        assert!(matches!(
            c.step(args(&["QUIT"]), &TABLE, &SERVER),
            Step::Quit
        ));
    }

    #[test]
    fn hello_auth_authenticates_and_switches_protocol_together() {
        let (mut c, _dir) = with_users(&format!("user app on #{PW} ~app:* +@all"));
        assert_eq!(
            reply(
                &mut c,
                &["HELLO", "3", "AUTH", "app", "bad", "SETNAME", "x"]
            ),
            err("WRONGPASS invalid username-password pair or user is disabled.")
        );
        assert_eq!(
            (c.protocol, c.user(), &c.name),
            (Protocol::Resp2, None, &None)
        );
        let r = reply(&mut c, &["HELLO", "3", "AUTH", "app", "pw", "SETNAME", "x"]);
        assert!(matches!(r, Reply::Map(_)), "{r:?}");
        assert_eq!(c.protocol, Protocol::Resp3);
        assert_eq!(c.user().map(|u| &**u), Some("app"));
        assert_eq!(reply(&mut c, &["CLIENT", "GETNAME"]), Reply::text("x"));
    }

    #[test]
    fn a_default_nopass_user_needs_no_auth_and_noperm_is_redis_text() {
        let (mut c, _dir) = with_users(&format!(
            "user default on nopass %R~pub:* +@read\nuser app on #{PW} ~app:* +@all"
        ));
        assert_eq!(c.user().map(|u| &**u), Some("default"));
        assert!(matches!(
            c.step(args(&["GET", "pub:1"]), &TABLE, &SERVER),
            Step::Run(..)
        ));
        assert_eq!(
            reply(&mut c, &["GET", "app:1"]),
            err("NOPERM No permissions to access a key")
        );
        assert_eq!(
            reply(&mut c, &["SET", "pub:1", "v"]),
            err("NOPERM User default has no permissions to run the 'set' command")
        );
        assert_eq!(
            reply(&mut c, &["ACL", "USERS"]),
            err("NOPERM User default has no permissions to run the 'acl' command")
        );
        // `default` is nopass: any password opens it, as in Redis.
        assert_eq!(reply(&mut c, &["AUTH", "anything"]), Reply::ok());
        assert_eq!(reply(&mut c, &["AUTH", "app", "bad"]), err(acl::WRONGPASS));
        assert_eq!(c.user().map(|u| &**u), Some("default"));
        assert_eq!(reply(&mut c, &["AUTH", "app", "pw"]), Reply::ok());
        assert_eq!(
            reply(&mut c, &["ACL", "USERS"]),
            Reply::Array(vec![Reply::text("app"), Reply::text("default")])
        );
        assert_eq!(
            reply(&mut c, &["ACL", "LIST"]),
            Reply::Array(vec![
                Reply::text(format!("user app on #{PW} ~app:* +@all")),
                Reply::text("user default on nopass %R~pub:* -@all +@read"),
            ])
        );
    }

    #[test]
    fn a_refused_command_aborts_multi_and_exec_checks_again() {
        let (mut c, dir) = with_users(&format!("user app on #{PW} ~app:* +@all"));
        reply(&mut c, &["AUTH", "app", "pw"]);
        reply(&mut c, &["MULTI"]);
        assert_eq!(
            reply(&mut c, &["SET", "other", "v"]),
            err("NOPERM No permissions to access a key")
        );
        assert_eq!(
            reply(&mut c, &["EXEC"]),
            err("EXECABORT Transaction discarded because of previous errors.")
        );
        // Queued while allowed, refused at EXEC after a reload.
        reply(&mut c, &["MULTI"]);
        assert_eq!(
            reply(&mut c, &["SET", "app:1", "v"]),
            Reply::Simple("QUEUED".into())
        );
        std::fs::write(
            dir.path().join("users.acl"),
            format!("user app on #{PW} ~app:* +@read"),
        )
        .unwrap();
        // Reloaded as SIGHUP would (ACL LOAD here would be queued).
        c.acl.as_ref().unwrap().reload().unwrap();
        let Step::Exec(queued) = c.step(args(&["EXEC"]), &TABLE, &SERVER) else {
            panic!()
        };
        let (spec, a) = &queued[0];
        assert_eq!(
            c.recheck(spec, a),
            Some(err(
                "NOPERM ACLs rules changed between the moment the transaction was accumulated \
                 and the EXEC call. This command is no longer allowed for the following reason: \
                 no permission to execute the command or subcommand"
            ))
        );
    }

    #[test]
    fn authentication_is_refused_inside_multi() {
        let (mut c, _dir) = with_users(&format!("user app on #{PW} ~app:* +@all"));
        reply(&mut c, &["AUTH", "app", "pw"]);
        reply(&mut c, &["MULTI"]);
        assert_eq!(
            reply(&mut c, &["AUTH", "app", "pw"]),
            Reply::err("Command not allowed inside a transaction: 'auth'")
        );
        assert_eq!(
            reply(&mut c, &["HELLO", "3", "AUTH", "app", "pw"]),
            Reply::err("Command not allowed inside a transaction: 'hello'")
        );
        assert_eq!(
            reply(&mut c, &["HELLO", "3"]),
            Reply::Simple("QUEUED".into())
        );
    }

    #[test]
    fn a_user_removed_by_a_reload_is_unauthenticated() {
        let (mut c, dir) = with_users(&format!("user app on #{PW} ~app:* +@all"));
        reply(&mut c, &["AUTH", "app", "pw"]);
        std::fs::write(dir.path().join("users.acl"), format!("user app off #{PW}")).unwrap();
        assert_eq!(reply(&mut c, &["ACL", "LOAD"]), Reply::ok());
        assert_eq!(reply(&mut c, &["GET", "app:1"]), err(acl::NOAUTH));
    }

    #[test]
    fn without_users_auth_answers_as_redis_without_requirepass() {
        let mut c = Client::new();
        assert_eq!(
            reply(&mut c, &["AUTH", "pw"]),
            Reply::err(
                "AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?"
            )
        );
        assert_eq!(reply(&mut c, &["AUTH", "default", "any"]), Reply::ok());
        assert_eq!(reply(&mut c, &["AUTH", "bob", "any"]), err(acl::WRONGPASS));
        assert_eq!(reply(&mut c, &["ACL", "WHOAMI"]), Reply::text("default"));
        assert_eq!(
            reply(&mut c, &["ACL", "LOAD"]),
            Reply::err(
                "this server was started without --acl-file: there is no users file to load"
            )
        );
        assert!(matches!(
            c.step(args(&["SET", "k", "v"]), &TABLE, &SERVER),
            Step::Run(..)
        ));
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
