//! Trusted external issuers (an IdP's bearer tokens): JWKS fetched at start and refreshed on
//! a TTL, refetched on an unknown `kid` at most once per 30 s, roles read from a configured
//! claim path. Header parameters that point elsewhere (`jku`, `x5u`) are never followed.

use super::claims::{check_times, IdentityValues, Verified, VerifyError};
use super::jws::JwsKey;
use super::keys::alg_name;
use crate::config::TrustedIssuer;
use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Minimum time between two fetches triggered by unknown key ids.
const REFETCH_COOLDOWN: Duration = Duration::from_secs(30);

struct IssuerKey {
    algorithm: Algorithm,
    jws: JwsKey,
}

/// One trusted issuer and its current keys.
pub struct Issuer {
    pub config: TrustedIssuer,
    keys: ArcSwap<HashMap<String, Arc<IssuerKey>>>,
    /// When the last fetch triggered by an unknown kid started (for the cooldown).
    last_kid_fetch: Mutex<Option<Instant>>,
    pub last_error: ArcSwap<Option<String>>,
}

/// Why an issuer's JWKS could not be loaded (shown in readiness).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot fetch {url}: {error}")]
    Fetch { url: String, error: ureq::Error },
    #[error("cannot read {url}: {error}")]
    Read { url: String, error: ureq::Error },
    #[error("{url} is not a JWKS: {error}")]
    NotJwks {
        url: String,
        error: serde_json::Error,
    },
    #[error("{url} holds no usable signing key")]
    NoUsableKey { url: String },
}

/// All trusted issuers.
#[derive(Default, Clone)]
pub struct ExternalIssuers {
    pub issuers: Vec<Arc<Issuer>>,
}

fn alg_for(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    if let Some(a) = jwk.common.key_algorithm {
        return Algorithm::try_from(a).ok();
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            Some(Algorithm::ES256)
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Some(Algorithm::EdDSA)
        }
        _ => None,
    }
}

impl Issuer {
    pub fn new(config: TrustedIssuer) -> Self {
        Issuer {
            config,
            keys: ArcSwap::from_pointee(HashMap::new()),
            last_kid_fetch: Mutex::new(None),
            // Not ready until the first fetch has loaded keys.
            last_error: ArcSwap::from_pointee(Some("JWKS not loaded yet".to_string())),
        }
    }

    /// Fetch the JWKS now (blocking; call from a blocking thread).
    pub fn fetch_blocking(&self) -> Result<usize, JwksError> {
        let url = || self.config.jwks_url.clone();
        let result = (|| {
            let agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(5)))
                .max_redirects(0)
                .build()
                .new_agent();
            let body = agent
                .get(&self.config.jwks_url)
                .call()
                .map_err(|error| JwksError::Fetch { url: url(), error })?
                .body_mut()
                .with_config()
                .limit(1024 * 1024)
                .read_to_string()
                .map_err(|error| JwksError::Read { url: url(), error })?;
            let set: JwkSet = serde_json::from_str(&body)
                .map_err(|error| JwksError::NotJwks { url: url(), error })?;
            let mut keys = HashMap::new();
            for jwk in &set.keys {
                let (Some(kid), Some(alg)) = (jwk.common.key_id.clone(), alg_for(jwk)) else {
                    continue;
                };
                // Symmetric keys from a JWKS would let anyone who reads it sign tokens.
                if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
                    continue;
                }
                // A key that does not parse is skipped, like one of an unknown type.
                let parsed = DecodingKey::from_jwk(jwk)
                    .ok()
                    .and_then(|d| JwsKey::new(alg, &d).ok());
                if let Some(jws) = parsed {
                    keys.insert(
                        kid,
                        Arc::new(IssuerKey {
                            algorithm: alg,
                            jws,
                        }),
                    );
                }
            }
            if keys.is_empty() {
                return Err(JwksError::NoUsableKey { url: url() });
            }
            let n = keys.len();
            self.keys.store(Arc::new(keys));
            Ok(n)
        })();
        self.last_error
            .store(Arc::new(result.as_ref().err().map(JwksError::to_string)));
        result
    }

    /// At most one unknown-kid refetch per cooldown: claims the slot when it is free.
    fn may_refetch(&self) -> bool {
        let mut last = self
            .last_kid_fetch
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < REFETCH_COOLDOWN) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    fn verify_with(
        &self,
        key: &IssuerKey,
        token: &str,
        alg: &str,
        now: u64,
        leeway: u64,
    ) -> Result<Verified, VerifyError> {
        if alg != alg_name(key.algorithm) {
            return Err(VerifyError::BadHeader);
        }
        let payload = key.jws.verify(token)?;
        let c: serde_json::Value =
            serde_json::from_slice(&payload).map_err(|_| VerifyError::Invalid)?;
        // Required: iss (this issuer), aud (ours, alone or in a list), exp and sub (below).
        if c.get("iss").and_then(|i| i.as_str()) != Some(self.config.issuer.as_str()) {
            return Err(VerifyError::Invalid);
        }
        let audience = self.config.audience.as_str();
        let aud_ok = match c.get("aud") {
            Some(serde_json::Value::String(a)) => a == audience,
            Some(serde_json::Value::Array(list)) => {
                list.iter().any(|a| a.as_str() == Some(audience))
            }
            _ => false,
        };
        if !aud_ok {
            return Err(VerifyError::Invalid);
        }
        let exp = c
            .get("exp")
            .and_then(|e| e.as_u64())
            .ok_or(VerifyError::Invalid)?;
        let nbf = match c.get("nbf") {
            None => None,
            Some(n) => Some(n.as_u64().ok_or(VerifyError::Invalid)?),
        };
        check_times(exp, nbf, now, leeway)?;
        let sub = c
            .get("sub")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .ok_or(VerifyError::Invalid)?;
        let mut roles_value = Some(&c);
        for seg in &self.config.roles_claim {
            roles_value = roles_value.and_then(|v| v.get(seg));
        }
        let roles: Vec<String> = roles_value
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let email = c.get("email").and_then(|e| e.as_str()).unwrap_or("");
        Ok(Verified {
            // Our step-up does not apply to another issuer's sessions.
            auth_time: 0,
            otp: false,
            wire: IdentityValues::new(sub, email, &roles)?,
            sub: sub.to_string(),
            email: email.to_string(),
            roles,
            sid: String::new(),
            jti: c
                .get("jti")
                .and_then(|e| e.as_str())
                .unwrap_or("")
                .to_string(),
            exp,
            iss: self.config.issuer.clone(),
        })
    }
}

