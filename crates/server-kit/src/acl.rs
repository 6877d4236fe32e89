//! Client users and their permissions, in Redis' own terms: a users file
//! in a subset of Redis' ACL file syntax (`--acl-file`), read at start and
//! again on `SIGHUP` or `ACL LOAD`, and the decisions `AUTH`, `HELLO … AUTH`
//! and every command make against it, with Redis 7's error texts.
//!
//! # The users file
//!
//! One user a line; blank lines and lines starting with `#` are ignored:
//!
//! ```text
//! user default on nopass ~public:* +@read
//! user app on #<sha256-hex> ~app:* +@read +@write
//! user reporter on #<sha256-hex> %R~app:* %R~stats:* +@read
//! user admin on #<sha256-hex> allkeys +@all
//! ```
//!
//! Rules, applied left to right as Redis applies them:
//!
//! * `on` / `off`: the user may authenticate, or not (the default is off);
//! * `#<hex>`: a password, as the SHA-256 of its bytes in hex (what
//!   `echo -n 'pw' | sha256sum` prints), Redis' own hashed form; `nopass`:
//!   any password will do; `resetpass`: no passwords. A plaintext
//!   `>password` is refused, so nothing secret sits in the file;
//! * `~pattern`: read and write the keys matching a Redis glob
//!   ([`crate::pattern_match`], so `app:*` is a prefix); `%R~pattern`: read
//!   only; `%W~pattern`: write only; `allkeys` is `~*`; `resetkeys` drops
//!   the patterns so far;
//! * `+@category` / `-@category` (`all`, `read`, `write`, `admin`,
//!   `pubsub`, `connection`, `fast`, `slow`), `allcommands` / `nocommands`
//!   (`+@all` / `-@all`), `+command` / `-command`; a user starts with no
//!   commands;
//! * `reset`: back to a user with nothing (off, no password, no keys, no
//!   commands).
//!
//! A command's categories come from its [`CommandSpec`] flags (`readonly`
//! → `read`, `write` → `write`, `admin` → `admin`, …); the connection
//! commands (`PING`, `HELLO`, `CLIENT`, `MULTI`, …) are allowed to every
//! authenticated user, as are `ACL WHOAMI` and `ACL CAT`. A command's keys
//! come from its spec ([`CommandSpec::key_uses`]); as in Redis, one pattern
//! must grant every access a key needs (a key an `INCR` reads and writes
//! needs a `~` pattern, or `%RW~`). A command that reaches keys it does not
//! name (`DBSIZE`, `FLUSHALL`, `KEYS`/`SCAN` without a prefix) needs the
//! access on every key: a pattern that is only stars (`allkeys`). A
//! pattern or prefix (`KEYS app:*`, `BAYOU.SCAN app:`) is allowed when one
//! `prefix*` pattern of the user covers all of it.
//!
//! A mistake in the file is an error naming the file, line and token
//! ([`AclError::Parse`]); at start it stops the server; on a reload the
//! users loaded before stay in force and the error is logged.
//!
//! # Connections
//!
//! The table in force is behind a lock ([`Acl::users`] clones an `Arc` of
//! it), so a reload is seen by the next command of every open connection,
//! as in Redis. A connection holds its user's *name*
//! ([`crate::Client`]): after a reload it has the new rules of that name,
//! and if the user is gone or `off` the connection is unauthenticated
//! again. Without `--acl-file` nothing is checked: one branch per command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::{error, info, warn};

use crate::command::{CommandSpec, CommandTable, KeyTarget, KeyUse};
use crate::pattern_match;
use crate::resp::Reply;

/// `-NOAUTH`: a command other than `AUTH`, `HELLO`, `QUIT` before
/// authentication.
pub const NOAUTH: &str = "NOAUTH Authentication required.";

/// `-NOAUTH` for `HELLO` without `AUTH` before authentication (Redis'
/// text).
pub const HELLO_NOAUTH: &str = "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time";

/// `-WRONGPASS`: a bad user/password pair, or a user that is `off`.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// `AUTH password` on a server without users (Redis without
/// `requirepass`), after `ERR `.
pub const AUTH_NOT_CONFIGURED: &str = "AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?";

/// `-NOPERM` for a key the user may not touch (Redis 7's text).
pub const NOPERM_KEY: &str = "NOPERM No permissions to access a key";

/// The categories a command can be in, as `+@name` names them.
pub const CATEGORIES: &[&str] = &[
    "read",
    "write",
    "admin",
    "pubsub",
    "connection",
    "fast",
    "slow",
];

