//! `portcullis probe`: a tiny HTTP/1.1 GET for container health checks, so images need no
//! curl. Only plain `http://` URLs (the probe talks to a local listener).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Why no HTTP status came back, printed after the URL that was probed.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {failure}")]
pub struct ProbeError {
    pub url: String,
    pub failure: ProbeFailure,
}

/// The step of the GET that failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFailure {
    #[error("only http:// URLs are supported")]
    NotHttpUrl,
    #[error("cannot resolve {authority}: {source}")]
    Resolve {
        authority: String,
        source: std::io::Error,
    },
    #[error("no address for {0}")]
    NoAddress(String),
    #[error("cannot connect: {0}")]
    Connect(#[source] std::io::Error),
    #[error("cannot send: {0}")]
    Send(#[source] std::io::Error),
    #[error("no answer: {0}")]
    NoAnswer(#[source] std::io::Error),
    #[error("not an HTTP answer")]
    NotHttpAnswer,
}

/// GET `url`; `Ok(status)` when an HTTP answer came back.
pub fn probe(url: &str, timeout: Duration) -> Result<u16, ProbeError> {
    let fail = |failure| ProbeError {
        url: url.to_string(),
        failure,
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| fail(ProbeFailure::NotHttpUrl))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|source| {
            fail(ProbeFailure::Resolve {
                authority: authority.to_string(),
                source,
            })
        })?
        .next()
        .ok_or_else(|| fail(ProbeFailure::NoAddress(authority.to_string())))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| fail(ProbeFailure::Connect(e)))?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream.set_write_timeout(Some(timeout)).ok();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: portcullis-probe\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| fail(ProbeFailure::Send(e)))?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(fail(ProbeFailure::NoAnswer(e))),
        }
    }
    let line = String::from_utf8_lossy(&head[..read]);
    line.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or_else(|| fail(ProbeFailure::NotHttpAnswer))
}
