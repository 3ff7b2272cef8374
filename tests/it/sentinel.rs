//! High availability on Redis Sentinel: a master, two replicas and three sentinels on
//! loopback, the gateway finding the master through the sentinels and making every write wait
//! for one replica. The master is killed in the middle of a stream of rotations: the gateway
//! follows the new master by itself, no token a client received is lost, and no rotated token
//! comes back. The same holds when an operator moves the master (`SENTINEL FAILOVER`) while
//! the old one keeps running; and with too few replicas, writes fail with 503 rather than be
//! answered as done.
//!
//! Two replicas, not one: with `redis_min_replicas_acked: 1` the promoted replica needs a
//! replica of its own, or every later write would rightly fail for want of an acknowledgement.
//!
//! Every process is started by the test on ephemeral loopback ports and killed when it ends.

use crate::auth::{login_json, users_yaml, Jar, PASSWORD};
use crate::harness::*;
use portcullis::store::TokenStore;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Sentinel declares the master down after this long without an answer.
const DOWN_AFTER_MS: u64 = 1000;
/// Sentinel's bound on one failover attempt (and on reconfiguring the replicas).
const FAILOVER_TIMEOUT_MS: u64 = 3000;
const MASTER_NAME: &str = "portcullis";
/// Every data node requires it: the gateway takes it from `store.redis_url`.
const REDIS_PASSWORD: &str = "sentinel-test-only-secret";
/// Longer than a failover: a client whose rotation was applied but whose answer was lost
/// with the master retries its token afterwards and gets the same successor.
const REUSE_GRACE: Duration = Duration::from_secs(10);
/// No request may take longer than this (the gateway answers 503 rather than hang).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

const INSTALL: &str =
    "redis-server and redis-sentinel are needed for this test: apt-get install redis-server redis-sentinel (scripts/test.sh installs them)";

/// One server process, killed (SIGKILL) and reaped on drop.
struct Proc {
    child: Option<Child>,
}

