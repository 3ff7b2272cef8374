//! Shared test helpers: the real gateway binary on an ephemeral loopback port, a recording
//! upstream HTTP server, HTTP clients (ureq, and raw bytes for malformed requests).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// A free loopback port (bound, read, released).
/// Config text: `prefix`, then one upstream `app` at `up` behind a public route `/`.
pub fn public_app(prefix: &str, up: &Upstream) -> String {
    format!(
        "{prefix}upstreams:\n  app: {{ addresses: [\"{}\"] }}\nroutes:\n  - {{ path_prefix: /, upstream: app, auth: public }}\n",
        up.addr
    )
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// All values of header `name` (case-insensitive), in order.
pub fn header_values(headers: &[(String, String)], name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .collect()
}

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
}

impl Recorded {
    /// All values of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        header_values(&self.headers, name)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }
}

/// A minimal real HTTP/1.1 server for tests: a thread per connection, keep-alive, request
/// heads parsed with httparse, `Content-Length` bodies. `handler` maps a request to
/// (status, headers, body).
pub struct HttpServer {
    pub addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

pub type Handler = Arc<dyn Fn(&Recorded) -> (u16, Vec<(String, String)>, String) + Send + Sync>;

impl HttpServer {
    pub fn start(addr: SocketAddr, handler: Handler) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (st, cs) = (stop.clone(), conns.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(std::sync::atomic::Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        if let Ok(c) = stream.try_clone() {
                            cs.lock().unwrap().push(c);
                        }
                        let h = handler.clone();
                        std::thread::spawn(move || serve_conn(stream, h));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(HttpServer {
            addr,
            stop,
            conns,
            thread: Some(thread),
        })
    }

    /// Stop listening and drop every open connection.
    pub fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_conn(mut stream: TcpStream, handler: Handler) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // Read a request head.
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut req = httparse::Request::new(&mut headers);
        if !matches!(
            req.parse(&buf[..head_end]),
            Ok(httparse::Status::Complete(_))
        ) {
            return;
        }
        let rec = Recorded {
            method: req.method.unwrap_or("").to_string(),
            url: req.path.unwrap_or("").to_string(),
            headers: req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
        };
        let len: usize = rec
            .header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + len);
        let close = rec
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let (status, headers, body) = handler(&rec);
        let mut out = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&body);
        if stream.write_all(out.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// A real HTTP server that records every request and answers `200 upstream:<port> <url>`
/// with headers a legacy app would send (`Server`, `X-Powered-By`, `X-Frame-Options: DENY`).
/// `/slow?ms=N` answers after N ms; `.../set-cookie/NAME` sets cookie NAME and an app cookie.
pub struct Upstream {
    pub addr: SocketAddr,
    pub recorded: Arc<Mutex<Vec<Recorded>>>,
    server: Option<HttpServer>,
}

impl Upstream {
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap())
    }

