//! Scale-out on Redis: the store contract on a real redis-server, and two gateway processes
//! agreeing on every rotation and revocation.

use crate::auth::{login_json, proxied, refresh, set_cookies, users_yaml, Jar, PASSWORD};
use crate::harness::*;
use portcullis::store::TokenStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn redis_passes_the_store_contract() {
    let redis = RedisServer::start();
    let url = portcullis::secret::Secret::new(redis.url());
    let store = Arc::new(
        portcullis::store::redis::RedisStore::open(&url, Duration::from_secs(30)).unwrap(),
    );
    let rt = portcullis::store::runtime();
    let watcher = store.clone();
    rt.spawn(async move { watcher.watch_revocations(Default::default()).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while rt.block_on(store.ping()).is_err() {
        assert!(
            Instant::now() < deadline,
            "the revocation view never synchronised"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    rt.block_on(crate::store_contract::contract::run(
        store.as_ref(),
        "redis",
    ));
    rt.block_on(crate::store_contract::contract::concurrent_rotation(
        store.clone(),
        "redis",
    ));
    rt.block_on(crate::store_contract::contract::concurrent_second_factor(
        store.clone(),
        "redis",
    ));
    // Shared rate-limit windows.
    let rate = portcullis::config::Rate {
        count: 2,
        window: Duration::from_secs(60),
    };
    rt.block_on(async {
        for _ in 0..2 {
            assert_eq!(store.rate("k", rate, 1000, true).await.unwrap(), Ok(()));
        }
        assert!(store.rate("k", rate, 1001, false).await.unwrap().is_err());
        assert_eq!(
            store.rate("k", rate, 1061, false).await.unwrap(),
            Ok(()),
            "the window slides"
        );
    });
}

/// Two gateways sharing keys, users and one redis-server.
fn pair(redis: &RedisServer, up: &Upstream) -> (Gateway, Gateway) {
    pair_with(redis, up, "")
}

/// Two gateways on `redis`; `extra_a` is added to A's config only.
fn pair_with(redis: &RedisServer, up: &Upstream, extra_a: &str) -> (Gateway, Gateway) {
    let dir_a = tempfile::tempdir().unwrap();
    crate::tokens::keygen(dir_a.path(), "EdDSA", "ed1");
    let users = users_yaml();
    let dir_b = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir_b.path().join("keys")).unwrap();
    std::fs::copy(
        dir_a.path().join("keys/ed1.private.pem"),
        dir_b.path().join("keys/ed1.private.pem"),
    )
    .unwrap();
    for d in [&dir_a, &dir_b] {
        std::fs::write(d.path().join("users.yaml"), &users).unwrap();
    }
    let config = format!(
        "store: {{ backend: redis, redis_url: \"{}\", max_staleness: 5s }}\ntokens:\n  issuer: https://gw.test\n  reuse_grace: 1s\n  signing_keys:\n    - {{ kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }}\nusers: {{ file: users.yaml }}\nrate_limits: {{ login_per_ip: 1000/1m, login_per_account: 1000/1m, login_per_account_ip: 1000/1m, login_per_device: 1000/1m, refresh_per_ip: 1000/1m }}\nupstreams:\n  app: {{ addresses: [\"{}\"] }}\nroutes:\n  - {{ path_prefix: /, upstream: app }}\n",
        redis.url(),
        up.addr
    );
    let a = Gateway::start_in(&format!("{config}{extra_a}"), dir_a);
    let b = Gateway::start_in(&config, dir_b);
    a.wait_ready_status(200, Duration::from_secs(5));
    b.wait_ready_status(200, Duration::from_secs(5));
    (a, b)
}

#[test]
fn an_admin_revocation_on_one_instance_is_enforced_by_the_other_within_a_second() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let secrets = tempfile::tempdir().unwrap();
    let token = "test-only-admin-token-0123456789abcdef";
    let token_file = secrets.path().join("admin.token");
    std::fs::write(&token_file, token).unwrap();
    let admin_port = free_port();
    let (_a, b) = pair_with(
        &redis,
        &up,
        &format!(
            "admin: {{ listen: \"127.0.0.1:{admin_port}\", token_file: \"{}\" }}\n",
            token_file.display()
        ),
    );
    // Sessions made on B are listed by A (one index per user in Redis).
    let jar = Jar::from(&login_json(&b, "alice@example.com", PASSWORD), "__Host-");
    let carol = Jar::from(&login_json(&b, "carol@example.com", PASSWORD), "__Host-");
    let auth = format!("Bearer {token}");
    let listed = get(
        &format!("http://127.0.0.1:{admin_port}/admin/users/alice/sessions"),
        &[("Authorization", &auth)],
    );
    assert_eq!(
        listed.json()["sessions"].as_array().unwrap().len(),
        1,
        "{}",
        listed.body
    );
    assert_eq!(proxied(&b, &jar).status, 200);
    let r = agent()
        .post(&format!("http://127.0.0.1:{admin_port}/admin/revoke-all"))
        .header("Authorization", &auth)
        .send_empty()
        .unwrap();
    assert_eq!(r.status(), 200);
    let revoked = Instant::now();
    while proxied(&b, &jar).status != 401 || proxied(&b, &carol).status != 401 {
        assert!(
            revoked.elapsed() < Duration::from_secs(1),
            "B enforced A's kill switch within 1 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(refresh(&b, &jar).status, 403);
}

#[test]
fn two_gateways_agree_on_rotation_reuse_and_logout() {
    let redis = RedisServer::start();
    let up = Upstream::start();
    let (a, b) = pair(&redis, &up);
    // Rotate on A, replay the old token on B after the grace window: reuse, dead on both.
    let mut jar = Jar::from(&login_json(&a, "alice@example.com", PASSWORD), "__Host-");
    let old = jar.clone();
    let r = refresh(&a, &jar);
    assert_eq!(r.status, 200);
    jar.update(&r);
    assert_eq!(proxied(&b, &jar).status, 200, "B accepts A's tokens");
    assert!(
        !b.log().contains("transparent_refresh"),
        "without refreshing them"
    );
    std::thread::sleep(Duration::from_millis(2100));
    let reuse = refresh(&b, &old);
    assert_eq!(reuse.status, 403);
    assert_eq!(reuse.json()["error"], "refresh_token_reused");
    for gw in [&a, &b] {
        assert_eq!(refresh(gw, &jar).status, 403, "family dead");
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while proxied(&a, &jar).status != 401 {
        assert!(
            Instant::now() < deadline,
            "A learned of B's revocation within 1 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(proxied(&b, &jar).status, 401);

    // Logout on A: the access token is refused on B within 1 s.
    let jar = Jar::from(&login_json(&a, "carol@example.com", PASSWORD), "__Host-");
    assert_eq!(proxied(&b, &jar).status, 200);
    let lo = std::time::Instant::now();
    assert_eq!(
        crate::harness::post(
            &a.url("/auth/logout"),
            &[("Authorization", &format!("Bearer {}", jar.access))],
            b""
        )
        .status,
        200
    );
    loop {
        let r = proxied(&b, &jar);
        if r.status == 401 {
            assert_eq!(r.json()["error"], "token_revoked");
            break;
        }
        assert!(
            lo.elapsed() < Duration::from_secs(1),
            "B still accepts the logged-out token"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // 50 concurrent refreshes of one token split across A and B: exactly one successor.
    let jar = Jar::from(&login_json(&a, "alice@example.com", PASSWORD), "__Host-");
    let barrier = Arc::new(std::sync::Barrier::new(50));
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let url = if i % 2 == 0 {
                a.url("/auth/refresh")
            } else {
                b.url("/auth/refresh")
            };
            let (jar, barrier) = (jar.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                crate::harness::post(
                    &url,
                    &[("Cookie", &jar.refresh_only()), ("X-CSRF-Token", &jar.csrf)],
                    b"",
                )
            })
        })
        .collect();
    let mut successors = std::collections::HashSet::new();
    for h in handles {
        let r = h.join().unwrap();
        assert!(
            r.status == 200 || r.status == 403,
            "{}: {}",
            r.status,
            r.body
        );
        if r.status == 200 {
            successors.insert(set_cookies(&r)["__Host-pc_refresh"].value.clone());
        }
    }
    assert_eq!(
        successors.len(),
        1,
        "exactly one successor across both instances"
    );
    // The rate-limit windows are shared too: neither log mentions the Redis URL.
    assert!(!a.log().contains(&redis.url()) && !b.log().contains(&redis.url()));
}

#[test]
fn redis_outage_fails_closed_and_recovers_without_restart() {
    let mut redis = RedisServer::start();
    let up = Upstream::start();
    let (a, b) = pair(&redis, &up);
    let jar = Jar::from(&login_json(&a, "alice@example.com", PASSWORD), "__Host-");
    redis.stop();
    let t = Instant::now();
    for gw in [&a, &b] {
        let body = gw.wait_ready_status(503, Duration::from_secs(2));
        assert!(body.contains("redis"), "{body}");
    }
    let r = refresh(&a, &jar);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(login_json(&b, "alice@example.com", PASSWORD).status, 503);
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // Within max_staleness the local revocation view still serves access tokens...
    assert_eq!(proxied(&a, &jar).status, 200);
    // ...after it, requests fail closed.
    std::thread::sleep(Duration::from_millis(6000));
    let r = proxied(&b, &jar);
    assert_eq!(r.status, 503, "{}", r.body);
    redis.spawn();
    for gw in [&a, &b] {
        gw.wait_ready_status(200, Duration::from_secs(5));
    }
    assert_eq!(refresh(&a, &jar).status, 200, "recovered without a restart");
    assert_eq!(proxied(&b, &jar).status, 200);
}
