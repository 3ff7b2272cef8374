//! Writes a client's credentials depend on, made durable on replicas before the call returns
//! (`store.redis_min_replicas_acked`), and refused while a failover is under way.

use super::link::Pinned;
use super::{unavailable, unix_now, RedisStore, P};
use crate::store::{RotateOutcome, StoreError};
use std::sync::atomic::Ordering;

impl RedisStore {
    /// A connection for a write that [`Self::acked`] will then make durable.
    pub(super) async fn durable(&self) -> Result<Pinned, StoreError> {
        if self.link.failing_over() {
            return Err(StoreError::Unavailable(
                "redis: a failover is in progress".into(),
            ));
        }
        self.link.pinned().await.map_err(unavailable)
    }

    /// With `store.redis_min_replicas_acked`, wait until that many replicas hold every write
    /// made on `c`; fewer within the timeout fail the call (the client gets 503 instead of a
    /// credential the loss of the master could take back).
    pub(super) async fn acked(&self, c: &mut Pinned) -> Result<(), StoreError> {
        if self.min_replicas_acked == 0 {
            return Ok(());
        }
        let n: u64 = ::redis::cmd("WAIT")
            .arg(self.min_replicas_acked)
            .arg(super::link::WAIT_TIMEOUT_MS)
            .query_async(c)
            .await
            .map_err(unavailable)?;
        let wanted = self.min_replicas_acked;
        if n < u64::from(wanted) {
            if !self.short_of_replicas.swap(true, Ordering::SeqCst) {
                tracing::warn!(target: "portcullis::store", acknowledged = n, wanted, "too few redis replicas acknowledge writes; logins and refreshes answer 503");
            }
            // Maybe the replicas follow a new master: find out without delaying this answer.
            let link = self.link.clone();
            crate::store::runtime().spawn(async move { link.check_master().await });
            return Err(StoreError::Unavailable(format!(
                "redis: {n} of {wanted} replicas acknowledged the write"
            )));
        }
        if self.short_of_replicas.swap(false, Ordering::SeqCst) {
            tracing::info!(target: "portcullis::store", "redis replicas acknowledge writes again");
        }
        Ok(())
    }

    /// Make a rotation's outcome durable before the caller answers with it. A replay hands
    /// out a successor that an earlier call wrote, maybe on another connection and not
    /// replicated yet: a write here, later in the replication stream, makes `WAIT` cover it.
    pub(super) async fn settle(
        &self,
        c: &mut Pinned,
        outcome: &RotateOutcome,
    ) -> Result<(), StoreError> {
        if self.min_replicas_acked == 0 {
            return Ok(());
        }
        match outcome {
            RotateOutcome::Invalid => return Ok(()),
            RotateOutcome::Rotated { replay: true, .. } => {
                let _: () = ::redis::cmd("SET")
                    .arg(format!("{P}sync"))
                    .arg(unix_now())
                    .arg("PX")
                    .arg(60_000)
                    .query_async(c)
                    .await
                    .map_err(unavailable)?;
            }
            _ => {}
        }
        self.acked(c).await
    }

    pub(super) async fn revoke_call(
        &self,
        kind: &str,
        id: &str,
        until: u64,
    ) -> Result<Vec<String>, StoreError> {
        let mut c = self.durable().await?;
        let out = self
            .revoke
            .prepare_invoke()
            .arg(P)
            .arg(kind)
            .arg(id)
            .arg(until)
            .invoke_async(&mut c)
            .await
            .map_err(unavailable)?;
        self.acked(&mut c).await?;
        Ok(out)
    }
}