impl Proc {
    fn spawn(bin: &str, args: &[String], log: &Path) -> Proc {
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new(bin)
            .args(args)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("{bin}: {e}. {INSTALL}"));
        Proc { child: Some(child) }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One command over RESP (after `AUTH` when `password` is given); the reply as text, arrays
/// one element per line, errors starting with `-`.
fn command(port: u16, password: Option<&str>, args: &[&str]) -> std::io::Result<String> {
    commands(port, password, &[args]).map(|mut replies| replies.pop().unwrap_or_default())
}

/// Several commands on one connection; their replies.
fn commands(port: u16, password: Option<&str>, all: &[&[&str]]) -> std::io::Result<Vec<String>> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.set_write_timeout(Some(Duration::from_secs(1)))?;
    let mut out = Vec::new();
    let mut push = |args: &[&str]| {
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
    };
    if let Some(pw) = password {
        push(&["AUTH", pw]);
    }
    for args in all {
        push(args);
    }
    s.write_all(&out)?;
    let mut r = BufReader::new(s);
    if password.is_some() {
        read_reply(&mut r)?;
    }
    all.iter().map(|_| read_reply(&mut r)).collect()
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<String> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not a RESP reply");
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = (line.get(..1).ok_or_else(bad)?, line.get(1..).unwrap_or(""));
    match kind {
        "+" | ":" => Ok(rest.to_string()),
        "-" => Ok(format!("-{rest}")),
        "$" => {
            let Ok(n) = usize::try_from(rest.parse::<i64>().map_err(|_| bad())?) else {
                return Ok(String::new());
            };
            let mut buf = vec![0; n + 2];
            r.read_exact(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        }
        "*" => {
            let n = rest.parse::<i64>().map_err(|_| bad())?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Ok(items.join("\n"))
        }
        _ => Err(bad()),
    }
}

/// Poll `check` every 20 ms until it holds; panic with `what` after `limit`.
fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn require(bins: &[&str]) {
    for bin in bins {
        let found = Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(found, "{bin} not found. {INSTALL}");
    }
}

/// A redis-server on `port` requiring [`REDIS_PASSWORD`], a replica of `replica_of` if given.
fn data_node(dir: &Path, name: &str, port: u16, replica_of: Option<u16>) -> Proc {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--requirepass",
        REDIS_PASSWORD,
        "--masterauth",
        REDIS_PASSWORD,
        // A replica (re)joining is in sync at once, not after the default 5 s.
        "--repl-diskless-sync-delay",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("--dir".into());
    args.push(dir.display().to_string());
    args.push("--dbfilename".into());
    args.push(format!("{name}.rdb"));
    if let Some(m) = replica_of {
        args.extend(["--replicaof".into(), "127.0.0.1".into(), m.to_string()]);
    }
    let p = Proc::spawn("redis-server", &args, &dir.join(format!("{name}.log")));
    wait_for(Duration::from_secs(5), &format!("{name} answers"), || {
        command(port, Some(REDIS_PASSWORD), &["PING"]).is_ok_and(|r| r == "PONG")
    });
    p
}

/// Until exactly `n` replicas are attached and receive writes: a write followed by `WAIT`
/// (a replica that has just loaded its copy is fed only after its first acknowledgement,
/// up to a second later, and a failover then could promote a replica that lacks writes).
fn wait_for_replicas(master_port: u16, n: usize) {
    let n_text = n.to_string();
    wait_for(
        Duration::from_secs(5),
        &format!("{n} replicas in sync"),
        || {
            let probe: &[&[&str]] = &[
                &["INFO", "replication"],
                &["SET", "test:probe", "1"],
                &["WAIT", &n_text, "100"],
            ];
            commands(master_port, Some(REDIS_PASSWORD), probe)
                .is_ok_and(|r| r[0].matches("state=online").count() == n && r[2] == n_text)
        },
    );
}

/// The data nodes and the sentinels watching them.
struct Cluster {
    master_port: u16,
    sentinel_ports: Vec<u16>,
    master: Proc,
    _replicas: Vec<Proc>,
    _sentinels: Vec<Proc>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        require(&["redis-server", "redis-sentinel"]);
        let dir = tempfile::tempdir().unwrap();
        let master_port = free_port();
        let master = data_node(dir.path(), "master", master_port, None);
        let replica_ports = [free_port(), free_port()];
        let replicas: Vec<Proc> = replica_ports
            .iter()
            .enumerate()
            .map(|(i, p)| data_node(dir.path(), &format!("replica{i}"), *p, Some(master_port)))
            .collect();
        wait_for_replicas(master_port, 2);

        // The sentinels know each other and the replicas from the start (no discovery wait).
        let sentinel_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let id = |i: usize| format!("{:040x}", i + 1);
        let sentinels = (0..3)
            .map(|i| {
                let mut conf = format!(
                    "port {}\nbind 127.0.0.1\ndir {}\nsentinel myid {}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                     sentinel auth-pass {MASTER_NAME} {REDIS_PASSWORD}\n\
                     sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n\
                     sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    sentinel_ports[i],
                    dir.path().display(),
                    id(i)
                );
                for p in replica_ports {
                    conf.push_str(&format!(
                        "sentinel known-replica {MASTER_NAME} 127.0.0.1 {p}\n"
                    ));
                }
                for (j, p) in sentinel_ports.iter().enumerate().filter(|(j, _)| *j != i) {
                    conf.push_str(&format!(
                        "sentinel known-sentinel {MASTER_NAME} 127.0.0.1 {p} {}\n",
                        id(j)
                    ));
                }
                let path = dir.path().join(format!("sentinel{i}.conf"));
                std::fs::write(&path, conf).unwrap();
                Proc::spawn(
                    "redis-sentinel",
                    &[path.display().to_string()],
                    &dir.path().join(format!("sentinel{i}.log")),
                )
            })
            .collect();
        for p in &sentinel_ports {
            wait_for(
                Duration::from_secs(5),
                "every sentinel sees the master, both replicas and the other sentinels",
                || {
                    command(*p, None, &["INFO", "sentinel"]).is_ok_and(|info| {
                        info.contains(&format!(
                            "address=127.0.0.1:{master_port},slaves=2,sentinels=3"
                        ))
                    })
                },
            );
        }
        Cluster {
            master_port,
            sentinel_ports,
            master,
            _replicas: replicas,
            _sentinels: sentinels,
            dir,
        }
    }

