//! Prometheus metrics: one registry per gateway (tests run several in one process), served as
//! text on the metrics listener. Counters are only touched in the `logging` hook, once per
//! request, off the decision path.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::Arc;

/// The gateway's metric families.
pub struct Metrics {
    pub registry: Registry,
    /// `portcullis_requests_total{route, status_class}`
    pub requests: IntCounterVec,
    /// `portcullis_upstream_latency_seconds{upstream}`: time to the upstream's response header.
    pub upstream_latency: HistogramVec,
    /// `portcullis_upstream_healthy{upstream, address}`: 1 healthy, 0 not.
    pub upstream_healthy: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "portcullis_requests_total",
                "Requests by route and status class",
            ),
            &["route", "status_class"],
        )
        .expect("valid metric");
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "portcullis_upstream_latency_seconds",
                "Time from sending the request upstream to its response header",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["upstream"],
        )
        .expect("valid metric");
        let upstream_healthy = IntGaugeVec::new(
            Opts::new(
                "portcullis_upstream_healthy",
                "Health of each upstream peer",
            ),
            &["upstream", "address"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(upstream_latency.clone()),
            Box::new(upstream_healthy.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        Metrics {
            registry,
            requests,
            upstream_latency,
            upstream_healthy,
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `1xx`..`5xx` label for a status code.
pub fn status_class(status: u16) -> &'static str {
    STATUS_CLASSES[status_index(status)]
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn status_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// One route's series, looked up once at start-up instead of hashing label values on every
/// request.
pub struct RouteSeries {
    requests: [prometheus::IntCounter; 5],
    pub upstream_latency: prometheus::Histogram,
}

impl RouteSeries {
    pub fn new(metrics: &Metrics, route_label: &str, upstream: &str) -> Self {
        RouteSeries {
            requests: STATUS_CLASSES
                .map(|class| metrics.requests.with_label_values(&[route_label, class])),
            upstream_latency: metrics.upstream_latency.with_label_values(&[upstream]),
        }
    }

    pub fn count(&self, status: u16) {
        self.requests[status_index(status)].inc();
    }
}

/// Gauges read at scrape time rather than kept current (upstream peer health).
pub trait ScrapeGauges: Send + Sync {
    fn refresh(&self, metrics: &Metrics);
}

/// The metrics listener's app: `GET /metrics` (any path) answers the text format.
pub struct MetricsApp {
    pub metrics: Arc<Metrics>,
    pub gauges: Arc<dyn ScrapeGauges>,
}

#[async_trait]
impl ServeHttp for MetricsApp {
    async fn response(&self, _session: &mut ServerSession) -> Response<Vec<u8>> {
        self.gauges.refresh(&self.metrics);
        let body = self.metrics.render();
        Response::builder()
            .status(200)
            .header("Content-Type", "text/plain; version=0.0.4")
            .header("Content-Length", body.len())
            .body(body)
            .expect("valid response")
    }
}
