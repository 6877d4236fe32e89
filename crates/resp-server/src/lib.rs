//! What a server needs to speak RESP2, the Redis protocol, shared by the
//! Bayou and Chord network runtimes:
//!
//! * [`resp`]: parsing client requests (multi-bulk arrays and inline
//!   commands) with hard limits, and encoding replies;
//! * [`accept_loop`]: accepting connections on a listener until shutdown,
//!   each served by its own task.
//!
//! Both runtimes serve clients and peers on one port: a peer connection
//! starts with a magic byte string no RESP request can start with, and the
//! runtime's connection handler looks at the first bytes to tell them apart.

#![warn(missing_docs, unreachable_pub)]

pub mod resp;

pub use resp::{Limits, ProtocolError, Reply, parse};

use std::future::Future;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::debug;

/// Accepts connections until `shutdown` changes, spawning `serve(stream)`
/// for each. A failed accept (e.g. out of file descriptors) is logged and
/// retried after a short pause rather than ending the server.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    serve: F,
) where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve(stream));
                }
                Err(e) => {
                    debug!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            _ = shutdown.changed() => return,
        }
    }
}
