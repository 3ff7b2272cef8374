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
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
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
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }
}

/// A real HTTP server (tiny_http) that records every request and answers
/// `200 upstream:<port> <url>` with headers a legacy app would send (`Server`,
/// `X-Powered-By`, `X-Frame-Options: DENY`). `/slow?ms=N` answers after N ms.
pub struct Upstream {
    pub addr: SocketAddr,
    pub recorded: Arc<Mutex<Vec<Recorded>>>,
    server: Option<Arc<tiny_http::Server>>,
    thread: Option<JoinHandle<()>>,
}

impl Upstream {
    pub fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap())
    }

    pub fn start_on(addr: SocketAddr) -> Self {
        let deadline = Instant::now() + Duration::from_secs(5);
        let server = loop {
            match tiny_http::Server::http(addr) {
                Ok(s) => break Arc::new(s),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("upstream cannot listen on {addr}: {e}"),
            }
        };
        let addr = server.server_addr().to_ip().expect("ip listener");
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let (srv, rec) = (server.clone(), recorded.clone());
        let thread = std::thread::spawn(move || {
            for request in srv.incoming_requests() {
                let rec = rec.clone();
                std::thread::spawn(move || answer(request, addr, rec));
            }
        });
        Upstream {
            addr,
            recorded,
            server: Some(server),
            thread: Some(thread),
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.recorded.lock().unwrap().len()
    }

    /// Stop listening; the port is free again afterwards.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.unblock();
            drop(server);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(mut request: tiny_http::Request, addr: SocketAddr, rec: Arc<Mutex<Vec<Recorded>>>) {
    let url = request.url().to_string();
    let headers = request
        .headers()
        .iter()
        .map(|h| (h.field.as_str().to_string(), h.value.as_str().to_string()))
        .collect();
    let mut body = String::new();
    let _ = request.as_reader().read_to_string(&mut body);
    rec.lock().unwrap().push(Recorded {
        method: request.method().as_str().to_string(),
        url: url.clone(),
        headers,
    });
    if let Some(ms) = url.strip_prefix("/slow?ms=") {
        std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(1000)));
    }
    let mut response = tiny_http::Response::from_string(format!("upstream:{} {url}", addr.port()));
    for (k, v) in [
        ("Server", "legacy-upstream/1.0"),
        ("X-Powered-By", "PHP/5.4"),
        ("X-Frame-Options", "DENY"),
    ] {
        response.add_header(tiny_http::Header::from_bytes(k, v).unwrap());
    }
    if let Some(name) = url.strip_prefix("/set-cookie/") {
        response.add_header(
            tiny_http::Header::from_bytes("Set-Cookie", format!("{name}=from-upstream; Path=/"))
                .unwrap(),
        );
        response.add_header(
            tiny_http::Header::from_bytes("Set-Cookie", "app_session=kept; Path=/").unwrap(),
        );
    }
    let _ = request.respond(response);
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
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
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

/// A tiny HTTP server answering every request with the current `body` (JSON), counting hits.
pub struct JsonServer {
    pub addr: SocketAddr,
    pub body: Arc<Mutex<String>>,
    pub hits: Arc<std::sync::atomic::AtomicUsize>,
    _server: Arc<tiny_http::Server>,
}

impl JsonServer {
    pub fn start(body: &str) -> Self {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let addr = server.server_addr().to_ip().unwrap();
        let body = Arc::new(Mutex::new(body.to_string()));
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (srv, b, h) = (server.clone(), body.clone(), hits.clone());
        std::thread::spawn(move || {
            for req in srv.incoming_requests() {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let text = b.lock().unwrap().clone();
                let resp = tiny_http::Response::from_string(text).with_header(
                    tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap(),
                );
                let _ = req.respond(resp);
            }
        });
        JsonServer {
            addr,
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
