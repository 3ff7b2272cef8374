//! A browser's preflight, answered by the gateway and never forwarded.

use super::{joined, Policy};
use crate::respond::LocalResponse;
use bytes::Bytes;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use http::{HeaderValue, Method};
use pingora::http::RequestHeader;

impl Policy {
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
    /// [`apply`](super::apply) like on every answer), 403 for any other origin. Neither is
    /// forwarded.
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
