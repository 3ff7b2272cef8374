//! Security headers on every response, proxied or generated here, exactly once each.
//!
//! Pingora's local responses never pass `response_filter`, so both paths call [`apply`].

use crate::config::{HeaderMode, SecurityHeaders};
use http::HeaderMap;

/// Add the configured headers (`set` replaces the upstream's value, `default` keeps it) and
/// remove the `remove` list.
pub fn apply(h: &mut HeaderMap, set: &SecurityHeaders) {
    h.reserve(set.headers.len());
    for (name, value) in &set.headers {
        if set.mode == HeaderMode::Default && h.contains_key(name) {
            continue;
        }
        // insert replaces every earlier value: exactly one copy goes out.
        h.insert(name.clone(), value.clone());
    }
    for name in &set.remove {
        h.remove(name);
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

    fn upstream() -> HeaderMap {
        let mut r = HeaderMap::new();
        r.append("x-frame-options", HeaderValue::from_static("DENY"));
        r.append("x-frame-options", HeaderValue::from_static("ALLOW-FROM x"));
        r.append("server", HeaderValue::from_static("Apache"));
        r
    }

    #[test]
    fn set_mode_overrides_and_leaves_one_copy() {
        let mut r = upstream();
        apply(&mut r, &cfg(HeaderMode::Set));
        let values: Vec<_> = r.get_all("x-frame-options").iter().collect();
        assert_eq!(values, vec!["SAMEORIGIN"]);
        assert!(r.get("server").is_none());
    }

    #[test]
    fn default_mode_keeps_upstream_value() {
        let mut r = upstream();
        apply(&mut r, &cfg(HeaderMode::Default));
        assert_eq!(r.get("x-frame-options").unwrap(), "DENY");
        let mut empty = HeaderMap::new();
        apply(&mut empty, &cfg(HeaderMode::Default));
        assert_eq!(empty.get("x-frame-options").unwrap(), "SAMEORIGIN");
    }
}
