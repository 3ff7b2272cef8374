//! What completes a sign-in, however it got there (a password alone, a password and a code,
//! an enrolment that finished a pending login): a new session with its cookies and JSON
//! answer, or a step-up of the session the browser already holds.

use super::{Call, Endpoints};
use crate::auth::cookies::{self, session_cookies};
use crate::auth::device::DEVICE_COOKIE_TTL;
use crate::auth::sessions::Issued;
use crate::auth::users::User;
use crate::respond::LocalResponse;
use crate::store::{Family, Origin};
use http::HeaderValue;
use serde_json::json;
use std::sync::Arc;

/// A finished login or step-up: the access token, the cookies to set and the session.
pub struct Finished {
    pub body: serde_json::Value,
    pub cookies: Vec<HeaderValue>,
}

/// Complete the login of `user`, who proved who they are by `amr`: a step-up of `session`
/// (same session, new access token), or a new session.
pub async fn finish(
    ep: &Endpoints,
    call: &Call<'_>,
    user: Arc<User>,
    session: Option<Family>,
    amr: &[&str],
    device_cookie: Option<String>,
) -> Result<Finished, LocalResponse> {
    let state = &*ep.auth;
    if let Some(family) = session {
        let (access, family) = state
            .sessions
            .reauthenticate(user.clone(), &family, amr)
            .await
            .map_err(|e| LocalResponse::from(&e))?;
        tracing::info!(target: "portcullis::audit", event = "step_up", user = %user.id, sid = %family.sid, amr = %amr.join(" "), client_ip = %call.client, request_id = call.request_id, user_agent = call.user_agent);
        let c = &state.config.cookies;
        let body = json!({
            "access_token": access.token,
            "token_type": "Bearer",
            "expires_in": state.tokens.access_ttl(),
            "user": { "id": user.id, "email": user.email, "roles": user.roles },
        });
        let cookies = vec![cookies::set(
            c,
            &c.access_name,
            &access.token,
            state.tokens.access_ttl(),
            true,
        )];
        return Ok(Finished { body, cookies });
    }
    let issued = state
        .sessions
        .login(user, origin(call), amr)
        .await
        .map_err(|e| LocalResponse::from(&e))?;
    audit_login(call, &issued);
    let csrf = crate::tokens::access::random_id(32);
    Ok(Finished {
        body: login_body(ep, &issued),
        cookies: login_cookies(ep, &issued, &csrf, device_cookie),
    })
}

/// The JSON answer of a new session.
fn login_body(ep: &Endpoints, issued: &Issued) -> serde_json::Value {
    json!({
        "access_token": issued.access.token,
        "token_type": "Bearer",
        "expires_in": ep.auth.tokens.access_ttl(),
        "user": { "id": issued.user.id, "email": issued.user.email, "roles": issued.user.roles },
    })
}

/// The device cookie that makes this browser a known one.
pub fn device(ep: &Endpoints, value: &str) -> HeaderValue {
    let c = &ep.auth.config.cookies;
    cookies::set(c, &c.device_name, value, DEVICE_COOKIE_TTL, true)
}

/// The browser a new session begins in.
fn origin(call: &Call<'_>) -> Origin {
    Origin {
        ip: call.client.to_string(),
        user_agent: call.user_agent.to_string(),
        device: crate::auth::device::label(call.user_agent),
    }
}

/// The session's cookies, and the device cookie that makes this browser a known one.
fn login_cookies(
    ep: &Endpoints,
    issued: &Issued,
    csrf: &str,
    device_cookie: Option<String>,
) -> Vec<HeaderValue> {
    let mut cookies = session_cookies(&ep.auth, issued, csrf);
    cookies.extend(device_cookie.map(|v| device(ep, &v)));
    cookies
}

/// The audit line of a new session.
fn audit_login(call: &Call<'_>, issued: &Issued) {
    tracing::info!(target: "portcullis::audit", event = "login", user = %issued.user.id, sid = %issued.family.sid, amr = %issued.family.amr.join(" "), client_ip = %call.client, request_id = call.request_id, user_agent = call.user_agent);
}

/// The device cookie of a sign-in that completes after its password step (with a code, or an
/// enrolment): the browser's own device when its cookie was issued to `user`, else a new one.
/// Set only then, so that a password alone never makes a browser a known one.
pub async fn device_for(ep: &Endpoints, call: &Call<'_>, user: &str) -> Option<String> {
    let devices = &ep.login.devices;
    let name = &ep.auth.config.cookies.device_name;
    let known = match crate::auth::cookie_value(call.req, name).flatten() {
        Some(cookie) => devices.recognise(cookie, user).await.ok().flatten(),
        None => None,
    };
    devices.issue(user, known.as_deref()).await.ok()
}
