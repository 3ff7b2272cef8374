//! `portcullis sessions list|revoke` and `portcullis mfa reset`: a client of the admin API of
//! the gateway the config describes (its `admin.listen` and `admin.token_file`). Prints a
//! table or one line; one clear line and a non-zero exit when the gateway cannot be reached
//! or refuses.

use crate::config::Config;
use std::time::Duration;

/// What to do.
pub enum Action<'a> {
    List { user: &'a str },
    RevokeUser { user: &'a str },
    RevokeSession { sid: &'a str },
    RevokeAll,
    MfaReset { user: &'a str },
}

/// Run `action` against the running gateway; returns what to print.
pub fn run(config: &Config, action: Action<'_>) -> Result<String, String> {
    let source = config.source.display();
    let admin = config.admin.as_ref().ok_or_else(|| {
        format!("{source}: no admin section: the admin API is off (set admin.listen and admin.token_file)")
    })?;
    let token = crate::gateway::admin::load_token(admin).map_err(|e| format!("{source}: {e}"))?;
    let mut addr = admin.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let base = format!("http://{addr}");
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let (method, path) = match &action {
        Action::List { user } => ("GET", format!("/admin/users/{}/sessions", enc(user))),
        Action::RevokeUser { user } => ("DELETE", format!("/admin/users/{}/sessions", enc(user))),
        Action::RevokeSession { sid } => ("DELETE", format!("/admin/sessions/{}", enc(sid))),
        Action::RevokeAll => ("POST", "/admin/revoke-all".to_string()),
        Action::MfaReset { user } => ("DELETE", format!("/admin/users/{}/mfa", enc(user))),
    };
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let url = format!("{base}{path}");
    let auth = format!("Bearer {}", token.expose());
    let sent = match method {
        "GET" => agent.get(&url).header("Authorization", &auth).call(),
        "DELETE" => agent.delete(&url).header("Authorization", &auth).call(),
        _ => agent.post(&url).header("Authorization", &auth).send_empty(),
    };
    let mut resp = sent.map_err(|e| {
        format!(
            "cannot reach the admin API at {base}: {e} (is the gateway running with this config?)"
        )
    })?;
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("{base}: unreadable answer ({status}): {e}"))?;
    let body: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{base}: not a JSON answer ({status}): {e}"))?;
    if status != 200 {
        let message = body["message"].as_str().unwrap_or("refused");
        return Err(format!("{base}{path}: {status}: {message}"));
    }
    Ok(match action {
        Action::List { user } => {
            let sessions = body["sessions"].as_array().cloned().unwrap_or_default();
            let mut out = format!(
                "{:<24} {:<22} {:<22} {:<40} {}\n",
                "SESSION", "CREATED", "LAST USED", "IP", "DEVICE"
            );
            for s in &sessions {
                let field = |k: &str| s[k].as_str().unwrap_or("-").to_string();
                out.push_str(&format!(
                    "{:<24} {:<22} {:<22} {:<40} {}\n",
                    field("id"),
                    field("created_at"),
                    field("last_used_at"),
                    field("ip"),
                    field("device")
                ));
            }
            out.push_str(&format!("{} session(s) of {user}", sessions.len()));
            out
        }
        Action::MfaReset { user } => match body["removed"].as_bool() {
            Some(true) => format!("second factor removed for {user}"),
            Some(false) => format!("{user} had no second factor"),
            None => return Err(format!("{base}{path}: unexpected answer: no `removed`")),
        },
        _ => format!(
            "{} session(s) revoked",
            body["sessions_revoked"].as_u64().unwrap_or(0)
        ),
    })
}
