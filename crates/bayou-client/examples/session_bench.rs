//! Latency and throughput of session guarantees: clients that move to a
//! random replica before every operation (or `--hop` percent of them), half reads (`GET`) and half
//! writes (`SET`) over a few keys, for each set of guarantees.
//!
//! ```text
//! session_bench [--ops N] [--clients N] [--keys N] [--hop PERCENT] [--modes plain,none,RYW,MR,WFR,MW,ALL] ADDR...
//! ```
//!
//! `plain` sends bare `GET`/`SET` (no session at all); `none` opens a
//! session without guarantees (the cost of carrying the token); the others
//! ask for one guarantee, or all four. One line per mode: operations per
//! second over all clients, p50 and p99 latency of a completed operation
//! (moves to other replicas included), moves, and operations no replica
//! could serve. Run by `bench/bayou-sessions.sh`.

use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use bayou_client::{Error, Guarantee, Guarantees, Options, Session};

struct Args {
    ops: usize,
    clients: usize,
    keys: usize,
    /// Percent of operations before which the client moves to a random
    /// replica.
    hop: usize,
    modes: Vec<String>,
    addrs: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        ops: 2000,
        clients: 4,
        keys: 100,
        hop: 100,
        modes: "plain,none,RYW,MR,WFR,MW,ALL"
            .split(',')
            .map(String::from)
            .collect(),
        addrs: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--ops" => a.ops = value()?.parse().map_err(|e| format!("--ops: {e}"))?,
            "--clients" => a.clients = value()?.parse().map_err(|e| format!("--clients: {e}"))?,
            "--keys" => a.keys = value()?.parse().map_err(|e| format!("--keys: {e}"))?,
            "--hop" => {
                a.hop = value()?.parse().map_err(|e| format!("--hop: {e}"))?;
                if a.hop > 100 {
                    return Err("--hop is a percentage, 0 to 100".into());
                }
            }
            "--modes" => a.modes = value()?.split(',').map(String::from).collect(),
            _ if arg.starts_with("--") => return Err(format!("unknown flag {arg}")),
            _ => a.addrs.push(arg),
        }
    }
    if a.addrs.is_empty() {
        return Err("give the replicas' addresses (host:port …)".into());
    }
    Ok(a)
}

fn guarantees(mode: &str) -> Result<Guarantees, String> {
    match mode {
        "none" => Ok(Guarantees::NONE),
        "ALL" => Ok(Guarantees::ALL),
        g => Guarantee::parse(g)
            .map(|g| Guarantees::NONE.with(g))
            .ok_or(format!("unknown mode {g}")),
    }
}

#[derive(Default)]
struct Outcome {
    latencies: Vec<Duration>,
    moves: u64,
    unavailable: u64,
}

fn plain(args: &Args, client: usize) -> Outcome {
    let mut rng = ChaCha8Rng::seed_from_u64(client as u64 * 7919 + 1);
    let mut conns: Vec<redis::Connection> = args
        .addrs
        .iter()
        .map(|a| {
            redis::Client::open(format!("redis://{a}/"))
                .and_then(|c| c.get_connection())
                .expect("connect")
        })
        .collect();
    let mut out = Outcome::default();
    let mut at = client % args.addrs.len();
    for i in 0..args.ops {
        if rng.random_range(0..100) < args.hop {
            at = rng.random_range(0..args.addrs.len());
        }
        let conn = &mut conns[at];
        let key = format!("bench:{}", rng.random_range(0..args.keys));
        let t = Instant::now();
        if i % 2 == 0 {
            let _: () = redis::cmd("SET").arg(&key).arg(i).query(conn).expect("SET");
        } else {
            let _: Option<String> = redis::cmd("GET").arg(&key).query(conn).expect("GET");
        }
        out.latencies.push(t.elapsed());
    }
    out
}

fn with_session(args: &Args, client: usize, g: Guarantees) -> Outcome {
    let mut rng = ChaCha8Rng::seed_from_u64(client as u64 * 7919 + 1);
    let addrs: Vec<&str> = args.addrs.iter().map(String::as_str).collect();
    let mut s = Session::open(&addrs, g)
        .expect("a session")
        .with_options(Options {
            wait: Duration::from_millis(200),
            ..Options::default()
        });
    let mut out = Outcome::default();
    s.prefer(client % addrs.len());
    for i in 0..args.ops {
        if rng.random_range(0..100) < args.hop {
            s.prefer(rng.random_range(0..addrs.len()));
        }
        let key = format!("bench:{}", rng.random_range(0..args.keys));
        let t = Instant::now();
        let r = if i % 2 == 0 {
            s.set(&key, &i.to_string())
        } else {
            s.get(&key).map(|_| ())
        };
        match r {
            Ok(()) => out.latencies.push(t.elapsed()),
            Err(Error::Unavailable(_)) => out.unavailable += 1,
            Err(e) => panic!("{e}"),
        }
    }
    out.moves = s.moves();
    out
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("session_bench: {e}");
            std::process::exit(2);
        }
    };
    println!(
        "{} clients x {} ops, a random replica of {} before {}% of ops, {} keys, half GET half SET",
        args.clients,
        args.ops,
        args.addrs.len(),
        args.hop,
        args.keys
    );
    println!(
        "{:<6} {:>9} {:>9} {:>9} {:>7} {:>11}",
        "mode", "ops/s", "p50 ms", "p99 ms", "moves", "unavailable"
    );
    for mode in &args.modes {
        let g = if mode == "plain" {
            None
        } else {
            match guarantees(mode) {
                Ok(g) => Some(g),
                Err(e) => {
                    eprintln!("session_bench: {e}");
                    std::process::exit(2);
                }
            }
        };
        let started = Instant::now();
        let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..args.clients)
                .map(|c| {
                    let args = &args;
                    scope.spawn(move || match g {
                        None => plain(args, c),
                        Some(g) => with_session(args, c, g),
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let elapsed = started.elapsed().as_secs_f64();
        let mut all: Vec<Duration> = outcomes.iter().flat_map(|o| o.latencies.clone()).collect();
        all.sort();
        let moves: u64 = outcomes.iter().map(|o| o.moves).sum();
        let unavailable: u64 = outcomes.iter().map(|o| o.unavailable).sum();
        println!(
            "{:<6} {:>9.0} {:>9.3} {:>9.3} {:>7} {:>11}",
            mode,
            all.len() as f64 / elapsed,
            percentile(&all, 0.5),
            percentile(&all, 0.99),
            moves,
            unavailable
        );
    }
}
