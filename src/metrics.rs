//! Prometheus metrics: one registry per gateway (tests run several in one process), served as
//! text on the metrics listener. Per-request series are resolved once per route and touched
//! in the `logging` hook, off the decision path; authentication outcomes are counted where
//! they are decided.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::Arc;

/// The gateway's metric families.
pub struct Metrics {
    pub registry: Registry,
    /// `portcullis_requests_total{route, status_class}`
    pub requests: IntCounterVec,
    /// `portcullis_request_duration_seconds{route}`: from the request head to the end of the
    /// response, through the gateway.
    pub request_duration: HistogramVec,
    /// `portcullis_upstream_latency_seconds{upstream}`: time to the upstream's response header.
    pub upstream_latency: HistogramVec,
    /// `portcullis_upstream_healthy{upstream, address}`: 1 healthy, 0 not.
    pub upstream_healthy: IntGaugeVec,
    /// `portcullis_logins_total{result}`: success, invalid_credentials, rate_limited,
    /// unavailable, bad_request, csrf.
    pub logins: IntCounterVec,
    /// `portcullis_mfa_total{result}`: second-factor codes by result: success, recovery,
    /// wrong_code, replay, rate_limited, expired, enrolled, removed.
    pub mfa: IntCounterVec,
    /// `portcullis_refreshes_total{result}`: success, reused, invalid, expired, missing,
    /// rate_limited, unavailable.
    pub refreshes: IntCounterVec,
    /// `portcullis_revocations_total{reason}`: logout, logout_all, reuse.
    pub revocations: IntCounterVec,
    /// `portcullis_csrf_refusals_total{endpoint}`: the `/auth` endpoint, or `proxy`.
    pub csrf_refusals: IntCounterVec,
    /// `portcullis_auth_refusals_total{reason}`: protected requests refused (token_required,
    /// token_expired, invalid_token, token_revoked, forbidden, csrf, unavailable).
    pub auth_refusals: IntCounterVec,
    /// `portcullis_config_reloads_total{result}` and the time of the last good one.
    pub config_reloads: IntCounterVec,
    pub config_reload_success: IntGauge,
    /// `portcullis_users_reloads_total{result}` and the time of the last good one.
    pub users_reloads: IntCounterVec,
    pub users_reload_success: IntGauge,
    /// `portcullis_tls_certificate_expiry_timestamp_seconds`: the served certificate's notAfter.
    pub tls_expiry: IntGauge,
}

/// Latency buckets (seconds), from a cached-token request to a slow legacy page.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, label: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), label).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("metric registered once");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("metric registered once");
            g
        };
        let histogram = |name: &str, help: &str, label: &[&str]| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            let h = HistogramVec::new(opts, label).expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("metric registered once");
            h
        };
        let requests = counter(
            "portcullis_requests_total",
            "Requests by route and status class",
            &["route", "status_class"],
        );
        let request_duration = histogram(
            "portcullis_request_duration_seconds",
            "Time from the request head to the end of the response, through the gateway",
            &["route"],
        );
        let upstream_latency = histogram(
            "portcullis_upstream_latency_seconds",
            "Time from sending the request upstream to its response header",
            &["upstream"],
        );
        let upstream_healthy = IntGaugeVec::new(
            Opts::new(
                "portcullis_upstream_healthy",
                "Health of each upstream peer",
            ),
            &["upstream", "address"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(upstream_healthy.clone()))
            .expect("metric registered once");
        let build = IntGaugeVec::new(
            Opts::new("portcullis_build_info", "The running build: always 1"),
            &["version"],
        )
        .expect("valid metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry
            .register(Box::new(build))
            .expect("metric registered once");
        Metrics {
            logins: counter(
                "portcullis_logins_total",
                "Password logins by result",
                &["result"],
            ),
            mfa: counter(
                "portcullis_mfa_total",
                "Second-factor codes and enrolments by result",
                &["result"],
            ),
            refreshes: counter(
                "portcullis_refreshes_total",
                "Refresh-token rotations by result",
                &["result"],
            ),
            revocations: counter(
                "portcullis_revocations_total",
                "Sessions revoked, by reason",
                &["reason"],
            ),
            csrf_refusals: counter(
                "portcullis_csrf_refusals_total",
                "Requests refused for a missing or wrong CSRF token or a cross-site origin",
                &["endpoint"],
            ),
            auth_refusals: counter(
                "portcullis_auth_refusals_total",
                "Protected requests refused, by reason",
                &["reason"],
            ),
            config_reloads: counter(
                "portcullis_config_reloads_total",
                "Config reloads by result",
                &["result"],
            ),
            config_reload_success: gauge(
                "portcullis_config_last_reload_success_timestamp_seconds",
                "When the config was last loaded successfully (start or reload)",
            ),
            users_reloads: counter(
                "portcullis_users_reloads_total",
                "Users-file reloads by result",
                &["result"],
            ),
            users_reload_success: gauge(
                "portcullis_users_last_reload_success_timestamp_seconds",
                "When the users file was last loaded successfully",
            ),
            tls_expiry: gauge(
                "portcullis_tls_certificate_expiry_timestamp_seconds",
                "When the served TLS certificate expires (0: no TLS listener)",
            ),
            registry,
            requests,
            request_duration,
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

    /// A config or users-file load: counted by result, a success timestamped.
    pub fn reloaded(&self, users_file: bool, ok: bool) {
        let (count, when) = if users_file {
            (&self.users_reloads, &self.users_reload_success)
        } else {
            (&self.config_reloads, &self.config_reload_success)
        };
        count
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
        if ok {
            use crate::clock::Clock;
            when.set(crate::clock::SystemClock.now() as i64);
        }
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
    duration: prometheus::Histogram,
    pub upstream_latency: prometheus::Histogram,
}

impl RouteSeries {
    pub fn new(metrics: &Metrics, route_label: &str, upstream: &str) -> Self {
        RouteSeries {
            requests: STATUS_CLASSES
                .map(|class| metrics.requests.with_label_values(&[route_label, class])),
            duration: metrics.request_duration.with_label_values(&[route_label]),
            upstream_latency: metrics.upstream_latency.with_label_values(&[upstream]),
        }
    }

    /// One finished request: its status and how long it took.
    pub fn count(&self, status: u16, seconds: f64) {
        self.requests[status_index(status)].inc();
        self.duration.observe(seconds);
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
