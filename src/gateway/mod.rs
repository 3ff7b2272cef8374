//! The Pingora `ProxyHttp` implementation. Each hook is thin and calls a free function:
//!
//! - `routing.rs`: route matching on the canonical path and host
//! - `identity.rs`: strip client-sent identity/proxy headers, strip our cookies upstream
//! - `security_headers.rs`: headers on every response
//! - `cors.rs`: cross-origin policy: preflights answered here, CORS headers on answers
//! - `upstreams.rs`: upstream groups, health checks, peers with timeouts
//! - `idle.rs`: idle keep-alive connections wait in a small future, not Pingora's request one
//! - `client_limits.rs`: the request head's size, header count and deadline, checked while it
//!   is read (before Pingora); the gateway's own 400/405/408/431; the connection cap
//! - `canonical.rs`: the one form of the target and host that routing decides on and the
//!   application receives

pub mod answer;
pub mod canonical;
pub mod client_limits;
pub mod cors;
pub mod identity;
pub mod idle;
pub mod routing;
pub mod security_headers;
pub mod upstreams;
pub mod websocket;
pub mod wire_name;

use crate::auth::{self, Decision, Failure, Identity, Via};
use crate::config::Config;
use crate::metrics::{status_class, Metrics};
use crate::respond::LocalResponse;
use crate::store::SharedStore;
use answer::send;
use async_trait::async_trait;
use http::header::{HOST, LOCATION, WWW_AUTHENTICATE};
use http::HeaderValue;
use ipnet::IpNet;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Everything a request needs, built once at start-up.
pub struct AppState {
    pub config: Arc<Config>,
    pub upstreams: upstreams::Upstreams,
    pub metrics: Metrics,
    pub store: SharedStore,
    pub tokens: Arc<crate::tokens::access::TokenService>,
    pub users: Arc<crate::auth::users::UserDirectory>,
    pub passwords: crate::auth::password::PasswordService,
    pub limiter: crate::auth::ratelimit::RateLimiter,
    pub sessions: Arc<crate::auth::sessions::Sessions>,
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
    pub route_series: Vec<crate::metrics::RouteSeries>,
    request_prefix: String,
    request_counter: AtomicU64,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        upstreams: upstreams::Upstreams,
        sessions: Arc<crate::auth::sessions::Sessions>,
    ) -> Self {
        let rl = &config.rate_limits;
        let longest = rl
            .login_per_ip
            .window
            .max(rl.login_per_account.window)
            .max(rl.refresh_per_ip.window);
        let websockets = Arc::new(websocket::WsRegistry::default());
        sessions.tokens.revocations.set_listener(websockets.clone());
        let route_labels: Vec<String> = config
            .routes
            .iter()
            .map(|r| format!("{}{}", r.host.as_deref().unwrap_or(""), r.path_prefix))
            .collect();
        let metrics = Metrics::new();
        let route_series = config
            .routes
            .iter()
            .zip(&route_labels)
            .map(|(r, label)| crate::metrics::RouteSeries::new(&metrics, label, &r.upstream))
            .collect();
        AppState {
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
            request_prefix: format!("{:08x}", rand::random::<u32>()),
            request_counter: AtomicU64::new(0),
            metrics,
            route_labels,
            upstreams,
            store: sessions.store.clone(),
            tokens: sessions.tokens.clone(),
            users: sessions.users.clone(),
            passwords: crate::auth::password::PasswordService::new(),
            limiter: crate::auth::ratelimit::RateLimiter::new(longest),
            sessions,
            websockets,
            config,
        }
    }

    fn next_request_id(&self) -> String {
        let n = self.request_counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:08x}", self.request_prefix)
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.config
            .server
            .trusted_proxies
            .iter()
            .any(|net: &IpNet| net.contains(&ip))
    }

    /// The client address: the peer, or, when the peer is a trusted proxy, the right-most
    /// address in `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: Option<IpAddr>, req: &RequestHeader) -> Option<IpAddr> {
        let peer = peer?;
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let mut client = peer;
        let chain: Vec<IpAddr> = req
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        for ip in chain.into_iter().rev() {
            client = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        Some(client)
    }
}

