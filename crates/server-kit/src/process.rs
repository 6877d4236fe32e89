//! What both node binaries set up the same way: logging to stderr
//! ([`init_tracing`]) and the shutdown signal ([`shutdown_signal`]:
//! SIGINT or SIGTERM).

use std::future::Future;

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
