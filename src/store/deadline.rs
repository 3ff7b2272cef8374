//! A deadline on every store call (`store.timeout`), whatever the backend.
//!
//! A store that stops answering (a stalled disk, a Redis busy with a slow command or frozen)
//! must cost a request a bounded wait and a clear 503, never a hang that piles up
//! connections until the gateway is useless. Past the deadline the call returns
//! [`StoreError::Unavailable`] (which every caller already answers with 503), an audit line
//! `store_timeout` names the backend and the operation, and readiness reports the store as
//! failing until a call succeeds again. A backend that gives up by itself about as late (Redis
//! has its own response timeout) counts the same.
//!
//! While the store is failing, calls are refused at once, except that once per `store.timeout`
//! one call tries the store (with the full deadline): a request that needs several store
//! calls still gets its 503 after about one `store.timeout`, not one per call, and a
//! recovering store is not met by every queued request at once. Nothing has to be
//! restarted: the first call that gets an answer in time closes the circuit again.
//!
//! What a timed-out call leaves behind: the embedded store never starts a job whose caller
//! has given up, and a job that had already started completes and is flushed whole (see
//! `writer.rs`). A Redis command that was already sent may still run once Redis answers
//! again; each is one atomic script or transaction, so it is applied whole or not at all.
//! Either way a rotation that completed after its client got the 503 is not lost to it: the
//! client still holds the parent, and presenting it again inside `reuse_grace` yields the
//! very same successor (it is derived from the parent). Only a retry later than
//! `reuse_grace` counts as reuse, as it would after any lost response.

use super::*;
use crate::tokens::revocation::RevocationView;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// While the store is known to be failing, readiness probes wait at most this long, so that
/// a probe with a short timeout of its own still gets the 503.
const PROBE_WHILE_FAILING: Duration = Duration::from_millis(500);

/// Pruning is background work whose length grows with the data, not a sign of a stalled
/// store: it runs once a minute, so it gets that long, and running out of it is logged but
/// does not mark the store as failing.
const PRUNE_DEADLINE: Duration = Duration::from_secs(60);

/// Any backend, with a deadline on each call.
pub struct WithDeadline {
    inner: SharedStore,
    timeout: Duration,
    /// A call ran out of time (or its backend gave up about as late), and none has succeeded
    /// since.
    failing: AtomicBool,
    /// A call is trying the store while it is failing.
    probing: AtomicBool,
    /// While failing, no call tries the store before this (milliseconds since `epoch`).
    retry_at_ms: AtomicU64,
    epoch: Instant,
}

/// The right to try a failing store; given back when the call ends or is dropped.
struct Probe<'a>(&'a AtomicBool);

