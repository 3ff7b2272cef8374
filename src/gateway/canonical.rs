//! The canonical request: one form of the request target and the host that routing decides
//! on and that the application receives.
//!
//! Servers behind the gateway resolve a target in their own ways: servlet containers drop
//! `;params` from every segment, IIS strips trailing dots and spaces, some frameworks decode
//! twice or fold Unicode case, nginx drops a host's trailing dot. Whatever could resolve to a
//! different resource on some server is either brought to one form here (dot-segments,
//! `//`, unreserved escapes, `;params`, host case, trailing dot, default port) or refused
//! with 400 before any route is chosen. A target that cannot be parsed is an error, never `/`.

use std::borrow::Cow;

/// Why a request target was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("the request target must be an absolute path starting with '/'")]
    NotOriginForm,
    #[error("the request target '*' is only allowed with OPTIONS")]
    Asterisk,
    #[error("the absolute-form request target names another host than the Host header")]
    AuthorityMismatch,
    #[error("the path contains an encoded '/', '\\', ';' or a control character")]
    EncodedSeparator,
    #[error("the path contains a raw '\\', '#' or control character")]
    ForbiddenCharacter,
    #[error("the path contains an invalid percent-escape")]
    BadEscape,
    #[error("the path climbs above the root")]
    AboveRoot,
}

/// Why a host was refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("the Host header is missing")]
    Missing,
    #[error("more than one Host header")]
    Repeated,
    #[error("the host is not a valid DNS name or IP address")]
    Invalid,
}

/// A path form some server resolves differently, refused on routes with `strict_paths`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unusual {
    #[error("a path segment ends in '.' or a space")]
    TrailingDotOrSpace,
    #[error("the path contains non-ASCII characters or escapes")]
    NonAscii,
    #[error("the path contains an encoded percent-escape")]
    DoubleEncoded,
}

/// A parsed and canonicalized request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The path routes match on: dot-segments resolved, empty segments dropped, unreserved
    /// escapes decoded, other escapes upper-cased, every segment's `;params` removed.
    pub path: String,
    /// The same path with the surviving segments' `;params` kept; `None` when there were none.
    pub with_params: Option<String>,
    /// The query as sent, without the `?`.
    pub query: Option<String>,
    /// The first form that some server resolves differently (strict routes refuse it).
    pub unusual: Option<Unusual>,
    /// The authority of an absolute-form target (`http://host/...`), as sent.
    pub authority: Option<String>,
}

impl Target {
    /// Whether any segment carried `;params`.
    pub fn has_params(&self) -> bool {
        self.with_params.is_some()
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Parse the request target's bytes (`RequestHeader::raw_path`).
///
/// Accepted: origin-form (`/path?query`) and absolute-form with an `http` or `https` scheme
/// (`http://host/path`), whose authority the caller compares with `Host`. The asterisk form
/// comes back as [`TargetError::Asterisk`] for the caller to answer.
pub fn parse_target(raw: &[u8]) -> Result<Target, TargetError> {
    if raw == b"*" {
        return Err(TargetError::Asterisk);
    }
    let (authority, rest) = split_absolute(raw)?;
    let (path, query) = match rest.iter().position(|&b| b == b'?') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (&rest[..], None),
    };
    let query = match query {
        Some(q) => Some(
            std::str::from_utf8(q)
                .map_err(|_| TargetError::ForbiddenCharacter)?
                .to_string(),
        ),
        None => None,
    };
    if query.as_deref().is_some_and(|q| q.contains('#')) {
        return Err(TargetError::ForbiddenCharacter);
    }
    if authority.is_none() && already_canonical(path) {
        // Nearly every request: nothing to decode, resolve or strip.
        let path = std::str::from_utf8(path).map_err(|_| TargetError::ForbiddenCharacter)?;
        return Ok(Target {
            path: path.to_string(),
            with_params: None,
            query,
            unusual: None,
            authority: None,
        });
    }
    let (decoded, mut unusual) = decode_path(path)?;
    let (path, with_params, trailing) = resolve_segments(&decoded)?;
    if let Some(t) = trailing {
        unusual.get_or_insert(t);
    }
    Ok(Target {
        path,
        with_params,
        query,
        unusual,
        authority: authority.map(str::to_string),
    })
}

/// Is this path its own canonical form: only characters that need no decoding (no `%`, no
/// `;`, nothing outside printable ASCII), no empty, `.` or `..` segment (a trailing `/` aside),
/// and no segment ending in `.`?
fn already_canonical(path: &[u8]) -> bool {
    if path.first() != Some(&b'/') {
        return false;
    }
    let mut prev = b'/';
    for &b in &path[1..] {
        let plain = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'='
                    | b':'
                    | b'@'
            );
        if b == b'/' {
            // `//`, and a segment that is `.` or `..` or ends in `.`.
            if prev == b'/' || prev == b'.' {
                return false;
            }
        } else if !plain {
            return false;
        }
        prev = b;
    }
    prev != b'.'
}

