//! Admission, before any route or credential is looked at: the request head's limits, the
//! canonical target and host (refusing what has no single meaning), the route for them, and
//! the path that goes upstream.

use super::{canonical, routing};
use crate::respond::{self, LocalResponse};
use http::header::HOST;
use http::HeaderValue;
use pingora::http::RequestHeader;

/// Reject requests whose headers exceed our limits (far below Pingora's 1 MiB).
pub fn headers_too_large(req: &RequestHeader, limits: &crate::config::Limits) -> bool {
    if req.headers.len() > limits.max_headers {
        return true;
    }
    let mut total = req.raw_path().len();
    for (name, value) in req.headers.iter() {
        total += name.as_str().len() + value.len() + 4;
        if total > limits.max_header_bytes {
            return true;
        }
    }
    false
}

/// The answer to a target that was refused: `OPTIONS *` asks about the server itself and is
/// answered here; everything else is 400.
pub fn refuse_target(e: canonical::TargetError, method: &http::Method) -> LocalResponse {
    if e == canonical::TargetError::Asterisk && method == http::Method::OPTIONS {
        return LocalResponse::new(204, "text/plain; charset=utf-8", "").header(
            http::header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
    }
    respond::bad_request(&e.to_string())
}

/// Why a request was refused once its target parsed.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Host(#[from] canonical::HostError),
    #[error(transparent)]
    Target(#[from] canonical::TargetError),
    #[error(transparent)]
    Unusual(#[from] canonical::Unusual),
    #[error("path parameters (';') are not allowed on this route")]
    PathParams,
}

/// The canonical host, and the route for it and `target`. The host comes back only when it
/// must be rewritten for the upstream (case, trailing dot, default port, absolute form).
pub fn admit_host(
    cfg: &crate::config::Config,
    req: &RequestHeader,
    target: &canonical::Target,
    tls: bool,
) -> Result<(Option<usize>, Option<String>), Refused> {
    let mut values = req.headers.get_all(HOST).iter();
    let header = values.next();
    if values.next().is_some() {
        return Err(canonical::HostError::Repeated.into());
    }
    let header = match header {
        Some(v) => Some(v.to_str().map_err(|_| canonical::HostError::Invalid)?),
        None => None,
    };
    let host = match (header, target.authority.as_deref()) {
        (Some(h), None) => Some(canonical::canonical_host(h, tls)?),
        (Some(h), Some(a)) => {
            let (h, a) = (
                canonical::canonical_host(h, tls)?,
                canonical::canonical_host(a, tls)?,
            );
            if h != a {
                return Err(canonical::TargetError::AuthorityMismatch.into());
            }
            Some(a)
        }
        (None, Some(a)) => Some(canonical::canonical_host(a, tls)?),
        (None, None) if req.version >= http::Version::HTTP_11 => {
            return Err(canonical::HostError::Missing.into())
        }
        (None, None) => None,
    };
    let index = routing::find_route(&cfg.routes, host.as_ref().map(|h| h.name()), &target.path);
    let rewrite = match (&host, header) {
        (Some(h), Some(sent)) if h.full == sent => None,
        (Some(h), _) => Some(h.full.to_string()),
        (None, _) => None,
    };
    Ok((index, rewrite))
}

/// The path that goes upstream for `route`, or why the route refuses this target.
pub fn route_path<'t>(
    route: &crate::config::Route,
    target: &'t canonical::Target,
) -> Result<&'t str, Refused> {
    if route.strict_paths {
        if let Some(u) = target.unusual {
            return Err(u.into());
        }
    }
    Ok(match (route.path_params, &target.with_params) {
        (_, None) => &target.path,
        (crate::config::PathParams::Reject, Some(_)) => return Err(Refused::PathParams),
        (crate::config::PathParams::Strip, Some(_)) => &target.path,
        (crate::config::PathParams::Keep, Some(with)) => with,
    })
}

/// Is `raw` exactly `path`, followed by `?query` when there is one?
pub fn same_target(raw: &[u8], path: &str, query: &Option<String>) -> bool {
    let Some(rest) = raw.strip_prefix(path.as_bytes()) else {
        return false;
    };
    match query {
        None => rest.is_empty(),
        Some(q) => rest.first() == Some(&b'?') && &rest[1..] == q.as_bytes(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_target_is_compared_byte_for_byte() {
        let q = Some("a=1".to_string());
        assert!(same_target(b"/x/y?a=1", "/x/y", &q));
        assert!(same_target(b"/x/y", "/x/y", &None));
        assert!(!same_target(b"/x/y?", "/x/y", &None));
        assert!(!same_target(b"/x/%79?a=1", "/x/y", &q));
        assert!(!same_target(b"/x/y?a=2", "/x/y", &q));
    }

    #[test]
    fn heads_over_the_limits_are_refused() {
        let cfg = crate::config::parse(
            "limits: { max_headers: 3, max_header_bytes: 1024 }",
            "t".as_ref(),
            ".".as_ref(),
            |_| None,
        )
        .unwrap();
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for i in 0..3 {
            req.append_header(format!("x-{i}"), "v").unwrap();
        }
        assert!(!headers_too_large(&req, &cfg.limits));
        req.append_header("x-3", "v").unwrap();
        assert!(headers_too_large(&req, &cfg.limits));
        let mut big = RequestHeader::build("GET", b"/", None).unwrap();
        big.append_header("x-big", "v".repeat(1100)).unwrap();
        assert!(headers_too_large(&big, &cfg.limits));
    }
}
