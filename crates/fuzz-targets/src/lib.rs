//! The fuzz targets: one function per decoder that takes untrusted bytes.
//!
//! Each function feeds arbitrary bytes to one decoder and checks what must
//! hold for *any* input: it returns (an error is fine), it does not panic,
//! and where the decoder has a property beyond that (incremental parsing
//! agrees with whole-buffer parsing; a decoded bundle can be imported; a
//! scenario that parses runs without violating an invariant), that property.
//! A broken property is a panic, which is what the fuzzer reports.
//!
//! The same functions run in two places:
//!
//! * `fuzz/` (outside the workspace) wraps each in a `libfuzzer-sys` target
//!   for coverage-guided runs: `fuzz/run` (a short run of each) and
//!   `fuzz/run --seconds 3600` (a long one); see `docs/testing.md`;
//! * `tests/corpus.rs` replays every committed input (`fuzz/corpus/<target>`
//!   and `fuzz/regressions/<target>`) through them under `cargo test`, so an
//!   input that once crashed a decoder stays a test.
//!
//! [`TARGETS`] lists them by the name used for their directories.

#![warn(missing_docs)]

use bayou_core::{Replica, Role, ServerId};
use bytes::BytesMut;
use server_kit::{Limits, parse};

/// A fuzz target: its name (the directory of its corpus) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[Target] = &[
    ("resp_request", resp_request),
    ("bayou_peer_frame", bayou_peer_frame),
    ("chord_peer_frame", chord_peer_frame),
    ("bayou_bundle", bayou_bundle),
    ("bayou_scenario", bayou_scenario),
    ("store_records", store_records),
    ("bayou_session_token", bayou_session_token),
];

/// Small limits, so the fuzzer reaches them with small inputs.
const RESP_LIMITS: Limits = Limits {
    max_bulk_bytes: 64,
    max_args: 16,
    max_inline_bytes: 128,
};

/// What a parser makes of a whole input: the requests, then how it stopped.
#[derive(Debug, PartialEq)]
enum Parsed {
    Requests(Vec<Vec<bytes::Bytes>>, Stop),
}

#[derive(Debug, PartialEq)]
enum Stop {
    /// The rest is an incomplete request (these many bytes left).
    Incomplete(usize),
    /// A protocol error, after which a server closes the connection.
    Error(String),
}

fn parse_all(buf: &mut BytesMut) -> Parsed {
    let mut requests = Vec::new();
    loop {
        match parse(buf, &RESP_LIMITS) {
            Ok(Some(args)) => requests.push(args),
            Ok(None) => return Parsed::Requests(requests, Stop::Incomplete(buf.len())),
            Err(e) => return Parsed::Requests(requests, Stop::Error(e.to_string())),
        }
    }
}

/// RESP client requests (`server_kit::parse`): whatever the bytes, parsing
/// stops at an incomplete request or a protocol error, and bytes that
/// arrive in two reads (split where the first byte says) parse to the same
/// requests as bytes that arrive at once — a server reads a socket in
/// pieces of any size. Every parsed argument respects the limits.
pub fn resp_request(data: &[u8]) {
    let whole = parse_all(&mut BytesMut::from(data));
    let Parsed::Requests(requests, _) = &whole;
    for args in requests {
        assert!(args.len() <= RESP_LIMITS.max_args, "too many arguments");
        for a in args {
            assert!(a.len() <= RESP_LIMITS.max_bulk_bytes.max(RESP_LIMITS.max_inline_bytes));
        }
    }

    // The same bytes in two reads.
    let split = data.first().map_or(0, |&b| b as usize % (data.len() + 1));
    let mut buf = BytesMut::from(&data[..split]);
    let mut requests = Vec::new();
    let mut stopped = None;
    loop {
        match parse(&mut buf, &RESP_LIMITS) {
            Ok(Some(args)) => requests.push(args),
            Ok(None) => break,
            Err(e) => {
                stopped = Some(Stop::Error(e.to_string()));
                break;
            }
        }
    }
    let in_pieces = match stopped {
        Some(stop) => Parsed::Requests(requests, stop),
        None => {
            buf.extend_from_slice(&data[split..]);
            let Parsed::Requests(rest, stop) = parse_all(&mut buf);
            requests.extend(rest);
            Parsed::Requests(requests, stop)
        }
    };
    // A protocol error seen early (in the first read) may be one the whole
    // buffer reports too, only later requests would differ; compare the
    // requests both agree on and require the same ending when both read
    // everything.
    match (&whole, &in_pieces) {
        (Parsed::Requests(a, Stop::Incomplete(_)), Parsed::Requests(b, Stop::Incomplete(_))) => {
            assert_eq!(a, b, "split reads parse differently");
            assert_eq!(whole, in_pieces, "split reads leave different remainders");
        }
        (Parsed::Requests(a, _), Parsed::Requests(b, _)) => {
            let n = a.len().min(b.len());
            assert_eq!(a[..n], b[..n], "split reads parse differently");
        }
    }
}