/// Whether `spec` is in `category` (one of [`CATEGORIES`], or `all`).
pub fn in_category(spec: &CommandSpec, category: &str) -> bool {
    match category {
        "all" => true,
        "read" => spec.has_flag("readonly"),
        "write" => spec.has_flag("write"),
        "admin" => spec.has_flag("admin"),
        "pubsub" => spec.has_flag("pubsub"),
        "connection" => spec.has_flag("connection"),
        "fast" => spec.has_flag("fast"),
        "slow" => !spec.has_flag("fast"),
        _ => false,
    }
}

/// Why a users file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// The file could not be read.
    #[error("cannot read the users file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the file is wrong.
    #[error("{path} line {line}, '{token}': {why}")]
    Parse {
        /// The file.
        path: String,
        /// The line, from 1.
        line: usize,
        /// The token at fault (a plaintext password shown as `>…`).
        token: String,
        /// What is wrong and how to fix it.
        why: String,
    },
}

/// One key pattern of a user, with the access it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyPattern {
    pattern: Bytes,
    read: bool,
    write: bool,
}

impl KeyPattern {
    /// Whether the pattern matches every key (`*`, `**`…).
    fn is_everything(&self) -> bool {
        self.pattern.iter().all(|&c| c == b'*')
    }

    /// The literal `L` of a pattern `L*` (no other glob character), which
    /// covers every key starting with `L`.
    fn literal_prefix(&self) -> Option<&[u8]> {
        let head = self.pattern.strip_suffix(b"*")?;
        (!head.iter().any(|c| is_glob_char(*c))).then_some(head)
    }

    /// Whether the pattern grants `use_` (one pattern must grant all of
    /// its access, as in Redis).
    fn grants(&self, use_: &KeyUse) -> bool {
        if (use_.read && !self.read) || (use_.write && !self.write) {
            return false;
        }
        match &use_.target {
            KeyTarget::Key(k) => pattern_match(&self.pattern, k),
            KeyTarget::All => self.is_everything(),
            KeyTarget::Prefix(p) => self.covers_prefix(p),
            KeyTarget::Pattern(p) => {
                let literal = p.iter().position(|c| is_glob_char(*c));
                match literal {
                    None => pattern_match(&self.pattern, p),
                    Some(at) => self.covers_prefix(&p[..at]),
                }
            }
        }
    }

    /// Whether every key starting with `prefix` matches the pattern.
    fn covers_prefix(&self, prefix: &[u8]) -> bool {
        self.is_everything()
            || self
                .literal_prefix()
                .is_some_and(|head| prefix.starts_with(head))
    }

    /// How `ACL LIST` shows it.
    fn rule(&self) -> String {
        let access = match (self.read, self.write) {
            (true, true) => "",
            (true, false) => "%R",
            _ => "%W",
        };
        format!("{access}~{}", String::from_utf8_lossy(&self.pattern))
    }
}

fn is_glob_char(c: u8) -> bool {
    matches!(c, b'*' | b'?' | b'[' | b'\\')
}

/// One command rule of a user: allow (`+`) or deny (`-`) a category or a
/// command.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CommandRule {
    allow: bool,
    /// `Some(category)` for `±@category`, else a command name.
    category: Option<&'static str>,
    command: String,
}

impl CommandRule {
    fn applies_to(&self, spec: &CommandSpec) -> bool {
        match self.category {
            Some(c) => in_category(spec, c),
            None => spec.name == self.command,
        }
    }

    fn rule(&self) -> String {
        let sign = if self.allow { '+' } else { '-' };
        match self.category {
            Some(c) => format!("{sign}@{c}"),
            None => format!("{sign}{}", self.command),
        }
    }
}

/// One user of the users file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    name: String,
    enabled: bool,
    nopass: bool,
    hashes: Vec<[u8; 32]>,
    keys: Vec<KeyPattern>,
    commands: Vec<CommandRule>,
}

/// Why a command was refused to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The user may not run the command.
    Command,
    /// The command touches a key the user may not touch that way.
    Key,
}

impl Denied {
    /// Redis 7's reply: `-NOPERM User <name> has no permissions to run the
    /// '<cmd>' command`, or `-NOPERM No permissions to access a key`.
    pub fn reply(self, user: &str, spec: &CommandSpec) -> Reply {
        match self {
            Denied::Command => Reply::Error(format!(
                "NOPERM User {user} has no permissions to run the '{}' command",
                spec.name
            )),
            Denied::Key => Reply::Error(NOPERM_KEY.into()),
        }
    }

