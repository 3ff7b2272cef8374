//! Security headers on every response, proxied or generated here, exactly once each.
//!
//! Pingora's local responses never pass `response_filter`, so both paths call [`apply`],
//! with the set [`RouteSets::pick`] chooses: a route's own `security_headers` block replaces
//! the global one for everything that route answers (an embeddable widget route may need a
//! looser `X-Frame-Options` than the rest of the site).

use super::wire_name::{set_response, static_value, WireName};
use crate::config::{Config, HeaderMode, SecurityHeaders};
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

/// The routes' own sets, one entry per route in route order (`None`: the global set).
#[derive(Default)]
pub struct RouteSets(Vec<Option<Prepared>>);

impl RouteSets {
    pub fn new(config: &Config) -> Self {
        RouteSets(
            config
                .routes
                .iter()
                .map(|r| r.security_headers.as_ref().map(Prepared::new))
                .collect(),
        )
    }

    /// The set for an answer on `route` (`None`: no route, such as `/auth/*`, probes and
    /// no-route answers): the route's own, else `global`.
    #[inline]
    pub fn pick<'a>(&'a self, route: Option<usize>, global: &'a Prepared) -> &'a Prepared {
        match route.and_then(|i| self.0.get(i)) {
            Some(Some(own)) => own,
            _ => global,
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
    fn a_route_set_replaces_the_global_one() {
        let global = cfg(HeaderMode::Set);
        let sets = RouteSets(vec![None, Some(cfg(HeaderMode::Default))]);
        assert!(std::ptr::eq(sets.pick(None, &global), &global));
        assert!(std::ptr::eq(sets.pick(Some(0), &global), &global));
        assert!(std::ptr::eq(sets.pick(Some(9), &global), &global));
        assert_eq!(sets.pick(Some(1), &global).mode, HeaderMode::Default);
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
