//! `chord-node`: the same `serve` and `cluster` subcommands as the `chord`
//! binary, in this crate so that its integration tests can run it.

/// The allocator of every node binary ([`server_kit::Allocator`]).
#[global_allocator]
static ALLOCATOR: server_kit::Allocator = server_kit::Allocator;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "chord-node", about = "A Chord DHT node that speaks RESP")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one node.
    Serve(chord_node::cli::ServeArgs),
    /// Run a local ring of several node processes.
    Cluster(chord_node::cli::ClusterArgs),
    /// Make a local test CA and certificates for --tls-cert, --tls-key and
    /// --tls-ca.
    TlsCerts(server_kit::tls::CertsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Serve(a) => chord_node::cli::serve(a),
        Cmd::Cluster(a) => chord_node::cli::cluster(a),
        Cmd::TlsCerts(a) => chord_node::cli::tls_certs(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
