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
use crate::tokens::access::{Verified, VerifyError};
use pingora::http::RequestHeader;
use std::sync::Arc;

/// The verified identity of a request: the access token's claims, shared with the cache.
pub type Identity = Arc<Verified>;

/// Why a protected request was refused. Each variant is one SPEC error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No credentials at all.
    TokenRequired,
    TokenExpired,
    InvalidToken,
    TokenRevoked,
    /// Authenticated but lacking a required role.
    Forbidden,
}

impl Failure {
    pub fn code(self) -> &'static str {
        match self {
            Failure::TokenRequired => "token_required",
            Failure::TokenExpired => "token_expired",
            Failure::InvalidToken => "invalid_token",
            Failure::TokenRevoked => "token_revoked",
            Failure::Forbidden => "forbidden",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Failure::TokenRequired => "authentication required",
            Failure::TokenExpired => "the access token has expired",
            Failure::InvalidToken => "the access token is invalid",
            Failure::TokenRevoked => "the access token has been revoked",
            Failure::Forbidden => "you do not have access to this resource",
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
    Allow(Option<Identity>),
    Deny(Failure),
}

/// Credentials found on a request.
pub enum Credential<'a> {
    Bearer(&'a str),
    Cookie(&'a str),
    /// Something unusable: two access cookies, a non-Bearer scheme, bytes that are not text.
    Ambiguous,
    None,
}

impl<'a> Credential<'a> {
    pub fn token(&self) -> Option<&'a str> {
        match self {
            Credential::Bearer(t) | Credential::Cookie(t) => Some(t),
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

/// `None`: not a Bearer credential; `Some(None)`: Bearer but unusable; `Some(Some(t))`.
pub fn bearer_token(value: &[u8]) -> Option<Option<&str>> {
    let s = std::str::from_utf8(value).ok()?;
    let (scheme, token) = s.split_once(' ').unwrap_or((s, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
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

/// Map a verification error to the SPEC failure code.
pub fn failure_for(e: VerifyError) -> Failure {
    match e {
        VerifyError::Expired => Failure::TokenExpired,
        VerifyError::Revoked => Failure::TokenRevoked,
        _ => Failure::InvalidToken,
    }
}

/// Decide whether `req` may pass `route`.
pub async fn authenticate(state: &AppState, req: &RequestHeader, route: &Route) -> Decision {
    if route.auth == AuthMode::Public {
        return Decision::Allow(None);
    }
    let token = match credential(req, &state.config.cookies.access_name) {
        Credential::None => return Decision::Deny(Failure::TokenRequired),
        Credential::Ambiguous => return Decision::Deny(Failure::InvalidToken),
        Credential::Bearer(t) | Credential::Cookie(t) => t,
    };
    match state.tokens.verify(token).await {
        Ok(identity) => {
            if !route.roles.is_empty() && !route.roles.iter().any(|r| identity.roles.contains(r)) {
                return Decision::Deny(Failure::Forbidden);
            }
            Decision::Allow(Some(identity))
        }
        Err(e) => Decision::Deny(failure_for(e)),
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
