//! A session with all four guarantees over a local cluster, moving between
//! replicas as they fail or lag.
//!
//! ```text
//! bayou cluster --replicas 3        # in another terminal: 7000 (P), 7001, 7002
//! cargo run --release -p bayou-client --example session -- 127.0.0.1:7000 127.0.0.1:7001 127.0.0.1:7002
//! ```
//!
//! It appends to a to-do list at one replica, reads it back at each of the
//! others in turn (each must show every item this session added: read your
//! writes), and prints the token, which another process could continue
//! with `Session::resume`.

use bayou_client::{Guarantees, Session};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let replicas: Vec<&str> = if args.is_empty() {
        vec!["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]
    } else {
        args.iter().map(String::as_str).collect()
    };
    let mut session = Session::open(&replicas, Guarantees::ALL)?;
    let key = format!("todo:{}", std::process::id());
    for (i, item) in ["milk", "bread", "eggs"].iter().enumerate() {
        // Send each write to a different replica first: MW keeps them in
        // this order everywhere.
        session.prefer(i % replicas.len());
        let len = session.append(&key, &format!("{item};"))?;
        println!("appended {item:5} at {} (length {len})", session.replica());
    }
    for i in 0..replicas.len() {
        session.prefer(i);
        let list = session.get(&key)?.unwrap_or_default();
        println!("read at {}: {list}", session.replica());
        assert!(list.starts_with("milk;bread;eggs;"), "read your writes");
    }
    println!("moves between replicas: {}", session.moves());
    println!("token: {}", session.token());
    Ok(())
}
