//! The per-request authentication decision: the one seam every protected request passes.
//!
//! `authenticate` looks at the credentials (`Authorization: Bearer` first, else the access
//! cookie) and answers allow-with-identity or a [`Failure`] that `routes::response` turns
//! into a 302 to the login page (browser navigation) or a 401/403 JSON body (anything else).

use crate::config::{AuthMode, Route};
use crate::gateway::AppState;
use pingora::http::RequestHeader;

/// The verified identity of a request, from the access token's claims.
#[derive(Debug, Clone)]
pub struct Identity {
    pub sub: String,
    pub email: String,
    pub roles: Vec<String>,
}

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
    None,
}

/// `Authorization: Bearer` first, else the access cookie. Never the query string.
pub fn credential<'a>(req: &'a RequestHeader, access_cookie: &str) -> Credential<'a> {
    if let Some(v) = req.headers.get(http::header::AUTHORIZATION) {
        if let Some(token) = v.to_str().ok().and_then(|s| {
            s.strip_prefix("Bearer ")
                .or_else(|| s.strip_prefix("bearer "))
        }) {
            return Credential::Bearer(token.trim());
        }
    }
    for v in req.headers.get_all(http::header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for c in cookie::Cookie::split_parse(s).flatten() {
            if c.name() == access_cookie {
                return Credential::Cookie(c.value_raw().unwrap_or(""));
            }
        }
    }
    Credential::None
}

/// Decide whether `req` may pass `route`.
pub fn authenticate(state: &AppState, req: &RequestHeader, route: &Route) -> Decision {
    if route.auth == AuthMode::Public {
        return Decision::Allow(None);
    }
    match credential(req, &state.config.cookies.access_name) {
        Credential::None => Decision::Deny(Failure::TokenRequired),
        // Token verification arrives with the keyring; until then nothing verifies.
        Credential::Bearer(_) | Credential::Cookie(_) => Decision::Deny(Failure::InvalidToken),
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
