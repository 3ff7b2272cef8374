//! `inject_client: true`: the browser client's script tag goes into the application's HTML
//! pages, which nobody can edit, so that they get the session warning and the refresh queue.
//! The tag goes before `</head>`, else before `</body>`, else nowhere (nor where the page
//! already loads the client before that place); the body streams through, holding back only
//! the few bytes where a tag may be split across two chunks.
//! Only uncompressed `text/html` 200 answers are touched (the upstream is asked for no
//! compression on such routes); everything else passes byte for byte.

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, TRANSFER_ENCODING};
use pingora::http::{RequestHeader, ResponseHeader};

/// What goes into the page.
pub const TAG: &[u8] = b"<script src=\"/auth/client.js\" defer></script>";

/// The closing tags the script goes before; `</head>` comes before `</body>` in any page, so
/// the first of the two that appears is the right place.
const MARKS: [&[u8]; 2] = [b"</head>", b"</body>"];
/// A page that loads the client itself before that place gets no second copy.
const ALREADY: &[u8] = b"/auth/client.js";
/// The longest text looked for: what is held back between chunks is one byte shorter.
const LONGEST: usize = ALREADY.len();

/// The state of one response's body.
#[derive(Debug, Default)]
pub struct Injector {
    /// The tail of what came so far, not yet sent (a mark may continue in the next chunk).
    held: BytesMut,
    done: bool,
}

/// Whether this answer gets the tag; when it does, its length headers are fixed for a body
/// that grows (the length is dropped, HTTP/1.1 clients get it chunked) and a strong ETag is
/// weakened (the bytes are no longer the upstream's).
pub fn begin(req: &RequestHeader, resp: &mut ResponseHeader) -> pingora::Result<Option<Injector>> {
    let html = resp
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("text/html")
        });
    let encoded = resp
        .headers
        .get(CONTENT_ENCODING)
        .is_some_and(|e| !e.as_bytes().eq_ignore_ascii_case(b"identity"));
    if resp.status != 200 || !html || encoded {
        return Ok(None);
    }
    resp.remove_header(&CONTENT_LENGTH);
    if let Some(tag) = resp.headers.get(ETAG).cloned() {
        if !tag.as_bytes().starts_with(b"W/") {
            let mut weak = b"W/".to_vec();
            weak.extend_from_slice(tag.as_bytes());
            resp.insert_header(ETAG, weak)?;
        }
    }
    if req.method == http::Method::HEAD {
        return Ok(None);
    }
    if req.version == http::Version::HTTP_11 && !resp.headers.contains_key(TRANSFER_ENCODING) {
        resp.insert_header(TRANSFER_ENCODING, "chunked")?;
    }
    Ok(Some(Injector::default()))
}

/// What comes first in `data` (case-insensitively): a place for the tag, or the client
/// already loaded.
enum Found {
    Mark(usize),
    Already,
}

fn find(data: &[u8]) -> Option<Found> {
    let at = |i: usize, m: &[u8]| {
        data.len() - i >= m.len() && data[i..i + m.len()].eq_ignore_ascii_case(m)
    };
    (0..data.len()).find_map(|i| {
        if at(i, ALREADY) {
            Some(Found::Already)
        } else if MARKS.iter().any(|m| at(i, m)) {
            Some(Found::Mark(i))
        } else {
            None
        }
    })
}

impl Injector {
    /// Pass one chunk (or the end of the body) through.
    pub fn filter(&mut self, body: &mut Option<Bytes>, end_of_stream: bool) {
        if self.done {
            return;
        }
        if let Some(chunk) = body.take() {
            self.held.extend_from_slice(&chunk);
        }
        let found = find(&self.held);
        let out = if let Some(Found::Already) = found {
            self.done = true;
            self.held.split().freeze()
        } else if let Some(Found::Mark(at)) = found {
            self.done = true;
            let mut out = BytesMut::with_capacity(self.held.len() + TAG.len());
            out.extend_from_slice(&self.held[..at]);
            out.extend_from_slice(TAG);
            out.extend_from_slice(&self.held[at..]);
            self.held.clear();
            out.freeze()
        } else if end_of_stream {
            self.done = true;
            self.held.split().freeze()
        } else {
            // Keep what could be the start of a mark.
            let keep = self.held.len().min(LONGEST - 1);
            let send = self.held.len() - keep;
            self.held.split_to(send).freeze()
        };
        *body = (!out.is_empty() || end_of_stream).then_some(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `page` in chunks of `size` bytes; the body that comes out.
    fn run(page: &[u8], size: usize) -> Vec<u8> {
        let mut inj = Injector::default();
        let mut out = Vec::new();
        let chunks: Vec<&[u8]> = page.chunks(size.max(1)).collect();
        for (i, c) in chunks.iter().enumerate() {
            let mut body = Some(Bytes::copy_from_slice(c));
            inj.filter(&mut body, i + 1 == chunks.len());
            if let Some(b) = body {
                out.extend_from_slice(&b);
            }
        }
        out
    }

    #[test]
    fn the_tag_goes_before_the_head_end_whatever_the_chunks() {
        let page = b"<html><HEAD><title>x</title></Head><body>hi</body></html>";
        let want = b"<html><HEAD><title>x</title><script src=\"/auth/client.js\" defer></script></Head><body>hi</body></html>";
        for size in 1..page.len() + 1 {
            assert_eq!(run(page, size), want.to_vec(), "chunks of {size}");
        }
    }

    #[test]
    fn else_before_the_body_end_else_nowhere() {
        let page = b"<p>no head</p></body></html>";
        let out = run(page, 5);
        assert_eq!(
            out,
            b"<p>no head</p><script src=\"/auth/client.js\" defer></script></body></html>".to_vec()
        );
        let loads_it = b"<head><script src=\"/auth/client.js\"></script></head><body></body>";
        for size in 1..loads_it.len() + 1 {
            assert_eq!(run(loads_it, size), loads_it.to_vec(), "no second copy");
        }
        let bare = b"just text, no closing tags </he";
        for size in 1..bare.len() + 1 {
            assert_eq!(run(bare, size), bare.to_vec());
        }
    }

    #[test]
    fn only_plain_html_200_answers_are_touched() {
        let req = RequestHeader::build("GET", b"/", None).unwrap();
        let resp = |status: u16, ct: &str, enc: Option<&str>| {
            let mut r = ResponseHeader::build(status, None).unwrap();
            r.insert_header(CONTENT_TYPE, ct).unwrap();
            r.insert_header(CONTENT_LENGTH, "10").unwrap();
            r.insert_header(ETAG, "\"abc\"").unwrap();
            if let Some(e) = enc {
                r.insert_header(CONTENT_ENCODING, e).unwrap();
            }
            r
        };
        let mut html = resp(200, "text/html; charset=utf-8", None);
        assert!(begin(&req, &mut html).unwrap().is_some());
        assert!(html.headers.get(CONTENT_LENGTH).is_none());
        assert_eq!(html.headers.get(ETAG).unwrap(), "W/\"abc\"");
        assert_eq!(html.headers.get(TRANSFER_ENCODING).unwrap(), "chunked");
        for (status, ct, enc) in [
            (200, "application/json", None),
            (200, "image/png", None),
            (200, "text/html", Some("gzip")),
            (404, "text/html", None),
            (206, "text/html", None),
        ] {
            let mut r = resp(status, ct, enc);
            assert!(begin(&req, &mut r).unwrap().is_none(), "{status} {ct}");
            assert_eq!(r.headers.get(CONTENT_LENGTH).unwrap(), "10");
        }
    }
}
