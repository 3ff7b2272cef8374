//! The request target: split into path and query, its path decoded and resolved to the one
//! form routes match on, or refused.

use super::{TargetError, Unusual};
use std::borrow::Cow;

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
pub(super) fn already_canonical(path: &[u8]) -> bool {
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
pub(super) fn decode_path(bytes: &[u8]) -> Result<(String, Option<Unusual>), TargetError> {
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
pub(super) fn resolve_segments(
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
