//! The contract every `TokenStore` backend passes: run against sled in unit tests and against
//! a real redis-server in the integration tests. Times are explicit, so nothing sleeps.
//!
//! Built for tests only, never into the gateway. The integration tests compile this same file
//! as a module of their own, next to a re-export of `portcullis::store`: that is why store
//! items are named through `super` and nothing else of the crate is used.

use super::{
    Account, Family, MfaChange, MfaRecord, RevocationKind, RotateOutcome, RotationPolicy, Throttle,
    TokenStore, Unlock,
};
use std::sync::Arc;

/// The contract's "now", in seconds.
pub const T0: u64 = 1_800_000_000;
/// The same instant in milliseconds.
pub const T0_MS: u64 = T0 * 1000;

/// Milliseconds of `secs` seconds after the contract's epoch: rotation takes milliseconds.
fn at(secs: u64) -> u64 {
    (T0 + secs) * 1000
}

/// Idle lifetime 100 s, grace 10 s, revocations kept 60 s.
pub fn policy(revoke_user: bool) -> RotationPolicy {
    RotationPolicy {
        refresh_ttl: 100,
        reuse_grace_ms: 10_000,
        revoke_user_on_reuse: revoke_user,
        revocation_ttl: 60,
    }
}

/// A session created at `T0`, ending at `T0 + 1000` (idle at `T0 + 100`).
pub fn family(sid: &str, user: &str, token: &str) -> Family {
    Family {
        sid: sid.into(),
        user: user.into(),
        created: T0,
        max_exp: T0 + 1000,
        idle_exp: T0 + 100,
        current: token.into(),
        previous: None,
        rotated_at: T0,
        rotated_at_ms: Some(T0_MS),
        revoked: false,
        origin: None,
        auth_time: None,
        amr: Vec::new(),
    }
}

/// A unique prefix so several runs can share one backend.
fn ids(tag: &str) -> impl Fn(&str) -> String + '_ {
    move |s: &str| format!("{tag}-{s}")
}

async fn rotated(
    store: &dyn TokenStore,
    from: &str,
    to: &str,
    now: u64,
    p: &RotationPolicy,
) -> (Family, bool) {
    match store.rotate(from, to, now, p).await.unwrap() {
        RotateOutcome::Rotated { family, replay } => (family, replay),
        other => panic!("expected a rotation {from} -> {to}, got {other:?}"),
    }
}

