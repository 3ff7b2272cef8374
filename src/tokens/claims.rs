//! What tokens say and why they are refused: the claims of our access tokens, the verified
//! identity handed to the gateway, the refusal reasons, and the time check every issuer's
//! tokens go through. The bottom of `tokens`: it imports nothing from its siblings.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Claims of a gateway-issued access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub email: String,
    pub roles: Vec<String>,
    pub sid: String,
    pub jti: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// When the user last proved who they are in this session (RFC 9068, OIDC). A token
    /// without it reads as 0: never fresh.
    #[serde(default)]
    pub auth_time: u64,
    /// How (RFC 8176 values: `pwd`, `otp`). A token without it reads as none, which no
    /// `mfa: required` route accepts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub sub: String,
    pub email: String,
    pub roles: Vec<String>,
    /// Session (refresh family) id; empty for tokens from external issuers.
    pub sid: String,
    pub jti: String,
    pub exp: u64,
    /// The issuer (ours or a trusted external one).
    pub iss: String,
    /// When the user last proved who they are (0: unknown, as for external issuers).
    pub auth_time: u64,
    /// A code was entered (`otp` in `amr`).
    pub otp: bool,
    /// `sub`, `email` and the roles joined by `,` as header values, built once per verified
    /// token (and cached with it) instead of on every request.
    pub wire: IdentityValues,
}

/// The identity header values the upstream receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityValues {
    pub user: http::HeaderValue,
    pub email: http::HeaderValue,
    pub roles: http::HeaderValue,
}

impl IdentityValues {
    /// A claim that cannot be sent as a header value (control characters) makes the token
    /// invalid: it could not be forwarded faithfully.
    pub fn new(sub: &str, email: &str, roles: &[String]) -> Result<Self, VerifyError> {
        let value = |s: &str| http::HeaderValue::from_str(s).map_err(|_| VerifyError::Invalid);
        Ok(IdentityValues {
            user: value(sub)?,
            email: value(email)?,
            roles: value(&roles.join(","))?,
        })
    }
}

/// Why a token was refused. Clients only learn the error code; logs get the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported or forbidden header")]
    BadHeader,
    #[error("unknown key id")]
    UnknownKey,
    #[error("invalid signature or claims")]
    Invalid,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("revoked")]
    Revoked,
}

/// `exp` and `nbf` against `now` with `leeway` seconds of clock skew.
pub fn check_times(exp: u64, nbf: Option<u64>, now: u64, leeway: u64) -> Result<(), VerifyError> {
    if exp + leeway < now {
        return Err(VerifyError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now + leeway) {
        return Err(VerifyError::NotYetValid);
    }
    Ok(())
}

/// Random URL-safe id of `bytes` random bytes.
pub fn random_id(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    URL_SAFE_NO_PAD.encode(buf)
}
