//! Each instance's revocation view kept current: revocations published by any instance are
//! applied as they come, and everything is reloaded after a reconnect or a new master.

use super::{unavailable, unix_now, RedisStore, CHANNEL};
use crate::store::{apply_revocations, StoreError, TokenStore};
use crate::tokens::revocation::RevocationView;
use futures_util::StreamExt;
use std::sync::atomic::Ordering;
use std::time::Duration;

impl RedisStore {
    fn apply(view: &RevocationView, msg: &str) {
        let mut parts = msg.rsplitn(2, ':');
        let (Some(until), Some(rest)) = (parts.next(), parts.next()) else {
            return;
        };
        let Ok(until) = until.parse::<u64>() else {
            return;
        };
        match rest.split_once(':') {
            Some(("s", sid)) => view.revoke_sid(sid, until),
            Some(("j", jti)) => view.revoke_jti(jti, until),
            _ => {}
        }
    }

    /// One subscription lifetime: subscribe, reload every revocation, then apply messages
    /// while pinging; returns when the connection is lost or replaced (a new master).
    async fn watch_once(&self, view: &RevocationView) -> Result<(), StoreError> {
        // On the master the commands go to: after a failover, on the new one.
        let live = self.link.live().await.map_err(unavailable)?;
        let mut generations = self.link.generations();
        let master_changed = || StoreError::Unavailable("redis: the master changed".into());
        if *generations.borrow_and_update() != live.gen {
            return Err(master_changed());
        }
        let mut pubsub =
            tokio::time::timeout(Duration::from_millis(1000), live.client.get_async_pubsub())
                .await
                .map_err(|_| StoreError::Unavailable("redis: timed out".into()))?
                .map_err(unavailable)?;
        drop(live);
        pubsub.subscribe(CHANNEL).await.map_err(unavailable)?;
        // Subscribed first, then loaded: nothing published in between is missed.
        apply_revocations(view, &self.revocations(unix_now()).await?);
        // Loaded from a master that is still the current one, or loaded again.
        if generations.has_changed().unwrap_or(true) {
            return Err(master_changed());
        }
        self.synced.store(true, Ordering::SeqCst);
        self.last_ok.store(unix_now(), Ordering::SeqCst);
        tracing::info!(target: "portcullis::store", "redis revocation view synchronised");
        let mut messages = pubsub.on_message();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                msg = messages.next() => match msg {
                    Some(m) => {
                        if let Ok(text) = m.get_payload::<String>() {
                            Self::apply(view, &text);
                        }
                    }
                    None => return Err(StoreError::Unavailable("redis: subscription closed".into())),
                },
                // Reconnected (to a new master, or the same after an outage): subscribe there
                // and reload, as writes made meanwhile were never published to us.
                _ = generations.changed() => return Err(master_changed()),
                _ = tick.tick() => {
                    let pong: Result<String, _> = ::redis::cmd("PING").query_async(&mut self.conn()).await;
                    match pong {
                        Ok(_) => self.last_ok.store(unix_now(), Ordering::SeqCst),
                        Err(e) => return Err(unavailable(e)),
                    }
                }
            }
        }
    }

    /// Keep the revocation view current across connection losses and failovers.
    pub(super) async fn watch(&self, view: &RevocationView) {
        let mut generations = self.link.generations();
        loop {
            generations.borrow_and_update();
            if let Err(e) = self.watch_once(view).await {
                if self.synced.swap(false, Ordering::SeqCst) {
                    tracing::error!(target: "portcullis::store", error = %e, "redis connection lost; resynchronising");
                }
            }
            // Again when the connection changes (a request reached the new master: readiness
            // follows at once), at the latest after 250 ms.
            let _ = tokio::time::timeout(Duration::from_millis(250), generations.changed()).await;
        }
    }
}
