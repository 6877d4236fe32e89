//! `chord`: run the Chord simulator's experiments and regenerate the plots.
//!
//! ```text
//! chord sim fingers     --bits 7 --nodes 10,32,60,90,105,120 --node 90 [--json]
//! chord sim lookup      --bits 7 --nodes 10,32,60,90,105,120 --from 90 (--key-id 15 | --key NAME) [--route iterative|recursive|successor] [--json]
//! chord sim path-length --nodes N --lookups L --seed S [--bits 160] [--json]
//! chord sim load-balance --nodes N --keys K --virtual V --seed S [--runs 1] [--bits 160] [--json]
//! chord sim failures    --nodes N --keys K --fail P --successors R --seed S [--replicas R+1] [--lookups 10000] [--bits 160] [--json]
//! chord sim churn       --nodes N --rate R --seed S [--duration-s 7200] [--runs 1] [--successors 8] [--bits 160] [--json]
//! chord sim data        [--seeds 1000] [--from 0] [--nodes 5] [--copies 3] [--keys 6] [--fault-ms 3000] [--no-faults] [--json]
//! chord plots [--out docs/chord] [--quick]
//! chord serve   --listen 127.0.0.1:8001 [--join 127.0.0.1:8000] --data-dir ./n1 [--successors 8] [--replicas 3] [--virtual 1] [--id ID]
//! chord cluster --nodes 8 [--base-port 8000] [--data-dir DIR] [--http ADDR]
//! chord ring    --node 127.0.0.1:8000
//! ```
//!
//! With `--json` the last line of output is one JSON object. Errors go to stderr
//! with a non-zero exit status.

/// The allocator of every node binary ([`server_kit::Allocator`]).
#[global_allocator]
static ALLOCATOR: server_kit::Allocator = server_kit::Allocator;

mod plots;
mod ring;

use std::process::ExitCode;

use anyhow::{Context, bail};
use chord_core::{Id, IdSpace};
use chord_sim::experiments::{self, ChurnParams, FailuresParams, Route};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// The Chord distributed lookup protocol: simulator and experiments.
#[derive(Parser, Debug)]
#[command(name = "chord", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one simulator experiment.
    #[command(subcommand)]
    Sim(SimCmd),
    /// Re-run the experiments and write the SVG plots and the ring picture.
    Plots(PlotsArgs),
    /// Run one networked Chord node (RESP clients and peers on --listen).
    Serve(chord_node::cli::ServeArgs),
    /// Run a local ring of `serve` processes.
    Cluster(chord_node::cli::ClusterArgs),
    /// Make a local test CA and certificates for --tls-cert, --tls-key and
    /// --tls-ca (see docs/tls.md).
    TlsCerts(server_kit::tls::CertsArgs),
    /// The ring at a glance from one node: members, up or down, ownership
    /// share, keys owned and stored.
    Ring(ring::RingArgs),
}

#[derive(Subcommand, Debug)]
enum SimCmd {
    /// Print one node's finger table (m rows, interval [start, end)).
    Fingers(FingersArgs),
    /// Look a key up and print every node the lookup visits.
    Lookup(LookupArgs),
    /// Path length of random lookups on a stable ring of random ids (SIGCOMM Fig. 10).
    PathLength(PathLengthArgs),
    /// Keys per physical node, with virtual nodes (SIGCOMM Fig. 8, 9).
    LoadBalance(LoadBalanceArgs),
    /// Lookups after a fraction of nodes fails at once (SIGCOMM Fig. 11).
    Failures(FailuresArgs),
    /// The data plane under faults (loss, duplication, partitions, crashes
    /// that lose unsynced data, joins, leaves), with its checkers.
    Data(DataArgs),
    /// Lookup failures while nodes join and fail (SIGCOMM Fig. 12).
    Churn(ChurnArgs),
}

