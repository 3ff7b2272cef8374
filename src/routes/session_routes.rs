//! Login (JSON and form), refresh, logout, logout-all and session info.

use super::login_page::{render, safe_return_to};
use crate::auth::cookies::{self, csrf_header_ok, secure_eq};
use crate::auth::password::{Check, MAX_PASSWORD_LEN};
use crate::auth::sessions::{Issued, RefreshError};
use crate::auth::users::User;
use crate::auth::{cookie_value, credential, failure_for, Credential, Failure};
use crate::gateway::{AppState, RequestCtx};
use crate::respond::LocalResponse;
use crate::tokens::access::random_id;
use http::header::{LOCATION, RETRY_AFTER, SET_COOKIE};
use http::HeaderValue;
use pingora::http::RequestHeader;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

#[derive(Deserialize)]
struct LoginJson {
    email: String,
    password: String,
}

/// Why a password login did not succeed.
enum LoginFailure {
    Invalid,
    RateLimited(u64),
    Busy,
    TooLong,
    Store,
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

/// JSON endpoints refuse simple content types (a cross-site form can send those without a
/// preflight): a body, or a declared type, must be JSON.
fn json_or_empty(req: &RequestHeader, body: &[u8]) -> Result<(), LocalResponse> {
    match media_type(req) {
        None if body.is_empty() => Ok(()),
        Some(t) if t == "application/json" || t.ends_with("+json") => Ok(()),
        _ => Err(LocalResponse::error(
            415,
            "unsupported_media_type",
            "send application/json",
        )),
    }
}

/// 403 `csrf` for a cookie-authenticated call without the right `X-CSRF-Token`, audited.
fn csrf_refused(ctx: &RequestCtx, endpoint: &str) -> LocalResponse {
    tracing::warn!(target: "portcullis::audit", event = "csrf_blocked", endpoint, client_ip = %client_key(ctx));
    LocalResponse::error(403, "csrf", "missing or wrong X-CSRF-Token header")
}

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

fn client_key(ctx: &RequestCtx) -> String {
    ctx.client_ip
        .map(|i| i.to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn too_many(retry_after: u64) -> LocalResponse {
    LocalResponse::error(429, "rate_limited", "too many attempts; try again later")
        .header(RETRY_AFTER, HeaderValue::from(retry_after))
}

fn store_down() -> LocalResponse {
    LocalResponse::error(
        503,
        "store_unavailable",
        "the session store is unavailable; try again shortly",
    )
}

fn with_cookies(mut r: LocalResponse, cookies: Vec<HeaderValue>) -> LocalResponse {
    for c in cookies {
        r.headers.push((SET_COOKIE, c));
    }
    r
}

/// Cookies for a freshly issued pair (access, refresh, and the CSRF cookie).
pub fn session_cookies(state: &AppState, issued: &Issued, csrf: &str) -> Vec<HeaderValue> {
    let c = &state.config.cookies;
    let refresh_age = state.sessions.refresh_max_age(&issued.family);
    vec![
        cookies::set(
            c,
            &c.access_name,
            &issued.access.token,
            state.tokens.access_ttl(),
            true,
        ),
        cookies::set(c, &c.refresh_name, &issued.refresh, refresh_age, true),
        cookies::set(c, &c.csrf_name, csrf, refresh_age, false),
    ]
}

/// Check the password of `email`, with rate limits and constant cost for every failure.
async fn password_login(
    state: &AppState,
    ctx: &RequestCtx,
    email: &str,
    password: String,
) -> Result<Arc<User>, LoginFailure> {
    if password.len() > MAX_PASSWORD_LEN || email.len() > 320 {
        return Err(LoginFailure::TooLong);
    }
    let now = state.tokens.clock.now();
    let limits = &state.config.rate_limits;
    let ip_key = format!("login_ip:{}", client_key(ctx));
    let account_key = format!("login_account:{}", email.trim().to_ascii_lowercase());
    let store = state.store.as_ref();
    let by_ip = state
        .limiter
        .check_shared(store, &ip_key, limits.login_per_ip, now)
        .await;
    let by_account = state
        .limiter
        .check_shared(store, &account_key, limits.login_per_account, now)
        .await;
    let limited = match (by_ip, by_account) {
        (Ok(a), Ok(b)) => a.and(b),
        _ => return Err(LoginFailure::Store),
    };
    if let Err(retry) = limited {
        tracing::warn!(target: "portcullis::audit", event = "login_rate_limited", client_ip = %client_key(ctx), retry_after = retry);
        return Err(LoginFailure::RateLimited(retry));
    }
    let user = state.users.by_email(email);
    let hash = user
        .as_ref()
        .filter(|u| !u.disabled)
        .map(|u| u.password_hash.expose().clone());
    match state.passwords.verify(password, hash).await {
        Check::Match => Ok(user.expect("a match needs a user")),
        Check::Busy => Err(LoginFailure::Busy),
        Check::NoMatch => {
            let hits = async {
                state
                    .limiter
                    .hit_shared(store, &ip_key, limits.login_per_ip, now)
                    .await?;
                state
                    .limiter
                    .hit_shared(store, &account_key, limits.login_per_account, now)
                    .await
            };
            if hits.await.is_err() {
                return Err(LoginFailure::Store);
            }
            tracing::warn!(target: "portcullis::audit", event = "login_failed", client_ip = %client_key(ctx), known_user = user.is_some());
            if let Ok(Err(_)) = state
                .limiter
                .check_shared(store, &account_key, limits.login_per_account, now)
                .await
            {
                tracing::warn!(target: "portcullis::audit", event = "account_locked", user = user.as_ref().map(|u| u.id.as_str()).unwrap_or("(unknown)"), window_secs = limits.login_per_account.window.as_secs());
            }
            Err(LoginFailure::Invalid)
        }
    }
}

/// `GET /auth/login`: the form, with a CSRF token (reusing the cookie's when present).
pub fn login_page(state: &AppState, req: &RequestHeader, _ctx: &mut RequestCtx) -> LocalResponse {
    let return_to = req
        .uri
        .query()
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "return_to")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_else(|| "/".into());
    page_response(state, req, 200, &safe_return_to(&return_to), None, "")
}

fn page_response(
    state: &AppState,
    req: &RequestHeader,
    status: u16,
    return_to: &str,
    error: Option<&str>,
    email: &str,
) -> LocalResponse {
    let c = &state.config.cookies;
    let (csrf, set) = match cookie_value(req, &c.csrf_name) {
        Some(Some(v))
            if v.len() >= 32
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            (v.to_string(), false)
        }
        _ => (random_id(32), true),
    };
    let mut r = LocalResponse::html(status, render(&csrf, return_to, error, email));
    if set {
        r = r.header(
            SET_COOKIE,
            cookies::set(
                c,
                &c.csrf_name,
                &csrf,
                state.config.tokens.session_max_lifetime.as_secs(),
                false,
            ),
        );
    }
    r
}

/// `POST /auth/login`: JSON or form.
pub async fn login(
    state: &AppState,
    req: &RequestHeader,
    ctx: &mut RequestCtx,
    body: &[u8],
) -> LocalResponse {
    match media_type(req).as_deref() {
        Some("application/json") => login_json(state, ctx, body).await,
        Some("application/x-www-form-urlencoded") => login_form(state, req, ctx, body).await,
        _ => LocalResponse::error(
            415,
            "unsupported_media_type",
            "send application/json or a form",
        ),
    }
}

async fn login_json(state: &AppState, ctx: &mut RequestCtx, body: &[u8]) -> LocalResponse {
    let Ok(input) = serde_json::from_slice::<LoginJson>(body) else {
        return LocalResponse::error(
            400,
            "bad_request",
            "expected a JSON object with \"email\" and \"password\" strings",
        );
    };
    let user = match password_login(state, ctx, &input.email, input.password).await {
        Ok(u) => u,
        Err(LoginFailure::Invalid) => {
            return LocalResponse::error(
                401,
                "invalid_credentials",
                "the email or password is incorrect",
            )
        }
        Err(LoginFailure::RateLimited(retry)) => return too_many(retry),
        Err(LoginFailure::Busy) => {
            return LocalResponse::error(503, "busy", "too many logins in progress; try again")
        }
        Err(LoginFailure::TooLong) => {
            return LocalResponse::error(400, "bad_request", "email or password too long")
        }
        Err(LoginFailure::Store) => return store_down(),
    };
    let issued = match state.sessions.login(user).await {
        Ok(i) => i,
        Err(RefreshError::Store(_)) => return store_down(),
        Err(e) => return LocalResponse::error(500, "internal", &e.to_string()),
    };
    tracing::info!(target: "portcullis::audit", event = "login", user = %issued.user.id, sid = %issued.family.sid, client_ip = %client_key(ctx));
    let csrf = random_id(32);
    let body = json!({
        "access_token": issued.access.token,
        "token_type": "Bearer",
        "expires_in": state.tokens.access_ttl(),
        "user": { "id": issued.user.id, "email": issued.user.email, "roles": issued.user.roles },
    });
    with_cookies(
        LocalResponse::json(200, &body),
        session_cookies(state, &issued, &csrf),
    )
}

async fn login_form(
    state: &AppState,
    req: &RequestHeader,
    ctx: &mut RequestCtx,
    body: &[u8],
) -> LocalResponse {
    let mut email = String::new();
    let mut password = String::new();
    let mut csrf = String::new();
    let mut return_to = String::from("/");
    for (k, v) in form_urlencoded::parse(body) {
        match k.as_ref() {
            "email" => email = v.into_owned(),
            "password" => password = v.into_owned(),
            "csrf" => csrf = v.into_owned(),
            "return_to" => return_to = v.into_owned(),
            _ => {}
        }
    }
    let return_to = safe_return_to(&return_to);
    let cookie = match cookie_value(req, &state.config.cookies.csrf_name) {
        Some(Some(c)) => c,
        _ => "",
    };
    if !secure_eq(&csrf, cookie) {
        tracing::warn!(target: "portcullis::audit", event = "csrf_blocked", endpoint = "/auth/login", client_ip = %client_key(ctx));
        return LocalResponse::error(
            403,
            "csrf",
            "the login form expired; reload the page and try again",
        );
    }
    // The login page again, with a message, the typed email and the same return_to.
    let again = |status: u16, message: &str| {
        page_response(state, req, status, &return_to, Some(message), &email)
    };
    const UNAVAILABLE: &str = "Sign-in is unavailable. Try again shortly.";
    let user = match password_login(state, ctx, &email, password).await {
        Ok(u) => u,
        Err(LoginFailure::RateLimited(retry)) => {
            return again(429, "Too many attempts. Try again later.")
                .header(RETRY_AFTER, HeaderValue::from(retry))
        }
        Err(LoginFailure::Busy) => return again(503, "The server is busy. Try again."),
        Err(LoginFailure::Store) => return again(503, UNAVAILABLE),
        Err(_) => return again(200, "The email or password is incorrect."),
    };
    let Ok(issued) = state.sessions.login(user).await else {
        return again(503, UNAVAILABLE);
    };
    tracing::info!(target: "portcullis::audit", event = "login", user = %issued.user.id, sid = %issued.family.sid, client_ip = %client_key(ctx));
    let location = HeaderValue::from_str(&return_to).unwrap_or(HeaderValue::from_static("/"));
    let r = LocalResponse::new(303, "text/plain; charset=utf-8", "").header(LOCATION, location);
    with_cookies(r, session_cookies(state, &issued, &random_id(32)))
}

/// `POST /auth/refresh`.
pub async fn refresh(
    state: &AppState,
    req: &RequestHeader,
    ctx: &mut RequestCtx,
    body: &[u8],
) -> LocalResponse {
    if let Err(r) = json_or_empty(req, body) {
        return r;
    }
    let c = &state.config.cookies;
    let token = match cookie_value(req, &c.refresh_name) {
        None => return LocalResponse::error(401, "refresh_token_required", "no refresh token"),
        Some(t) => t,
    };
    if !csrf_header_ok(req, c) {
        return csrf_refused(ctx, "/auth/refresh");
    }
    let now = state.tokens.clock.now();
    let key = format!("refresh_ip:{}", client_key(ctx));
    match state
        .limiter
        .hit_and_check_shared(
            state.store.as_ref(),
            &key,
            state.config.rate_limits.refresh_per_ip,
            now,
        )
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(retry)) => return too_many(retry),
        Err(_) => return store_down(),
    }
    let result = match token {
        Some(t) => state.sessions.refresh(t).await,
        None => Err(RefreshError::Invalid), // two refresh cookies: which is real cannot be known
    };
    match result {
        Ok(issued) => {
            let csrf = cookie_value(req, &c.csrf_name)
                .flatten()
                .unwrap_or("")
                .to_string();
            let body = json!({
                "access_token": issued.access.token,
                "token_type": "Bearer",
                "expires_in": state.tokens.access_ttl(),
            });
            with_cookies(
                LocalResponse::json(200, &body),
                session_cookies(state, &issued, &csrf),
            )
        }
        Err(RefreshError::Reused) => with_cookies(
            LocalResponse::error(
                403,
                "refresh_token_reused",
                "this refresh token was already used; the session has been ended",
            ),
            cookies::clear_all(c),
        ),
        Err(RefreshError::Invalid) => with_cookies(
            LocalResponse::error(
                403,
                "invalid_refresh_token",
                "the refresh token is invalid, expired or revoked",
            ),
            cookies::clear_all(c),
        ),
        Err(RefreshError::Store(_)) => store_down(),
        Err(RefreshError::Issue(e)) => LocalResponse::error(500, "internal", &e),
    }
}