    /// The reply at `EXEC` for a queued command the rules no longer allow
    /// (they changed since it was queued), as Redis words it.
    pub fn exec_reply(self) -> Reply {
        let reason = match self {
            Denied::Command => "no permission to execute the command or subcommand",
            Denied::Key => "no permission to touch the specified keys",
        };
        Reply::Error(format!(
            "NOPERM ACLs rules changed between the moment the transaction was accumulated and the EXEC call. This command is no longer allowed for the following reason: {reason}"
        ))
    }
}

impl User {
    fn new(name: &str) -> User {
        User {
            name: name.to_string(),
            enabled: false,
            nopass: false,
            hashes: Vec::new(),
            keys: Vec::new(),
            commands: Vec::new(),
        }
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the user is `on`.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether `password` opens this user: it is `on`, and `nopass` or the
    /// password's SHA-256 is one of its hashes. The comparison takes the
    /// same time whichever hash matches, or none.
    pub fn password_ok(&self, password: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(password).into();
        let matched: bool = self
            .hashes
            .iter()
            .fold(subtle::Choice::from(0), |ok, h| ok | h.ct_eq(&digest))
            .into();
        self.enabled && (self.nopass || matched)
    }

    /// Whether the command rules allow `spec` (connection commands are
    /// always allowed; see [`User::check`]).
    pub fn may_run(&self, spec: &CommandSpec) -> bool {
        self.commands
            .iter()
            .fold(false, |allowed, r| match r.applies_to(spec) {
                true => r.allow,
                false => allowed,
            })
    }

    /// Whether the user may run `args` (the request of `spec`): the command,
    /// then every key it touches.
    pub fn check(&self, spec: &CommandSpec, args: &[Bytes]) -> Result<(), Denied> {
        if !spec.has_flag("connection") && !self.may_run(spec) {
            return Err(Denied::Command);
        }
        for use_ in spec.key_uses(args) {
            if !self.keys.iter().any(|p| p.grants(&use_)) {
                return Err(Denied::Key);
            }
        }
        Ok(())
    }

    /// Whether the user's key patterns let it write `key` (whatever the
    /// command): the check a signed Bayou write's author passes again
    /// wherever the write executes.
    pub fn may_write_key(&self, key: &[u8]) -> bool {
        let use_ = KeyUse::write(KeyTarget::Key(Bytes::copy_from_slice(key)));
        self.enabled && self.keys.iter().any(|p| p.grants(&use_))
    }

    /// The user as `ACL LIST` shows it: `user <name> on|off [nopass]
    /// [#hash…] [patterns…] <command rules>`.
    pub fn rules(&self) -> String {
        let mut out = format!(
            "user {} {}",
            self.name,
            if self.enabled { "on" } else { "off" }
        );
        if self.nopass {
            out += " nopass";
        }
        for h in &self.hashes {
            out += &format!(" #{}", hex::encode(h));
        }
        for k in &self.keys {
            out += &format!(" {}", k.rule());
        }
        // A user starts with no commands; say so unless the first rule
        // resets them anyway.
        if self
            .commands
            .first()
            .is_none_or(|r| r.category != Some("all"))
        {
            out += " -@all";
        }
        for r in &self.commands {
            out += &format!(" {}", r.rule());
        }
        out
    }
}

/// The users of one users file, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    users: BTreeMap<String, User>,
}

impl Users {
    /// Parses a users file's text; `path` names it in errors, and `table`
    /// is the server's commands, which `+command` rules must name.
    pub fn parse(text: &str, path: &str, table: &CommandTable) -> Result<Users, AclError> {
        let mut users = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let err = |token: &str, why: String| AclError::Parse {
                path: path.to_string(),
                line: i + 1,
                token: shown(token),
                why,
            };
            let mut tokens = line.split_whitespace();
            let Some(first) = tokens.next() else { continue };
            if first.starts_with('#') {
                continue;
            }
            if first != "user" {
                return Err(err(
                    first,
                    "a line must start with 'user <name>' (or '#' for a comment)".into(),
                ));
            }
            let Some(name) = tokens.next() else {
                return Err(err(first, "the user's name is missing".into()));
            };
            if users.contains_key(name) {
                return Err(err(name, format!("user '{name}' is defined twice")));
            }
            let mut user = User::new(name);
            for token in tokens {
                apply_rule(&mut user, token, table).map_err(|why| err(token, why))?;
            }
            users.insert(name.to_string(), user);
        }
        Ok(Users { users })
    }

    /// The user named `name`.
    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// The user `name` if `password` opens it (see [`User::password_ok`]).
    pub fn authenticate(&self, name: &[u8], password: &[u8]) -> Option<&User> {
        let user = std::str::from_utf8(name)
            .ok()
            .and_then(|n| self.users.get(n));
        let Some(user) = user else {
            // Hash anyway, so an unknown name takes as long as a wrong
            // password.
            let _ = Sha256::digest(password);
            return None;
        };
        user.password_ok(password).then_some(user)
    }

    /// The user a new connection starts as: `default`, if it is `on` and
    /// `nopass`; otherwise none (the connection must authenticate).
    pub fn initial_user(&self) -> Option<&User> {
        self.users.get("default").filter(|u| u.enabled && u.nopass)
    }

    /// Every user, by name.
    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// How many users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are no users (then no one can connect).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// A token as an error may show it: never a plaintext password.
