//! What goes upstream and what comes back: the forwarding headers (`X-Forwarded-*`,
//! `X-Request-Id`), the identity headers, our credentials removed, and on the way back the
//! application's attempts to set our cookies dropped and the security and CORS headers added.

use super::ctx::RequestCtx;
use super::state::AppState;
use super::{cors, identity, security_headers, wire_name};
use crate::auth::{self, Via};
use http::header::HOST;
use http::HeaderValue;
use pingora::http::{RequestHeader, ResponseHeader};
use std::time::Instant;

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

/// Bearer tokens are for us, not for the application (other schemes, such as Basic for the
/// legacy app itself, go through). Removed before Pingora copies the request for the
/// upstream, so the copy never holds them.
pub fn remove_credentials(req: &mut RequestHeader, via: Via) -> pingora::Result<()> {
    match via {
        // The one value is the token: the header goes, with no scan of values.
        Via::Bearer => {
            req.remove_header(&http::header::AUTHORIZATION);
        }
        Via::Cookie => {
            let bearer = |v: &HeaderValue| auth::is_bearer(v.as_bytes());
            if let Some(kept) = values_without(&req.headers, &http::header::AUTHORIZATION, bearer) {
                req.remove_header(&http::header::AUTHORIZATION);
                for v in kept {
                    req.append_header("Authorization", v)?;
                }
            }
        }
        Via::Public => {}
    }
    Ok(())
}

/// The access token to forward (`forward_access_token`): after a transparent refresh the
/// fresh one is in the first new cookie, otherwise the request's own.
pub fn access_token_to_forward(
    ctx: &RequestCtx,
    req: &RequestHeader,
    access_cookie: &str,
) -> Option<String> {
    match ctx.set_cookies.first() {
        Some(fresh) => fresh
            .to_str()
            .ok()
            .and_then(|v| cookie::Cookie::parse(v).ok())
            .map(|c| c.value().to_string()),
        None => auth::credential(req, access_cookie)
            .token()
            .map(str::to_string),
    }
}

/// The request as the application receives it.
pub fn upstream_request(
    s: &AppState,
    downstream: &RequestHeader,
    upstream: &mut RequestHeader,
    ctx: &mut RequestCtx,
) -> pingora::Result<()> {
    // Room for what is added below (X-Forwarded-*, X-Request-Id, identity), so that each
    // of Pingora's two maps grows once rather than once per few headers.
    upstream.reserve(8)?;
    identity::sanitize_connection(upstream);
    let hop = Hop {
        peer_ip: ctx.peer_ip,
        peer_trusted: ctx.peer_trusted,
        tls: ctx.tls,
    };
    forwarded_headers(downstream, upstream, &hop)?;
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
    let c = &s.config.cookies;
    identity::strip_cookies(upstream, &c.ours());
    if injects(s, ctx) {
        // The script tag goes into the page as it comes: not compressed.
        upstream.insert_header(http::header::ACCEPT_ENCODING, "identity")?;
    }
    ctx.upstream_started = Some(Instant::now());
    Ok(())
}

/// The connection a request came on, as the forwarding headers tell it.
struct Hop {
    peer_ip: Option<std::net::IpAddr>,
    peer_trusted: bool,
    tls: bool,
}