/// Is this request authenticated by our cookies (so CSRF applies)?
fn cookie_authenticated(state: &AppState, req: &RequestHeader) -> bool {
    let c = &state.config.cookies;
    match credential(req, &c.access_name) {
        Credential::Bearer(_) => false,
        _ => {
            cookie_value(req, &c.access_name).is_some()
                || cookie_value(req, &c.refresh_name).is_some()
        }
    }
}

/// `POST /auth/logout`: idempotent, works with an expired access token.
pub async fn logout(
    state: &AppState,
    req: &RequestHeader,
    ctx: &mut RequestCtx,
    body: &[u8],
) -> LocalResponse {
    if let Err(r) = json_or_empty(req, body) {
        return r;
    }
    let c = &state.config.cookies;
    if cookie_authenticated(state, req) && !csrf_header_ok(req, c) {
        return csrf_refused(ctx, "/auth/logout");
    }
    let access = credential(req, &c.access_name)
        .token()
        .and_then(|t| state.tokens.verify_ignoring_time(t).ok());
    let refresh = cookie_value(req, &c.refresh_name).flatten();
    if let Err(e) = state.sessions.logout(access.as_ref(), refresh).await {
        tracing::error!(target: "portcullis::store", error = %e, "logout failed");
        return store_down();
    }
    tracing::info!(target: "portcullis::audit", event = "logout", user = access.as_ref().map(|a| a.sub.as_str()).unwrap_or("(unknown)"), client_ip = %client_key(ctx));
    with_cookies(
        LocalResponse::json(200, &json!({"ok": true})),
        cookies::clear_all(c),
    )
}

