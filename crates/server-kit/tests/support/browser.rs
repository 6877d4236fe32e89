//! Headless Chromium for the web-view tests of both nodes (included with
//! `#[path]` by bayou-node's and chord-node's tests; not a test target of
//! its own). [`require`] finds the browser; without one the calling test
//! skips, unless `BAYOU_REQUIRE_BROWSER=1` (CI), where it fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The browser to run: `$BAYOU_CHROMIUM`, or the first Chromium on the
/// usual paths.
pub fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("BAYOU_CHROMIUM") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

/// The browser, or `None` (the test skips) when there is none and
/// `BAYOU_REQUIRE_BROWSER` is not `1`.
pub fn require() -> Option<PathBuf> {
    match chromium() {
        Some(p) => Some(p),
        None if std::env::var("BAYOU_REQUIRE_BROWSER").as_deref() == Ok("1") => {
            panic!(
                "BAYOU_REQUIRE_BROWSER=1 but no Chromium found (apt-get install chromium, or set BAYOU_CHROMIUM)"
            )
        }
        None => {
            eprintln!(
                "skipped: no Chromium (apt-get install chromium); BAYOU_REQUIRE_BROWSER=1 makes this fail"
            );
            None
        }
    }
}

/// Runs the browser headless on `url` with `what` (`--dump-dom` or
/// `--screenshot=…`), letting the page's scripts run for 5 s of virtual
/// time; returns what it printed on stdout.
fn run(bin: &Path, what: &[String], url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--window-size=1400,900",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(what)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium exited with {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s on {url}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(out.path()).unwrap()
}

/// The page's DOM after its scripts ran.
pub fn dump_dom(bin: &Path, url: &str) -> String {
    run(bin, &["--dump-dom".to_string()], url)
}

/// Saves a 1400x900 screenshot of the page at `png`.
pub fn screenshot(bin: &Path, url: &str, png: &Path) {
    let _ = std::fs::remove_file(png);
    run(bin, &[format!("--screenshot={}", png.display())], url);
    let bytes = std::fs::read(png).expect("chromium wrote no screenshot");
    assert!(
        bytes.starts_with(b"\x89PNG"),
        "not a PNG: {}",
        png.display()
    );
}

/// Where a test saves its screenshot: `$BAYOU_SCREENSHOT_DIR` (to refresh
/// the ones under docs/) or the test's temporary directory.
pub fn screenshot_path(name: &str) -> PathBuf {
    match std::env::var_os("BAYOU_SCREENSHOT_DIR") {
        Some(d) => PathBuf::from(d).join(name),
        None => std::env::temp_dir().join(name),
    }
}
