//! Whether a request head is one Pingora would take: the same parser and checks, applied
//! before Pingora buffers it.

use super::{HeadLimits, Refusal};
use pingora::http::RequestHeader;
use std::mem::MaybeUninit;

/// Pingora's own header count limit: a head within ours always parses there too.
const PINGORA_MAX_HEADERS: usize = 256;

/// What the bytes read so far make of a request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not complete yet, and within the limits.
    Partial,
    /// Complete: Pingora will parse and accept it.
    Complete,
    Refuse(Refusal),
}

/// Check the head at the start of `buf` as Pingora's HTTP/1 reader would (same parser, same
/// settings, same checks after parsing), within `limits`.
pub fn check_head(buf: &[u8], limits: &HeadLimits) -> Verdict {
    let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); PINGORA_MAX_HEADERS];
    let room = limits.max_headers.min(PINGORA_MAX_HEADERS);
    let mut req = httparse::Request::new(&mut []);
    let verdict = match req.parse_with_uninit_headers(buf, &mut headers[..room]) {
        Ok(httparse::Status::Complete(n)) if n > limits.max_bytes => {
            Verdict::Refuse(Refusal::TooLarge)
        }
        Ok(httparse::Status::Complete(_)) => after_parse(&req),
        Ok(httparse::Status::Partial) => Verdict::Partial,
        Err(httparse::Error::TooManyHeaders) => Verdict::Refuse(Refusal::TooLarge),
        // Pingora percent-encodes what httparse refuses in the target and parses again.
        Err(httparse::Error::Token | httparse::Error::Version) => match escape_target(buf) {
            Some(escaped) => check_escaped(&escaped, limits),
            None => Verdict::Refuse(Refusal::BadRequest),
        },
        Err(_) => Verdict::Refuse(Refusal::BadRequest),
    };
    if verdict == Verdict::Partial && buf.len() >= limits.max_bytes {
        return Verdict::Refuse(Refusal::TooLarge);
    }
    verdict
}

/// The second parse of a head whose target was percent-encoded: a second failure is final.
fn check_escaped(buf: &[u8], limits: &HeadLimits) -> Verdict {
    let mut headers = [MaybeUninit::<httparse::Header<'_>>::uninit(); PINGORA_MAX_HEADERS];
    let room = limits.max_headers.min(PINGORA_MAX_HEADERS);
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, &mut headers[..room]) {
        Ok(httparse::Status::Complete(n)) if n > limits.max_bytes => {
            Verdict::Refuse(Refusal::TooLarge)
        }
        Ok(httparse::Status::Complete(_)) => after_parse(&req),
        Ok(httparse::Status::Partial) => Verdict::Partial,
        Err(httparse::Error::TooManyHeaders) => Verdict::Refuse(Refusal::TooLarge),
        Err(_) => Verdict::Refuse(Refusal::BadRequest),
    }
}

/// What httparse refuses in a request target and Pingora percent-encodes.
const TARGET_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'<')
    .add(b'>')
    .add(b'"');

/// Pingora's second chance for a request line httparse refuses: a first line of the form
/// `^\w+ (?P<uri>.+) HTTP/\d` with its target percent-encoded. `None` when the line has no such
/// form or the encoding changes nothing (Pingora answers 400 then).
fn escape_target(buf: &[u8]) -> Option<Vec<u8>> {
    let line = buf.split(|&b| b == b'\n').next()?;
    let method = line
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))?;
    if method == 0 || line[method] != b' ' {
        return None;
    }
    let start = method + 1;
    // `.+` matches characters, not stray bytes, so the target ends before any invalid UTF-8;
    // being greedy, it runs to the last ` HTTP/<digit>` before that.
    let valid = match std::str::from_utf8(&line[start..]) {
        Ok(s) => s.len(),
        Err(e) => e.valid_up_to(),
    };
    let end = (start + 1..=start + valid).rev().find(|&i| {
        line.get(i..i + 7)
            .is_some_and(|s| s.starts_with(b" HTTP/") && s[6].is_ascii_digit())
    })?;
    let target = &line[start..end];
    let escaped: String = percent_encoding::percent_encode(target, TARGET_ESCAPES).collect();
    if escaped.len() == target.len() {
        return None;
    }
    let mut out = Vec::with_capacity(buf.len() + escaped.len() - target.len());
    out.extend_from_slice(&buf[..start]);
    out.extend_from_slice(escaped.as_bytes());
    out.extend_from_slice(&buf[end..]);
    Some(out)
}