/// Split an absolute-form target into its authority and the rest (path and query, with a
/// `/` path when it had none); an origin-form target has no authority.
fn split_absolute(raw: &[u8]) -> Result<(Option<&str>, Cow<'_, [u8]>), TargetError> {
    if raw.first() == Some(&b'/') {
        return Ok((None, Cow::Borrowed(raw)));
    }
    let lower: Vec<u8> = raw.iter().take(8).map(u8::to_ascii_lowercase).collect();
    let after = if lower.starts_with(b"http://") {
        7
    } else if lower.starts_with(b"https://") {
        8
    } else {
        return Err(TargetError::NotOriginForm);
    };
    let rest = &raw[after..];
    let end = rest
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    let authority =
        std::str::from_utf8(&rest[..end]).map_err(|_| TargetError::AuthorityMismatch)?;
    if authority.is_empty() || authority.contains('@') {
        return Err(TargetError::AuthorityMismatch);
    }
    let tail = &rest[end..];
    let tail = match tail.first() {
        Some(b'/') => Cow::Borrowed(tail),
        Some(b'#') => return Err(TargetError::ForbiddenCharacter),
        _ => {
            let mut t = Vec::with_capacity(tail.len() + 1);
            t.push(b'/');
            t.extend_from_slice(tail);
            Cow::Owned(t)
        }
    };
    Ok((Some(authority), tail))
}

/// Decode unreserved escapes, upper-case the others, refuse the dangerous ones, and note the
/// first unusual form met.
fn decode_path(bytes: &[u8]) -> Result<(String, Option<Unusual>), TargetError> {
    let mut out = String::with_capacity(bytes.len());
    let mut unusual = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(TargetError::BadEscape);
                };
                let v = h * 16 + l;
                if matches!(v, b'/' | b'\\' | b';') || v < 0x20 || v == 0x7f {
                    return Err(TargetError::EncodedSeparator);
                }
                if v >= 0x80 {
                    unusual.get_or_insert(Unusual::NonAscii);
                }
                // `%25` followed by an escape: a server that decodes twice sees another path.
                if v == b'%'
                    && bytes.get(i + 3).copied().and_then(hex).is_some()
                    && bytes.get(i + 4).copied().and_then(hex).is_some()
                {
                    unusual.get_or_insert(Unusual::DoubleEncoded);
                }
                if is_unreserved(v) {
                    out.push(v as char);
                } else {
                    const HEX: &[u8; 16] = b"0123456789ABCDEF";
                    out.push('%');
                    out.push(HEX[(v >> 4) as usize] as char);
                    out.push(HEX[(v & 15) as usize] as char);
                }
                i += 3;
            }
            b'\\' | b'#' => return Err(TargetError::ForbiddenCharacter),
            0..=0x20 | 0x7f => return Err(TargetError::ForbiddenCharacter),
            0x80.. => {
                // Raw bytes outside ASCII are not allowed in a target (RFC 3986); kept as sent
                // when they are UTF-8, for the routes that allow them.
                let len = utf8_len(b);
                let ch = bytes
                    .get(i..i + len)
                    .and_then(|c| std::str::from_utf8(c).ok())
                    .ok_or(TargetError::ForbiddenCharacter)?;
                unusual.get_or_insert(Unusual::NonAscii);
                out.push_str(ch);
                i += len;
            }
            _ => {
                out.push(b as char);
                i += 1;
            }
        }
    }
    Ok((out, unusual))
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Resolve dot-segments and empty segments on the part of each segment before `;` (that part
/// is what a servlet container dispatches on: `..;/` is `..` to Tomcat). Returns the path
/// without parameters, the path with them (when any), and whether a segment ends in `.` or a
/// space.
#[allow(clippy::type_complexity)]
fn resolve_segments(
    decoded: &str,
) -> Result<(String, Option<String>, Option<Unusual>), TargetError> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    let mut any_params = false;
    let trailing_slash = decoded.len() > 1 && decoded.ends_with('/');
    let mut trailing = None;
    for seg in decoded.split('/') {
        let (base, params) = match seg.find(';') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg, ""),
        };
        any_params |= !params.is_empty();
        match base {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(TargetError::AboveRoot);
                }
            }
            _ => {
                if base.ends_with('.') || base.ends_with("%20") {
                    trailing = Some(Unusual::TrailingDotOrSpace);
                }
                out.push((base, params));
            }
        }
    }
    let join = |with: bool| {
        let mut p = String::with_capacity(decoded.len());
        for (base, params) in &out {
            p.push('/');
            p.push_str(base);
            if with {
                p.push_str(params);
            }
        }
        if p.is_empty() || (trailing_slash && !out.is_empty()) {
            p.push('/');
        }
        p
    };
    let with_params = any_params.then(|| join(true));
    Ok((join(false), with_params, trailing))
}

