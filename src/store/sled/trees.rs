//! The database itself, owned by the writer thread: its trees and every operation on them,
//! the rotation state machine included. Each runs on that one thread, so a compare-and-set
//! here never loses to another writer.

use crate::store::writer::Durable;
use crate::store::{
    Family, MfaChange, MfaRecord, Revocation, RotateOutcome, RotationPolicy, StoreError,
};
use std::sync::Arc;

/// The database, owned by the writer thread.
pub(super) struct Trees {
    pub(super) db: ::sled::Db,
    pub(super) families: ::sled::Tree,
    pub(super) tokens: ::sled::Tree,
    pub(super) user_sessions: ::sled::Tree,
    pub(super) revocations: ::sled::Tree,
    pub(super) meta: ::sled::Tree,
    /// Throttling counters: key -> when the newest event leaves its window, then each
    /// event's time (big-endian u64s).
    pub(super) rate_limits: ::sled::Tree,
    /// `user\0device` -> until when that device counts as known (big-endian u64).
    pub(super) known_devices: ::sled::Tree,
    /// user -> [`MfaRecord`] JSON (the secret in it sealed by the caller).
    pub(super) mfa: ::sled::Tree,
}

/// Why sled could not make a batch durable. Shared rather than copied: every caller of the
/// batch gets it, and a copy of a sled I/O error would lose its text.
#[derive(Debug, Clone, thiserror::Error)]
pub(super) enum FlushError {
    #[error("sled flush: {0}")]
    Sled(#[source] Arc<::sled::Error>),
}

impl Durable for Trees {
    type Error = FlushError;

    fn flush(&self) -> Result<(), FlushError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| FlushError::Sled(Arc::new(e)))
    }
}

pub(super) fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub(super) fn decode(bytes: &[u8]) -> Result<Family, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("family record: {e}")))
}

pub(super) fn encode(f: &Family) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(f).map_err(|e| StoreError::Corrupt(format!("family record: {e}")))
}

pub(super) fn user_key(user: &str, sid: &str) -> Vec<u8> {
    let mut k = user.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(sid.as_bytes());
    k
}

pub(super) fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

impl Trees {
    fn get_family(&self, sid: &str) -> Result<Option<(::sled::IVec, Family)>, StoreError> {
        match self.families.get(sid).map_err(unavailable)? {
            Some(bytes) => {
                let f = decode(&bytes)?;
                Ok(Some((bytes, f)))
            }
            None => Ok(None),
        }
    }

    /// Mark `sid` revoked and remember the revocation.
    pub(super) fn revoke_family(&self, sid: &str, until: u64) -> Result<bool, StoreError> {
        let mut changed = false;
        if let Some((old, mut f)) = self.get_family(sid)? {
            if !f.revoked {
                f.revoked = true;
                // The writer is the only writer: the swap cannot lose.
                changed = self
                    .families
                    .compare_and_swap(sid, Some(old), Some(encode(&f)?))
                    .map_err(unavailable)?
                    .is_ok();
            }
        }
        self.put_revocation(&format!("s:{sid}"), until)?;
        Ok(changed)
    }

    pub(super) fn put_revocation(&self, key: &str, until: u64) -> Result<(), StoreError> {
        self.revocations
            .fetch_and_update(key, |old| {
                let prev = old.map(be_u64).unwrap_or(0);
                Some(prev.max(until).to_be_bytes().to_vec())
            })
            .map_err(unavailable)?;
        Ok(())
    }

    fn user_sids(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let mut prefix = user.as_bytes().to_vec();
        prefix.push(0);
        let mut sids = Vec::new();
        for item in self.user_sessions.scan_prefix(&prefix) {
            let (k, _) = item.map_err(unavailable)?;
            sids.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
        }
        Ok(sids)
    }

