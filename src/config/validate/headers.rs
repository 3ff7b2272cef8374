//! `cookies` and `security_headers` (the latter also per route): names and values that go
//! on the wire as they are spelled here.

use super::values::{header_name, one_of};
use super::{invalid, R};
use crate::config::file::{CookiesFile, SecurityHeadersFile};
use crate::config::model::{CookiesConfig, HeaderMode, SameSite, SecurityHeaders};
use http::HeaderValue;

/// Security headers a hardened NGINX would add.
pub const DEFAULT_SECURITY_HEADERS: &[(&str, &str)] = &[
    ("Strict-Transport-Security", "max-age=63072000; includeSubDomains"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Origin-Agent-Cluster", "?1"),
    ("X-DNS-Prefetch-Control", "off"),
    ("X-Permitted-Cross-Domain-Policies", "none"),
    ("X-XSS-Protection", "0"),
];

pub(super) fn cookies(c: &CookiesFile) -> R<CookiesConfig> {
    let secure = c.secure.unwrap_or(true);
    let name = |key: &str, value: &Option<String>, default: &str| -> R<String> {
        let v = value.as_deref().unwrap_or(default);
        let valid = !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !valid {
            return invalid(
                key,
                format!("{v:?} is not a valid cookie name (letters, digits, _ - .)"),
            );
        }
        Ok(if secure {
            format!("__Host-{v}")
        } else {
            v.to_string()
        })
    };
    let cfg = CookiesConfig {
        secure,
        same_site: one_of(
            "cookies.same_site",
            c.same_site.as_deref(),
            SameSite::Strict,
            &[("Strict", SameSite::Strict), ("Lax", SameSite::Lax)],
        )?,
        access_name: name("cookies.access_name", &c.access_name, "pc_access")?,
        refresh_name: name("cookies.refresh_name", &c.refresh_name, "pc_refresh")?,
        csrf_name: name("cookies.csrf_name", &c.csrf_name, "pc_csrf")?,
        device_name: name("cookies.device_name", &None, "pc_device")?,
        mfa_name: name("cookies.mfa_name", &None, "pc_mfa")?,
    };
    let names = cfg.ours();
    let distinct: std::collections::HashSet<_> = names.iter().collect();
    if distinct.len() != names.len() {
        return invalid(
            "cookies",
            "access_name, refresh_name and csrf_name must differ from each other and from the device and second-factor cookies (pc_device, pc_mfa)",
        );
    }
    Ok(cfg)
}

pub(super) fn security_headers(at: &str, s: &SecurityHeadersFile) -> R<SecurityHeaders> {
    let mode = one_of(
        &format!("{at}.mode"),
        s.mode.as_deref(),
        HeaderMode::Set,
        &[("set", HeaderMode::Set), ("default", HeaderMode::Default)],
    )?;
    let mut headers = Vec::new();
    let mut wire_names = Vec::new();
    let pairs: Vec<(String, String)> = match &s.headers {
        Some(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        None => DEFAULT_SECURITY_HEADERS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    for (name, value) in pairs {
        let key = format!("{at}.headers.{name}");
        let hn = header_name(&key, &name)?;
        let hv = HeaderValue::from_str(&value)
            .or_else(|_| invalid(&key, "value contains characters not allowed in a header"))?;
        headers.push((hn, hv));
        wire_names.push(name);
    }
    let mut remove = Vec::new();
    let default_remove = vec!["Server".to_string(), "X-Powered-By".to_string()];
    for (i, name) in s
        .remove
        .as_ref()
        .unwrap_or(&default_remove)
        .iter()
        .enumerate()
    {
        remove.push(header_name(&format!("{at}.remove[{i}]"), name)?);
    }
    Ok(SecurityHeaders {
        mode,
        headers,
        wire_names,
        remove,
    })
}