fn shown(token: &str) -> String {
    if token.starts_with('>') || token.starts_with('<') {
        format!("{}…", &token[..1])
    } else {
        token.to_string()
    }
}

/// Applies one rule to `user`, or says what is wrong with it.
fn apply_rule(user: &mut User, token: &str, table: &CommandTable) -> Result<(), String> {
    let lower = token.to_ascii_lowercase();
    match lower.as_str() {
        "on" => user.enabled = true,
        "off" => user.enabled = false,
        "nopass" => {
            user.nopass = true;
            user.hashes.clear();
        }
        "resetpass" => {
            user.nopass = false;
            user.hashes.clear();
        }
        "allkeys" => add_keys(user, "*", true, true)?,
        "resetkeys" => user.keys.clear(),
        "allcommands" => add_command_rule(user, true, Some("all"), ""),
        "nocommands" => add_command_rule(user, false, Some("all"), ""),
        "reset" => *user = User::new(&user.name),
        "allchannels" | "resetchannels" => {
            return Err("channel rules are not supported: SUBSCRIBE is allowed by +@pubsub".into());
        }
        _ => return apply_prefixed_rule(user, token, table),
    }
    Ok(())
}

fn apply_prefixed_rule(user: &mut User, token: &str, table: &CommandTable) -> Result<(), String> {
    let how_to_hash = "store the SHA-256 of the password instead, as #<hex> \
                       (the hex is what `echo -n 'password' | sha256sum` prints)";
    if let Some(hash) = token.strip_prefix('#') {
        let bytes = hex::decode(hash)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                format!(
                    "a password hash must be 64 hex digits (the SHA-256 of the password); {how_to_hash}"
                )
            })?;
        user.nopass = false;
        if !user.hashes.contains(&bytes) {
            user.hashes.push(bytes);
        }
        return Ok(());
    }
    if token.starts_with('>') {
        return Err(format!(
            "plaintext passwords are refused, so that nothing secret sits in the file; {how_to_hash}"
        ));
    }
    if token.starts_with('<') || token.starts_with('!') {
        return Err("removing a password is not supported: rewrite the user's line".into());
    }
    if token.starts_with('&') {
        return Err("channel rules are not supported: SUBSCRIBE is allowed by +@pubsub".into());
    }
    if let Some(pattern) = token.strip_prefix('~') {
        return add_keys(user, pattern, true, true);
    }
    if let Some(rest) = token.strip_prefix('%') {
        let Some((access, pattern)) = rest.split_once('~') else {
            return Err("a key rule with access is %R~pattern, %W~pattern or %RW~pattern".into());
        };
        let access = access.to_ascii_uppercase();
        let (read, write) = match access.as_str() {
            "R" => (true, false),
            "W" => (false, true),
            "RW" | "WR" => (true, true),
            _ => return Err(format!("unknown key access '{access}': use R, W or RW")),
        };
        return add_keys(user, pattern, read, write);
    }
    let (allow, what) = match token.split_at_checked(1) {
        Some(("+", what)) => (true, what),
        Some(("-", what)) => (false, what),
        _ => {
            return Err(
                "unknown rule: expected on, off, nopass, resetpass, #<sha256>, ~pattern, \
                 %R~pattern, %W~pattern, allkeys, resetkeys, +@category, -@category, \
                 +command, -command, allcommands, nocommands or reset"
                    .into(),
            );
        }
    };
    if let Some(category) = what.strip_prefix('@') {
        let category = category.to_ascii_lowercase();
        let Some(known) = std::iter::once(&"all")
            .chain(CATEGORIES)
            .find(|c| **c == category)
        else {
            return Err(format!(
                "unknown command category '{category}': the categories are all, {}",
                CATEGORIES.join(", ")
            ));
        };
        add_command_rule(user, allow, Some(*known), "");
        return Ok(());
    }
    if what.contains('|') {
        return Err("subcommand rules (+command|sub) are not supported".into());
    }
    match table.find(what.as_bytes()) {
        Some(spec) => add_command_rule(user, allow, None, spec.name),
        None => return Err(format!("this server has no command '{what}'")),
    }
    Ok(())
}

