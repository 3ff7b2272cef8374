//! `GET /.well-known/jwks.json` (and `/auth/jwks.json`): the public signing keys, cacheable
//! for five minutes.

use crate::respond::LocalResponse;
use crate::tokens::access::TokenService;
use http::HeaderValue;

/// The paths the key set is served at.
pub fn is_jwks_path(path: &str) -> bool {
    path == "/.well-known/jwks.json" || path == "/auth/jwks.json"
}

pub fn jwks(tokens: &TokenService) -> LocalResponse {
    LocalResponse::new(200, "application/json", tokens.keyring.jwks.clone()).header(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    )
}
