//! Redis clients against a Chord node: the kit's client loop gives it the
//! same connection commands, RESP3 and error texts as Bayou's server.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;

/// Sends raw bytes and returns what comes back within a moment.
fn raw(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn resp3_connection_commands_and_error_texts_are_the_kits() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ring = Ring::start(1, 1);
    ring.wait_ring(Duration::from_secs(10));
    let port = ring.nodes[0].port;

    // The `redis` crate in RESP3 mode sends HELLO 3 on connect.
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/?protocol=resp3")).unwrap();
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut con).unwrap();
    assert!(info.contains("resp=3"), "{info}");
    let hello: redis::Value = redis::cmd("HELLO").arg(3).query(&mut con).unwrap();
    match hello {
        redis::Value::Map(m) => {
            assert_eq!(m.len(), 7);
            assert!(m.contains(&(
                redis::Value::BulkString(b"server".to_vec()),
                redis::Value::BulkString(b"chord".to_vec())
            )));
        }
        other => panic!("HELLO 3: {other:?}"),
    }
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    let v: Option<String> = redis::cmd("GET").arg("k").query(&mut con).unwrap();
    assert_eq!(v.as_deref(), Some("v"));
    let vs: Vec<Option<String>> = redis::cmd("MGET")
        .arg("k")
        .arg("nope")
        .query(&mut con)
        .unwrap();
    assert_eq!(vs, vec![Some("v".to_string()), None]);
    let config: redis::Value = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query(&mut con)
        .unwrap();
    assert!(
        matches!(config, redis::Value::Map(ref m) if m.len() == 1),
        "{config:?}"
    );

    // CLIENT SETNAME / GETNAME: nil, OK, then the name.
    let steps: [(&[&str], redis::Value); 3] = [
        (&["GETNAME"], redis::Value::Nil),
        (&["SETNAME", "chord-test"], redis::Value::Okay),
        (
            &["GETNAME"],
            redis::Value::BulkString(b"chord-test".to_vec()),
        ),
    ];
    for (args, want) in steps {
        let got: redis::Value = redis::cmd("CLIENT").arg(args).query(&mut con).unwrap();
        assert_eq!(got, want, "CLIENT {args:?}");
    }

    // MULTI/EXEC: in order, one reply each.
    let (set, got, n): (String, String, i64) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg("t")
        .arg("1")
        .cmd("GET")
        .arg("t")
        .cmd("EXISTS")
        .arg("t")
        .arg("k")
        .query(&mut con)
        .unwrap();
    assert_eq!((set.as_str(), got.as_str(), n), ("OK", "1", 2));

    // COMMAND DOCS and COMMAND COUNT describe the table.
    let docs: redis::Value = redis::cmd("COMMAND")
        .arg("DOCS")
        .arg("get")
        .arg("chord.lookup")
        .query(&mut con)
        .unwrap();
    match docs {
        redis::Value::Map(m) => {
            assert_eq!(m.len(), 2, "{m:?}");
            assert_eq!(m[0].0, redis::Value::BulkString(b"get".to_vec()));
        }
        other => panic!("COMMAND DOCS: {other:?}"),
    }
    let count: i64 = redis::cmd("COMMAND").arg("COUNT").query(&mut con).unwrap();
    assert!(count > 20, "{count}");

    // Wrong arity and unknown commands: the kit's texts, as on Bayou.
    let e = redis::cmd("GET").query::<()>(&mut con).unwrap_err();
    assert!(
        e.to_string()
            .contains("wrong number of arguments for 'get' command"),
        "{e}"
    );
    assert_eq!(
        raw(port, b"GET\r\nMSET a\r\nNOSUCH x\r\nQUIT\r\n"),
        "-ERR wrong number of arguments for 'get' command\r\n\
         -ERR wrong number of arguments for 'mset' command\r\n\
         -ERR unknown command 'NOSUCH', with args beginning with: 'x'\r\n\
         +OK\r\n"
    );
    // The same texts as the kit gives Bayou.
    let mut expected = bytes::BytesMut::new();
    server_kit::command::wrong_arity("get").encode(&mut expected);
    assert!(raw(port, b"GET\r\n").as_bytes().starts_with(&expected));
}

#[path = "../../../tests/clients/libs.rs"]
mod libs;

/// redis-py 8 (sync and asyncio) and node-redis 6 / ioredis with their
/// defaults (RESP3, CLIENT SETINFO, MULTI/EXEC pipelines) against a ring.
#[test]
fn redis_py_node_redis_and_ioredis_work_with_their_defaults() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let ring = Ring::start(3, 2);
    ring.wait_ring(Duration::from_secs(30));
    let port = ring.nodes[1].port;
    if let Some(cmd) = libs::python("chord_py.py", port) {
        libs::run(cmd, "redis-py against Chord");
    }
    if let Some(cmd) = libs::node("chord_node_clients.js", port) {
        libs::run(cmd, "node clients against Chord");
    }
}
