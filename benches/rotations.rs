//! Refresh-token rotations per second with 1, 8 and 64 concurrent clients, each rotating its
//! own session in a loop (no reuse, no race), on sled and on Redis:
//!
//! - `store`: the backend alone (`TokenStore::rotate`, durable before it returns), one tokio
//!   task per client; for sled also the flushes per rotation that group commit achieved;
//! - `http`: the real gateway binary, each client a thread with its own keep-alive connection
//!   that logs in once and then posts `/auth/refresh` with its newest cookie and the CSRF
//!   header, as a browser tab would.
//!
//! Run through `scripts/bench/rotations.sh`, or directly: `cargo bench --bench rotations`.
//! Environment: `ROT_SECS` (per measurement, default 10), `ROT_CLIENTS` (default "1 8 64"),
//! `ROT_BACKENDS` (default "sled redis"), `ROT_LEVELS` (default "store http"), `BENCH_BIN`
//! (the gateway binary for `http`; default: the one Cargo built with this bench).
//! A client whose request takes longer than 5 s is counted as stalled and stops: a store
//! that stops answering shows up as a low count and a stalled column, not as a hung bench.

use portcullis::store::sled::SledStore;
use portcullis::store::{Family, RotateOutcome, RotationPolicy, TokenStore};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const PASSWORD: &str = "bench-only rotation password";
const STALL: Duration = Duration::from_secs(5);

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One measurement.
struct Run {
    level: &'static str,
    backend: String,
    clients: usize,
    rotations: u64,
    secs: f64,
    latencies_us: Vec<u64>,
    errors: u64,
    stalled: usize,
    /// sled only: (flushes, jobs) during the run.
    flushes: Option<(u64, u64)>,
}

impl Run {
    fn print(&mut self) {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| -> f64 {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            let i = ((self.latencies_us.len() - 1) as f64 * p).round() as usize;
            self.latencies_us[i] as f64 / 1000.0
        };
        let flushes = match self.flushes {
            Some((f, _)) if self.rotations > 0 => {
                format!("{:.3}", f as f64 / self.rotations as f64)
            }
            _ => "-".into(),
        };
        println!(
            "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.1} | {} | {} | {} |",
            self.level,
            self.backend,
            self.clients,
            self.rotations,
            self.rotations as f64 / self.secs,
            pct(0.5),
            pct(0.99),
            pct(1.0),
            flushes,
            self.errors,
            self.stalled
        );
    }
}

/// A redis-server on a free loopback port (append-only file, fsync every second: Redis's
/// usual durable setting); killed on drop.
struct Redis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Option<Redis> {
        let port = free_port();
        let dir = tempfile::tempdir().ok()?;
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .ok()?;
        wait_port(port);
        Some(Redis {
            port,
            child,
            _dir: dir,
        })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Forget everything between runs.
    fn flush_all(&self) {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
            let _ = s.write_all(b"FLUSHALL\r\n");
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf);
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `clients` tasks, each rotating its own session for `secs`.
fn store_run(
    store: Arc<dyn TokenStore>,
    backend: &str,
    clients: usize,
    secs: u64,
    sled: Option<&SledStore>,
) -> Run {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let policy = RotationPolicy {
        refresh_ttl: 3600,
        reuse_grace_ms: 10_000,
        revoke_user_on_reuse: false,
        revocation_ttl: 960,
    };
    let tag = format!("{backend}-{clients}-{}", now_ms());
    let now = now_ms() / 1000;
    for c in 0..clients {
        let f = Family {
            sid: format!("{tag}-s{c}"),
            user: format!("{tag}-u{c}"),
            created: now,
            max_exp: now + 86400,
            idle_exp: now + 3600,
            current: format!("{tag}-{c}-0"),
            previous: None,
            rotated_at: now,
            rotated_at_ms: Some(now * 1000),
            revoked: false,
            origin: None,
            auth_time: None,
            amr: Vec::new(),
        };
        rt.block_on(store.create_family(&f))
            .expect("create a session");
    }
    let before = sled.map(|s| s.stats());
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (store, tag) = (store.clone(), tag.clone());
            rt.spawn(async move {
                let (mut n, mut errors, mut lat) = (0u64, 0u64, Vec::new());
                while Instant::now() < end {
                    let (from, to) = (format!("{tag}-{c}-{n}"), format!("{tag}-{c}-{}", n + 1));
                    let t = Instant::now();
                    let out =
                        tokio::time::timeout(STALL, store.rotate(&from, &to, now_ms(), &policy))
                            .await;
                    match out {
                        Ok(Ok(RotateOutcome::Rotated { replay: false, .. })) => {
                            lat.push(t.elapsed().as_micros() as u64);
                            n += 1;
                        }
                        Ok(_) => {
                            errors += 1;
                            break;
                        }
                        Err(_) => return (n, errors, lat, true),
                    }
                }
                (n, errors, lat, false)
            })
        })
        .collect();
    let mut run = Run {
        level: "store",
        backend: backend.into(),
        clients,
        rotations: 0,
        secs: 0.0,
        latencies_us: Vec::new(),
        errors: 0,
        stalled: 0,
        flushes: None,
    };
    for t in tasks {
        let (n, e, lat, stalled) = rt.block_on(t).expect("a client task");
        run.rotations += n;
        run.errors += e;
        run.latencies_us.extend(lat);
        run.stalled += usize::from(stalled);
    }
    run.secs = started.elapsed().as_secs_f64();
    if let (Some(b), Some(s)) = (before, sled) {
        let a = s.stats();
        run.flushes = Some((a.flushes - b.flushes, a.jobs - b.jobs));
    }
    rt.shutdown_background();
    run
}

