//! Bayou writes with a dependency check and a merge procedure ([T95 §4]).
//!
//! A Bayou write is `(update, dependency_check, mergeproc)`. Every server runs
//! it at the write's place in the log order, atomically ([T95 Fig. 2]):
//!
//! ```text
//! IF (DB_Eval(dependency_check.query) <> dependency_check.expected_result)
//!     resolved_update = Interpret(mergeproc);
//! ELSE
//!     resolved_update = update;
//! DB_Apply(resolved_update);
//! ```
//!
//! The query, the expected result and the merge procedure are programs in
//! [Rhai](https://rhai.rs), an embedded scripting language, carried inside the
//! write: stored in the log, sent by anti-entropy, re-run on every redo and at
//! commit. For that to converge they must be deterministic ([T95 §5]), so the
//! sandbox offers no clock, no randomness, no file or network access and no
//! floating point; scripts see only the replica's database, through:
//!
//! | function | result |
//! |---|---|
//! | `get(key)` | the value (a string), or `()` when absent |
//! | `exists(key)` | `true` if the key holds a value |
//! | `scan(prefix)` | `[[key, value], …]` for every key starting with `prefix`, in key order |
//! | `put(key, value)` | (merge procedures only) add a write to the revised update |
//! | `del(key)` | (merge procedures only) add a delete to the revised update |
//!
//! The dependency check passes when the query's result equals the expected
//! result's (both are expressions; e.g. query `exists("room/101/18/13")`,
//! expected `false`). A merge procedure builds the revised update with `put`
//! and `del`; if it builds nothing, the write has no effect.
//!
//! **Limits.** Every server enforces the same limits ([`LIMITS`]): operations
//! executed (a loop that never ends is stopped after the same number of steps
//! everywhere), string, array and map sizes (a script that allocates without
//! bound is stopped at the same point everywhere), call depth, expression
//! depth, and the size of the revised update. A script that breaks a limit or
//! fails at run time fails identically on every server: the write has no
//! effect and its outcome is recorded as [`Outcome::Failed`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::rc::Rc;

use bytes::Bytes;
use rhai::{AST, Array, Dynamic, Engine, EvalAltResult, ImmutableString, Position};
use serde::{Deserialize, Serialize};

use crate::op::Db;

/// One change in an update: set a key, or delete it.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Debug)]
#[serde(rename_all = "lowercase")]
pub enum Mutation {
    /// Set `key` to `value`; JSON `{"put": ["key", "value"]}`.
    Put(String, String),
    /// Remove `key`; JSON `{"del": "key"}`.
    Del(String),
}

/// A dependency check: a query and its expected result, both expressions.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Debug)]
pub struct DependencyCheck {
    /// Evaluated against the database at the write's place in the order.
    pub query: String,
    /// What the query must return for the update to apply as is.
    pub expected: String,
}

/// A Bayou write's update function: update, dependency check, merge procedure.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Debug)]
pub struct BayouWrite {
    /// The desired changes, applied when the check passes.
    pub update: Vec<Mutation>,
    /// The dependency check; none means the update always applies.
    #[serde(default)]
    pub check: Option<DependencyCheck>,
    /// Run when the check fails; builds the revised update with `put`/`del`.
    /// None means a failed check leaves the write without effect.
    #[serde(default)]
    pub merge: Option<String>,
    /// A short name to show in logs instead of the whole write, e.g.
    /// `MEETING(Budget)`.
    #[serde(default)]
    pub label: Option<String>,
}

impl BayouWrite {
    /// A rough size in bytes: its strings plus some framing.
    pub fn approx_size(&self) -> usize {
        let update: usize = self
            .update
            .iter()
            .map(|m| match m {
                Mutation::Put(k, v) => k.len() + v.len() + 4,
                Mutation::Del(k) => k.len() + 4,
            })
            .sum();
        let check = self
            .check
            .as_ref()
            .map_or(0, |c| c.query.len() + c.expected.len());
        let strings = [&self.merge, &self.label]
            .iter()
            .map(|s| s.as_ref().map_or(0, String::len))
            .sum::<usize>();
        update + check + strings + 8
    }
}

/// What executing a Bayou write did.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub enum Outcome {
    /// The dependency check passed (or there was none): the update applied.
    Applied,
    /// The check failed and the merge procedure's revised update applied
    /// (it may be empty).
    Merged,
    /// The check failed and there was no merge procedure: no effect.
    Conflict,
    /// A script broke a limit or failed: no effect, identically everywhere.
    Failed(String),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Applied => f.write_str("applied"),
            Outcome::Merged => f.write_str("merged"),
            Outcome::Conflict => f.write_str("conflict"),
            Outcome::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// The resource limits every server applies to every script. They are part
