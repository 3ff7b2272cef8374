//! `GET /auth/client.js`: the browser client (`client.js` next to this file, built into the
//! binary). Served without authentication, with an `ETag` (304 to `If-None-Match`), and
//! revalidated rather than stored stale.

use crate::respond::LocalResponse;
use http::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH};
use http::HeaderValue;
use pingora::http::RequestHeader;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

const SCRIPT: &str = include_str!("client.js");

/// The script's entity tag: a hash of its text.
fn etag() -> &'static HeaderValue {
    static TAG: OnceLock<HeaderValue> = OnceLock::new();
    TAG.get_or_init(|| {
        let hash = Sha256::digest(SCRIPT.as_bytes());
        let hex: String = hash[..12].iter().map(|b| format!("{b:02x}")).collect();
        HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is header-safe")
    })
}

pub fn script(req: &RequestHeader) -> LocalResponse {
    let tag = etag();
    let matches = req
        .headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == tag.to_str().unwrap_or("")
        });
    let r = if matches {
        LocalResponse::new(304, "text/javascript; charset=utf-8", "")
    } else {
        LocalResponse::new(200, "text/javascript; charset=utf-8", SCRIPT)
    };
    r.header(ETAG, tag.clone())
        .header(CACHE_CONTROL, HeaderValue::from_static("no-cache"))
}