    /// The master's port according to any sentinel that has one other than `old`.
    fn new_master_port(&self, old: u16) -> Option<u16> {
        self.sentinel_ports.iter().find_map(|p| {
            let reply = command(
                *p,
                None,
                &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
            )
            .ok()?;
            let port: u16 = reply.lines().nth(1)?.parse().ok()?;
            (port != old).then_some(port)
        })
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for name in [
            "sentinel0",
            "sentinel1",
            "sentinel2",
            "master",
            "replica0",
            "replica1",
        ] {
            let path: PathBuf = self.dir.path().join(format!("{name}.log"));
            out.push_str(&format!("--- {name}\n"));
            out.push_str(&std::fs::read_to_string(path).unwrap_or_default());
        }
        out
    }
}

/// One browser session refreshing in a loop.
#[derive(Default)]
struct Session {
    /// The CSRF cookie of the login, sent back as the header.
    csrf: String,
    /// Every refresh token received, with when: the first from the login.
    received: Vec<(Instant, String)>,
    /// Answers other than 200 and 503 (a lost token shows as 403), and transport failures.
    unexpected: Vec<String>,
    unavailable: usize,
    slowest: Duration,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(CLIENT_TIMEOUT))
        .build()
        .new_agent()
}

/// POST /auth/refresh with `token`: the status and the rotated refresh cookie.
fn refresh_with(
    agent: &ureq::Agent,
    gw_port: u16,
    csrf: &str,
    token: &str,
) -> Result<(u16, Option<String>, String), String> {
    let cookie = format!("__Host-pc_refresh={token}; __Host-pc_csrf={csrf}");
    let r = agent
        .post(format!("http://127.0.0.1:{gw_port}/auth/refresh"))
        .header("Cookie", &cookie)
        .header("X-CSRF-Token", csrf)
        .send(&b""[..])
        .map_err(|e| e.to_string())?;
    let r = snapshot(r);
    let rotated = crate::auth::set_cookies(&r)
        .get("__Host-pc_refresh")
        .map(|c| c.value.clone())
        .filter(|v| !v.is_empty());
    Ok((r.status, rotated, r.body))
}

/// Stops the client threads however the test ends.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The gateway under test: the master found through the sentinels, every write waiting for
/// one replica.
fn gateway(cluster: &Cluster, up: &Upstream) -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    crate::tokens::keygen(dir.path(), "EdDSA", "ed1");
    std::fs::write(dir.path().join("users.yaml"), users_yaml()).unwrap();
    let sentinels: Vec<String> = cluster
        .sentinel_ports
        .iter()
        .map(|p| format!("\"127.0.0.1:{p}\""))
        .collect();
    // The URL's host is never used with Sentinel: only its database and password are.
    let config = format!(
        "store:\n  backend: redis\n  redis_url: \"redis://:{REDIS_PASSWORD}@unused.invalid/0\"\n  redis_sentinel: {{ master_name: {MASTER_NAME}, addresses: [{}] }}\n  redis_min_replicas_acked: 1\n  max_staleness: 30s\n\
         tokens:\n  issuer: https://gw.test\n  reuse_grace: {}s\n  on_reuse: revoke_family\n  signing_keys:\n    - {{ kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }}\n\
         users: {{ file: users.yaml }}\n\
         rate_limits: {{ login_per_ip: 1000/1m, login_per_account: 1000/1m, login_per_account_ip: 1000/1m, login_per_device: 1000/1m, refresh_per_ip: 100000/1m }}\n\
         upstreams:\n  app: {{ addresses: [\"{}\"] }}\nroutes:\n  - {{ path_prefix: /, upstream: app }}\n",
        sentinels.join(", "),
        REUSE_GRACE.as_secs(),
        up.addr
    );
    let gw = Gateway::start_in(&config, dir);
    gw.wait_ready_status(200, Duration::from_secs(10));
    gw
}

