//! Tokens: keys, access JWTs, external issuers, revocation.
//!
//! - `claims.rs`: token claims, the verified identity, refusal reasons, the time check
//! - `jws.rs`: signature checks with keys parsed once (the request path)
//! - `keys.rs`: keyring (kid -> pinned algorithm), JWKS, `keygen`
//! - `external.rs`: trusted external issuers (JWKS over HTTP, cached)
//! - `cache.rs`: the verified-token cache
//! - `access.rs`: issue and verify access JWTs (`TokenService`)
//! - `revocation.rs`: the in-memory revocation view checked per request
//!
//! Imports go one way only: claims <- jws <- keys <- external <- access, with claims <- cache
//! <- access; revocation imports no sibling.

pub mod access;
mod cache;
pub mod claims;
pub mod external;
pub mod jws;
pub mod keys;
pub mod revocation;
