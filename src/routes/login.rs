//! `GET /auth/login` (the form) and `POST /auth/login` (JSON, or the form posted back).

use super::login_page::{page_csrf, render, safe_return_to, Asked, LoginView, SESSION_EXPIRED};
use super::mfa::{self, Next};
use super::{media_type, mfa_page, signin, with_cookies, Call, Endpoints};
use crate::auth::cookie_value;
use crate::auth::cookies::secure_eq;
use crate::auth::login::{password_login, Attempt, LoggedIn, LoginFailure};
use crate::respond::{self, LocalResponse};
use http::header::{LOCATION, RETRY_AFTER, SET_COOKIE};
use http::HeaderValue;
use pingora::http::RequestHeader;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct LoginJson {
    email: String,
    password: String,
    /// A step-up of the session the caller holds: the same session, authenticated again.
    #[serde(default)]
    step_up: bool,
}

/// The notice of a step-up's login page.
const STEP_UP: &str = "Confirm it's you to continue.";

/// `GET /auth/login`: the form, with a CSRF token (reusing the cookie's when present);
/// `session_expired=1` adds the notice that the session ended.
pub fn page(ep: &Endpoints, req: &RequestHeader) -> LocalResponse {
    let mut return_to = String::from("/");
    let mut expired = false;
    let mut asked = Asked::default();
    for (k, v) in form_urlencoded::parse(req.uri.query().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "return_to" => return_to = v.into_owned(),
            "session_expired" => expired = v == "1",
            "step_up" => asked.step_up = v == "1",
            "mfa" => asked.code = v == "1",
            _ => {}
        }
    }
    let notice = if asked.step_up {
        Some(STEP_UP)
    } else {
        expired.then_some(SESSION_EXPIRED)
    };
    let view = LoginView {
        notice,
        asked,
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
    let asked = Asked {
        step_up: input.step_up,
        code: false,
    };
    let session = match asked.step_up {
        true => mfa::step_up_session(ep, call, &user).await,
        false => None,
    };
    let next = match mfa::after_password(ep, &user, asked, session.as_ref()).await {
        Ok(n) => n,
        Err(r) => return r,
    };
    match (next, &ep.auth.mfa) {
        (Next::Code | Next::Enrol, Some(factor)) => {
            let enrol = matches!(next, Next::Enrol);
            let sid = session.as_ref().map(|f| f.sid.as_str());
            let mut cookies = vec![mfa::pending_cookie(ep, factor, &user.id, sid)];
            cookies.extend(mfa::csrf_for_code_step(ep, call));
            audit_password_step(call, &user.id, enrol);
            let body = if enrol {
                json!({ "mfa_required": true, "enrolment_required": true, "enrolment_url": "/auth/mfa" })
            } else {
                json!({ "mfa_required": true })
            };
            with_cookies(LocalResponse::json(200, &body), cookies)
        }
        (next, _) => {
            let enrol = matches!(next, Next::EnrolAfter);
            match signin::finish(ep, call, user, session, &["pwd"], device_cookie).await {
                Ok(f) => {
                    let mut body = f.body;
                    if enrol {
                        body["enrolment_required"] = json!(true);
                        body["enrolment_url"] = json!("/auth/mfa");
                    }
                    with_cookies(LocalResponse::json(200, &body), f.cookies)
                }
                Err(r) => r,
            }
        }
    }
}

/// A right password whose login now waits for a code (or for enrolment).
fn audit_password_step(call: &Call<'_>, user: &str, enrol: bool) {
    let next = if enrol { "enrolment" } else { "code" };
    tracing::info!(target: "portcullis::audit", event = "login_password_ok", user, next, client_ip = %call.client, request_id = call.request_id, user_agent = call.user_agent);
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

async fn login_form(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    let state = &*ep.auth;
    let req = call.req;
    let mut email = String::new();
    let mut password = String::new();
    let mut csrf = String::new();
    let mut return_to = String::from("/");
    let mut asked = Asked::default();
    for (k, v) in form_urlencoded::parse(call.body) {
        match k.as_ref() {
            "email" => email = v.into_owned(),
            "password" => password = v.into_owned(),
            "csrf" => csrf = v.into_owned(),
            "return_to" => return_to = v.into_owned(),
            "step_up" => asked.step_up = v == "1",
            "mfa" => asked.code = v == "1",
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
            asked,
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
    let session = match asked.step_up {
        true => mfa::step_up_session(ep, call, &user).await,
        false => None,
    };
    let Ok(next) = mfa::after_password(ep, &user, asked, session.as_ref()).await else {
        return again(503, UNAVAILABLE);
    };
    let see_other = |location: &str| {
        let location = HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/"));
        LocalResponse::new(303, "text/plain; charset=utf-8", "").header(LOCATION, location)
    };
    let enrolment = || {
        let encoded: String = form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
        format!("/auth/mfa?return_to={encoded}")
    };
    match (next, &state.mfa) {
        (Next::Code, Some(factor)) => {
            audit_password_step(call, &user.id, false);
            let sid = session.as_ref().map(|f| f.sid.as_str());
            let (csrf, set) = page_csrf(ep, req);
            let mut cookies = vec![mfa::pending_cookie(ep, factor, &user.id, sid)];
            cookies.extend(set);
            let page = LocalResponse::html(200, mfa_page::code_step(&csrf, &return_to, None));
            with_cookies(page, cookies)
        }
        (Next::Enrol, Some(factor)) => {
            audit_password_step(call, &user.id, true);
            let cookies = vec![mfa::pending_cookie(ep, factor, &user.id, None)];
            with_cookies(see_other(&enrolment()), cookies)
        }
        (next, _) => {
            let location = match next {
                Next::EnrolAfter => enrolment(),
                _ => return_to.clone(),
            };
            match signin::finish(ep, call, user, session, &["pwd"], device_cookie).await {
                Ok(f) => with_cookies(see_other(&location), f.cookies),
                Err(_) => again(503, UNAVAILABLE),
            }
        }
    }
}
