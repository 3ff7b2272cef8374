//! The admin API, on a listener of its own (`admin.listen`, off by default) and never on the
//! proxy's: a Bearer token from `admin.token_file`, compared in constant time; every call
//! audited. `GET /admin/users/{id}/sessions`, `DELETE /admin/users/{id}/sessions`,
//! `DELETE /admin/sessions/{sid}`, and `POST /admin/revoke-all`, the incident kill switch
//! (every session of every user in the users file). Revocations reach every instance through
//! the store (Redis publishes them) as the user's own do. `DELETE /admin/users/{id}/mfa`
//! removes a user's second factor (a lost authenticator), so that they can enrol a new one.
//!
//! Path segments are percent-decoded one by one: the CLI encodes every character but letters
//! and digits, so that any user id of the users file (a dot, a space, a slash) can be named.

use super::state::AppState;
use crate::config::AdminConfig;
use crate::respond::LocalResponse;
use crate::secret::Secret;
use crate::store::MfaChange;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The shortest token accepted: guessing must be hopeless.
const MIN_TOKEN: usize = 32;

/// Read the token from `admin.token_file`; the error names the file.
pub fn load_token(admin: &AdminConfig) -> Result<Secret<String>, String> {
    let path = admin.token_file.display();
    let text = std::fs::read_to_string(&admin.token_file)
        .map_err(|e| format!("admin.token_file: cannot read {path}: {e}"))?;
    let token = text.trim();
    if token.len() < MIN_TOKEN || token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "admin.token_file: {path} must hold one token of at least {MIN_TOKEN} characters, no spaces (e.g. `head -c 32 /dev/urandom | base64`)"
        ));
    }
    Ok(Secret::new(token.to_string()))
}

pub struct AdminApp {
    pub live: Arc<ArcSwap<AppState>>,
    pub token: Secret<String>,
}

impl AdminApp {
    fn authorized(&self, session: &ServerSession) -> bool {
        let presented = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let want = self.token.expose().as_bytes();
        presented.len() == want.len() && bool::from(presented.as_bytes().ct_eq(want))
    }

    async fn answer(
        &self,
        s: &AppState,
        method: &Method,
        path: &str,
        client: &str,
    ) -> LocalResponse {
        let auth = &s.auth;
        let now = auth.tokens.clock.now();
        let unavailable = crate::respond::store_unavailable;
        let Some(decoded) = segments(path) else {
            return crate::respond::not_found("no such admin endpoint");
        };
        let parts: Vec<&str> = decoded.iter().map(String::as_str).collect();
        match (method, parts.as_slice()) {
            (&Method::GET, ["admin", "users", user, "sessions"]) => {
                let Ok(mut list) = auth.store.sessions_of(user, now).await else {
                    return unavailable();
                };
                list.sort_by_key(|f| std::cmp::Reverse(f.created));
                let sessions: Vec<_> = list
                    .iter()
                    .map(|f| crate::routes::sessions::describe(f, None))
                    .collect();
                LocalResponse::json(200, &json!({ "user": user, "sessions": sessions }))
            }
            (&Method::DELETE, ["admin", "users", user, "sessions"]) => {
                match end_user(s, user, now).await {
                    Ok(n) => {
                        s.metrics
                            .revocations
                            .with_label_values(&["admin"])
                            .inc_by(n as u64);
                        LocalResponse::json(200, &json!({ "sessions_revoked": n }))
                    }
                    Err(_) => unavailable(),
                }
            }
            (&Method::DELETE, ["admin", "sessions", sid]) => match auth.store.family(sid).await {
                Ok(Some(f)) if !f.revoked => match auth.sessions.revoke_family(sid).await {
                    Ok(()) => {
                        s.metrics.revocations.with_label_values(&["admin"]).inc();
                        LocalResponse::json(200, &json!({ "sessions_revoked": 1, "user": f.user }))
                    }
                    Err(_) => unavailable(),
                },
                Ok(_) => crate::respond::not_found("no such session"),
                Err(_) => unavailable(),
            },
            (&Method::POST, ["admin", "revoke-all"]) => {
                let mut total = 0;
                for user in auth.sessions.users.ids() {
                    match end_user(s, &user, now).await {
                        Ok(n) => total += n,
                        Err(_) => return unavailable(),
                    }
                }
                s.metrics
                    .revocations
                    .with_label_values(&["admin"])
                    .inc_by(total as u64);
                LocalResponse::json(200, &json!({ "sessions_revoked": total }))
            }
            (&Method::DELETE, ["admin", "users", user, "mfa"]) => {
                if auth.sessions.users.by_id(user).is_none() {
                    return crate::respond::not_found("no such user in the users file");
                }
                match auth.store.change_mfa(user, &MfaChange::Remove).await {
                    Ok(removed) => {
                        tracing::warn!(target: "portcullis::audit", event = "mfa_reset", user = %user, removed, client_ip = %client);
                        LocalResponse::json(200, &json!({ "user": user, "removed": removed }))
                    }
                    Err(_) => unavailable(),
                }
            }
            (_, ["admin", ..]) => crate::respond::not_found("no such admin endpoint"),
            _ => crate::respond::not_found("this listener serves only /admin/"),
        }
    }
}

/// The segments of `path`, each percent-decoded; `None` when one is not UTF-8 once decoded.
fn segments(path: &str) -> Option<Vec<String>> {
    path.trim_start_matches('/')
        .split('/')
        .map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8()
                .ok()
                .map(|d| d.into_owned())
        })
        .collect()
}

/// End every session of `user`; returns how many were still live.
async fn end_user(s: &AppState, user: &str, now: u64) -> Result<usize, crate::store::StoreError> {
    let live = s.auth.store.sessions_of(user, now).await?.len();
    s.auth.sessions.logout_all(user).await?;
    Ok(live)
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let s = self.live.load_full();
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let answer = if self.authorized(session) {
            self.answer(&s, &method, &path, &client).await
        } else {
            crate::respond::unauthorized(
                "admin_token_required",
                "a valid admin Bearer token is required",
                false,
            )
        };
        tracing::warn!(target: "portcullis::audit", event = "admin_call", method = %method, path = %path, status = answer.status, client_ip = %client);
        let mut r = Response::builder().status(answer.status);
        for (name, value) in &answer.headers {
            r = r.header(name, value);
        }
        r.header(http::header::CONTENT_LENGTH, answer.body.len())
            .header(http::header::CACHE_CONTROL, "no-store")
            .body(answer.body.to_vec())
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::segments;

    #[test]
    fn segments_are_decoded_after_the_path_is_split() {
        assert_eq!(
            segments("/admin/users/dana.o%2Dneil/mfa").unwrap(),
            ["admin", "users", "dana.o-neil", "mfa"]
        );
        assert_eq!(
            segments("/admin/users/a%2Fb/sessions").unwrap(),
            ["admin", "users", "a/b", "sessions"],
            "an encoded slash stays inside its segment"
        );
        assert_eq!(segments("/admin/users/%FF/mfa"), None, "not UTF-8");
    }
}
