//! Connection limits with real processes on loopback: with `--max-clients`
//! reached a client is refused with Redis' error while a joining node (a
//! peer) is still served; `--client-timeout-ms` closes an idle client;
//! `--client-write-timeout-ms` closes a client that pipelines requests and
//! never reads while another client keeps being answered.

mod common;

#[path = "../../server-kit/tests/support/clients.rs"]
mod clients;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use clients::{info_field, raw, read_to_close, say};
use common::*;

/// Holds `n` client connections to `port`, retrying while the harness's
/// own probes still count against the limit.
fn hold(port: u16, n: usize) -> Vec<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut held = Vec::new();
    while held.len() < n {
        let mut s = raw(port);
        match say(&mut s, "PING").as_str() {
            "+PONG\r\n" => held.push(s),
            other => {
                assert!(Instant::now() < deadline, "no slot: {other:?}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    held
}

/// `rejected_connections` in an `INFO` reply.
fn rejected(info: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix("rejected_connections:"))
        .unwrap_or_else(|| panic!("no rejected_connections in {info}"))
        .parse()
        .unwrap()
}

#[test]
fn max_clients_refuses_a_client_but_a_joining_node_gets_in() {
    let mut ring = Ring::start_opts(1, 1, 4, &["--max-clients", "5"]);
    let port = ring.nodes[0].port;
    let mut held = hold(port, 5);
    let before = rejected(&say(&mut held[0], "INFO"));
    let mut sixth = raw(port);
    sixth.write_all(b"PING\r\n").unwrap();
    assert_eq!(
        read_to_close(&mut sixth),
        "-ERR max number of clients reached\r\n"
    );
    for s in &mut held {
        assert_eq!(say(s, "PING"), "+PONG\r\n");
    }
    let info = say(&mut held[0], "INFO");
    assert!(info.contains("connected_clients:5\r\n"), "{info}");
    assert!(info.contains("maxclients:5\r\n"), "{info}");
    assert_eq!(rejected(&info), before + 1, "{info}");
    // A second node joins through the full one: peer connections are not
    // clients, so the ring forms.
    let second = ring.add_node();
    let addr = ring.nodes[second].addr();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let successors = say(&mut held[0], "CHORD.SUCCESSORS");
        if successors.contains(&addr) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} never became a successor: {successors}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(rejected(&say(&mut held[0], "INFO")), before + 1);
    // After one client closes, a new one is accepted.
    drop(held.pop());
    let again = hold(port, 1);
    assert_eq!(again.len(), 1);
}

#[test]
fn an_idle_client_is_closed_after_the_client_timeout() {
    let ring = Ring::start_opts(1, 1, 4, &["--client-timeout-ms", "500"]);
    let port = ring.nodes[0].port;
    let mut idle = raw(port);
    let mut busy = raw(port);
    assert_eq!(say(&mut idle, "PING"), "+PONG\r\n");
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        assert_eq!(say(&mut busy, "PING"), "+PONG\r\n");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(read_to_close(&mut idle), "");
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(say(&mut busy, "PING"), "+PONG\r\n");
}

#[test]
fn a_client_that_never_reads_is_closed_and_others_are_served_meanwhile() {
    let ring = Ring::start_opts(1, 1, 4, &["--client-write-timeout-ms", "1500"]);
    let port = ring.nodes[0].port;
    let mut good = ring.conn(0);
    let value = "v".repeat(16 << 10);
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query(&mut good)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("small")
        .arg("s")
        .query(&mut good)
        .unwrap();
    wait_until(Duration::from_secs(10), "only one client", || {
        info_field(&mut good, "connected_clients") == "1"
    });
    // Pipelined GETs of the 16 KiB value, never reading a byte.
    let since = Instant::now();
    let (slow, writer) = clients::flood_unread(port, "big");
    let clients::Served {
        closed_after,
        answered,
        slowest,
    } = clients::serve_beside_slow_client(&mut good, since);
    assert!(writer.join().unwrap() > 0, "the slow client sent nothing");
    assert!(
        closed_after >= Duration::from_millis(1500),
        "closed after {closed_after:?}, before the write timeout"
    );
    assert!(answered >= 20, "only {answered} answers while it was open");
    assert!(slowest < Duration::from_secs(1), "a GET took {slowest:?}");
    drop(slow);
}
