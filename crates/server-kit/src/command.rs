//! One command table per server: each command's name, arity, flags, key
//! positions and a line of help, with the lookups every server does the same
//! way (unknown command, wrong number of arguments) and the replies to
//! `COMMAND`, `COMMAND COUNT|INFO|DOCS|LIST`, so the texts clients see are
//! the same on every node.
//!
//! A spec also says which keys a command touches and how ([`KeyUse`]), for
//! the users' key permissions ([`crate::acl`]): by position (Redis'
//! first key, last key, step), "every key" for a command that enumerates
//! or erases keys without naming them (`KEYS` without a pattern, `DBSIZE`,
//! `FLUSHALL`), or, when the keys are not positional (a key pattern, a
//! prefix, keys inside a JSON write), by a function of the arguments.

use bytes::Bytes;

use crate::resp::Reply;

/// The flags of a fast read (`GET`).
pub const READ_FAST: &[&str] = &["readonly", "fast"];

/// The flags of a write that may allocate (`SET`).
pub const WRITE: &[&str] = &["write", "denyoom"];

/// One command a server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lower-case name, e.g. `get` or `bayou.log`.
    pub name: &'static str,
    /// The number of arguments including the name; negative means "at
    /// least", as in Redis' `COMMAND` output.
    pub arity: i64,
    /// Redis' flags, e.g. `readonly`, `write`, `fast`, `noscript`.
    pub flags: &'static [&'static str],
    /// Position of the first key (0: none).
    pub first_key: i64,
    /// Position of the last key (-1: the last argument).
    pub last_key: i64,
    /// Distance between keys.
    pub step: i64,
    /// The syntax and what it does, one line, shown by `COMMAND DOCS`.
    pub help: &'static str,
    /// Where the keys are, for permissions ([`CommandSpec::key_uses`]).
    pub key_spec: KeySpec,
    /// Whether a `write` command also reads its keys: its reply shows what
    /// a key held (`INCR`, `GETSET`, `APPEND`), so it needs read permission
    /// as well, as Redis' `RW` key specs do.
    pub key_reads: bool,
}

/// Where a command's keys are, for permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// At the positions `first_key`, `last_key`, `step` (none when
    /// `first_key` is 0).
    Positional,
    /// Every key of the database: the command enumerates or erases keys
    /// without naming them.
    All,
    /// Named by a function of the arguments (with the command's name).
    Named(KeyFinder),
}

/// A function naming the keys a command touches, from its arguments (the
/// name first; the arity already checked).
#[derive(Clone, Copy)]
pub struct KeyFinder(pub fn(&[Bytes]) -> Vec<KeyUse>);

impl std::fmt::Debug for KeyFinder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyFinder")
    }
}

// Compared by address: two specs with the same finder are the same spec.
impl PartialEq for KeyFinder {
    fn eq(&self, other: &Self) -> bool {
        self.0 as usize == other.0 as usize
    }
}

impl Eq for KeyFinder {}

/// Which keys a command use reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyTarget {
    /// One key.
    Key(Bytes),
    /// Every key matching a Redis glob (`KEYS pattern`, `SCAN … MATCH`).
    Pattern(Bytes),
    /// Every key starting with these bytes (`BAYOU.SCAN prefix`).
    Prefix(Bytes),
    /// Every key.
    All,
}

/// One use of keys by a command: which, and whether it reads or writes
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyUse {
    /// The keys.
    pub target: KeyTarget,
    /// The command reads them (or shows what they hold).
    pub read: bool,
    /// The command changes them.
    pub write: bool,
}

impl KeyUse {
    /// A read of `target`.
    pub fn read(target: KeyTarget) -> KeyUse {
        KeyUse {
            target,
            read: true,
            write: false,
        }
    }

    /// A write of `target`.
    pub fn write(target: KeyTarget) -> KeyUse {
        KeyUse {
            target,
            read: false,
            write: true,
        }
    }
}