/// of the protocol: changing them changes what writes do.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Rhai operations per script run.
    pub operations: u64,
    /// Bytes in one string.
    pub string_bytes: usize,
    /// Elements in one array.
    pub array_len: usize,
    /// Entries in one object map.
    pub map_len: usize,
    /// Nested function calls.
    pub call_levels: usize,
    /// Expression nesting, at global and function level.
    pub expr_depth: (usize, usize),
    /// Mutations in one revised update.
    pub mutations: usize,
    /// Bytes in one script's source.
    pub source_bytes: usize,
}

/// The limits in force.
pub const LIMITS: Limits = Limits {
    operations: 200_000,
    string_bytes: 64 * 1024,
    array_len: 10_000,
    map_len: 10_000,
    call_levels: 32,
    expr_depth: (64, 32),
    mutations: 1_000,
    source_bytes: 64 * 1024,
};

impl BayouWrite {
    /// Checks the limits that do not depend on the database, so that a client
    /// learns at once that a write can never run.
    pub fn validate(&self) -> Result<(), String> {
        if self.update.len() > LIMITS.mutations {
            return Err(format!(
                "the update has {} changes; the limit is {}",
                self.update.len(),
                LIMITS.mutations
            ));
        }
        let sources = [
            self.check.as_ref().map(|c| c.query.as_str()),
            self.check.as_ref().map(|c| c.expected.as_str()),
            self.merge.as_deref(),
        ];
        for src in sources.into_iter().flatten() {
            if src.len() > LIMITS.source_bytes {
                return Err(format!(
                    "a script is {} bytes; the limit is {}",
                    src.len(),
                    LIMITS.source_bytes
                ));
            }
            ENGINE
                .with(|e| e.compile_cached(src))
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Decides what this write does to `db` ([T95 Fig. 2]): the changes to
    /// apply and the outcome. `db` is read, never written, here.
    pub(crate) fn resolve(&self, db: &mut Db) -> (Vec<Mutation>, Outcome) {
        let Some(check) = &self.check else {
            return (self.update.clone(), Outcome::Applied);
        };
        let passed = with_db(db, Mode::Query, |engine| {
            let got = engine.eval(&check.query)?;
            let want = engine.eval(&check.expected)?;
            Ok(same(&got, &want))
        });
        match passed {
            Err(why) => (Vec::new(), Outcome::Failed(why)),
            Ok((true, _)) => (self.update.clone(), Outcome::Applied),
            Ok((false, _)) => match &self.merge {
                None => (Vec::new(), Outcome::Conflict),
                Some(merge) => match with_db(db, Mode::Merge, |engine| engine.eval(merge)) {
                    Ok((_, revised)) => (revised, Outcome::Merged),
                    Err(why) => (Vec::new(), Outcome::Failed(why)),
                },
            },
        }
    }
}

/// Whether two script values are equal: same type and same printed value.
fn same(a: &Dynamic, b: &Dynamic) -> bool {
    a.type_name() == b.type_name() && a.to_string() == b.to_string()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Query,
    Merge,
}

/// What a running script can reach: the database (moved in for the run) and
/// the revised update it is building.
struct Context {
    db: Db,
    mode: Mode,
    revised: Vec<Mutation>,
}

thread_local! {
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
    static ENGINE: Sandbox = Sandbox::new();
}

/// Runs `f` with the script engine while `db` is reachable from the script
/// functions. The database is moved into the thread-local context for the
/// run (a pointer move, no copy) and always moved back.
fn with_db<T>(
    db: &mut Db,
    mode: Mode,
    f: impl FnOnce(&Sandbox) -> Result<T, String>,
) -> Result<(T, Vec<Mutation>), String> {
    CONTEXT.with(|c| {
        *c.borrow_mut() = Some(Context {
            db: std::mem::take(db),
            mode,
            revised: Vec::new(),
        })
    });
    /// Puts the database back even if the engine panics.
    struct Restore<'a>(&'a mut Db);
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            if let Some(ctx) = CONTEXT.with(|c| c.borrow_mut().take()) {
                *self.0 = ctx.db;
            }
        }
    }
    let guard = Restore(db);
    let result = ENGINE.with(f);
    let ctx = CONTEXT
        .with(|c| c.borrow_mut().take())
        .expect("the context was set above");
    *guard.0 = ctx.db;
    result.map(|t| (t, ctx.revised))
}

/// The engine, with limits and the database functions registered, and a
/// cache of compiled scripts (compiling is deterministic, so caching does not
/// change results).
struct Sandbox {
    engine: Engine,
    cache: RefCell<HashMap<String, Rc<AST>>>,
}

fn script_error(msg: String) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(msg.into(), Position::NONE))
}

