//! `bayou bundle`: the command-line side of anti-entropy over files
//! ([P97 §4.1]), on a real `bayou cluster` with anti-entropy off.

mod common;

use std::process::Command;

use common::{BIN, Cluster, conn};

fn bayou(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().unwrap()
}

#[test]
fn bundle_files_carry_writes_from_a_to_b_and_refuse_a_damaged_file() {
    let c = Cluster::start(&["--sync-interval-ms", "0"]);
    let (a, b) = (c.addr(1), c.addr(2));
    let mut ca = conn(c.base + 1);
    for i in 0..50 {
        redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query::<()>(&mut ca)
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    // Save B's summary, export for it with files of at most 1 KiB.
    let summary = dir.path().join("b.summary");
    let out = bayou(&[
        "bundle",
        "summary",
        "--from",
        &b,
        "--out",
        summary.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let prefix = dir.path().join("a-for-b");
    let out = bayou(&[
        "bundle",
        "export",
        "--from",
        &a,
        "--summary",
        summary.to_str().unwrap(),
        "--out",
        prefix.to_str().unwrap(),
        "--max-bytes",
        "1024",
    ]);
    assert!(out.status.success(), "{out:?}");
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".bundle"))
        .collect();
    files.sort_by_key(|p| p.rsplit('.').nth(1).unwrap().parse::<u32>().unwrap());
    assert!(files.len() >= 2, "{files:?}");
    // A damaged file: a clear error, non-zero exit, B unchanged.
    let bad = dir.path().join("bad.bundle");
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&bad, bytes).unwrap();
    let out = bayou(&["bundle", "import", "--to", &b, bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("checksum"), "{err}");
    let mut cb = conn(c.base + 2);
    let size: i64 = redis::cmd("DBSIZE").query(&mut cb).unwrap();
    assert_eq!(size, 0);
    // The real files, in order.
    let mut args = vec!["bundle", "import", "--to", &b];
    args.extend(files.iter().map(String::as_str));
    let out = bayou(&args);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("imported"), "{text}");
    let size: i64 = redis::cmd("DBSIZE").query(&mut cb).unwrap();
    assert_eq!(size, 50);
    let v: String = redis::cmd("GET").arg("k49").query(&mut cb).unwrap();
    assert_eq!(v, "49");
}
