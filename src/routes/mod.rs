//! `/auth/*`: the endpoints the gateway answers itself, one file per endpoint family, and
//! the opening they share (content type, CSRF, who is calling). Each endpoint takes the
//! request head and its (small, already read) body and returns the answer; the gateway
//! writes it.
//!
//! - `login.rs`: the login page and `POST /auth/login` (JSON and form)
//! - `login_page.rs`: the HTML form, `return_to` validation
//! - `signin.rs`: what completes a sign-in: a new session, or a step-up of the current one
//! - `account.rs`: the user's page: sessions with sign-out buttons (plain forms), the second
//!   factor's status
//! - `client.rs`: the browser client script (`client.js`)
//! - `sessions.rs`: the caller's own sessions: list, end one, end the others
//! - `mfa.rs`: the second factor: the code step of a login, enrolment, removal
//!   (`mfa_page.rs`: its pages)
//! - `refresh.rs`, `logout.rs` (logout: JSON, the sign-out page and its form; logout-all),
//!   `session.rs`, `jwks.rs`

pub mod account;
pub mod client;
pub mod jwks;
pub mod login;
pub mod login_page;
pub mod logout;
pub mod mfa;
pub mod mfa_page;
pub mod refresh;
pub mod session;
pub mod sessions;
pub mod signin;

use crate::auth::cookies::csrf_header_ok;
use crate::auth::login::PasswordLogin;
use crate::auth::{cookie_value, credential, AuthState, Credential};
use crate::respond::{self, LocalResponse};
use http::header::SET_COOKIE;
use http::{HeaderValue, Method};
use pingora::http::RequestHeader;
use std::sync::Arc;

/// What the endpoints need.
pub struct Endpoints {
    pub auth: Arc<AuthState>,
    pub login: Arc<PasswordLogin>,
    /// Outcomes of logins, refreshes, revocations and CSRF checks are counted here.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// One call to an endpoint: the request head, its body, and who sent it (the client
/// address, or `unknown`; rate limits and audit lines key on it), with the request id and
/// user agent the audit lines carry.
pub struct Call<'a> {
    pub req: &'a RequestHeader,
    pub body: &'a [u8],
    pub client: &'a str,
    pub request_id: &'a str,
    pub user_agent: &'a str,
}

/// Answer a request under `/auth/`.
pub async fn answer(ep: &Endpoints, call: &Call<'_>, path: &str) -> LocalResponse {
    let method = &call.req.method;
    if path == "/auth/client.js" {
        // Cached by browsers (revalidated with its ETag), unlike every other `/auth` answer.
        return match *method {
            Method::GET | Method::HEAD => client::script(call.req),
            _ => respond::method_not_allowed("GET, HEAD"),
        };
    }
    let resp = match (path, method) {
        ("/auth/login", &Method::GET) => login::page(ep, call.req),
        ("/auth/login", &Method::POST) => login::login(ep, call).await,
        ("/auth/login", _) => respond::method_not_allowed("GET, POST"),
        ("/auth/mfa" | "/auth/mfa/totp" | "/auth/login/mfa", _) => {
            mfa::answer(ep, call, path).await
        }
        ("/auth/refresh", &Method::POST) => json(call, refresh::refresh(ep, call)).await,
        ("/auth/logout", &Method::GET) => logout::page(ep, call.req),
        // The sign-out form posts a form body, which the JSON opening refuses.
        ("/auth/logout", &Method::POST) if is_form(call.req) => logout::logout_form(ep, call).await,
        ("/auth/logout", &Method::POST) => json(call, logout::logout(ep, call)).await,
        ("/auth/logout", _) => respond::method_not_allowed("GET, POST"),
        ("/auth/logout-all", &Method::POST) => json(call, logout::logout_all(ep, call)).await,
        ("/auth/refresh" | "/auth/logout-all", _) => respond::method_not_allowed("POST"),
        ("/auth/session", &Method::GET) => session::info(ep, call.req).await,
        ("/auth/account", &Method::GET) => account::page(ep, call).await,
        ("/auth/account", &Method::POST) if is_form(call.req) => account::act(ep, call).await,
        ("/auth/account", &Method::POST) => respond::unsupported_media_type("send the page's form"),
        ("/auth/account", _) => respond::method_not_allowed("GET, POST"),
        ("/auth/sessions", &Method::GET) => sessions::list(ep, call).await,
        ("/auth/sessions", _) => respond::method_not_allowed("GET"),
        ("/auth/sessions/revoke-others", &Method::POST) => {
            json(call, sessions::revoke_others(ep, call)).await
        }
        ("/auth/sessions/revoke-others", _) => respond::method_not_allowed("POST"),
        (p, &Method::DELETE) if p.starts_with("/auth/sessions/") => {
            let sid = &p["/auth/sessions/".len()..];
            json(call, sessions::revoke_one(ep, call, sid)).await
        }
        (p, _) if p.starts_with("/auth/sessions/") => respond::method_not_allowed("DELETE"),
        ("/auth/session", _) => respond::method_not_allowed("GET"),
        _ => respond::not_found("no such endpoint"),
    };
    resp.no_store()
}

