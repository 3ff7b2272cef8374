//! The CORS headers of every answer on a place with a policy, proxied or written here.

use super::{is_preflight, Policy};
use crate::gateway::wire_name::{set_response, WireName};
use http::header::VARY;
use http::{HeaderMap, HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};

const ALLOW_ORIGIN: WireName =
    WireName::from_static("access-control-allow-origin", "Access-Control-Allow-Origin");
const ALLOW_CREDENTIALS: WireName = WireName::from_static(
    "access-control-allow-credentials",
    "Access-Control-Allow-Credentials",
);
const EXPOSE_HEADERS: WireName = WireName::from_static(
    "access-control-expose-headers",
    "Access-Control-Expose-Headers",
);

/// Does some `Vary` value already name `Origin` (or `*`, which covers it)?
pub(super) fn varies_by_origin(headers: &HeaderMap) -> bool {
    headers.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.eq_ignore_ascii_case("origin"))
        })
    })
}

/// Remove every `Access-Control-*` header an upstream sent: on a route with a policy, only
/// the gateway's headers count.
fn strip_upstream(resp: &mut ResponseHeader) {
    let theirs = |n: &HeaderName| n.as_str().starts_with("access-control-");
    if !resp.headers.keys().any(theirs) {
        return;
    }
    let doomed: Vec<HeaderName> = resp.headers.keys().filter(|n| theirs(n)).cloned().collect();
    for name in &doomed {
        resp.remove_header(name);
    }
}

/// The CORS headers of an answer on a place with `policy`, proxied (`from_upstream`: the
/// application's own `Access-Control-*` headers are dropped first) or written here.
/// `Vary: Origin` always, since the answer depends on it (a shared cache must not hand one
/// origin's answer to another); for an allowed origin `Access-Control-Allow-Origin` with that
/// exact origin, `Access-Control-Allow-Credentials: true` and `Access-Control-Expose-Headers`
/// when configured. Nothing else for other origins.
pub fn apply(resp: &mut ResponseHeader, policy: &Policy, req: &RequestHeader, from_upstream: bool) {
    if from_upstream {
        strip_upstream(resp);
    }
    if !varies_by_origin(&resp.headers) {
        // Appended (a list header): the upstream's own `Vary` values stay.
        let _ = resp.append_header("Vary", HeaderValue::from_static("Origin"));
    }
    let Some(origin) = policy.allowed_origin(&req.headers) else {
        return;
    };
    let _ = set_response(resp, &ALLOW_ORIGIN, origin.clone());
    if policy.credentials {
        let _ = set_response(resp, &ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    // Exposed headers concern the actual response; a preflight answer has none to expose.
    if let Some(expose) = &policy.expose {
        if !is_preflight(req) {
            let _ = set_response(resp, &EXPOSE_HEADERS, expose.clone());
        }
    }
}
