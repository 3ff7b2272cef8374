//! The embedded default store: one sled database in a directory.
//!
//! Trees: `families` (sid -> Family JSON), `tokens` (refresh-token hash -> sid, for every
//! token a family ever had, so replays of old ones are recognised), `user_sessions`
//! (`user\0sid`), `revocations` (`j:<jti>` / `s:<sid>` -> until, big-endian u64), `meta`.
//! Every mutation is flushed before the call returns.

use super::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// sled-backed token store.
pub struct SledStore {
    db: ::sled::Db,
    families: ::sled::Tree,
    tokens: ::sled::Tree,
    user_sessions: ::sled::Tree,
    revocations: ::sled::Tree,
    meta: ::sled::Tree,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn decode(bytes: &[u8]) -> Result<Family, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("family record: {e}")))
}

fn encode(f: &Family) -> Vec<u8> {
    serde_json::to_vec(f).expect("family serializes")
}

fn user_key(user: &str, sid: &str) -> Vec<u8> {
    let mut k = user.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(sid.as_bytes());
    k
}

impl SledStore {
    /// Open (or create) the database at `path`.
    ///
    /// sled holds an exclusive file lock; during a zero-downtime upgrade the old process still
    /// holds it while the new one starts, so the open is retried for up to `wait`.
    pub fn open(path: &Path, wait: Duration) -> Result<Self, StoreError> {
        let deadline = Instant::now() + wait;
        let db = loop {
            let result = ::sled::Config::new()
                .path(path)
                .cache_capacity(64 * 1024 * 1024)
                .open();
            match result {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => {
                    let locked = is_lock_error(&e);
                    return Err(StoreError::Unavailable(format!(
                        "cannot open sled database {}: {e}{}",
                        path.display(),
                        if locked {
                            " (another process holds it; several gateway processes need store.backend: redis)"
                        } else {
                            ""
                        }
                    )));
                }
            }
        };
        let tree = |name: &str| db.open_tree(name).map_err(unavailable);
        Ok(SledStore {
            families: tree("families")?,
            tokens: tree("tokens")?,
            user_sessions: tree("user_sessions")?,
            revocations: tree("revocations")?,
            meta: tree("meta")?,
            db,
        })
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await.map(|_| ()).map_err(unavailable)
    }

    fn get_family(&self, sid: &str) -> Result<Option<(::sled::IVec, Family)>, StoreError> {
        match self.families.get(sid).map_err(unavailable)? {
            Some(bytes) => {
                let f = decode(&bytes)?;
                Ok(Some((bytes, f)))
            }
            None => Ok(None),
        }
    }

    /// Mark `sid` revoked and remember the revocation; no flush.
    fn revoke_family_unflushed(&self, sid: &str, until: u64) -> Result<bool, StoreError> {
        let mut changed = false;
        loop {
            let Some((old, mut f)) = self.get_family(sid)? else {
                break;
            };
            if f.revoked {
                break;
            }
            f.revoked = true;
            match self
                .families
                .compare_and_swap(sid, Some(old), Some(encode(&f)))
                .map_err(unavailable)?
            {
                Ok(()) => {
                    changed = true;
                    break;
                }
                Err(_) => continue,
            }
        }
        self.put_revocation(&format!("s:{sid}"), until)?;
        Ok(changed)
    }

