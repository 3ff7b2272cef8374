//! Tokens: keys, access JWTs, external issuers, revocation.
//!
//! - `keys.rs`: keyring (kid -> pinned algorithm), JWKS, `keygen`
//! - `access.rs`: issue and verify access JWTs, verified-token cache
//! - `jws.rs`: signature checks with keys parsed once (the request path)
//! - `external.rs`: trusted external issuers (JWKS over HTTP, cached)
//! - `revocation.rs`: the in-memory revocation view checked per request

pub mod access;
pub mod external;
pub mod jws;
pub mod keys;
pub mod revocation;
