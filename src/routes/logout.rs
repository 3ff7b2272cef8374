//! `POST /auth/logout` (this session) and `POST /auth/logout-all` (every session of the user).

use super::{check_csrf, cookie_authenticated, with_cookies, Call, Endpoints};
use crate::auth::cookies;
use crate::auth::{cookie_value, credential, verify_request};
use crate::respond::{self, LocalResponse};
use serde_json::json;

/// Idempotent; works with an expired access token.
pub async fn logout(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    let auth = &*ep.auth;
    let c = &auth.config.cookies;
    let req = call.req;
    if cookie_authenticated(ep, req) {
        if let Err(r) = check_csrf(ep, call, "/auth/logout") {
            return r;
        }
    }
    let access = credential(req, &c.access_name)
        .token()
        .and_then(|t| auth.tokens.verify_ignoring_time(t).ok());
    let refresh = cookie_value(req, &c.refresh_name).flatten();
    if let Err(e) = auth.sessions.logout(access.as_ref(), refresh).await {
        tracing::error!(target: "portcullis::store", error = %e, "logout failed");
        return respond::store_unavailable();
    }
    tracing::info!(target: "portcullis::audit", event = "logout", user = access.as_ref().map(|a| a.sub.as_str()).unwrap_or("(unknown)"), client_ip = %call.client);
    with_cookies(
        LocalResponse::json(200, &json!({"ok": true})),
        cookies::clear_all(c),
    )
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
        Ok(n) => with_cookies(
            LocalResponse::json(200, &json!({"ok": true, "sessions_revoked": n})),
            cookies::clear_all(&auth.config.cookies),
        ),
        Err(_) => respond::store_unavailable(),
    }
}