impl<'a> Probe<'a> {
    fn take(slot: &'a AtomicBool) -> Option<Self> {
        (!slot.swap(true, Ordering::SeqCst)).then_some(Probe(slot))
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Wrap `inner` so that each call gives up after `timeout`.
pub fn with_deadline(inner: SharedStore, timeout: Duration) -> SharedStore {
    Arc::new(WithDeadline::new(inner, timeout))
}

impl WithDeadline {
    pub fn new(inner: SharedStore, timeout: Duration) -> Self {
        WithDeadline {
            inner,
            timeout,
            failing: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            retry_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Whether the store is currently considered down after a timeout.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    fn answered(&self) {
        if self.failing.swap(false, Ordering::SeqCst) {
            tracing::info!(target: "portcullis::audit", event = "store_recovered", backend = self.inner.backend());
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn timed_out(&self, op: &'static str, limit: Duration) -> StoreError {
        let cool_down = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        self.retry_at_ms.store(
            self.elapsed_ms().saturating_add(cool_down),
            Ordering::SeqCst,
        );
        self.failing.store(true, Ordering::SeqCst);
        let ms = limit.as_millis() as u64;
        tracing::warn!(
            target: "portcullis::audit",
            event = "store_timeout",
            backend = self.inner.backend(),
            operation = op,
            timeout_ms = ms,
        );
        StoreError::Unavailable(format!(
            "{}: no answer within {ms} ms",
            self.inner.backend()
        ))
    }

    /// Refused without trying: the store failed moments ago, or another call is already
    /// finding out whether it is back.
    fn refused(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "{}: not answering (no answer within {} ms)",
            self.inner.backend(),
            self.timeout.as_millis()
        ))
    }

    /// While failing: the right to try (once the cool-down is over and no other call is
    /// trying), or a refusal.
    fn admit(&self) -> Result<Option<Probe<'_>>, StoreError> {
        if !self.is_failing() {
            return Ok(None);
        }
        if self.elapsed_ms() < self.retry_at_ms.load(Ordering::SeqCst) {
            return Err(self.refused());
        }
        Probe::take(&self.probing)
            .map(Some)
            .ok_or_else(|| self.refused())
    }

    /// `call` with the deadline; a successful answer clears the failing state.
    async fn within<T>(
        &self,
        op: &'static str,
        limit: Duration,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let _probe = self.admit()?;
        let started = Instant::now();
        let outcome = tokio::time::timeout(limit, call).await;
        self.settle(op, limit, started, outcome)
    }

    /// What a call's outcome says about the store. A backend that gave up by itself, about as
    /// late as the deadline (Redis's own response timeout), counts as a timeout too.
    fn settle<T>(
        &self,
        op: &'static str,
        limit: Duration,
        started: Instant,
        outcome: Result<Result<T, StoreError>, tokio::time::error::Elapsed>,
    ) -> Result<T, StoreError> {
        match outcome {
            Ok(Ok(v)) => {
                self.answered();
                Ok(v)
            }
            Ok(Err(StoreError::Unavailable(m))) if started.elapsed() >= limit / 2 => {
                self.timed_out(op, limit);
                Err(StoreError::Unavailable(m))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(self.timed_out(op, limit)),
        }
    }
}

#[async_trait]
impl TokenStore for WithDeadline {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let limit = if self.is_failing() {
            self.timeout.min(PROBE_WHILE_FAILING)
        } else {
            self.timeout
        };
        self.within("ping", limit, self.inner.ping()).await
    }

    async fn secret(&self) -> Result<[u8; 32], StoreError> {
        self.within("secret", self.timeout, self.inner.secret())
            .await
    }

    async fn create_family(&self, family: &Family) -> Result<(), StoreError> {
        self.within(
            "create_family",
            self.timeout,
            self.inner.create_family(family),
        )
        .await
    }

    async fn rotate(
        &self,
        presented: &str,
        successor: &str,
        now_ms: u64,
        policy: &RotationPolicy,
    ) -> Result<RotateOutcome, StoreError> {
        self.within(
            "rotate",
            self.timeout,
            self.inner.rotate(presented, successor, now_ms, policy),
        )
        .await
    }

    async fn family_of(&self, token_hash: &str) -> Result<Option<Family>, StoreError> {
        self.within("family_of", self.timeout, self.inner.family_of(token_hash))
            .await
    }

    async fn family(&self, sid: &str) -> Result<Option<Family>, StoreError> {
        self.within("family", self.timeout, self.inner.family(sid))
            .await
    }

    async fn revoke_family(&self, sid: &str, until: u64) -> Result<bool, StoreError> {
        self.within(
            "revoke_family",
            self.timeout,
            self.inner.revoke_family(sid, until),
        )
        .await
    }

    async fn remember_device(
        &self,
        user: &str,
        device: &str,
        now: u64,
        ttl: u64,
    ) -> Result<bool, StoreError> {
        self.within(
            "remember_device",
            self.timeout,
            self.inner.remember_device(user, device, now, ttl),
        )
        .await
    }

    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Family>, StoreError> {
        self.within(
            "sessions_of",
            self.timeout,
            self.inner.sessions_of(user, now),
        )
        .await
    }

    async fn revoke_user(&self, user: &str, until: u64) -> Result<Vec<String>, StoreError> {
        self.within(
            "revoke_user",
            self.timeout,
            self.inner.revoke_user(user, until),
        )
        .await
    }

    async fn revoke_jti(&self, jti: &str, until: u64) -> Result<(), StoreError> {
        self.within(
            "revoke_jti",
            self.timeout,
            self.inner.revoke_jti(jti, until),
        )
        .await
    }

    async fn revocations(&self, now: u64) -> Result<Vec<Revocation>, StoreError> {
        self.within("revocations", self.timeout, self.inner.revocations(now))
            .await
    }

    /// Skipped while the store is failing: it must not hold the one probe for long.
    async fn prune(&self, now: u64) -> Result<(), StoreError> {
        if self.is_failing() {
            return Err(self.refused());
        }
        let limit = PRUNE_DEADLINE.max(self.timeout);
        match tokio::time::timeout(limit, self.inner.prune(now)).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!(target: "portcullis::store", backend = self.inner.backend(), timeout_ms = limit.as_millis() as u64, "prune did not finish in time");
                Err(StoreError::Unavailable(format!(
                    "{}: prune did not finish within {} s",
                    self.inner.backend(),
                    limit.as_secs()
                )))
            }
        }
    }

    /// Runs for the life of the process by design: no deadline (each backend bounds its own
    /// round trips and reports staleness through `revocations_fresh`).
    async fn watch_revocations(&self, view: Arc<RevocationView>) {
        self.inner.watch_revocations(view).await
    }

    fn revocations_fresh(&self) -> bool {
        self.inner.revocations_fresh()
    }

    async fn revocations_loaded(&self) -> bool {
        tokio::time::timeout(self.timeout, self.inner.revocations_loaded())
            .await
            .unwrap_or(false)
    }

    fn handed_over(&self) -> bool {
        self.inner.handed_over()
    }

    async fn rate_limit(
        &self,
        throttle: Throttle<'_>,
        rate: Rate,
        now: u64,
        add: bool,
    ) -> Result<Result<(), u64>, StoreError> {
        let call = self.inner.rate_limit(throttle, rate, now, add);
        self.within("rate_limit", self.timeout, call).await
    }

    async fn unlock(&self, unlock: &Unlock) -> Result<u64, StoreError> {
        self.within("unlock", self.timeout, self.inner.unlock(unlock))
            .await
    }

    async fn reauthenticate(
        &self,
        sid: &str,
        auth_time: u64,
        amr: &[String],
    ) -> Result<bool, StoreError> {
        let call = self.inner.reauthenticate(sid, auth_time, amr);
        self.within("reauthenticate", self.timeout, call).await
    }

    async fn mfa(&self, user: &str) -> Result<Option<MfaRecord>, StoreError> {
        self.within("mfa", self.timeout, self.inner.mfa(user)).await
    }

    async fn change_mfa(&self, user: &str, change: &MfaChange) -> Result<bool, StoreError> {
        let call = self.inner.change_mfa(user, change);
        self.within("change_mfa", self.timeout, call).await
    }
}

#[cfg(test)]
mod tests;
