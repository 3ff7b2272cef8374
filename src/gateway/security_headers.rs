//! Security headers on every response, proxied or generated here, exactly once each.
//!
//! Pingora's local responses never pass `response_filter`, so both paths call [`apply`].

use crate::config::{HeaderMode, SecurityHeaders};
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use pingora::http::{IntoCaseHeaderName, ResponseHeader};

/// The spelling Pingora puts on the wire for `name` (title case for well-known names), as
/// bytes that convert back into a header name without work.
pub fn wire_name(name: &HeaderName) -> Bytes {
    Bytes::copy_from_slice(name.into_case_header_name().as_slice())
}

/// The configured headers with their wire spelling computed once (Pingora would otherwise
/// title-case each name into a new buffer on every response).
pub struct Prepared {
    mode: HeaderMode,
    headers: Vec<(HeaderName, Bytes, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl Prepared {
    pub fn new(cfg: &SecurityHeaders) -> Self {
        Prepared {
            mode: cfg.mode,
            headers: cfg
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), wire_name(n), v.clone()))
                .collect(),
            remove: cfg.remove.clone(),
        }
    }
}

/// Add the configured headers (`set` replaces the upstream's value, `default` keeps it) and
/// remove the `remove` list.
pub fn apply(resp: &mut ResponseHeader, set: &Prepared) {
    for (name, wire, value) in &set.headers {
        if set.mode == HeaderMode::Default && resp.headers.contains_key(name) {
            continue;
        }
        // insert_header replaces every earlier value: exactly one copy goes out.
        let _ = resp.insert_header(wire.clone(), value.clone());
    }
    for name in &set.remove {
        resp.remove_header(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: HeaderMode) -> Prepared {
        Prepared::new(&SecurityHeaders {
            mode,
            headers: vec![(
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("SAMEORIGIN"),
            )],
            remove: vec![HeaderName::from_static("server")],
        })
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
