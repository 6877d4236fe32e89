//! Raw client connections for the connection-limit tests of both nodes
//! (included with `#[path]` by bayou-node's and chord-node's `limits`
//! tests; not a test target of its own).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A plain TCP connection to a node on loopback (10 s read timeout).
pub fn raw(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Sends an inline command and reads one chunk of the reply.
pub fn say(s: &mut TcpStream, line: &str) -> String {
    s.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Reads until the server closes the connection; what it sent.
pub fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("the server closes the connection");
    String::from_utf8_lossy(&out).into_owned()
}

/// A field of `INFO` asked on `conn`.
pub fn info_field(conn: &mut redis::Connection, field: &str) -> String {
    let text: String = redis::cmd("INFO").query(conn).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO:\n{text}"))
        .to_string()
}

/// A client that pipelines `GET key` (a large value) and never reads a
/// byte: the connection, and the thread writing (it returns how many
/// requests went out before a write failed or 4,096 were sent).
pub fn flood_unread(port: u16, key: &str) -> (TcpStream, JoinHandle<usize>) {
    let slow = raw(port);
    slow.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut writer = slow.try_clone().unwrap();
    let get = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len()).repeat(256);
    let thread = std::thread::spawn(move || {
        let mut sent = 0usize;
        for _ in 0..16 {
            if writer.write_all(get.as_bytes()).is_err() {
                break;
            }
            sent += 256;
        }
        sent
    });
    (slow, thread)
}

/// What another client saw while a slow one was open.
pub struct Served {
    /// From the slow client's admission to its close.
    pub closed_after: Duration,
    /// `GET small` answers in that time.
    pub answered: u32,
    /// The slowest of them.
    pub slowest: Duration,
}

/// Waits until the slow client is admitted (two clients: `good` and it;
/// its accept may come after `good`'s next request), then sends `GET small`
/// on `good` every 20 ms, each answered `s`, until `good` is the only
/// client again (at most 20 s).
///
/// `since` is an instant before the slow client connected: `closed_after`
/// counts from it, so it is never shorter than the time the server really
/// let the slow client stall, however late this function sees it admitted.
pub fn serve_beside_slow_client(good: &mut redis::Connection, since: Instant) -> Served {
    let admitted = Instant::now();
    while info_field(good, "connected_clients") != "2" {
        assert!(
            admitted.elapsed() < Duration::from_secs(10),
            "the slow client was never admitted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = Instant::now();
    let mut answered = 0u32;
    let mut slowest = Duration::ZERO;
    loop {
        let t = Instant::now();
        let got: Option<String> = redis::cmd("GET").arg("small").query(good).unwrap();
        assert_eq!(got.as_deref(), Some("s"));
        slowest = slowest.max(t.elapsed());
        answered += 1;
        if info_field(good, "connected_clients") == "1" {
            return Served {
                closed_after: since.elapsed(),
                answered,
                slowest,
            };
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the slow client was never closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
