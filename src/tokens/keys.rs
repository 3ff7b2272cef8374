//! The keyring: every configured key parsed once at start-up, with its one pinned algorithm.
//! The first key with a private part signs; all keys verify (rotation overlap). The JWKS is
//! rendered once here too.

use super::jws::{JwsKey, JwsKeyError};
use crate::config::{Algorithm, KeySource, SigningKey};
use bytes::Bytes;
use ed25519_dalek::pkcs8;
use ed25519_dalek::pkcs8::spki;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{DecodingKey, EncodingKey};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A verification key, pinned to one algorithm.
pub struct VerifyKey {
    pub kid: String,
    pub algorithm: jsonwebtoken::Algorithm,
    /// The `alg` header value a token must carry for this key (exact string).
    pub alg_name: &'static str,
    /// The same key parsed once for aws-lc (the request path verifies with this).
    pub jws: JwsKey,
}

/// The key that signs new access tokens.
pub struct SignKey {
    pub kid: String,
    pub algorithm: jsonwebtoken::Algorithm,
    pub encoding: EncodingKey,
}

/// All configured keys.
pub struct Keyring {
    pub signer: Option<SignKey>,
    pub verifiers: HashMap<String, Arc<VerifyKey>>,
    /// `{"keys":[...]}` of the public keys, rendered once.
    pub jwks: Bytes,
}

/// Why the configured keys cannot be loaded. Each message starts with the key's path in the
/// configuration (`tokens.signing_keys[1]`).
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("tokens.signing_keys[{index}].{field}: cannot read {path}: {error}")]
    Read {
        index: usize,
        /// `private_key_file` or `public_key_file`.
        field: &'static str,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("tokens.signing_keys[{index}]: the key does not fit algorithm {algorithm:?} ({error}); EdDSA needs an Ed25519 PKCS#8 PEM, ES256 a P-256 PEM, RS256 an RSA PEM")]
    Misfit {
        index: usize,
        algorithm: Algorithm,
        error: jsonwebtoken::errors::Error,
    },
    #[error("tokens.signing_keys[{index}]: {error}")]
    Unusable { index: usize, error: JwsKeyError },
    #[error("tokens.signing_keys[{index}]: the key cannot verify its own signature")]
    SelfCheck { index: usize },
}

