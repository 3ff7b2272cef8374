//! The embedded default store: one sled database in a directory.
//!
//! Trees: `families` (sid -> Family JSON), `tokens` (refresh-token hash -> sid, for every
//! token a family ever had, so replays of old ones are recognised), `user_sessions`
//! (`user\0sid`), `revocations` (`j:<jti>` / `s:<sid>` -> until, big-endian u64), `meta`,
//! `rate_limits` (throttling counters), `known_devices` (`user\0device` -> until), `mfa` (user ->
//! second factor JSON, its secret sealed).
//!
//! Every call runs on the one writer thread (`writer.rs`), which flushes once per batch and
//! answers only after that flush: a write is on disk before its caller sees it, concurrent
//! rotations share one fsync, and sled never sees two flushes at once (its own periodic
//! flusher is off).

mod prune;
mod trees;

#[cfg(test)]
mod tests;

use super::writer::{Access, Writer, WriterStats};
use super::*;
use prune::{PruneCursor, PRUNE_BUDGET};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use trees::{unavailable, Trees};

/// sled-backed token store: a handle on its writer thread.
pub struct SledStore {
    writer: Writer<Trees>,
    /// Where the last, unfinished prune stopped.
    prune_from: Mutex<Option<PruneCursor>>,
}

/// sled reports a held lock as an I/O error whose text names the lock.
fn is_lock_error(e: &::sled::Error) -> bool {
    matches!(e, ::sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("could not acquire lock"))
}

impl SledStore {
    /// Open (or create) the database at `path` and start its writer thread.
    ///
    /// sled holds an exclusive file lock: while another process holds it the open is retried
    /// for up to `wait`.
    pub fn open(path: &Path, wait: Duration) -> Result<Self, StoreError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(store) = Self::try_open(path)? {
                return Ok(store);
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable(format!(
                    "cannot open sled database {}: another process holds it (to take over from a running gateway use `serve --upgrade`; several gateway processes at once need store.backend: redis)",
                    path.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Open the database unless another process holds its lock (`None`).
    pub fn try_open(path: &Path) -> Result<Option<Self>, StoreError> {
        let result = ::sled::Config::new()
            .path(path)
            .cache_capacity(64 * 1024 * 1024)
            // The writer flushes after every batch of writes; a second flusher would only
            // run concurrently with it.
            .flush_every_ms(None)
            .open();
        let db = match result {
            Ok(db) => db,
            Err(e) if is_lock_error(&e) => return Ok(None),
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot open sled database {}: {e}",
                    path.display()
                )))
            }
        };
        let tree = |name: &str| db.open_tree(name).map_err(unavailable);
        let trees = Trees {
            families: tree("families")?,
            tokens: tree("tokens")?,
            user_sessions: tree("user_sessions")?,
            revocations: tree("revocations")?,
            meta: tree("meta")?,
            rate_limits: tree("rate_limits")?,
            known_devices: tree("known_devices")?,
            mfa: tree("mfa")?,
            db,
        };
        Ok(Some(SledStore {
            writer: Writer::start(trees, "portcullis-sled")?,
            prune_from: Mutex::new(None),
        }))
    }

    /// What the writer has done so far (jobs, batches, flushes): for tests and benchmarks.
    pub fn stats(&self) -> WriterStats {
        self.writer.stats()
    }
}

