//! What a client may hold before Pingora sees its request: connections at once, and the
//! request head's bytes, header count and time.
//!
//! Pingora buffers up to about 1 MiB of request head, with no deadline, before the gateway's
//! `request_filter` can apply `limits.max_header_bytes`: 150 clients sending 1 MB heads cost
//! the gateway close to 200 MB, and a client sending one header line every 20 s keeps its
//! connection for ever. Here (called from `idle.rs`, before Pingora) the head is read into a
//! buffer that stops at `limits.max_header_bytes` and `limits.max_headers`, under
//! `limits.header_timeout` counted from its first byte, and checked with the parser Pingora
//! uses. The buffer then becomes Pingora's own parse buffer (`set_pipelined_prefix`), so no
//! byte is read or allocated twice.
//!
//! Heads that Pingora would refuse with its bare answers (`Server: Pingora`, none of the
//! security headers) are answered here with the configured security headers instead: 400 for
//! what does not parse or frames ambiguously, 405 for CONNECT, 408 past the deadline, 431 over
//! the limits. The connection then closes.
//!
//! Connections over `limits.max_connections`, or over what the open-file limit leaves room
//! for (see [`ConnectionCap`]), are closed as soon as they are accepted, as nginx does when it
//! runs out of `worker_connections`, with at most one warning a second that counts them.

use crate::gateway::security_headers::{self, Prepared};
use bytes::{BufMut, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::Stream;
use pingora::time::fast_timeout::fast_timeout;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Pingora's own header count limit: a head within ours always parses there too.
const PINGORA_MAX_HEADERS: usize = 256;
/// The first size of a head buffer: Pingora's, which this buffer replaces.
const HEAD_BUFFER: usize = 4096;
/// How long a refusal may take to write.
const ANSWER_TIME: Duration = Duration::from_secs(2);
/// After a refusal, what the client still sends is read and dropped for this long (or this
/// many bytes) before the socket closes: closing with unread bytes makes the kernel send a
/// reset, which can destroy the answer before the client has read it (nginx's lingering close).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 << 20;

/// `limits.max_header_bytes`, `limits.max_headers` and `limits.header_timeout`.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// The request line and header lines together, in bytes.
    pub max_bytes: usize,
    pub max_headers: usize,
    /// From the head's first byte to its end.
    pub timeout: Duration,
}

/// Why a request head is answered here, and its connection closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: not HTTP/1 as Pingora parses it, or framing a proxy must not guess at.
    BadRequest,
    /// 405: CONNECT, which the gateway does not tunnel.
    Connect,
    /// 408: the head was not complete within `limits.header_timeout`.
    Timeout,
    /// 431: over `limits.max_header_bytes` or `limits.max_headers`.
    TooLarge,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadRequest => 400,
            Refusal::Connect => 405,
            Refusal::Timeout => 408,
            Refusal::TooLarge => 431,
        }
    }
}

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

/// How reading a request head ended.
pub enum Head {
    /// A complete head, and whatever followed it, for Pingora's parser.
    Ready(BytesMut),
    /// To be answered with [`LocalAnswers::get`]; the buffer is reused to drain the socket.
    Refused(Refusal, BytesMut),
    /// The client closed or failed mid-head: close without an answer.
    Gone,
}

/// Read the rest of a request head whose first byte is `first`, within `limits`. The deadline
/// runs on Pingora's coarse timer, which costs nothing when the head is already there.
pub async fn read_head(stream: &mut Stream, first: u8, limits: &HeadLimits) -> Head {
    let mut buf = BytesMut::with_capacity(HEAD_BUFFER);
    buf.put_u8(first);
    match fast_timeout(limits.timeout, fill(stream, &mut buf, limits)).await {
        Ok(Verdict::Complete) => Head::Ready(buf),
        Ok(Verdict::Refuse(why)) => Head::Refused(why, buf),
        Ok(Verdict::Partial) => Head::Gone,
        Err(_) => Head::Refused(Refusal::Timeout, buf),
    }
}

/// Read until the head is complete or refused. `Partial`: the client went away.
async fn fill(stream: &mut Stream, buf: &mut BytesMut, limits: &HeadLimits) -> Verdict {
    let mut fresh = 0;
    loop {
        // Parse again only when a line has ended: a client trickling bytes costs one parse
        // per line, not one per read.
        if buf[fresh..].contains(&b'\n') {
            match check_head(buf, limits) {
                Verdict::Partial => {}
                done => return done,
            }
        } else if buf.len() >= limits.max_bytes {
            return Verdict::Refuse(Refusal::TooLarge);
        }
        fresh = buf.len();
        if buf.len() == buf.capacity() {
            // Doubling; the check above stops it at the limit.
            buf.reserve(buf.len());
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Verdict::Partial,
            Ok(_) => {}
        }
    }
}

