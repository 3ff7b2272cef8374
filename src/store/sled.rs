//! The embedded default store: one sled database in a directory.
//!
//! Trees: `families` (sid -> Family JSON), `tokens` (refresh-token hash -> sid, for every
//! token a family ever had, so replays of old ones are recognised), `user_sessions`
//! (`user\0sid`), `revocations` (`j:<jti>` / `s:<sid>` -> until, big-endian u64), `meta`.
//!
//! Every call runs on the one writer thread (`writer.rs`), which flushes once per batch and
//! answers only after that flush: a write is on disk before its caller sees it, concurrent
//! rotations share one fsync, and sled never sees two flushes at once (its own periodic
//! flusher is off).

use super::writer::{Access, Durable, Writer, WriterStats};
use super::*;
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries one prune job looks at: short enough that requests queued behind it wait well
/// under a millisecond.
const PRUNE_STEP: usize = 256;

/// How long one `prune` call keeps going; the next call resumes where it stopped, so a large
/// database is cleaned over several minutes without ever crowding out requests.
const PRUNE_BUDGET: Duration = Duration::from_millis(500);

/// sled-backed token store: a handle on its writer thread.
pub struct SledStore {
    writer: Writer<Trees>,
    /// Where the last, unfinished prune stopped.
    prune_from: Mutex<Option<PruneCursor>>,
}

/// The database, owned by the writer thread.
pub struct Trees {
    db: ::sled::Db,
    families: ::sled::Tree,
    tokens: ::sled::Tree,
    user_sessions: ::sled::Tree,
    revocations: ::sled::Tree,
    meta: ::sled::Tree,
}

impl Durable for Trees {
    fn flush(&self) -> Result<(), String> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| format!("sled flush: {e}"))
    }
}

/// Where a prune goes on: the tree it is in and the last key it looked at.
#[derive(Debug, Clone)]
enum PruneCursor {
    Revocations(Option<Vec<u8>>),
    Families(Option<Vec<u8>>),
    Tokens(Option<Vec<u8>>),
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn decode(bytes: &[u8]) -> Result<Family, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("family record: {e}")))
}

fn encode(f: &Family) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(f).map_err(|e| StoreError::Corrupt(format!("family record: {e}")))
}

