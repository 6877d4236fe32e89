//! The optional HTTP listener both nodes offer with `--http ADDR`:
//! Prometheus metrics (`/metrics`), a health check for process supervisors
//! (`/healthz`), and whatever pages and JSON a node adds to the router.
//!
//! * [`bind`] opens the listener, with a clear error when the address is
//!   taken;
//! * [`router`] is the base router: `/metrics` encodes a
//!   [`Registry`] in the OpenMetrics text format, `/healthz` asks the
//!   node's [`Health`] check;
//! * [`serve`] runs a router until shutdown;
//! * [`Scrape`] writes metrics read at scrape time (counters and gauges a
//!   node already keeps) from a [`Collector`], so nothing is counted twice;
//! * [`ProcessCollector`] reports the process's resident memory.
//!
//! axum and prometheus-client are re-exported so the nodes use the same
//! versions.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use axum;
pub use prometheus_client;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

/// The content type of `/metrics` (OpenMetrics text, which Prometheus
/// scrapes).
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the HTTP listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Binding the address failed.
    #[error("cannot listen for HTTP on {addr}: {io}{hint}")]
    Bind {
        /// The `--http` address.
        addr: String,
        /// The error.
        io: std::io::Error,
        /// A hint for the usual causes.
        hint: &'static str,
    },
}

/// Binds `addr` for HTTP.
pub async fn bind(addr: &str) -> Result<TcpListener, HttpError> {
    TcpListener::bind(addr)
        .await
        .map_err(|io| bind_error(addr, io))
}

/// Binds `addr` for HTTP outside a runtime (a process that starts one
/// later); [`serve_std`] serves it.
pub fn bind_std(addr: &str) -> Result<std::net::TcpListener, HttpError> {
    std::net::TcpListener::bind(addr).map_err(|io| bind_error(addr, io))
}

fn bind_error(addr: &str, io: std::io::Error) -> HttpError {
    let hint = match io.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another process listens there: choose another --http address)"
        }
        std::io::ErrorKind::AddrNotAvailable => " (not an address of this machine)",
        std::io::ErrorKind::PermissionDenied => " (a port below 1024 needs privileges)",
        _ => "",
    };
    HttpError::Bind {
        addr: addr.to_string(),
        io,
        hint,
    }
}

/// A node's health check: `Ok` when it serves, or why not.
pub type Health = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Gathers, before each scrape, what a node's collectors read (for a node
/// whose state lives in tasks that answer through channels).
pub type Refresh = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The base router: `GET /metrics` (the registry, encoded at each scrape)
/// and `GET /healthz` (`200 ok`, or `503` with the reason `health` gives).
pub fn router(registry: Arc<Registry>, health: Health) -> Router {
    router_refreshing(registry, health, None)
}

/// [`router`], with `refresh` awaited before each scrape.
pub fn router_refreshing(
    registry: Arc<Registry>,
    health: Health,
    refresh: Option<Refresh>,
) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                let refresh = refresh.clone();
                async move {
                    if let Some(r) = refresh {
                        r().await;
                    }
                    metrics_response(&registry)
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let health = health.clone();
                async move {
                    match health() {
                        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
                    }
                }
            }),
        )
}

fn metrics_response(registry: &Registry) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {e}\n"),
        )
            .into_response(),
    }
}

/// An HTML page embedded in the binary.
pub fn html(page: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        page,
    )
        .into_response()
}

/// A JSON reply that pages on other nodes' listeners may fetch too
/// (`Access-Control-Allow-Origin: *`: the data is what the node's metrics
/// already show, and a node's page polls its peers' listeners).
pub fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Serves `router` on `listener` until `shutdown` flips to `true`.
pub fn serve(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    info!(%addr, "HTTP listener: /metrics, /healthz, /");
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            warn!(%addr, "HTTP listener stopped: {e}");
        }
    })
}

/// [`serve`] for a listener from [`bind_std`] (inside a runtime).
pub fn serve_std(
    listener: std::net::TcpListener,
    router: Router,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    Ok(serve(TcpListener::from_std(listener)?, router, shutdown))
}

/// Writes metrics whose values are read at scrape time, from a
/// [`Collector`]. Names follow Prometheus conventions: a counter's name is
/// given without `_total` (the encoder appends it), units are part of the
/// name (`_seconds`, `_bytes`).
pub struct Scrape<'a> {
    encoder: DescriptorEncoder<'a>,
}

impl<'a> Scrape<'a> {
    /// Wraps the encoder a [`Collector`] is given.
    pub fn new(encoder: DescriptorEncoder<'a>) -> Self {
        Scrape { encoder }
    }