fn media_type(req: &RequestHeader) -> Option<String> {
    req.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// Is the body an HTML form post?
fn is_form(req: &RequestHeader) -> bool {
    media_type(req).as_deref() == Some("application/x-www-form-urlencoded")
}

/// JSON endpoints refuse simple content types (a cross-site form can send those without a
/// preflight): a body, or a declared type, must be JSON.
fn json_or_empty(call: &Call<'_>) -> Result<(), LocalResponse> {
    match media_type(call.req) {
        None if call.body.is_empty() => Ok(()),
        Some(t) if t == "application/json" || t.ends_with("+json") => Ok(()),
        _ => Err(respond::unsupported_media_type("send application/json")),
    }
}

/// A JSON endpoint: answered by `endpoint` once the body passed [`json_or_empty`].
async fn json(
    call: &Call<'_>,
    endpoint: impl std::future::Future<Output = LocalResponse>,
) -> LocalResponse {
    match json_or_empty(call) {
        Ok(()) => endpoint.await,
        Err(r) => r,
    }
}

/// Is this request authenticated by our cookies (so CSRF applies)?
fn cookie_authenticated(ep: &Endpoints, req: &RequestHeader) -> bool {
    let c = &ep.auth.config.cookies;
    match credential(req, &c.access_name) {
        Credential::Bearer(_) => false,
        _ => {
            cookie_value(req, &c.access_name).is_some()
                || cookie_value(req, &c.refresh_name).is_some()
        }
    }
}

/// The CSRF double-submit check of a cookie-authenticated call: `X-CSRF-Token` must match
/// the CSRF cookie. A refusal is audited.
fn check_csrf(ep: &Endpoints, call: &Call<'_>, endpoint: &str) -> Result<(), LocalResponse> {
    if csrf_header_ok(call.req, &ep.auth.config.cookies) {
        return Ok(());
    }
    audit_csrf(ep, call, endpoint);
    Err(respond::csrf("missing or wrong X-CSRF-Token header"))
}

/// A CSRF refusal at `endpoint`: one audit line, counted.
fn audit_csrf(ep: &Endpoints, call: &Call<'_>, endpoint: &str) {
    ep.metrics
        .csrf_refusals
        .with_label_values(&[endpoint])
        .inc();
    tracing::warn!(target: "portcullis::audit", event = "csrf_blocked", endpoint, reason = "csrf_token", client_ip = %call.client, request_id = call.request_id, user_agent = call.user_agent);
}

fn with_cookies(mut r: LocalResponse, cookies: Vec<HeaderValue>) -> LocalResponse {
    for c in cookies {
        r.headers.push((SET_COOKIE, c));
    }
    r
}
