//! Cross-origin requests (CORS), per route and for the gateway's own `/auth/*` endpoints.
//!
//! The gateway is the policy: a browser's preflight is answered here (without
//! authentication, never forwarded), and on a route with a `cors` block whatever
//! `Access-Control-*` headers the application sends are replaced by the gateway's, so that a
//! legacy app echoing every `Origin` cannot widen what the operator allowed. Routes without
//! `cors` are untouched: the per-request cost there is one `None` check.
//!
//! Origins are compared exactly, ignoring ASCII case (browsers serialize an origin as
//! `scheme://host[:port]`, and scheme and host are case-insensitive); `null` (sandboxed
//! frames, `file:` pages, some redirects) is never allowed by `"*"`.

use super::wire_name::{set_response, WireName};
use crate::config::{Config, Cors};
use crate::respond::LocalResponse;
use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
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

/// One `cors` block, with its header values rendered once at start-up.
#[derive(Debug)]
pub struct Policy {
    /// Lower-case `scheme://host[:port]`.
    origins: Vec<String>,
    any_origin: bool,
    credentials: bool,
    /// `Access-Control-Allow-Methods` of a preflight answer.
    methods: HeaderValue,
    /// Configured request headers (lower case); `*` among them allows any.
    allowed_headers: Vec<HeaderName>,
    any_header: bool,
    /// `Access-Control-Allow-Headers` when the preflight names none.
    headers_value: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
}

fn joined<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let text = items.collect::<Vec<_>>().join(", ");
    if text.is_empty() {
        return None;
    }
    // Validated methods and header names are tokens: always a valid value.
    HeaderValue::from_str(&text).ok()
}

impl Policy {
    pub fn new(c: &Cors) -> Self {
        Policy {
            origins: c.allowed_origins.clone(),
            any_origin: c.any_origin,
            credentials: c.allow_credentials,
            methods: joined(c.allowed_methods.iter().map(Method::as_str))
                .unwrap_or(HeaderValue::from_static("")),
            any_header: c.allowed_headers.iter().any(|h| h.as_str() == "*"),
            allowed_headers: c.allowed_headers.clone(),
            headers_value: joined(c.allowed_headers.iter().map(HeaderName::as_str)),
            expose: joined(c.expose_headers.iter().map(HeaderName::as_str)),
            max_age: HeaderValue::from(c.max_age.as_secs()),
        }
    }

    /// Does this policy let a page served from `origin` read responses?
    pub fn allows(&self, origin: &[u8]) -> bool {
        if self
            .origins
            .iter()
            .any(|o| o.as_bytes().eq_ignore_ascii_case(origin))
        {
            return true;
        }
        // `"*"`: any serialized origin, which is printable ASCII (internationalized hosts
        // arrive in punycode), so nothing else a client sends is reflected.
        self.any_origin
            && !origin.is_empty()
            && origin.iter().all(u8::is_ascii_graphic)
            && !origin.eq_ignore_ascii_case(b"null")
    }

    /// The request's `Origin` when this policy allows it. A request with several `Origin`
    /// headers has no single origin to allow.
    pub fn allowed_origin<'a>(&self, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
        let mut all = headers.get_all(ORIGIN).iter();
        let origin = all.next()?;
        if all.next().is_some() || !self.allows(origin.as_bytes()) {
            return None;
        }
        Some(origin)
    }

    /// `Access-Control-Allow-Headers` for a preflight that asked for `requested`: the allowed
    /// ones among them (so the answer reveals nothing beyond what was asked), or the
    /// configured list when the preflight asked for none.
    fn allow_headers(&self, requested: Option<&HeaderValue>) -> Option<HeaderValue> {
        let Some(requested) = requested else {
            return self.headers_value.clone();
        };
        let text = requested.to_str().ok()?;
        let allowed: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|name| {
                !name.is_empty()
                    && (self.any_header
                        || self
                            .allowed_headers
                            .iter()
                            .any(|h| h.as_str().eq_ignore_ascii_case(name)))
            })
            .collect();
        joined(allowed.into_iter())
    }

    /// The answer to a preflight: 204 with the allowed methods, headers and max age for an
    /// allowed origin (the `Access-Control-Allow-Origin` and credentials headers are added by
    /// [`apply`] like on every answer), 403 for any other origin. Neither is forwarded.
    pub fn preflight(&self, req: &RequestHeader) -> LocalResponse {
        if self.allowed_origin(&req.headers).is_none() {
            tracing::debug!(
                origin = ?req.headers.get(ORIGIN),
                path = %req.uri.path(),
                "cross-origin preflight refused"
            );
            return LocalResponse::error(
                403,
                "origin_not_allowed",
                "cross-origin requests from this origin are not allowed",
            );
        }
        let mut headers = Vec::with_capacity(3);
        if !self.methods.is_empty() {
            headers.push((ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone()));
        }
        if let Some(v) = self.allow_headers(req.headers.get(ACCESS_CONTROL_REQUEST_HEADERS)) {
            headers.push((ACCESS_CONTROL_ALLOW_HEADERS, v));
        }
        headers.push((ACCESS_CONTROL_MAX_AGE, self.max_age.clone()));
        LocalResponse {
            status: 204,
            headers,
            body: Bytes::new(),
        }
    }
}

