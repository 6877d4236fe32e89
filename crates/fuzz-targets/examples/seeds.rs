//! Writes the seed corpus of every fuzz target from real encoders, so the
//! fuzzer starts from valid inputs and mutates them:
//!
//! ```text
//! cargo run -p fuzz-targets --example seeds -- fuzz/corpus
//! ```
//!
//! Each seed's file name is the hash of its bytes, as libFuzzer names what
//! it finds, so running this again adds nothing twice.

use std::path::Path;

use bayou_core::{ChunkLimits, Op, Replica, Role, ServerId, bundle};
use bayou_node::wire::{self as bwire, Msg};
use bytes::Bytes;
use chord_core::Id;
use chord_core::data::{DataMsg, Record, Version};
use chord_core::node::{Message, NodeRef};
use chord_node::wire::{Body, Request, Response};
use std::net::SocketAddr;

fn main() -> std::io::Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let out = Path::new(&out);
    let mut n = 0;
    let mut put = |target: &str, bytes: &[u8]| -> std::io::Result<()> {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{:016x}", fnv(bytes))), bytes)?;
        n += 1;
        Ok(())
    };

    for request in [
        &b"*1\r\n$4\r\nPING\r\n"[..],
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n",
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n",
        b"PING\r\nSET k \"a b\\x41\" 'c'\r\n",
        b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n",
        b"*0\r\n\r\n*-1\r\n",
    ] {
        put("resp_request", request)?;
    }

    // A primary with a few writes, a replica behind it: their messages, and
    // bundles both as items and as a full-state transfer (after truncation).
    let p = ServerId::new("P").expect("id");
    let a = ServerId::new("A").expect("id");
    let mut primary = Replica::new(p.clone(), Role::Primary { autocommit: true });
    let mut replica = Replica::new(a.clone(), Role::Secondary);
    for (i, key) in ["x", "y", "x"].iter().enumerate() {
        let op = Op::Put {
            key: Bytes::from(key.to_string()),
            value: Bytes::from(format!("v{i}")),
        };
        primary.client_write(i as u64 + 1, op);
    }
    replica.client_write(
        7,
        Op::Delete {
            key: Bytes::from_static(b"y"),
        },
    );
    let msgs = vec![
        Msg::Hello {
            from: a.clone(),
            to: p.clone(),
        },
        Msg::Welcome { from: p.clone() },
        Msg::Pull {
            summary: replica.summary(),
        },
        Msg::End,
        Msg::PushOffer,
        Msg::Ack {
            new_writes: 3,
            commits: 2,
        },
        Msg::Error {
            message: "no".into(),
            version: bwire::PROTOCOL_VERSION,
        },
    ];
    for m in &msgs {
        put("bayou_peer_frame", &bwire::encode(m)[6..])?;
    }
    let limits = ChunkLimits {
        items: 2,
        bytes: 1 << 10,
    };
    for file in bundle::export(&mut primary, replica.summary(), 1 << 20, limits) {
        put("bayou_bundle", &file)?;
        if let Ok(b) = bundle::decode(&file) {
            for chunk in b.chunks {
                put(
                    "bayou_peer_frame",
                    &bwire::encode(&Msg::Chunk { chunk })[6..],
                )?;
            }
        }
    }
    // Truncated: the replica is now behind the truncation point.
    primary.checkpoint(Some(0));
    for file in bundle::export(&mut primary, replica.summary(), 200, limits) {
        put("bayou_bundle", &file)?;
    }

    // Chord frames: a ring message, a request and its answer, data messages.
    let id = Id::from_be_bytes([7; 20]);
    let addr: SocketAddr = "127.0.0.1:7000".parse().expect("an address");
    let me = NodeRef { id, addr };
    let chord_record = Record {
        name: b"k".to_vec(),
        value: Some(b"v".to_vec()),
        version: Version {
            stamp: 1,
            writer: id,
        },
        author: None,
    };
    for body in [
        Body::Chord {
            to: id,
            from: me.clone(),
            msg: Message::Ping { req: 1 },
        },
        Body::Chord {
            to: id,
            from: me.clone(),
            msg: Message::State {
                req: 2,
                pred: Some(me.clone()),
                succs: vec![me.clone()],
            },
        },
        Body::Request {
            id: 3,
            req: Request::Whoami,
        },
        Body::Response {
            id: 3,
            resp: Response::Ids(vec![id]),
        },
        Body::Data {
            from: addr,
            msg: DataMsg::Read { req: 4, key: id },
        },
        Body::Data {
            from: addr,
            msg: DataMsg::Write {
                req: 5,
                key: id,
                record: chord_record.clone(),
            },
        },
    ] {
        put("chord_peer_frame", &chord_node::wire::encode(&body)[6..])?;
    }

    // Stored records: a selector byte, an eight-byte key, the stored bytes.
    let mut fresh = Replica::new(p.clone(), Role::Primary { autocommit: true });
    fresh.client_write(
        1,
        Op::Put {
            key: Bytes::from_static(b"x"),
            value: Bytes::from_static(b"1"),
        },
    );
    fresh.client_write(
        2,
        Op::Delete {
            key: Bytes::from_static(b"x"),
        },
    );
    for (seq, item) in fresh.items_for(&Default::default()).enumerate() {
        let mut rec = vec![0u8];
        rec.extend_from_slice(&(seq as u64).to_be_bytes());
        rec.extend(bayou_store::encode_log_record(seq as u64, &[item]));
        put("store_records", &rec)?;
    }
    let key = 42u64.to_be_bytes();
    let mut rec = vec![1u8];
    rec.extend_from_slice(&key);
    rec.extend(chord_node::store::encode_record(&key, &chord_record));
    put("store_records", &rec)?;

    for example in ["slides", "meetings", "bibliography", "truncation"] {
        let path = format!("examples/{example}.bayou");
        if let Ok(text) = std::fs::read(&path) {
            put("bayou_scenario", &text)?;
        }
    }
    // Session tokens: empty, and with both vectors and pending writes.
    let mut session = bayou_core::ClientSession::new(bayou_core::Guarantees::ALL);
    put("bayou_session_token", session.token().as_bytes())?;
    let (tp, ta) = (
        ServerId::new("P").expect("id"),
        ServerId::new("A").expect("id"),
    );
    let mut read = bayou_core::VersionVector::new();
    read.advance(&bayou_core::WriteId::new(12, tp));
    read.advance(&bayou_core::WriteId::new(1 << 40, ta.clone()));
    session.record_read(&read);
    session.record_write(&bayou_core::WriteId::new(17, ta.clone()));
    session.record_write(&bayou_core::WriteId::new(18, ta));
    put("bayou_session_token", session.token().as_bytes())?;

    eprintln!("wrote {n} seeds under {}", out.display());
    Ok(())
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}
