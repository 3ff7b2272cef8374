//! Upstream groups: round robin over healthy peers, active health checks from
//! pingora-load-balancing (a peer going down or coming back is logged), and the peer options
//! (timeouts) Pingora leaves unset. Each group runs its own checks until it is dropped, so a
//! reload keeps the groups whose config did not change (and what they know of their peers)
//! and starts checking new ones at once.

use crate::config::{Config, UpstreamConfig};
use crate::metrics::Metrics;
use pingora::http::RequestHeader;
use pingora::lb::health_check::{HealthObserve, HttpHealthCheck, TcpHealthCheck};
use pingora::lb::selection::RoundRobin;
use pingora::lb::Backend;
use pingora::lb::LoadBalancer;
use pingora::prelude::HttpPeer;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// One named upstream group; its health checks stop when it is dropped.
pub struct Group {
    pub lb: Arc<LoadBalancer<RoundRobin>>,
    pub config: UpstreamConfig,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Group {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// All upstream groups by name.
pub struct Upstreams {
    pub groups: BTreeMap<String, Arc<Group>>,
}

/// Logs a peer that goes down or comes back.
struct HealthLog {
    group: String,
}

#[async_trait::async_trait]
impl HealthObserve for HealthLog {
    async fn observe(&self, target: &Backend, healthy: bool) {
        let (upstream, peer) = (self.group.as_str(), target.addr.to_string());
        if healthy {
            tracing::info!(target: "portcullis::upstream", upstream, peer, "upstream peer is up");
        } else {
            tracing::warn!(target: "portcullis::upstream", upstream, peer, "upstream peer is down");
        }
    }
}

impl Upstreams {
    /// The groups of `config`, reusing those of `previous` whose config is unchanged. New
    /// groups start their checks on `runtime`.
    pub fn build(
        config: &Config,
        previous: Option<&Upstreams>,
        runtime: &tokio::runtime::Handle,
    ) -> std::io::Result<Self> {
        let mut groups = BTreeMap::new();
        for (name, up) in &config.upstreams {
            if let Some(same) = previous
                .and_then(|p| p.groups.get(name))
                .filter(|g| g.config == *up)
            {
                groups.insert(name.clone(), same.clone());
                continue;
            }
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
                            check.health_changed_callback = Some(Box::new(HealthLog {
                                group: name.clone(),
                            }));
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
                        None => {
                            let mut check = TcpHealthCheck::new();
                            check.health_changed_callback = Some(Box::new(HealthLog {
                                group: name.clone(),
                            }));
                            lb.set_health_check(check);
                        }
                    }
                    lb.health_check_frequency = Some(hc.interval);
                }
                None => lb.health_check_frequency = None,
            }
            // Discovery is static, but the first update builds the selector.
            lb.update_frequency = None;
            let lb = Arc::new(lb);
            let (stop, stopped) = tokio::sync::watch::channel(false);
            let checks = lb.clone();
            runtime.spawn(async move { checks.run(stopped, None).await });
            groups.insert(
                name.clone(),
                Arc::new(Group {
                    lb,
                    config: up.clone(),
                    stop,
                }),
            );
        }
        Ok(Upstreams { groups })
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