    /// A counter (`name_total`).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        let c = ConstCounter::new(value);
        c.encode(
            self.encoder
                .encode_descriptor(name, help, None, c.metric_type())?,
        )
    }

    /// A gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: i64) -> fmt::Result {
        let g = ConstGauge::new(value);
        g.encode(
            self.encoder
                .encode_descriptor(name, help, None, g.metric_type())?,
        )
    }

    /// A gauge with a fractional value.
    pub fn gauge_f64(&mut self, name: &str, help: &str, value: f64) -> fmt::Result {
        let g = ConstGauge::new(value);
        g.encode(
            self.encoder
                .encode_descriptor(name, help, None, g.metric_type())?,
        )
    }

    /// A counter family: one sample per `(labels, count)`.
    pub fn counters(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, u64)>,
    ) -> fmt::Result {
        self.family(
            name,
            help,
            MetricType::Counter,
            samples.into_iter().map(|(l, n)| (l, ConstCounter::new(n))),
        )
    }

    /// A gauge family: one sample per `(labels, value)`.
    pub fn gauges(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, i64)>,
    ) -> fmt::Result {
        self.family(
            name,
            help,
            MetricType::Gauge,
            samples.into_iter().map(|(l, n)| (l, ConstGauge::new(n))),
        )
    }

    /// A histogram family: one histogram per `labels` (several replicas of
    /// one process under one name).
    pub fn histograms<'h>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, &'h Histogram)>,
    ) -> fmt::Result {
        self.family(
            name,
            help,
            MetricType::Histogram,
            samples.into_iter().map(|(l, h)| (l, HistogramRef(h))),
        )
    }

    /// One descriptor, then every sample with its labels: a family appears
    /// once however many label sets it has, as the format requires.
    fn family<M: EncodeMetric>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: impl IntoIterator<Item = (Labels, M)>,
    ) -> fmt::Result {
        let mut m = self.encoder.encode_descriptor(name, help, None, kind)?;
        for (labels, metric) in samples {
            metric.encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// A histogram encoded where it is (one of a node's own).
#[derive(Debug)]
struct HistogramRef<'h>(&'h Histogram);

impl EncodeMetric for HistogramRef<'_> {
    fn encode(&self, encoder: prometheus_client::encoding::MetricEncoder) -> fmt::Result {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// The labels of one sample, e.g. `[("replica", "A"), ("peer", "P")]`.
pub type Labels = Vec<(String, String)>;

/// Labels from `(name, value)` pairs.
pub fn labels<const N: usize>(pairs: [(&str, &str); N]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The process's resident set size in bytes (`VmRSS` in
/// `/proc/self/status`, Linux); `None` elsewhere.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// `process_resident_memory_bytes`, read at each scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let mut s = Scrape::new(encoder);
        if let Some(rss) = resident_memory_bytes() {
            s.gauge(
                "process_resident_memory_bytes",
                "Resident memory of the whole process, in bytes.",
                rss as i64,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Two(Histogram, Histogram);

    impl Collector for Two {
        fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
            let mut s = Scrape::new(encoder);
            s.counter("demo_items", "Items.", 7)?;
            s.gauges(
                "demo_level_bytes",
                "Levels.",
                [(labels([("peer", "A")]), 3), (labels([("peer", "B")]), 4)],
            )?;
            s.histograms(
                "demo_seconds",
                "Times.",
                [
                    (labels([("replica", "P")]), &self.0),
                    (labels([("replica", "A")]), &self.1),
                ],
            )
        }
    }

    #[test]
    fn scraped_values_are_encoded_with_conventional_names_and_one_descriptor() {
        let (p, a) = (Histogram::new([0.1, 1.0]), Histogram::new([0.1, 1.0]));
        p.observe(0.05);
        a.observe(0.5);
        a.observe(5.0);
        let mut r = Registry::default();
        r.register_collector(Box::new(Two(p, a)));
        r.register_collector(Box::new(ProcessCollector));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &r).unwrap();
        assert!(out.contains("# TYPE demo_items counter"), "{out}");
        assert!(out.contains("demo_items_total 7"), "{out}");
        assert!(out.contains("demo_level_bytes{peer=\"A\"} 3"), "{out}");
        assert!(out.contains("demo_level_bytes{peer=\"B\"} 4"), "{out}");
        assert_eq!(
            out.matches("# TYPE demo_seconds histogram").count(),
            1,
            "{out}"
        );
        assert!(out.contains("demo_seconds_count{replica=\"P\"} 1"), "{out}");
        assert!(out.contains("demo_seconds_count{replica=\"A\"} 2"), "{out}");
        assert!(
            out.contains("demo_seconds_bucket{le=\"1.0\",replica=\"A\"} 1")
                || out.contains("demo_seconds_bucket{replica=\"A\",le=\"1.0\"} 1"),
            "{out}"
        );
        let rss: u64 = out
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .expect("rss line")
            .parse()
            .unwrap();
        assert!(rss > 1 << 20, "{rss}");
    }

    #[tokio::test]
    async fn a_taken_address_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let e = bind(&addr).await.unwrap_err().to_string();
        assert!(
            e.contains(&addr) && e.contains("choose another --http"),
            "{e}"
        );
    }
}
