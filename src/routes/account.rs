//! `GET /auth/account`: the signed-in user's page: their sessions (device, address, when each
//! began and was last used) with a "Sign out" button each and one for every other session.
//! Plain forms posted back to `POST /auth/account` with the page's CSRF field, so it works
//! without any script. Not signed in: the login page, coming back here.

use super::login_page::page_csrf;
use super::{Call, Endpoints};
use crate::auth::cookies::secure_eq;
use crate::auth::{cookie_value, verify_signed_in, Identity};
use crate::demo::escape_html;
use crate::respond::pages::document;
use crate::respond::LocalResponse;
use http::header::{LOCATION, SET_COOKIE};
use http::HeaderValue;
use std::time::{Duration, UNIX_EPOCH};

fn when(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs))
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

fn to_login() -> LocalResponse {
    LocalResponse::new(302, "text/plain; charset=utf-8", "").header(
        LOCATION,
        HeaderValue::from_static("/auth/login?return_to=%2Fauth%2Faccount"),
    )
}

async fn who(ep: &Endpoints, call: &Call<'_>) -> Option<Identity> {
    verify_signed_in(&ep.auth, call.req).await.ok()
}

/// The page.
pub async fn page(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    let Some(me) = who(ep, call).await else {
        return to_login();
    };
    let auth = &*ep.auth;
    let now = auth.tokens.clock.now();
    let Ok(mut sessions) = auth.store.sessions_of(&me.sub, now).await else {
        return crate::respond::store_unavailable();
    };
    sessions.sort_by_key(|f| std::cmp::Reverse(f.created));
    let (csrf, set) = page_csrf(ep, call.req);
    let csrf = escape_html(&csrf);
    let mut rows = String::new();
    for f in &sessions {
        let o = f.origin.clone().unwrap_or_default();
        let device = if o.device.is_empty() {
            "Unknown browser".to_string()
        } else {
            o.device
        };
        let action = if f.sid == me.sid {
            "<strong>This browser</strong>".to_string()
        } else {
            format!(
                "<form method=\"post\" action=\"/auth/account\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input type=\"hidden\" name=\"sid\" value=\"{}\"><button type=\"submit\" name=\"action\" value=\"revoke\">Sign out</button></form>",
                escape_html(&f.sid)
            )
        };
        rows.push_str(&format!(
            "<li><p><strong>{}</strong> from {}<br>Signed in {}, last used {}</p>{action}</li>\n",
            escape_html(&device),
            escape_html(&o.ip),
            when(f.created),
            when(f.rotated_at.max(f.created)),
        ));
    }
    let others = if sessions.len() > 1 {
        format!("<form method=\"post\" action=\"/auth/account\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><button type=\"submit\" name=\"action\" value=\"revoke-others\">Sign out everywhere else</button></form>")
    } else {
        String::new()
    };
    let second = match second_factor(ep, &me.sub).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let body = document(
        "Your account",
        &format!(
            "<h1>Your account</h1>\n<p>Signed in as {}.</p>\n{second}<h2>Where you are signed in</h2>\n<ul class=\"sessions\">\n{rows}</ul>\n{others}\n<p class=\"links\"><a href=\"/auth/logout\">Sign out</a></p>",
            escape_html(&me.email)
        ),
    );
    let r = LocalResponse::html(200, body);
    match set {
        Some(cookie) => r.header(SET_COOKIE, cookie),
        None => r,
    }
}

/// The second factor's part of the page: on (with the recovery codes left) or off, and the
/// link to its page; nothing when the gateway has no second factor configured.
async fn second_factor(ep: &Endpoints, user: &str) -> Result<String, LocalResponse> {
    let Some(mfa) = &ep.auth.mfa else {
        return Ok(String::new());
    };
    let record = mfa
        .record(user)
        .await
        .map_err(|_| crate::respond::store_unavailable())?;
    Ok(match record.filter(|r| r.enrolled()) {
        Some(r) => format!(
            "<h2>Two-step verification</h2>\n<p id=\"mfa-status\">On: {} recovery codes left. <a href=\"/auth/mfa\">Manage</a></p>\n",
            r.recovery.len()
        ),
        None => "<h2>Two-step verification</h2>\n<p id=\"mfa-status\">Off. <a href=\"/auth/mfa?return_to=%2Fauth%2Faccount\">Set it up</a></p>\n".to_string(),
    })
}

/// The page's forms: end one session, or every other one; then back to the page.
pub async fn act(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    let Some(me) = who(ep, call).await else {
        return to_login();
    };
    let (mut csrf, mut action, mut sid) = (String::new(), String::new(), String::new());
    for (k, v) in form_urlencoded::parse(call.body) {
        match k.as_ref() {
            "csrf" => csrf = v.into_owned(),
            "action" => action = v.into_owned(),
            "sid" => sid = v.into_owned(),
            _ => {}
        }
    }
    let cookie = cookie_value(call.req, &ep.auth.config.cookies.csrf_name)
        .flatten()
        .unwrap_or("");
    if !secure_eq(&csrf, cookie) {
        super::audit_csrf(ep, call, "/auth/account");
        return LocalResponse::html(
            403,
            crate::respond::pages::cross_site("The page expired. Reload it and try again."),
        );
    }
    let auth = &*ep.auth;
    let now = auth.tokens.clock.now();
    let Ok(sessions) = auth.store.sessions_of(&me.sub, now).await else {
        return crate::respond::store_unavailable();
    };
    let ending: Vec<&str> = match action.as_str() {
        "revoke" => sessions
            .iter()
            .filter(|f| f.sid == sid && f.sid != me.sid)
            .map(|f| f.sid.as_str())
            .collect(),
        "revoke-others" => sessions
            .iter()
            .filter(|f| f.sid != me.sid)
            .map(|f| f.sid.as_str())
            .collect(),
        _ => return crate::respond::bad_request("unknown action"),
    };
    for s in &ending {
        if auth.sessions.revoke_family(s).await.is_err() {
            return crate::respond::store_unavailable();
        }
    }
    ep.metrics
        .revocations
        .with_label_values(&["user_revoked"])
        .inc_by(ending.len() as u64);
    tracing::info!(target: "portcullis::audit", event = "sessions_revoked_by_user", user = %me.sub, sessions = ending.len(), client_ip = %call.client, request_id = call.request_id, user_agent = call.user_agent);
    LocalResponse::new(303, "text/plain; charset=utf-8", "")
        .header(LOCATION, HeaderValue::from_static("/auth/account"))
}