fn with_context<T>(
    f: impl FnOnce(&mut Context) -> Result<T, Box<EvalAltResult>>,
) -> Result<T, Box<EvalAltResult>> {
    CONTEXT.with(|c| match c.borrow_mut().as_mut() {
        Some(ctx) => f(ctx),
        None => Err(script_error("no database in this context".into())),
    })
}

impl Sandbox {
    fn new() -> Sandbox {
        let mut engine = Engine::new();
        engine.set_max_operations(LIMITS.operations);
        engine.set_max_string_size(LIMITS.string_bytes);
        engine.set_max_array_size(LIMITS.array_len);
        engine.set_max_map_size(LIMITS.map_len);
        engine.set_max_call_levels(LIMITS.call_levels);
        engine.set_max_expr_depths(LIMITS.expr_depth.0, LIMITS.expr_depth.1);
        // No output channel: print and debug do nothing.
        engine.on_print(|_| {});
        engine.on_debug(|_, _, _| {});
        engine.register_fn(
            "get",
            |key: ImmutableString| -> Result<Dynamic, Box<EvalAltResult>> {
                with_context(|ctx| {
                    Ok(match ctx.db.get(key.as_bytes()) {
                        Some(v) => Dynamic::from(String::from_utf8_lossy(v).into_owned()),
                        None => Dynamic::UNIT,
                    })
                })
            },
        );
        engine.register_fn(
            "exists",
            |key: ImmutableString| -> Result<bool, Box<EvalAltResult>> {
                with_context(|ctx| Ok(ctx.db.get(key.as_bytes()).is_some()))
            },
        );
        engine.register_fn(
            "scan",
            |prefix: ImmutableString| -> Result<Array, Box<EvalAltResult>> {
                with_context(|ctx| {
                    let mut out = Array::new();
                    for (k, v) in ctx.db.scan_prefix(prefix.as_bytes()) {
                        if out.len() >= LIMITS.array_len {
                            return Err(script_error(format!(
                                "scan({prefix:?}) matches more than {} keys",
                                LIMITS.array_len
                            )));
                        }
                        let pair: Array = vec![
                            Dynamic::from(String::from_utf8_lossy(k).into_owned()),
                            Dynamic::from(String::from_utf8_lossy(v).into_owned()),
                        ];
                        out.push(Dynamic::from_array(pair));
                    }
                    Ok(out)
                })
            },
        );
        let add = |m: Mutation| -> Result<(), Box<EvalAltResult>> {
            with_context(|ctx| {
                if ctx.mode != Mode::Merge {
                    return Err(script_error(
                        "put and del are for merge procedures; a query only reads".into(),
                    ));
                }
                if ctx.revised.len() >= LIMITS.mutations {
                    return Err(script_error(format!(
                        "the revised update exceeds {} changes",
                        LIMITS.mutations
                    )));
                }
                ctx.revised.push(m);
                Ok(())
            })
        };
        engine.register_fn("put", move |k: ImmutableString, v: ImmutableString| {
            add(Mutation::Put(k.to_string(), v.to_string()))
        });
        engine.register_fn("del", move |k: ImmutableString| {
            add(Mutation::Del(k.to_string()))
        });
        Sandbox {
            engine,
            cache: RefCell::new(HashMap::new()),
        }
    }

    fn compile_cached(&self, src: &str) -> Result<Rc<AST>, Box<EvalAltResult>> {
        if let Some(ast) = self.cache.borrow().get(src) {
            return Ok(ast.clone());
        }
        let ast = Rc::new(
            self.engine
                .compile(src)
                .map_err(|e| -> Box<EvalAltResult> { e.into() })?,
        );
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= 512 {
            cache.clear();
        }
        cache.insert(src.to_string(), ast.clone());
        Ok(ast)
    }

    fn eval(&self, src: &str) -> Result<Dynamic, String> {
        let ast = self.compile_cached(src).map_err(|e| e.to_string())?;
        self.engine
            .eval_ast::<Dynamic>(&ast)
            .map_err(|e| e.to_string())
    }
}

impl BayouWrite {
    /// The write as one line of JSON (its scenario and wire-independent form).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a BayouWrite always serialises")
    }

    /// Parses the JSON form.
    pub fn from_json(text: &str) -> Result<BayouWrite, String> {
        let w: BayouWrite =
            serde_json::from_str(text).map_err(|e| format!("bad Bayou write: {e}"))?;
        w.validate()?;
        Ok(w)
    }
}

/// Applies mutations to a database key by key (used by `Db::execute`).
pub(crate) fn mutation_key_value(m: &Mutation) -> (Bytes, Option<Bytes>) {
    match m {
        Mutation::Put(k, v) => (
            Bytes::copy_from_slice(k.as_bytes()),
            Some(Bytes::copy_from_slice(v.as_bytes())),
        ),
        Mutation::Del(k) => (Bytes::copy_from_slice(k.as_bytes()), None),
    }
}
