//! The per-request authentication decision: the one seam every protected request passes.
//!
//! `authenticate` looks at the credentials (`Authorization: Bearer` first, else the access
//! cookie) and answers allow-with-identity or a [`Failure`] that `routes::response` turns
//! into a 302 to the login page (browser navigation) or a 401/403 JSON body (anything else).

pub mod cookies;
pub mod password;
pub mod ratelimit;
pub mod sessions;
pub mod users;

use crate::config::{AuthMode, Route};
use crate::gateway::AppState;
use crate::tokens::access::{IdentityValues, Verified, VerifyError};
use pingora::http::RequestHeader;
use std::sync::Arc;

/// The verified identity of a request: the access token's claims, shared with the cache.
pub type Identity = Arc<Verified>;

/// Why a protected request was refused. Each variant is one documented error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No credentials at all.
    TokenRequired,
    TokenExpired,
    InvalidToken,
    TokenRevoked,
    /// Authenticated but lacking a required role.
    Forbidden,
    /// A cookie-authenticated unsafe request from another site.
    Csrf,
    /// The shared store has been unreachable too long to trust the revocation view.
    Unavailable,
}

impl Failure {
    pub fn code(self) -> &'static str {
        match self {
            Failure::TokenRequired => "token_required",
            Failure::TokenExpired => "token_expired",
            Failure::InvalidToken => "invalid_token",
            Failure::TokenRevoked => "token_revoked",
            Failure::Forbidden => "forbidden",
            Failure::Csrf => "csrf",
            Failure::Unavailable => "store_unavailable",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Failure::TokenRequired => "authentication required",
            Failure::TokenExpired => "the access token has expired",
            Failure::InvalidToken => "the access token is invalid",
            Failure::TokenRevoked => "the access token has been revoked",
            Failure::Forbidden => "you do not have access to this resource",
            Failure::Csrf => "cross-site request refused",
            Failure::Unavailable => "authentication is temporarily unavailable",
        }
    }

    /// Whether a token was presented (RFC 6750: `error="invalid_token"` in the challenge).
    pub fn token_presented(self) -> bool {
        !matches!(self, Failure::TokenRequired)
    }
}

/// Outcome of [`authenticate`].
#[derive(Debug)]
pub enum Decision {
    Allow(Option<Identity>, Via),
    Deny(Failure),
}

/// How an allowed request proved who it is, which tells the gateway what to remove before
/// the application sees the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A public route: nothing was checked.
    Public,
    /// The request's only `Authorization` value, of the Bearer scheme ([`credential`]
    /// refuses a Bearer value beside another one).
    Bearer,
    /// The access cookie, or a transparent refresh; `Authorization` may still hold another
    /// scheme's value for the application, and a Bearer value after it.
    Cookie,
}

/// Credentials found on a request.
pub enum Credential<'a> {
    /// The header's bytes: checked as text only when the verified-token cache misses.
    Bearer(&'a [u8]),
    Cookie(&'a str),
    /// Something unusable: two access cookies, a non-Bearer scheme, bytes that are not text.
    Ambiguous,
    None,
}

impl<'a> Credential<'a> {
    pub fn token(&self) -> Option<&'a str> {
        match self {
            Credential::Bearer(t) => std::str::from_utf8(t).ok(),
            Credential::Cookie(t) => Some(t),
            _ => None,
        }
    }
}

/// `Authorization: Bearer` first, else the access cookie. Never the query string.
pub fn credential<'a>(req: &'a RequestHeader, access_cookie: &str) -> Credential<'a> {
    let mut auth = req.headers.get_all(http::header::AUTHORIZATION).iter();
    if let Some(v) = auth.next() {
        let bearer = bearer_token(v.as_bytes());
        if auth.next().is_some() && bearer.is_some() {
            return Credential::Ambiguous;
        }
        match bearer {
            Some(Some(token)) => return Credential::Bearer(token),
            Some(None) => return Credential::Ambiguous,
            // Another scheme (Basic for the legacy app itself): not ours, the cookie decides.
            None => {}
        }
    }
    match cookie_value(req, access_cookie) {
        None => Credential::None,
        Some(Some(v)) => Credential::Cookie(v),
        Some(None) => Credential::Ambiguous,
    }
}

/// Is this `Authorization` value of the Bearer scheme? Such a header is ours, never the
/// application's, whatever follows the scheme.
pub fn is_bearer(value: &[u8]) -> bool {
    let scheme = value.split(|&b| b == b' ').next().unwrap_or(value);
    scheme.eq_ignore_ascii_case(b"bearer")
}

