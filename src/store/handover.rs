//! The embedded database handed from one process to the next in a zero-downtime upgrade.
//!
//! sled locks its database for one process. In an upgrade (`serve --upgrade`, then SIGQUIT
//! to the running process) the new process starts while the old one still holds the lock,
//! and for a few seconds both serve on the same listening sockets. So the database sits in a
//! slot:
//! - the new process starts with the slot empty and opens the database in the background,
//!   retrying for as long as it takes; once it is open the revocations are loaded, and only
//!   then do protected requests pass (until then each one waits, at most `store.timeout`);
//! - the old process empties its slot as soon as its listeners are handed over: the writes
//!   already queued finish and are flushed, the writer thread ends and the lock is released.
//!
//! A store call while the slot is empty is refused at once (`Unavailable`: a 503 for the
//! request that needed it), never held until the lock comes. Requests that only need an
//! access token are not store calls and go on being served by both processes.

use super::sled::SledStore;
use super::*;
use arc_swap::ArcSwapOption;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

/// How often the new process tries the lock.
const RETRY: Duration = Duration::from_millis(20);

/// How often a waiting process says it is still waiting.
const STILL_WAITING: Duration = Duration::from_secs(10);

/// How long a release waits for the calls still using the database before it lets the last
/// of them close it.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

const WAITING: u8 = 0;
const OPEN: u8 = 1;
const RELEASED: u8 = 2;

/// The sled store in its slot.
pub struct Handover {
    path: PathBuf,
    slot: ArcSwapOption<SledStore>,
    phase: AtomicU8,
    opened: tokio::sync::watch::Sender<bool>,
    /// The revocation view holds every revocation stored when the database was opened.
    loaded: AtomicBool,
    loaded_tx: tokio::sync::watch::Sender<bool>,
}

impl Handover {
    fn empty(path: &Path) -> Self {
        Handover {
            path: path.to_path_buf(),
            slot: ArcSwapOption::empty(),
            phase: AtomicU8::new(WAITING),
            opened: tokio::sync::watch::Sender::new(false),
            loaded: AtomicBool::new(false),
            loaded_tx: tokio::sync::watch::Sender::new(false),
        }
    }

    /// Open the database now (waiting at most `wait` for its lock): a plain start.
    pub fn open_now(path: &Path, wait: Duration) -> Result<Arc<Self>, StoreError> {
        let h = Arc::new(Self::empty(path));
        h.fill(SledStore::open(path, wait)?);
        Ok(h)
    }

    /// Open the database in the background, as soon as the process holding it lets go: the
    /// new process of an upgrade.
    pub fn open_when_released(path: &Path) -> Result<Arc<Self>, StoreError> {
        let h = Arc::new(Self::empty(path));
        let opener = h.clone();
        std::thread::Builder::new()
            .name("portcullis-sled-open".into())
            .spawn(move || opener.wait_and_open())
            .map_err(|e| StoreError::Unavailable(format!("cannot start the sled opener: {e}")))?;
        Ok(h)
    }

    fn fill(&self, store: SledStore) {
        self.slot.store(Some(Arc::new(store)));
        if self
            .phase
            .compare_exchange(WAITING, OPEN, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            // Released before it was ever open (the process is already leaving).
            self.slot.store(None);
            return;
        }
        self.opened.send_replace(true);
    }

    fn wait_and_open(&self) {
        let started = Instant::now();
        let mut said = Instant::now();
        tracing::info!(target: "portcullis::upgrade", path = %self.path.display(), "waiting for the previous process to release the sled database");
        loop {
            if self.phase.load(Ordering::SeqCst) == RELEASED {
                return;
            }
            match SledStore::try_open(&self.path) {
                Ok(Some(store)) => {
                    tracing::info!(target: "portcullis::upgrade", waited_ms = started.elapsed().as_millis() as u64, "sled database opened");
                    self.fill(store);
                    return;
                }
                Ok(None) => {
                    if said.elapsed() >= STILL_WAITING {
                        said = Instant::now();
                        tracing::warn!(target: "portcullis::upgrade", waited_s = started.elapsed().as_secs(), "still waiting for the previous process to release the sled database");
                    }
                }
                Err(e) => {
                    if said.elapsed() >= STILL_WAITING {
                        said = Instant::now();
                        tracing::error!(target: "portcullis::upgrade", error = %e, "cannot open the sled database; retrying");
                    }
                }
            }
            std::thread::sleep(RETRY);
        }
    }