/// A canonical host: lower case, without a trailing dot or the scheme's default port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host<'a> {
    /// `name[:port]`, as it goes upstream in `Host`.
    pub full: Cow<'a, str>,
    name_len: usize,
}

impl Host<'_> {
    /// The host name (or bracketed IPv6 literal, without brackets) routes match on.
    pub fn name(&self) -> &str {
        let n = &self.full[..self.name_len];
        n.strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(n)
    }
}

/// Canonicalize a `Host` value (or an absolute-form authority). `tls` says which port is the
/// default one.
pub fn canonical_host(raw: &str, tls: bool) -> Result<Host<'_>, HostError> {
    let (name, port) = if raw.starts_with('[') {
        let end = raw.find(']').ok_or(HostError::Invalid)?;
        let literal = &raw[1..end];
        literal
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| HostError::Invalid)?;
        match &raw[end + 1..] {
            "" => (&raw[..=end], None),
            p => (
                &raw[..=end],
                Some(p.strip_prefix(':').ok_or(HostError::Invalid)?),
            ),
        }
    } else {
        match raw.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (raw, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => {
            if p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HostError::Invalid);
            }
            match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(HostError::Invalid),
                Ok(n) if n == if tls { 443 } else { 80 } => None,
                Ok(_) => Some(p),
            }
        }
    };
    let stripped = name.strip_suffix('.').unwrap_or(name);
    if !name.starts_with('[') && !valid_name(stripped) {
        return Err(HostError::Invalid);
    }
    let clean = stripped.len() == name.len()
        && !stripped.bytes().any(|b| b.is_ascii_uppercase())
        && port.map_or(name.len() == raw.len(), |p| {
            name.len() + 1 + p.len() == raw.len()
        });
    if clean {
        return Ok(Host {
            full: Cow::Borrowed(raw),
            name_len: name.len(),
        });
    }
    let mut full = stripped.to_ascii_lowercase();
    let name_len = full.len();
    if let Some(p) = port {
        full.push(':');
        full.push_str(p);
    }
    Ok(Host {
        full: Cow::Owned(full),
        name_len,
    })
}

