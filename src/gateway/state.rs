//! What the proxy needs: the authentication state and the `/auth` endpoints it hands
//! requests to, and what only the proxy itself uses (upstreams, header policies, metrics
//! series, open WebSockets). Built from one config at start-up and again on every reload;
//! each request keeps the one it started with. What must outlive a reload (metrics, open
//! WebSockets, request ids, the password checkers) is [`Lasting`].

use super::client::{ClientIpPolicy, RequestIds};
use super::{cors, identity, security_headers, upstreams, websocket, wire_name};
use crate::auth::login::PasswordLogin;
use crate::auth::AuthState;
use crate::config::Config;
use crate::metrics::{Metrics, RouteSeries};
use crate::routes::Endpoints;
use std::sync::Arc;

/// What one state hands to the next on a reload.
#[derive(Clone)]
pub struct Lasting {
    pub metrics: Arc<Metrics>,
    pub websockets: Arc<websocket::WsRegistry>,
    pub ids: Arc<RequestIds>,
    pub login: Arc<PasswordLogin>,
}

impl Lasting {
    pub fn new(sessions: &crate::auth::sessions::Sessions) -> Self {
        let websockets = Arc::new(websocket::WsRegistry::default());
        sessions.tokens.revocations.set_listener(websockets.clone());
        Lasting {
            metrics: Arc::new(Metrics::new()),
            websockets,
            ids: Arc::new(RequestIds::new()),
            login: Arc::new(PasswordLogin::new(
                sessions.store.clone(),
                sessions.users.clone(),
            )),
        }
    }
}

pub struct AppState {
    pub config: Arc<Config>,
    pub auth: Arc<AuthState>,
    pub endpoints: Endpoints,
    pub upstreams: Arc<upstreams::Upstreams>,
    pub metrics: Arc<Metrics>,
    /// Open WebSockets, closed when their session is revoked.
    pub websockets: Arc<websocket::WsRegistry>,
    pub protected: identity::Protected,
    pub security_headers: security_headers::Prepared,
    /// Routes' own security headers, replacing `security_headers` on their answers.
    pub route_security_headers: security_headers::RouteSets,
    /// Cross-origin policies of the routes and of `/auth/*`.
    pub cors: cors::Policies,
    /// Identity header names, parsed once with their wire spelling.
    pub identity_names: [wire_name::WireName; 3],
    /// Metric/log label per route (`host/prefix`).
    pub route_labels: Vec<String>,
    /// Metric series per route, in route order.
    pub route_series: Vec<RouteSeries>,
    pub client_ips: ClientIpPolicy,
    pub ids: Arc<RequestIds>,
    pub lasting: Lasting,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        upstreams: Arc<upstreams::Upstreams>,
        sessions: Arc<crate::auth::sessions::Sessions>,
        lasting: &Lasting,
    ) -> Self {
        let metrics = lasting.metrics.clone();
        let route_labels: Vec<String> = config
            .routes
            .iter()
            .map(|r| format!("{}{}", r.host.as_deref().unwrap_or(""), r.path_prefix))
            .collect();
        let route_series = config
            .routes
            .iter()
            .zip(&route_labels)
            .map(|(r, label)| RouteSeries::new(&metrics, label, &r.upstream))
            .collect();
        let auth = Arc::new(AuthState::new(config.clone(), sessions));
        AppState {
            endpoints: Endpoints {
                auth: auth.clone(),
                login: lasting.login.clone(),
                metrics: metrics.clone(),
            },
            auth,
            route_series,
            protected: identity::Protected::new(&config),
            security_headers: security_headers::Prepared::new(&config.security_headers),
            route_security_headers: security_headers::RouteSets::new(&config),
            cors: cors::Policies::new(&config),
            identity_names: {
                let ih = &config.identity_headers;
                let [u, e, r] = &ih.wire_names;
                [
                    wire_name::WireName::new(&ih.user, u),
                    wire_name::WireName::new(&ih.email, e),
                    wire_name::WireName::new(&ih.roles, r),
                ]
            },
            client_ips: ClientIpPolicy::new(&config.server.trusted_proxies),
            ids: lasting.ids.clone(),
            metrics,
            route_labels,
            upstreams,
            websockets: lasting.websockets.clone(),
            lasting: lasting.clone(),
            config,
        }
    }

    /// Each route's upstream group and its number of healthy peers, once per group.
    pub fn upstream_health(&self) -> Vec<(&str, usize)> {
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for route in &self.config.routes {
            if !seen.iter().any(|(name, _)| *name == route.upstream) {
                seen.push((
                    &route.upstream,
                    self.upstreams.healthy_count(&route.upstream),
                ));
            }
        }
        seen
    }
}

/// The health gauges follow the current state's upstreams (a reload may change them).
impl crate::metrics::ScrapeGauges for arc_swap::ArcSwap<AppState> {
    fn refresh(&self, metrics: &Metrics) {
        metrics.upstream_healthy.reset();
        self.load().upstreams.refresh_health_gauges(metrics);
    }
}
