//! `GET /auth/login` (the form) and `POST /auth/login` (JSON, or the form posted back).

use super::login_page::{page_csrf, render, safe_return_to};
use super::{media_type, with_cookies, Call, Endpoints};
use crate::auth::cookie_value;
use crate::auth::cookies::{secure_eq, session_cookies};
use crate::auth::login::{password_login, LoginFailure};
use crate::respond::{self, LocalResponse};
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

/// `GET /auth/login`: the form, with a CSRF token (reusing the cookie's when present).
pub fn page(ep: &Endpoints, req: &RequestHeader) -> LocalResponse {
    let return_to = req
        .uri
        .query()
        .and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "return_to")
                .map(|(_, v)| v.into_owned())
        })
        .unwrap_or_else(|| "/".into());
    page_response(ep, req, 200, &safe_return_to(&return_to), None, "")
}

fn page_response(
    ep: &Endpoints,
    req: &RequestHeader,
    status: u16,
    return_to: &str,
    error: Option<&str>,
    email: &str,
) -> LocalResponse {
    let (csrf, set) = page_csrf(ep, req);
    let mut r = LocalResponse::html(status, render(&csrf, return_to, error, email));
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
        return respond::bad_request(
            "expected a JSON object with \"email\" and \"password\" strings",
        );
    };
    let state = &*ep.auth;
    let login = password_login(state, &ep.login, call.client, &input.email, input.password);
    let user = match login.await {
        Ok(u) => u,
        Err(e) => return e.into(),
    };
    let issued = match state.sessions.login(user).await {
        Ok(i) => i,
        Err(e) => return LocalResponse::from(&e),
    };
    tracing::info!(target: "portcullis::audit", event = "login", user = %issued.user.id, sid = %issued.family.sid, client_ip = %call.client);
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
        tracing::warn!(target: "portcullis::audit", event = "csrf_blocked", endpoint = "/auth/login", client_ip = %call.client);
        return respond::csrf("the login form expired; reload the page and try again");
    }
    // The login page again, with a message, the typed email and the same return_to.
    let again = |status: u16, message: &str| {
        page_response(ep, req, status, &return_to, Some(message), &email)
    };
    const UNAVAILABLE: &str = "Sign-in is unavailable. Try again shortly.";
    let user = match password_login(state, &ep.login, call.client, &email, password).await {
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
    tracing::info!(target: "portcullis::audit", event = "login", user = %issued.user.id, sid = %issued.family.sid, client_ip = %call.client);
    let location = HeaderValue::from_str(&return_to).unwrap_or(HeaderValue::from_static("/"));
    let r = LocalResponse::new(303, "text/plain; charset=utf-8", "").header(LOCATION, location);
    with_cookies(r, session_cookies(state, &issued, &random_id(32)))
}
