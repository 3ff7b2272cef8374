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

mod answers;
mod check;
mod connections;
mod read;
#[cfg(test)]
mod tests;

pub use answers::LocalAnswers;
pub use check::{check_head, Verdict};
pub use connections::{raise_open_file_limit, ConnectionCap, ConnectionSlot};
pub use read::{read_head, refuse, Head};

use std::time::Duration;

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
