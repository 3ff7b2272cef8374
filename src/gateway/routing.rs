//! Route matching on the canonical path and host (`canonical/`): the form that is both
//! matched and forwarded upstream.

use crate::config::Route;

/// Does `path` fall under `prefix` on a segment boundary (`/admin` matches `/admin` and
/// `/admin/x`, never `/administrator`)? ASCII case is ignored, so that a case-insensitive
/// legacy server cannot be reached through `/ADMIN` past an `/admin` rule.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    let (p, q) = (prefix.as_bytes(), path.as_bytes());
    q.len() >= p.len()
        && q[..p.len()].eq_ignore_ascii_case(p)
        && (q.len() == p.len() || q[p.len()] == b'/')
}

/// Index of the first route matching `host` (a canonical host name, without port) and `path`
/// (first match wins).
pub fn find_route(routes: &[Route], host: Option<&str>, path: &str) -> Option<usize> {
    routes.iter().position(|r| {
        r.host.as_deref().is_none_or(|h| host == Some(h)) && prefix_matches(&r.path_prefix, path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthMode;

    #[test]
    fn prefix_respects_segments_and_ignores_case() {
        assert!(prefix_matches("/admin", "/admin"));
        assert!(prefix_matches("/admin", "/admin/x"));
        assert!(prefix_matches("/admin", "/ADMIN/x"));
        assert!(!prefix_matches("/admin", "/administrator"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn host_and_first_match() {
        let route = |host: Option<&str>, p: &str| Route {
            mfa_required: false,
            max_auth_age: None,
            host: host.map(str::to_string),
            path_prefix: p.into(),
            upstream: "u".into(),
            auth: AuthMode::Public,
            roles: vec![],
            path_params: crate::config::PathParams::Keep,
            strict_paths: true,
            cors: None,
            security_headers: None,
            inject_client: false,
        };
        let routes = vec![
            route(Some("a.example"), "/"),
            route(None, "/x"),
            route(None, "/"),
        ];
        assert_eq!(find_route(&routes, Some("a.example"), "/x"), Some(0));
        assert_eq!(find_route(&routes, Some("b.example"), "/x/y"), Some(1));
        assert_eq!(find_route(&routes, None, "/z"), Some(2));
    }
}
