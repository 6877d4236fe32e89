//! `bayou-node`: the `serve` and `cluster` subcommands of `bayou`, as a binary
//! of this crate so that its integration tests can run real processes.

/// The allocator of every node binary ([`server_kit::Allocator`]).
#[global_allocator]
static ALLOCATOR: server_kit::Allocator = server_kit::Allocator;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use bayou_node::cli::{self, ClusterArgs, ServeArgs};
use bayou_node::keys::KeysArgs;

#[derive(Parser)]
#[command(name = "bayou-node", version, about = "A Bayou replica server")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one replica.
    Serve(ServeArgs),
    /// Run a local cluster in one process.
    Cluster(ClusterArgs),
    /// Make a local test CA and certificates for --tls-cert, --tls-key and
    /// --tls-ca.
    TlsCerts(server_kit::tls::CertsArgs),
    /// Create a replica's signing key if missing and print its keyring line.
    Keys(KeysArgs),
}

fn main() -> ExitCode {
    cli::init_tracing();
    let result = match Cli::parse().command {
        Cmd::Serve(a) => cli::serve(a),
        Cmd::Cluster(a) => cli::cluster(a),
        Cmd::TlsCerts(a) => cli::tls_certs(a),
        Cmd::Keys(a) => bayou_node::keys::keys(&a).map(|line| println!("{line}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bayou-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}