    pub(super) fn secret(&self) -> Result<[u8; 32], StoreError> {
        let mut fresh = [0u8; 32];
        rand::fill(&mut fresh[..]);
        // Created once; every later call reads the same key.
        let _ = self
            .meta
            .compare_and_swap(b"rotation_key", None as Option<&[u8]>, Some(&fresh[..]))
            .map_err(unavailable)?;
        let stored = self
            .meta
            .get(b"rotation_key")
            .map_err(unavailable)?
            .ok_or_else(|| StoreError::Corrupt("rotation key missing".into()))?;
        stored
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::Corrupt("rotation key has the wrong length".into()))
    }

    pub(super) fn create_family(&self, f: &Family) -> Result<(), StoreError> {
        let record = encode(f)?;
        self.tokens
            .insert(f.current.as_bytes(), f.sid.as_bytes())
            .map_err(unavailable)?;
        self.user_sessions
            .insert(user_key(&f.user, &f.sid), &[][..])
            .map_err(unavailable)?;
        self.families
            .insert(f.sid.as_bytes(), record)
            .map_err(unavailable)?;
        Ok(())
    }

    /// The rotation state machine, one compare-and-set on the family record.
    pub(super) fn rotate(
        &self,
        presented: &str,
        successor: &str,
        now_ms: u64,
        policy: &RotationPolicy,
    ) -> Result<RotateOutcome, StoreError> {
        let now = now_ms / 1000;
        let Some(sid) = self.tokens.get(presented).map_err(unavailable)? else {
            return Ok(RotateOutcome::Invalid);
        };
        let sid = String::from_utf8_lossy(&sid).into_owned();
        let Some((old, f)) = self.get_family(&sid)? else {
            return Ok(RotateOutcome::Invalid);
        };
        if f.revoked || now >= f.expires_at() {
            return Ok(RotateOutcome::Invalid);
        }
        if f.current == presented {
            let mut next = f.clone();
            next.previous = Some(f.current.clone());
            next.current = successor.to_string();
            next.rotated_at = now;
            next.rotated_at_ms = Some(now_ms);
            next.idle_exp = (now + policy.refresh_ttl).min(f.max_exp);
            let record = encode(&next)?;
            // Index first: harmless if the swap loses, needed before the token is usable.
            self.tokens
                .insert(successor.as_bytes(), sid.as_bytes())
                .map_err(unavailable)?;
            return match self
                .families
                .compare_and_swap(sid.as_bytes(), Some(old), Some(record))
                .map_err(unavailable)?
            {
                Ok(()) => Ok(RotateOutcome::Rotated {
                    family: next,
                    replay: false,
                }),
                // Only this thread writes, so the record cannot have moved; refuse rather
                // than guess if it ever does.
                Err(_) => Err(StoreError::Unavailable(
                    "family record changed during rotation".into(),
                )),
            };
        }
        let in_grace = f.previous.as_deref() == Some(presented)
            && f.current == successor
            && now_ms <= f.rotated_ms().saturating_add(policy.reuse_grace_ms);
        if in_grace {
            return Ok(RotateOutcome::Rotated {
                family: f,
                replay: true,
            });
        }
        // Reuse of an already-rotated token.
        let until = now + policy.revocation_ttl;
        let sids = if policy.revoke_user_on_reuse {
            self.user_sids(&f.user)?
        } else {
            vec![sid.clone()]
        };
        for s in &sids {
            self.revoke_family(s, until)?;
        }
        Ok(RotateOutcome::Reused {
            user: f.user,
            revoked_sids: sids,
        })
    }

    pub(super) fn family(&self, sid: &str) -> Result<Option<Family>, StoreError> {
        Ok(self.get_family(sid)?.map(|(_, f)| f))
    }

    pub(super) fn family_of(&self, token_hash: &str) -> Result<Option<Family>, StoreError> {
        match self.tokens.get(token_hash).map_err(unavailable)? {
            Some(sid) => self.family(&String::from_utf8_lossy(&sid)),
            None => Ok(None),
        }
    }

    pub(super) fn remember_device(
        &self,
        user: &str,
        device: &str,
        now: u64,
        ttl: u64,
    ) -> Result<bool, StoreError> {
        let key = user_key(user, device);
        let known = self
            .known_devices
            .get(&key)
            .map_err(unavailable)?
            .is_some_and(|until| be_u64(&until) > now);
        self.known_devices
            .insert(key, &(now + ttl).to_be_bytes()[..])
            .map_err(unavailable)?;
        Ok(known)
    }

    pub(super) fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Family>, StoreError> {
        let mut out = Vec::new();
        for sid in self.user_sids(user)? {
            if let Some(f) = self.family(&sid)? {
                if !f.revoked && f.expires_at() > now {
                    out.push(f);
                }
            }
        }
        Ok(out)
    }

    pub(super) fn revoke_user(&self, user: &str, until: u64) -> Result<Vec<String>, StoreError> {
        let sids = self.user_sids(user)?;
        for s in &sids {
            self.revoke_family(s, until)?;
        }
        Ok(sids)
    }

    pub(super) fn revocations(&self, now: u64) -> Result<Vec<Revocation>, StoreError> {
        let mut out = Vec::new();
        for item in self.revocations.iter() {
            let (k, v) = item.map_err(unavailable)?;
            let until = be_u64(&v);
            if until < now {
                continue;
            }
            if let Some(r) = Revocation::from_key(&String::from_utf8_lossy(&k), until) {
                out.push(r);
            }
        }
        Ok(out)
    }
}