    fn put_revocation(&self, key: &str, until: u64) -> Result<(), StoreError> {
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
}

/// sled reports a held lock as an I/O error whose text names the lock.
fn is_lock_error(e: &::sled::Error) -> bool {
    matches!(e, ::sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("could not acquire lock"))
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

#[async_trait]
impl TokenStore for SledStore {
    fn backend(&self) -> &'static str {
        "sled"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.meta.get(b"ping").map(|_| ()).map_err(unavailable)
    }

    async fn secret(&self) -> Result<[u8; 32], StoreError> {
        let mut fresh = [0u8; 32];
        rand::fill(&mut fresh[..]);
        // First writer wins; everyone reads the winner.
        let _ = self
            .meta
            .compare_and_swap(b"rotation_key", None as Option<&[u8]>, Some(&fresh[..]))
            .map_err(unavailable)?;
        self.flush().await?;
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

    async fn create_family(&self, f: &Family) -> Result<(), StoreError> {
        self.tokens
            .insert(f.current.as_bytes(), f.sid.as_bytes())
            .map_err(unavailable)?;
        self.user_sessions
            .insert(user_key(&f.user, &f.sid), &[][..])
            .map_err(unavailable)?;
        self.families
            .insert(f.sid.as_bytes(), encode(f))
            .map_err(unavailable)?;
        self.flush().await
    }

    async fn rotate(
        &self,
        presented: &str,
        successor: &str,
        now: u64,
        policy: &RotationPolicy,
    ) -> Result<RotateOutcome, StoreError> {
        let Some(sid) = self.tokens.get(presented).map_err(unavailable)? else {
            return Ok(RotateOutcome::Invalid);
        };
        let sid = String::from_utf8_lossy(&sid).into_owned();
        loop {
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
                next.idle_exp = (now + policy.refresh_ttl).min(f.max_exp);
                // Index first: harmless if the swap loses, needed before the token is usable.
                self.tokens
                    .insert(successor.as_bytes(), sid.as_bytes())
                    .map_err(unavailable)?;
                match self
                    .families
                    .compare_and_swap(sid.as_bytes(), Some(old), Some(encode(&next)))
                    .map_err(unavailable)?
                {
                    Ok(()) => {
                        self.flush().await?;
                        return Ok(RotateOutcome::Rotated {
                            family: next,
                            replay: false,
                        });
                    }
                    Err(_) => continue, // someone else rotated first: decide again
                }
            }
            let in_grace = f.previous.as_deref() == Some(presented)
                && f.current == successor
                && now <= f.rotated_at + policy.reuse_grace;
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
                self.revoke_family_unflushed(s, until)?;
            }
            self.flush().await?;
            return Ok(RotateOutcome::Reused {
                user: f.user,
                revoked_sids: sids,
            });
        }
    }

    async fn family_of(&self, token_hash: &str) -> Result<Option<Family>, StoreError> {
        match self.tokens.get(token_hash).map_err(unavailable)? {
            Some(sid) => self.family(&String::from_utf8_lossy(&sid)).await,
            None => Ok(None),
        }
    }

    async fn family(&self, sid: &str) -> Result<Option<Family>, StoreError> {
        Ok(self.get_family(sid)?.map(|(_, f)| f))
    }

    async fn revoke_family(&self, sid: &str, until: u64) -> Result<bool, StoreError> {
        let changed = self.revoke_family_unflushed(sid, until)?;
        self.flush().await?;
        Ok(changed)
    }

    async fn revoke_user(&self, user: &str, until: u64) -> Result<Vec<String>, StoreError> {
        let sids = self.user_sids(user)?;
        for s in &sids {
            self.revoke_family_unflushed(s, until)?;
        }
        self.flush().await?;
        Ok(sids)
    }

    async fn revoke_jti(&self, jti: &str, until: u64) -> Result<(), StoreError> {
        self.put_revocation(&format!("j:{jti}"), until)?;
        self.flush().await
    }

    async fn revocations(&self, now: u64) -> Result<Vec<Revocation>, StoreError> {
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

    async fn prune(&self, now: u64) -> Result<(), StoreError> {
        for item in self.revocations.iter() {
            let (k, v) = item.map_err(unavailable)?;
            if be_u64(&v) < now {
                self.revocations.remove(k).map_err(unavailable)?;
            }
        }
        let mut gone = std::collections::HashSet::new();
        for item in self.families.iter() {
            let (k, v) = item.map_err(unavailable)?;
            let f = decode(&v)?;
            if f.expires_at() < now {
                self.families.remove(&k).map_err(unavailable)?;
                self.user_sessions
                    .remove(user_key(&f.user, &f.sid))
                    .map_err(unavailable)?;
                gone.insert(f.sid);
            }
        }
        if !gone.is_empty() {
            for item in self.tokens.iter() {
                let (k, v) = item.map_err(unavailable)?;
                if gone.contains(String::from_utf8_lossy(&v).as_ref()) {
                    self.tokens.remove(k).map_err(unavailable)?;
                }
            }
        }
        self.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sled_passes_the_store_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(SledStore::open(&dir.path().join("db"), Duration::from_secs(1)).unwrap());
        crate::store::contract::run(store.as_ref(), "sled").await;
        crate::store::contract::concurrent_rotation(store.clone(), "sled").await;
        // sled forgets ended sessions when pruned.
        store.prune(1_800_000_000 + 2000).await.unwrap();
        assert!(store.family("sled-s1").await.unwrap().is_none());
    }
}
