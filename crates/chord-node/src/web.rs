//! The HTTP listener of `--http` for Chord: the kit's `/metrics` and
//! `/healthz` ([`server_kit::http`]), and the live ring view.
//!
//! | path | what |
//! |---|---|
//! | `/` | the ring view (HTML, JS and SVG embedded in the binary) |
//! | `/api/nodes` | the listeners the page polls: this one and each `--peer-http` |
//! | `/api/ring` | this node's ring state ([`RingState`]): virtual nodes, predecessor, successors, fingers, key counts |
//! | `/api/lookup?key=K` | a lookup of `K` from this node, with its path ([`LookupView`]) |
//! | `/metrics` | Prometheus metrics of this node |
//! | `/healthz` | `ok`, or 503 once the node is stopping |
//!
//! `chord cluster --http ADDR` serves the page and `/api/nodes` on ADDR
//! and gives its nodes the next ports ([`cluster_router`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::Query;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use server_kit::http::prometheus_client::registry::Registry;
use server_kit::http::{self, Health, ProcessCollector, Refresh, axum};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use crate::metrics::{LookupView, RingState};
use crate::node::Shared;

/// The page, embedded in the binary.
const PAGE: &str = include_str!("../assets/chord.html");

/// Longest key the page may look up, in bytes.
const MAX_LOOKUP_KEY: usize = 1024;

/// A listener the page polls: `base` + `api/ring`.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// The URL prefix of the listener (empty for the page's own).
    pub base: String,
}

fn nodes_route(listed: Vec<Listed>) -> axum::routing::MethodRouter {
    let listed = Arc::new(listed);
    get(move || {
        let listed = listed.clone();
        async move { http::json(&*listed) }
    })
}

/// The router of one node; `peer_http` are other nodes' `--http`
/// addresses, shown on the page too.
pub fn router(shared: Arc<Shared>, peer_http: Vec<String>) -> Router {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProcessCollector));
    crate::metrics::register(&shared, &mut registry);
    let s = shared.clone();
    let health: Health = Arc::new(move || {
        if *s.shutdown.borrow() {
            Err("node is stopping".into())
        } else {
            Ok(())
        }
    });
    let s = shared.clone();
    let refresh: Refresh = Arc::new(move || Box::pin(crate::metrics::refresh(s.clone())));
    let listed = std::iter::once(String::new())
        .chain(peer_http.into_iter().map(|a| format!("http://{a}/")))
        .map(|base| Listed { base })
        .collect();
    let (ring, look) = (shared.clone(), shared);
    http::router_refreshing(Arc::new(registry), health, Some(refresh))
        .route("/", get(|| async { http::html(PAGE) }))
        .route("/api/nodes", nodes_route(listed))
        .route(
            "/api/ring",
            get(move || {
                let s = ring.clone();
                async move { http::json(&crate::metrics::ring_state(&s).await) }
            }),
        )
        .route(
            "/api/lookup",
            get(move |Query(q): Query<HashMap<String, String>>| {
                let s = look.clone();
                async move {
                    let key = q.get("key").map_or("", String::as_str);
                    if key.is_empty() || key.len() > MAX_LOOKUP_KEY {
                        return (
                            axum::http::StatusCode::BAD_REQUEST,
                            format!("key must be 1 to {MAX_LOOKUP_KEY} bytes\n"),
                        )
                            .into_response();
                    }
                    http::json(&crate::metrics::lookup_view(&s, key).await)
                }
            }),
        )
}

/// The router of `chord cluster --http`: the page, listing the nodes'
/// listeners at `node_http` (the page polls them directly).
pub fn cluster_router(node_http: &[String]) -> Router {
    let listed = node_http
        .iter()
        .map(|a| Listed {
            base: format!("http://{a}/"),
        })
        .collect();
    Router::new()
        .route("/", get(|| async { http::html(PAGE) }))
        .route("/api/nodes", nodes_route(listed))
}

/// Serves [`router`] on `listener` until `shutdown` flips.
pub fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    peer_http: Vec<String>,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    http::serve(listener, router(shared, peer_http), shutdown)
}
