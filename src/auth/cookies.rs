//! The gateway's three cookies and the CSRF double-submit check.

use crate::config::{CookiesConfig, SameSite};
use cookie::Cookie;
use http::HeaderValue;
use pingora::http::RequestHeader;
use subtle::ConstantTimeEq;

/// `Set-Cookie` for `name=value`, `Path=/`, no `Domain`, `Secure` when configured.
pub fn set(
    cfg: &CookiesConfig,
    name: &str,
    value: &str,
    max_age: u64,
    http_only: bool,
) -> HeaderValue {
    let c = Cookie::build((name, value))
        .path("/")
        .http_only(http_only)
        .secure(cfg.secure)
        .same_site(match cfg.same_site {
            SameSite::Strict => cookie::SameSite::Strict,
            SameSite::Lax => cookie::SameSite::Lax,
        })
        .max_age(cookie::time::Duration::seconds(
            max_age.min(i64::MAX as u64) as i64,
        ))
        .build();
    HeaderValue::from_str(&c.to_string()).expect("cookie values are header-safe")
}

/// `Set-Cookie` that deletes `name` (`Max-Age=0`).
pub fn clear(cfg: &CookiesConfig, name: &str, http_only: bool) -> HeaderValue {
    set(cfg, name, "", 0, http_only)
}

/// All three cleared.
pub fn clear_all(cfg: &CookiesConfig) -> Vec<HeaderValue> {
    vec![
        clear(cfg, &cfg.access_name, true),
        clear(cfg, &cfg.refresh_name, true),
        clear(cfg, &cfg.csrf_name, false),
    ]
}

/// Cookies for a freshly issued pair (access, refresh, and the CSRF cookie).
pub fn session_cookies(
    state: &super::AuthState,
    issued: &super::sessions::Issued,
    csrf: &str,
) -> Vec<HeaderValue> {
    let c = &state.config.cookies;
    let refresh_age = state.sessions.refresh_max_age(&issued.family);
    vec![
        set(
            c,
            &c.access_name,
            &issued.access.token,
            state.tokens.access_ttl(),
            true,
        ),
        set(c, &c.refresh_name, &issued.refresh, refresh_age, true),
        set(c, &c.csrf_name, csrf, refresh_age, false),
    ]
}

/// Constant-time equality of two secrets (length leaks, content does not).
pub fn secure_eq(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Does the request carry `X-CSRF-Token` equal to the CSRF cookie?
pub fn csrf_header_ok(req: &RequestHeader, cfg: &CookiesConfig) -> bool {
    let header = req
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match super::cookie_value(req, &cfg.csrf_name) {
        Some(Some(cookie)) => secure_eq(header, cookie),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes() {
        let cfg = crate::config::parse("{}", "t".as_ref(), ".".as_ref(), |_| None)
            .unwrap()
            .cookies;
        let v = set(&cfg, &cfg.access_name, "abc", 900, true);
        let s = v.to_str().unwrap();
        for part in [
            "__Host-pc_access=abc",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Path=/",
            "Max-Age=900",
        ] {
            assert!(s.contains(part), "{s} lacks {part}");
        }
        assert!(!s.contains("Domain"));
        assert!(clear(&cfg, "x", false)
            .to_str()
            .unwrap()
            .contains("Max-Age=0"));
        assert!(secure_eq("abc", "abc") && !secure_eq("abc", "abd") && !secure_eq("", ""));
    }
}