/// Run every contract case; `tag` keeps ids unique per run.
pub async fn run(store: &dyn TokenStore, tag: &str) {
    let id = ids(tag);
    let p = policy(false);
    store.ping().await.unwrap();
    let k1 = store.secret().await.unwrap();
    assert_eq!(
        k1,
        store.secret().await.unwrap(),
        "the rotation key is stable"
    );

    // Rotation, grace replay, grandparent reuse.
    store
        .create_family(&family(&id("s1"), &id("u1"), &id("t0")))
        .await
        .unwrap();
    let (f, replay) = rotated(store, &id("t0"), &id("t1"), at(5), &p).await;
    assert!(!replay);
    assert_eq!(
        (f.current.clone(), f.previous.clone()),
        (id("t1"), Some(id("t0")))
    );
    assert_eq!(f.idle_exp, T0 + 105, "rotation extends the idle lifetime");
    let (_, replay) = rotated(store, &id("t0"), &id("t1"), at(14), &p).await;
    assert!(
        replay,
        "the parent inside the grace window yields the same successor"
    );
    let (_, replay) = rotated(store, &id("t1"), &id("t2"), at(15), &p).await;
    assert!(!replay);
    match store
        .rotate(&id("t0"), &id("t1"), at(16), &p)
        .await
        .unwrap()
    {
        RotateOutcome::Reused { revoked_sids, .. } => assert_eq!(revoked_sids, vec![id("s1")]),
        other => panic!("grandparent inside the window is reuse, got {other:?}"),
    }
    assert!(store.family(&id("s1")).await.unwrap().unwrap().revoked);
    assert_eq!(
        store
            .rotate(&id("t2"), &id("t3"), at(17), &p)
            .await
            .unwrap(),
        RotateOutcome::Invalid,
        "the newest token of a reused family is dead"
    );

    // The parent after the grace window is reuse.
    store
        .create_family(&family(&id("s2"), &id("u2"), &id("a0")))
        .await
        .unwrap();
    rotated(store, &id("a0"), &id("a1"), at(0), &p).await;
    assert!(matches!(
        store
            .rotate(&id("a0"), &id("a1"), at(11), &p)
            .await
            .unwrap(),
        RotateOutcome::Reused { .. }
    ));
    let revs = store.revocations(T0 + 11).await.unwrap();
    assert!(revs
        .iter()
        .any(|r| r.kind == RevocationKind::Sid && r.id == id("s2") && r.until == T0 + 71));

    // Unknown, idle-expired and absolutely expired tokens.
    assert_eq!(
        store
            .rotate(&id("nope"), &id("x"), at(0), &p)
            .await
            .unwrap(),
        RotateOutcome::Invalid
    );
    store
        .create_family(&family(&id("s3"), &id("u3"), &id("b0")))
        .await
        .unwrap();
    assert_eq!(
        store
            .rotate(&id("b0"), &id("b1"), at(100), &p)
            .await
            .unwrap(),
        RotateOutcome::Invalid,
        "idle expiry"
    );
    let mut short = family(&id("s4"), &id("u3"), &id("c0"));
    short.max_exp = T0 + 50;
    store.create_family(&short).await.unwrap();
    let (f, _) = rotated(store, &id("c0"), &id("c1"), at(40), &p).await;
    assert_eq!(f.idle_exp, T0 + 50, "never past the absolute lifetime");
    assert_eq!(
        store
            .rotate(&id("c1"), &id("c2"), at(50), &p)
            .await
            .unwrap(),
        RotateOutcome::Invalid
    );

    // on_reuse: revoke_user takes every session of the user.
    let pu = policy(true);
    store
        .create_family(&family(&id("s5"), &id("u5"), &id("d0")))
        .await
        .unwrap();
    store
        .create_family(&family(&id("s6"), &id("u5"), &id("e0")))
        .await
        .unwrap();
    rotated(store, &id("d0"), &id("d1"), at(0), &pu).await;
    match store
        .rotate(&id("d0"), &id("d1"), at(30), &pu)
        .await
        .unwrap()
    {
        RotateOutcome::Reused {
            mut revoked_sids,
            user,
        } => {
            revoked_sids.sort();
            assert_eq!(revoked_sids, vec![id("s5"), id("s6")]);
            assert_eq!(user, id("u5"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        store
            .rotate(&id("e0"), &id("e1"), at(31), &pu)
            .await
            .unwrap(),
        RotateOutcome::Invalid
    );

    // Explicit revocations.
    store
        .create_family(&family(&id("s7"), &id("u7"), &id("f0")))
        .await
        .unwrap();
    store
        .create_family(&family(&id("s8"), &id("u7"), &id("g0")))
        .await
        .unwrap();
    assert!(store.revoke_family(&id("s7"), T0 + 60).await.unwrap());
    assert!(
        !store.revoke_family(&id("s7"), T0 + 60).await.unwrap(),
        "idempotent"
    );
    assert_eq!(
        store.rotate(&id("f0"), &id("f1"), at(1), &p).await.unwrap(),
        RotateOutcome::Invalid
    );
    let mut sids = store.revoke_user(&id("u7"), T0 + 60).await.unwrap();
    sids.sort();
    assert_eq!(sids, vec![id("s7"), id("s8")]);
    store.revoke_jti(&id("j1"), T0 + 30).await.unwrap();
    let revs = store.revocations(T0 + 20).await.unwrap();
    assert!(revs
        .iter()
        .any(|r| r.kind == RevocationKind::Jti && r.id == id("j1")));
    assert!(store.family_of(&id("g0")).await.unwrap().unwrap().revoked);

    // Prune forgets what has ended (Redis keys also expire by themselves).
    store.prune(T0 + 2000).await.unwrap();
    assert!(store
        .revocations(T0 + 2000)
        .await
        .unwrap()
        .iter()
        .all(|r| !r.id.starts_with(tag)));

    throttling(store, tag).await;
    session_list(store, tag).await;
    step_up(store, tag).await;
    second_factor(store, tag).await;
}

/// A step-up is stored on the session and survives its rotations (including the way through
/// a backend's own encoding of the record); a session that is unknown, revoked or ended is
/// refused.
async fn step_up(store: &dyn TokenStore, tag: &str) {
    let id = ids(tag);
    let p = policy(false);
    let sid = id("up-s");
    let mut created = family(&sid, &id("up-u"), &id("up-t0"));
    created.auth_time = Some(T0);
    created.amr = vec!["pwd".into()];
    store.create_family(&created).await.unwrap();
    let amr = vec!["pwd".to_string(), "otp".to_string()];
    assert!(store.reauthenticate(&sid, T0 + 20, &amr).await.unwrap());
    let stored = store.family(&sid).await.unwrap().unwrap();
    assert_eq!((stored.auth_time, &stored.amr), (Some(T0 + 20), &amr));
    assert_eq!(
        Family {
            auth_time: created.auth_time,
            amr: created.amr.clone(),
            ..stored
        },
        created,
        "nothing else of the session changes"
    );

    let (f, _) = rotated(store, &id("up-t0"), &id("up-t1"), at(30), &p).await;
    assert_eq!((f.auth_time, &f.amr), (Some(T0 + 20), &amr), "rotated");
    let stored = store.family(&sid).await.unwrap().unwrap();
    assert_eq!(stored.current, id("up-t1"));
    assert_eq!(
        (stored.auth_time, &stored.amr),
        (Some(T0 + 20), &amr),
        "stored by the rotation"
    );
    let (f, replay) = rotated(store, &id("up-t0"), &id("up-t1"), at(31), &p).await;
    assert!(replay);
    assert_eq!((f.auth_time, &f.amr), (Some(T0 + 20), &amr), "replayed");

    // Methods are whatever the caller says, none included: the record stays readable.
    assert!(store.reauthenticate(&sid, T0 + 40, &[]).await.unwrap());
    let (f, _) = rotated(store, &id("up-t1"), &id("up-t2"), at(41), &p).await;
    assert_eq!((f.auth_time, f.amr.len()), (Some(T0 + 40), 0));
    assert!(store.reauthenticate(&sid, T0 + 50, &amr).await.unwrap());
    let (f, _) = rotated(store, &id("up-t2"), &id("up-t3"), at(51), &p).await;
    assert_eq!((f.auth_time, &f.amr), (Some(T0 + 50), &amr));

    // Revoked: refused, and what the session said is kept with the revocation.
    assert!(store.revoke_family(&sid, T0 + 120).await.unwrap());
    assert!(!store
        .reauthenticate(&sid, T0 + 60, &["otp".to_string()])
        .await
        .unwrap());
    let stored = store.family(&sid).await.unwrap().unwrap();
    assert!(stored.revoked);
    assert_eq!((stored.auth_time, &stored.amr), (Some(T0 + 50), &amr));

    assert!(!store
        .reauthenticate(&id("up-nope"), T0 + 20, &amr)
        .await
        .unwrap());
    assert!(store.family(&id("up-nope")).await.unwrap().is_none());

    // Ended: idle since T0 + 100.
    let idle = id("up-idle");
    store
        .create_family(&family(&idle, &id("up-u"), &id("up-i0")))
        .await
        .unwrap();
    assert!(!store.reauthenticate(&idle, T0 + 100, &amr).await.unwrap());
    let stored = store.family(&idle).await.unwrap().unwrap();
    assert_eq!((stored.auth_time, stored.amr.len()), (None, 0));
}

/// Enrol `user`: a secret shown, then confirmed by a code of time step `step`.
async fn enrol(store: &dyn TokenStore, user: &str, sealed: &str, step: u64, recovery: &[&str]) {
    let begin = MfaChange::Begin {
        sealed: sealed.into(),
    };
    assert!(store.change_mfa(user, &begin).await.unwrap());
    let confirm = MfaChange::Confirm {
        sealed: sealed.into(),
        secret: sealed.into(),
        step,
        recovery: recovery.iter().map(|h| h.to_string()).collect(),
        at: T0,
    };
    assert!(store.change_mfa(user, &confirm).await.unwrap());
}

/// A user's second factor: only the secret shown is confirmed, each time step and each
/// recovery code is accepted once, removal forgets it; users are kept apart.
async fn second_factor(store: &dyn TokenStore, tag: &str) {
    let id = ids(tag);
    let (user, other) = (id("mfa-a"), id("mfa-b"));
    let change = |u: &str, c: MfaChange| {
        let u = u.to_string();
        async move { store.change_mfa(&u, &c).await.unwrap() }
    };
    assert_eq!(store.mfa(&user).await.unwrap(), None);
    assert!(!change(&user, MfaChange::Step(5)).await, "nothing enrolled");
    assert!(!change(&user, MfaChange::Recovery("h1".into())).await);

    assert!(
        change(
            &user,
            MfaChange::Begin {
                sealed: "sealed-1".into()
            }
        )
        .await
    );
    let pending = MfaRecord {
        pending: Some("sealed-1".into()),
        ..MfaRecord::default()
    };
    assert_eq!(store.mfa(&user).await.unwrap().as_ref(), Some(&pending));
    assert!(
        !change(&user, MfaChange::Step(200)).await,
        "a pending secret takes no codes"
    );
    let confirm = |sealed: &str| MfaChange::Confirm {
        sealed: sealed.into(),
        secret: sealed.into(),
        step: 100,
        recovery: vec!["h1".into(), "h2".into()],
        at: T0 + 7,
    };
    assert!(
        !change(&user, confirm("sealed-0")).await,
        "not the secret shown"
    );
    assert_eq!(store.mfa(&user).await.unwrap().as_ref(), Some(&pending));
    assert!(change(&user, confirm("sealed-1")).await);
    let enrolled = MfaRecord {
        secret: Some("sealed-1".into()),
        pending: None,
        enrolled_at: T0 + 7,
        last_step: 100,
        recovery: vec!["h1".into(), "h2".into()],
    };
    assert_eq!(store.mfa(&user).await.unwrap().as_ref(), Some(&enrolled));
    assert!(!change(&user, confirm("sealed-1")).await, "confirmed once");

    // Time steps: the confirming one is used, then each newer one once.
    assert!(!change(&user, MfaChange::Step(100)).await);
    assert!(change(&user, MfaChange::Step(101)).await);
    assert!(!change(&user, MfaChange::Step(101)).await, "replayed");
    assert!(!change(&user, MfaChange::Step(99)).await, "older");
    assert!(change(&user, MfaChange::Step(105)).await, "newer");
    assert_eq!(store.mfa(&user).await.unwrap().unwrap().last_step, 105);

    // Recovery codes: each once, unknown ones never.
    assert!(change(&user, MfaChange::Recovery("h2".into())).await);
    assert!(!change(&user, MfaChange::Recovery("h2".into())).await);
    assert!(!change(&user, MfaChange::Recovery("h3".into())).await);
    let r = store.mfa(&user).await.unwrap().unwrap();
    assert_eq!(
        r,
        MfaRecord {
            last_step: 105,
            recovery: vec!["h1".into()],
            ..enrolled.clone()
        }
    );

    // Another user: an older step and the same recovery hash are theirs to use.
    enrol(store, &other, "sealed-b", 50, &["h2"]).await;
    assert!(change(&other, MfaChange::Step(60)).await);
    assert!(change(&other, MfaChange::Recovery("h2".into())).await);
    assert_eq!(
        store.mfa(&user).await.unwrap().as_ref(),
        Some(&r),
        "untouched"
    );

    // A new secret shown does not replace the confirmed one until confirmed.
    assert!(
        change(
            &user,
            MfaChange::Begin {
                sealed: "sealed-2".into()
            }
        )
        .await
    );
    let r = store.mfa(&user).await.unwrap().unwrap();
    assert_eq!(
        (r.secret.as_deref(), r.pending.as_deref()),
        (Some("sealed-1"), Some("sealed-2"))
    );
    assert!(change(&user, MfaChange::Step(106)).await);

    assert!(change(&user, MfaChange::Remove).await);
    assert!(!change(&user, MfaChange::Remove).await, "already removed");
    assert_eq!(store.mfa(&user).await.unwrap(), None);
    assert!(!change(&user, MfaChange::Step(107)).await);
    let b = store.mfa(&other).await.unwrap().unwrap();
    assert_eq!(
        (b.secret.as_deref(), b.last_step, b.recovery.len()),
        (Some("sealed-b"), 60, 0),
        "another user's removal leaves it alone"
    );
    assert!(change(&other, MfaChange::Remove).await);
    assert_eq!(store.mfa(&other).await.unwrap(), None);
}

/// A user's live sessions, with where they began (kept through a rotation).
async fn session_list(store: &dyn TokenStore, tag: &str) {
    let id = ids(tag);
    let user = id("lister");
    let origin = super::Origin {
        ip: "198.51.100.7".into(),
        user_agent: "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0".into(),
        device: "Firefox on Linux".into(),
    };
    let mut a = family(&id("list-a"), &user, &id("list-ta"));
    a.origin = Some(origin.clone());
    store.create_family(&a).await.unwrap();
    store
        .create_family(&family(&id("list-b"), &user, &id("list-tb")))
        .await
        .unwrap();
    store
        .create_family(&family(&id("list-c"), &id("someone-else"), &id("list-tc")))
        .await
        .unwrap();
    rotated(
        store,
        &id("list-ta"),
        &id("list-ta2"),
        at(10),
        &policy(false),
    )
    .await;
    store.revoke_family(&id("list-b"), T0 + 2000).await.unwrap();
    let live = store.sessions_of(&user, T0 + 20).await.unwrap();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0].sid, id("list-a"));
    assert_eq!(
        live[0].origin.as_ref(),
        Some(&origin),
        "kept through the rotation"
    );
    assert!(live[0].rotated_at > live[0].created);
    assert!(
        store
            .sessions_of(&user, T0 + 5000)
            .await
            .unwrap()
            .is_empty(),
        "ended"
    );
}

/// Throttling counters: a sliding window, refusal with the wait, unlock by account and by
/// address (and nothing else).
async fn throttling(store: &dyn TokenStore, tag: &str) {
    let rate = super::Rate {
        count: 3,
        window: std::time::Duration::from_secs(60),
    };
    let ip = format!("10.0.0.{}", tag.len());
    let other_ip = format!("10.0.1.{}", tag.len());
    let user = Account::User(format!("{tag}-user"));
    let other = Account::User(format!("{tag}-user2"));
    let t = T0 + 5000;
    for i in 0..3 {
        let pair = Throttle::AccountIp(&user, &ip);
        assert_eq!(
            store.rate_limit(pair, rate, t + i, true).await.unwrap(),
            Ok(())
        );
    }
    let pair = Throttle::AccountIp(&user, &ip);
    assert_eq!(
        store.rate_limit(pair, rate, t + 10, false).await.unwrap(),
        Err(50),
        "full: the oldest event leaves the window at t + 60"
    );
    assert_eq!(
        store.rate_limit(pair, rate, t + 60, false).await.unwrap(),
        Ok(())
    );
    let elsewhere = Throttle::AccountIp(&user, &other_ip);
    assert_eq!(
        store
            .rate_limit(elsewhere, rate, t + 10, false)
            .await
            .unwrap(),
        Ok(())
    );
    for i in 0..3 {
        for th in [Throttle::LoginIp(&ip), Throttle::Device(&other, "d1")] {
            store
                .rate_limit(th, rate, t + i, true)
                .await
                .unwrap()
                .unwrap();
        }
    }
    assert!(store
        .rate_limit(Throttle::LoginIp(&ip), rate, t + 5, false)
        .await
        .unwrap()
        .is_err());
    assert_eq!(
        store.unlock(&Unlock::Account(user.clone())).await.unwrap(),
        1
    );
    assert_eq!(
        store.rate_limit(pair, rate, t + 10, false).await.unwrap(),
        Ok(())
    );
    assert!(
        store
            .rate_limit(Throttle::LoginIp(&ip), rate, t + 5, false)
            .await
            .unwrap()
            .is_err(),
        "an account's unlock leaves the address alone"
    );
    assert_eq!(store.unlock(&Unlock::Ip(ip.clone())).await.unwrap(), 1);
    assert_eq!(
        store
            .rate_limit(Throttle::LoginIp(&ip), rate, t + 5, false)
            .await
            .unwrap(),
        Ok(())
    );
    let device = Throttle::Device(&other, "d1");
    assert!(store
        .rate_limit(device, rate, t + 5, false)
        .await
        .unwrap()
        .is_err());
    assert_eq!(store.unlock(&Unlock::Account(other)).await.unwrap(), 1);
}

/// 50 concurrent rotations of one token: exactly one successor, every caller sees it.
pub async fn concurrent_rotation(store: Arc<dyn TokenStore>, tag: &str) {
    let p = policy(false);
    let sid = format!("{tag}-cs");
    store
        .create_family(&family(&sid, &format!("{tag}-cu"), &format!("{tag}-p")))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let s = store.clone();
        let (from, to) = (format!("{tag}-p"), format!("{tag}-n"));
        tasks.push(tokio::spawn(async move {
            s.rotate(&from, &to, at(1), &p).await.unwrap()
        }));
    }
    let mut fresh = 0;
    for t in tasks {
        match t.await.unwrap() {
            RotateOutcome::Rotated { family, replay } => {
                assert_eq!(family.current, format!("{tag}-n"));
                fresh += usize::from(!replay);
            }
            other => panic!("a racer was refused: {other:?}"),
        }
    }
    assert_eq!(fresh, 1, "exactly one rotation happened");
}

