//! The in-memory revocation view checked on every request (after the token cache): revoked
//! access-token ids (`jti`, after logout) and revoked sessions (`sid`, after reuse or
//! logout-all). Each entry lives until the longest access token it covers has expired (plus
//! leeway); the store is the durable copy and refills this view at start.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

/// Told about every revocation as it enters the view (open WebSockets of the session close).
pub trait RevocationListener: Send + Sync {
    fn revoked_jti(&self, jti: &str);
    fn revoked_sid(&self, sid: &str);
}

/// Revoked `jti`s and `sid`s with the unix time until which each must be refused.
#[derive(Default)]
pub struct RevocationView {
    jtis: RwLock<HashMap<String, u64>>,
    sids: RwLock<HashMap<String, u64>>,
    listener: OnceLock<Arc<dyn RevocationListener>>,
}

impl RevocationView {
    pub fn new() -> Self {
        Self::default()
    }

    /// Install the listener (once, at start-up).
    pub fn set_listener(&self, listener: Arc<dyn RevocationListener>) {
        let _ = self.listener.set(listener);
    }

    pub fn revoke_jti(&self, jti: &str, until: u64) {
        Self::put(&self.jtis, jti, until);
        if let Some(l) = self.listener.get() {
            l.revoked_jti(jti);
        }
    }

    pub fn revoke_sid(&self, sid: &str, until: u64) {
        Self::put(&self.sids, sid, until);
        if let Some(l) = self.listener.get() {
            l.revoked_sid(sid);
        }
    }

    fn put(map: &RwLock<HashMap<String, u64>>, key: &str, until: u64) {
        let mut m = map.write().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(key.to_string()).or_insert(0);
        *e = (*e).max(until);
    }

    /// Is a token with this `jti` and `sid` revoked at `now`?
    pub fn is_revoked(&self, jti: &str, sid: &str, now: u64) -> bool {
        let hit = |map: &RwLock<HashMap<String, u64>>, key: &str| {
            !key.is_empty()
                && map
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(key)
                    .is_some_and(|until| *until >= now)
        };
        hit(&self.sids, sid) || hit(&self.jtis, jti)
    }

    /// Drop entries whose tokens have all expired.
    pub fn prune(&self, now: u64) {
        for map in [&self.jtis, &self.sids] {
            map.write()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|_, until| *until >= now);
        }
    }

    pub fn len(&self) -> usize {
        self.jtis.read().map(|m| m.len()).unwrap_or(0)
            + self.sids.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_prune() {
        let v = RevocationView::new();
        v.revoke_jti("j1", 100);
        v.revoke_sid("s1", 200);
        assert!(v.is_revoked("j1", "x", 50));
        assert!(v.is_revoked("x", "s1", 150));
        assert!(!v.is_revoked("j1", "x", 101));
        assert!(!v.is_revoked("", "", 0));
        v.prune(150);
        assert_eq!(v.len(), 1);
    }
}