    /// Let go of the database for the next process: from now on every store call is refused.
    /// Calls already running finish first (their writes are flushed); returns once the lock
    /// is released, or after [`RELEASE_WAIT`] if a call still holds it (the lock then goes
    /// with that call).
    pub fn release(&self) {
        if self.phase.swap(RELEASED, Ordering::SeqCst) == RELEASED {
            return;
        }
        let Some(store) = self.slot.swap(None) else {
            return;
        };
        let deadline = Instant::now() + RELEASE_WAIT;
        while Arc::strong_count(&store) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let alone = Arc::strong_count(&store) == 1;
        drop(store);
        if alone {
            tracing::info!(target: "portcullis::upgrade", "sled database released to the new process");
        } else {
            tracing::warn!(target: "portcullis::upgrade", "sled database released; a store call still running closes it when it ends");
        }
    }

    /// Whether this process has handed the database over.
    pub fn released(&self) -> bool {
        self.phase.load(Ordering::SeqCst) == RELEASED
    }

    /// The revocation view now holds what the database held when it was opened.
    pub fn mark_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
        self.loaded_tx.send_replace(true);
    }

    fn current(&self) -> Result<Arc<SledStore>, StoreError> {
        if let Some(s) = self.slot.load_full() {
            return Ok(s);
        }
        Err(StoreError::Unavailable(
            if self.phase.load(Ordering::SeqCst) == RELEASED {
                "sled: handed over to the new process".into()
            } else {
                "sled: waiting for the previous process to release the database".into()
            },
        ))
    }
}

