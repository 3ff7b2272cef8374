//! Access-token verification per algorithm: cold (signature checked every time) and cached.
//! Target: a cached verification under 1 µs.
//!
//! Run: `cargo bench --bench verify`

use criterion::{criterion_group, criterion_main, Criterion};
use portcullis::clock::SystemClock;
use portcullis::config::{Algorithm, KeySource, SigningKey};
use portcullis::secret::Secret;
use portcullis::tokens::access::{Subject, TokenService};
use portcullis::tokens::keys::{generate, Keyring};
use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// Poll a future that completes without waiting (own keys never wait).
fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("verification waited"),
    }
}

fn service(alg: Algorithm, dir: &std::path::Path) -> TokenService {
    let source = match alg {
        Algorithm::HS256 => {
            KeySource::Secret(Secret::new("0123456789abcdef0123456789abcdef".into()))
        }
        _ => {
            let p = dir.join(format!("{alg:?}.pem"));
            std::fs::write(&p, generate(alg).unwrap().0).unwrap();
            KeySource::PrivatePem(p)
        }
    };
    let keyring = Keyring::load(&[SigningKey {
        kid: "k".into(),
        algorithm: alg,
        source,
    }])
    .unwrap();
    let cfg = portcullis::config::parse("{}", "bench".as_ref(), ".".as_ref(), |_| None)
        .unwrap()
        .tokens;
    TokenService::new(
        &cfg,
        keyring,
        Default::default(),
        Default::default(),
        Arc::new(SystemClock),
    )
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let roles = vec!["user".to_string()];
    for alg in [
        Algorithm::EdDSA,
        Algorithm::ES256,
        Algorithm::RS256,
        Algorithm::HS256,
    ] {
        let svc = service(alg, dir.path());
        let token = svc
            .issue(
                &Subject {
                    sub: "alice",
                    email: "alice@example.com",
                    roles: &roles,
                    auth_time: 0,
                    amr: &[],
                },
                "sid",
            )
            .unwrap()
            .token;
        let now = portcullis::clock::Clock::now(&SystemClock);
        c.bench_function(&format!("verify_cold/{alg:?}"), |b| {
            b.iter(|| now_or_never(svc.verify_uncached(black_box(&token), now)).unwrap())
        });
        now_or_never(svc.verify(&token)).unwrap();
        c.bench_function(&format!("verify_cached/{alg:?}"), |b| {
            b.iter(|| now_or_never(svc.verify(black_box(&token))).unwrap())
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