/// `None`: not a Bearer credential; `Some(None)`: Bearer but empty; `Some(Some(t))`. Bytes
/// that are not text are refused by verification (they can never be in the token cache).
pub fn bearer_token(value: &[u8]) -> Option<Option<&[u8]>> {
    if !is_bearer(value) {
        return None;
    }
    let token = value.get("bearer ".len()..).unwrap_or_default();
    Some(Some(token).filter(|t| !t.is_empty()))
}

/// The value of cookie `name`: `None` when absent, `Some(None)` when sent more than once
/// (cookie tossing: which one is real cannot be known).
pub fn cookie_value<'a>(req: &'a RequestHeader, name: &str) -> Option<Option<&'a str>> {
    let mut found = None;
    for v in req.headers.get_all(http::header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for pair in s.split(';') {
            let (k, val) = pair.split_once('=').unwrap_or((pair, ""));
            if k.trim() == name {
                if found.is_some() {
                    return Some(None);
                }
                found = Some(val.trim().trim_matches('"'));
            }
        }
    }
    found.map(Some)
}

/// Map a verification error to the documented failure code.
pub fn failure_for(e: VerifyError) -> Failure {
    match e {
        VerifyError::Expired => Failure::TokenExpired,
        VerifyError::Revoked => Failure::TokenRevoked,
        _ => Failure::InvalidToken,
    }
}

/// Unsafe methods: every method but the safe ones (RFC 9110 section 9.2.1), so WebDAV's
/// `PROPPATCH`, `MOVE`, `LOCK` and any extension method count as state-changing.
pub fn is_unsafe(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    )
}

/// A cookie-authenticated unsafe request that may come from another site: Fetch Metadata
/// other than `same-origin` or `none` (a same-site subdomain is another origin), or an `Origin`
/// other than `public_url`, whatever Fetch Metadata says.
pub fn is_cross_site(req: &RequestHeader, public_url: &str) -> bool {
    if !is_unsafe(&req.method) {
        return false;
    }
    if let Some(site) = req.headers.get("sec-fetch-site") {
        let b = site.as_bytes();
        if !(b.eq_ignore_ascii_case(b"same-origin") || b.eq_ignore_ascii_case(b"none")) {
            return true;
        }
    }
    req.headers
        .get(http::header::ORIGIN)
        .is_some_and(|o| !o.as_bytes().eq_ignore_ascii_case(public_url.as_bytes()))
}

fn admit(
    state: &AppState,
    req: &RequestHeader,
    route: &Route,
    identity: Identity,
    via: Via,
) -> Decision {
    let by_cookie = via == Via::Cookie;
    if !route.roles.is_empty() && !route.roles.iter().any(|r| identity.roles.contains(r)) {
        return Decision::Deny(Failure::Forbidden);
    }
    if by_cookie && is_cross_site(req, &state.config.server.public_url) {
        tracing::warn!(target: "portcullis::audit", event = "csrf_blocked", user = %identity.sub, method = %req.method, path = %req.uri.path());
        return Decision::Deny(Failure::Csrf);
    }
    Decision::Allow(Some(identity), via)
}

/// Decide whether `req` may pass `route`. Returns the decision and cookies to set on the
/// response (a transparent refresh's new cookies, or cleared ones after a failed refresh).
pub async fn authenticate(
    state: &AppState,
    req: &RequestHeader,
    route: &Route,
) -> (Decision, Vec<http::HeaderValue>) {
    if route.auth == AuthMode::Public {
        return (Decision::Allow(None, Via::Public), Vec::new());
    }
    if !state.store.revocations_fresh() && !state.store.revocations_loaded().await {
        // Fail closed: a revocation made elsewhere could be missing from the local view.
        return (Decision::Deny(Failure::Unavailable), Vec::new());
    }
    let c = &state.config.cookies;
    let failure = match credential(req, &c.access_name) {
        Credential::None => Failure::TokenRequired,
        Credential::Ambiguous => Failure::InvalidToken,
        Credential::Bearer(t) => {
            return match state.tokens.verify(t).await {
                Ok(identity) => (admit(state, req, route, identity, Via::Bearer), Vec::new()),
                Err(e) => (Decision::Deny(failure_for(e)), Vec::new()),
            }
        }
        Credential::Cookie(t) => match state.tokens.verify(t).await {
            Ok(identity) => return (admit(state, req, route, identity, Via::Cookie), Vec::new()),
            Err(e) => failure_for(e),
        },
    };
    // Transparent refresh: legacy pages never see an expiry while the session lives.
    let Some(Some(refresh)) = cookie_value(req, &c.refresh_name) else {
        return (Decision::Deny(failure), Vec::new());
    };
    match state.sessions.refresh_shared(refresh).await {
        Ok(issued) => {
            let u = &issued.user;
            let Ok(wire) = IdentityValues::new(&u.id, &u.email, &u.roles) else {
                return (Decision::Deny(failure), cookies::clear_all(c));
            };
            let identity = Arc::new(Verified {
                wire,
                sub: issued.user.id.clone(),
                email: issued.user.email.clone(),
                roles: issued.user.roles.clone(),
                sid: issued.family.sid.clone(),
                jti: issued.access.jti.clone(),
                exp: issued.access.exp,
                iss: state.tokens.issuer().to_string(),
            });
            let csrf = cookie_value(req, &c.csrf_name)
                .flatten()
                .map(str::to_string)
                .unwrap_or_else(|| crate::tokens::access::random_id(32));
            let cookies = crate::routes::session_routes::session_cookies(state, &issued, &csrf);
            (admit(state, req, route, identity, Via::Cookie), cookies)
        }
        // The store did not answer: the session may be fine, so it is kept (503, no cookie
        // cleared) rather than ended by a hiccup.
        Err(crate::auth::sessions::SharedRefreshError::Unavailable) => {
            (Decision::Deny(Failure::Unavailable), Vec::new())
        }
        Err(_) => (Decision::Deny(failure), cookies::clear_all(c)),
    }
}