fn user_key(user: &str, sid: &str) -> Vec<u8> {
    let mut k = user.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(sid.as_bytes());
    k
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
    fn revoke_family(&self, sid: &str, until: u64) -> Result<bool, StoreError> {
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

    fn secret(&self) -> Result<[u8; 32], StoreError> {
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

    fn create_family(&self, f: &Family) -> Result<(), StoreError> {
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
    fn rotate(
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

    fn family(&self, sid: &str) -> Result<Option<Family>, StoreError> {
        Ok(self.get_family(sid)?.map(|(_, f)| f))
    }

    fn family_of(&self, token_hash: &str) -> Result<Option<Family>, StoreError> {
        match self.tokens.get(token_hash).map_err(unavailable)? {
            Some(sid) => self.family(&String::from_utf8_lossy(&sid)),
            None => Ok(None),
        }
    }

    fn revoke_user(&self, user: &str, until: u64) -> Result<Vec<String>, StoreError> {
        let sids = self.user_sids(user)?;
        for s in &sids {
            self.revoke_family(s, until)?;
        }
        Ok(sids)
    }

    fn revocations(&self, now: u64) -> Result<Vec<Revocation>, StoreError> {
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

    /// Look at up to [`PRUNE_STEP`] entries from `at`, forgetting what ended before `now`:
    /// revocations, then sessions (with their user index), then refresh-token hashes whose
    /// session is gone. Returns where to go on, `None` when done.
    fn prune_step(&self, now: u64, at: PruneCursor) -> Result<Option<PruneCursor>, StoreError> {
        let (tree, after) = match &at {
            PruneCursor::Revocations(a) => (&self.revocations, a),
            PruneCursor::Families(a) => (&self.families, a),
            PruneCursor::Tokens(a) => (&self.tokens, a),
        };
        let entries = match after {
            Some(k) => tree.range::<&[u8], _>((Bound::Excluded(k.as_slice()), Bound::Unbounded)),
            None => tree.iter(),
        };
        let mut last = None;
        let mut seen = 0;
        for item in entries.take(PRUNE_STEP) {
            let (k, v) = item.map_err(unavailable)?;
            seen += 1;
            match at {
                PruneCursor::Revocations(_) => {
                    if be_u64(&v) < now {
                        self.revocations.remove(&k).map_err(unavailable)?;
                    }
                }
                PruneCursor::Families(_) => match decode(&v) {
                    Ok(f) if f.expires_at() < now => {
                        self.families.remove(&k).map_err(unavailable)?;
                        self.user_sessions
                            .remove(user_key(&f.user, &f.sid))
                            .map_err(unavailable)?;
                    }
                    Ok(_) => {}
                    // Left for an operator to look at; one bad record must not stop pruning.
                    Err(_) => {
                        tracing::warn!(target: "portcullis::store", "unreadable session record skipped by prune");
                    }
                },
                PruneCursor::Tokens(_) => {
                    if !self.families.contains_key(&v).map_err(unavailable)? {
                        self.tokens.remove(&k).map_err(unavailable)?;
                    }
                }
            }
            last = Some(k.to_vec());
        }
        if seen == PRUNE_STEP {
            return Ok(Some(match at {
                PruneCursor::Revocations(_) => PruneCursor::Revocations(last),
                PruneCursor::Families(_) => PruneCursor::Families(last),
                PruneCursor::Tokens(_) => PruneCursor::Tokens(last),
            }));
        }
        Ok(match at {
            PruneCursor::Revocations(_) => Some(PruneCursor::Families(None)),
            PruneCursor::Families(_) => Some(PruneCursor::Tokens(None)),
            PruneCursor::Tokens(_) => None,
        })
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
        crate::store::contract::grace_in_milliseconds(store.as_ref(), "sled").await;
        // sled forgets ended sessions when pruned.
        store.prune(1_800_000_000 + 2000).await.unwrap();
        assert!(store.family("sled-s1").await.unwrap().is_none());
    }

    /// Rotations of 64 different sessions at once: all durable, in far fewer flushes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_rotations_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Arc::new(SledStore::open(&path, Duration::from_secs(1)).unwrap());
        let n = 64;
        let rounds = 20;
        for i in 0..n {
            store
                .create_family(&crate::store::contract::family(
                    &format!("s{i}"),
                    "u",
                    &format!("c{i}-0"),
                ))
                .await
                .unwrap();
        }
        let before = store.stats();
        let policy = crate::store::contract::policy(false);
        let mut tasks = Vec::new();
        for i in 0..n {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                for r in 0..rounds {
                    let out = s
                        .rotate(
                            &format!("c{i}-{r}"),
                            &format!("c{i}-{}", r + 1),
                            crate::store::contract::T0_MS + 1000,
                            &policy,
                        )
                        .await
                        .unwrap();
                    assert!(matches!(out, RotateOutcome::Rotated { replay: false, .. }));
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let after = store.stats();
        let rotations = (n * rounds) as u64;
        let flushes = after.flushes - before.flushes;
        assert_eq!(after.jobs - before.jobs, rotations);
        assert!(
            flushes * 4 <= rotations,
            "{rotations} concurrent rotations took {flushes} flushes"
        );
        println!("{rotations} rotations, {flushes} flushes");
        // Every last token is on disk: reopen and look.
        drop(store);
        let store = SledStore::open(&path, Duration::from_secs(1)).unwrap();
        for i in 0..n {
            let f = store.family(&format!("s{i}")).await.unwrap().unwrap();
            assert_eq!(f.current, format!("c{i}-{rounds}"));
        }
    }

    /// A database written before rotation times had milliseconds still loads and rotates.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_in_whole_seconds_still_work() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let t0 = crate::store::contract::T0;
        {
            let db = ::sled::open(&path).unwrap();
            let legacy = format!(
                r#"{{"sid":"old","user":"u","created":{t0},"max_exp":{},"idle_exp":{},"current":"b","previous":"a","rotated_at":{t0},"revoked":false}}"#,
                t0 + 1000,
                t0 + 100
            );
            db.open_tree("families")
                .unwrap()
                .insert("old", legacy.as_bytes())
                .unwrap();
            let tokens = db.open_tree("tokens").unwrap();
            tokens.insert("a", "old").unwrap();
            tokens.insert("b", "old").unwrap();
            db.open_tree("user_sessions")
                .unwrap()
                .insert(user_key("u", "old"), &[][..])
                .unwrap();
            db.flush().unwrap();
        }
        let store = SledStore::open(&path, Duration::from_secs(1)).unwrap();
        let p = crate::store::contract::policy(false);
        let f = store.family("old").await.unwrap().unwrap();
        assert_eq!((f.rotated_at_ms, f.rotated_ms()), (None, t0 * 1000));
        // The grace window counts from the start of the stored second.
        let ms = t0 * 1000;
        assert!(matches!(
            store.rotate("a", "b", ms + 9_999, &p).await.unwrap(),
            RotateOutcome::Rotated { replay: true, .. }
        ));
        let (f, replay) = match store.rotate("b", "c", ms + 10_500, &p).await.unwrap() {
            RotateOutcome::Rotated { family, replay } => (family, replay),
            other => panic!("{other:?}"),
        };
        assert!(!replay);
        assert_eq!(f.rotated_at_ms, Some(ms + 10_500));
        assert_eq!(f.rotated_at, t0 + 10);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prune_resumes_and_removes_orphans() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("db"), Duration::from_secs(1)).unwrap();
        let t0 = crate::store::contract::T0;
        for i in 0..(PRUNE_STEP * 2 + 3) {
            let mut f = crate::store::contract::family(&format!("p{i}"), "u", &format!("pt{i}"));
            if i % 2 == 0 {
                f.max_exp = t0 + 10;
            }
            store.create_family(&f).await.unwrap();
            store
                .revoke_jti(&format!("j{i}"), t0 + (i as u64 % 2) * 100)
                .await
                .unwrap();
        }
        store.prune(t0 + 50).await.unwrap();
        assert!(store.family("p0").await.unwrap().is_none());
        assert!(store.family_of("pt0").await.unwrap().is_none());
        assert!(store.family("p1").await.unwrap().is_some());
        let revs = store.revocations(0).await.unwrap();
        assert_eq!(
            revs.len(),
            PRUNE_STEP + 1,
            "only unexpired revocations remain"
        );
        assert!(store.prune_from.lock().unwrap().is_none(), "prune finished");
    }
}
