//! `chord ring --node ADDR`: the ring at a glance from one node. Walks the
//! ring along successor lists (`CHORD.INFO`, `CHORD.SUCCESSORS` over RESP)
//! until it is back where it started, and prints one line per node: id,
//! share of the identifier circle it owns, keys owned and stored,
//! successor-list length, lookups, up or down.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use anyhow::{Context, bail};

/// How long to wait for a node to connect or answer.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Most nodes the walk visits.
const MAX_NODES: usize = 4096;

/// `chord ring`.
#[derive(Debug, clap::Args)]
pub struct RingArgs {
    /// A node's address (its --listen), e.g. 127.0.0.1:8000.
    #[arg(long)]
    node: String,
    /// TLS and AUTH, for nodes that need them.
    #[command(flatten)]
    remote: server_kit::remote::RemoteFlags,
}

struct Node {
    addr: String,
    info: HashMap<String, String>,
    /// Its successor list: (id hex, address).
    succs: Vec<(String, String)>,
}

fn node(remote: &server_kit::remote::RemoteFlags, addr: &str) -> anyhow::Result<Node> {
    let one = |e: redis::RedisError| remote.hint(e);
    let mut con = remote.connect(addr, TIMEOUT)?;
    let info: HashMap<String, String> = redis::cmd("CHORD.INFO").query(&mut con).map_err(one)?;
    let succs: Vec<(String, String)> = redis::cmd("CHORD.SUCCESSORS")
        .query(&mut con)
        .map_err(one)?;
    Ok(Node {
        addr: addr.to_string(),
        info,
        succs,
    })
}

/// The top 64 bits of a hex id, for shares of the circle.
fn top64(id: &str) -> u64 {
    u64::from_str_radix(id.get(..16).unwrap_or("0"), 16).unwrap_or(0)
}

fn field<'a>(n: &'a Node, k: &str) -> &'a str {
    n.info.get(k).map_or("-", String::as_str)
}

/// Runs `chord ring`.
pub fn run(args: RingArgs) -> anyhow::Result<()> {
    let first =
        node(&args.remote, &args.node).with_context(|| format!("cannot ask {}", args.node))?;
    let start_id = field(&first, "id").to_string();
    let mut up: Vec<Node> = vec![first];
    let mut down: Vec<(String, String)> = Vec::new();
    let mut seen: BTreeSet<String> = BTreeSet::from([start_id.clone()]);
    'walk: loop {
        if up.len() + down.len() >= MAX_NODES {
            bail!("more than {MAX_NODES} nodes: stopped walking");
        }
        let last = up.last().expect("at least the first node");
        let candidates = last.succs.clone();
        for (id, addr) in candidates {
            if id == start_id {
                break 'walk;
            }
            if !seen.insert(id.clone()) {
                // A successor list that loops back before the start: the
                // ring is still settling.
                continue;
            }
            match node(&args.remote, &addr) {
                Ok(n) => {
                    up.push(n);
                    continue 'walk;
                }
                Err(e) => down.push((addr, format!("{id:.10} {e}"))),
            }
        }
        break;
    }
    let ids: Vec<u64> = up.iter().map(|n| top64(field(n, "id"))).collect();
    let keys: u64 = up
        .iter()
        .map(|n| field(n, "keys_owned").parse::<u64>().unwrap_or(0))
        .sum();
    println!(
        "ring of {} nodes from {}: {} up{}; {} keys owned in all; successor lists of {}, {} copies per key",
        up.len() + down.len(),
        args.node,
        up.len(),
        if down.is_empty() {
            String::new()
        } else {
            format!(", {} down", down.len())
        },
        keys,
        field(&up[0], "successor_list_length"),
        field(&up[0], "replicas"),
    );
    println!(
        "{:<21} {:<10} {:>6} {:>6} {:>7} {:>5} {:>8}  state",
        "node", "id", "share", "owned", "stored", "succs", "lookups"
    );
    let mut order: Vec<usize> = (0..up.len()).collect();
    order.sort_by_key(|&i| ids[i]);
    for (k, &i) in order.iter().enumerate() {
        let n = &up[i];
        // The arc from the previous live node (its predecessor on a settled
        // ring) to this one.
        let prev = ids[order[(k + order.len() - 1) % order.len()]];
        let arc = ids[i].wrapping_sub(prev);
        let share = if order.len() == 1 {
            100.0
        } else {
            arc as f64 / 2f64.powi(64) * 100.0
        };
        let state = match (field(n, "joined"), field(n, "ready")) {
            ("1", "1") => "up",
            ("1", _) => "up, taking over keys",
            _ => "up, joining",
        };
        println!(
            "{:<21} {:<10} {:>5.1}% {:>6} {:>7} {:>5} {:>8}  {state}",
            n.addr,
            field(n, "id").get(..10).unwrap_or(""),
            share,
            field(n, "keys_owned"),
            field(n, "keys_stored"),
            n.succs.len(),
            field(n, "lookups_ok"),
        );
    }
    for (addr, why) in &down {
        println!("{addr:<21} down: {why}");
    }
    Ok(())
}