/// Is `req` a browser's CORS preflight: `OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`? Anything else is an ordinary request.
pub fn is_preflight(req: &RequestHeader) -> bool {
    req.method == Method::OPTIONS
        && req.headers.contains_key(ORIGIN)
        && req.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// Every `cors` block of the configuration, prepared once.
#[derive(Debug, Default)]
pub struct Policies {
    /// The top-level block, for the gateway's own endpoints.
    auth: Option<Policy>,
    /// One entry per route, in route order.
    routes: Vec<Option<Policy>>,
}

impl Policies {
    pub fn new(config: &Config) -> Self {
        Policies {
            auth: config.cors.as_ref().map(Policy::new),
            routes: config
                .routes
                .iter()
                .map(|r| r.cors.as_ref().map(Policy::new))
                .collect(),
        }
    }

    /// The policy of route `index`, if it has one.
    #[inline]
    pub fn route(&self, index: usize) -> Option<&Policy> {
        self.routes.get(index)?.as_ref()
    }

    /// The top-level policy, for `/auth/*`.
    pub fn auth(&self) -> Option<&Policy> {
        self.auth.as_ref()
    }

    /// The policy for an answer the gateway writes itself: the route's, or for the gateway's
    /// own endpoints (`label` "auth": `/auth/*` and the JWKS alias) the top-level one. Probes,
    /// no-route and malformed-request answers carry no CORS headers.
    pub fn for_answer(&self, route: Option<usize>, label: &str) -> Option<&Policy> {
        match route {
            Some(i) => self.route(i),
            None if label == "auth" => self.auth(),
            None => None,
        }
    }

    /// When `req` is a preflight on route `index` (or on `/auth/*` when `index` is `None`) and
    /// that place has a `cors` block: its answer. Elsewhere a preflight-shaped request is an
    /// ordinary one (authenticated and proxied as before).
    pub fn preflight(&self, index: Option<usize>, req: &RequestHeader) -> Option<LocalResponse> {
        let policy = match index {
            Some(i) => self.route(i)?,
            None => self.auth()?,
        };
        is_preflight(req).then(|| policy.preflight(req))
    }
}

/// Does some `Vary` value already name `Origin` (or `*`, which covers it)?
fn varies_by_origin(headers: &HeaderMap) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cors(origins: &[&str], any: bool, credentials: bool) -> Cors {
        Cors {
            allowed_origins: origins.iter().map(|o| o.to_string()).collect(),
            any_origin: any,
            allow_credentials: credentials,
            allowed_methods: vec![Method::GET, Method::POST, Method::PUT],
            allowed_headers: vec![
                HeaderName::from_static("content-type"),
                HeaderName::from_static("x-csrf-token"),
            ],
            expose_headers: vec![HeaderName::from_static("x-request-id")],
            max_age: Duration::from_secs(600),
        }
    }

    fn request(method: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/api/x", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn header<'a>(resp: &'a LocalResponse, name: &HeaderName) -> Option<&'a str> {
        resp.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.to_str().ok())
    }

    #[test]
    fn origins_compare_exactly_ignoring_case() {
        let p = Policy::new(&cors(&["https://app.example.com"], false, true));
        assert!(p.allows(b"https://app.example.com"));
        assert!(p.allows(b"HTTPS://App.Example.COM"));
        for other in [
            "https://app.example.com:8443",
            "http://app.example.com",
            "https://app.example.com/",
            "https://app.example.com.evil.test",
            "https://evil.app.example.com",
            "https://app.example.co",
            "null",
            "",
        ] {
            assert!(!p.allows(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn any_origin_never_allows_null_unless_listed() {
        let p = Policy::new(&cors(&[], true, false));
        assert!(p.allows(b"https://anything.test"));
        assert!(!p.allows(b"null"));
        assert!(!p.allows(b"NULL"));
        assert!(!p.allows(b""));
        assert!(!p.allows(b"https://a.test \xff"));
        let listed = Policy::new(&cors(&["null"], false, false));
        assert!(listed.allows(b"null"));
    }

    #[test]
    fn several_origin_headers_are_not_one_allowed_origin() {
        let p = Policy::new(&cors(&["https://a.test"], false, false));
        let one = request("GET", &[("Origin", "https://a.test")]);
        assert_eq!(p.allowed_origin(&one.headers).unwrap(), "https://a.test");
        let two = request(
            "GET",
            &[("Origin", "https://a.test"), ("Origin", "https://a.test")],
        );
        assert!(p.allowed_origin(&two.headers).is_none());
        assert!(p.allowed_origin(&request("GET", &[]).headers).is_none());
    }

    #[test]
    fn preflight_shape() {
        assert!(is_preflight(&request(
            "OPTIONS",
            &[
                ("Origin", "https://a.test"),
                ("Access-Control-Request-Method", "PUT")
            ]
        )));
        assert!(!is_preflight(&request(
            "OPTIONS",
            &[("Origin", "https://a.test")]
        )));
        assert!(!is_preflight(&request(
            "OPTIONS",
            &[("Access-Control-Request-Method", "PUT")]
        )));
        assert!(!is_preflight(&request(
            "GET",
            &[
                ("Origin", "https://a.test"),
                ("Access-Control-Request-Method", "PUT")
            ]
        )));
    }

    #[test]
    fn preflight_answers() {
        let p = Policy::new(&cors(&["https://a.test"], false, true));
        let ok = p.preflight(&request(
            "OPTIONS",
            &[
                ("Origin", "https://a.test"),
                ("Access-Control-Request-Method", "PUT"),
                (
                    "Access-Control-Request-Headers",
                    "X-CSRF-Token, x-evil,content-type",
                ),
            ],
        ));
        assert_eq!(ok.status, 204);
        assert!(ok.body.is_empty());
        assert_eq!(
            header(&ok, &ACCESS_CONTROL_ALLOW_METHODS),
            Some("GET, POST, PUT")
        );
        assert_eq!(
            header(&ok, &ACCESS_CONTROL_ALLOW_HEADERS),
            Some("X-CSRF-Token, content-type"),
            "only the allowed ones among those asked for"
        );
        assert_eq!(header(&ok, &ACCESS_CONTROL_MAX_AGE), Some("600"));
        // No headers asked for: the configured list.
        let plain = p.preflight(&request(
            "OPTIONS",
            &[
                ("Origin", "https://a.test"),
                ("Access-Control-Request-Method", "GET"),
            ],
        ));
        assert_eq!(
            header(&plain, &ACCESS_CONTROL_ALLOW_HEADERS),
            Some("content-type, x-csrf-token")
        );
        // Only disallowed ones asked for: none granted.
        let evil = p.preflight(&request(
            "OPTIONS",
            &[
                ("Origin", "https://a.test"),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "x-evil"),
            ],
        ));
        assert_eq!(header(&evil, &ACCESS_CONTROL_ALLOW_HEADERS), None);
        let refused = p.preflight(&request(
            "OPTIONS",
            &[
                ("Origin", "https://b.test"),
                ("Access-Control-Request-Method", "GET"),
            ],
        ));
        assert_eq!(refused.status, 403);
        assert!(!refused
            .headers
            .iter()
            .any(|(n, _)| n.as_str().starts_with("access-control-")));
    }

    #[test]
    fn wildcard_request_headers_echo_what_was_asked() {
        let mut c = cors(&["https://a.test"], false, false);
        c.allowed_headers = vec![HeaderName::from_static("*")];
        let p = Policy::new(&c);
        let r = p.preflight(&request(
            "OPTIONS",
            &[
                ("Origin", "https://a.test"),
                ("Access-Control-Request-Method", "GET"),
                ("Access-Control-Request-Headers", "x-one,x-two"),
            ],
        ));
        assert_eq!(
            header(&r, &ACCESS_CONTROL_ALLOW_HEADERS),
            Some("x-one, x-two")
        );
    }

    fn upstream_response() -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.append_header("Access-Control-Allow-Origin", "*").unwrap();
        r.append_header("access-control-allow-methods", "DELETE")
            .unwrap();
        r.append_header("Vary", "Accept-Encoding").unwrap();
        r.append_header("Content-Type", "text/plain").unwrap();
        r
    }

    #[test]
    fn proxied_answer_to_an_allowed_origin() {
        let p = Policy::new(&cors(&["https://a.test"], false, true));
        let mut resp = upstream_response();
        let req = request("GET", &[("Origin", "https://a.test")]);
        apply(&mut resp, &p, &req, true);
        let h = &resp.headers;
        assert_eq!(
            h.get("access-control-allow-origin").unwrap(),
            "https://a.test"
        );
        assert_eq!(h.get("access-control-allow-credentials").unwrap(), "true");
        assert_eq!(
            h.get("access-control-expose-headers").unwrap(),
            "x-request-id"
        );
        assert!(
            h.get("access-control-allow-methods").is_none(),
            "upstream's dropped"
        );
        let vary: Vec<_> = h.get_all("vary").iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
        assert_eq!(h.get_all("access-control-allow-origin").iter().count(), 1);
        let mut wire = Vec::new();
        resp.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire).unwrap();
        assert!(wire.contains("\r\nVary: Origin\r\n"), "{wire}");
        assert!(
            wire.contains("Access-Control-Allow-Origin: https://a.test\r\n"),
            "{wire}"
        );
    }

    #[test]
    fn proxied_answer_to_another_origin_has_no_cors_header() {
        let p = Policy::new(&cors(&["https://a.test"], false, true));
        for req in [
            request("GET", &[("Origin", "https://b.test")]),
            request("GET", &[]),
        ] {
            let mut resp = upstream_response();
            apply(&mut resp, &p, &req, true);
            assert!(!resp
                .headers
                .keys()
                .any(|n| n.as_str().starts_with("access-control-")));
            assert!(varies_by_origin(&resp.headers));
        }
    }

    #[test]
    fn vary_is_not_repeated() {
        let p = Policy::new(&cors(&["https://a.test"], false, false));
        let req = request("GET", &[("Origin", "https://a.test")]);
        for existing in ["origin", "Accept, Origin", "*"] {
            let mut resp = ResponseHeader::build(200, None).unwrap();
            resp.append_header("Vary", existing).unwrap();
            apply(&mut resp, &p, &req, true);
            let vary: Vec<_> = resp.headers.get_all("vary").iter().collect();
            assert_eq!(vary, [existing]);
            assert!(resp
                .headers
                .get("access-control-allow-credentials")
                .is_none());
        }
    }

    #[test]
    fn local_answers_keep_the_gateways_preflight_headers() {
        let p = Policy::new(&cors(&["https://a.test"], false, false));
        let req = request(
            "OPTIONS",
            &[
                ("Origin", "https://a.test"),
                ("Access-Control-Request-Method", "GET"),
            ],
        );
        let mut resp = ResponseHeader::build(204, None).unwrap();
        resp.append_header("Access-Control-Max-Age", "600").unwrap();
        apply(&mut resp, &p, &req, false);
        assert_eq!(resp.headers.get("access-control-max-age").unwrap(), "600");
        assert_eq!(
            resp.headers.get("access-control-allow-origin").unwrap(),
            "https://a.test"
        );
        assert!(
            resp.headers.get("access-control-expose-headers").is_none(),
            "nothing to expose on a preflight answer"
        );
    }

    #[test]
    fn policies_pick_the_route_or_auth_block() {
        let mut ps = Policies {
            auth: Some(Policy::new(&cors(&["https://auth.test"], false, false))),
            routes: vec![
                None,
                Some(Policy::new(&cors(&["https://r.test"], false, false))),
            ],
        };
        assert!(ps.for_answer(Some(0), "none").is_none());
        assert!(ps
            .for_answer(Some(1), "none")
            .unwrap()
            .allows(b"https://r.test"));
        assert!(ps.for_answer(Some(7), "none").is_none());
        assert!(ps
            .for_answer(None, "auth")
            .unwrap()
            .allows(b"https://auth.test"));
        assert!(ps.for_answer(None, "probe").is_none());
        let pre = request(
            "OPTIONS",
            &[
                ("Origin", "https://r.test"),
                ("Access-Control-Request-Method", "GET"),
            ],
        );
        assert!(ps.preflight(Some(0), &pre).is_none(), "no cors: as before");
        assert_eq!(ps.preflight(Some(1), &pre).unwrap().status, 204);
        assert_eq!(ps.preflight(None, &pre).unwrap().status, 403);
        assert!(ps.preflight(Some(1), &request("GET", &[])).is_none());
        ps.auth = None;
        assert!(ps.preflight(None, &pre).is_none());
    }
}