/// 16 concurrent uses of one time step, then of one recovery code: each accepted once.
pub async fn concurrent_second_factor(store: Arc<dyn TokenStore>, tag: &str) {
    let user = format!("{tag}-mfa-race");
    enrol(
        store.as_ref(),
        &user,
        "sealed-race",
        1000,
        &["r1", "r2", "r3"],
    )
    .await;
    let race = |change: MfaChange| {
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (s, u, c) = (store.clone(), user.clone(), change.clone());
                tokio::spawn(async move { s.change_mfa(&u, &c).await.unwrap() })
            })
            .collect();
        async move {
            let mut accepted = 0;
            for t in tasks {
                accepted += usize::from(t.await.unwrap());
            }
            accepted
        }
    };
    assert_eq!(race(MfaChange::Step(1001)).await, 1, "one code, one use");
    assert_eq!(race(MfaChange::Recovery("r2".into())).await, 1);
    let r = store.mfa(&user).await.unwrap().unwrap();
    assert_eq!(r.last_step, 1001);
    assert_eq!(r.recovery, vec!["r1".to_string(), "r3".to_string()]);
    assert!(store.change_mfa(&user, &MfaChange::Remove).await.unwrap());
}

/// The grace window is measured in milliseconds: its last millisecond is inside, the next
/// one is reuse, even where whole seconds would have rounded it in.
pub async fn grace_in_milliseconds(store: &dyn TokenStore, tag: &str) {
    let id = ids(tag);
    let p = policy(false);
    store
        .create_family(&family(&id("m1"), &id("mu1"), &id("h0")))
        .await
        .unwrap();
    let rotated_at = T0_MS + 123;
    let (f, replay) = rotated(store, &id("h0"), &id("h1"), rotated_at, &p).await;
    assert!(!replay);
    assert_eq!(f.rotated_at_ms, Some(rotated_at));
    assert_eq!(f.rotated_at, T0, "whole seconds kept for older readers");
    let (f, replay) = rotated(store, &id("h0"), &id("h1"), rotated_at + 10_000, &p).await;
    assert!(replay, "the last millisecond of the window");
    assert_eq!(f.current, id("h1"));
    assert!(matches!(
        store
            .rotate(&id("h0"), &id("h1"), rotated_at + 10_001, &p)
            .await
            .unwrap(),
        RotateOutcome::Reused { .. }
    ));

    // Rotated late in a second: whole seconds would still have accepted 10.9 s later.
    store
        .create_family(&family(&id("m2"), &id("mu2"), &id("k0")))
        .await
        .unwrap();
    let rotated_at = T0_MS + 900;
    rotated(store, &id("k0"), &id("k1"), rotated_at, &p).await;
    assert!(matches!(
        store
            .rotate(&id("k0"), &id("k1"), rotated_at + 10_001, &p)
            .await
            .unwrap(),
        RotateOutcome::Reused { .. }
    ));
}
