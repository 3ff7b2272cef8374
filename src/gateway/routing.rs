//! Route matching on the normalized path, and the normalization itself.
//!
//! Authorization decisions are only as good as the path they are taken on, so the path is
//! normalized once (dot-segments resolved, `//` collapsed, unreserved escapes decoded) and that
//! exact path is both matched and forwarded upstream. Anything ambiguous (an encoded `/`, `\` or
//! NUL, a raw `\` or `#`) is refused with 400 rather than guessed at.

use crate::config::Route;

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with '/'")]
    NotAbsolute,
    #[error("the path contains an encoded '/', '\\' or NUL")]
    EncodedSeparator,
    #[error("the path contains a raw '\\' or '#'")]
    ForbiddenCharacter,
    #[error("the path contains an invalid percent-escape")]
    BadEscape,
    #[error("the path climbs above the root")]
    AboveRoot,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Normalize a request path (no query). Returns the path to route on and forward.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // 1. Decode unreserved escapes, uppercase the others, refuse the dangerous ones.
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                let v = h * 16 + l;
                if v == b'/' || v == b'\\' || v == 0 {
                    return Err(PathError::EncodedSeparator);
                }
                if is_unreserved(v) {
                    decoded.push(v as char);
                } else {
                    decoded.push('%');
                    decoded.push_str(&format!("{v:02X}"));
                }
                i += 3;
            }
            b'\\' | b'#' | 0 => return Err(PathError::ForbiddenCharacter),
            _ => {
                // Multi-byte UTF-8 passes through unchanged.
                let ch_len = utf8_len(b);
                decoded.push_str(raw.get(i..i + ch_len).ok_or(PathError::BadEscape)?);
                i += ch_len;
            }
        }
    }
    // 2. Resolve dot-segments and empty segments. A segment's `;params` do not change what it
    //    is (`..;/` is `..` to Tomcat), so the part before `;` decides.
    let mut out: Vec<&str> = Vec::new();
    let trailing_slash = decoded.ends_with('/') && decoded.len() > 1;
    for seg in decoded.split('/') {
        let base = seg.split(';').next().unwrap_or("");
        match base {
            "" if seg.is_empty() => {}
            "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
            }
            _ => out.push(seg),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() || (trailing_slash && !out.is_empty()) {
        path.push('/');
    }
    Ok(path)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

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

/// Host without port, lower-cased.
pub fn host_only(host: &str) -> String {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    h.to_ascii_lowercase()
}

/// Index of the first route matching `host` and `path` (first match wins).
pub fn find_route(routes: &[Route], host: Option<&str>, path: &str) -> Option<usize> {
    let host = host.map(host_only);
    routes.iter().position(|r| {
        r.host.as_deref().is_none_or(|h| host.as_deref() == Some(h))
            && prefix_matches(&r.path_prefix, path)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthMode;

    #[test]
    fn normalizes_dot_segments_and_slashes() {
        let cases = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a//b", "/a/b"),
            ("/static/../admin", "/admin"),
            ("/static/%2e%2e/admin", "/admin"),
            ("/static/%2E%2E/admin/", "/admin/"),
            ("/static/..;/admin", "/admin"),
            ("/./a/./b/.", "/a/b"),
            ("//admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb", "/a%3Fb"),
            ("/caf\u{e9}", "/caf\u{e9}"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_path(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn refuses_ambiguous_paths() {
        for bad in [
            "/a%2fb", "/a%2F..", "/..%2f", "/a%5cb", "/a%00", "/a\\b", "/a#b", "/%zz", "/%2",
            "/..", "x",
        ] {
            assert!(normalize_path(bad).is_err(), "{bad}");
        }
    }

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
            host: host.map(str::to_string),
            path_prefix: p.into(),
            upstream: "u".into(),
            auth: AuthMode::Public,
            roles: vec![],
        };
        let routes = vec![
            route(Some("a.example"), "/"),
            route(None, "/x"),
            route(None, "/"),
        ];
        assert_eq!(find_route(&routes, Some("A.example:8080"), "/x"), Some(0));
        assert_eq!(find_route(&routes, Some("b.example"), "/x/y"), Some(1));
        assert_eq!(find_route(&routes, None, "/z"), Some(2));
        assert_eq!(host_only("[::1]:80"), "::1");
    }
}
