//! Login and rotation costs.
//! - `argon2id_verify`: one password check at the OWASP parameters (m=19 MiB, t=2, p=1);
//!   logins per second per core = 1 / this time.
//! - `sled_rotate_flushed`: one refresh-token rotation on sled, flushed to disk before it
//!   returns (the durability point), as the gateway does it.
//!
//! Run: `cargo bench --bench auth`

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::store::sled::SledStore;
use portcullis::store::{Family, RotationPolicy, TokenStore};
use std::time::Duration;

fn argon2(c: &mut Criterion) {
    let phc = portcullis::auth::password::hash_password("correct horse battery staple");
    let hash = argon2::PasswordHash::new(&phc).unwrap();
    let mut g = c.benchmark_group("login");
    g.sample_size(20);
    g.bench_function("argon2id_verify", |b| {
        use argon2::PasswordVerifier;
        b.iter(|| {
            argon2::Argon2::default()
                .verify_password(b"correct horse battery staple", &hash)
                .is_ok()
        })
    });
    g.finish();
}

fn rotate(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("db"), Duration::from_secs(1)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let policy = RotationPolicy {
        refresh_ttl: 3600,
        reuse_grace: 10,
        revoke_user_on_reuse: true,
        revocation_ttl: 960,
    };
    let now = 1_800_000_000;
    rt.block_on(store.create_family(&Family {
        sid: "s".into(),
        user: "u".into(),
        created: now,
        max_exp: now + 86400,
        idle_exp: now + 3600,
        current: "t0".into(),
        previous: None,
        rotated_at: now,
        revoked: false,
    }))
    .unwrap();
    let mut n = 0u64;
    c.bench_function("sled_rotate_flushed", |b| {
        b.iter(|| {
            let (from, to) = (format!("t{n}"), format!("t{}", n + 1));
            n += 1;
            rt.block_on(store.rotate(&from, &to, now, &policy)).unwrap()
        })
    });
}

criterion_group!(benches, argon2, rotate);
criterion_main!(benches);