    pub fn start_on(addr: SocketAddr) -> Self {
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let rec = recorded.clone();
        let port = Arc::new(std::sync::atomic::AtomicU16::new(addr.port()));
        let p = port.clone();
        let handler: Handler = Arc::new(move |r: &Recorded| {
            rec.lock().unwrap().push(r.clone());
            if let Some(ms) = r.url.strip_prefix("/slow?ms=") {
                std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(1000)));
            }
            let mut headers: Vec<(String, String)> = [
                ("Server", "legacy-upstream/1.0"),
                ("X-Powered-By", "PHP/5.4"),
                ("X-Frame-Options", "DENY"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            if let Some((_, name)) = r.url.split_once("/set-cookie/") {
                headers.push(("Set-Cookie".into(), format!("{name}=from-upstream; Path=/")));
                headers.push(("Set-Cookie".into(), "app_session=kept; Path=/".into()));
            }
            let port = p.load(std::sync::atomic::Ordering::SeqCst);
            (200, headers, format!("upstream:{port} {}", r.url))
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        let server = loop {
            match HttpServer::start(addr, handler.clone()) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("upstream cannot listen on {addr}: {e}"),
            }
        };
        port.store(server.addr.port(), std::sync::atomic::Ordering::SeqCst);
        Upstream {
            addr: server.addr,
            recorded,
            server: Some(server),
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.recorded.lock().unwrap().len()
    }

    /// Stop listening and close every connection; the port is free again afterwards.
    pub fn stop(&mut self) {
        if let Some(mut s) = self.server.take() {
            s.stop();
        }
    }
}

/// The config text for a test gateway: `{PORT}` and `{DIR}` replaced, and a `server:`,
/// `store:` and `logging:` section added when the text has none.
fn render(yaml: &str, port: u16, dir: &Path) -> String {
    let mut text = String::new();
    if !yaml.contains("server:") {
        text.push_str("server:\n  listen: [\"127.0.0.1:{PORT}\"]\n  public_url: http://127.0.0.1:{PORT}\n  grace_period: 1s\n");
    }
    if !yaml.contains("store:") {
        text.push_str("store: { path: data/portcullis.db }\n");
    }
    if !yaml.contains("logging:") {
        text.push_str("logging: { format: json, level: debug }\n");
    }
    text.push_str(yaml);
    text.replace("{PORT}", &port.to_string())
        .replace("{DIR}", &dir.to_string_lossy())
}

/// The real gateway binary, started on an ephemeral port with a config written to a temp dir.
pub struct Gateway {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

impl Gateway {
    /// Start with `yaml`, in which `{PORT}` is the gateway's port and `{DIR}` the temp dir.
    /// When the text has no `server:` section, one listening on `{PORT}` is prepended. The
    /// store goes to the temp dir unless the text says otherwise.
    pub fn start(yaml: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(yaml, dir)
    }

    pub fn start_in(yaml: &str, dir: tempfile::TempDir) -> Self {
        let port = free_port();
        let text = render(yaml, port, dir.path());
        let config_path = dir.path().join("portcullis.yaml");
        std::fs::write(&config_path, text).unwrap();
        let mut gw = Gateway {
            child: None,
            port,
            log_path: dir.path().join("gateway.log"),
            config_path,
            dir,
        };
        gw.spawn();
        gw
    }

    /// Replace the config (same port and directory); takes effect at the next `spawn`.
    pub fn rewrite_config(&self, yaml: &str) {
        std::fs::write(&self.config_path, render(yaml, self.port, self.dir.path())).unwrap();
    }

    /// (Re)start the process on the same config and data.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let child = Command::new(BIN)
            .args(["serve", "-c"])
            .arg(&self.config_path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the portcullis binary");
        self.child = Some(child);
        self.wait_live();
    }

    /// Start a second process on the same config with `serve --upgrade` (it waits for this
    /// one's listening sockets); logs go to the same file.
    pub fn spawn_upgrade(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        Command::new(BIN)
            .args(["serve", "--upgrade", "-c"])
            .arg(&self.config_path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start the portcullis binary")
    }

    fn wait_live(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.as_mut().unwrap().try_wait() {
                panic!("gateway exited early ({status}):\n{}", self.log());
            }
            if let Ok((200, _)) = raw_get(self.port, "/healthz") {
                return;
            }
            if Instant::now() > deadline {
                panic!("gateway not live within 15 s:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until readiness answers `status` (within `limit`); returns the body.
    pub fn wait_ready_status(&self, status: u16, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let r = raw_get(self.port, "/readyz");
            if let Ok((s, body)) = &r {
                if *s == status {
                    return body.clone();
                }
            }
            if Instant::now() > deadline {
                panic!("readiness did not become {status} within {limit:?}: last {r:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Wait for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                return s;
            }
            if Instant::now() > deadline {
                panic!("gateway did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A ureq agent that returns every status as a response and never follows redirects.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(15)))
        .build()
        .new_agent()
}

/// A simple response snapshot.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header_all(&self, name: &str) -> Vec<String> {
        header_values(&self.headers, name)
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub fn snapshot(mut r: http::Response<ureq::Body>) -> Resp {
    let status = r.status().as_u16();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    Resp {
        status,
        headers,
        body,
    }
}

/// GET `url` with extra headers.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    snapshot(req.call().unwrap_or_else(|e| panic!("GET {url}: {e}")))
}

/// POST `body` to `url` with extra headers.
pub fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut req = agent().post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    snapshot(req.send(body).unwrap_or_else(|e| panic!("POST {url}: {e}")))
}

/// Send raw bytes (closing the write side afterwards) and return (status, whole response).
pub fn raw(port: u16, request: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(request)?;
    read_response(&mut s)
}

/// Read one response (complete by `Content-Length`, or up to EOF); (status, text).
pub fn read_response(s: &mut TcpStream) -> std::io::Result<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if response_complete(&buf) {
                    break;
                }
            }
            Err(e) if buf.is_empty() => return Err(e),
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, text))
}

fn response_complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match len {
        Some(n) => buf.len() >= end + 4 + n,
        None => false,
    }
}

/// `GET path` with `Connection: close`; (status, body).
pub fn raw_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let (status, text) = raw(port, req.as_bytes())?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Run the binary with `args` to completion: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], dir: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("PORTCULLIS_CONFIG")
        .output()
        .expect("run the portcullis binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An HTTP server answering every request with the current `body` (JSON), counting hits.
pub struct JsonServer {
    pub addr: SocketAddr,
    pub body: Arc<Mutex<String>>,
    pub hits: Arc<std::sync::atomic::AtomicUsize>,
    _server: HttpServer,
}

impl JsonServer {
    pub fn start(body: &str) -> Self {
        let body = Arc::new(Mutex::new(body.to_string()));
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (b, h) = (body.clone(), hits.clone());
        let handler: Handler = Arc::new(move |_r: &Recorded| {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let text = b.lock().unwrap().clone();
            (
                200,
                vec![("Content-Type".into(), "application/json".into())],
                text,
            )
        });
        let server = HttpServer::start("127.0.0.1:0".parse().unwrap(), handler).unwrap();
        JsonServer {
            addr: server.addr,
            body,
            hits,
            _server: server,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Unix time now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A real `redis-server` on a free loopback port with its data in a temp dir.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> Self {
        let mut r = RedisServer {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        r.spawn();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// (Re)start on the same port and data directory.
    pub fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is needed for these tests: apt-get install redis-server (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let mut buf = [0u8; 16];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read(&mut buf)
                        .map(|n| buf[..n].starts_with(b"+PONG"))
                        .unwrap_or(false)
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
