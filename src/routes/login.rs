//! `GET /auth/login` (the form) and `POST /auth/login` (JSON, or the form posted back).

use super::login_page::{page_csrf, render, safe_return_to, LoginView, SESSION_EXPIRED};
use super::{media_type, with_cookies, Call, Endpoints};
use crate::auth::cookie_value;
use crate::auth::cookies::{self, secure_eq, session_cookies};
use crate::auth::device::DEVICE_COOKIE_TTL;
use crate::auth::login::{password_login, Attempt, LoggedIn, LoginFailure};
use crate::auth::sessions::Issued;
use crate::respond::{self, LocalResponse};
use crate::store::Origin;
use crate::tokens::access::random_id;
use http::header::{LOCATION, RETRY_AFTER, SET_COOKIE};
use http::HeaderValue;
use pingora::http::RequestHeader;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct LoginJson {
    email: String,
    password: String,
}

/// `GET /auth/login`: the form, with a CSRF token (reusing the cookie's when present);
/// `session_expired=1` adds the notice that the session ended.
pub fn page(ep: &Endpoints, req: &RequestHeader) -> LocalResponse {
    let mut return_to = String::from("/");
    let mut expired = false;
    for (k, v) in form_urlencoded::parse(req.uri.query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "return_to" => return_to = v.into_owned(),
            "session_expired" => expired = v == "1",
            _ => {}
        }
    }
    let view = LoginView {
        notice: expired.then_some(SESSION_EXPIRED),
        ..LoginView::default()
    };
    page_response(ep, req, 200, &safe_return_to(&return_to), view)
}

fn page_response(
    ep: &Endpoints,
    req: &RequestHeader,
    status: u16,
    return_to: &str,
    view: LoginView<'_>,
) -> LocalResponse {
    let (csrf, set) = page_csrf(ep, req);
    let view = LoginView {
        title: &ep.auth.config.login_title,
        ..view
    };
    let mut r = LocalResponse::html(status, render(&csrf, return_to, &view));
    if let Some(set) = set {
        r = r.header(SET_COOKIE, set);
    }
    r
}

/// `POST /auth/login`: JSON or form.
pub async fn login(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    match media_type(call.req).as_deref() {
        Some("application/json") => login_json(ep, call).await,
        Some("application/x-www-form-urlencoded") => login_form(ep, call).await,
        _ => respond::unsupported_media_type("send application/json or a form"),
    }
}

async fn login_json(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    let Ok(input) = serde_json::from_slice::<LoginJson>(call.body) else {
        counted(ep, "bad_request");
        return respond::bad_request(
            "expected a JSON object with \"email\" and \"password\" strings",
        );
    };
    let state = &*ep.auth;
    let login = password_login(
        state,
        &ep.login,
        attempt(ep, call, &input.email, input.password),
    );
    let LoggedIn {
        user,
        device_cookie,
    } = match outcome(ep, login.await) {
        Ok(l) => l,
        Err(e) => return e.into(),
    };
    let issued = match state.sessions.login(user, origin(call)).await {
        Ok(i) => i,
        Err(e) => return LocalResponse::from(&e),
    };
    audit_login(call, &issued);
    let csrf = random_id(32);
    let body = json!({
        "access_token": issued.access.token,
        "token_type": "Bearer",
        "expires_in": state.tokens.access_ttl(),
        "user": { "id": issued.user.id, "email": issued.user.email, "roles": issued.user.roles },
    });
    with_cookies(
        LocalResponse::json(200, &body),
        login_cookies(ep, &issued, &csrf, device_cookie),
    )
}

/// The browser a new session begins in.
fn origin(call: &Call<'_>) -> Origin {
    Origin {
        ip: call.client.to_string(),
        user_agent: call.user_agent.to_string(),
        device: crate::auth::device::label(call.user_agent),
    }
}

/// Count a password login's result.
fn outcome(
    ep: &Endpoints,
    result: Result<LoggedIn, LoginFailure>,
) -> Result<LoggedIn, LoginFailure> {
    counted(
        ep,
        match &result {
            Ok(_) => "success",
            Err(LoginFailure::Invalid) => "invalid_credentials",
            Err(LoginFailure::RateLimited(_)) => "rate_limited",
            Err(LoginFailure::Busy | LoginFailure::Store) => "unavailable",
            Err(LoginFailure::TooLong) => "bad_request",
        },
    );
    result
}

fn counted(ep: &Endpoints, result: &str) {
    ep.metrics.logins.with_label_values(&[result]).inc();
}

/// The attempt `call` makes to sign in as `email`.
fn attempt<'a>(
    ep: &Endpoints,
    call: &'a Call<'_>,
    email: &'a str,
    password: String,
) -> Attempt<'a> {
    let device = &ep.auth.config.cookies.device_name;
    Attempt {
        email,
        password,
        client: call.client,
        device_cookie: cookie_value(call.req, device).flatten(),
        request_id: call.request_id,
        user_agent: call.user_agent,
    }
}

/// The session's cookies, and the device cookie that makes this browser a known one.
fn login_cookies(
    ep: &Endpoints,
    issued: &Issued,
    csrf: &str,
    device_cookie: Option<String>,
) -> Vec<HeaderValue> {
    let state = &*ep.auth;
    let mut cookies = session_cookies(state, issued, csrf);
    if let Some(value) = device_cookie {
        let c = &state.config.cookies;
        cookies.push(cookies::set(
            c,
            &c.device_name,
            &value,
            DEVICE_COOKIE_TTL,
            true,
        ));
    }
    cookies
}

fn audit_login(call: &Call<'_>, issued: &Issued) {
    tracing::info!(target: "portcullis::audit", event = "login", user = %issued.user.id, sid = %issued.family.sid, client_ip = %call.client, request_id = call.request_id, user_agent = call.user_agent);
}

async fn login_form(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    let state = &*ep.auth;
    let req = call.req;
    let mut email = String::new();
    let mut password = String::new();
    let mut csrf = String::new();
    let mut return_to = String::from("/");
    for (k, v) in form_urlencoded::parse(call.body) {
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
        counted(ep, "csrf");
        super::audit_csrf(ep, call, "/auth/login");
        return respond::csrf("the login form expired; reload the page and try again");
    }
    // The login page again, with a message, the typed email and the same return_to.
    let again = |status: u16, message: &str| {
        let view = LoginView {
            error: Some(message),
            email: &email,
            ..LoginView::default()
        };
        page_response(ep, req, status, &return_to, view)
    };
    const UNAVAILABLE: &str = "Sign-in is unavailable. Try again shortly.";
    let login = password_login(state, &ep.login, attempt(ep, call, &email, password));
    let LoggedIn {
        user,
        device_cookie,
    } = match outcome(ep, login.await) {
        Ok(l) => l,
        Err(LoginFailure::RateLimited(retry)) => {
            return again(429, "Too many attempts. Try again later.")
                .header(RETRY_AFTER, HeaderValue::from(retry))
        }
        Err(LoginFailure::Busy) => return again(503, "The server is busy. Try again."),
        Err(LoginFailure::Store) => return again(503, UNAVAILABLE),
        Err(_) => return again(200, "The email or password is incorrect."),
    };
    let Ok(issued) = state.sessions.login(user, origin(call)).await else {
        return again(503, UNAVAILABLE);
    };
    audit_login(call, &issued);
    let location = HeaderValue::from_str(&return_to).unwrap_or(HeaderValue::from_static("/"));
    let r = LocalResponse::new(303, "text/plain; charset=utf-8", "").header(LOCATION, location);
    with_cookies(r, login_cookies(ep, &issued, &random_id(32), device_cookie))
}
