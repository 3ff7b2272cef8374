//! JWS signatures checked with keys parsed once.
//!
//! `jsonwebtoken::decode` rebuilds the aws-lc key on every call (for RSA that includes the
//! Montgomery context, about a third of an RS256 verification), decodes the header twice and
//! the claims twice. On the request path we instead check the compact serialization's
//! signature with an aws-lc key parsed at start-up, from the very bytes jsonwebtoken would
//! use, and hand back the decoded payload for one deserialization. jsonwebtoken still signs,
//! parses the PEM and JWK inputs, and proves every key at start.

use super::claims::VerifyError;
use aws_lc_rs::error::KeyRejected;
use aws_lc_rs::{hmac, signature};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};

/// A verification key in the form aws-lc verifies with directly.
pub enum JwsKey {
    Public(signature::ParsedPublicKey),
    Hmac(Box<hmac::Key>),
}

/// Why a key cannot be used to verify signatures.
#[derive(Debug, thiserror::Error)]
pub enum JwsKeyError {
    /// aws-lc refused the key for the algorithm (wrong type, size or encoding).
    #[error("unusable {alg:?} key: {error}")]
    Rejected { alg: Algorithm, error: KeyRejected },
    /// The algorithm needs the key's bytes, and the key has none (RSA components).
    #[error("unusable {alg:?} key: {error}")]
    NoBytes {
        alg: Algorithm,
        error: jsonwebtoken::errors::Error,
    },
    #[error("algorithm {0:?} is not supported")]
    Unsupported(Algorithm),
}

impl JwsKey {
    /// Parse `key` for `alg` once.
    pub fn new(alg: Algorithm, key: &DecodingKey) -> Result<JwsKey, JwsKeyError> {
        let rejected = |error| JwsKeyError::Rejected { alg, error };
        let bytes = || {
            key.try_get_as_bytes()
                .map_err(|error| JwsKeyError::NoBytes { alg, error })
        };
        let rsa = |params: &'static signature::RsaParameters| match key.kind() {
            DecodingKeyKind::RsaModulusExponent { n, e } => signature::RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            }
            .to_parsed_public_key(params)
            .map(JwsKey::Public)
            .map_err(rejected),
            DecodingKeyKind::SecretOrDer(der) => signature::ParsedPublicKey::new(params, der)
                .map(JwsKey::Public)
                .map_err(rejected),
        };
        let public = |params: &'static dyn signature::VerificationAlgorithm| {
            signature::ParsedPublicKey::new(params, bytes()?)
                .map(JwsKey::Public)
                .map_err(rejected)
        };
        let secret = |h: hmac::Algorithm| Ok(JwsKey::Hmac(Box::new(hmac::Key::new(h, bytes()?))));
        match alg {
            Algorithm::RS256 => rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
            Algorithm::RS384 => rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
            Algorithm::RS512 => rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
            Algorithm::PS256 => rsa(&signature::RSA_PSS_2048_8192_SHA256),
            Algorithm::PS384 => rsa(&signature::RSA_PSS_2048_8192_SHA384),
            Algorithm::PS512 => rsa(&signature::RSA_PSS_2048_8192_SHA512),
            Algorithm::ES256 => public(&signature::ECDSA_P256_SHA256_FIXED),
            Algorithm::ES384 => public(&signature::ECDSA_P384_SHA384_FIXED),
            Algorithm::EdDSA => public(&signature::ED25519),
            Algorithm::HS256 => secret(hmac::HMAC_SHA256),
            Algorithm::HS384 => secret(hmac::HMAC_SHA384),
            Algorithm::HS512 => secret(hmac::HMAC_SHA512),
            other => Err(JwsKeyError::Unsupported(other)),
        }
    }

    fn check(&self, signing_input: &[u8], sig: &[u8]) -> bool {
        match self {
            JwsKey::Public(k) => k.verify_sig(signing_input, sig).is_ok(),
            JwsKey::Hmac(k) => hmac::verify(k, signing_input, sig).is_ok(),
        }
    }

    /// Check the signature of a compact JWS (already shape-checked by the caller's
    /// pre-check) and return its decoded payload.
    pub fn verify(&self, token: &str) -> Result<Vec<u8>, VerifyError> {
        let (signing_input, sig) = token.rsplit_once('.').ok_or(VerifyError::Malformed)?;
        let (_, payload) = signing_input
            .split_once('.')
            .ok_or(VerifyError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| VerifyError::Malformed)?;
        if !self.check(signing_input.as_bytes(), &sig) {
            return Err(VerifyError::Invalid);
        }
        URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| VerifyError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn token(alg: Algorithm, key: &EncodingKey) -> String {
        encode(&Header::new(alg), &serde_json::json!({"sub": "a"}), key).unwrap()
    }

    #[test]
    fn hmac_checks_key_and_every_part() {
        let k = JwsKey::new(Algorithm::HS256, &DecodingKey::from_secret(b"one")).unwrap();
        let t = token(Algorithm::HS256, &EncodingKey::from_secret(b"one"));
        assert_eq!(k.verify(&t).unwrap(), br#"{"sub":"a"}"#);
        let other = token(Algorithm::HS256, &EncodingKey::from_secret(b"two"));
        assert_eq!(k.verify(&other).unwrap_err(), VerifyError::Invalid);
        // Payload swapped under the original signature.
        let (h, rest) = t.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let swapped = format!("{h}.{}.{sig}", URL_SAFE_NO_PAD.encode(br#"{"sub":"b"}"#));
        assert_eq!(k.verify(&swapped).unwrap_err(), VerifyError::Invalid);
        assert!(k.verify("no-dots").is_err());
        assert!(
            k.verify(&format!("{t}=")).is_err(),
            "padding is not base64url"
        );
    }
}
