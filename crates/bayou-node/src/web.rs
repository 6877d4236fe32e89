//! The HTTP listener of `--http` for Bayou: the kit's `/metrics` and
//! `/healthz` ([`server_kit::http`]), and the live web view of the
//! replicas' logs.
//!
//! | path | what |
//! |---|---|
//! | `/` | the web view (HTML, JS and SVG embedded in the binary) |
//! | `/api/nodes` | the replicas the page shows: id and the URL of its state |
//! | `/api/state/{id}` | a replica's state ([`WebState`]): bounded log, version vector, last sessions |
//! | `/metrics` | Prometheus metrics of every replica here, labelled `replica` |
//! | `/healthz` | `ok`, or 503 when a replica's storage stopped |
//!
//! `bayou serve` shows its own replica and, for each `--peer-http ID=ADDR`,
//! the state the peer's listener serves (fetched by the browser; a peer
//! that does not answer is shown down). `bayou cluster` shows all its
//! replicas.

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use server_kit::http::prometheus_client::registry::Registry;
use server_kit::http::{self, Health, ProcessCollector, axum};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::node::Node;
pub use crate::node::metrics::WebState;

/// The page, embedded in the binary.
const PAGE: &str = include_str!("../assets/bayou.html");

/// A replica the page shows, and where its state is.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// The replica's id.
    pub id: String,
    /// The URL of its state JSON (relative for a replica of this process).
    pub url: String,
}

/// The router for the replicas `nodes` of this process and the peers
/// `remote` (id, HTTP address) served by other processes.
pub fn router(nodes: Vec<Arc<Node>>, remote: Vec<(String, String)>) -> Router {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProcessCollector));
    crate::node::metrics::Metrics::register(&nodes, &mut registry);
    let health_nodes = nodes.clone();
    let health: Health = Arc::new(move || health_nodes.iter().try_for_each(|n| n.health()));
    let primary = nodes
        .first()
        .and_then(|n| n.primary())
        .map(|p| p.to_string());
    let mut listed: Vec<Listed> = nodes
        .iter()
        .map(|n| Listed {
            id: n.config.id.to_string(),
            url: format!("api/state/{}", n.config.id),
        })
        .chain(remote.into_iter().map(|(id, addr)| Listed {
            url: format!("http://{addr}/api/state/{id}"),
            id,
        }))
        .collect();
    // The primary first, then by id, as the slides draw them.
    listed.sort_by(|a, b| {
        (Some(&a.id) != primary.as_ref(), &a.id).cmp(&(Some(&b.id) != primary.as_ref(), &b.id))
    });
    let listed = Arc::new(listed);
    let nodes = Arc::new(nodes);
    http::router(Arc::new(registry), health)
        .route("/", get(|| async { http::html(PAGE) }))
        .route(
            "/api/nodes",
            get(move || {
                let listed = listed.clone();
                async move { http::json(&*listed) }
            }),
        )
        .route(
            "/api/state/{id}",
            get(move |Path(id): Path<String>| {
                let nodes = nodes.clone();
                async move { state(&nodes, &id) }
            }),
        )
}

fn state(nodes: &[Arc<Node>], id: &str) -> Response {
    match nodes.iter().find(|n| n.config.id.as_str() == id) {
        Some(n) => http::json(&n.web_state()),
        None => (StatusCode::NOT_FOUND, format!("no replica {id} here\n")).into_response(),
    }
}

/// Serves [`router`] on `listener` until `shutdown` flips.
pub fn serve(
    listener: TcpListener,
    nodes: Vec<Arc<Node>>,
    remote: Vec<(String, String)>,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    http::serve(listener, router(nodes, remote), shutdown)
}
