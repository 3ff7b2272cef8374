//! Security headers on every response, proxied or generated here, exactly once each.
//!
//! Pingora's local responses never pass `response_filter`, so both paths call [`apply`].

use super::wire_name::{set_response, static_value, WireName};
use crate::config::{HeaderMode, SecurityHeaders};
use http::{HeaderName, HeaderValue};
use pingora::http::ResponseHeader;

/// The configured headers with their names parsed once and spelled as configured.
pub struct Prepared {
    mode: HeaderMode,
    headers: Vec<(WireName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl Prepared {
    pub fn new(cfg: &SecurityHeaders) -> Self {
        Prepared {
            mode: cfg.mode,
            headers: cfg
                .headers
                .iter()
                .zip(&cfg.wire_names)
                .map(|((n, v), wire)| (WireName::new(n, wire), static_value(v)))
                .collect(),
            remove: cfg.remove.clone(),
        }
    }
}

/// Add the configured headers (`set` replaces the upstream's value, `default` keeps it) and
/// remove the `remove` list.
pub fn apply(resp: &mut ResponseHeader, set: &Prepared) {
    // One growth of each of Pingora's two maps for all of them (vendor/README.md).
    let _ = resp.reserve(set.headers.len());
    for (name, value) in &set.headers {
        if set.mode == HeaderMode::Default && resp.headers.contains_key(&name.name) {
            continue;
        }
        // Replaces every earlier value: exactly one copy goes out.
        let _ = set_response(resp, name, value.clone());
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
            wire_names: vec!["X-Frame-Options".into()],
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
        let mut wire = Vec::new();
        r.header_to_h1_wire(&mut wire);
        assert_eq!(
            String::from_utf8(wire).unwrap(),
            "X-Frame-Options: SAMEORIGIN\r\n",
            "the configured spelling goes out"
        );
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
