//! argon2id: hashing for `hash-password`, verification off the proxy's event loop.
//!
//! Verification runs on the blocking pool behind a semaphore of half the core count (19 MiB
//! per hash, so an unbounded queue would be an out-of-memory attack, and a login storm must
//! leave CPU for proxying); at most 16 callers per core wait, the rest get `Busy` at once (503). Unknown and disabled users are checked against a dummy
//! hash with the same parameters, so every failure costs the same.

use argon2::password_hash::{PasswordHasher, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordHash, Version};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Longest password accepted (bytes); longer ones are refused before hashing.
pub const MAX_PASSWORD_LEN: usize = 1024;

/// OWASP's argon2id parameters: m=19 MiB, t=2, p=1.
pub fn hasher() -> Argon2<'static> {
    Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(19 * 1024, 2, 1, None).expect("valid argon2 parameters"),
    )
}

/// A PHC string for `password` (fresh random salt).
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).expect("16 bytes make a salt");
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashing")
        .to_string()
}

/// Result of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Match,
    NoMatch,
    /// Too many verifications in flight: answer 503 instead of queueing.
    Busy,
}

pub struct PasswordService {
    work: Arc<Semaphore>,
    admit: Arc<Semaphore>,
    dummy: String,
}

impl PasswordService {
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        // Half the cores at most: a login storm must leave the proxy CPU to serve with.
        let workers = (cores / 2).max(1);
        let mut random = [0u8; 24];
        rand::fill(&mut random);
        PasswordService {
            work: Arc::new(Semaphore::new(workers)),
            admit: Arc::new(Semaphore::new(cores * 16)),
            dummy: hash_password(&String::from_utf8_lossy(&random)),
        }
    }

    /// Verify `password` against `hash` (or the dummy hash when `None`).
    pub async fn verify(&self, password: String, hash: Option<String>) -> Check {
        let Ok(_admitted) = self.admit.clone().try_acquire_owned() else {
            return Check::Busy;
        };
        let Ok(_worker) = self.work.clone().acquire_owned().await else {
            return Check::Busy;
        };
        let real = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.clone());
        let ok = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|h| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false);
        if ok && real {
            Check::Match
        } else {
            Check::NoMatch
        }
    }
}

impl Default for PasswordService {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_and_verify() {
        let h = hash_password("correct horse");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        let s = PasswordService::new();
        assert_eq!(
            s.verify("correct horse".into(), Some(h.clone())).await,
            Check::Match
        );
        assert_eq!(s.verify("wrong".into(), Some(h)).await, Check::NoMatch);
        assert_eq!(
            s.verify("anything".into(), None).await,
            Check::NoMatch,
            "the dummy never matches"
        );
    }
}
