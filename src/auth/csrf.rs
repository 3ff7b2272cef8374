//! Cross-site request refusal for cookie-authenticated requests: unsafe methods from another
//! origin never act with the user's cookies.

use pingora::http::RequestHeader;

/// Unsafe methods: every method but the safe ones (RFC 9110 section 9.2.1), so WebDAV's
/// `PROPPATCH`, `MOVE`, `LOCK` and any extension method count as state-changing.
pub fn is_unsafe(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    )
}

/// A cookie-authenticated unsafe request that may come from another site: Fetch Metadata
/// other than `same-origin` or `none` (a same-site subdomain is another origin), or an `Origin`
/// other than `public_url`, whatever Fetch Metadata says.
pub fn is_cross_site(req: &RequestHeader, public_url: &str) -> bool {
    if !is_unsafe(&req.method) {
        return false;
    }
    if let Some(site) = req.headers.get("sec-fetch-site") {
        let b = site.as_bytes();
        if !(b.eq_ignore_ascii_case(b"same-origin") || b.eq_ignore_ascii_case(b"none")) {
            return true;
        }
    }
    req.headers
        .get(http::header::ORIGIN)
        .is_some_and(|o| !o.as_bytes().eq_ignore_ascii_case(public_url.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_methods_and_cross_site_requests() {
        for m in [
            "POST",
            "PUT",
            "PATCH",
            "DELETE",
            "PROPPATCH",
            "MOVE",
            "COPY",
            "LOCK",
            "MKCOL",
            "PURGE",
        ] {
            assert!(
                is_unsafe(&http::Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
        for m in ["GET", "HEAD", "OPTIONS", "TRACE"] {
            assert!(
                !is_unsafe(&http::Method::from_bytes(m.as_bytes()).unwrap()),
                "{m}"
            );
        }
        let public = "https://app.example.com";
        let req = |method: &str, headers: &[(&str, &str)]| {
            let mut r = RequestHeader::build(method, b"/x", None).unwrap();
            for (k, v) in headers {
                r.append_header(k.to_string(), *v).unwrap();
            }
            r
        };
        let cross = [
            req("POST", &[("Sec-Fetch-Site", "cross-site")]),
            req("POST", &[("Sec-Fetch-Site", "same-site")]),
            req("MOVE", &[("Sec-Fetch-Site", "same-site")]),
            req(
                "POST",
                &[
                    ("Sec-Fetch-Site", "same-origin"),
                    ("Origin", "https://evil.example"),
                ],
            ),
            req("PROPPATCH", &[("Origin", "https://app.example.com.evil")]),
            req("POST", &[("Origin", "null")]),
        ];
        for r in &cross {
            assert!(is_cross_site(r, public), "{:?}", r.headers);
        }
        let same = [
            req(
                "POST",
                &[
                    ("Sec-Fetch-Site", "same-origin"),
                    ("Origin", "https://app.example.com"),
                ],
            ),
            req("POST", &[("Sec-Fetch-Site", "none")]),
            req("DELETE", &[]),
            req("GET", &[("Sec-Fetch-Site", "cross-site")]),
        ];
        for r in &same {
            assert!(!is_cross_site(r, public), "{:?}", r.headers);
        }
    }
}