impl CommandSpec {
    /// A command that takes no keys.
    pub const fn new(
        name: &'static str,
        arity: i64,
        flags: &'static [&'static str],
        help: &'static str,
    ) -> CommandSpec {
        CommandSpec {
            name,
            arity,
            flags,
            first_key: 0,
            last_key: 0,
            step: 0,
            help,
            key_spec: KeySpec::Positional,
            key_reads: false,
        }
    }

    /// The same command touching every key (it enumerates or erases keys
    /// without naming them).
    pub const fn all_keys(mut self) -> CommandSpec {
        self.key_spec = KeySpec::All;
        self
    }

    /// The same command with its keys named by `finder`.
    pub const fn named_keys(mut self, finder: fn(&[Bytes]) -> Vec<KeyUse>) -> CommandSpec {
        self.key_spec = KeySpec::Named(KeyFinder(finder));
        self
    }

    /// The same `write` command, reading its keys too (see
    /// [`CommandSpec::key_reads`]).
    pub const fn reads_keys(mut self) -> CommandSpec {
        self.key_reads = true;
        self
    }

    /// The keys `args` (this command's request, name first, arity checked)
    /// touch and how: a read for a `readonly` command, a write for a
    /// `write` one (and a read too with [`CommandSpec::reads_keys`]).
    pub fn key_uses(&self, args: &[Bytes]) -> Vec<KeyUse> {
        let (read, write) = (
            self.has_flag("readonly") || self.key_reads,
            self.has_flag("write"),
        );
        let one = |target| KeyUse {
            target,
            read,
            write,
        };
        match self.key_spec {
            KeySpec::Named(KeyFinder(find)) => find(args),
            KeySpec::All => vec![one(KeyTarget::All)],
            KeySpec::Positional if self.first_key <= 0 => Vec::new(),
            KeySpec::Positional => {
                let n = args.len() as i64;
                let last = if self.last_key < 0 {
                    n + self.last_key
                } else {
                    self.last_key.min(n - 1)
                };
                (self.first_key..=last)
                    .step_by(self.step.max(1) as usize)
                    .map(|i| one(KeyTarget::Key(args[i as usize].clone())))
                    .collect()
            }
        }
    }

    /// The same command with keys from `first` to `last` every `step`.
    pub const fn keys(mut self, first: i64, last: i64, step: i64) -> CommandSpec {
        self.first_key = first;
        self.last_key = last;
        self.step = step;
        self
    }

    /// Whether `n` arguments (with the name) fit the arity.
    pub fn arity_ok(&self, n: usize) -> bool {
        let n = n as i64;
        if self.arity >= 0 {
            n == self.arity
        } else {
            n >= -self.arity
        }
    }

    /// Whether the command carries `flag`.
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.contains(&flag)
    }

    /// The `COMMAND INFO` entry: name, arity, flags, first key, last key,
    /// step.
    pub fn info(&self) -> Reply {
        Reply::Array(vec![
            Reply::text(self.name),
            Reply::Int(self.arity),
            Reply::Set(
                self.flags
                    .iter()
                    .map(|f| Reply::Simple(f.to_string()))
                    .collect(),
            ),
            Reply::Int(self.first_key),
            Reply::Int(self.last_key),
            Reply::Int(self.step),
        ])
    }

    /// The `COMMAND DOCS` entry: a map with the summary.
    pub fn docs(&self) -> Reply {
        Reply::map([
            ("summary", Reply::text(self.help)),
            ("since", Reply::text("1.0.0")),
            ("group", Reply::text(self.group())),
        ])
    }

    fn group(&self) -> &'static str {
        match self.name.split_once('.') {
            Some(_) => "module",
            None if self.has_flag("connection") => "connection",
            None => "generic",
        }
    }
}

/// A server's commands: one or more slices of [`CommandSpec`], e.g. the
/// connection commands every server shares ([`crate::CONNECTION_COMMANDS`])
/// and its own.
#[derive(Debug, Clone, Copy)]
pub struct CommandTable {
    parts: &'static [&'static [CommandSpec]],
}

impl CommandTable {
    /// A table from slices of specs; a name found in an earlier slice hides
    /// the same name in a later one.
    pub const fn new(parts: &'static [&'static [CommandSpec]]) -> CommandTable {
        CommandTable { parts }
    }

    /// Every command, in table order.
    pub fn iter(&self) -> impl Iterator<Item = &'static CommandSpec> + '_ {
        self.parts.iter().flat_map(|p| p.iter())
    }

    /// The command named `name`, case-insensitively.
    pub fn find(&self, name: &[u8]) -> Option<&'static CommandSpec> {
        self.iter()
            .find(|c| c.name.as_bytes().eq_ignore_ascii_case(name))
    }

    /// The command `args` invokes, or the error reply Redis gives for an
    /// unknown command or a wrong number of arguments. `args` is not empty.
    pub fn lookup(&self, args: &[Bytes]) -> Result<&'static CommandSpec, Reply> {
        let Some(name) = args.first() else {
            return Err(Reply::err("empty command"));
        };
        let spec = self.find(name).ok_or_else(|| unknown_command(args))?;
        if !spec.arity_ok(args.len()) {
            return Err(wrong_arity(spec.name));
        }
        Ok(spec)
    }

    /// The reply to `COMMAND [COUNT | INFO name… | DOCS [name…] | LIST]`.
    pub fn command(&self, args: &[Bytes]) -> Reply {
        let sub = args
            .get(1)
            .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase());
        let named = || args.iter().skip(2);
        match sub.as_deref() {
            None => Reply::Array(self.iter().map(CommandSpec::info).collect()),
            Some("count") => Reply::Int(self.iter().count() as i64),
            Some("list") => Reply::Array(self.iter().map(|c| Reply::text(c.name)).collect()),
            Some("info") => Reply::Array(
                named()
                    .map(|a| self.find(a).map_or(Reply::Null, CommandSpec::info))
                    .collect(),
            ),
            Some("docs") if args.len() == 2 => Reply::Map(
                self.iter()
                    .map(|c| (Reply::text(c.name), c.docs()))
                    .collect(),
            ),
            Some("docs") => Reply::Map(
                named()
                    .filter_map(|a| self.find(a))
                    .map(|c| (Reply::text(c.name), c.docs()))
                    .collect(),
            ),
            Some(other) => Reply::err(format!("unknown subcommand '{other}'. Try COMMAND HELP.")),
        }
    }
}

