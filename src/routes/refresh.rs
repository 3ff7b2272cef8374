//! `POST /auth/refresh`: rotate the refresh token, issue a new access token.

use super::{check_csrf, with_cookies, Call, Endpoints};
use crate::auth::cookie_value;
use crate::auth::cookies::{self, session_cookies};
use crate::auth::sessions::RefreshError;
use crate::respond::{self, LocalResponse};
use serde_json::json;

pub async fn refresh(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    let auth = &*ep.auth;
    let c = &auth.config.cookies;
    let req = call.req;
    let Some(token) = cookie_value(req, &c.refresh_name) else {
        return respond::unauthorized("refresh_token_required", "no refresh token", false);
    };
    if let Err(r) = check_csrf(ep, call, "/auth/refresh") {
        return r;
    }
    let now = auth.tokens.clock.now();
    let key = format!("refresh_ip:{}", call.client);
    let limit = auth.config.rate_limits.refresh_per_ip;
    let store = auth.store.as_ref();
    match ep.login.limiter.shared(store, &key, limit, now, true).await {
        Ok(Ok(())) => {}
        Ok(Err(retry)) => return respond::too_many(retry),
        Err(_) => return respond::store_unavailable(),
    }
    let result = match token {
        Some(t) => auth.sessions.refresh(t).await,
        None => Err(RefreshError::Invalid), // two refresh cookies: which is real cannot be known
    };
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
        Err(e @ (RefreshError::Reused | RefreshError::Invalid)) => {
            with_cookies(LocalResponse::from(&e), cookies::clear_all(c))
        }
        Err(e) => LocalResponse::from(&e),
    }
}