fn add_keys(user: &mut User, pattern: &str, read: bool, write: bool) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("an empty key pattern matches nothing; use ~* (allkeys) for every key".into());
    }
    user.keys.push(KeyPattern {
        pattern: Bytes::from(pattern.to_string()),
        read,
        write,
    });
    Ok(())
}

fn add_command_rule(user: &mut User, allow: bool, category: Option<&'static str>, command: &str) {
    // `±@all` makes every rule before it moot; dropping them keeps
    // `ACL LIST` short, as Redis does.
    if category == Some("all") {
        user.commands.clear();
    }
    user.commands.push(CommandRule {
        allow,
        category,
        command: command.to_string(),
    });
}

/// The users file in force, reloadable: shared by every connection of a
/// server (and every replica of a local cluster).
#[derive(Debug)]
pub struct Acl {
    path: PathBuf,
    table: CommandTable,
    users: RwLock<Arc<Users>>,
}

impl Acl {
    /// Loads the users file at `path` for a server with the commands of
    /// `table`.
    pub fn load(path: &Path, table: CommandTable) -> Result<Arc<Acl>, AclError> {
        let users = read_users(path, &table)?;
        Ok(Arc::new(Acl {
            path: path.to_path_buf(),
            table,
            users: RwLock::new(Arc::new(users)),
        }))
    }

    /// An ACL from users already parsed (for tests and embedding); a
    /// reload reads `path`.
    pub fn from_users(path: &Path, table: CommandTable, users: Users) -> Arc<Acl> {
        Arc::new(Acl {
            path: path.to_path_buf(),
            table,
            users: RwLock::new(Arc::new(users)),
        })
    }

    /// Reads the file again: the new users are in force for the next
    /// command of every connection. On an error the users in force stay.
    pub fn reload(&self) -> Result<usize, AclError> {
        let users = read_users(&self.path, &self.table)?;
        let n = users.len();
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(users);
        Ok(n)
    }

    /// [`Acl::reload`], logged: the count of users loaded, or the error and
    /// that the previous users stay in force.
    pub fn reload_logged(&self, why: &str) -> Result<usize, AclError> {
        match self.reload() {
            Ok(n) => {
                info!(path = %self.path.display(), users = n, "{why}: users file reloaded");
                Ok(n)
            }
            Err(e) => {
                error!("{why}: {e}; the users loaded before stay in force");
                Err(e)
            }
        }
    }

    /// Whether `user` (of the users now in force) may write `key`: an
    /// enabled user with a key pattern granting writes to it
    /// ([`User::may_write_key`]). An unknown user may not.
    pub fn may_write_key(&self, user: &str, key: &[u8]) -> bool {
        self.users().get(user).is_some_and(|u| u.may_write_key(key))
    }

