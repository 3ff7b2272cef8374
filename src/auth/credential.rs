//! Where a request's credentials are: `Authorization: Bearer`, else the access cookie; never
//! the query string. Read as bytes: a header that is not text is refused, never guessed at.

use pingora::http::RequestHeader;

/// Credentials found on a request.
pub enum Credential<'a> {
    /// The header's bytes: checked as text only when the verified-token cache misses.
    Bearer(&'a [u8]),
    Cookie(&'a str),
    /// Something unusable: two access cookies, a non-Bearer scheme, bytes that are not text.
    Ambiguous,
    None,
}

impl<'a> Credential<'a> {
    pub fn token(&self) -> Option<&'a str> {
        match self {
            Credential::Bearer(t) => std::str::from_utf8(t).ok(),
            Credential::Cookie(t) => Some(t),
            _ => None,
        }
    }
}

/// `Authorization: Bearer` first, else the access cookie. Never the query string.
pub fn credential<'a>(req: &'a RequestHeader, access_cookie: &str) -> Credential<'a> {
    let mut auth = req.headers.get_all(http::header::AUTHORIZATION).iter();
    if let Some(v) = auth.next() {
        let bearer = bearer_token(v.as_bytes());
        if auth.next().is_some() && bearer.is_some() {
            return Credential::Ambiguous;
        }
        match bearer {
            Some(Some(token)) => return Credential::Bearer(token),
            Some(None) => return Credential::Ambiguous,
            // Another scheme (Basic for the legacy app itself): not ours, the cookie decides.
            None => {}
        }
    }
    match cookie_value(req, access_cookie) {
        None => Credential::None,
        Some(Some(v)) => Credential::Cookie(v),
        Some(None) => Credential::Ambiguous,
    }
}

/// Is this `Authorization` value of the Bearer scheme? Such a header is ours, never the
/// application's, whatever follows the scheme.
pub fn is_bearer(value: &[u8]) -> bool {
    let scheme = value.split(|&b| b == b' ').next().unwrap_or(value);
    scheme.eq_ignore_ascii_case(b"bearer")
}

/// `None`: not a Bearer credential; `Some(None)`: Bearer but empty; `Some(Some(t))`. Bytes
/// that are not text are refused by verification (they can never be in the token cache).
pub fn bearer_token(value: &[u8]) -> Option<Option<&[u8]>> {
    if !is_bearer(value) {
        return None;
    }
    let token = value.get("bearer ".len()..).unwrap_or_default();
    Some(Some(token).filter(|t| !t.is_empty()))
}

/// The value of cookie `name`: `None` when absent, `Some(None)` when sent more than once
/// (cookie tossing: which one is real cannot be known).
pub fn cookie_value<'a>(req: &'a RequestHeader, name: &str) -> Option<Option<&'a str>> {
    let mut found = None;
    for v in req.headers.get_all(http::header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for pair in s.split(';') {
            let (k, val) = pair.split_once('=').unwrap_or((pair, ""));
            if k.trim() == name {
                if found.is_some() {
                    return Some(None);
                }
                found = Some(val.trim().trim_matches('"'));
            }
        }
    }
    found.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_read_from_bytes() {
        assert_eq!(bearer_token(b"Bearer abc.def"), Some(Some(&b"abc.def"[..])));
        assert_eq!(bearer_token(b"bEaReR abc"), Some(Some(&b"abc"[..])));
        // Ours but unusable: refused, never passed to the application.
        assert_eq!(bearer_token(b"Bearer"), Some(None));
        assert_eq!(bearer_token(b"Bearer "), Some(None));
        // Not text: ours, and left to verification to refuse (tested there).
        assert_eq!(
            bearer_token(b"Bearer \xff\xfe"),
            Some(Some(&b"\xff\xfe"[..]))
        );
        assert!(is_bearer(b"Bearer \xff\xfe"));
        // Another scheme is the application's.
        for other in [
            &b"Basic dXNlcjpwYXNz"[..],
            b"Bearerx abc",
            b"\xffBearer abc",
            b"",
        ] {
            assert_eq!(bearer_token(other), None);
            assert!(!is_bearer(other));
        }
    }
}