/// Why `portcullis keygen` could not make a key pair.
#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("HS256 uses a shared secret: put 32+ random bytes in tokens.signing_keys[].secret (for example from `openssl rand -base64 48`)")]
    SharedSecret,
    #[error(transparent)]
    Rsa(#[from] rsa::Error),
    #[error(transparent)]
    Private(#[from] pkcs8::Error),
    #[error(transparent)]
    Public(#[from] spki::Error),
}

pub fn jwt_alg(a: Algorithm) -> jsonwebtoken::Algorithm {
    match a {
        Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        Algorithm::HS256 => jsonwebtoken::Algorithm::HS256,
    }
}

pub fn alg_name(a: jsonwebtoken::Algorithm) -> &'static str {
    match a {
        jsonwebtoken::Algorithm::EdDSA => "EdDSA",
        jsonwebtoken::Algorithm::ES256 => "ES256",
        jsonwebtoken::Algorithm::ES384 => "ES384",
        jsonwebtoken::Algorithm::RS256 => "RS256",
        jsonwebtoken::Algorithm::RS384 => "RS384",
        jsonwebtoken::Algorithm::RS512 => "RS512",
        jsonwebtoken::Algorithm::PS256 => "PS256",
        jsonwebtoken::Algorithm::PS384 => "PS384",
        jsonwebtoken::Algorithm::PS512 => "PS512",
        jsonwebtoken::Algorithm::HS256 => "HS256",
        jsonwebtoken::Algorithm::HS384 => "HS384",
        jsonwebtoken::Algorithm::HS512 => "HS512",
        _ => "unsupported",
    }
}

fn read_pem(index: usize, field: &'static str, path: &Path) -> Result<Vec<u8>, KeyringError> {
    std::fs::read(path).map_err(|error| KeyringError::Read {
        index,
        field,
        path: path.to_path_buf(),
        error,
    })
}

/// PKCS#8 v1 DER prefix of an Ed25519 private key; the 32-byte seed follows (48 bytes in all).
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

fn ed25519_v1_der(sk: &ed25519_dalek::SigningKey) -> Vec<u8> {
    let mut der = ED25519_PKCS8_V1_PREFIX.to_vec();
    der.extend_from_slice(sk.as_bytes());
    der
}

fn encoding_key(alg: Algorithm, pem: &[u8]) -> jsonwebtoken::errors::Result<EncodingKey> {
    match alg {
        // jsonwebtoken takes only the 48-byte PKCS#8 v1 form; accept v2 (with the public key,
        // as some tools write) by re-encoding the seed.
        Algorithm::EdDSA => {
            use ed25519_dalek::pkcs8::DecodePrivateKey;
            let text = std::str::from_utf8(pem)
                .map_err(|_| jsonwebtoken::errors::ErrorKind::InvalidEddsaKey)?;
            let sk = ed25519_dalek::SigningKey::from_pkcs8_pem(text)
                .map_err(|_| jsonwebtoken::errors::ErrorKind::InvalidEddsaKey)?;
            Ok(EncodingKey::from_ed_der(&ed25519_v1_der(&sk)))
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem),
        Algorithm::HS256 => Ok(EncodingKey::from_secret(pem)),
    }
}

fn decoding_key(alg: Algorithm, pem: &[u8]) -> jsonwebtoken::errors::Result<DecodingKey> {
    match alg {
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        Algorithm::ES256 => DecodingKey::from_ec_pem(pem),
        Algorithm::RS256 => DecodingKey::from_rsa_pem(pem),
        Algorithm::HS256 => Ok(DecodingKey::from_secret(pem)),
    }
}

impl Keyring {
    /// Load every key. Errors name the key path (`tokens.signing_keys[1]`) and the problem.
    pub fn load(keys: &[SigningKey]) -> Result<Keyring, KeyringError> {
        let mut signer = None;
        let mut verifiers = HashMap::new();
        let mut jwks = Vec::new();
        for (index, k) in keys.iter().enumerate() {
            let algorithm = jwt_alg(k.algorithm);
            let misfit = |error| KeyringError::Misfit {
                index,
                algorithm: k.algorithm,
                error,
            };
            let (encoding, decoding, jwk) = match &k.source {
                KeySource::Secret(s) => {
                    let secret = s.expose().as_bytes();
                    (
                        Some(EncodingKey::from_secret(secret)),
                        DecodingKey::from_secret(secret),
                        None,
                    )
                }
                KeySource::PrivatePem(path) => {
                    let pem = read_pem(index, "private_key_file", path)?;
                    let enc = encoding_key(k.algorithm, &pem).map_err(misfit)?;
                    let jwk = Jwk::from_encoding_key(&enc, algorithm).map_err(misfit)?;
                    let dec = DecodingKey::from_jwk(&jwk).map_err(misfit)?;
                    (Some(enc), dec, Some(jwk))
                }
                KeySource::PublicPem(path) => {
                    let pem = read_pem(index, "public_key_file", path)?;
                    let dec = decoding_key(k.algorithm, &pem).map_err(misfit)?;
                    let jwk = Jwk::from_decoding_key(&dec, Some(algorithm)).map_err(misfit)?;
                    (None, dec, Some(jwk))
                }
            };
            let jws = JwsKey::new(algorithm, &decoding)
                .map_err(|error| KeyringError::Unusable { index, error })?;
            if let Some(enc) = encoding {
                // Prove the pair works before serving: sign and verify a probe token.
                let probe = jsonwebtoken::encode(
                    &jsonwebtoken::Header::new(algorithm),
                    &serde_json::json!({ "probe": true, "exp": u64::MAX / 2 }),
                    &enc,
                )
                .map_err(misfit)?;
                let mut v = jsonwebtoken::Validation::new(algorithm);
                v.required_spec_claims.clear();
                v.validate_exp = false;
                v.validate_aud = false;
                jsonwebtoken::decode::<serde_json::Value>(&probe, &decoding, &v).map_err(misfit)?;
                jws.verify(&probe)
                    .map_err(|_| KeyringError::SelfCheck { index })?;
                if signer.is_none() {
                    signer = Some(SignKey {
                        kid: k.kid.clone(),
                        algorithm,
                        encoding: enc,
                    });
                }
            }
            if let Some(mut jwk) = jwk {
                jwk.common.key_id = Some(k.kid.clone());
                jwk.common.public_key_use = Some(PublicKeyUse::Signature);
                jwk.common.key_algorithm = Some(match k.algorithm {
                    Algorithm::EdDSA => KeyAlgorithm::EdDSA,
                    Algorithm::ES256 => KeyAlgorithm::ES256,
                    Algorithm::RS256 => KeyAlgorithm::RS256,
                    Algorithm::HS256 => KeyAlgorithm::HS256,
                });
                jwks.push(jwk);
            }
            verifiers.insert(
                k.kid.clone(),
                Arc::new(VerifyKey {
                    kid: k.kid.clone(),
                    algorithm,
                    alg_name: alg_name(algorithm),
                    jws,
                }),
            );
        }
        let jwks = serde_json::to_vec(&JwkSet { keys: jwks }).expect("JWKS serializes");
        Ok(Keyring {
            signer,
            verifiers,
            jwks: Bytes::from(jwks),
        })
    }
}

/// `portcullis keygen`: a new key pair as PKCS#8 private PEM and SPKI public PEM.
pub fn generate(alg: Algorithm) -> Result<(String, String), KeygenError> {
    use base64::Engine;
    use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
    use rand_core::OsRng;
    let le = ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF;
    match alg {
        Algorithm::EdDSA => {
            let sk = ed25519_dalek::SigningKey::generate(&mut OsRng);
            // PKCS#8 v1 (48 bytes): the form jsonwebtoken and OpenSSL both read.
            let b64 = base64::engine::general_purpose::STANDARD.encode(ed25519_v1_der(&sk));
            let private =
                format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
            let public = sk.verifying_key().to_public_key_pem(le)?;
            Ok((private, public))
        }
        Algorithm::ES256 => {
            let sk = p256::SecretKey::random(&mut OsRng);
            let private = sk.to_pkcs8_pem(le)?;
            let public = sk.public_key().to_public_key_pem(le)?;
            Ok((private.to_string(), public))
        }
        Algorithm::RS256 => {
            let sk = rsa::RsaPrivateKey::new(&mut OsRng, 2048)?;
            let private = sk.to_pkcs8_pem(le)?;
            let public = rsa::RsaPublicKey::from(&sk).to_public_key_pem(le)?;
            Ok((private.to_string(), public))
        }
        Algorithm::HS256 => Err(KeygenError::SharedSecret),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::claims::VerifyError;
    use jsonwebtoken::{encode, Header};

    fn token(alg: jsonwebtoken::Algorithm, key: &EncodingKey) -> String {
        encode(&Header::new(alg), &serde_json::json!({"sub": "a"}), key).unwrap()
    }

    #[test]
    fn a_public_key_never_verifies_as_an_hmac_secret() {
        // Algorithm confusion: the RSA public key bytes used as an HS256 secret.
        let (private, public) = generate(Algorithm::RS256).expect("keygen");
        let rs = JwsKey::new(
            jsonwebtoken::Algorithm::RS256,
            &DecodingKey::from_rsa_pem(public.as_bytes()).unwrap(),
        )
        .unwrap();
        let good = token(
            jsonwebtoken::Algorithm::RS256,
            &EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
        );
        assert!(rs.verify(&good).is_ok());
        let forged = token(
            jsonwebtoken::Algorithm::HS256,
            &EncodingKey::from_secret(public.as_bytes()),
        );
        assert_eq!(rs.verify(&forged).unwrap_err(), VerifyError::Invalid);
    }
}