/// Pingora's checks once a head has parsed (`validate_request`): CONNECT (which the proxy
/// refuses), one `Host` without userinfo, unambiguous `Content-Length` and
/// `Transfer-Encoding`, and a request target it can store.
fn after_parse(req: &httparse::Request<'_, '_>) -> Verdict {
    let bad = Verdict::Refuse(Refusal::BadRequest);
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return bad;
    };
    if method == "CONNECT" {
        return Verdict::Refuse(Refusal::Connect);
    }
    let mut hosts = 0usize;
    let mut host: Option<&[u8]> = None;
    let mut transfer_encoding: Option<&[u8]> = None;
    let mut length = ContentLength::Absent;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        // By length first: most headers are none of these three.
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                hosts += 1;
                host = Some(h.value);
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => length = length.and(h.value),
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                transfer_encoding = Some(h.value)
            }
            _ => {}
        }
    }
    if hosts > 1 || host.is_some_and(|h| h.contains(&b'@')) {
        return bad;
    }
    match transfer_encoding {
        // HTTP/1.0 has no chunked framing, and a body whose last coding is not chunked has
        // no end a proxy can find.
        Some(te) if req.version == Some(0) || !last_coding_is_chunked(te) => return bad,
        Some(_) => {}
        None if length == ContentLength::Invalid => return bad,
        None => {}
    }
    // A fragment is never part of a request (RFC 9112 section 3.2): the `http` crate would
    // drop it silently, and the target the gateway authorizes would not be the one sent.
    if !plain_origin_form(target.as_bytes())
        && (target.contains('#') || !pingora_takes_target(method, target, host))
    {
        return bad;
    }
    Verdict::Complete
}

/// `Content-Length` as Pingora reconciles it: every value (comma lists included) the same
/// run of digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContentLength {
    Absent,
    Value(u64),
    Invalid,
}

impl ContentLength {
    fn and(self, value: &[u8]) -> Self {
        // Only visible ASCII (and tab) can be a length.
        if !value
            .iter()
            .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        {
            return ContentLength::Invalid;
        }
        let mut acc = self;
        for part in value.split(|&b| b == b',') {
            let n = match digits(part.trim_ascii()) {
                Some(n) => n,
                None => return ContentLength::Invalid,
            };
            acc = match acc {
                ContentLength::Absent => ContentLength::Value(n),
                ContentLength::Value(prev) if prev == n => acc,
                _ => return ContentLength::Invalid,
            };
        }
        acc
    }
}

/// Decimal digits only (no sign), no overflow.
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        if !b.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Whether the last coding of the last `Transfer-Encoding` line is `chunked`.
fn last_coding_is_chunked(value: &[u8]) -> bool {
    let last = match value.iter().rposition(|&b| b == b',') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    last.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// An origin-form target made of the bytes the `http` crate keeps as they are (its path and
/// query tables): what browsers and clients send, and what Pingora always stores. Anything
/// else is checked by Pingora's own code.
fn plain_origin_form(target: &[u8]) -> bool {
    // The longest target `http` takes.
    const MAX_TARGET: usize = u16::MAX as usize - 1;
    if target.first() != Some(&b'/') || target.len() > MAX_TARGET {
        return false;
    }
    let mut query = false;
    target.iter().all(|&b| match b {
        b'!' | b'$'..=b';' | b'=' | b'@'..=b'_' | b'a'..=b'z' | b'{' | b'|' | b'}' | b'~' => true,
        b'?' => {
            query = true;
            true
        }
        b'"' => !query,
        b'`' => query,
        _ => false,
    })
}

/// The rare target that is not plain origin form (absolute form, `*`, non-ASCII bytes):
/// whether Pingora's request header accepts it and its authority agrees with `Host`.
fn pingora_takes_target(method: &str, target: &str, host: Option<&[u8]>) -> bool {
    let Ok(mut req) = RequestHeader::build(method, target.as_bytes(), Some(1)) else {
        return false;
    };
    if let Some(h) = host {
        if let Ok(v) = http::HeaderValue::from_bytes(h) {
            let _ = req.append_header(http::header::HOST, v);
        }
    }
    pingora::protocols::http::authority::validate_request_authority(&req).is_ok()
}