/// The gateway binary with a fresh data directory; killed on drop.
struct Gateway {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Gateway {
    fn start(bin: &Path, store: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("a temp dir");
        let port = free_port();
        let out = Command::new(bin)
            .args(["keygen", "--alg", "EdDSA", "--kid", "k1", "--out", "keys"])
            .current_dir(dir.path())
            .output()
            .expect("run keygen");
        assert!(out.status.success(), "keygen failed");
        let hash = portcullis::auth::password::hash_password(PASSWORD);
        std::fs::write(
            dir.path().join("users.yaml"),
            format!("users:\n  bench: {{ email: bench@example.com, password: \"{hash}\", roles: [user] }}\n"),
        )
        .expect("write users");
        let config = format!(
            "server:\n  listen: [\"127.0.0.1:{port}\"]\n  public_url: http://127.0.0.1:{port}\n  threads: 1\n  grace_period: 1s\n\
             tokens:\n  reuse_grace: 10s\n  signing_keys:\n    - {{ kid: k1, algorithm: EdDSA, private_key_file: keys/k1.private.pem }}\n\
             users: {{ file: users.yaml }}\n{store}\
             rate_limits: {{ login_per_ip: 100000/1m, login_per_account: 100000/1m, refresh_per_ip: 1000000000/1m }}\n\
             logging: {{ format: json, level: warn }}\n\
             upstreams:\n  app: {{ addresses: [\"127.0.0.1:9\"] }}\nroutes:\n  - {{ path_prefix: /, upstream: app }}\n"
        );
        let path = dir.path().join("portcullis.yaml");
        std::fs::write(&path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("gateway.log")).expect("a log file");
        let child = Command::new(bin)
            .args(["serve", "-c"])
            .arg(&path)
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the gateway");
        wait_port(port);
        Gateway { port, child, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(STALL))
        .build()
        .new_agent()
}

/// The value of our cookie `name` among `Set-Cookie` headers (any prefix).
fn cookie(r: &http::Response<ureq::Body>, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (k, rest) = v.split_once('=')?;
            k.ends_with(name)
                .then(|| rest.split(';').next().unwrap_or("").to_string())
        })
}