#[derive(Args, Debug)]
struct JsonFlag {
    /// Print one JSON object as the last line of output.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct FingersArgs {
    /// Identifier length m (3..=160).
    #[arg(long, default_value_t = 160)]
    bits: u32,
    /// Comma-separated node ids.
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<u64>,
    /// The node whose finger table to print.
    #[arg(long)]
    node: u64,
    #[command(flatten)]
    out: JsonFlag,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RouteArg {
    /// The origin asks each hop (SIGCOMM Fig. 4).
    Iterative,
    /// Each hop forwards (ToN Fig. 5).
    Recursive,
    /// Successor pointers only.
    Successor,
}

#[derive(Args, Debug)]
struct LookupArgs {
    /// Identifier length m (3..=160).
    #[arg(long, default_value_t = 160)]
    bits: u32,
    /// Comma-separated node ids.
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<u64>,
    /// The node where the lookup starts.
    #[arg(long)]
    from: u64,
    /// The key's identifier.
    #[arg(long, conflicts_with = "key", required_unless_present = "key")]
    key_id: Option<String>,
    /// A key name, hashed with SHA-1 mod 2^m.
    #[arg(long)]
    key: Option<String>,
    /// How the lookup is routed.
    #[arg(long, value_enum, default_value_t = RouteArg::Iterative)]
    route: RouteArg,
    #[command(flatten)]
    out: JsonFlag,
}

#[derive(Args, Debug)]
struct PathLengthArgs {
    /// Number of nodes N.
    #[arg(long)]
    nodes: usize,
    /// Number of lookups.
    #[arg(long)]
    lookups: usize,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Identifier length m.
    #[arg(long, default_value_t = 160)]
    bits: u32,
    #[command(flatten)]
    out: JsonFlag,
}

#[derive(Args, Debug)]
struct LoadBalanceArgs {
    /// Number of physical nodes N.
    #[arg(long)]
    nodes: usize,
    /// Number of keys K.
    #[arg(long)]
    keys: usize,
    /// Virtual nodes per physical node.
    #[arg(long = "virtual", default_value_t = 1)]
    virtual_nodes: usize,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Independent placements pooled into the statistics (the paper used 20).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Identifier length m.
    #[arg(long, default_value_t = 160)]
    bits: u32,
    #[command(flatten)]
    out: JsonFlag,
}

#[derive(Args, Debug)]
struct FailuresArgs {
    /// Number of nodes N.
    #[arg(long)]
    nodes: usize,
    /// Number of keys K.
    #[arg(long)]
    keys: usize,
    /// Fraction of nodes that fail at once, in [0, 1).
    #[arg(long)]
    fail: f64,
    /// Successor-list length r.
    #[arg(long, default_value_t = 20)]
    successors: usize,
    /// Copies of each key in total: the owner and its first k - 1
    /// successors, 1 to r + 1 (default: r + 1).
    #[arg(long)]
    replicas: Option<usize>,
    /// Lookups issued after the ring re-stabilizes.
    #[arg(long, default_value_t = 10_000)]
    lookups: usize,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Identifier length m.
    #[arg(long, default_value_t = 160)]
    bits: u32,
    #[command(flatten)]
    out: JsonFlag,
}

#[derive(Args, Debug)]
struct DataArgs {
    /// Number of seeds to run.
    #[arg(long, default_value_t = 1000)]
    seeds: u64,
    /// First seed (seeds run from here upwards; a failing seed replays alone
    /// with `--from SEED --seeds 1`).
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Processes at the start.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Copies of every key (k).
    #[arg(long, default_value_t = 3)]
    copies: usize,
    /// Keys, one sequential client each.
    #[arg(long, default_value_t = 6)]
    keys: usize,
    /// Length of the fault phase in simulated ms.
    #[arg(long, default_value_t = 3000)]
    fault_ms: u64,
    /// Run without faults.
    #[arg(long)]
    no_faults: bool,
    #[command(flatten)]
    out: JsonFlag,
}

#[derive(serde::Serialize, Default)]
struct DataSummary {
    seeds: u64,
    violations: Vec<String>,
    writes_acked: u64,
    reads_done: u64,
    crashes: u64,
    joins: u64,
    leaves: u64,
    power_cuts: u64,
    partitions: u64,
    operator_restarts: u64,
    tombstones_purged: u64,
}

#[derive(Args, Debug)]
struct ChurnArgs {
    /// Initial number of nodes.
    #[arg(long, default_value_t = 500)]
    nodes: usize,
    /// Node joins per second and failures per second (each Poisson).
    #[arg(long)]
    rate: f64,
    /// Random seed (runs use seed, seed+1, ...).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulated seconds per run.
    #[arg(long, default_value_t = 7200)]
    duration_s: u64,
    /// Independent runs (the paper used 10).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Successor-list length r.
    #[arg(long, default_value_t = 8)]
    successors: usize,
    /// Identifier length m.
    #[arg(long, default_value_t = 160)]
    bits: u32,
    #[command(flatten)]
    out: JsonFlag,
}

#[derive(Args, Debug)]
struct PlotsArgs {
    /// Output directory.
    #[arg(long, default_value = "docs/chord")]
    out: std::path::PathBuf,
    /// Smaller experiments (seconds instead of minutes), for a quick look.
    #[arg(long)]
    quick: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Plots(a) => plots::regenerate(&a.out, a.quick),
        Cmd::Serve(a) => chord_node::cli::serve(a),
        Cmd::Cluster(a) => chord_node::cli::cluster(a),
        Cmd::TlsCerts(a) => chord_node::cli::tls_certs(a),
        Cmd::Ring(a) => ring::run(a),
        Cmd::Sim(SimCmd::Fingers(a)) => {
            let r = experiments::fingers(a.bits, &a.nodes, a.node)?;
            if a.out.json {
                return print_json(&r);
            }
            println!("finger table of node {} (m = {})", r.node, a.bits);
            println!(
                "{:>4}  {:>10}  {:>22}  {:>10}",
                "k", "start", "interval", "node"
            );
            for (k, f) in r.fingers.iter().enumerate() {
                println!(
                    "{:>4}  {:>10}  {:>22}  {:>10}",
                    k + 1,
                    f.start.to_string(),
                    format!("[{}, {})", f.start, f.end),
                    f.node.to_string()
                );
            }
            Ok(())
        }
        Cmd::Sim(SimCmd::Lookup(a)) => {
            let space = IdSpace::new(a.bits)?;
            let key = match (&a.key_id, &a.key) {
                (Some(k), _) => {
                    let id: Id = k.parse().map_err(anyhow::Error::msg)?;
                    if !space.contains(id) {
                        bail!("key id {id} does not fit in {} bits", a.bits);
                    }
                    id
                }
                (None, Some(name)) => space.hash(name.as_bytes()),
                (None, None) => bail!("give --key-id ID or --key NAME"),
            };
            let route = match a.route {
                RouteArg::Iterative => Route::Iterative,
                RouteArg::Recursive => Route::Recursive,
                RouteArg::Successor => Route::Successor,
            };
            let r = experiments::lookup(a.bits, &a.nodes, a.from, key, route)?;
            if a.out.json {
                return print_json(&r);
            }
            let path: Vec<String> = r.path.iter().map(|p| p.to_string()).collect();
            println!("key {} is owned by node {}", r.key, r.owner);
            println!(
                "path: {} ({} hops)",
                path.join(" -> "),
                r.path.len().saturating_sub(1)
            );
            Ok(())
        }
        Cmd::Sim(SimCmd::PathLength(a)) => {
            let r = experiments::path_length(a.nodes, a.lookups, a.seed, a.bits)?;
            if a.out.json {
                return print_json(&r);
            }
            println!(
                "N = {}, {} lookups, seed {}: mean {:.3} hops (path length - 1), p1 {}, p99 {}",
                r.nodes, r.lookups, a.seed, r.mean_hops, r.p1, r.p99
            );
            println!(
                "paper's count (to the key's predecessor) = mean - 1 = {:.3}; 1/2 log2 N = {:.3}",
                r.mean_hops - 1.0,
                0.5 * (r.nodes as f64).log2()
            );
            for (h, c) in &r.histogram {
                println!("{h:>4} hops: {c}");
            }
            Ok(())
        }
        Cmd::Sim(SimCmd::LoadBalance(a)) => {
            let r = experiments::load_balance(
                a.nodes,
                a.keys,
                a.virtual_nodes,
                a.seed,
                a.runs,
                a.bits,
            )?;
            if a.out.json {
                return print_json(&r);
            }
            println!(
                "N = {}, K = {}, {} virtual nodes, {} run(s), seed {}",
                a.nodes, a.keys, a.virtual_nodes, a.runs, a.seed
            );
            println!(
                "keys per node: mean {:.1}, p1 {} ({:.2}x mean), p99 {} ({:.2}x mean), max {} ({:.2}x mean)",
                r.mean,
                r.p1,
                r.p1 / r.mean,
                r.p99,
                r.p99 / r.mean,
                r.max,
                r.max / r.mean
            );
            Ok(())
        }
        Cmd::Sim(SimCmd::Failures(a)) => {
            let p = FailuresParams {
                nodes: a.nodes,
                keys: a.keys,
                fail: a.fail,
                successors: a.successors,
                replicas: a.replicas.unwrap_or(a.successors + 1),
                lookups: a.lookups,
                seed: a.seed,
                bits: a.bits,
            };
            if p.replicas < 1 || p.replicas > p.successors + 1 {
                bail!("--replicas must be between 1 and successors + 1");
            }
            let (r, d) = experiments::failures(&p).context("failures experiment")?;
            if a.out.json {
                return print_json(&r);
            }
            println!(
                "N = {}, K = {}, fail {} ({} nodes), r = {}, replicas {}, seed {}",
                p.nodes, p.keys, p.fail, d.failed_nodes, p.successors, p.replicas, p.seed
            );
            println!(
                "re-stabilized in {:.0} simulated s; {} events",
                d.stabilize_s, d.events
            );
            println!(
                "failed lookups {:.4} ({} timeouts), lost keys {:.6}, mean hops of good lookups {:.2}",
                r.failed_lookup_fraction, d.lookup_errors, r.lost_key_fraction, d.mean_hops
            );
            Ok(())
        }
        Cmd::Sim(SimCmd::Data(a)) => {
            use chord_sim::data_sim::{DataSimConfig, run_seed};
            if a.copies == 0 || a.nodes < a.copies || a.keys == 0 {
                bail!("need --copies >= 1, --nodes >= --copies and --keys >= 1");
            }
            let cfg = DataSimConfig {
                nodes: a.nodes,
                copies: a.copies,
                keys: a.keys,
                fault_ms: a.fault_ms,
                faults: !a.no_faults,
            };
            let mut sum = DataSummary {
                seeds: a.seeds,
                ..DataSummary::default()
            };
            for seed in a.from..a.from + a.seeds {
                match run_seed(&cfg, seed) {
                    Ok(r) => {
                        sum.writes_acked += r.writes_acked;
                        sum.reads_done += r.reads_done;
                        sum.crashes += r.crashes;
                        sum.joins += r.joins;
                        sum.leaves += r.leaves;
                        sum.power_cuts += r.power_cut as u64;
                        sum.partitions += r.partitioned as u64;
                        sum.operator_restarts += r.operator_restarts;
                        sum.tombstones_purged += r.purged;
                    }
                    Err(e) => sum.violations.push(e),
                }
            }
            if a.out.json {
                print_json(&sum)?;
            } else {
                println!(
                    "{} seeds from {}: {} violations; {} writes acknowledged, {} reads, {} crashes, \
                     {} joins, {} leaves, {} power cuts, {} partitions, {} operator restarts, \
                     {} tombstones purged",
                    a.seeds,
                    a.from,
                    sum.violations.len(),
                    sum.writes_acked,
                    sum.reads_done,
                    sum.crashes,
                    sum.joins,
                    sum.leaves,
                    sum.power_cuts,
                    sum.partitions,
                    sum.operator_restarts,
                    sum.tombstones_purged
                );
                for v in &sum.violations {
                    println!("{v}");
                }
            }
            if !sum.violations.is_empty() {
                bail!("{} seeds violated a checker", sum.violations.len());
            }
            Ok(())
        }
        Cmd::Sim(SimCmd::Churn(a)) => {
            let p = ChurnParams {
                nodes: a.nodes,
                rate: a.rate,
                seed: a.seed,
                duration_s: a.duration_s,
                runs: a.runs,
                successors: a.successors,
                bits: a.bits,
            };
            let r = experiments::churn(&p)?;
            if a.out.json {
                return print_json(&r);
            }
            println!(
                "{} nodes, {} joins/s and {} failures/s, {} s x {} run(s), seed {}",
                p.nodes, p.rate, p.rate, p.duration_s, p.runs, p.seed
            );
            println!(
                "failed lookups: {:.4} +- {:.4} (95% CI) of {}",
                r.failed_lookup_fraction, r.ci95, r.lookups
            );
            Ok(())
        }
    }
}