/// Per-request state shared across hooks.
pub struct RequestCtx {
    pub id: String,
    pub started: Instant,
    pub route: Option<usize>,
    /// Label for metrics when no route applies (`auth`, `probe`, `none`).
    pub label: &'static str,
    pub identity: Option<Identity>,
    /// The verified access token, kept only when `forward_access_token` is on.
    pub access_token: Option<String>,
    pub peer_ip: Option<IpAddr>,
    pub peer_trusted: bool,
    pub client_ip: Option<IpAddr>,
    pub tls: bool,
    pub local_status: Option<u16>,
    pub upstream_started: Option<Instant>,
    /// `Set-Cookie` values to add to whatever response goes out (transparent refresh).
    pub set_cookies: Vec<HeaderValue>,
    /// An accepted `Upgrade: websocket` request, and its registration once connected.
    pub websocket: bool,
    pub ws_id: Option<u64>,
}

/// The proxy itself.
pub struct Gateway {
    pub state: Arc<AppState>,
}

/// Reject requests whose headers exceed our limits (far below Pingora's 1 MiB).
fn headers_too_large(req: &RequestHeader, limits: &crate::config::Limits) -> bool {
    if req.headers.len() > limits.max_headers {
        return true;
    }
    let mut total = req.raw_path().len();
    for (name, value) in req.headers.iter() {
        total += name.as_str().len() + value.len() + 4;
        if total > limits.max_header_bytes {
            return true;
        }
    }
    false
}

/// The answer to a target that was refused: `OPTIONS *` asks about the server itself and is
/// answered here; everything else is 400.
fn refuse_target(e: canonical::TargetError, method: &http::Method) -> LocalResponse {
    if e == canonical::TargetError::Asterisk && method == http::Method::OPTIONS {
        return LocalResponse::new(204, "text/plain; charset=utf-8", "").header(
            http::header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
    }
    LocalResponse::error(400, "bad_request", &e.to_string())
}

/// Why a request was refused once its target parsed.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Host(#[from] canonical::HostError),
    #[error(transparent)]
    Target(#[from] canonical::TargetError),
    #[error(transparent)]
    Unusual(#[from] canonical::Unusual),
    #[error("path parameters (';') are not allowed on this route")]
    PathParams,
}

/// The canonical host, and the route for it and `target`. The host comes back only when it
/// must be rewritten for the upstream (case, trailing dot, default port, absolute form).
fn admit_host(
    cfg: &crate::config::Config,
    req: &RequestHeader,
    target: &canonical::Target,
    tls: bool,
) -> Result<(Option<usize>, Option<String>), Refused> {
    let mut values = req.headers.get_all(HOST).iter();
    let header = values.next();
    if values.next().is_some() {
        return Err(canonical::HostError::Repeated.into());
    }
    let header = match header {
        Some(v) => Some(v.to_str().map_err(|_| canonical::HostError::Invalid)?),
        None => None,
    };
    let host = match (header, target.authority.as_deref()) {
        (Some(h), None) => Some(canonical::canonical_host(h, tls)?),
        (Some(h), Some(a)) => {
            let (h, a) = (
                canonical::canonical_host(h, tls)?,
                canonical::canonical_host(a, tls)?,
            );
            if h != a {
                return Err(canonical::TargetError::AuthorityMismatch.into());
            }
            Some(a)
        }
        (None, Some(a)) => Some(canonical::canonical_host(a, tls)?),
        (None, None) if req.version >= http::Version::HTTP_11 => {
            return Err(canonical::HostError::Missing.into())
        }
        (None, None) => None,
    };
    let index = routing::find_route(&cfg.routes, host.as_ref().map(|h| h.name()), &target.path);
    let rewrite = match (&host, header) {
        (Some(h), Some(sent)) if h.full == sent => None,
        (Some(h), _) => Some(h.full.to_string()),
        (None, _) => None,
    };
    Ok((index, rewrite))
}

/// The path that goes upstream for `route`, or why the route refuses this target.
fn route_path<'t>(
    route: &crate::config::Route,
    target: &'t canonical::Target,
) -> Result<&'t str, Refused> {
    if route.strict_paths {
        if let Some(u) = target.unusual {
            return Err(u.into());
        }
    }
    Ok(match (route.path_params, &target.with_params) {
        (_, None) => &target.path,
        (crate::config::PathParams::Reject, Some(_)) => return Err(Refused::PathParams),
        (crate::config::PathParams::Strip, Some(_)) => &target.path,
        (crate::config::PathParams::Keep, Some(with)) => with,
    })
}

