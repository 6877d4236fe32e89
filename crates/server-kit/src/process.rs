//! What both node binaries set up the same way: logging to stderr
//! ([`init_tracing`]), the async runtime ([`runtime`]) and the shutdown
//! signal ([`shutdown_signal`]: SIGINT or SIGTERM).

use std::future::Future;

/// The tokio runtime for networking and the node's logic, with `threads`
/// worker threads: 0 for one per core, 1 for a single-threaded runtime
/// (no work stealing, no wake-ups across threads: the cheapest when the
/// node shares the machine's cores with others, as in a local cluster).
/// Storage always has a thread of its own.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        if threads > 1 {
            b.worker_threads(threads);
        }
        b
    };
    b.enable_all().build()
}

/// The worker threads each of `nodes` node processes of a local cluster
/// gets when the operator did not choose (`requested` 0): the machine's
/// cores shared among them, at least one each.
pub fn cluster_worker_threads(requested: usize, nodes: usize) -> usize {
    if requested > 0 {
        return requested;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / nodes.max(1)).max(1)
}

/// Logs to stderr with `filter` (tracing-subscriber's `EnvFilter` syntax,
/// e.g. `info` or `chord_node=debug`); without one, with `RUST_LOG`, or
/// `info` when that is unset too. A second call does nothing.
pub fn init_tracing(filter: Option<&str>) {
    let filter = match filter {
        Some(f) => tracing_subscriber::EnvFilter::new(f),
        None => tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A future that completes on the first SIGINT (Ctrl-C) or SIGTERM, with
/// the signal's name. The handlers are installed when this is called (from
/// inside a tokio runtime), so a signal that arrives before the future is
/// first polled is not missed.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = &'static str> + Send + 'static> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        })
    }
}