    /// The users in force now.
    pub fn users(&self) -> Arc<Users> {
        self.users.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The users file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_users(path: &Path, table: &CommandTable) -> Result<Users, AclError> {
    let text = std::fs::read_to_string(path).map_err(|source| AclError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Users::parse(&text, &path.display().to_string(), table)
}

/// The `--acl-file` flag of both node binaries (flattened into each one's
/// clap arguments).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct AclFlags {
    /// Users and their permissions, in Redis' ACL file syntax (see
    /// docs/acl.md); reloaded on SIGHUP and ACL LOAD. Without it clients
    /// are not authenticated and may run every command.
    #[arg(long, value_name = "PATH")]
    pub acl_file: Option<PathBuf>,
}

impl AclFlags {
    /// The flags as command-line arguments, to pass on to a child process.
    pub fn to_args(&self) -> Vec<String> {
        match &self.acl_file {
            Some(p) => vec!["--acl-file".into(), p.display().to_string()],
            None => Vec::new(),
        }
    }

    /// The users file for a server with `table`, if one was given.
    pub fn load(&self, table: CommandTable) -> Result<Option<Arc<Acl>>, AclError> {
        self.acl_file
            .as_deref()
            .map(|p| Acl::load(p, table))
            .transpose()
    }
}

/// The log line without a users file.
pub const OPEN_LOG: &str =
    "no --acl-file: clients are not authenticated; every client may run every command";

/// Logs how a server listening on `listen` treats clients: the users file
/// in force, or (without one) that every client may do anything, as a
/// warning when `listen` is not a loopback address.
pub fn log_mode(acl: Option<&Acl>, listen: &str) {
    match acl {
        Some(acl) if acl.users().is_empty() => warn!(
            path = %acl.path.display(),
            "the users file defines no users: no client can authenticate"
        ),
        Some(acl) => info!(
            path = %acl.path.display(),
            users = acl.users().len(),
            "clients authenticate as the users of the users file"
        ),
        None if is_loopback(listen) => info!("{OPEN_LOG}"),
        None => warn!(%listen, "{OPEN_LOG}, and this address is not loopback"),
    }
}

/// Whether `listen` (`host:port`) is a loopback address.
pub fn is_loopback(listen: &str) -> bool {
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reloads `acl` on every SIGHUP, for as long as the runtime runs. The
/// handler is installed before this returns, so a SIGHUP right after is
/// not lost (and does not kill the process).
pub fn reload_on_hangup(acl: Arc<Acl>) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = signal(SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = acl.reload_logged("SIGHUP");
            }
        });
    }
    #[cfg(not(unix))]
    let _ = acl;
    Ok(())
}