#[async_trait]
impl TokenStore for SledStore {
    fn backend(&self) -> &'static str {
        "sled"
    }

    /// Answered by the writer thread: a writer stuck in a flush shows up here too.
    async fn ping(&self) -> Result<(), StoreError> {
        self.writer
            .call(Access::Read, "ping", |t: &Trees| {
                t.meta.get(b"ping").map(|_| ()).map_err(unavailable)
            })
            .await
    }

    async fn secret(&self) -> Result<[u8; 32], StoreError> {
        self.writer
            .call(Access::Write, "secret", |t: &Trees| t.secret())
            .await
    }

    async fn create_family(&self, f: &Family) -> Result<(), StoreError> {
        let f = f.clone();
        self.writer
            .call(Access::Write, "create_family", move |t: &Trees| {
                t.create_family(&f)
            })
            .await
    }

    async fn rotate(
        &self,
        presented: &str,
        successor: &str,
        now_ms: u64,
        policy: &RotationPolicy,
    ) -> Result<RotateOutcome, StoreError> {
        let (presented, successor, policy) =
            (presented.to_string(), successor.to_string(), *policy);
        self.writer
            .call(Access::Write, "rotate", move |t: &Trees| {
                t.rotate(&presented, &successor, now_ms, &policy)
            })
            .await
    }

    async fn family_of(&self, token_hash: &str) -> Result<Option<Family>, StoreError> {
        let token_hash = token_hash.to_string();
        self.writer
            .call(Access::Read, "family_of", move |t: &Trees| {
                t.family_of(&token_hash)
            })
            .await
    }

    async fn family(&self, sid: &str) -> Result<Option<Family>, StoreError> {
        let sid = sid.to_string();
        self.writer
            .call(Access::Read, "family", move |t: &Trees| t.family(&sid))
            .await
    }

    async fn revoke_family(&self, sid: &str, until: u64) -> Result<bool, StoreError> {
        let sid = sid.to_string();
        self.writer
            .call(Access::Write, "revoke_family", move |t: &Trees| {
                t.revoke_family(&sid, until)
            })
            .await
    }

    /// Written without a flush of its own: losing it costs one more new-device notice.
    async fn remember_device(
        &self,
        user: &str,
        device: &str,
        now: u64,
        ttl: u64,
    ) -> Result<bool, StoreError> {
        let (user, device) = (user.to_string(), device.to_string());
        self.writer
            .call(Access::Lazy, "remember_device", move |t: &Trees| {
                t.remember_device(&user, &device, now, ttl)
            })
            .await
    }

    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Family>, StoreError> {
        let user = user.to_string();
        self.writer
            .call(Access::Read, "sessions_of", move |t: &Trees| {
                t.sessions_of(&user, now)
            })
            .await
    }

    async fn revoke_user(&self, user: &str, until: u64) -> Result<Vec<String>, StoreError> {
        let user = user.to_string();
        self.writer
            .call(Access::Write, "revoke_user", move |t: &Trees| {
                t.revoke_user(&user, until)
            })
            .await
    }

    async fn revoke_jti(&self, jti: &str, until: u64) -> Result<(), StoreError> {
        let key = format!("j:{jti}");
        self.writer
            .call(Access::Write, "revoke_jti", move |t: &Trees| {
                t.put_revocation(&key, until)
            })
            .await
    }

    async fn revocations(&self, now: u64) -> Result<Vec<Revocation>, StoreError> {
        self.writer
            .call(Access::Read, "revocations", move |t: &Trees| {
                t.revocations(now)
            })
            .await
    }

    /// In short steps between other jobs, for at most [`PRUNE_BUDGET`] per call.
    async fn prune(&self, now: u64) -> Result<(), StoreError> {
        let started = Instant::now();
        let resume = self
            .prune_from
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let mut at = resume.unwrap_or(PruneCursor::Revocations(None));
        loop {
            let step = at.clone();
            let next = self
                .writer
                .call(Access::Write, "prune", move |t: &Trees| {
                    t.prune_step(now, step)
                })
                .await?;
            *self.prune_from.lock().unwrap_or_else(|e| e.into_inner()) = next.clone();
            match next {
                None => return Ok(()),
                Some(_) if started.elapsed() >= PRUNE_BUDGET => return Ok(()),
                Some(c) => at = c,
            }
        }
    }

    /// Failed logins are on disk before the answer; refresh counters wait for the next flush
    /// (a refresh flushes its rotation anyway).
    async fn rate_limit(
        &self,
        throttle: Throttle<'_>,
        rate: Rate,
        now: u64,
        add: bool,
    ) -> Result<Result<(), u64>, StoreError> {
        let key = throttle.key();
        let (count, window) = (rate.count, rate.window.as_secs().max(1));
        let access = match throttle {
            _ if !add => Access::Read,
            Throttle::RefreshIp(_) => Access::Lazy,
            _ => Access::Write,
        };
        self.writer
            .call(access, "rate_limit", move |t: &Trees| {
                t.rate_limit(&key, count, window, now, add)
            })
            .await
    }

    async fn unlock(&self, unlock: &Unlock) -> Result<u64, StoreError> {
        let unlock = unlock.clone();
        self.writer
            .call(Access::Write, "unlock", move |t: &Trees| t.unlock(&unlock))
            .await
    }

    async fn reauthenticate(
        &self,
        sid: &str,
        auth_time: u64,
        amr: &[String],
    ) -> Result<bool, StoreError> {
        let (sid, amr) = (sid.to_string(), amr.to_vec());
        self.writer
            .call(Access::Write, "reauthenticate", move |t: &Trees| {
                t.reauthenticate(&sid, auth_time, amr)
            })
            .await
    }

    async fn mfa(&self, user: &str) -> Result<Option<MfaRecord>, StoreError> {
        let user = user.to_string();
        self.writer
            .call(Access::Read, "mfa", move |t: &Trees| t.mfa(&user))
            .await
    }

    async fn change_mfa(&self, user: &str, change: &MfaChange) -> Result<bool, StoreError> {
        let (user, change) = (user.to_string(), change.clone());
        self.writer
            .call(Access::Write, "change_mfa", move |t: &Trees| {
                t.change_mfa(&user, &change)
            })
            .await
    }
}
