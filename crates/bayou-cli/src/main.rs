//! `bayou`: run Bayou scenarios and randomised simulations, and run replicas
//! on the network (`serve`, `cluster`).
//!
//! The binary is thin: parsing arguments, reading files and printing. The
//! protocol lives in `bayou-core`, the simulation in `bayou-sim`, the server
//! in `bayou-node`.

/// The allocator of every node binary ([`server_kit::Allocator`]).
#[global_allocator]
static ALLOCATOR: server_kit::Allocator = server_kit::Allocator;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod app;
mod bundle;
mod status;

use bayou_node::cli::{ClusterArgs, ServeArgs};
use bayou_sim::random::{self, Params, Workload};
use bayou_sim::{World, parse};

#[derive(Parser)]
#[command(
    name = "bayou",
    version,
    about = "Bayou: weakly consistent replicated storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one replica: Redis clients and peers on --listen, data in --data-dir.
    Serve(ServeArgs),
    /// Run a whole local cluster in one process: P (the primary), A, B, …
    Cluster(ClusterArgs),
    /// Make a local test CA and certificates for --tls-cert, --tls-key and
    /// --tls-ca (see docs/tls.md).
    TlsCerts(server_kit::tls::CertsArgs),
    /// Create a replica's signing key if missing and print its keyring
    /// line (`<id> <hex public key>`), for --signing-key and --keyring.
    Keys(bayou_node::keys::KeysArgs),
    /// The paper's applications (meeting rooms, bibliography) as clients
    /// of a running cluster.
    App {
        #[command(subcommand)]
        command: app::AppCmd,
    },
    /// The cluster at a glance from one replica: members, up or down, role,
    /// CSN and commit lag, tentative writes, version vectors.
    Status(status::StatusArgs),
    /// Anti-entropy over files: export what a replica lacks, carry the
    /// files, import them.
    Bundle {
        #[command(subcommand)]
        command: bundle::BundleCmd,
    },
    /// Run a scenario file (see examples/) and print each `show`.
    Sim {
        /// The scenario file.
        file: PathBuf,
        /// Print each `show` as one line of JSON.
        #[arg(long)]
        json: bool,
        /// Check every invariant after each command (as random runs do).
        #[arg(long)]
        check: bool,
        /// Print each `show` with the servers side by side, as the slides do.
        #[arg(long, conflicts_with = "json")]
        columns: bool,
        /// Also draw every `show` into an SVG figure at this path (a row per
        /// step, captioned with the `show` line's comment).
        #[arg(long, value_name = "OUT.svg")]
        svg: Option<PathBuf>,
    },
    /// Randomised simulation: generate and check runs from seeds.
    Random {
        /// Run only this seed.
        #[arg(long, conflicts_with_all = ["start", "seeds"])]
        seed: Option<u64>,
        /// The first seed of a range.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// How many seeds to run, from --start.
        #[arg(long, default_value_t = 1000)]
        seeds: u64,
        /// With --seed: print the seed's scenario instead of running it.
        #[arg(long, requires = "seed")]
        emit: bool,
        /// Commands per run before healing, at most.
        #[arg(long, default_value_t = Params::default().max_steps)]
        max_steps: usize,
        /// What clients write: `kv` (W and D) or `meetings` (meeting-room
        /// requests with dependency checks and merge procedures).
        #[arg(long, default_value = "kv", value_parser = parse_workload)]
        workload: Workload,
    },
}

fn parse_workload(s: &str) -> Result<Workload, String> {
    match s {
        "kv" => Ok(Workload::KeyValue),
        "meetings" => Ok(Workload::Meetings),
        other => Err(format!("unknown workload {other:?}: use kv or meetings")),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bayou: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Serve(args) => {
            bayou_node::cli::init_tracing();
            bayou_node::cli::serve(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Cluster(args) => {
            bayou_node::cli::init_tracing();
            bayou_node::cli::cluster(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::TlsCerts(args) => {
            bayou_node::cli::tls_certs(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Keys(args) => {
            println!("{}", bayou_node::keys::keys(&args)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::App { command } => {
            app::run(command)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status(args) => {
            status::run(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bundle { command } => {
            bundle::run(command)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Sim {
            file,
            json,
            check,
            columns,
            svg,
        } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let lines = parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            // Each `show`'s caption is its line's comment, else its line number.
            let mut captions = bayou_sim::render::captions(&lines).into_iter();
            let mut world = World::new(check);
            let mut first = true;
            let mut steps = Vec::new();
            let result = world.run(&lines, |snapshot| {
                if json {
                    println!("{}", snapshot.to_json());
                } else {
                    if !first {
                        println!();
                    }
                    if columns {
                        print!("{}", bayou_sim::render::columns(&snapshot));
                    } else {
                        print!("{}", snapshot.to_text());
                    }
                }
                first = false;
                if svg.is_some() {
                    steps.push((captions.next().unwrap_or_default(), snapshot));
                }
            });
            result.map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            if let Some(out) = svg {
                std::fs::write(&out, bayou_sim::render::svg(&steps))
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
                eprintln!("wrote {}", out.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Random {
            seed,
            start,
            seeds,
            emit,
            max_steps,
            workload,
        } => {
            let params = Params {
                max_steps,
                workload,
            };
            if let Some(seed) = seed {
                if emit {
                    print!("{}", random::generate(seed, params));
                    return Ok(ExitCode::SUCCESS);
                }
                return Ok(match random::run_seed(seed, params) {
                    Ok(()) => {
                        println!("seed {seed}: ok");
                        ExitCode::SUCCESS
                    }
                    Err(failure) => {
                        eprintln!("{failure}");
                        ExitCode::FAILURE
                    }
                });
            }
            let mut failed = 0u64;
            let mut ran = 0u64;
            for s in start..start.saturating_add(seeds) {
                ran += 1;
                if let Err(failure) = random::run_seed(s, params) {
                    failed += 1;
                    eprintln!("{failure}");
                    if failed >= 5 {
                        eprintln!("stopping after 5 failures");
                        break;
                    }
                }
            }
            println!(
                "{} passed, {failed} failed (seeds {start}..{})",
                ran - failed,
                start + ran
            );
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