/// `X-Forwarded-For`, `-Proto`, `-Host`: chained from a trusted proxy, otherwise ours alone.
fn forwarded_headers(
    downstream: &RequestHeader,
    upstream: &mut RequestHeader,
    ctx: &Hop,
) -> pingora::Result<()> {
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
        let host = downstream.headers.get(HOST).cloned().or_else(|| {
            downstream
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        if let Some(host) = host {
            wire_name::set_request(upstream, &wire_name::X_FORWARDED_HOST, host)?;
        }
    }
    Ok(())
}

/// The application's response as the client receives it.
pub fn response(
    s: &AppState,
    req: &RequestHeader,
    resp: &mut ResponseHeader,
    ctx: &mut RequestCtx,
) -> pingora::Result<()> {
    let c = &s.config.cookies;
    drop_our_cookies(resp, &c.ours())?;
    for v in ctx.set_cookies.drain(..) {
        resp.append_header(http::header::SET_COOKIE, v)?;
    }
    let set = s
        .route_security_headers
        .pick(ctx.route, &s.security_headers);
    security_headers::apply(resp, set);
    if let Some(policy) = ctx.route.and_then(|i| s.cors.route(i)) {
        cors::apply(resp, policy, req, true);
    }
    if injects(s, ctx) {
        ctx.inject = super::inject::begin(req, resp)?;
    }
    Ok(())
}

/// Does the request's route have the browser client put into its pages?
fn injects(s: &AppState, ctx: &RequestCtx) -> bool {
    ctx.route
        .and_then(|i| s.config.routes.get(i))
        .is_some_and(|r| r.inject_client)
}

/// An upstream may not set the gateway's own cookies: its `Set-Cookie` values for `ours` go,
/// the others stay in order.
fn drop_our_cookies(resp: &mut ResponseHeader, ours: &[&str]) -> pingora::Result<()> {
    let theirs = values_without(&resp.headers, &http::header::SET_COOKIE, |v| {
        cookie_is_ours(v, ours)
    });
    if let Some(kept) = theirs {
        resp.remove_header(&http::header::SET_COOKIE);
        for v in kept {
            resp.append_header(http::header::SET_COOKIE, v)?;
        }
    }
    Ok(())
}

fn cookie_is_ours(value: &HeaderValue, ours: &[&str]) -> bool {
    let name = value
        .to_str()
        .ok()
        .and_then(|s| s.split('=').next())
        .map(str::trim)
        .unwrap_or("");
    ours.iter().any(|o| o.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bearer_values_are_removed_and_the_rest_keep_their_order() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("Authorization", "Basic dXNlcjpwYXNz")
            .unwrap();
        req.append_header("Authorization", "Bearer abc").unwrap();
        req.append_header("Authorization", "Digest x").unwrap();
        remove_credentials(&mut req, Via::Cookie).unwrap();
        let left: Vec<_> = req
            .headers
            .get_all("authorization")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(left, ["Basic dXNlcjpwYXNz", "Digest x"]);
        remove_credentials(&mut req, Via::Bearer).unwrap();
        assert!(req.headers.get("authorization").is_none());
    }

    #[test]
    fn the_application_cannot_set_our_cookies() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for v in ["a=1", "__Host-pc_access=forged; Path=/", "b=2"] {
            resp.append_header("Set-Cookie", v).unwrap();
        }
        drop_our_cookies(&mut resp, &["__Host-pc_access"]).unwrap();
        let left: Vec<_> = resp
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(left, ["a=1", "b=2"]);
    }

    #[test]
    fn forwarding_headers_are_chained_only_from_a_trusted_peer() {
        let mut down = RequestHeader::build("GET", b"/", None).unwrap();
        down.append_header("Host", "app.example").unwrap();
        let claims = |up: &mut RequestHeader| {
            up.append_header("X-Forwarded-For", "6.6.6.6").unwrap();
            up.append_header("X-Forwarded-Proto", "https").unwrap();
        };
        let mut ctx = Hop {
            peer_ip: Some("10.0.0.1".parse().unwrap()),
            peer_trusted: false,
            tls: false,
        };
        let get = |up: &RequestHeader, name: &str| {
            up.headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let mut up = down.clone();
        claims(&mut up);
        forwarded_headers(&down, &mut up, &ctx).unwrap();
        assert_eq!(get(&up, "x-forwarded-for").as_deref(), Some("10.0.0.1"));
        assert_eq!(get(&up, "x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(get(&up, "x-forwarded-host").as_deref(), Some("app.example"));
        ctx.peer_trusted = true;
        let mut up = down.clone();
        claims(&mut up);
        forwarded_headers(&down, &mut up, &ctx).unwrap();
        assert_eq!(
            get(&up, "x-forwarded-for").as_deref(),
            Some("6.6.6.6, 10.0.0.1")
        );
        assert_eq!(get(&up, "x-forwarded-proto").as_deref(), Some("https"));
    }

    #[test]
    fn our_cookie_names_are_recognised_in_any_case() {
        let ours = ["__Host-pc_access"];
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(cookie_is_ours(&v("__host-PC_access=x; Path=/"), &ours));
        assert!(!cookie_is_ours(&v("app_session=x"), &ours));
    }
}