/// Write `answer`, end the write side, and drain what the client still sends for a moment
/// (see [`LINGER_TIME`]) before the caller drops the connection.
pub async fn refuse(stream: &mut Stream, answer: &[u8], mut buf: BytesMut) {
    let sent = fast_timeout(ANSWER_TIME, async {
        stream.write_all(answer).await?;
        stream.flush().await?;
        AsyncWriteExt::shutdown(stream).await
    })
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return;
    }
    let drain = async {
        let mut total = 0;
        while total <= LINGER_BYTES {
            buf.clear();
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    let _ = fast_timeout(LINGER_TIME, drain).await;
}

/// The refusals as bytes on the wire, built once: JSON bodies of the documented error shape, the
/// configured security headers, `Connection: close`, and no `Server`.
pub struct LocalAnswers {
    bad_request: Box<[u8]>,
    connect: Box<[u8]>,
    timeout: Box<[u8]>,
    too_large: Box<[u8]>,
}

impl LocalAnswers {
    pub fn new(security_headers: &Prepared) -> Self {
        let sh = security_headers;
        LocalAnswers {
            bad_request: answer(400, "bad_request", "malformed request", None, sh),
            connect: answer(
                405,
                "method_not_allowed",
                "CONNECT is not supported",
                Some(("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")),
                sh,
            ),
            timeout: answer(
                408,
                "request_timeout",
                "request headers took too long",
                None,
                sh,
            ),
            // The same body as the 431 of `request_filter`.
            too_large: answer(
                431,
                "headers_too_large",
                "request headers are too large",
                None,
                sh,
            ),
        }
    }

    pub fn get(&self, why: Refusal) -> &[u8] {
        match why {
            Refusal::BadRequest => &self.bad_request,
            Refusal::Connect => &self.connect,
            Refusal::Timeout => &self.timeout,
            Refusal::TooLarge => &self.too_large,
        }
    }
}

fn answer(
    status: u16,
    code: &str,
    message: &str,
    extra: Option<(&'static str, &'static str)>,
    security: &Prepared,
) -> Box<[u8]> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let reason = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
    if let Ok(mut h) = ResponseHeader::build(status, Some(8)) {
        // Fixed names and values: these inserts cannot fail.
        let _ = h.insert_header(http::header::CONTENT_TYPE, "application/json");
        let _ = h.insert_header(http::header::CONTENT_LENGTH, body.len().to_string());
        let _ = h.insert_header(http::header::CONNECTION, "close");
        if let Some((name, value)) = extra {
            let _ = h.insert_header(name, value);
        }
        security_headers::apply(&mut h, security);
        h.header_to_h1_wire(&mut out);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out.into_boxed_slice()
}

/// Client connections open at once, over all listeners: `limits.max_connections`, and never
/// more than the open-file limit allows with a descriptor to spare for each one's upstream
/// connection. So accept() does not fail for want of descriptors (Pingora's accept loop logs
/// an error and stops accepting for a second each time), and the clients already in are
/// still proxied. The open-file limit is read again once a second, so a limit changed at run
/// time (`prlimit`) takes effect.
pub struct ConnectionCap {
    configured: usize,
    open: AtomicUsize,
    limit: AtomicUsize,
    /// The open-file limit the current `limit` was worked out for.
    files: AtomicU64,
    /// Seconds since `epoch` when the open-file limit was last read.
    checked_at: AtomicU64,
    /// Closed since the last warning.
    dropped: AtomicU64,
    /// Seconds since `epoch`, plus one, of the last warning (0: none yet).
    warned_at: AtomicU64,
    epoch: Instant,
}

/// A connection within the cap, released when dropped.
pub struct ConnectionSlot(Arc<ConnectionCap>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

impl ConnectionCap {
    pub fn new(max_connections: usize) -> Arc<Self> {
        Arc::new(ConnectionCap {
            configured: max_connections,
            open: AtomicUsize::new(0),
            limit: AtomicUsize::new(max_connections),
            files: AtomicU64::new(0),
            // Worked out at the first connection, once every service has opened its files.
            checked_at: AtomicU64::new(u64::MAX),
            dropped: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// A slot for a new connection, or `None`: over the cap, close it at once.
    pub fn admit(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let now = self.epoch.elapsed().as_secs();
        if self.checked_at.load(Relaxed) != now && self.checked_at.swap(now, Relaxed) != now {
            self.follow_open_file_limit();
        }
        let limit = self.limit.load(Relaxed);
        if self.open.fetch_add(1, Relaxed) < limit {
            return Some(ConnectionSlot(Arc::clone(self)));
        }
        self.open.fetch_sub(1, Relaxed);
        self.dropped.fetch_add(1, Relaxed);
        self.warn_at_most_once_a_second(now, limit);
        None
    }

    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// When the open-file limit has changed: of the descriptors it allows beyond those open
    /// for something else than clients (runtimes, listeners, files), half for clients and
    /// half for their upstream connections.
    fn follow_open_file_limit(&self) {
        let Some(files) = open_file_limit() else {
            return;
        };
        if self.files.swap(files, Relaxed) == files {
            return;
        }
        let in_use = open_descriptors().unwrap_or(0);
        let others = in_use.saturating_sub(self.open() as u64);
        let budget = usize::try_from(files.saturating_sub(others) / 2)
            .unwrap_or(usize::MAX)
            .max(1);
        let limit = self.configured.min(budget);
        self.limit.store(limit, Relaxed);
        if limit < self.configured / 2 {
            tracing::warn!(
                target: "portcullis::limits",
                max_connections = self.configured,
                open_files = files,
                limit,
                "the open-file limit (ulimit -n) allows far fewer client connections than limits.max_connections"
            );
        }
    }

    fn warn_at_most_once_a_second(&self, now: u64, limit: usize) {
        let stamp = now + 1;
        let last = self.warned_at.load(Relaxed);
        if last == stamp
            || self
                .warned_at
                .compare_exchange(last, stamp, Relaxed, Relaxed)
                .is_err()
        {
            return;
        }
        let dropped = self.dropped.swap(0, Relaxed);
        let bound = if limit < self.configured {
            "open-file limit"
        } else {
            "limits.max_connections"
        };
        tracing::warn!(
            target: "portcullis::limits",
            dropped,
            limit,
            bound,
            "client connection limit reached: new connections are closed at once"
        );
    }
}

fn open_file_limit() -> Option<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0
        || rl.rlim_cur == libc::RLIM_INFINITY
    {
        return None;
    }
    Some(rl.rlim_cur)
}

/// How many descriptors the process has open (Linux).
fn open_descriptors() -> Option<u64> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(dir.count() as u64)
}

/// Raise the soft open-file limit to the hard one, as nginx's `worker_rlimit_nofile` and Go's
/// runtime do: the usual soft default (1024) is far below `limits.max_connections`, while the
/// hard limit rarely is. Nothing here uses `select()`, the reason for the low default.
pub fn raise_open_file_limit() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write only the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0
            || rl.rlim_cur >= rl.rlim_max
            || rl.rlim_max == libc::RLIM_INFINITY
        {
            return;
        }
        rl.rlim_cur = rl.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
            tracing::debug!(target: "portcullis::limits", "could not raise the open-file limit");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_bytes: 1024,
        max_headers: 8,
        timeout: Duration::from_secs(10),
    };

    fn verdict(head: &str) -> Verdict {
        check_head(head.as_bytes(), &LIMITS)
    }

    const BAD: Verdict = Verdict::Refuse(Refusal::BadRequest);

    #[test]
    fn complete_partial_and_unparseable_heads() {
        assert_eq!(
            verdict("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            Verdict::Complete
        );
        assert_eq!(verdict("GET / HTTP/1.1\nHost: a\n\n"), Verdict::Complete);
        assert_eq!(verdict("GET / HTTP/1.1\r\nHost: a\r\n"), Verdict::Partial);
        assert_eq!(verdict("G"), Verdict::Partial);
        assert_eq!(verdict("GET / HTTP/1.1\r\nBad Header\r\n\r\n"), BAD);
        assert_eq!(verdict("HELLO\r\n\r\n"), BAD);
        let tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n";
        assert_eq!(check_head(tls_hello, &LIMITS), BAD);
        assert_eq!(verdict("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), BAD);
    }

    #[test]
    fn targets_pingora_escapes_still_pass() {
        assert_eq!(
            verdict("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"),
            Verdict::Complete
        );
        assert_eq!(
            verdict("GET /x\x01y HTTP/1.1\r\nHost: a\r\n\r\n"),
            Verdict::Complete
        );
        // httparse takes `<`, the `http` crate does not: Pingora refuses it.
        assert_eq!(verdict("GET /x<y HTTP/1.1\r\nHost: a\r\n\r\n"), BAD);
        assert_eq!(
            verdict("GET /a b HTTP/1.1\r\nHost: a\r\n"),
            Verdict::Partial
        );
        // Nothing to escape: refused.
        assert_eq!(verdict("GET / HTTP/9\r\n\r\n"), BAD);
    }

    #[test]
    fn connect_is_refused() {
        assert_eq!(
            verdict("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
            Verdict::Refuse(Refusal::Connect)
        );
    }

    #[test]
    fn limits_apply_before_the_head_is_complete() {
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..9 {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        assert_eq!(verdict(&many), Verdict::Refuse(Refusal::TooLarge));
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(1100));
        assert_eq!(verdict(&long), Verdict::Refuse(Refusal::TooLarge));
        let complete = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(1020));
        assert_eq!(verdict(&complete), Verdict::Refuse(Refusal::TooLarge));
        // A body after a head within the limit does not count.
        let body = format!(
            "POST / HTTP/1.1\r\nContent-Length: 2000\r\n\r\n{}",
            "b".repeat(2000)
        );
        assert_eq!(verdict(&body), Verdict::Complete);
    }

    #[test]
    fn framing_and_host_as_pingora_checks_them() {
        let with = |h: &str| verdict(&format!("POST / HTTP/1.1\r\nHost: a\r\n{h}\r\n\r\n"));
        assert_eq!(
            with("Content-Length: 3\r\nContent-Length: 3"),
            Verdict::Complete
        );
        assert_eq!(with("Content-Length: 3, 3"), Verdict::Complete);
        assert_eq!(with("Content-Length: 3\r\nContent-Length: 4"), BAD);
        assert_eq!(with("Content-Length: +3"), BAD);
        assert_eq!(with("Content-Length: 99999999999999999999999"), BAD);
        assert_eq!(with("Transfer-Encoding: gzip, chunked"), Verdict::Complete);
        assert_eq!(with("Transfer-Encoding: chunked, gzip"), BAD);
        // Transfer-Encoding wins over a bad Content-Length.
        assert_eq!(
            with("Transfer-Encoding: chunked\r\nContent-Length: x"),
            Verdict::Complete
        );
        assert_eq!(
            verdict("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            BAD
        );
        assert_eq!(verdict("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), BAD);
        assert_eq!(verdict("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"), BAD);
        assert_eq!(
            verdict("GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n"),
            Verdict::Complete
        );
        assert_eq!(verdict("GET http://a/x HTTP/1.1\r\nHost: b\r\n\r\n"), BAD);
        assert_eq!(verdict("GET http://u@a/x HTTP/1.1\r\n\r\n"), BAD);
    }

    /// Our verdict agrees with Pingora's own reader on every head it is given.
    #[tokio::test]
    async fn verdicts_agree_with_pingora() {
        let heads = [
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /a\x01b HTTP/1.1\r\n\r\n",
            "GET /x\"<y> HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /p?q=\"` HTTP/1.1\r\n\r\n",
            "GET /p`?q HTTP/1.1\r\n\r\n",
            "GET /caf\u{e9}?q={x}|^`\\ HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header\r\n\r\n",
            "HELLO\r\n\r\n",
            "GET / HTTP/9\r\n\r\n",
            "GET http://a/x HTTP/1.1\r\nHost: b\r\n\r\n",
            "GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET * HTTP/1.1\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET a/b HTTP/1.1\r\n\r\n",
            "GET //a:b@c/ HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1,1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: x, chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n",
            "GET / HTTP/1.1\r\n X: folded\r\n\r\n",
        ];
        let limits = HeadLimits {
            max_bytes: 1 << 20,
            max_headers: 256,
            timeout: Duration::from_secs(1),
        };
        for head in heads {
            let ours = check_head(head.as_bytes(), &limits);
            let stream: Stream = Box::new(std::io::Cursor::new(head.as_bytes().to_vec()));
            let mut session = pingora::protocols::http::ServerSession::new_http1(stream);
            let theirs = session.read_request().await;
            assert_eq!(
                ours == Verdict::Complete,
                matches!(theirs, Ok(true)),
                "{head:?}: ours {ours:?}, Pingora {theirs:?}"
            );
        }
    }

    /// The same on heads mutated at random from a few templates (deterministic seed).
    #[tokio::test]
    async fn mutated_verdicts_agree_with_pingora() {
        let templates: [&[u8]; 6] = [
            b"GET /a?b=c HTTP/1.1\r\nHost: h\r\nX: y\r\n\r\n",
            b"POST /p HTTP/1.0\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET http://h/x HTTP/1.1\r\nHost: h\r\n\r\n",
            b"PUT /x HTTP/1.1\nContent-Length: 1, 1\n\n",
            b"OPTIONS * HTTP/1.1\r\nHost: u@h:80\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"GET https://h:8443/p?q#f HTTP/1.1\r\nHost: h:8443\r\n\r\n",
        ];
        let alphabet = b" \t\r\n:/?#@,\"<>{}|\\^`%*0129aZ-_.\x00\x01\x7f\x80\xc3\xa9\xff";
        let limits = HeadLimits {
            max_bytes: 1 << 20,
            max_headers: 256,
            timeout: Duration::from_secs(1),
        };
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..50_000 {
            let mut head = templates[next(templates.len())].to_vec();
            for _ in 0..1 + next(3) {
                let at = next(head.len());
                match next(3) {
                    0 => head.insert(at, alphabet[next(alphabet.len())]),
                    1 => head[at] = alphabet[next(alphabet.len())],
                    _ => {
                        head.remove(at);
                    }
                }
            }
            let ours = check_head(&head, &limits);
            let stream: Stream = Box::new(std::io::Cursor::new(head.clone()));
            let mut session = pingora::protocols::http::ServerSession::new_http1(stream);
            let theirs = session.read_request().await;
            // A fragment in the target is refused here on purpose; Pingora drops it silently.
            let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
            // The target as Pingora's fallback reads it: between the first space and the last
            // " HTTP/".
            let start = line.iter().position(|&b| b == b' ');
            let end = line.windows(6).rposition(|w| w == b" HTTP/");
            let fragment = match (start, end) {
                (Some(s), Some(e)) if s < e => line[s..e].contains(&b'#'),
                _ => false,
            };
            assert_eq!(
                ours == Verdict::Complete,
                matches!(theirs, Ok(true)) && !fragment,
                "{:?}: ours {ours:?}, Pingora {theirs:?}",
                String::from_utf8_lossy(&head)
            );
        }
    }

    /// A head read here goes to Pingora as its parse buffer and reads back unchanged, body
    /// bytes included; the connection's later bytes follow.
    #[tokio::test]
    async fn handed_over_head_reads_back_in_pingora() {
        let wire = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello".to_vec();
        let mut stream: Stream = Box::new(std::io::Cursor::new(wire[1..].to_vec()));
        let head = match read_head(&mut stream, wire[0], &LIMITS).await {
            Head::Ready(h) => h,
            _ => panic!("head not read"),
        };
        let mut session = pingora::protocols::http::ServerSession::new_http1(stream);
        session.set_pipelined_prefix(head);
        assert!(matches!(session.read_request().await, Ok(true)));
        assert_eq!(session.req_header().uri.path(), "/p");
        let body = session.read_request_body().await.unwrap().unwrap();
        assert_eq!(&body[..], b"hello");
    }

    #[tokio::test]
    async fn refusals_and_a_client_that_leaves() {
        let mut big: Stream = Box::new(std::io::Cursor::new(vec![b'a'; 4000]));
        assert!(matches!(
            read_head(&mut big, b'G', &LIMITS).await,
            Head::Refused(Refusal::TooLarge, _)
        ));
        let mut gone: Stream = Box::new(std::io::Cursor::new(b"ET / HTTP/1.1\r\n".to_vec()));
        assert!(matches!(
            read_head(&mut gone, b'G', &LIMITS).await,
            Head::Gone
        ));
    }

    #[test]
    fn answers_carry_security_headers_and_no_server() {
        let cfg = crate::config::SecurityHeaders {
            mode: crate::config::HeaderMode::Set,
            headers: vec![(
                http::HeaderName::from_static("x-content-type-options"),
                http::HeaderValue::from_static("nosniff"),
            )],
            wire_names: vec!["X-Content-Type-Options".into()],
            remove: vec![http::header::SERVER],
        };
        let answers = LocalAnswers::new(&Prepared::new(&cfg));
        for why in [
            Refusal::BadRequest,
            Refusal::Connect,
            Refusal::Timeout,
            Refusal::TooLarge,
        ] {
            let text = String::from_utf8(answers.get(why).to_vec()).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(
                head.starts_with(&format!("HTTP/1.1 {} ", why.status())),
                "{head}"
            );
            assert!(
                head.contains("\r\nX-Content-Type-Options: nosniff"),
                "{head}"
            );
            assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
            assert!(!head.to_ascii_lowercase().contains("server:"), "{head}");
            assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
        }
    }

    #[test]
    fn connections_over_the_cap_are_refused_until_one_closes() {
        let cap = ConnectionCap::new(2);
        let a = cap.admit();
        let b = cap.admit();
        assert!(a.is_some() && b.is_some());
        assert!(cap.admit().is_none());
        assert_eq!(cap.open(), 2);
        drop(a);
        assert!(cap.admit().is_some());
        assert_eq!(
            cap.open(),
            1,
            "the slot of a closed connection is free again"
        );
    }
}
