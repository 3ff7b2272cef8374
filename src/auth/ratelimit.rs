//! Sliding-window counters: failed logins per client IP and per account, refreshes per IP.
//! A key holds at most `count` timestamps and idles out with its window, so memory is bounded
//! and a stranger cannot lock an account out for longer than one window. With a shared store
//! (Redis) the windows live there, so every instance counts together.

use crate::config::Rate;
use crate::store::{StoreError, TokenStore};
use moka::sync::Cache;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct RateLimiter {
    windows: Cache<String, Arc<Mutex<VecDeque<u64>>>>,
}

impl RateLimiter {
    /// `longest` is the longest configured window (entries idle out after it).
    pub fn new(longest: Duration) -> Self {
        RateLimiter {
            windows: Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(longest + Duration::from_secs(1))
                .build(),
        }
    }

    fn window(&self, key: &str) -> Arc<Mutex<VecDeque<u64>>> {
        self.windows
            .get_with(key.to_string(), || Arc::new(Mutex::new(VecDeque::new())))
    }

    /// `Err(retry_after_secs)` when `key` already has `rate.count` events in the window.
    pub fn check(&self, key: &str, rate: Rate, now: u64) -> Result<(), u64> {
        let Some(w) = self.windows.get(key) else {
            return Ok(());
        };
        let mut q = w.lock().unwrap_or_else(|e| e.into_inner());
        let window = rate.window.as_secs().max(1);
        while q.front().is_some_and(|t| t + window <= now) {
            q.pop_front();
        }
        if q.len() >= rate.count as usize {
            let oldest = *q.front().unwrap_or(&now);
            return Err((oldest + window).saturating_sub(now).max(1));
        }
        Ok(())
    }

    /// Record one event for `key`.
    pub fn hit(&self, key: &str, rate: Rate, now: u64) {
        let w = self.window(key);
        let mut q = w.lock().unwrap_or_else(|e| e.into_inner());
        q.push_back(now);
        while q.len() > rate.count as usize {
            q.pop_front();
        }
    }

    /// Record one event, in `store` when it shares windows.
    pub async fn hit_shared(
        &self,
        store: &dyn TokenStore,
        key: &str,
        rate: Rate,
        now: u64,
    ) -> Result<(), StoreError> {
        match store.rate_limit(key, rate, now, true).await {
            Some(r) => r.map(|_| ()),
            None => {
                self.hit(key, rate, now);
                Ok(())
            }
        }
    }

    /// `Err(retry_after)` when over the limit; with `record`, the event counts first. In
    /// `store` when it shares windows, else in this process.
    pub async fn shared(
        &self,
        store: &dyn TokenStore,
        key: &str,
        rate: Rate,
        now: u64,
        record: bool,
    ) -> Result<Result<(), u64>, StoreError> {
        match store.rate_limit(key, rate, now, record).await {
            Some(r) => r,
            None if record => Ok(self.hit_and_check(key, rate, now)),
            None => Ok(self.check(key, rate, now)),
        }
    }

    /// Record an event and refuse it when it is over the limit.
    pub fn hit_and_check(&self, key: &str, rate: Rate, now: u64) -> Result<(), u64> {
        let r = self.check(key, rate, now);
        if r.is_ok() {
            self.hit(key, rate, now);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_per_window_then_retry_after_then_expiry() {
        let rate = Rate {
            count: 5,
            window: Duration::from_secs(900),
        };
        let l = RateLimiter::new(rate.window);
        for i in 0..5 {
            assert!(l.check("k", rate, 1000 + i).is_ok());
            l.hit("k", rate, 1000 + i);
        }
        assert_eq!(l.check("k", rate, 1010), Err(890));
        assert!(l.check("other", rate, 1010).is_ok());
        assert!(
            l.check("k", rate, 1900).is_ok(),
            "the oldest failure left the window"
        );
    }
}
