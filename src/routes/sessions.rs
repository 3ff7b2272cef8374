//! The caller's own sessions: `GET /auth/sessions` lists them (where and when each began, when
//! it was last used, when it ends), `DELETE /auth/sessions/{id}` ends one of them (another
//! user's id is a 404, as an unknown one), `POST /auth/sessions/revoke-others` ends all but
//! the current one. Cookie-authenticated calls that change something need the CSRF header.

use super::session::rfc3339;
use super::{check_csrf, cookie_authenticated, with_cookies, Call, Endpoints};
use crate::auth::{cookies, verify_signed_in, Identity};
use crate::respond::{self, LocalResponse};
use crate::store::Family;
use serde_json::{json, Value};

/// One session as the lists show it (`current` only when the caller has one).
pub fn describe(f: &Family, current: Option<&str>) -> Value {
    let origin = f.origin.clone().unwrap_or_default();
    let device = if origin.device.is_empty() {
        "Unknown browser".to_string()
    } else {
        origin.device
    };
    let mut v = json!({
        "id": f.sid,
        "created_at": rfc3339(f.created),
        "last_used_at": rfc3339(f.rotated_at.max(f.created)),
        "ip": origin.ip,
        "device": device,
        "expires_at": rfc3339(f.expires_at()),
    });
    if let Some(sid) = current {
        v["current"] = json!(f.sid == sid);
    }
    v
}

/// The caller, and for unsafe calls by cookie, a passed CSRF check.
async fn caller(
    ep: &Endpoints,
    call: &Call<'_>,
    endpoint: &str,
) -> Result<Identity, LocalResponse> {
    let who = verify_signed_in(&ep.auth, call.req)
        .await
        .map_err(respond::refused)?;
    let unsafe_method = call.req.method != http::Method::GET;
    if unsafe_method && cookie_authenticated(ep, call.req) {
        check_csrf(ep, call, endpoint)?;
    }
    Ok(who)
}

/// `GET /auth/sessions`: newest first.
pub async fn list(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    let who = match caller(ep, call, "/auth/sessions").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let now = ep.auth.tokens.clock.now();
    let mut sessions = match ep.auth.store.sessions_of(&who.sub, now).await {
        Ok(s) => s,
        Err(_) => return respond::store_unavailable(),
    };
    sessions.sort_by(|a, b| b.created.cmp(&a.created).then(a.sid.cmp(&b.sid)));
    let list: Vec<_> = sessions
        .iter()
        .map(|f| describe(f, Some(&who.sid)))
        .collect();
    LocalResponse::json(200, &json!({ "sessions": list }))
}

/// `DELETE /auth/sessions/{id}`.
pub async fn revoke_one(ep: &Endpoints, call: &Call<'_>, sid: &str) -> LocalResponse {
    let who = match caller(ep, call, "/auth/sessions").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let auth = &*ep.auth;
    match auth.store.family(sid).await {
        Ok(Some(f)) if f.user == who.sub && !f.revoked => {}
        Ok(_) => return respond::not_found("no such session"),
        Err(_) => return respond::store_unavailable(),
    }
    if auth.sessions.revoke_family(sid).await.is_err() {
        return respond::store_unavailable();
    }
    ep.metrics
        .revocations
        .with_label_values(&["user_revoked"])
        .inc();
    tracing::info!(target: "portcullis::audit", event = "session_revoked_by_user", user = %who.sub, sid, current = sid == who.sid, client_ip = %call.client, request_id = call.request_id, user_agent = call.user_agent);
    let r = LocalResponse::json(200, &json!({ "ok": true }));
    if sid == who.sid {
        // The caller ended the session it is using: its cookies go too.
        return with_cookies(r, cookies::clear_all(&auth.config.cookies));
    }
    r
}

/// `POST /auth/sessions/revoke-others`.
pub async fn revoke_others(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    let who = match caller(ep, call, "/auth/sessions/revoke-others").await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let auth = &*ep.auth;
    let now = auth.tokens.clock.now();
    let sessions = match auth.store.sessions_of(&who.sub, now).await {
        Ok(s) => s,
        Err(_) => return respond::store_unavailable(),
    };
    let mut ended = 0;
    for f in sessions.iter().filter(|f| f.sid != who.sid) {
        if auth.sessions.revoke_family(&f.sid).await.is_err() {
            return respond::store_unavailable();
        }
        ended += 1;
    }
    ep.metrics
        .revocations
        .with_label_values(&["user_revoked"])
        .inc_by(ended);
    tracing::info!(target: "portcullis::audit", event = "other_sessions_revoked", user = %who.sub, sessions = ended, client_ip = %call.client, request_id = call.request_id, user_agent = call.user_agent);
    LocalResponse::json(200, &json!({ "ok": true, "sessions_revoked": ended }))
}