/// `POST /auth/logout-all`: every session of the authenticated user.
pub async fn logout_all(
    state: &AppState,
    req: &RequestHeader,
    ctx: &mut RequestCtx,
    body: &[u8],
) -> LocalResponse {
    if let Err(r) = json_or_empty(req, body) {
        return r;
    }
    let c = &state.config.cookies;
    let verified = match authenticated(state, req).await {
        Ok(v) => v,
        Err(f) => return LocalResponse::error(401, f.code(), f.message()),
    };
    if cookie_authenticated(state, req) && !csrf_header_ok(req, c) {
        return csrf_refused(ctx, "/auth/logout-all");
    }
    let result = async {
        state.sessions.logout(Some(&verified), None).await?;
        state.sessions.logout_all(&verified.sub).await
    }
    .await;
    match result {
        Ok(n) => with_cookies(
            LocalResponse::json(200, &json!({"ok": true, "sessions_revoked": n})),
            cookies::clear_all(c),
        ),
        Err(_) => store_down(),
    }
}

async fn authenticated(
    state: &AppState,
    req: &RequestHeader,
) -> Result<Arc<crate::tokens::access::Verified>, Failure> {
    match credential(req, &state.config.cookies.access_name) {
        Credential::None => Err(Failure::TokenRequired),
        Credential::Ambiguous => Err(Failure::InvalidToken),
        Credential::Bearer(t) => state.tokens.verify(t).await.map_err(failure_for),
        Credential::Cookie(t) => state.tokens.verify(t).await.map_err(failure_for),
    }
}

/// `GET /auth/session`.
pub async fn session_info(state: &AppState, req: &RequestHeader) -> LocalResponse {
    let v = match authenticated(state, req).await {
        Ok(v) => v,
        Err(f) => return LocalResponse::error(401, f.code(), f.message()),
    };
    let session_exp = match state.sessions.store.family(&v.sid).await {
        Ok(Some(f)) => Some(f.expires_at()),
        Ok(None) => None,
        Err(_) => return store_down(),
    };
    let body = json!({
        "user": { "id": v.sub, "email": v.email, "roles": v.roles },
        "access_expires_at": rfc3339(v.exp),
        "session_expires_at": session_exp.map(rfc3339),
    });
    LocalResponse::json(200, &body)
}
