//! Upstream groups: round robin over healthy peers, active health checks from
//! pingora-load-balancing, and the peer options (timeouts) Pingora leaves unset.

use crate::config::{Config, UpstreamConfig};
use crate::metrics::Metrics;
use pingora::http::RequestHeader;
use pingora::lb::health_check::{HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::LoadBalancer;
use pingora::prelude::HttpPeer;
use pingora::services::background::{background_service, GenBackgroundService};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// One named upstream group.
pub struct Group {
    pub lb: Arc<LoadBalancer<RoundRobin>>,
    pub config: UpstreamConfig,
}

/// All upstream groups by name.
pub struct Upstreams {
    pub groups: BTreeMap<String, Group>,
}

/// The background services that keep each group's selector and health current; they must be
/// added to the server next to the proxy.
pub type HealthServices = Vec<GenBackgroundService<LoadBalancer<RoundRobin>>>;

impl Upstreams {
    pub fn build(config: &Config) -> std::io::Result<(Self, HealthServices)> {
        let mut groups = BTreeMap::new();
        let mut services = Vec::new();
        for (name, up) in &config.upstreams {
            let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(
                up.addresses.iter().map(|a| a.to_string()),
            )?;
            match &up.health_check {
                Some(hc) => {
                    match &hc.path {
                        Some(path) => {
                            let mut check = HttpHealthCheck::new("localhost", false);
                            let mut req = RequestHeader::build("GET", path.as_bytes(), None)
                                .map_err(std::io::Error::other)?;
                            req.append_header("Host", "localhost")
                                .map_err(std::io::Error::other)?;
                            req.append_header("User-Agent", "portcullis-health-check")
                                .map_err(std::io::Error::other)?;
                            check.req = req;
                            // Legacy apps answer `/` with redirects: any non-5xx means alive.
                            check.validator = Some(Box::new(|resp| {
                                if resp.status.as_u16() < 500 {
                                    Ok(())
                                } else {
                                    pingora::Error::e_explain(
                                        pingora::ErrorType::HTTPStatus(resp.status.as_u16()),
                                        "health check answered 5xx",
                                    )
                                }
                            }));
                            lb.set_health_check(Box::new(check));
                        }
                        None => lb.set_health_check(TcpHealthCheck::new()),
                    }
                    lb.health_check_frequency = Some(hc.interval);
                }
                None => lb.health_check_frequency = None,
            }
            // Discovery is static, but the first update builds the selector.
            lb.update_frequency = None;
            let service = background_service(&format!("upstream {name}"), lb);
            groups.insert(
                name.clone(),
                Group {
                    lb: service.task(),
                    config: up.clone(),
                },
            );
            services.push(service);
        }
        Ok((Upstreams { groups }, services))
    }

    /// A peer of group `name` chosen round robin among the healthy ones, with every timeout set.
    pub fn select(&self, name: &str) -> Option<Box<HttpPeer>> {
        let group = self.groups.get(name)?;
        let backend = group.lb.select(b"", 256)?;
        let mut peer = Box::new(HttpPeer::new(backend.addr, false, String::new()));
        let o = &mut peer.options;
        o.connection_timeout = Some(group.config.connect_timeout);
        o.total_connection_timeout = Some(group.config.connect_timeout);
        o.read_timeout = Some(group.config.read_timeout);
        o.write_timeout = Some(group.config.read_timeout);
        o.idle_timeout = Some(Duration::from_secs(60));
        Some(peer)
    }

    /// Number of healthy peers in group `name` (0 before the first selector build).
    pub fn healthy_count(&self, name: &str) -> usize {
        self.groups.get(name).map_or(0, |g| {
            let backends = g.lb.backends();
            backends
                .get_backend()
                .iter()
                .filter(|b| backends.ready(b))
                .count()
        })
    }

    /// Copy each peer's health into the `portcullis_upstream_healthy` gauge.
    pub fn refresh_health_gauges(&self, metrics: &Metrics) {
        for (name, g) in &self.groups {
            let backends = g.lb.backends();
            for b in backends.get_backend().iter() {
                metrics
                    .upstream_healthy
                    .with_label_values(&[name.as_str(), &b.addr.to_string()])
                    .set(backends.ready(b) as i64);
            }
        }
    }
}

impl crate::metrics::ScrapeGauges for Upstreams {
    fn refresh(&self, metrics: &Metrics) {
        self.refresh_health_gauges(metrics);
    }
}
