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

mod headers;
mod preflight;
#[cfg(test)]
mod tests;

pub use headers::apply;
pub use preflight::is_preflight;

use crate::config::{Config, Cors};
use crate::respond::LocalResponse;
use http::header::ORIGIN;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use pingora::http::RequestHeader;

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
