//! The per-request authentication decision: the one seam every protected request passes.
//!
//! `authenticate` looks at the credentials (`Authorization: Bearer` first, else the access
//! cookie) and answers allow-with-identity or a [`Failure`] that `routes::response` turns
//! into a 302 to the login page (browser navigation) or a 401/403 JSON body (anything else).

pub mod cookies;
pub mod credential;
pub mod csrf;
pub mod device;
pub mod login;
pub mod mfa;
pub mod notify;
pub mod password;
pub mod ratelimit;
pub mod sessions;
pub mod users;
pub mod users_reload;

pub use credential::{bearer_token, cookie_value, credential, is_bearer, Credential};
pub use csrf::{is_cross_site, is_unsafe};

use crate::config::{AuthMode, Config, Route};
use crate::store::SharedStore;
use crate::tokens::access::{IdentityValues, TokenService, Verified, VerifyError};
use pingora::http::RequestHeader;
use sessions::Sessions;
use std::sync::Arc;

/// What authenticating a request needs; shared by the proxy and the `/auth` endpoints.
pub struct AuthState {
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub tokens: Arc<TokenService>,
    pub sessions: Arc<Sessions>,
    /// The second factor (`None` when the config has no `mfa` key).
    pub mfa: Option<mfa::SecondFactor>,
}

impl AuthState {
    pub fn new(config: Arc<Config>, sessions: Arc<Sessions>) -> Self {
        let mfa = config.mfa.as_ref().map(|m| {
            mfa::SecondFactor::new(m, sessions.store.clone(), sessions.tokens.clock.clone())
        });
        AuthState {
            store: sessions.store.clone(),
            tokens: sessions.tokens.clone(),
            sessions,
            config,
            mfa,
        }
    }

    /// Must the user behind `identity` enter a code before anything else (their account or
    /// role requires a second factor, and this session has not used one)?
    fn must_use_code(&self, identity: &Verified) -> bool {
        let Some(mfa) = &self.mfa else {
            return false;
        };
        if identity.otp || identity.sid.is_empty() {
            return false;
        }
        mfa.required_by_roles(&identity.roles)
            || (self.sessions.users.any_mfa_required()
                && self
                    .sessions
                    .users
                    .by_id(&identity.sub)
                    .is_some_and(|u| u.mfa_required))
    }
}

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
    /// The route wants a more recent sign-in (`max_auth_age`).
    StepUp,
    /// The route (or the user's account) wants a code entered in this session.
    StepUpCode,
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
            Failure::StepUp | Failure::StepUpCode => "step_up_required",
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
            Failure::StepUp => "sign in again to continue",
            Failure::StepUpCode => "enter a code from your authenticator app to continue",
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
    /// Refused; the user is named when the credentials say who it was (for the logs only).
    Deny(Failure, Option<String>),
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

/// Map a verification error to the documented failure code.
pub fn failure_for(e: VerifyError) -> Failure {
    match e {
        VerifyError::Expired => Failure::TokenExpired,
        VerifyError::Revoked => Failure::TokenRevoked,
        _ => Failure::InvalidToken,
    }
}

/// [`verify_request`] for the pages and APIs of the caller's own account: an account that must
/// enter a code first (and has not, in this session) gets `step_up_required` there too, so
/// that enrolment comes before any other page. Sign-out and the second factor's own pages
/// use [`verify_request`].
pub async fn verify_signed_in(state: &AuthState, req: &RequestHeader) -> Result<Identity, Failure> {
    let identity = verify_request(state, req).await?;
    if state.must_use_code(&identity) {
        return Err(Failure::StepUpCode);
    }
    Ok(identity)
}

/// The identity behind a request's access token (Bearer or cookie), without a transparent
/// refresh: for the endpoints that act on the caller's own session.
pub async fn verify_request(state: &AuthState, req: &RequestHeader) -> Result<Identity, Failure> {
    match credential(req, &state.config.cookies.access_name) {
        Credential::None => Err(Failure::TokenRequired),
        Credential::Ambiguous => Err(Failure::InvalidToken),
        Credential::Bearer(t) => state.tokens.verify(t).await.map_err(failure_for),
        Credential::Cookie(t) => state.tokens.verify(t).await.map_err(failure_for),
    }
}