/// A stored throttling counter: when its newest event leaves the window, and the events.
fn rate_record(expires: u64, events: &[u64]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 * (events.len() + 1));
    v.extend_from_slice(&expires.to_be_bytes());
    for t in events {
        v.extend_from_slice(&t.to_be_bytes());
    }
    v
}

impl Trees {
    pub(super) fn rate_limit(
        &self,
        key: &str,
        count: u32,
        window: u64,
        now: u64,
        add: bool,
    ) -> Result<Result<(), u64>, StoreError> {
        let stored = self.rate_limits.get(key).map_err(unavailable)?;
        let mut events: Vec<u64> = stored
            .as_deref()
            .unwrap_or_default()
            .chunks_exact(8)
            .skip(1)
            .map(be_u64)
            .filter(|t| t + window > now)
            .collect();
        if events.len() >= count as usize {
            let oldest = events[events.len() - count as usize];
            return Ok(Err((oldest + window).saturating_sub(now).max(1)));
        }
        if add {
            events.push(now);
            let newest = events.iter().copied().max().unwrap_or(now);
            self.rate_limits
                .insert(key, rate_record(newest + window, &events))
                .map_err(unavailable)?;
        }
        Ok(Ok(()))
    }

    pub(super) fn unlock(&self, unlock: &crate::store::Unlock) -> Result<u64, StoreError> {
        let mut removed = 0;
        for item in self.rate_limits.scan_prefix(unlock.prefix()) {
            let (k, _) = item.map_err(unavailable)?;
            if unlock.matches(&String::from_utf8_lossy(&k)) {
                self.rate_limits.remove(&k).map_err(unavailable)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A step-up: the session's new authentication time and methods.
    pub(super) fn reauthenticate(
        &self,
        sid: &str,
        auth_time: u64,
        amr: Vec<String>,
    ) -> Result<bool, StoreError> {
        let Some((old, mut f)) = self.get_family(sid)? else {
            return Ok(false);
        };
        if f.revoked || auth_time >= f.expires_at() {
            return Ok(false);
        }
        f.auth_time = Some(auth_time);
        f.amr = amr;
        // The writer is the only writer: the swap cannot lose.
        Ok(self
            .families
            .compare_and_swap(sid, Some(old), Some(encode(&f)?))
            .map_err(unavailable)?
            .is_ok())
    }

    pub(super) fn mfa(&self, user: &str) -> Result<Option<MfaRecord>, StoreError> {
        match self.mfa.get(user).map_err(unavailable)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("second-factor record: {e}"))),
            None => Ok(None),
        }
    }

    /// Read, change, write: atomic because this thread is the only writer.
    pub(super) fn change_mfa(&self, user: &str, change: &MfaChange) -> Result<bool, StoreError> {
        let (next, accepted) = change.apply(self.mfa(user)?);
        if !accepted {
            return Ok(false);
        }
        match next {
            Some(r) => {
                let bytes = serde_json::to_vec(&r)
                    .map_err(|e| StoreError::Corrupt(format!("second-factor record: {e}")))?;
                self.mfa.insert(user, bytes).map_err(unavailable)?;
            }
            None => {
                self.mfa.remove(user).map_err(unavailable)?;
            }
        }
        Ok(true)
    }
}