/// `INFO` fields: `acl_enabled:1|0` and, with a users file, `acl_users`.
pub fn info_fields(acl: Option<&Acl>) -> Vec<(String, String)> {
    match acl {
        Some(acl) => vec![
            ("acl_enabled".into(), "1".into()),
            ("acl_users".into(), acl.users().len().to_string()),
        ],
        None => vec![("acl_enabled".into(), "0".into())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandSpec;

    const SPECS: &[CommandSpec] = &[
        CommandSpec::new("get", 2, &["readonly", "fast"], "").keys(1, 1, 1),
        CommandSpec::new("set", -3, &["write"], "").keys(1, 1, 1),
        CommandSpec::new("incr", 2, &["write", "fast"], "")
            .keys(1, 1, 1)
            .reads_keys(),
        CommandSpec::new("mset", -3, &["write"], "").keys(1, -1, 2),
        CommandSpec::new("dbsize", 1, &["readonly", "fast"], "").all_keys(),
        CommandSpec::new("keys", 2, &["readonly"], "")
            .named_keys(|a| vec![KeyUse::read(KeyTarget::Pattern(a[1].clone()))]),
        CommandSpec::new("config", -2, &["admin"], ""),
        CommandSpec::new("ping", -1, &["fast", "connection"], ""),
    ];
    const TABLE: CommandTable = CommandTable::new(&[SPECS]);

    const PW_HASH: &str = "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"; // "password"

    fn users(text: &str) -> Users {
        Users::parse(text, "users.acl", &TABLE).unwrap()
    }

    fn parse_err(text: &str) -> String {
        Users::parse(text, "users.acl", &TABLE)
            .unwrap_err()
            .to_string()
    }

    fn run(u: &User, args: &[&str]) -> Result<(), Reply> {
        let args: Vec<Bytes> = args.iter().map(|a| Bytes::from(a.to_string())).collect();
        let spec = TABLE.lookup(&args).unwrap();
        u.check(spec, &args).map_err(|d| d.reply(u.name(), spec))
    }

    #[test]
    fn a_users_file_parses_with_comments_and_blank_lines() {
        let u = users(&format!(
            "# users\n\nuser default on nopass %R~pub:* +@read\n  user app on #{PW_HASH} ~app:* +@read +@write\n"
        ));
        assert_eq!(u.len(), 2);
        assert_eq!(
            u.get("app").unwrap().rules(),
            format!("user app on #{PW_HASH} ~app:* -@all +@read +@write")
        );
        assert_eq!(
            u.get("default").unwrap().rules(),
            "user default on nopass %R~pub:* -@all +@read"
        );
        assert_eq!(u.initial_user().unwrap().name(), "default");
        assert!(
            users("user admin on allkeys +@all")
                .initial_user()
                .is_none()
        );
        assert_eq!(
            users("user a on allkeys allcommands -config")
                .get("a")
                .unwrap()
                .rules(),
            "user a on ~* +@all -config"
        );
        assert_eq!(
            users("user a on ~x +@all reset").get("a").unwrap().rules(),
            "user a off -@all"
        );
    }

    #[test]
    fn every_parse_error_names_the_file_line_and_token() {
        assert_eq!(
            parse_err("\nuser a on >secret"),
            "users.acl line 2, '>…': plaintext passwords are refused, so that nothing secret \
             sits in the file; store the SHA-256 of the password instead, as #<hex> (the hex \
             is what `echo -n 'password' | sha256sum` prints)"
        );
        assert_eq!(
            parse_err("user a on #abc"),
            "users.acl line 1, '#abc': a password hash must be 64 hex digits (the SHA-256 of \
             the password); store the SHA-256 of the password instead, as #<hex> (the hex is \
             what `echo -n 'password' | sha256sum` prints)"
        );
        assert_eq!(
            parse_err("usr a on"),
            "users.acl line 1, 'usr': a line must start with 'user <name>' (or '#' for a comment)"
        );
        assert_eq!(
            parse_err("user"),
            "users.acl line 1, 'user': the user's name is missing"
        );
        assert_eq!(
            parse_err("user a on\nuser a off"),
            "users.acl line 2, 'a': user 'a' is defined twice"
        );
        assert_eq!(
            parse_err("user a on +@nosuch"),
            "users.acl line 1, '+@nosuch': unknown command category 'nosuch': the categories \
             are all, read, write, admin, pubsub, connection, fast, slow"
        );
        assert_eq!(
            parse_err("user a on +flushall"),
            "users.acl line 1, '+flushall': this server has no command 'flushall'"
        );
        assert_eq!(
            parse_err("user a on +config|get"),
            "users.acl line 1, '+config|get': subcommand rules (+command|sub) are not supported"
        );
        assert_eq!(
            parse_err("user a on %X~k"),
            "users.acl line 1, '%X~k': unknown key access 'X': use R, W or RW"
        );
        assert_eq!(
            parse_err("user a on %Rk"),
            "users.acl line 1, '%Rk': a key rule with access is %R~pattern, %W~pattern or %RW~pattern"
        );
        assert_eq!(
            parse_err("user a on ~"),
            "users.acl line 1, '~': an empty key pattern matches nothing; use ~* (allkeys) for every key"
        );
        assert_eq!(
            parse_err("user a on <old"),
            "users.acl line 1, '<…': removing a password is not supported: rewrite the user's line"
        );
        assert_eq!(
            parse_err("user a on &chan"),
            "users.acl line 1, '&chan': channel rules are not supported: SUBSCRIBE is allowed by +@pubsub"
        );
        assert_eq!(
            parse_err("user a on resetchannels"),
            "users.acl line 1, 'resetchannels': channel rules are not supported: SUBSCRIBE is allowed by +@pubsub"
        );
        assert!(
            parse_err("user a on sideways")
                .starts_with("users.acl line 1, 'sideways': unknown rule: expected on, off")
        );
        let missing = Acl::load(Path::new("/nonexistent/users.acl"), TABLE).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("cannot read the users file /nonexistent/users.acl: "),
            "{missing}"
        );
    }

    #[test]
    fn passwords_are_checked_against_their_sha256() {
        let u = users(&format!(
            "user app on #{PW_HASH}\nuser old off #{PW_HASH}\nuser any on nopass"
        ));
        assert!(u.authenticate(b"app", b"password").is_some());
        assert!(u.authenticate(b"app", b"Password").is_none());
        assert!(u.authenticate(b"old", b"password").is_none());
        assert!(u.authenticate(b"nobody", b"password").is_none());
        assert!(u.authenticate(b"any", b"whatever").is_some());
        // A hash in capitals is the same hash.
        let upper = users(&format!("user a on #{}", PW_HASH.to_uppercase()));
        assert!(upper.authenticate(b"a", b"password").is_some());
    }

    #[test]
    fn command_rules_apply_left_to_right() {
        let u = users("user a on allkeys +@all -@admin +config\nuser r on allkeys +@read");
        let a = u.get("a").unwrap();
        assert_eq!(run(a, &["CONFIG", "GET", "x"]), Ok(()));
        assert_eq!(run(a, &["SET", "k", "v"]), Ok(()));
        let r = u.get("r").unwrap();
        assert_eq!(run(r, &["GET", "k"]), Ok(()));
        assert_eq!(
            run(r, &["SET", "k", "v"]),
            Err(Reply::Error(
                "NOPERM User r has no permissions to run the 'set' command".into()
            ))
        );
        assert_eq!(
            run(r, &["config", "get", "x"]),
            Err(Reply::Error(
                "NOPERM User r has no permissions to run the 'config' command".into()
            ))
        );
        // Connection commands need no rule.
        assert_eq!(run(users("user n on").get("n").unwrap(), &["PING"]), Ok(()));
    }

    #[test]
    fn key_patterns_decide_reads_and_writes() {
        let u = users("user u on ~app:* %R~pub:* %W~inbox:* +@all");
        let u = u.get("u").unwrap();
        let noperm = Err(Reply::Error(NOPERM_KEY.into()));
        assert_eq!(run(u, &["SET", "app:1", "v"]), Ok(()));
        assert_eq!(run(u, &["SET", "other", "v"]), noperm);
        assert_eq!(run(u, &["GET", "pub:1"]), Ok(()));
        assert_eq!(run(u, &["SET", "pub:1", "v"]), noperm);
        assert_eq!(run(u, &["SET", "inbox:1", "v"]), Ok(()));
        assert_eq!(run(u, &["GET", "inbox:1"]), noperm);
        // INCR reads and writes: one pattern must grant both.
        assert_eq!(run(u, &["INCR", "app:n"]), Ok(()));
        assert_eq!(run(u, &["INCR", "inbox:n"]), noperm);
        // Every key of MSET, not just the first.
        assert_eq!(run(u, &["MSET", "app:1", "a", "app:2", "b"]), Ok(()));
        assert_eq!(run(u, &["MSET", "app:1", "a", "x", "b"]), noperm);
        // Enumerating every key needs every key.
        assert_eq!(run(u, &["DBSIZE"]), noperm);
        // A pattern inside a prefix the user may read, or a literal key.
        assert_eq!(run(u, &["KEYS", "app:*"]), Ok(()));
        assert_eq!(run(u, &["KEYS", "pub:x?"]), Ok(()));
        assert_eq!(run(u, &["KEYS", "app:1"]), Ok(()));
        assert_eq!(run(u, &["KEYS", "*"]), noperm);
        assert_eq!(run(u, &["KEYS", "ap*"]), noperm);
        let all = users("user a on allkeys +@all");
        let all = all.get("a").unwrap();
        assert_eq!(run(all, &["DBSIZE"]), Ok(()));
        assert_eq!(run(all, &["KEYS", "*"]), Ok(()));
        let ro = users("user a on %R~* +@all");
        assert_eq!(run(ro.get("a").unwrap(), &["DBSIZE"]), Ok(()));
        assert_eq!(run(ro.get("a").unwrap(), &["SET", "k", "v"]), noperm);
    }

    #[test]
    fn exec_replies_name_the_reason_as_redis_does() {
        assert_eq!(
            Denied::Key.exec_reply(),
            Reply::Error(
                "NOPERM ACLs rules changed between the moment the transaction was accumulated \
                 and the EXEC call. This command is no longer allowed for the following reason: \
                 no permission to touch the specified keys"
                    .into()
            )
        );
    }

    #[test]
    fn a_failed_reload_keeps_the_users_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.acl");
        std::fs::write(&path, "user a on nopass +@read").unwrap();
        let acl = Acl::load(&path, TABLE).unwrap();
        std::fs::write(&path, "user a on nopass +@read\nuser b on nopass +@write").unwrap();
        assert_eq!(acl.reload().unwrap(), 2);
        std::fs::write(&path, "user a on >plain").unwrap();
        assert!(acl.reload().is_err());
        assert_eq!(acl.users().len(), 2);
        assert!(acl.users().get("b").is_some());
    }

    #[test]
    fn loopback_addresses_are_recognised() {
        assert!(is_loopback("127.0.0.1:7000"));
        assert!(is_loopback("localhost:7000"));
        assert!(is_loopback("[::1]:7000"));
        assert!(!is_loopback("0.0.0.0:7000"));
        assert!(!is_loopback("10.1.2.3:7000"));
    }

    #[test]
    fn the_flag_passes_on_to_a_child_process() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            acl: AclFlags,
        }
        for flags in [
            AclFlags { acl_file: None },
            AclFlags {
                acl_file: Some(PathBuf::from("/etc/bayou/users.acl")),
            },
        ] {
            let args = std::iter::once("node".to_string()).chain(flags.to_args());
            assert_eq!(<Cli as clap::Parser>::parse_from(args).acl, flags);
        }
    }

    #[test]
    fn info_says_whether_acls_are_on() {
        assert_eq!(
            info_fields(None),
            vec![("acl_enabled".to_string(), "0".to_string())]
        );
    }
}