/// Is `raw` exactly `path`, followed by `?query` when there is one?
fn same_target(raw: &[u8], path: &str, query: &Option<String>) -> bool {
    let Some(rest) = raw.strip_prefix(path.as_bytes()) else {
        return false;
    };
    match query {
        None => rest.is_empty(),
        Some(q) => rest.first() == Some(&b'?') && &rest[1..] == q.as_bytes(),
    }
}

/// `/auth/login?return_to=<path and query>`.
pub fn login_url(path_and_query: &str) -> String {
    let encoded: String = form_urlencoded::byte_serialize(path_and_query.as_bytes()).collect();
    format!("/auth/login?return_to={encoded}")
}

/// When some value of header `name` is `unwanted`: the other values, in order, for the caller
/// to put back after removing the header from Pingora's two maps. `None`: nothing to drop.
fn values_without(
    h: &http::HeaderMap,
    name: &http::HeaderName,
    unwanted: impl Fn(&HeaderValue) -> bool,
) -> Option<Vec<HeaderValue>> {
    let all = h.get_all(name);
    if !all.iter().any(&unwanted) {
        return None;
    }
    Some(all.iter().filter(|v| !unwanted(v)).cloned().collect())
}

/// Of the `Authorization` values, drop the Bearer ones and keep the others in order.
fn remove_bearer_values(req: &mut RequestHeader) -> pingora::Result<()> {
    let bearer = |v: &HeaderValue| auth::is_bearer(v.as_bytes());
    if let Some(kept) = values_without(&req.headers, &http::header::AUTHORIZATION, bearer) {
        req.remove_header(&http::header::AUTHORIZATION);
        for v in kept {
            req.append_header("Authorization", v)?;
        }
    }
    Ok(())
}

/// The response for an authentication failure: 302 for navigations, JSON otherwise.
pub fn failure_response(failure: Failure, req: &RequestHeader) -> LocalResponse {
    let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let login = login_url(pq);
    if failure == Failure::Forbidden || failure == Failure::Csrf {
        return LocalResponse::error(403, failure.code(), failure.message());
    }
    if failure == Failure::Unavailable {
        return LocalResponse::error(503, failure.code(), failure.message());
    }
    if auth::is_navigation(req) {
        let mut r = LocalResponse::new(302, "text/plain; charset=utf-8", "");
        if let Ok(v) = HeaderValue::from_str(&login) {
            r = r.header(LOCATION, v);
        }
        return r;
    }
    let challenge = if failure.token_presented() {
        HeaderValue::from_static("Bearer error=\"invalid_token\"")
    } else {
        HeaderValue::from_static("Bearer")
    };
    LocalResponse::json(
        401,
        &serde_json::json!({
            "error": failure.code(),
            "message": failure.message(),
            "login_url": login,
        }),
    )
    .header(WWW_AUTHENTICATE, challenge)
}

impl Gateway {
    async fn handle_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        let s = &*self.state;
        let cfg = &s.config;
        ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.peer_trusted = ctx.peer_ip.is_some_and(|ip| s.is_trusted(ip));
        ctx.client_ip = s.client_ip(ctx.peer_ip, session.req_header());
        if s.store.handed_over() {
            // This process is leaving: its clients reconnect to the one that took over.
            session.set_keepalive(None);
        }