/// Bayou's peer frames (`bayou_node::wire::decode`): an error or a message,
/// never a panic, whatever the payload.
pub fn bayou_peer_frame(data: &[u8]) {
    // The whole payload (version and checksum first), and the bytes as a
    // body: mutated payloads mostly fail their checksum, so the message
    // decoder behind it is fuzzed directly too.
    let _ = bayou_node::wire::decode(data);
    if let Ok(msg) = bayou_node::wire::decode_body(data) {
        // What decodes must encode and decode again.
        let again = bayou_node::wire::encode(&msg);
        let back = bayou_node::wire::decode(&again).expect("re-encoded message decodes");
        assert_eq!(
            bayou_node::wire::encode(&back),
            again,
            "encoding is not stable"
        );
    }
}

/// Chord's peer frames (`chord_node::wire::decode`): an error or a message,
/// never a panic; what decodes encodes and decodes to the same bytes.
pub fn chord_peer_frame(data: &[u8]) {
    let _ = chord_node::wire::decode(data);
    if let Ok(body) = chord_node::wire::decode_body(data) {
        let again = chord_node::wire::encode(&body);
        let back = chord_node::wire::decode(&again).expect("re-encoded frame decodes");
        assert_eq!(
            chord_node::wire::encode(&back),
            again,
            "encoding is not stable"
        );
    }
}

/// Bundle files (`bayou_core::bundle::decode`): a bad, truncated or foreign
/// file is an error; a file that decodes can be imported into a new replica
/// (accepted or refused with an error, never a panic), and importing it a
/// second time changes nothing (import is idempotent, [P97 §4.1]).
pub fn bayou_bundle(data: &[u8]) {
    let Ok(bundle) = bayou_core::bundle::decode(data) else {
        return;
    };
    let id = ServerId::new("fuzz").expect("a valid server id");
    let mut replica = Replica::new(id, Role::Secondary);
    if replica.import_bundle(&bundle).is_ok() {
        let summary = replica.summary();
        let _ = replica.import_bundle(&bundle);
        assert_eq!(
            replica.summary(),
            summary,
            "a second import changed the replica"
        );
    }
}

/// Scenario files (`bayou_sim::parse`, then `World::run` with every checker
/// on): a file that does not parse or names unknown servers is an error
/// with a line number; one that runs must not violate an invariant (its
/// `expect-converged` lines are dropped: a mutated scenario may well not
/// converge). Inputs
/// are capped (64 lines of 4 KiB) so one run stays fast.
pub fn bayou_scenario(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.len() > 4096 {
        return;
    }
    let Ok(mut lines) = bayou_sim::parse(text) else {
        return;
    };
    // `expect-converged` is the scenario's own assertion, which a mutated
    // scenario rightly fails; every other check is the simulator's.
    lines.retain(|l| l.command != bayou_sim::Command::ExpectConverged);
    if lines.len() > 64 {
        return;
    }
    let mut world = bayou_sim::World::new(true);
    if let Err(e) = world.run(&lines, |_| {}) {
        assert!(
            !e.violation,
            "invariant violated at line {}: {}",
            e.line, e.message
        );
    }
}

/// Stored records, as a node reads them back from its data directory at
/// start: the first byte picks the decoder (a Bayou log record, a Chord key
/// record), the next eight the key it is stored under, the rest the stored
/// bytes. An error (a failed checksum, a bad format) or a record, which
/// sealed again decodes to itself.
pub fn store_records(data: &[u8]) {
    if data.len() < 9 {
        return;
    }
    let key: [u8; 8] = data[1..9].try_into().expect("eight bytes");
    let stored = &data[9..];
    if data[0].is_multiple_of(2) {
        let seq = u64::from_be_bytes(key);
        if let Ok(items) = bayou_store::decode_log_record(seq, stored) {
            let again = bayou_store::encode_log_record(seq, &items);
            assert!(
                bayou_store::decode_log_record(seq, &again) == Ok(items),
                "a re-sealed record decodes differently"
            );
        }
    } else if let Ok(r) = chord_node::store::decode_record(&key, stored) {
        let again = chord_node::store::encode_record(&key, &r);
        assert_eq!(
            chord_node::store::decode_record(&key, &again).ok(),
            Some(r),
            "a re-sealed record decodes differently"
        );
    }
}

/// Session tokens (`bayou_core::ClientSession::from_token`, the argument of
/// `BAYOU.SESSION USE`): anything that is not a token is an error; a token
/// that decodes is canonical (encoding the session again gives the same
/// text), so one session has one token.
pub fn bayou_session_token(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(session) = bayou_core::ClientSession::from_token(&text) {
        assert_eq!(session.token(), text, "a decoded token is not canonical");
    }
}
