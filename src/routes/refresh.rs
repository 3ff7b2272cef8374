//! `POST /auth/refresh`: rotate the refresh token, issue a new access token.

use super::{check_csrf, with_cookies, Call, Endpoints};
use crate::auth::cookie_value;
use crate::auth::cookies::{self, session_cookies};
use crate::auth::ratelimit::{refresh_bucket, throttle};
use crate::auth::sessions::RefreshError;
use crate::respond::{self, LocalResponse};
use serde_json::json;

pub async fn refresh(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    let auth = &*ep.auth;
    let c = &auth.config.cookies;
    let req = call.req;
    let outcome = |result: &'static str, user: Option<&str>| {
        ep.metrics.refreshes.with_label_values(&[result]).inc();
        let level_warn = !matches!(result, "success");
        let (client_ip, request_id, user_agent) = (call.client, call.request_id, call.user_agent);
        if level_warn {
            tracing::warn!(target: "portcullis::audit", event = "refresh_failed", user, reason = result, client_ip, request_id, user_agent);
        } else {
            tracing::info!(target: "portcullis::audit", event = "refresh", user, client_ip, request_id, user_agent);
        }
    };
    let Some(token) = cookie_value(req, &c.refresh_name) else {
        outcome("missing", None);
        return respond::unauthorized("refresh_token_required", "no refresh token", false);
    };
    if let Err(r) = check_csrf(ep, call, "/auth/refresh") {
        return r;
    }
    let now = auth.tokens.clock.now();
    let bucket = refresh_bucket(&auth.config.rate_limits, call.client);
    match throttle(auth.store.as_ref(), &[bucket], now, true).await {
        Ok(Ok(())) => {}
        Ok(Err(limited)) => {
            outcome("rate_limited", None);
            return respond::too_many(limited.retry_after);
        }
        Err(_) => {
            outcome("unavailable", None);
            return respond::store_unavailable();
        }
    }
    let result = match token {
        Some(t) => auth.sessions.refresh(t).await,
        None => Err(RefreshError::Invalid), // two refresh cookies: which is real cannot be known
    };
    match &result {
        Ok(issued) => outcome("success", Some(&issued.user.id)),
        Err(RefreshError::Reused { user }) => {
            outcome("reused", Some(user));
            ep.metrics.revocations.with_label_values(&["reuse"]).inc();
        }
        Err(RefreshError::Expired { user }) => outcome("expired", Some(user)),
        Err(RefreshError::Invalid) => outcome("invalid", None),
        Err(_) => outcome("unavailable", None),
    }
    match result {
        Ok(issued) => {
            let csrf = cookie_value(req, &c.csrf_name).flatten().unwrap_or("");
            let body = json!({
                "access_token": issued.access.token,
                "token_type": "Bearer",
                "expires_in": auth.tokens.access_ttl(),
            });
            with_cookies(
                LocalResponse::json(200, &body),
                session_cookies(auth, &issued, csrf),
            )
        }
        // A refresh token that is refused is useless: the browser forgets it.
        Err(
            e
            @ (RefreshError::Reused { .. } | RefreshError::Invalid | RefreshError::Expired { .. }),
        ) => with_cookies(LocalResponse::from(&e), cookies::clear_all(c)),
        Err(e) => LocalResponse::from(&e),
    }
}
