//! Security headers on every response, proxied or generated here, exactly once each.
//!
//! Pingora's local responses never pass `response_filter`, so both paths call [`apply`].

use crate::config::{HeaderMode, SecurityHeaders};
use pingora::http::ResponseHeader;

/// Add the configured headers (`set` replaces the upstream's value, `default` keeps it) and
/// remove the `remove` list.
pub fn apply(resp: &mut ResponseHeader, cfg: &SecurityHeaders) {
    for (name, value) in &cfg.headers {
        if cfg.mode == HeaderMode::Default && resp.headers.contains_key(name) {
            continue;
        }
        // insert_header replaces every earlier value: exactly one copy goes out.
        let _ = resp.insert_header(name.clone(), value.clone());
    }
    for name in &cfg.remove {
        resp.remove_header(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn cfg(mode: HeaderMode) -> SecurityHeaders {
        SecurityHeaders {
            mode,
            headers: vec![(
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("SAMEORIGIN"),
            )],
            remove: vec![HeaderName::from_static("server")],
        }
    }

    fn upstream() -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.append_header("X-Frame-Options", "DENY").unwrap();
        r.append_header("X-Frame-Options", "ALLOW-FROM x").unwrap();
        r.append_header("Server", "Apache").unwrap();
        r
    }

    #[test]
    fn set_mode_overrides_and_leaves_one_copy() {
        let mut r = upstream();
        apply(&mut r, &cfg(HeaderMode::Set));
        let values: Vec<_> = r.headers.get_all("x-frame-options").iter().collect();
        assert_eq!(values, vec!["SAMEORIGIN"]);
        assert!(r.headers.get("server").is_none());
    }

    #[test]
    fn default_mode_keeps_upstream_value() {
        let mut r = upstream();
        apply(&mut r, &cfg(HeaderMode::Default));
        assert_eq!(r.headers.get("x-frame-options").unwrap(), "DENY");
        let mut empty = ResponseHeader::build(200, None).unwrap();
        apply(&mut empty, &cfg(HeaderMode::Default));
        assert_eq!(empty.headers.get("x-frame-options").unwrap(), "SAMEORIGIN");
    }
}