/// A browser navigation gets a redirect to the login page; everything else gets JSON.
pub fn is_navigation(req: &RequestHeader) -> bool {
    if let Some(mode) = req.headers.get("sec-fetch-mode") {
        return mode.as_bytes().eq_ignore_ascii_case(b"navigate");
    }
    let get_or_head = req.method == http::Method::GET || req.method == http::Method::HEAD;
    get_or_head
        && req
            .headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_methods_and_cross_site_requests() {
        for m in [
            "POST",
            "PUT",
            "PATCH",
            "DELETE",
            "PROPPATCH",
            "MOVE",
            "COPY",
            "LOCK",
            "MKCOL",
            "PURGE",
        ] {
            assert!(
                is_unsafe(&http::Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
        for m in ["GET", "HEAD", "OPTIONS", "TRACE"] {
            assert!(
                !is_unsafe(&http::Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
        let public = "https://app.example.com";
        let req = |method: &str, headers: &[(&str, &str)]| {
            let mut r = RequestHeader::build(method, b"/x", None).unwrap();
            for (k, v) in headers {
                r.append_header(k.to_string(), *v).unwrap();
            }
            r
        };
        let cross = [
            req("POST", &[("Sec-Fetch-Site", "cross-site")]),
            req("POST", &[("Sec-Fetch-Site", "same-site")]),
            req("MOVE", &[("Sec-Fetch-Site", "same-site")]),
            req(
                "POST",
                &[
                    ("Sec-Fetch-Site", "same-origin"),
                    ("Origin", "https://evil.example"),
                ],
            ),
            req("PROPPATCH", &[("Origin", "https://app.example.com.evil")]),
            req("POST", &[("Origin", "null")]),
        ];
        for r in &cross {
            assert!(is_cross_site(r, public), "{:?}", r.headers);
        }
        let same = [
            req(
                "POST",
                &[
                    ("Sec-Fetch-Site", "same-origin"),
                    ("Origin", "https://app.example.com"),
                ],
            ),
            req("POST", &[("Sec-Fetch-Site", "none")]),
            req("DELETE", &[]),
            req("GET", &[("Sec-Fetch-Site", "cross-site")]),
        ];
        for r in &same {
            assert!(!is_cross_site(r, public), "{:?}", r.headers);
        }
    }

    #[test]
    fn bearer_scheme_is_read_from_bytes() {
        assert_eq!(bearer_token(b"Bearer abc.def"), Some(Some(&b"abc.def"[..])));
        assert_eq!(bearer_token(b"bEaReR abc"), Some(Some(&b"abc"[..])));
        // Ours but unusable: refused, never passed to the application.
        assert_eq!(bearer_token(b"Bearer"), Some(None));
        assert_eq!(bearer_token(b"Bearer "), Some(None));
        // Not text: ours, and left to verification to refuse (tested there).
        assert_eq!(
            bearer_token(b"Bearer \xff\xfe"),
            Some(Some(&b"\xff\xfe"[..]))
        );
        assert!(is_bearer(b"Bearer \xff\xfe"));
        // Another scheme is the application's.
        for other in [
            &b"Basic dXNlcjpwYXNz"[..],
            b"Bearerx abc",
            b"\xffBearer abc",
            b"",
        ] {
            assert_eq!(bearer_token(other), None);
            assert!(!is_bearer(other));
        }
    }
}
