//! One command table per server: each command's name, arity, flags, key
//! positions and a line of help, with the lookups every server does the same
//! way (unknown command, wrong number of arguments) and the replies to
//! `COMMAND`, `COMMAND COUNT|INFO|DOCS|LIST`, so the texts clients see are
//! the same on every node.

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