/// A DNS name of letters, digits, `-` and `_` (labels of 1 to 63, not starting or ending with
/// `-`), or a dotted IPv4 address. A name whose last label is numeric must be an IPv4 address:
/// `127.1` and `0x7f.1` mean different hosts to different resolvers.
fn valid_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x") || last.starts_with("0X")
    {
        return name.parse::<std::net::Ipv4Addr>().is_ok();
    }
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(raw: &str) -> Result<String, TargetError> {
        parse_target(raw.as_bytes()).map(|t| t.path)
    }

    #[test]
    fn normalizes_dot_segments_slashes_and_params() {
        let cases = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a//b", "/a/b"),
            ("/static/../admin", "/admin"),
            ("/static/%2e%2e/admin", "/admin"),
            ("/static/%2E%2E/admin/", "/admin/"),
            ("/static/..;/admin", "/admin"),
            ("/static/%2e%2e;x/admin", "/admin"),
            ("/./a/./b/.", "/a/b"),
            ("//admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb", "/a%3Fb"),
            ("/admin;x/secret", "/admin/secret"),
            ("/admin;jsessionid=1/secret", "/admin/secret"),
            ("/;x/admin", "/admin"),
            ("/a?x=1", "/a"),
        ];
        for (input, want) in cases {
            assert_eq!(path(input).as_deref(), Ok(want), "{input}");
        }
        let t = parse_target(b"/admin;jsessionid=1/x;y?q=1").unwrap();
        assert_eq!(t.with_params.as_deref(), Some("/admin;jsessionid=1/x;y"));
        assert_eq!(t.query.as_deref(), Some("q=1"));
        assert!(parse_target(b"/a/b").unwrap().with_params.is_none());
    }

    #[test]
    fn the_fast_path_agrees_with_the_full_one() {
        for raw in [
            "/",
            "/a",
            "/a/",
            "/a/b.html",
            "/a.b/c",
            "/.well-known/x",
            "/a/.b",
            "/a/..b/c",
            "/a//b",
            "/a/./b",
            "/a/../b",
            "/a.",
            "/a./b",
            "/a/.",
            "/a/..",
            "/~u/x(1)*,=:@!$&'+",
            "/a-b_c",
            "//",
            "/.",
            "/..",
        ] {
            let fast = already_canonical(raw.as_bytes());
            let full = decode_path(raw.as_bytes())
                .and_then(|(d, u)| resolve_segments(&d).map(|(p, w, t)| (p, w, u.or(t))));
            if fast {
                assert_eq!(full, Ok((raw.to_string(), None, None)), "{raw}");
            }
        }
        assert!(already_canonical(b"/a/b.html") && already_canonical(b"/a/"));
        assert!(
            !already_canonical(b"/a/./b")
                && !already_canonical(b"/a.")
                && !already_canonical(b"//")
        );
    }

    #[test]
    fn refuses_targets_without_one_meaning() {
        for bad in [
            "admin/secret",
            "%2Fadmin/secret",
            "a:/admin/secret",
            "/a%2fb",
            "/a%2F..",
            "/..%2f",
            "/a%5cb",
            "/a%00",
            "/a%09b",
            "/a%3bb",
            "/a\\b",
            "/a#b",
            "/%zz",
            "/%2",
            "/..",
            "/a/../..",
            "x",
            "",
            "http:/x",
            "ftp://h/x",
            "http://user@h/x",
            "http:///x",
        ] {
            assert!(parse_target(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(parse_target(b"*"), Err(TargetError::Asterisk));
        assert!(parse_target(b"/a\xff").is_err());
    }

    #[test]
    fn marks_forms_some_server_reads_differently() {
        for (raw, want) in [
            ("/admin./x", Unusual::TrailingDotOrSpace),
            ("/admin%20/x", Unusual::TrailingDotOrSpace),
            ("/admin.../x", Unusual::TrailingDotOrSpace),
            ("/adm%C4%B1n/x", Unusual::NonAscii),
            ("/%C0%AFadmin", Unusual::NonAscii),
            ("/caf\u{e9}", Unusual::NonAscii),
            ("/%252e%252e/admin", Unusual::DoubleEncoded),
        ] {
            assert_eq!(
                parse_target(raw.as_bytes()).unwrap().unusual,
                Some(want),
                "{raw}"
            );
        }
        assert_eq!(parse_target(b"/a.b/c.html").unwrap().unusual, None);
        assert_eq!(parse_target(b"/a%25").unwrap().unusual, None);
    }

    #[test]
    fn absolute_form_keeps_its_authority() {
        let t = parse_target(b"http://Intranet.test./admin?x").unwrap();
        assert_eq!(t.authority.as_deref(), Some("Intranet.test."));
        assert_eq!(t.path, "/admin");
        let t = parse_target(b"HTTPS://h:8443?q").unwrap();
        assert_eq!((t.path.as_str(), t.query.as_deref()), ("/", Some("q")));
    }

    #[test]
    fn hosts_are_canonical() {
        fn ok(raw: &str, tls: bool) -> Host<'_> {
            canonical_host(raw, tls).unwrap()
        }
        assert_eq!(ok("intranet.test", false).full, "intranet.test");
        assert!(matches!(ok("intranet.test", false).full, Cow::Borrowed(_)));
        assert_eq!(ok("Intranet.Test.", false).full, "intranet.test");
        assert_eq!(ok("intranet.test.:8080", false).full, "intranet.test:8080");
        assert_eq!(ok("intranet.test:80", false).full, "intranet.test");
        assert_eq!(ok("intranet.test:443", true).full, "intranet.test");
        assert_eq!(ok("intranet.test:443", false).full, "intranet.test:443");
        assert_eq!(ok("intranet.test:", false).name(), "intranet.test");
        assert_eq!(ok("127.0.0.1:8080", false).name(), "127.0.0.1");
        assert_eq!(ok("[::1]:8080", false).name(), "::1");
        assert_eq!(ok("[::1]", false).full, "[::1]");
        assert_eq!(ok("my_host.local", false).name(), "my_host.local");
        for bad in [
            "",
            ".",
            "intranet.test..",
            "intranet..test",
            "intranet.test/x",
            "intranet.test\0",
            "intranet test",
            "h:x",
            "h:0",
            "h:65536",
            "h:1:2",
            "127.1",
            "0x7f.0.0.1",
            "1.2.3.4.5",
            "-a.test",
            "[::1",
            "[zz]",
            "[::1]x",
            "caf\u{e9}.test",
        ] {
            assert!(canonical_host(bad, false).is_err(), "{bad:?}");
        }
    }
}
