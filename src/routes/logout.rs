//! `POST /auth/logout` (the caller's own login, JSON or the sign-out form), `GET
//! /auth/logout` (the sign-out page, and the page shown once signed out) and
//! `POST /auth/logout-all` (every login of the user).

use super::login_page::{page_csrf, query_return_to, safe_return_to};
use super::{check_csrf, cookie_authenticated, with_cookies, Call, Endpoints};
use crate::auth::cookies::{self, secure_eq};
use crate::auth::{cookie_value, credential, verify_request};
use crate::respond::{self, pages, LocalResponse};
use http::header::{LOCATION, SET_COOKIE};
use http::HeaderValue;
use pingora::http::RequestHeader;
use serde_json::json;

/// Idempotent; works with an expired access token.
pub async fn logout(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    if cookie_authenticated(ep, call.req) {
        if let Err(r) = check_csrf(ep, call, "/auth/logout") {
            return r;
        }
    }
    if let Err(r) = revoke(ep, call).await {
        return r;
    }
    with_cookies(
        LocalResponse::json(200, &json!({"ok": true})),
        cookies::clear_all(&ep.auth.config.cookies),
    )
}

/// End the caller's session (its access token and refresh family) and audit it; both
/// logouts, JSON and form, go through here so that they revoke the same things.
async fn revoke(ep: &Endpoints, call: &Call<'_>) -> Result<(), LocalResponse> {
    let auth = &*ep.auth;
    let c = &auth.config.cookies;
    let req = call.req;
    let access = credential(req, &c.access_name)
        .token()
        .and_then(|t| auth.tokens.verify_ignoring_time(t).ok());
    let refresh = cookie_value(req, &c.refresh_name).flatten();
    if let Err(e) = auth.sessions.logout(access.as_ref(), refresh).await {
        tracing::error!(target: "portcullis::store", error = %e, "logout failed");
        return Err(respond::store_unavailable());
    }
    ep.metrics.revocations.with_label_values(&["logout"]).inc();
    tracing::info!(target: "portcullis::audit", event = "logout", user = access.as_ref().map(|a| a.sub.as_str()).unwrap_or("(unknown)"), client_ip = %call.client, request_id = call.request_id, user_agent = call.user_agent);
    Ok(())
}

/// `GET /auth/logout`: the sign-out page, whose form carries the CSRF token (setting the
/// cookie when the browser has none); with `signed_out=1`, the page that confirms it.
pub fn page(ep: &Endpoints, req: &RequestHeader) -> LocalResponse {
    let return_to = query_return_to(req);
    let signed_out = req.uri.query().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "signed_out" && v == "1")
    });
    if signed_out {
        return LocalResponse::html(200, pages::signed_out(&return_to));
    }
    let (csrf, set) = page_csrf(ep, req);
    let r = LocalResponse::html(200, pages::sign_out(&csrf, &return_to));
    match set {
        Some(cookie) => r.header(SET_COOKIE, cookie),
        None => r,
    }
}

/// `POST /auth/logout` from the sign-out form: the `csrf` field must equal the CSRF cookie,
/// so that another site cannot sign the user out. Then 303 to the signed-out page.
pub async fn logout_form(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    let mut csrf = String::new();
    let mut return_to = String::from("/");
    for (k, v) in form_urlencoded::parse(call.body) {
        match k.as_ref() {
            "csrf" => csrf = v.into_owned(),
            "return_to" => return_to = v.into_owned(),
            _ => {}
        }
    }
    let cookie = match cookie_value(call.req, &ep.auth.config.cookies.csrf_name) {
        Some(Some(c)) => c,
        _ => "",
    };
    if !secure_eq(&csrf, cookie) {
        super::audit_csrf(ep, call, "/auth/logout");
        return LocalResponse::html(
            403,
            pages::cross_site("The sign-out form expired. Reload the page and try again."),
        );
    }
    if revoke(ep, call).await.is_err() {
        return LocalResponse::html(
            503,
            pages::message(
                "Sign-out is unavailable",
                "Your session could not be ended. Try again shortly.",
                &[("/auth/logout", "Try again")],
            ),
        );
    }
    let mut location = String::from("/auth/logout?signed_out=1");
    let return_to = safe_return_to(&return_to);
    if return_to != "/" {
        location.push_str("&return_to=");
        location.extend(form_urlencoded::byte_serialize(return_to.as_bytes()));
    }
    let location = HeaderValue::from_str(&location)
        .unwrap_or(HeaderValue::from_static("/auth/logout?signed_out=1"));
    let r = LocalResponse::new(303, "text/plain; charset=utf-8", "").header(LOCATION, location);
    with_cookies(r, cookies::clear_all(&ep.auth.config.cookies))
}

/// Every session of the authenticated user.
pub async fn logout_all(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    let auth = &*ep.auth;
    let verified = match verify_request(auth, call.req).await {
        Ok(v) => v,
        Err(f) => return respond::refused(f),
    };
    if cookie_authenticated(ep, call.req) {
        if let Err(r) = check_csrf(ep, call, "/auth/logout-all") {
            return r;
        }
    }
    let result = async {
        auth.sessions.logout(Some(&verified), None).await?;
        auth.sessions.logout_all(&verified.sub).await
    }
    .await;
    match result {
        Ok(n) => {
            ep.metrics
                .revocations
                .with_label_values(&["logout_all"])
                .inc();
            tracing::info!(target: "portcullis::audit", event = "logout_all", user = %verified.sub, sessions = n, client_ip = %call.client, request_id = call.request_id, user_agent = call.user_agent);
            with_cookies(
                LocalResponse::json(200, &json!({"ok": true, "sessions_revoked": n})),
                cookies::clear_all(&auth.config.cookies),
            )
        }
        Err(_) => respond::store_unavailable(),
    }
}
