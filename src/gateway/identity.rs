//! What a client may not tell the upstream: identity headers and proxy headers are removed
//! before any decision, on every route; the gateway's own values are set afterwards.

use crate::config::Config;
use http::header::{CONNECTION, COOKIE};
use http::{HeaderName, HeaderValue};
use pingora::http::RequestHeader;

/// Headers only the gateway (or a trusted proxy in front of it) may set.
const PROXY_HEADERS: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

/// Headers that let a client rewrite what the upstream believes about the URL or the client;
/// removed unless the peer is a trusted proxy.
const UNTRUSTED_ONLY: &[&str] = &[
    "forwarded",
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-real-ip",
];

/// The precomputed protected names, normalized ([`normalize`]). A handful of names: a scan
/// without allocating beats hashing a normalized copy of every request header.
pub struct Protected {
    always: Vec<String>,
    untrusted_only: Vec<String>,
}

/// A header name as applications behind the gateway may read it: frameworks turn header
/// names into variable names (CGI's `HTTP_X_FORWARDED_USER`, PHP, Rack, WSGI) by mapping
/// punctuation to one separator, so `X.Forwarded.User` or `x_forwarded~user` can arrive as
/// the trusted identity header. Lower case, and every byte other than a letter or digit as
/// `-`.
#[inline]
fn fold(b: u8) -> u8 {
    if b.is_ascii_alphanumeric() {
        b.to_ascii_lowercase()
    } else {
        b'-'
    }
}

fn normalize(name: &str) -> String {
    name.bytes().map(|b| char::from(fold(b))).collect()
}

/// Does a request header name equal a normalized protected name once normalized itself?
/// Compared byte by byte, without building the normalized copy (this runs for every header
/// of every request).
#[inline]
fn same_name(name: &str, normalized: &str) -> bool {
    name.len() == normalized.len()
        && name
            .bytes()
            .zip(normalized.bytes())
            .all(|(a, b)| fold(a) == b)
}

impl Protected {
    pub fn new(config: &Config) -> Self {
        let ih = &config.identity_headers;
        let mut always: Vec<String> = [ih.user.as_str(), ih.email.as_str(), ih.roles.as_str()]
            .into_iter()
            .map(normalize)
            .collect();
        // Variants of the proxy headers (`X_Forwarded_For`): the gateway sets the canonical
        // ones itself.
        for h in PROXY_HEADERS {
            always.push(normalize(h));
        }
        always.sort();
        always.dedup();
        Protected {
            always,
            untrusted_only: UNTRUSTED_ONLY.iter().map(|h| normalize(h)).collect(),
        }
    }

    /// Remove every client-sent copy of a protected header, in any case and with any
    /// punctuation for `-` ([`normalize`]).
    /// Returns the names removed (for the audit log); canonical proxy headers from a trusted
    /// peer are kept since `X-Forwarded-For` chaining needs them.
    pub fn strip(&self, req: &mut RequestHeader, peer_trusted: bool) -> Vec<HeaderName> {
        let mut doomed = Vec::new();
        for name in req.headers.keys() {
            let n = name.as_str();
            let listed = |list: &[String]| list.iter().any(|p| same_name(n, p));
            let canonical_proxy = PROXY_HEADERS.contains(&n);
            let hit = (listed(&self.always) && !(peer_trusted && canonical_proxy))
                || (!peer_trusted && listed(&self.untrusted_only));
            if hit && !doomed.contains(name) {
                doomed.push(name.clone());
            }
        }
        for name in &doomed {
            req.remove_header(name);
        }
        doomed
    }
}

/// Keep only the `Connection` options that are not header names, so a client cannot nominate
/// a header the gateway sets (`Connection: X-Forwarded-User`) for removal by a later hop.
pub fn sanitize_connection(req: &mut RequestHeader) {
    let Some(value) = req.headers.get(CONNECTION).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let kept: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|t| {
            t.eq_ignore_ascii_case("keep-alive")
                || t.eq_ignore_ascii_case("close")
                || t.eq_ignore_ascii_case("upgrade")
        })
        .collect();
    let kept = kept.join(", ");
    if kept == value {
        return;
    }
    if kept.is_empty() {
        req.remove_header(&CONNECTION);
    } else if let Ok(v) = HeaderValue::from_str(&kept) {
        let _ = req.insert_header("Connection", v);
    }
}

