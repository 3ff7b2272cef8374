//! The sled store on disk: the contract, group commit, old records, resumable pruning.

use super::prune::PRUNE_STEP;
use super::trees::user_key;
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sled_passes_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(&dir.path().join("db"), Duration::from_secs(1)).unwrap());
    crate::store::contract::run(store.as_ref(), "sled").await;
    crate::store::contract::concurrent_rotation(store.clone(), "sled").await;
    crate::store::contract::concurrent_second_factor(store.clone(), "sled").await;
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
