//! The deadline in front of a store that stalls: timeouts, refusals while failing, one
//! probe per cool-down, recovery without a restart.

use super::*;
use std::sync::atomic::AtomicU64;

/// A store whose calls take `delay_ms` (changeable) and otherwise answer as sled would.
struct Stalling {
    inner: SharedStore,
    delay_ms: AtomicU64,
}

impl Stalling {
    async fn pause(&self) {
        let ms = self.delay_ms.load(Ordering::SeqCst);
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
}

#[async_trait]
impl TokenStore for Stalling {
    fn backend(&self) -> &'static str {
        "stalling"
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.pause().await;
        self.inner.ping().await
    }
    async fn secret(&self) -> Result<[u8; 32], StoreError> {
        self.pause().await;
        self.inner.secret().await
    }
    async fn create_family(&self, f: &Family) -> Result<(), StoreError> {
        self.pause().await;
        self.inner.create_family(f).await
    }
    async fn rotate(
        &self,
        a: &str,
        b: &str,
        now_ms: u64,
        p: &RotationPolicy,
    ) -> Result<RotateOutcome, StoreError> {
        self.pause().await;
        self.inner.rotate(a, b, now_ms, p).await
    }
    async fn family_of(&self, h: &str) -> Result<Option<Family>, StoreError> {
        self.pause().await;
        self.inner.family_of(h).await
    }
    async fn family(&self, sid: &str) -> Result<Option<Family>, StoreError> {
        self.pause().await;
        self.inner.family(sid).await
    }
    async fn revoke_family(&self, sid: &str, until: u64) -> Result<bool, StoreError> {
        self.pause().await;
        self.inner.revoke_family(sid, until).await
    }
    async fn remember_device(
        &self,
        user: &str,
        device: &str,
        now: u64,
        ttl: u64,
    ) -> Result<bool, StoreError> {
        self.pause().await;
        self.inner.remember_device(user, device, now, ttl).await
    }

    async fn sessions_of(&self, user: &str, now: u64) -> Result<Vec<Family>, StoreError> {
        self.pause().await;
        self.inner.sessions_of(user, now).await
    }
    async fn revoke_user(&self, u: &str, until: u64) -> Result<Vec<String>, StoreError> {
        self.pause().await;
        self.inner.revoke_user(u, until).await
    }
    async fn revoke_jti(&self, j: &str, until: u64) -> Result<(), StoreError> {
        self.pause().await;
        self.inner.revoke_jti(j, until).await
    }
    async fn revocations(&self, now: u64) -> Result<Vec<Revocation>, StoreError> {
        self.pause().await;
        self.inner.revocations(now).await
    }
    async fn prune(&self, now: u64) -> Result<(), StoreError> {
        self.pause().await;
        self.inner.prune(now).await
    }
    async fn rate_limit(
        &self,
        throttle: Throttle<'_>,
        rate: Rate,
        now: u64,
        add: bool,
    ) -> Result<Result<(), u64>, StoreError> {
        self.pause().await;
        self.inner.rate_limit(throttle, rate, now, add).await
    }
    async fn unlock(&self, unlock: &Unlock) -> Result<u64, StoreError> {
        self.pause().await;
        self.inner.unlock(unlock).await
    }
    async fn reauthenticate(
        &self,
        sid: &str,
        auth_time: u64,
        amr: &[String],
    ) -> Result<bool, StoreError> {
        self.pause().await;
        self.inner.reauthenticate(sid, auth_time, amr).await
    }
    async fn mfa(&self, user: &str) -> Result<Option<MfaRecord>, StoreError> {
        self.pause().await;
        self.inner.mfa(user).await
    }
    async fn change_mfa(&self, user: &str, change: &MfaChange) -> Result<bool, StoreError> {
        self.pause().await;
        self.inner.change_mfa(user, change).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_times_out_then_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let sled: SharedStore = Arc::new(
        super::super::sled::SledStore::open(&dir.path().join("db"), Duration::from_secs(1))
            .unwrap(),
    );
    let stalling = Arc::new(Stalling {
        inner: sled,
        delay_ms: AtomicU64::new(0),
    });
    let store = WithDeadline::new(stalling.clone(), Duration::from_millis(200));
    // The contract holds through the wrapper.
    crate::store::contract::run(&store, "deadline").await;
    assert!(!store.is_failing());

    stalling.delay_ms.store(5_000, Ordering::SeqCst);
    let started = std::time::Instant::now();
    let p = crate::store::contract::policy(false);
    let err = store
        .rotate("a", "b", crate::store::contract::T0_MS, &p)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(1000));
    assert!(
        matches!(&err, StoreError::Unavailable(m) if m.contains("stalling") && m.contains("200 ms")),
        "{err}"
    );
    assert!(store.is_failing());
    // Right after a timeout every call is refused at once.
    let t = std::time::Instant::now();
    assert!(store.family("x").await.is_err());
    assert!(store.ping().await.is_err());
    assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
    // After the cool-down one call tries the store (readiness probes briefly) while every
    // other is still refused at once.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let started = std::time::Instant::now();
    let (probe, other) = tokio::join!(store.ping(), async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = std::time::Instant::now();
        (store.family("x").await, t.elapsed())
    });
    assert!(probe.is_err());
    assert!(started.elapsed() < Duration::from_millis(400));
    assert!(other.0.is_err());
    assert!(other.1 < Duration::from_millis(50), "{:?}", other.1);

    stalling.delay_ms.store(0, Ordering::SeqCst);
    assert!(store.ping().await.is_err(), "still cooling down");
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(store.is_failing());
    store.ping().await.unwrap();
    assert!(!store.is_failing(), "recovered without a restart");
}