#[test]
fn sentinel_failover_keeps_every_acknowledged_rotation() {
    let began = Instant::now();
    let mut cluster = Cluster::start();
    let up = Upstream::start();
    let gw = gateway(&cluster, &up);

    // Four sessions (two users, two browsers each) refreshing as fast as they are answered.
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_guard = StopOnDrop(stop.clone());
    let killed_at: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let first_ok_after_kill: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let mut threads = Vec::new();
    for email in [
        "alice@example.com",
        "carol@example.com",
        "alice@example.com",
        "carol@example.com",
    ] {
        let login = login_json(&gw, email, PASSWORD);
        assert_eq!(login.status, 200, "{}", login.body);
        let jar = Jar::from(&login, "__Host-");
        let (stop, killed_at, first_ok) =
            (stop.clone(), killed_at.clone(), first_ok_after_kill.clone());
        let port = gw.port;
        threads.push(std::thread::spawn(move || {
            let agent = agent();
            let mut s = Session {
                received: vec![(Instant::now(), jar.refresh.clone())],
                csrf: jar.csrf.clone(),
                ..Session::default()
            };
            while !stop.load(Ordering::SeqCst) {
                let token = s
                    .received
                    .last()
                    .map(|(_, t)| t.clone())
                    .unwrap_or_default();
                let sent = Instant::now();
                let answer = refresh_with(&agent, port, &s.csrf, &token);
                s.slowest = s.slowest.max(sent.elapsed());
                match answer {
                    Ok((200, Some(next), _)) => {
                        let now = Instant::now();
                        s.received.push((now, next));
                        if killed_at.get().is_some_and(|k| sent > *k) {
                            first_ok.lock().unwrap().get_or_insert(now);
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok((503, _, _)) => {
                        s.unavailable += 1;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Ok((status, _, body)) => {
                        s.unexpected.push(format!("{status} {body}"));
                        break;
                    }
                    Err(e) => {
                        s.unexpected.push(format!("transport: {e}"));
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            s
        }));
    }

    std::thread::sleep(Duration::from_millis(1500));
    let old_master = cluster.master_port;
    killed_at.set(Instant::now()).unwrap();
    let kill = *killed_at.get().unwrap();
    cluster.master.kill();

    // Recovered: a refresh sent after the kill succeeded, and readiness says ready.
    let mut switched: Option<Duration> = None;
    let mut readiness_failed = false;
    let recovered = loop {
        if switched.is_none() && cluster.new_master_port(old_master).is_some() {
            switched = Some(kill.elapsed());
        }
        let ready = matches!(raw_get(gw.port, "/readyz"), Ok((200, _)));
        readiness_failed |= !ready;
        if ready && first_ok_after_kill.lock().unwrap().is_some() {
            break kill.elapsed();
        }
        assert!(
            kill.elapsed() < Duration::from_secs(15),
            "the gateway did not recover within 15 s\n--- gateway\n{}\n{}",
            gw.log(),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let switched = switched.or_else(|| cluster.new_master_port(old_master).map(|_| kill.elapsed()));
    println!(
        "sentinel failover: new master announced after {} ms; gateway recovered (refreshes \
         succeed, /readyz 200) after {} ms; readiness reported the outage: {readiness_failed}",
        switched.map_or("?".into(), |d| d.as_millis().to_string()),
        recovered.as_millis()
    );
    let bound = Duration::from_millis(DOWN_AFTER_MS + FAILOVER_TIMEOUT_MS + 2000);
    assert!(
        recovered <= bound,
        "recovery took {recovered:?}, more than the sentinel timeouts plus 2 s ({bound:?})"
    );
    if let Some(switched) = switched {
        assert!(
            recovered <= switched + Duration::from_secs(2),
            "recovery took {recovered:?}, more than 2 s after Sentinel's switch ({switched:?})"
        );
    }

    // The stream goes on after the failover, then stops.
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::SeqCst);
    let sessions: Vec<Session> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut unavailable = 0;
    for (i, s) in sessions.iter().enumerate() {
        assert!(
            s.unexpected.is_empty(),
            "session {i}: only 200 and 503 may be answered, in time: {:?}\n{}",
            s.unexpected,
            gw.log()
        );
        assert!(
            s.slowest < CLIENT_TIMEOUT,
            "session {i} waited {:?}",
            s.slowest
        );
        assert!(
            s.received.iter().filter(|(at, _)| *at < kill).count() >= 3,
            "session {i} rotated before the kill"
        );
        assert!(
            s.received.iter().any(|(at, _)| *at > kill),
            "session {i} rotated after the failover"
        );
        unavailable += s.unavailable;
    }
    println!(
        "rotations: {}; answered 503 during the failover: {unavailable}",
        sessions.iter().map(|s| s.received.len() - 1).sum::<usize>()
    );

    // Past the grace window of every rotation acknowledged before the kill: each session's
    // last token still refreshes (nothing lost), and the parent of the last token it received
    // before the kill is reuse (that rotation survived the loss of the master).
    let agent = agent();
    let wait =
        (kill + REUSE_GRACE + Duration::from_millis(500)).saturating_duration_since(Instant::now());
    std::thread::sleep(wait);
    for (i, s) in sessions.iter().enumerate() {
        let last = &s.received.last().unwrap().1;
        // A 503 is the store catching up (a replica resyncing after the failover on a busy
        // machine), not a lost token: a lost one would be 403. Asked again for a bounded time.
        let settled = |token: &str| {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let r = refresh_with(&agent, gw.port, &s.csrf, token).unwrap();
                if r.0 != 503 || Instant::now() > deadline {
                    break r;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        };
        let r = settled(last);
        assert_eq!(r.0, 200, "session {i}: its last token was lost: {}", r.2);
        let before_kill = s.received.iter().filter(|(at, _)| *at < kill).count();
        let parent = &s.received[before_kill - 2].1;
        // A token that came back would rotate (200); reuse is 403.
        let r = settled(parent);
        assert_eq!(r.0, 403, "session {i}: a rotated token came back: {}", r.2);
        assert!(r.2.contains("refresh_token_reused"), "{}", r.2);
    }
    // The gateway's own account of the failover.
    for line in gw.log().lines().filter(|l| l.contains("portcullis::store")) {
        println!("gateway: {line}");
    }
    assert!(
        !gw.log().contains(REDIS_PASSWORD),
        "the Redis password appears in the gateway's log"
    );
    assert!(
        began.elapsed() < Duration::from_secs(30),
        "the test took {:?}",
        began.elapsed()
    );
}

/// With `redis_min_replicas_acked`, a write no replica acknowledged is not answered as done:
/// login and refresh get 503, and the client's token keeps working once a replica is back.
#[test]
fn too_few_replicas_fail_writes_instead_of_claiming_durability() {
    require(&["redis-server"]);
    let dir = tempfile::tempdir().unwrap();
    let master_port = free_port();
    let _master = data_node(dir.path(), "master", master_port, None);
    let replica_port = free_port();
    let up = Upstream::start();
    let url = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{master_port}/0");
    let gw = crate::auth::auth_gateway(
        &format!(
            "store: {{ backend: redis, redis_url: \"{url}\", redis_min_replicas_acked: 1 }}\n\
             tokens:\n  reuse_grace: {}s\n  signing_keys:\n    - {{ kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }}\n",
            REUSE_GRACE.as_secs()
        ),
        &up,
    );
    // Readiness does not depend on replicas: access tokens keep working without them.
    gw.wait_ready_status(200, Duration::from_secs(5));
    let t = Instant::now();
    let r = login_json(&gw, "alice@example.com", PASSWORD);
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["error"], "store_unavailable");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    let mut replica = data_node(dir.path(), "replica", replica_port, Some(master_port));
    wait_for_replicas(master_port, 1);
    let r = login_json(&gw, "alice@example.com", PASSWORD);
    assert_eq!(r.status, 200, "{}", r.body);
    let jar = Jar::from(&r, "__Host-");
    let agent = agent();
    let (status, first, _) = refresh_with(&agent, gw.port, &jar.csrf, &jar.refresh).unwrap();
    assert_eq!(status, 200);
    let token = first.unwrap();

    // The replica goes: the rotation is made on the master but not answered as done.
    replica.kill();
    wait_for_replicas(master_port, 0);
    let (status, _, body) = refresh_with(&agent, gw.port, &jar.csrf, &token).unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(gw.log().contains("too few redis replicas"), "{}", gw.log());
    // Back: the same token is retried inside the grace window and gets its successor.
    let _replica = data_node(dir.path(), "replica", replica_port, Some(master_port));
    wait_for_replicas(master_port, 1);
    let (status, next, body) = refresh_with(&agent, gw.port, &jar.csrf, &token).unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = refresh_with(&agent, gw.port, &jar.csrf, &next.unwrap()).unwrap();
    assert_eq!(status, 200, "{body}");

    // Every store operation keeps its contract with each write waiting for the replica.
    let store = Arc::new(
        portcullis::store::redis::RedisStore::open_with(
            &portcullis::secret::Secret::new(url),
            Duration::from_secs(30),
            None,
            1,
        )
        .unwrap(),
    );
    let rt = portcullis::store::runtime();
    let watcher = store.clone();
    let watching = rt.spawn(async move { watcher.watch_revocations(Default::default()).await });
    wait_for(
        Duration::from_secs(5),
        "the revocation view synchronised",
        || rt.block_on(store.ping()).is_ok(),
    );
    rt.block_on(crate::store_contract::contract::run(store.as_ref(), "wait"));
    rt.block_on(crate::store_contract::contract::concurrent_rotation(
        store.clone(),
        "wait",
    ));
    rt.block_on(crate::store_contract::contract::concurrent_second_factor(
        store.clone(),
        "wait",
    ));
    watching.abort();
}

/// An operator's failover (`SENTINEL FAILOVER`, as for maintenance): the old master stays up
/// and keeps accepting writes until Sentinel demotes it, but none is answered as done (its
/// replicas follow the new master, so `WAIT` fails), and the gateway moves to the new master
/// by itself.
#[test]
fn manual_failover_moves_the_gateway_and_loses_nothing() {
    let cluster = Cluster::start();
    let up = Upstream::start();
    let gw = gateway(&cluster, &up);
    let login = login_json(&gw, "alice@example.com", PASSWORD);
    assert_eq!(login.status, 200, "{}", login.body);
    let jar = Jar::from(&login, "__Host-");
    let agent = agent();
    let mut token = jar.refresh.clone();
    // Only 200 (the token moves on) or 503 (it stays) may be answered: a 403 is a lost token.
    let refresh = |token: &mut String| {
        let (status, next, body) = refresh_with(&agent, gw.port, &jar.csrf, token).unwrap();
        assert!(
            status == 200 || status == 503,
            "{status} {body}\n{}\n{}",
            gw.log(),
            cluster.logs()
        );
        if let Some(next) = next.filter(|_| status == 200) {
            *token = next;
        }
        status
    };
    for _ in 0..3 {
        assert_eq!(refresh(&mut token), 200);
    }
    let reply = command(
        cluster.sentinel_ports[0],
        None,
        &["SENTINEL", "FAILOVER", MASTER_NAME],
    )
    .unwrap();
    assert_eq!(reply, "OK");
    let started = Instant::now();
    let new_master = loop {
        let status = refresh(&mut token);
        if let Some(port) = cluster.new_master_port(cluster.master_port) {
            let connected = format!("\"master\":\"127.0.0.1:{port}\"");
            if status == 200 && gw.log().contains(&connected) {
                break port;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the gateway did not move to the new master within 10 s\n{}\n{}",
            gw.log(),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    println!(
        "manual failover: refreshes succeed on the new master (port {new_master}) {} ms after \
         the command",
        started.elapsed().as_millis()
    );
    for _ in 0..3 {
        assert_eq!(refresh(&mut token), 200);
    }
    gw.wait_ready_status(200, Duration::from_secs(2));
    for line in gw.log().lines().filter(|l| l.contains("portcullis::store")) {
        println!("gateway: {line}");
    }
}