/// Remove the gateway's own cookies from the `Cookie` header(s) sent upstream.
pub fn strip_cookies(req: &mut RequestHeader, names: &[&str]) {
    let values: Vec<HeaderValue> = req.headers.get_all(COOKIE).iter().cloned().collect();
    if values.is_empty() {
        return;
    }
    let mut kept = Vec::new();
    let mut dropped = false;
    for v in &values {
        // A value that is not text cannot be checked for our cookies: it is dropped.
        let Ok(s) = v.to_str() else {
            dropped = true;
            continue;
        };
        for pair in s.split(';') {
            let pair = pair.trim();
            if pair.is_empty() {
                continue;
            }
            let name = pair.split('=').next().unwrap_or("").trim();
            if names.contains(&name) {
                dropped = true;
            } else {
                kept.push(pair);
            }
        }
    }
    // None of ours: the header goes up exactly as it came.
    if !dropped {
        return;
    }
    req.remove_header(&COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            let _ = req.insert_header("Cookie", v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        crate::config::parse("{}", "t.yaml".as_ref(), ".".as_ref(), |_| None).unwrap()
    }

    #[test]
    fn strips_identity_variants_in_any_case() {
        let p = Protected::new(&config());
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for (k, v) in [
            ("X-Forwarded-User", "a"),
            ("x_forwarded_user", "b"),
            ("X-FORWARDED-EMAIL", "c"),
            ("X_Forwarded_Groups", "d"),
            ("X-Real-IP", "e"),
            ("Accept", "f"),
        ] {
            req.append_header(k.to_string(), v).unwrap();
        }
        p.strip(&mut req, false);
        let left: Vec<_> = req.headers.keys().map(|k| k.as_str().to_string()).collect();
        assert_eq!(left, vec!["accept"]);
    }

    #[test]
    fn any_punctuation_reads_as_a_dash() {
        let p = Protected::new(&config());
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        // Every token character a header name may contain, as a separator.
        for sep in "-_.!#$%&'*+^`|~".chars() {
            req.append_header(format!("X{sep}Forwarded{sep}User"), "x")
                .unwrap();
        }
        for (k, v) in [
            ("x.forwarded_email", "c"),
            ("X.Real.Ip", "e"),
            ("x.forwarded.for", "f"),
            ("X-Forwarded-For", "g"),
            // Near misses stay.
            ("X-Forwarded-Users", "h"),
            ("XForwardedUser", "i"),
            ("X--Forwarded-User", "j"),
        ] {
            req.append_header(k.to_string(), v).unwrap();
        }
        let stripped = p.strip(&mut req, true);
        assert!(stripped.len() >= 16, "{stripped:?}");
        let mut left: Vec<_> = req.headers.keys().map(|k| k.as_str().to_string()).collect();
        left.sort();
        // A trusted proxy's canonical X-Forwarded-For stays (and X-Real-IP from it).
        assert_eq!(
            left,
            vec![
                "x--forwarded-user",
                "x-forwarded-for",
                "x-forwarded-users",
                "x.real.ip",
                "xforwardeduser",
            ]
        );
        assert_eq!(normalize("X_Remote.USER"), "x-remote-user");
        assert!(same_name("x~forwarded|user", "x-forwarded-user"));
        assert!(!same_name("x-forwarded-use", "x-forwarded-user"));
    }

    #[test]
    fn cookies_and_connection() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("Cookie", "a=1; pc_access=x; b=2")
            .unwrap();
        req.append_header("Connection", "keep-alive, X-Forwarded-User")
            .unwrap();
        strip_cookies(&mut req, &["pc_access"]);
        sanitize_connection(&mut req);
        assert_eq!(req.headers.get("cookie").unwrap(), "a=1; b=2");
        assert_eq!(req.headers.get("connection").unwrap(), "keep-alive");
        // Nothing of ours: untouched, with its spelling; not text: dropped.
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("cOOkie", "a=1").unwrap();
        req.append_header("cOOkie", "b=2").unwrap();
        strip_cookies(&mut req, &["pc_access"]);
        let mut wire = Vec::new();
        req.header_to_h1_wire(&mut wire);
        assert_eq!(wire, b"cOOkie: a=1\r\ncOOkie: b=2\r\n");
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("Cookie", "a=1").unwrap();
        req.append_header(
            "Cookie",
            HeaderValue::from_bytes(b"pc_access=t; \xff").unwrap(),
        )
        .unwrap();
        strip_cookies(&mut req, &["pc_access"]);
        let left: Vec<_> = req.headers.get_all("cookie").iter().collect();
        assert_eq!(left, ["a=1"]);
    }
}
