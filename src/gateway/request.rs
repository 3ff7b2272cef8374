//! The request, from its head to the decision: who is calling, admission (limits, spoofed
//! headers, the canonical target), plain HTTP sent to HTTPS (`server.redirect_http`), the
//! gateway's own answers (probes, JWKS, `/auth`), the route, the upgrade policy, and
//! authentication. Each step answers the request itself (`Err(answer)`) or lets it go on.

use super::admit::{self, Refused};
use super::answer::{read_body, send};
use super::canonical::{self, Target};
use super::ctx::RequestCtx;
use super::forward;
use super::state::AppState;
use crate::auth::{self, Decision};
use crate::respond::{self, LocalResponse};
use crate::routes;
use http::header::HOST;
use pingora::http::RequestHeader;
use pingora::proxy::Session;

/// What `request_filter` returns: `true` when the request was answered here.
pub async fn filter(
    s: &AppState,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> pingora::Result<bool> {
    match decide(s, session, ctx).await? {
        Some(answer) => send(session, ctx, s, answer).await,
        None => Ok(false),
    }
}

/// `Some(answer)` for a request answered here, `None` for one that goes upstream.
async fn decide(
    s: &AppState,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> pingora::Result<Option<LocalResponse>> {
    caller(s, session, ctx);
    let target = match screen(s, session, ctx) {
        Ok(t) => t,
        Err(answer) => return Ok(Some(answer)),
    };
    let health = &s.config.health;
    let probe_path = target.path == health.liveness || target.path == health.readiness;
    if s.config.server.redirect_http && !ctx.tls && !probe_path {
        return Ok(Some(https_redirect(&s.config.server.public_url, &target)));
    }
    let index = match local(s, session, ctx, &target).await? {
        Ok(index) => index,
        Err(answer) => return Ok(Some(answer)),
    };
    if let Err(answer) = route(s, session, ctx, &target, index) {
        return Ok(Some(answer));
    }
    authorize(s, session, ctx).await
}

/// Who is calling: TLS, the peer, the client address.
fn caller(s: &AppState, session: &mut Session, ctx: &mut RequestCtx) {
    ctx.tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    ctx.peer_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    ctx.peer_trusted = ctx.peer_ip.is_some_and(|ip| s.client_ips.is_trusted(ip));
    ctx.client_ip = s.client_ips.client_ip(ctx.peer_ip, session.req_header());
    if s.auth.store.handed_over() {
        // This process is leaving: its clients reconnect to the one that took over.
        session.set_keepalive(None);
    }
}

/// Admission before any decision: header limits, identity headers nobody but us may set
/// (stripped on every route), and the canonical target. Probes, `/auth` and routes all
/// decide on that target, and it is what goes upstream.
fn screen(
    s: &AppState,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> Result<Target, LocalResponse> {
    if admit::headers_too_large(session.req_header(), &s.config.limits) {
        ctx.label = "none";
        session.set_keepalive(None);
        return Err(LocalResponse::error(
            431,
            "headers_too_large",
            "request headers are too large",
        ));
    }
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
    canonical::parse_target(session.req_header().raw_path()).map_err(|e| {
        ctx.label = "none";
        admit::refuse_target(e, &session.req_header().method)
    })
}

/// `server.redirect_http`: the same path and query on `public_url`. 308 rather than 301, so
/// that a form post stays a post. The path is the canonical one with its `;params` (the route
/// behind the TLS listener decides on those), never the target as sent: an absolute-form
/// target must not choose where the client is sent.
fn https_redirect(public_url: &str, target: &Target) -> LocalResponse {
    use percent_encoding::{utf8_percent_encode, CONTROLS};
    let path = target.with_params.as_deref().unwrap_or(&target.path);
    let mut location = format!("{public_url}{}", utf8_percent_encode(path, CONTROLS));
    if let Some(q) = &target.query {
        location.push('?');
        location.extend(utf8_percent_encode(q, CONTROLS));
    }
    match http::HeaderValue::try_from(location) {
        Ok(v) => LocalResponse::new(308, "text/plain; charset=utf-8", "")
            .header(http::header::LOCATION, v),
        Err(_) => respond::bad_request("the request target cannot be redirected"),
    }
}

fn refused(ctx: &RequestCtx, e: Refused) -> LocalResponse {
    tracing::info!(target: "portcullis::audit", event = "request_refused", request_id = %ctx.id, reason = %e);
    respond::bad_request(&e.to_string())
}

/// The gateway's own answers (probes, JWKS, `/auth/*`), or the route index for the target
/// and host (the host rewritten to its canonical form for the application).
async fn local(
    s: &AppState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    target: &Target,
) -> pingora::Result<Result<usize, LocalResponse>> {
    let cfg = &s.config;
    let path = target.path.as_str();
    if path == cfg.health.liveness || path == cfg.health.readiness {
        ctx.label = "probe";
        return Ok(Err(probe(s, path).await));
    }
    let (index, host) = match admit::admit_host(cfg, session.req_header(), target, ctx.tls) {
        Ok(found) => found,
        Err(e) => {
            ctx.label = "none";
            return Ok(Err(refused(ctx, e)));
        }
    };
    if let Some(host) = host {
        // The host the application sees is the one routing decided on.
        session.req_header_mut().insert_header(HOST, host)?;
    }
    if routes::jwks::is_jwks_path(path) {
        ctx.label = "auth";
        return Ok(Err(routes::jwks::jwks(&s.auth.tokens)));
    }
    if path == "/auth" || path.starts_with("/auth/") {
        ctx.label = "auth";
        return Ok(Err(endpoint(s, session, ctx, path).await));
    }
    ctx.label = "none";
    Ok(index.ok_or_else(|| respond::not_found("no route for this path")))
}

pub(super) async fn probe(s: &AppState, path: &str) -> LocalResponse {
    if path == s.config.health.liveness {
        return crate::health::liveness();
    }
    let issuers = s.auth.tokens.external.failures();
    let require = s.config.health.readiness_requires_upstreams;
    crate::health::readiness(
        s.auth.store.as_ref(),
        &s.upstream_health(),
        require,
        issuers,
    )
    .await
}

/// `/auth/*`: a CORS preflight under the top-level `cors` block first, then the body (every
/// endpoint reads at most a small one: bigger ones are refused before anything else).
async fn endpoint(
    s: &AppState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    path: &str,
) -> LocalResponse {
    if let Some(r) = s.cors.preflight(None, session.req_header()) {
        return r.no_store();
    }
    let body = match read_body(session, s.config.limits.max_auth_body_bytes).await {
        Ok(body) => body,
        Err(e) => {
            if e == respond::BodyError::TooLarge {
                // The rest of the body is never read: do not reuse the connection.
                session.set_keepalive(None);
            }
            return LocalResponse::from(e).no_store();
        }
    };
    let client = ctx.client_key();
    let req = session.req_header();
    let call = routes::Call {
        req,
        body: &body,
        client: &client,
        request_id: &ctx.id,
        user_agent: user_agent(req),
    };
    routes::answer(&s.endpoints, &call, path).await
}

/// The route's own rules: its CORS preflight (answered unauthenticated), the path that goes
/// upstream (exactly the one authorized, in origin form), and upgrades (WebSocket only: an
/// h2c upgrade could smuggle requests past this proxy).
fn route(
    s: &AppState,
    session: &mut Session,
    ctx: &mut RequestCtx,
    target: &Target,
    index: usize,
) -> Result<(), LocalResponse> {
    ctx.route = Some(index);
    if let Some(r) = s.cors.preflight(Some(index), session.req_header()) {
        return Err(r);
    }
    let forwarded =
        admit::route_path(&s.config.routes[index], target).map_err(|e| refused(ctx, e))?;
    if !admit::same_target(session.req_header().raw_path(), forwarded, &target.query) {
        let new = match &target.query {
            Some(q) => format!("{forwarded}?{q}"),
            None => forwarded.to_string(),
        };
        if session
            .req_header_mut()
            .set_raw_path(new.as_bytes())
            .is_err()
        {
            return Err(respond::bad_request(
                "the request target could not be rewritten",
            ));
        }
    }
    ctx.websocket = websocket_upgrade(session.req_header())?;
    Ok(())
}

/// Whether the request upgrades to a WebSocket; any other upgrade is refused.
fn websocket_upgrade(req: &RequestHeader) -> Result<bool, LocalResponse> {
    match req.headers.get(http::header::UPGRADE) {
        None => Ok(false),
        Some(u) if u.as_bytes().eq_ignore_ascii_case(b"websocket") => Ok(true),
        Some(_) => Err(respond::bad_request("only WebSocket upgrades are allowed")),
    }
}

/// Authenticate for the route; an allowed request loses our credentials and keeps its
/// identity for the upstream request.
async fn authorize(
    s: &AppState,
    session: &mut Session,
    ctx: &mut RequestCtx,
) -> pingora::Result<Option<LocalResponse>> {
    let cfg = &s.config;
    let Some(route) = ctx.route.map(|i| &cfg.routes[i]) else {
        return Ok(Some(respond::not_found("no route for this path")));
    };
    let (decision, cookies) = auth::authenticate(&s.auth, session.req_header(), route).await;
    ctx.set_cookies = cookies;
    let (identity, via) = match decision {
        Decision::Allow(identity, via) => (identity, via),
        Decision::Deny(failure, user) => {
            ctx.refusal = Some(failure.code());
            ctx.refused_user = user;
            s.metrics
                .auth_refusals
                .with_label_values(&[failure.code()])
                .inc();
            if failure == auth::Failure::Csrf {
                s.metrics.csrf_refusals.with_label_values(&["proxy"]).inc();
                let req = session.req_header();
                tracing::warn!(target: "portcullis::audit", event = "csrf_blocked", user = ctx.refused_user.as_deref(), reason = "cross_site", method = %req.method, path = %req.uri.path(), request_id = %ctx.id, client_ip = ctx.client_ip.map(tracing::field::display), user_agent = user_agent(req));
            }
            return Ok(Some(respond::failure(failure, session.req_header())));
        }
    };
    if ctx.websocket && !same_origin_websocket(s, session, ctx) {
        return Ok(Some(LocalResponse::error(
            403,
            "forbidden_origin",
            "WebSocket connections must come from this site",
        )));
    }
    if identity.is_some() && cfg.identity_headers.forward_access_token {
        ctx.access_token =
            forward::access_token_to_forward(ctx, session.req_header(), &cfg.cookies.access_name);
    }
    forward::remove_credentials(session.req_header_mut(), via)?;
    ctx.identity = identity;
    Ok(None)
}

/// A WebSocket must be opened from this site (`Origin` equal to `public_url`): a cross-site
/// page could otherwise talk to the application with the user's cookies.
fn same_origin_websocket(s: &AppState, session: &Session, ctx: &RequestCtx) -> bool {
    let origin = session.req_header().headers.get(http::header::ORIGIN);
    let same = origin.is_some_and(|o| {
        o.as_bytes()
            .eq_ignore_ascii_case(s.config.server.public_url.as_bytes())
    });
    if !same {
        tracing::warn!(target: "portcullis::audit", event = "websocket_origin_refused", request_id = %ctx.id, origin = ?origin);
    }
    same
}

/// The request's `User-Agent` for log lines: its first 256 bytes, `-` when absent or not text.
pub(super) fn user_agent(req: &RequestHeader) -> &str {
    let ua = req
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let mut end = ua.len().min(256);
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    &ua[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_websocket_upgrades_pass() {
        let req = |upgrade: Option<&str>| {
            let mut r = RequestHeader::build("GET", b"/ws", None).unwrap();
            if let Some(u) = upgrade {
                r.append_header("Upgrade", u).unwrap();
            }
            r
        };
        assert_eq!(websocket_upgrade(&req(None)).ok(), Some(false));
        assert_eq!(websocket_upgrade(&req(Some("WebSocket"))).ok(), Some(true));
        for other in ["h2c", "websocket, h2c", "TLS/1.2"] {
            let refused = websocket_upgrade(&req(Some(other))).unwrap_err();
            assert_eq!(refused.status, 400, "{other}");
        }
    }

    #[test]
    fn https_redirect_keeps_canonical_path_and_query() {
        let location = |raw: &str| {
            let target = canonical::parse_target(raw.as_bytes()).unwrap();
            let r = https_redirect("https://app.example.com", &target);
            assert_eq!(r.status, 308, "{raw}");
            let (_, v) = r
                .headers
                .iter()
                .find(|(n, _)| n == http::header::LOCATION)
                .expect("a Location header");
            v.to_str().unwrap().to_string()
        };
        assert_eq!(
            location("/some/path?q=1"),
            "https://app.example.com/some/path?q=1"
        );
        assert_eq!(location("/"), "https://app.example.com/");
        assert_eq!(location("/a/../b//c"), "https://app.example.com/b/c");
        assert_eq!(
            location("/a;jsessionid=1/b"),
            "https://app.example.com/a;jsessionid=1/b"
        );
        // The host of an absolute-form target is not where the client goes.
        assert_eq!(
            location("http://evil.example/x?y"),
            "https://app.example.com/x?y"
        );
    }
}
