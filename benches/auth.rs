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

/// Rotate one family over and over on `store`: every call is a real rotation (never a replay).
fn bench_rotation(c: &mut Criterion, name: &str, store: &dyn TokenStore) {
    let rt = portcullis::store::runtime();
    let policy = RotationPolicy {
        refresh_ttl: 3600,
        reuse_grace_ms: 10_000,
        revoke_user_on_reuse: true,
        revocation_ttl: 960,
    };
    let now = portcullis::clock::Clock::now(&portcullis::clock::SystemClock);
    rt.block_on(store.create_family(&Family {
        sid: format!("{name}-s"),
        user: "u".into(),
        created: now,
        max_exp: now + 86400,
        idle_exp: now + 3600,
        current: "t0".into(),
        previous: None,
        rotated_at: now,
        rotated_at_ms: Some(now * 1000),
        revoked: false,
        origin: None,
        auth_time: None,
        amr: Vec::new(),
    }))
    .unwrap();
    let mut n = 0u64;
    c.bench_function(name, |b| {
        b.iter(|| {
            let (from, to) = (format!("t{n}"), format!("t{}", n + 1));
            n += 1;
            rt.block_on(store.rotate(&from, &to, now * 1000, &policy))
                .unwrap()
        })
    });
}

fn rotate(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(&dir.path().join("db"), Duration::from_secs(1)).unwrap();
    bench_rotation(c, "sled_rotate_flushed", &store);
}

/// The same rotation on Redis (one Lua script, acknowledged by the server): needs
/// `redis-server` on PATH; the bench starts its own on a free loopback port.
fn rotate_redis(c: &mut Criterion) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let Ok(mut child) = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
    else {
        eprintln!("redis-server not found: skipping the Redis rotation benchmark (apt-get install redis-server)");
        return;
    };
    std::thread::sleep(Duration::from_millis(300));
    let url = portcullis::secret::Secret::new(format!("redis://127.0.0.1:{port}/0"));
    let store = portcullis::store::redis::RedisStore::open(&url, Duration::from_secs(30)).unwrap();
    bench_rotation(c, "redis_rotate_acknowledged", &store);
    let _ = child.kill();
    let _ = child.wait();
}

criterion_group!(benches, argon2, rotate, rotate_redis);
criterion_main!(benches);