/// `ERR unknown command 'x', with args beginning with: 'a' 'b'`, as Redis
/// words it.
pub fn unknown_command(args: &[Bytes]) -> Reply {
    let mut msg = format!(
        "unknown command '{}', with args beginning with:",
        String::from_utf8_lossy(args.first().map_or(&b""[..], |a| &a[..]))
    );
    for a in args.iter().skip(1).take(8) {
        msg += &format!(" '{}'", String::from_utf8_lossy(a));
    }
    Reply::err(msg)
}

/// `ERR wrong number of arguments for 'x' command`.
pub fn wrong_arity(name: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for '{name}' command"))
}

/// `ERR syntax error`.
pub fn syntax_error() -> Reply {
    Reply::err("syntax error")
}

/// `ERR value is not an integer or out of range`.
pub fn not_an_integer() -> Reply {
    Reply::err("value is not an integer or out of range")
}

/// The error for a Redis command or option a server knows but does not
/// support, naming it and why: `ERR 'EXPIRE' is not supported: keys never
/// expire in Bayou`.
pub fn unsupported(what: &str, why: &str) -> Reply {
    Reply::err(format!("'{what}' is not supported: {why}"))
}

/// Parses an argument as a signed 64-bit integer, as Redis does.
pub fn parse_i64(arg: &[u8]) -> Option<i64> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[CommandSpec] = &[
        CommandSpec::new("get", 2, &["readonly", "fast"], "GET key").keys(1, 1, 1),
        CommandSpec::new("del", -2, &["write"], "DEL key [key ...]").keys(1, -1, 1),
    ];
    const TABLE: CommandTable = CommandTable::new(&[SPECS]);

    fn args(v: &[&str]) -> Vec<Bytes> {
        v.iter().map(|s| Bytes::from(s.to_string())).collect()
    }

    #[test]
    fn lookup_is_case_insensitive_and_checks_arity() {
        assert_eq!(TABLE.lookup(&args(&["GeT", "k"])).unwrap().name, "get");
        assert_eq!(
            TABLE.lookup(&args(&["get"])).unwrap_err(),
            Reply::err("wrong number of arguments for 'get' command")
        );
        assert!(TABLE.lookup(&args(&["del", "a", "b", "c"])).is_ok());
        assert_eq!(
            TABLE.lookup(&args(&["nope", "x"])).unwrap_err(),
            Reply::err("unknown command 'nope', with args beginning with: 'x'")
        );
    }

    #[test]
    fn key_uses_follow_positions_flags_and_finders() {
        let key = |k: &str| KeyTarget::Key(Bytes::from(k.to_string()));
        let del = SPECS[1];
        assert_eq!(
            del.key_uses(&args(&["del", "a", "b"])),
            vec![KeyUse::write(key("a")), KeyUse::write(key("b"))]
        );
        let mset = CommandSpec::new("mset", -3, &["write"], "").keys(1, -1, 2);
        assert_eq!(
            mset.key_uses(&args(&["mset", "a", "1", "b", "2"])),
            vec![KeyUse::write(key("a")), KeyUse::write(key("b"))]
        );
        let incr = CommandSpec::new("incr", 2, &["write"], "")
            .keys(1, 1, 1)
            .reads_keys();
        assert_eq!(
            incr.key_uses(&args(&["incr", "n"])),
            vec![KeyUse {
                target: key("n"),
                read: true,
                write: true
            }]
        );
        let dbsize = CommandSpec::new("dbsize", 1, &["readonly"], "").all_keys();
        assert_eq!(
            dbsize.key_uses(&args(&["dbsize"])),
            vec![KeyUse::read(KeyTarget::All)]
        );
        fn pattern(args: &[Bytes]) -> Vec<KeyUse> {
            vec![KeyUse::read(KeyTarget::Pattern(args[1].clone()))]
        }
        let keys = CommandSpec::new("keys", 2, &["readonly"], "").named_keys(pattern);
        assert_eq!(
            keys.key_uses(&args(&["keys", "a*"])),
            vec![KeyUse::read(KeyTarget::Pattern(Bytes::from_static(b"a*")))]
        );
        assert!(SPECS[0].key_uses(&args(&["get", "k"])).len() == 1);
        assert!(
            CommandSpec::new("ping", -1, &[], "")
                .key_uses(&args(&["ping"]))
                .is_empty()
        );
    }

    #[test]
    fn command_subcommands_describe_the_table() {
        assert_eq!(TABLE.command(&args(&["command", "count"])), Reply::Int(2));
        let Reply::Array(info) = TABLE.command(&args(&["command", "info", "get", "zz"])) else {
            panic!()
        };
        assert_eq!(info[1], Reply::Null);
        let Reply::Map(docs) = TABLE.command(&args(&["command", "docs", "del"])) else {
            panic!()
        };
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].0, Reply::text("del"));
    }
}
