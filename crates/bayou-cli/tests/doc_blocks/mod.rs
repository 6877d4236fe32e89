//! The documentation drift check, shared by `bayou-cli` and `chord-cli`
//! (`tests/docs.rs` in each): every fenced block marked `console` in
//! `README.md` and `docs/*.md` holds `$ command` lines, each followed by the
//! output the command prints. The check runs each command of its binary from
//! the repository root and compares standard output, then standard error,
//! line by line (trailing spaces ignored). A line `...` in the expected output
//! stands for any number of lines. Blocks marked anything else (`text`, `sh`)
//! are not run: that is where sessions against servers, with their clocks and
//! ports, belong.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Programs a `console` block may run. A block that runs anything else is an
/// error, so nothing shown as checked is silently skipped.
pub const PROGRAMS: &[&str] = &["bayou", "chord"];

/// One `$ command` line of a `console` block and the output shown under it.
#[derive(Debug)]
pub struct Shown {
    /// `page:line` of the `$` line.
    pub place: String,
    /// The command line as written, without the `$ `.
    pub text: String,
    /// The command split into words.
    pub argv: Vec<String>,
    /// The expected output lines.
    pub expected: Vec<String>,
}

/// The repository root (two levels above the crate).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// `README.md` and every `docs/*.md`, in a stable order.
pub fn pages(root: &Path) -> Vec<PathBuf> {
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    let mut all = vec![root.join("README.md")];
    all.extend(docs);
    all
}

/// Every `$ command` of the page's `console` blocks.
pub fn console_commands(page: &str, text: &str) -> Result<Vec<Shown>, String> {
    let mut out: Vec<Shown> = Vec::new();
    let mut in_console = false;
    let mut in_other = false;
    for (i, line) in text.lines().enumerate() {
        let place = format!("{page}:{}", i + 1);
        let fence = line.trim_start().starts_with("```");
        if in_console {
            if fence {
                in_console = false;
            } else if let Some(cmd) = line.strip_prefix("$ ") {
                let argv = split_words(cmd).map_err(|e| format!("{place}: {e}"))?;
                if !PROGRAMS.contains(&argv[0].as_str()) {
                    return Err(format!(
                        "{place}: a console block runs `{}`; only {PROGRAMS:?} are checked \
                         (show other sessions in a `text` block)",
                        argv[0]
                    ));
                }
                out.push(Shown {
                    place,
                    text: cmd.to_string(),
                    argv,
                    expected: Vec::new(),
                });
            } else {
                match out.last_mut() {
                    Some(s) if s.place.starts_with(&format!("{page}:")) => {
                        s.expected.push(line.to_string())
                    }
                    _ => return Err(format!("{place}: output before any `$ command`")),
                }
            }
        } else if in_other {
            if fence {
                in_other = false;
            }
        } else if fence {
            if line.trim() == "```console" {
                in_console = true;
                // A new block: the previous command's output ended.
                out.push(Shown {
                    place: String::new(),
                    text: String::new(),
                    argv: Vec::new(),
                    expected: Vec::new(),
                });
            } else {
                in_other = true;
            }
        }
    }
    if in_console {
        return Err(format!("{page}: a console block is not closed"));
    }
    Ok(out.into_iter().filter(|s| !s.argv.is_empty()).collect())
}

/// Splits a command line into words: blanks separate, '…' and "…" quote,
/// `\` escapes one character. Anything a shell would interpret (pipes,
/// redirections, variables, comments) is refused.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' | '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some(x) => word.push(x),
                        None => return Err(format!("unbalanced {c} in `{line}`")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.push(chars.next().ok_or(format!("trailing \\ in `{line}`"))?);
            }
            '|' | '>' | '<' | ';' | '&' | '$' | '`' | '#' | '*' | '?' => {
                return Err(format!(
                    "`{line}`: `{c}` needs a shell; console blocks run commands directly"
                ));
            }
            _ => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    if words.is_empty() {
        return Err("an empty command".into());
    }
    Ok(words)
}

/// Whether `actual` matches `expected`, where an expected line `...` matches
/// any number of lines (none included).
pub fn matches(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((e, rest)) if e.trim_end() == "..." => {
            (0..=actual.len()).any(|skip| matches(rest, &actual[skip..]))
        }
        Some((e, rest)) => match actual.split_first() {
            Some((a, arest)) => e.trim_end() == a.trim_end() && matches(rest, arest),
            None => false,
        },
    }
}

fn trimmed(lines: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = lines.into_iter().collect();
    while v.last().is_some_and(|l| l.trim().is_empty()) {
        v.pop();
    }
    v
}

/// Runs every shown command of `program` with the binary `exe` and panics,
/// listing each drift, if any output differs. Returns how many ran.
pub fn check(program: &str, exe: &str) -> usize {
    let root = root();
    let mut shown = Vec::new();
    for page in pages(&root) {
        let name = page
            .strip_prefix(&root)
            .unwrap_or(&page)
            .display()
            .to_string();
        let text = std::fs::read_to_string(&page).expect("read a page");
        shown.extend(console_commands(&name, &text).unwrap_or_else(|e| panic!("{e}")));
    }
    let mut ran = 0;
    let mut drift = Vec::new();
    for s in shown.iter().filter(|s| s.argv[0] == program) {
        let out = Command::new(exe)
            .args(&s.argv[1..])
            .current_dir(&root)
            .env_remove("RUST_LOG")
            .output()
            .unwrap_or_else(|e| panic!("{}: cannot run `{}`: {e}", s.place, s.text));
        ran += 1;
        let actual = trimmed(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .chain(String::from_utf8_lossy(&out.stderr).lines())
                .map(str::to_string)
                .collect::<Vec<_>>(),
        );
        let expected = trimmed(s.expected.iter().cloned());
        if !matches(&expected, &actual) {
            drift.push(format!(
                "{}: `{}` ({})\n--- shown ---\n{}\n--- printed ---\n{}\n",
                s.place,
                s.text,
                out.status,
                expected.join("\n"),
                actual.join("\n")
            ));
        }
    }
    assert!(
        drift.is_empty(),
        "{} of {ran} documented `{program}` commands print something else now; \
         update the docs (or the code):\n\n{}",
        drift.len(),
        drift.join("\n")
    );
    ran
}