fn http_run(bin: &Path, backend: &str, store_yaml: &str, clients: usize, secs: u64) -> Run {
    let gw = Gateway::start(bin, store_yaml);
    let port = gw.port;
    // Log in once per client; all start together.
    let barrier = Arc::new(Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let agent = agent();
                // Logins are argon2 checks behind a small semaphore: a burst of 64 gets some
                // 503 "busy" answers, so retry for a while.
                let mut session = None;
                for _ in 0..200 {
                    let login = agent
                        .post(format!("http://127.0.0.1:{port}/auth/login"))
                        .header("Content-Type", "application/json")
                        .send(format!(
                            r#"{{"email":"bench@example.com","password":"{PASSWORD}"}}"#
                        ));
                    if let Ok(r) = login {
                        if r.status() == 200 {
                            session = cookie(&r, "pc_refresh").zip(cookie(&r, "pc_csrf"));
                            break;
                        }
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
                barrier.wait();
                let Some((mut refresh, csrf)) = session else {
                    return (0, 1, Vec::new(), false);
                };
                let (mut n, mut errors, mut lat) = (0u64, 0u64, Vec::new());
                let end = Instant::now() + Duration::from_secs(secs);
                while Instant::now() < end {
                    let t = Instant::now();
                    let r = agent
                        .post(format!("http://127.0.0.1:{port}/auth/refresh"))
                        .header(
                            "Cookie",
                            format!("__Host-pc_refresh={refresh}; __Host-pc_csrf={csrf}"),
                        )
                        .header("X-CSRF-Token", &csrf)
                        .send(&b""[..]);
                    match r {
                        Ok(mut r) if r.status() == 200 => {
                            let _ = r.body_mut().read_to_vec();
                            match cookie(&r, "pc_refresh") {
                                Some(next) => refresh = next,
                                None => {
                                    errors += 1;
                                    break;
                                }
                            }
                            lat.push(t.elapsed().as_micros() as u64);
                            n += 1;
                        }
                        Ok(_) => {
                            errors += 1;
                            break;
                        }
                        Err(_) => return (n, errors, lat, true),
                    }
                }
                (n, errors, lat, false)
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    let mut run = Run {
        level: "http",
        backend: backend.into(),
        clients,
        rotations: 0,
        secs: 0.0,
        latencies_us: Vec::new(),
        errors: 0,
        stalled: 0,
        flushes: None,
    };
    for t in threads {
        let (n, e, lat, stalled) = t.join().expect("a client thread");
        run.rotations += n;
        run.errors += e;
        run.latencies_us.extend(lat);
        run.stalled += usize::from(stalled);
    }
    run.secs = started.elapsed().as_secs_f64();
    if run.errors > 0 || run.stalled > 0 {
        let log = gw.log();
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        eprintln!("gateway log tail ({backend}, {clients} clients): {tail:?}");
    }
    run
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported here.
    let secs: u64 = env_or("ROT_SECS", "10").parse().expect("ROT_SECS: seconds");
    let clients: Vec<usize> = env_or("ROT_CLIENTS", "1 8 64")
        .split_whitespace()
        .map(|c| c.parse().expect("ROT_CLIENTS: numbers"))
        .collect();
    let backends = env_or("ROT_BACKENDS", "sled redis");
    let levels = env_or("ROT_LEVELS", "store http");
    let bin = std::env::var("BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_BIN_EXE_portcullis")));
    let redis = if backends.contains("redis") {
        let r = Redis::start();
        if r.is_none() {
            eprintln!(
                "redis-server not found: Redis skipped (scripts/bench/rotations.sh installs it)"
            );
        }
        r
    } else {
        None
    };
    println!("rotations per second, {secs} s per row, each client rotating its own session");
    println!("| level | backend | clients | rotations | rotations/s | p50 ms | p99 ms | max ms | flushes/rotation | errors | stalled clients |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for level in levels.split_whitespace() {
        for backend in backends.split_whitespace() {
            for &n in &clients {
                let mut run = match (level, backend) {
                    ("store", "sled") => {
                        let dir = tempfile::tempdir().expect("a temp dir");
                        let sled = Arc::new(
                            SledStore::open(&dir.path().join("db"), Duration::from_secs(1))
                                .expect("open sled"),
                        );
                        store_run(sled.clone(), "sled", n, secs, Some(&sled))
                    }
                    ("store", "redis") => {
                        let Some(r) = &redis else { continue };
                        r.flush_all();
                        let url = portcullis::secret::Secret::new(r.url());
                        let store = portcullis::store::redis::RedisStore::open(
                            &url,
                            Duration::from_secs(30),
                        )
                        .expect("open redis");
                        store_run(Arc::new(store), "redis", n, secs, None)
                    }
                    ("http", "sled") => http_run(
                        &bin,
                        "sled",
                        "store: { backend: sled, path: data/portcullis.db }\n",
                        n,
                        secs,
                    ),
                    ("http", "redis") => {
                        let Some(r) = &redis else { continue };
                        r.flush_all();
                        let yaml =
                            format!("store: {{ backend: redis, redis_url: \"{}\" }}\n", r.url());
                        http_run(&bin, "redis", &yaml, n, secs)
                    }
                    _ => continue,
                };
                run.print();
            }
        }
    }
}
