//! Connection limits with real processes on loopback: `--max-clients`
//! refuses the client over the limit (and never a peer),
//! `--client-timeout-ms` closes an idle client, and
//! `--client-write-timeout-ms` closes a client that pipelines requests and
//! never reads, while another client keeps being answered.

mod common;

#[path = "../../server-kit/tests/support/clients.rs"]
mod clients;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use clients::{raw, read_to_close};
use common::Cluster;

/// Sends `PING` and reads the reply line.
fn ping(s: &mut TcpStream) -> String {
    s.write_all(b"PING\r\n").unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A field of `INFO` asked over a raw connection.
fn raw_info_field(s: &mut TcpStream, field: &str) -> String {
    s.write_all(b"INFO\r\n").unwrap();
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    // A bulk string: read until its header's length has arrived.
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed while reading INFO");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        if let Some((head, body)) = text.split_once("\r\n") {
            let len: usize = head[1..].parse().unwrap();
            if body.len() >= len + 2 {
                break;
            }
        }
    }
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in INFO:\n{text}"))
        .to_string()
}

/// Waits until no client is connected (the harness's start-up probes have
/// closed).
fn wait_alone(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = raw(port);
        if raw_info_field(&mut s, "connected_clients") == "1" {
            // The server gives back the slot before it closes the socket.
            s.write_all(b"QUIT\r\n").unwrap();
            assert_eq!(read_to_close(&mut s), "+OK\r\n");
            return;
        }
        assert!(Instant::now() < deadline, "clients never went down to 1");
        drop(s);
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn max_clients_refuses_the_sixth_client_but_not_a_peer() {
    let c = Cluster::start(
        &["P", "A"],
        &["--max-clients", "5", "--sync-interval-ms", "0"],
    );
    let a = c.r("A");
    wait_alone(a.port);
    let mut held: Vec<TcpStream> = (0..5).map(|_| raw(a.port)).collect();
    for s in &mut held {
        assert_eq!(ping(s), "+PONG\r\n");
    }
    // The sixth, sending a command or nothing at all, gets Redis' error and
    // is closed.
    let mut sixth = raw(a.port);
    sixth.write_all(b"PING\r\n").unwrap();
    assert_eq!(
        read_to_close(&mut sixth),
        "-ERR max number of clients reached\r\n"
    );
    let mut silent = raw(a.port);
    assert_eq!(
        read_to_close(&mut silent),
        "-ERR max number of clients reached\r\n"
    );
    // The five still work, and INFO tells.
    for s in &mut held {
        assert_eq!(ping(s), "+PONG\r\n");
    }
    assert_eq!(raw_info_field(&mut held[0], "connected_clients"), "5");
    assert_eq!(raw_info_field(&mut held[0], "maxclients"), "5");
    assert_eq!(raw_info_field(&mut held[0], "rejected_connections"), "2");
    // Peers are not clients: a write at P reaches A by an anti-entropy
    // session P opens to A while A's client slots are all taken.
    c.r("P").ok(&["SET", "during", "full"]);
    c.r("P").ok(&["BAYOU.SYNC", "A"]);
    held[0]
        .write_all(b"*2\r\n$3\r\nGET\r\n$6\r\nduring\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let n = held[0].read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"$4\r\nfull\r\n");
    assert_eq!(raw_info_field(&mut held[0], "rejected_connections"), "2");
    // After one closes, a new client is accepted.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut s = raw(a.port);
        s.write_all(b"PING\r\n").unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        if &buf[..n] == b"+PONG\r\n" {
            break;
        }
        assert!(Instant::now() < deadline, "a slot never came free");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_idle_client_is_closed_after_the_client_timeout() {
    let c = Cluster::start(&["P"], &["--client-timeout-ms", "500"]);
    let p = c.r("P");
    let mut idle = raw(p.port);
    let mut silent = raw(p.port);
    let mut busy = raw(p.port);
    assert_eq!(ping(&mut idle), "+PONG\r\n");
    let started = Instant::now();
    // A client that keeps talking is not idle.
    while started.elapsed() < Duration::from_millis(1500) {
        assert_eq!(ping(&mut busy), "+PONG\r\n");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(read_to_close(&mut idle), "");
    // A connection that never sent a byte is idle too.
    assert_eq!(read_to_close(&mut silent), "");
    let closed_after = started.elapsed();
    assert!(
        closed_after >= Duration::from_millis(500),
        "{closed_after:?}"
    );
    assert_eq!(ping(&mut busy), "+PONG\r\n");
}

#[test]
fn a_client_that_never_reads_is_closed_and_others_are_served_meanwhile() {
    let c = Cluster::start(&["P"], &["--client-write-timeout-ms", "1500"]);
    let p = c.r("P");
    let value = "v".repeat(16 << 10);
    p.ok(&["SET", "big", &value]);
    p.ok(&["SET", "small", "s"]);
    wait_alone(p.port);
    let mut good = p.conn();
    // The slow client: pipelined GETs of the 16 KiB value (up to 64 MiB of
    // replies, far beyond the socket buffers), never reading a byte.
    let since = Instant::now();
    let (mut slow, writer) = clients::flood_unread(p.port, "big");
    // The other client is answered throughout, until the slow one is gone.
    let clients::Served {
        closed_after,
        answered,
        slowest,
    } = clients::serve_beside_slow_client(&mut good, since);
    let sent = writer.join().unwrap();
    assert!(sent > 0, "the slow client sent nothing");
    assert!(
        closed_after >= Duration::from_millis(1500),
        "closed after {closed_after:?}, before the write timeout"
    );
    assert!(answered >= 20, "only {answered} answers while it was open");
    assert!(
        slowest < Duration::from_secs(1),
        "a GET took {slowest:?} meanwhile"
    );
    // The slow client finds its connection closed once it reads.
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sink = vec![0u8; 1 << 20];
    loop {
        match slow.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    drop(c);
}

#[test]
fn a_reply_over_the_output_limit_closes_the_connection() {
    let c = Cluster::start(&["P"], &["--client-output-limit-bytes", "100000"]);
    let p = c.r("P");
    p.ok(&["SET", "big", &"v".repeat(200_000)]);
    p.ok(&["SET", "small", "s"]);
    let mut s = raw(p.port);
    assert_eq!(ping(&mut s), "+PONG\r\n");
    s.write_all(b"GET big\r\n").unwrap();
    assert_eq!(read_to_close(&mut s), "");
    // Smaller replies, and pipelines of them past the limit in all, are fine.
    let mut s = raw(p.port);
    let pipeline = "GET small\r\n".repeat(20_000);
    s.write_all(pipeline.as_bytes()).unwrap();
    let want = "$1\r\ns\r\n".repeat(20_000);
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(String::from_utf8(got).unwrap(), want);
}