fn admit(
    state: &AuthState,
    req: &RequestHeader,
    route: &Route,
    identity: Identity,
    via: Via,
) -> Decision {
    let by_cookie = via == Via::Cookie;
    if !route.roles.is_empty() && !route.roles.iter().any(|r| identity.roles.contains(r)) {
        return Decision::Deny(Failure::Forbidden, Some(identity.sub.clone()));
    }
    if by_cookie && is_cross_site(req, &state.config.server.public_url) {
        return Decision::Deny(Failure::Csrf, Some(identity.sub.clone()));
    }
    if let Some(step_up) = step_up(state, route, &identity) {
        return Decision::Deny(step_up, Some(identity.sub.clone()));
    }
    Decision::Allow(Some(identity), via)
}

/// Does `identity` need to prove who it is again for `route`: a code this session has not
/// entered (the route's `mfa: required`, or an account that must use one), or a sign-in
/// older than the route's `max_auth_age`?
fn step_up(state: &AuthState, route: &Route, identity: &Verified) -> Option<Failure> {
    if (route.mfa_required && !identity.otp) || state.must_use_code(identity) {
        return Some(Failure::StepUpCode);
    }
    let max = route.max_auth_age?;
    let age = state.tokens.clock.now().saturating_sub(identity.auth_time);
    (age > max.as_secs()).then_some(Failure::StepUp)
}

/// Decide whether `req` may pass `route`. Returns the decision and cookies to set on the
/// response (a transparent refresh's new cookies, or cleared ones after a failed refresh).
pub async fn authenticate(
    state: &AuthState,
    req: &RequestHeader,
    route: &Route,
) -> (Decision, Vec<http::HeaderValue>) {
    if route.auth == AuthMode::Public {
        return (Decision::Allow(None, Via::Public), Vec::new());
    }
    if !state.store.revocations_fresh() && !state.store.revocations_loaded().await {
        // Fail closed: a revocation made elsewhere could be missing from the local view.
        return (Decision::Deny(Failure::Unavailable, None), Vec::new());
    }
    let c = &state.config.cookies;
    let (failure, user) = match credential(req, &c.access_name) {
        Credential::None => (Failure::TokenRequired, None),
        Credential::Ambiguous => (Failure::InvalidToken, None),
        Credential::Bearer(t) => {
            return match state.tokens.verify(t).await {
                Ok(identity) => (admit(state, req, route, identity, Via::Bearer), Vec::new()),
                Err(e) => (
                    Decision::Deny(failure_for(e), whose(state, e, t)),
                    Vec::new(),
                ),
            }
        }
        Credential::Cookie(t) => match state.tokens.verify(t).await {
            Ok(identity) => return (admit(state, req, route, identity, Via::Cookie), Vec::new()),
            Err(e) => (failure_for(e), whose(state, e, t.as_bytes())),
        },
    };
    // Transparent refresh: legacy pages never see an expiry while the session lives.
    let Some(Some(refresh)) = cookie_value(req, &c.refresh_name) else {
        return (Decision::Deny(failure, user), Vec::new());
    };
    match state.sessions.refresh_shared(refresh).await {
        Ok(issued) => {
            let u = &issued.user;
            let Ok(wire) = IdentityValues::new(&u.id, &u.email, &u.roles) else {
                return (Decision::Deny(failure, user), cookies::clear_all(c));
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
                auth_time: issued.family.authenticated_at(),
                otp: issued.family.otp(),
            });
            let csrf = cookie_value(req, &c.csrf_name)
                .flatten()
                .map(str::to_string)
                .unwrap_or_else(|| crate::tokens::access::random_id(32));
            let cookies = cookies::session_cookies(state, &issued, &csrf);
            (admit(state, req, route, identity, Via::Cookie), cookies)
        }
        // The store did not answer: the session may be fine, so it is kept (503, no cookie
        // cleared) rather than ended by a hiccup.
        Err(sessions::SharedRefreshError::Unavailable) => {
            (Decision::Deny(Failure::Unavailable, user), Vec::new())
        }
        Err(_) => (Decision::Deny(failure, user), cookies::clear_all(c)),
    }
}

/// Whose token was refused as expired or revoked (its signature still checked), for the log
/// line a support engineer reads; `None` for anything else.
fn whose(state: &AuthState, e: VerifyError, token: &[u8]) -> Option<String> {
    match e {
        VerifyError::Expired | VerifyError::Revoked => {
            let text = std::str::from_utf8(token).ok()?;
            state.tokens.verify_ignoring_time(text).ok().map(|v| v.sub)
        }
        _ => None,
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
