//! Tokens: keys, access JWTs, external issuers, revocation.
//!
//! - `keys.rs`: keyring (kid -> pinned algorithm), JWKS, `keygen`
//! - `access.rs`: issue and verify access JWTs, verified-token cache
//! - `external.rs`: trusted external issuers (JWKS over HTTP, cached)
//! - `revocation.rs`: the in-memory revocation view checked per request

pub mod access;
pub mod external;
pub mod keys;
pub mod revocation;