        if headers_too_large(session.req_header(), &cfg.limits) {
            ctx.label = "none";
            session.set_keepalive(None);
            let r = LocalResponse::error(431, "headers_too_large", "request headers are too large");
            return send(session, ctx, s, r).await;
        }
        // Before any decision, on every route: nobody but us sets identity headers.
        let stripped = s
            .protected
            .strip(session.req_header_mut(), ctx.peer_trusted);
        if !stripped.is_empty() {
            tracing::warn!(
                target: "portcullis::audit",
                event = "spoofed_headers_stripped",
                request_id = %ctx.id,
                client_ip = ctx.client_ip.map(tracing::field::display),
                headers = ?stripped.iter().map(|h| h.as_str()).collect::<Vec<_>>(),
            );
        }

        // The canonical target: probes, `/auth` and routes all decide on it, and it is what
        // goes upstream. A target without one meaning is refused here, before any route.
        let target = match canonical::parse_target(session.req_header().raw_path()) {
            Ok(t) => t,
            Err(e) => {
                ctx.label = "none";
                let r = refuse_target(e, &session.req_header().method);
                return send(session, ctx, s, r).await;
            }
        };
        let path = target.path.as_str();
        if path == cfg.health.liveness {
            ctx.label = "probe";
            return send(session, ctx, s, crate::health::liveness()).await;
        }
        if path == cfg.health.readiness {
            ctx.label = "probe";
            let r = crate::health::readiness(s).await;
            return send(session, ctx, s, r).await;
        }
        let (index, host) = match admit_host(cfg, session.req_header(), &target, ctx.tls) {
            Ok(found) => found,
            Err(e) => {
                ctx.label = "none";
                tracing::info!(target: "portcullis::audit", event = "request_refused", request_id = %ctx.id, reason = %e);
                let r = LocalResponse::error(400, "bad_request", &e.to_string());
                return send(session, ctx, s, r).await;
            }
        };
        if let Some(host) = host {
            // The host the application sees is the one routing decided on.
            session.req_header_mut().insert_header(HOST, host)?;
        }
        if path == "/.well-known/jwks.json" || path == "/auth/jwks.json" {
            ctx.label = "auth";
            let r = LocalResponse::new(200, "application/json", s.tokens.keyring.jwks.clone())
                .header(
                    http::header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=300"),
                );
            return send(session, ctx, s, r).await;
        }
        if path == "/auth" || path.starts_with("/auth/") {
            ctx.label = "auth";
            return crate::routes::handle(s, session, ctx, path).await;
        }
        let Some(index) = index else {
            ctx.label = "none";
            let r = LocalResponse::error(404, "not_found", "no route for this path");
            return send(session, ctx, s, r).await;
        };
        ctx.route = Some(index);
        // A CORS preflight on a route with `cors` is answered here, unauthenticated.
        if let Some(r) = s.cors.preflight(Some(index), session.req_header()) {
            return send(session, ctx, s, r).await;
        }
        let route = &cfg.routes[index];
        let forwarded = match route_path(route, &target) {
            Ok(p) => p,
            Err(e) => {
                tracing::info!(target: "portcullis::audit", event = "request_refused", request_id = %ctx.id, reason = %e);
                let r = LocalResponse::error(400, "bad_request", &e.to_string());
                return send(session, ctx, s, r).await;
            }
        };
        if !same_target(session.req_header().raw_path(), forwarded, &target.query) {
            // Forward exactly the path that was authorized, in origin form.
            let new = match &target.query {
                Some(q) => format!("{forwarded}?{q}"),
                None => forwarded.to_string(),
            };
            session.req_header_mut().set_raw_path(new.as_bytes())?;
        }
        // Upgrades: only WebSocket (an h2c upgrade could smuggle requests past this proxy).
        if let Some(upgrade) = session.req_header().headers.get(http::header::UPGRADE) {
            if !upgrade.as_bytes().eq_ignore_ascii_case(b"websocket") {
                let r =
                    LocalResponse::error(400, "bad_request", "only WebSocket upgrades are allowed");
                return send(session, ctx, s, r).await;
            }
            ctx.websocket = true;
        }
        let (decision, cookies) =
            auth::authenticate(s, session.req_header(), &cfg.routes[index]).await;
        ctx.set_cookies = cookies;
        match decision {
            Decision::Allow(identity, via) => {
                if ctx.websocket {
                    let origin = session.req_header().headers.get(http::header::ORIGIN);
                    let same = origin.is_some_and(|o| {
                        o.as_bytes()
                            .eq_ignore_ascii_case(cfg.server.public_url.as_bytes())
                    });
                    if !same {
                        tracing::warn!(target: "portcullis::audit", event = "websocket_origin_refused", request_id = %ctx.id, origin = ?origin);
                        let r = LocalResponse::error(
                            403,
                            "forbidden_origin",
                            "WebSocket connections must come from this site",
                        );
                        return send(session, ctx, s, r).await;
                    }
                }
                if identity.is_some() && cfg.identity_headers.forward_access_token {
                    // After a transparent refresh the fresh token is in the first new cookie.
                    ctx.access_token = match ctx.set_cookies.first() {
                        Some(fresh) => fresh
                            .to_str()
                            .ok()
                            .and_then(|v| cookie::Cookie::parse(v).ok())
                            .map(|c| c.value().to_string()),
                        None => auth::credential(session.req_header(), &cfg.cookies.access_name)
                            .token()
                            .map(str::to_string),
                    };
                }
                // Bearer tokens are for us, not for the application (other schemes, such as
                // Basic for the legacy app itself, go through). Removed before Pingora copies
                // the request for the upstream, so the copy never holds them.
                match via {
                    // The one value is the token: the header goes, with no scan of values.
                    Via::Bearer => {
                        session
                            .req_header_mut()
                            .remove_header(&http::header::AUTHORIZATION);
                    }
                    Via::Cookie => remove_bearer_values(session.req_header_mut())?,
                    Via::Public => {}
                }
                ctx.identity = identity;
                Ok(false)
            }
            Decision::Deny(failure) => {
                let r = failure_response(failure, session.req_header());
                send(session, ctx, s, r).await
            }
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    /// No downstream modules. Pingora's default adds a response-compression module that is
    /// disabled (level 0) yet still allocates its context and runs its filters on every
    /// request; the gateway never compresses.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            id: self.state.next_request_id(),
            started: Instant::now(),
            route: None,
            label: "none",
            identity: None,
            access_token: None,
            peer_ip: None,
            peer_trusted: false,
            client_ip: None,
            tls: false,
            local_status: None,
            upstream_started: None,
            set_cookies: Vec::new(),
            websocket: false,
            ws_id: None,
        }
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        self.handle_request(session, ctx).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let s = &self.state;
        let route = ctx
            .route
            .and_then(|i| s.config.routes.get(i))
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(404), "no route"))?;
        s.upstreams
            .select(&route.upstream)
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(503), "no healthy upstream peer"))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let s = &self.state;
        let cfg = &s.config;
        // Room for what is added below (X-Forwarded-*, X-Request-Id, identity), so that each
        // of Pingora's two maps grows once rather than once per few headers.
        upstream.reserve(8)?;
        identity::sanitize_connection(upstream);
        // X-Forwarded-*: chained from a trusted proxy, otherwise ours alone.
        let peer = ctx.peer_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let xff = match upstream
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if ctx.peer_trusted => format!("{prev}, {peer}"),
            _ => peer,
        };
        wire_name::set_request(upstream, &wire_name::X_FORWARDED_FOR, xff)?;
        if !(ctx.peer_trusted && upstream.headers.contains_key("x-forwarded-proto")) {
            let proto = HeaderValue::from_static(if ctx.tls { "https" } else { "http" });
            wire_name::set_request(upstream, &wire_name::X_FORWARDED_PROTO, proto)?;
        }
        if !(ctx.peer_trusted && upstream.headers.contains_key("x-forwarded-host")) {
            let host = session.req_header().headers.get(HOST).cloned().or_else(|| {
                session
                    .req_header()
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            });
            if let Some(host) = host {
                wire_name::set_request(upstream, &wire_name::X_FORWARDED_HOST, host)?;
            }
        }
        wire_name::set_request(upstream, &wire_name::X_REQUEST_ID, ctx.id.as_str())?;
        if let Some(id) = &ctx.identity {
            let [user, email, roles] = &s.identity_names;
            wire_name::set_request(upstream, user, id.wire.user.clone())?;
            wire_name::set_request(upstream, email, id.wire.email.clone())?;
            wire_name::set_request(upstream, roles, id.wire.roles.clone())?;
            // The client's Bearer values are gone already (request_filter).
            if let Some(t) = &ctx.access_token {
                upstream.insert_header(http::header::AUTHORIZATION, format!("Bearer {t}"))?
            }
        }
        let c = &cfg.cookies;
        identity::strip_cookies(upstream, &[&c.access_name, &c.refresh_name, &c.csrf_name]);
        ctx.upstream_started = Some(Instant::now());
        Ok(())
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        fd: std::os::unix::io::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if ctx.websocket {
            if let Some(id) = &ctx.identity {
                ctx.ws_id = self.state.websockets.register(&id.sid, &id.jti, fd);
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if let (Some(start), Some(route)) = (ctx.upstream_started, ctx.route) {
            self.state.route_series[route]
                .upstream_latency
                .observe(start.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let cfg = &self.state.config;
        // An upstream may not set the gateway's own cookies.
        let ours = [
            &cfg.cookies.access_name,
            &cfg.cookies.refresh_name,
            &cfg.cookies.csrf_name,
        ];
        let theirs = values_without(&resp.headers, &http::header::SET_COOKIE, |v| {
            cookie_is_ours(v, &ours)
        });
        if let Some(kept) = theirs {
            resp.remove_header(&http::header::SET_COOKIE);
            for v in kept {
                resp.append_header(http::header::SET_COOKIE, v)?;
            }
        }
        for v in ctx.set_cookies.drain(..) {
            resp.append_header(http::header::SET_COOKIE, v)?;
        }
        let s = &self.state;
        let set = s
            .route_security_headers
            .pick(ctx.route, &s.security_headers);
        security_headers::apply(resp, set);
        if let Some(policy) = ctx.route.and_then(|i| s.cors.route(i)) {
            cors::apply(resp, policy, session.req_header(), true);
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            let resp = match code {
                502 => LocalResponse::error(
                    502,
                    "bad_gateway",
                    "the upstream application could not be reached",
                ),
                503 => LocalResponse::error(
                    503,
                    "service_unavailable",
                    "no healthy upstream is available",
                ),
                504 => LocalResponse::error(
                    504,
                    "gateway_timeout",
                    "the upstream application did not answer in time",
                ),
                400 => LocalResponse::error(400, "bad_request", "the request could not be read"),
                c => LocalResponse::error(c, "error", "the request failed"),
            };
            let _ = send(session, ctx, &self.state, resp).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    /// What Pingora's own error lines say about the request: method, path and request id.
    /// Its default is the whole URI, query string included, and query strings carry secrets.
    fn request_summary(&self, session: &Session, ctx: &RequestCtx) -> String {
        let req = session.req_header();
        format!("{} {}, request_id: {}", req.method, req.uri.path(), ctx.id)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let s = &self.state;
        if let Some(id) = ctx.ws_id.take() {
            s.websockets.unregister(id);
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.local_status)
            .unwrap_or(0);
        let label = match ctx.route {
            Some(i) => {
                s.route_series[i].count(status);
                s.route_labels[i].as_str()
            }
            None => {
                s.metrics
                    .requests
                    .with_label_values(&[ctx.label, status_class(status)])
                    .inc();
                ctx.label
            }
        };
        let req = session.req_header();
        tracing::info!(
            target: "portcullis::access",
            request_id = %ctx.id,
            method = %req.method,
            path = %req.uri.path(),
            status,
            route = label,
            client_ip = ctx.client_ip.map(tracing::field::display),
            user = ctx.identity.as_ref().map(|i| i.sub.as_str()),
            duration_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
            error = e.map(|e| e.etype().as_str()),
        );
    }
}

fn cookie_is_ours(value: &HeaderValue, ours: &[&String]) -> bool {
    let name = value
        .to_str()
        .ok()
        .and_then(|s| s.split('=').next())
        .map(str::trim)
        .unwrap_or("");
    ours.iter().any(|o| o.eq_ignore_ascii_case(name))
}