impl ExternalIssuers {
    pub fn new(configs: &[TrustedIssuer]) -> Self {
        ExternalIssuers {
            issuers: configs
                .iter()
                .cloned()
                .map(|c| Arc::new(Issuer::new(c)))
                .collect(),
        }
    }

    /// Verify a token whose `kid` is not one of ours.
    pub async fn verify(
        &self,
        token: &str,
        kid: &str,
        alg: &str,
        now: u64,
        leeway: u64,
    ) -> Result<Verified, VerifyError> {
        for issuer in &self.issuers {
            if let Some(key) = issuer.keys.load().get(kid).cloned() {
                return issuer.verify_with(&key, token, alg, now, leeway);
            }
        }
        // Unknown everywhere: maybe an IdP rotated its keys. Refetch, rate limited.
        for issuer in &self.issuers {
            if !issuer.may_refetch() {
                continue;
            }
            let i = issuer.clone();
            let _ = tokio::task::spawn_blocking(move || i.fetch_blocking()).await;
            if let Some(key) = issuer.keys.load().get(kid).cloned() {
                return issuer.verify_with(&key, token, alg, now, leeway);
            }
        }
        Err(VerifyError::UnknownKey)
    }

    /// Failures to report in readiness (`issuer https://idp: cannot fetch ...`).
    pub fn failures(&self) -> Vec<String> {
        self.issuers
            .iter()
            .filter_map(|i| {
                i.last_error
                    .load()
                    .as_ref()
                    .as_ref()
                    .map(|e| format!("issuer {}: {e}", i.config.issuer))
            })
            .collect()
    }
}

/// Background refresh of every issuer's JWKS on its interval.
pub struct JwksRefresher {
    pub issuers: Vec<Arc<Issuer>>,
}

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for JwksRefresher {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut next: Vec<Instant> = self.issuers.iter().map(|_| Instant::now()).collect();
        loop {
            for (i, issuer) in self.issuers.iter().enumerate() {
                if Instant::now() >= next[i] {
                    let is = issuer.clone();
                    let r = tokio::task::spawn_blocking(move || is.fetch_blocking()).await;
                    let ok = matches!(r, Ok(Ok(_)));
                    if !ok {
                        tracing::warn!(target: "portcullis::tokens", issuer = %issuer.config.issuer, error = ?issuer.last_error.load(), "JWKS fetch failed");
                    }
                    // Retry failures sooner than the refresh interval.
                    let wait = if ok {
                        issuer.config.refresh_interval
                    } else {
                        Duration::from_secs(5).min(issuer.config.refresh_interval)
                    };
                    next[i] = Instant::now() + wait;
                }
            }
            let sleep_until = next
                .iter()
                .min()
                .copied()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(60));
            tokio::select! {
                _ = tokio::time::sleep_until(sleep_until.into()) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
