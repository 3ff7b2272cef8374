//! The in-memory revocation view checked on every request (after the token cache): revoked
//! access-token ids (`jti`, after logout) and revoked sessions (`sid`, after reuse or
//! logout-all). Each entry lives until the longest access token it covers has expired (plus
//! leeway); the store is the durable copy and refills this view at start.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

/// Told about every revocation as it enters the view (open WebSockets of the session close).
pub trait RevocationListener: Send + Sync {
    fn revoked_jti(&self, jti: &str);
    fn revoked_sid(&self, sid: &str);
}

/// Revoked `jti`s and `sid`s with the unix time until which each must be refused.
#[derive(Default)]
pub struct RevocationView {
    jtis: Revoked,
    sids: Revoked,
    listener: OnceLock<Arc<dyn RevocationListener>>,
}

/// One map, with its size readable without the lock: most of the time no token at all is
/// revoked, and then a request's check is one load instead of a lock taken and released.
#[derive(Default)]
struct Revoked {
    map: RwLock<HashMap<String, u64>>,
    /// Written under the write lock after each change.
    len: AtomicUsize,
}

impl Revoked {
    fn put(&self, key: &str, until: u64) {
        let mut m = self.map.write().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(key.to_string()).or_insert(0);
        *e = (*e).max(until);
        self.len.store(m.len(), Ordering::Release);
    }

    /// A check that reads the size as 0 while a revocation is being written is ordered
    /// before that revocation, as if the request had come a moment earlier.
    #[inline]
    fn hit(&self, key: &str, now: u64) -> bool {
        self.len.load(Ordering::Acquire) > 0
            && !key.is_empty()
            && self
                .map
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(key)
                .is_some_and(|until| *until >= now)
    }

    fn prune(&self, now: u64) {
        let mut m = self.map.write().unwrap_or_else(|e| e.into_inner());
        m.retain(|_, until| *until >= now);
        self.len.store(m.len(), Ordering::Release);
    }
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
        self.jtis.put(jti, until);
        if let Some(l) = self.listener.get() {
            l.revoked_jti(jti);
        }
    }

    pub fn revoke_sid(&self, sid: &str, until: u64) {
        self.sids.put(sid, until);
        if let Some(l) = self.listener.get() {
            l.revoked_sid(sid);
        }
    }

    /// Is a token with this `jti` and `sid` revoked at `now`? Checked on every request.
    #[inline]
    pub fn is_revoked(&self, jti: &str, sid: &str, now: u64) -> bool {
        self.sids.hit(sid, now) || self.jtis.hit(jti, now)
    }

    /// Drop entries whose tokens have all expired.
    pub fn prune(&self, now: u64) {
        self.jtis.prune(now);
        self.sids.prune(now);
    }

    pub fn len(&self) -> usize {
        self.jtis.len.load(Ordering::Acquire) + self.sids.len.load(Ordering::Acquire)
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
        assert!(v.is_revoked("x", "s1", 150));
        // Emptied, then a revocation again: the size the check reads first follows both.
        v.prune(1000);
        assert!(v.is_empty());
        assert!(!v.is_revoked("j1", "s1", 0));
        v.revoke_jti("j2", 500);
        assert!(v.is_revoked("j2", "", 10));
        assert!(!v.is_revoked("j1", "s1", 10));
    }
}
