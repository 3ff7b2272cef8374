//! `GET /auth/session`: who the caller is, when their access token and session end (the
//! session's absolute end, and its idle end, which each refresh moves), and what the browser
//! client needs to warn before that.

use super::Endpoints;
use crate::auth::verify_signed_in;
use crate::respond::{self, LocalResponse};
use pingora::http::RequestHeader;
use serde_json::json;
use std::time::{Duration, UNIX_EPOCH};

/// A unix time as RFC 3339 (UTC, whole seconds), as every `/auth` and admin answer gives it.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

pub async fn info(ep: &Endpoints, req: &RequestHeader) -> LocalResponse {
    let auth = &*ep.auth;
    let v = match verify_signed_in(auth, req).await {
        Ok(v) => v,
        Err(f) => return respond::refused(f),
    };
    let (session_exp, idle_exp) = match auth.store.family(&v.sid).await {
        Ok(Some(f)) => (Some(f.max_exp), Some(f.idle_exp.min(f.max_exp))),
        Ok(None) => (None, None),
        Err(_) => return respond::store_unavailable(),
    };
    let client = &auth.config.client;
    let body = json!({
        "user": { "id": v.sub, "email": v.email, "roles": v.roles },
        "access_expires_at": rfc3339(v.exp),
        "session_expires_at": session_exp.map(rfc3339),
        "idle_expires_at": idle_exp.map(rfc3339),
        "warn_before": client.warn_before.as_secs(),
        "banner": client.banner,
    });
    LocalResponse::json(200, &body)
}
