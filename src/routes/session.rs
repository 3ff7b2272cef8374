//! `GET /auth/session`: who the caller is and when their access token and session end.

use super::Endpoints;
use crate::auth::verify_request;
use crate::respond::{self, LocalResponse};
use pingora::http::RequestHeader;
use serde_json::json;
use std::time::{Duration, UNIX_EPOCH};

fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

pub async fn info(ep: &Endpoints, req: &RequestHeader) -> LocalResponse {
    let auth = &*ep.auth;
    let v = match verify_request(auth, req).await {
        Ok(v) => v,
        Err(f) => return respond::refused(f),
    };
    let session_exp = match auth.store.family(&v.sid).await {
        Ok(Some(f)) => Some(f.expires_at()),
        Ok(None) => None,
        Err(_) => return respond::store_unavailable(),
    };
    let body = json!({
        "user": { "id": v.sub, "email": v.email, "roles": v.roles },
        "access_expires_at": rfc3339(v.exp),
        "session_expires_at": session_exp.map(rfc3339),
    });
    LocalResponse::json(200, &body)
}
