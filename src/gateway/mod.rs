//! The Pingora `ProxyHttp` implementation. Each hook is thin and calls a free function:
//!
//! - `request.rs`: the request pipeline up to the decision (`request_filter`)
//! - `admit.rs`: header limits, the canonical target and host, the route's upstream path
//! - `forward.rs`: headers going upstream and coming back
//! - `answer.rs`: the gateway's own answers written to the client; proxy failures
//! - `access_log.rs`: metrics and the access log, once per request
//! - `ctx.rs`: per-request state
//! - `client.rs`: request ids, the client-address policy
//! - `state.rs`: what the proxy needs, built from one config (again on every reload)
//! - `routing.rs`: route matching on the canonical path and host
//! - `admin.rs`: the admin API on its own listener (sessions, the kill switch)
//! - `probes.rs`: `health.listen`, a listener for the probes alone
//! - `inject.rs`: the browser client's script tag in the HTML of `inject_client` routes
//! - `identity.rs`: strip client-sent identity/proxy headers, strip our cookies upstream
//! - `security_headers.rs`: headers on every response
//! - `cors/`: cross-origin policy: preflights answered here, CORS headers on answers
//! - `upstreams.rs`: upstream groups, health checks, peers with timeouts
//! - `idle.rs`: idle keep-alive connections wait in a small future, not Pingora's request one
//! - `drain.rs`: SIGTERM ends as soon as no client connection is left (grace period at most)
//! - `client_limits/`: the request head's size, header count and deadline, checked while it
//!   is read (before Pingora); the gateway's own 400/405/408/431; the connection cap
//! - `canonical/`: the one form of the target and host that routing decides on and the
//!   application receives

pub mod access_log;
pub mod admin;
pub mod admit;
pub mod answer;
pub mod canonical;
pub mod client;
pub mod client_limits;
pub mod cors;
pub mod ctx;
pub mod drain;
pub mod forward;
pub mod identity;
pub mod idle;
pub mod inject;
pub mod probes;
pub mod request;
pub mod routing;
pub mod security_headers;
pub mod state;
pub mod upstreams;
pub mod websocket;
pub mod wire_name;

pub use ctx::RequestCtx;
pub use state::AppState;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorType};
use std::sync::Arc;

/// The proxy itself: each request takes the current state when it begins.
pub struct Gateway {
    pub live: Arc<ArcSwap<AppState>>,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    /// No downstream modules. Pingora's default adds a response-compression module that is
    /// disabled (level 0) yet still allocates its context and runs its filters on every
    /// request; the gateway never compresses.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(self.live.load_full())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        let s = ctx.state.clone();
        request::filter(&s, session, ctx).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        let s = &ctx.state;
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
        let s = ctx.state.clone();
        forward::upstream_request(&s, session.req_header(), upstream, ctx)
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
        if let (true, Some(id)) = (ctx.websocket, &ctx.identity) {
            ctx.ws_id = ctx.state.websockets.register(&id.sid, &id.jti, fd);
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
            let series = &ctx.state.route_series[route];
            series
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
        let s = ctx.state.clone();
        forward::response(&s, session.req_header(), resp, ctx)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<Option<std::time::Duration>> {
        if let Some(inject) = ctx.inject.as_mut() {
            inject.filter(body, end_of_stream);
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        FailToProxy {
            error_code: answer::fail_to_proxy(&ctx.state.clone(), session, e, ctx).await,
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
        let s = ctx.state.clone();
        access_log::finish(&s, session, e, ctx);
    }
}