#[async_trait]
impl TokenStore for Handover {
    fn backend(&self) -> &'static str {
        "sled"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.current()?.ping().await?;
        if !self.loaded.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable(
                "sled: revocations not loaded yet".into(),
            ));
        }
        Ok(())
    }

    async fn secret(&self) -> Result<[u8; 32], StoreError> {
        self.current()?.secret().await
    }

    async fn create_family(&self, family: &Family) -> Result<(), StoreError> {
        self.current()?.create_family(family).await
    }

    async fn rotate(
        &self,
        presented: &str,
        successor: &str,
        now_ms: u64,
        policy: &RotationPolicy,
    ) -> Result<RotateOutcome, StoreError> {
        self.current()?
            .rotate(presented, successor, now_ms, policy)
            .await
    }

    async fn family_of(&self, token_hash: &str) -> Result<Option<Family>, StoreError> {
        self.current()?.family_of(token_hash).await
    }

    async fn family(&self, sid: &str) -> Result<Option<Family>, StoreError> {
        self.current()?.family(sid).await
    }

    async fn revoke_family(&self, sid: &str, until: u64) -> Result<bool, StoreError> {
        self.current()?.revoke_family(sid, until).await
    }

    async fn remember_device(
        &self,
        user: &str,
        device: &str,
        now: u64,
        ttl: u64,
    ) -> Result<bool, StoreError> {
        self.current()?
            .remember_device(user, device, now, ttl)
            .await
    }

    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Family>, StoreError> {
        self.current()?.sessions_of(user, now).await
    }

    async fn revoke_user(&self, user: &str, until: u64) -> Result<Vec<String>, StoreError> {
        self.current()?.revoke_user(user, until).await
    }

    async fn revoke_jti(&self, jti: &str, until: u64) -> Result<(), StoreError> {
        self.current()?.revoke_jti(jti, until).await
    }

    async fn revocations(&self, now: u64) -> Result<Vec<Revocation>, StoreError> {
        self.current()?.revocations(now).await
    }

    async fn prune(&self, now: u64) -> Result<(), StoreError> {
        self.current()?.prune(now).await
    }

    async fn rate_limit(
        &self,
        throttle: Throttle<'_>,
        rate: Rate,
        now: u64,
        add: bool,
    ) -> Result<Result<(), u64>, StoreError> {
        self.current()?.rate_limit(throttle, rate, now, add).await
    }

    async fn unlock(&self, unlock: &Unlock) -> Result<u64, StoreError> {
        self.current()?.unlock(unlock).await
    }

    async fn reauthenticate(
        &self,
        sid: &str,
        auth_time: u64,
        amr: &[String],
    ) -> Result<bool, StoreError> {
        self.current()?.reauthenticate(sid, auth_time, amr).await
    }

    async fn mfa(&self, user: &str) -> Result<Option<MfaRecord>, StoreError> {
        self.current()?.mfa(user).await
    }

    async fn change_mfa(&self, user: &str, change: &MfaChange) -> Result<bool, StoreError> {
        self.current()?.change_mfa(user, change).await
    }

    /// Once the database is open (at once on a plain start), fill `view` from it; nothing to
    /// watch afterwards: this process is the only writer.
    async fn watch_revocations(&self, view: Arc<RevocationView>) {
        if !self.loaded.load(Ordering::Acquire) {
            let mut opened = self.opened.subscribe();
            let open = opened.wait_for(|o| *o).await.is_ok();
            if !open {
                return;
            }
            loop {
                let now = crate::clock::Clock::now(&crate::clock::SystemClock);
                match self.revocations(now).await {
                    Ok(revs) => {
                        apply_revocations(&view, &revs);
                        self.mark_loaded();
                        tracing::info!(target: "portcullis::upgrade", revocations = revs.len(), "revocations loaded; protected routes open");
                        break;
                    }
                    Err(e) => {
                        tracing::error!(target: "portcullis::store", error = %e, "cannot load revocations; retrying");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
        }
        std::future::pending::<()>().await
    }

    fn revocations_fresh(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    async fn revocations_loaded(&self) -> bool {
        let mut loaded = self.loaded_tx.subscribe();
        let ok = loaded.wait_for(|l| *l).await.is_ok();
        ok
    }

    fn handed_over(&self) -> bool {
        self.released()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_slot_keeps_the_contract_and_hands_the_database_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let old = Handover::open_now(&path, Duration::from_secs(1)).unwrap();
        old.mark_loaded();
        crate::store::contract::run(old.as_ref(), "slot").await;
        let kept = crate::store::contract::family("kept", "u", "t-kept");
        old.create_family(&kept).await.unwrap();
        old.revoke_jti("j-kept", 1_900_000_000).await.unwrap();

        // A second process's slot waits while the first holds the lock.
        let new = Handover::open_when_released(&path).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let e = new.family("kept").await.unwrap_err();
        assert!(
            e.to_string().contains("waiting for the previous process"),
            "{e}"
        );
        assert!(new.ping().await.is_err(), "not ready while waiting");
        assert!(!new.revocations_fresh());
        let view = Arc::new(RevocationView::new());
        let watcher = {
            let (new, view) = (new.clone(), view.clone());
            tokio::spawn(async move { new.watch_revocations(view).await })
        };
        let waiting = {
            let new = new.clone();
            tokio::spawn(async move { new.revocations_loaded().await })
        };

        old.release();
        assert!(old.handed_over());
        let e = old.family("kept").await.unwrap_err();
        assert!(e.to_string().contains("handed over"), "{e}");
        assert!(
            waiting.await.unwrap(),
            "waiters are let through once loaded"
        );
        eventually("revocations loaded", || new.revocations_fresh()).await;
        // Everything the first process stored is there, revocations included.
        new.ping().await.unwrap();
        assert_eq!(new.family("kept").await.unwrap(), Some(kept));
        assert!(
            view.is_revoked("j-kept", "-", 1_850_000_000),
            "revocations are in the view"
        );
        assert!(!new.handed_over());
        watcher.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_release_waits_for_the_calls_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let h = Handover::open_now(&path, Duration::from_secs(1)).unwrap();
        let f = crate::store::contract::family("r1", "u", "t1");
        h.create_family(&f).await.unwrap();
        let writes: Vec<_> = (0..32)
            .map(|i| {
                let h = h.clone();
                tokio::spawn(async move { h.revoke_jti(&format!("j{i}"), 1_900_000_000).await })
            })
            .collect();
        let releasing = {
            let h = h.clone();
            tokio::task::spawn_blocking(move || h.release())
        };
        let mut applied = 0;
        for w in writes {
            if w.await.unwrap().is_ok() {
                applied += 1;
            }
        }
        releasing.await.unwrap();
        // The lock is free: the next process opens the database and finds every write that
        // was answered.
        let next = SledStore::try_open(&path).unwrap().expect("lock released");
        let revs = next.revocations(1_800_000_000).await.unwrap();
        assert_eq!(revs.len(), applied, "answered writes are durable");
        assert!(next.family("r1").await.unwrap().is_some());
    }
}
