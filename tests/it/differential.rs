//! Differential security tests: the gateway in front of real servers (Flask/Werkzeug, Node's
//! `http` with WHATWG URL parsing, Tomcat, nginx, Apache httpd), each started from
//! `tests/upstreams/` on an ephemeral loopback port.
//!
//! Every server reports what it dispatched: `RESOURCE:admin:<path>` for anything it resolves
//! into its admin area, `RESOURCE:intranet:<path>` for its `intranet.test` virtual host,
//! `RESOURCE:public:<path>` otherwise. The gateway protects `intranet.test` and `/admin/`
//! and lets anonymous clients reach everything else. An anonymous client then sends hostile
//! request targets and hosts as raw bytes; whatever each server makes of them, the gateway
//! must either refuse the request itself or forward something the server dispatches to a
//! public resource. The same requests are also sent to each server directly, so the printed
//! table (`--nocapture`) shows which tricks each server would fall for without the gateway.

use crate::harness::*;
use crate::tokens::{claims, forge, header, keygen, AUD, ISS};
use jsonwebtoken::{Algorithm, EncodingKey};
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The hostile requests: (request line without the version, Host header, why it is
/// hostile). In both columns `{PORT}` is the port of the server receiving the request and
/// `{H}` the host a normal client sends (`127.0.0.1:{PORT}`). A Host value with `\r\n` adds
/// further header lines; an empty one sends no Host header. One line per variant, so the
/// table is kept out of rustfmt's hands.
#[rustfmt::skip]
const VARIANTS: &[(&str, &str, &str)] = &[
    // The request target's form.
    ("GET admin/secret", "{H}", "origin-form without the leading slash"),
    ("GET %2Fadmin/secret", "{H}", "leading slash percent-encoded"),
    ("GET a:/admin/secret", "{H}", "scheme-like target that is not absolute-form"),
    ("GET *", "{H}", "asterisk-form outside OPTIONS"),
    ("OPTIONS *", "{H}", "asterisk-form for OPTIONS (server-wide, never a resource)"),
    ("GET /admin/secret#frag", "{H}", "fragment sent on the wire"),
    ("GET /admin\t/secret", "{H}", "raw tab inside the target"),
    ("GET /public /../admin/secret", "{H}", "raw space: lenient parsers keep the tail"),
    // Servlet path parameters (Tomcat and Jetty strip `;...` from each segment).
    ("GET /admin;x/secret", "{H}", "path parameter on the protected segment"),
    ("GET /admin;jsessionid=1/secret", "{H}", "session id as a path parameter"),
    ("GET /admin;/secret", "{H}", "empty path parameter"),
    ("GET /;x/admin/secret", "{H}", "path parameter on an empty leading segment"),
    ("GET /admin/secret%3b", "{H}", "encoded ';' at the end"),
    ("GET /public/..;/admin/secret", "{H}", "Tomcat's '..;' climbs like '..'"),
    ("GET /public/%2e%2e;/admin/secret", "{H}", "encoded '..;'"),
    ("GET /public/..;foo=bar/admin/secret", "{H}", "'..' with parameters"),
    ("GET /.;/admin/secret", "{H}", "'.;' is '.' to a servlet container"),
    ("GET /..;/admin/secret", "{H}", "'..;' above the root"),
    // Case and look-alike characters.
    ("GET /ADMIN/secret", "{H}", "upper case on a case-insensitive server"),
    ("GET /aDmIn/secret", "{H}", "mixed case"),
    ("GET /adm%C4%B1n/secret", "{H}", "dotless i (upper-cases to 'I')"),
    ("GET /admin%E2%80%AE/secret", "{H}", "right-to-left override after the segment"),
    ("GET /admin%EF%BC%8Fsecret", "{H}", "full-width solidus (NFKC folds it to '/')"),
    ("GET /%u0061dmin/secret", "{H}", "IIS %u escape"),
    // Trailing dots and spaces (Windows and IIS drop them from file names).
    ("GET /admin./secret", "{H}", "segment ending in a dot"),
    ("GET /admin../secret", "{H}", "segment ending in two dots"),
    ("GET /admin%2e/secret", "{H}", "segment ending in an encoded dot"),
    ("GET /admin%20/secret", "{H}", "segment ending in an encoded space"),
    ("GET /admin.%20/secret", "{H}", "segment ending in a dot and an encoded space"),
    ("GET /assets../admin/secret", "{H}", "nginx alias without a trailing slash"),
    // Encoded unreserved characters.
    ("GET /%61dmin/secret", "{H}", "encoded 'a'"),
    ("GET /ad%6Din/secret", "{H}", "encoded 'm'"),
    // Dot segments.
    ("GET /public/../admin/secret", "{H}", "dot-dot segment"),
    ("GET /public/%2e%2e/admin/secret", "{H}", "encoded dot-dot"),
    ("GET /public/.%2e/admin/secret", "{H}", "half-encoded dot-dot"),
    ("GET /.%2e/admin/secret", "{H}", "encoded dot-dot above the root"),
    ("GET /./admin/secret", "{H}", "dot segment"),
    ("GET /%2e/admin/secret", "{H}", "encoded dot segment"),
    ("GET /admin/./secret", "{H}", "dot segment inside the protected area"),
    ("GET /public%3f/../admin/secret", "{H}", "encoded '?' before a dot-dot"),
    ("GET /%252e%252e/admin", "{H}", "double-encoded dot-dot"),
    ("GET /public/%252e%252e/admin/secret", "{H}", "double-encoded dot-dot after a segment"),
    ("GET /public/..%C0%AFadmin/secret", "{H}", "overlong UTF-8 '/'"),
    ("GET /public/%C0%AE%C0%AE/admin/secret", "{H}", "overlong UTF-8 dots"),
    // Slashes, backslashes and their encodings.
    ("GET //admin/secret", "{H}", "empty first segment (scheme-relative to URL parsers)"),
    ("GET /admin%2fsecret", "{H}", "encoded '/'"),
    ("GET /ADMIN%2Fsecret", "{H}", "encoded '/' in upper case"),
    ("GET /admin%252fsecret", "{H}", "double-encoded '/'"),
    ("GET /public/..%2fadmin/secret", "{H}", "dot-dot and an encoded '/'"),
    ("GET /public/%2e%2e%2fadmin/secret", "{H}", "dot-dot and '/' all encoded"),
    ("GET /admin%5csecret", "{H}", "encoded '\\'"),
    ("GET /admin\\secret", "{H}", "raw '\\' (a '/' to WHATWG URL parsers)"),
    ("GET /public\\..\\admin\\secret", "{H}", "dot-dot with raw backslashes"),
    ("GET /public/..\\admin/secret", "{H}", "dot-dot then a raw backslash"),
    ("GET /public/..%5cadmin/secret", "{H}", "dot-dot then an encoded backslash"),
    // Control characters.
    ("GET /admin%00/secret", "{H}", "encoded NUL"),
    ("GET /admin%09/secret", "{H}", "encoded tab"),
    ("GET /admin%0a/secret", "{H}", "encoded line feed"),
    // Absolute-form targets.
    ("GET http://127.0.0.1/admin/secret", "other.test", "absolute-form with a mismatching Host"),
    ("GET http://127.0.0.1:{PORT}/admin/secret", "{H}", "absolute-form with a matching Host"),
    ("GET http://127.0.0.1:{PORT}//admin/secret", "{H}", "absolute-form with an empty segment"),
    ("GET http://intranet.test./", "{H}", "absolute-form naming the intranet with a trailing dot"),
    ("GET http://intranet.test/", "{H}", "absolute-form naming the intranet, Host public"),
    ("GET http://INTRANET.TEST/", "{H}", "absolute-form naming the intranet in upper case"),
    ("GET HTTP://intranet.test/", "{H}", "absolute-form with an upper-case scheme"),
    ("GET https://intranet.test/", "{H}", "absolute-form with another scheme"),
    ("GET http://127.0.0.1:{PORT}/", "intranet.test", "absolute-form public, Host intranet"),
    // Hosts.
    ("GET /", "intranet.test", "the protected host itself"),
    ("GET /", "intranet.test:{PORT}", "the protected host with the port"),
    ("GET /", "intranet.test.", "trailing dot (fully qualified)"),
    ("GET /", "INTRANET.TEST", "upper case"),
    ("GET /", "Intranet.Test.", "mixed case and a trailing dot"),
    ("GET /", "intranet.test.:{PORT}", "trailing dot before the port"),
    ("GET /", "intranet.test:80", "default port"),
    ("GET /", "intranet.test:0080", "default port with leading zeros"),
    ("GET /", "INTRANET.TEST.:80", "upper case, trailing dot and default port"),
    ("GET /", "intranet.test:", "empty port"),
    ("GET /", "intranet.test..", "two trailing dots"),
    ("GET /", "intranet.test%00", "encoded NUL"),
    ("GET /", "intranet%2etest", "encoded dot"),
    ("GET /", "intranet.test/x", "path inside the Host"),
    ("GET /", "intranet.test?", "query delimiter inside the Host"),
    ("GET /", "intranet.test#", "fragment delimiter inside the Host"),
    ("GET /", "127.0.0.1@intranet.test", "userinfo: URL parsers keep the part after '@'"),
    ("GET /", "intranet.test@127.0.0.1", "userinfo the other way round"),
    ("GET /", "\u{ff49}\u{ff4e}\u{ff54}\u{ff52}\u{ff41}\u{ff4e}\u{ff45}\u{ff54}.test", "full-width letters (IDNA maps them to ASCII)"),
    ("GET /", "127.0.0.1:{PORT}\r\nHost: intranet.test", "two Host headers, intranet last"),
    ("GET /", "intranet.test\r\nHost: 127.0.0.1:{PORT}", "two Host headers, intranet first"),
    ("GET /", " intranet.test", "leading whitespace in the Host value"),
    ("GET /", "", "no Host header"),
];

/// How a server is started, and how to install it when it is missing.
#[derive(Clone, Copy)]
enum Kind {
    Flask,
    /// `node_app.js` in `url` or `decode` mode.
    Node(&'static str),
    Tomcat,
    Nginx,
    Apache,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Flask => "flask",
            Kind::Node("url") => "node-url",
            Kind::Node(_) => "node-decode",
            Kind::Tomcat => "tomcat",
            Kind::Nginx => "nginx",
            Kind::Apache => "apache",
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Kind::Flask => "Flask is needed: pip3 install flask (scripts/test.sh installs it)",
            Kind::Node(_) => "Node.js is needed: apt-get install nodejs",
            Kind::Tomcat => {
                "Tomcat 10 and a Java runtime are needed: apt-get install --no-install-recommends \
                 tomcat10-common default-jre-headless (scripts/test.sh installs them)"
            }
            Kind::Nginx => {
                "nginx is needed: apt-get install --no-install-recommends nginx (scripts/test.sh \
                 installs it)"
            }
            Kind::Apache => {
                "Apache httpd is needed: apt-get install --no-install-recommends apache2 \
                 (scripts/test.sh installs it)"
            }
        }
    }

    /// Tomcat compiles its JSPs and starts a JVM: slow on a busy two-core machine.
    fn start_limit(self) -> Duration {
        match self {
            Kind::Tomcat => Duration::from_secs(90),
            _ => Duration::from_secs(30),
        }
    }
}

/// `name` from PATH, else from the sbin directories where Debian puts servers (not on a
/// normal user's PATH); the bare name when it is nowhere, so that spawning fails clearly.
fn program(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/upstreams")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Servers started as root drop their workers to an unprivileged user, which must be able
/// to read the document roots in the temp dir.
fn open_to_all(path: &Path) {
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            open_to_all(&entry.unwrap().path());
        }
    }
}

/// A real server process on a loopback port, stopped (with its workers) when dropped.
struct Origin {
    kind: Kind,
    port: u16,
    child: Child,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Origin {
    /// Start `kind` and wait until it serves its public area; a port taken in between by
    /// another test gets a second and a third chance on another port.
    fn start(kind: Kind) -> Origin {
        let mut last = String::new();
        for _ in 0..3 {
            match Origin::try_start(kind) {
                Ok(o) => return o,
                Err(e) => last = e,
            }
        }
        panic!(
            "{} did not start: {last}\n{}",
            kind.name(),
            kind.install_hint()
        );
    }

    fn try_start(kind: Kind) -> Result<Origin, String> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = free_port();
        let log = d.join("server.log");
        let fx = fixtures();
        let render = |template: &str, out: &Path| {
            let text = std::fs::read_to_string(fx.join(template)).unwrap();
            let text = text
                .replace("{PORT}", &port.to_string())
                .replace("{DIR}", &d.to_string_lossy());
            std::fs::write(out, text).unwrap();
        };
        let mut cmd = match kind {
            Kind::Flask => {
                let mut c = Command::new(program("python3"));
                c.arg(fx.join("flask_app.py")).arg(port.to_string());
                c
            }
            Kind::Node(mode) => {
                let mut c = Command::new(program("node"));
                c.arg(fx.join("node_app.js"))
                    .arg(port.to_string())
                    .arg(mode);
                c
            }
            Kind::Tomcat => {
                let home = Path::new("/usr/share/tomcat10");
                if !home.join("bin/bootstrap.jar").exists() {
                    panic!("{} is missing\n{}", home.display(), kind.install_hint());
                }
                copy_tree(&fx.join("tomcat"), d);
                for sub in ["logs", "temp", "work"] {
                    std::fs::create_dir_all(d.join(sub)).unwrap();
                }
                let mut c = Command::new(program("java"));
                // A connector that cannot bind its port ends the process (and the attempt)
                // instead of leaving a Tomcat that serves nothing.
                c.args(["-XX:TieredStopAtLevel=1", "-Xshare:auto", "-Xmx128m"])
                    .arg("-Dorg.apache.catalina.startup.EXIT_ON_INIT_FAILURE=true")
                    .arg(format!("-Dportcullis.test.port={port}"))
                    .arg(format!("-Dcatalina.home={}", home.display()))
                    .arg(format!("-Dcatalina.base={}", d.display()))
                    .arg(format!("-Djava.io.tmpdir={}", d.join("temp").display()))
                    .arg("-cp")
                    .arg(format!(
                        "{0}/bin/bootstrap.jar:{0}/bin/tomcat-juli.jar",
                        home.display()
                    ))
                    .args(["org.apache.catalina.startup.Bootstrap", "start"]);
                c
            }
            Kind::Nginx => {
                copy_tree(&fx.join("docroot"), d);
                std::fs::create_dir_all(d.join("tmp")).unwrap();
                render("nginx.conf", &d.join("nginx.conf"));
                open_to_all(d);
                let mut c = Command::new(program("nginx"));
                c.arg("-c")
                    .arg(d.join("nginx.conf"))
                    .arg("-p")
                    .arg(d)
                    .arg("-e")
                    .arg(d.join("error.log"));
                c
            }
            Kind::Apache => {
                copy_tree(&fx.join("docroot"), d);
                render("apache.conf", &d.join("apache.conf"));
                open_to_all(d);
                let mut c = Command::new(program("apache2"));
                c.arg("-f").arg(d.join("apache.conf")).arg("-DFOREGROUND");
                c
            }
        };
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}\n{}", kind.name(), kind.install_hint()));
        let mut origin = Origin {
            kind,
            port,
            child,
            log,
            dir,
        };
        origin.wait_serving()?;
        Ok(origin)
    }

    fn logs(&self) -> String {
        let mut text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.push_str(
            &std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default(),
        );
        text
    }

    fn wait_serving(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + self.kind.start_limit();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited early ({status}):\n{}", self.logs()));
            }
            let probe = exchange(self.port, "GET /", "{H}");
            if probe.body.contains("RESOURCE:public") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not serving within {:?} (last answer {}):\n{}",
                    self.kind.start_limit(),
                    probe.status,
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Origin {
    /// SIGTERM first: nginx and Apache stop their workers only when the master is asked
    /// politely; a SIGKILL would leave the workers holding the port.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One answer as the client saw it.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    /// The area the upstream reports having dispatched to, when its marker is there.
    fn dispatched(&self) -> Option<&str> {
        let at = self.body.find("RESOURCE:")?;
        let rest = &self.body[at + "RESOURCE:".len()..];
        Some(rest.split(':').next().unwrap_or(rest))
    }

    /// The error code of an answer the gateway gave itself (its JSON refusals), if it is one.
    fn gateway_error(&self) -> Option<&str> {
        let at = self.body.find("\"error\":\"")? + "\"error\":\"".len();
        self.body[at..].split('"').next()
    }

    /// A short line for tables and failure messages: the status, then what the upstream
    /// dispatched (`admin:/admin/secret`), or the gateway's own refusal (`gateway:bad_request`),
    /// or `-` for an answer with neither (an upstream's own error page, a bare parse error).
    fn summary(&self) -> String {
        if self.status == 0 {
            return "no answer".into();
        }
        if let Some(at) = self.body.find("RESOURCE:") {
            let marker: String = self.body[at + "RESOURCE:".len()..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '<')
                .take(60)
                .collect();
            return format!("{} {marker}", self.status);
        }
        match self.gateway_error() {
            Some(code) => format!("{} gateway:{code}", self.status),
            None => format!("{} -", self.status),
        }
    }
}

fn fill(template: &str, port: u16) -> String {
    template
        .replace("{H}", "127.0.0.1:{PORT}")
        .replace("{PORT}", &port.to_string())
}

/// Send one request as raw bytes (`Connection: close`) and read the answer, bounded in time.
fn exchange_with(port: u16, line: &str, host: &str, extra: &str) -> Answer {
    let mut req = format!("{} HTTP/1.1\r\n", fill(line, port));
    if !host.is_empty() {
        req.push_str(&format!("Host: {}\r\n", fill(host, port)));
    }
    req.push_str(extra);
    req.push_str("Connection: close\r\n\r\n");
    let none = Answer {
        status: 0,
        head: String::new(),
        body: String::new(),
    };
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return none;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(req.as_bytes()).is_err() {
        return none;
    }
    match read_response(&mut s) {
        Ok((status, text)) => {
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            Answer {
                status,
                head: head.to_string(),
                body: body.to_string(),
            }
        }
        Err(_) => none,
    }
}

fn exchange(port: u16, line: &str, host: &str) -> Answer {
    exchange_with(port, line, host, "")
}

/// An admin's access token, signed with the gateway's key.
fn admin_token(key_pem: &[u8]) -> String {
    let mut c = claims();
    c["roles"] = serde_json::json!(["admin"]);
    let key = EncodingKey::from_ed_pem(key_pem).unwrap();
    forge(&header("EdDSA", "ed1"), &c, Some((&key, Algorithm::EdDSA)))
}

/// The gateway in front of `up`: the intranet host and the admin area protected, everything
/// else public. `route_options` is appended to each route (`""` for the defaults).
fn gateway_for(up: u16, route_options: &str) -> (Gateway, String) {
    let dir = tempfile::tempdir().unwrap();
    let pem = keygen(dir.path(), "EdDSA", "ed1");
    let gw = Gateway::start_in(
        &format!(
            r#"tokens:
  issuer: {ISS}
  audience: {AUD}
  signing_keys:
    - {{ kid: ed1, algorithm: EdDSA, private_key_file: keys/ed1.private.pem }}
upstreams:
  app: {{ addresses: ["127.0.0.1:{up}"] }}
routes:
  - {{ host: intranet.test, path_prefix: /, upstream: app{route_options} }}
  - {{ path_prefix: /admin/, upstream: app, roles: [admin]{route_options} }}
  - {{ path_prefix: /, upstream: app, auth: public{route_options} }}
"#
        ),
        dir,
    );
    (gw, admin_token(&pem))
}

/// The whole differential run against one server.
fn differential(kind: Kind) {
    let started = Instant::now();
    let origin = Origin::start(kind);
    let up = origin.port;
    let name = kind.name();

    // The server itself is set up to be attacked: straight to it, the admin area and the
    // intranet host are reachable, so a marker seen through the gateway means a bypass.
    let direct_admin = exchange(up, "GET /admin/secret", "{H}");
    assert_eq!(
        direct_admin.dispatched(),
        Some("admin"),
        "{name}: /admin/secret straight to the server: {}",
        direct_admin.summary()
    );
    let direct_intranet = exchange(up, "GET /", "intranet.test");
    assert_eq!(
        direct_intranet.dispatched(),
        Some("intranet"),
        "{name}: Host intranet.test straight to the server: {}",
        direct_intranet.summary()
    );

    let (gw, token) = gateway_for(up, "");
    let bearer = format!("Authorization: Bearer {token}\r\n");

    // Positive controls: an admin gets through the gateway to both protected areas, an
    // anonymous client to the public one and not to the protected ones.
    let admin = exchange_with(gw.port, "GET /admin/secret", "{H}", &bearer);
    assert_eq!(
        (admin.status, admin.dispatched()),
        (200, Some("admin")),
        "{name}: an admin's /admin/secret through the gateway: {}\n{}",
        admin.head,
        admin.body
    );
    let intranet = exchange_with(gw.port, "GET /", "intranet.test", &bearer);
    assert_eq!(
        (intranet.status, intranet.dispatched()),
        (200, Some("intranet")),
        "{name}: an admin's Host intranet.test through the gateway: {}\n{}",
        intranet.head,
        intranet.body
    );
    let public = exchange(gw.port, "GET /", "{H}");
    assert_eq!(
        (public.status, public.dispatched()),
        (200, Some("public")),
        "{name}: anonymous / through the gateway: {}",
        public.summary()
    );
    for (line, host) in [("GET /admin/secret", "{H}"), ("GET /", "intranet.test")] {
        let anon = exchange(gw.port, line, host);
        assert!(
            anon.dispatched().is_none() && (400..500).contains(&anon.status),
            "{name}: anonymous {line} (Host {host}) must be refused: {}",
            anon.summary()
        );
    }

    // The hostile variants, anonymous, straight to the server and through the gateway.
    let mut table =
        format!("\n{name}: variant | Host | straight to the server | through the gateway\n");
    let mut bypasses = Vec::new();
    let mut server_falls_for = 0;
    for (line, host, why) in VARIANTS {
        let direct = exchange(up, line, host);
        let via = exchange(gw.port, line, host);
        let shown_host = host.replace("\r\n", "\\r\\n");
        table.push_str(&format!(
            "{name}: {line:?} | {shown_host:?} | {} | {}\n",
            direct.summary(),
            via.summary()
        ));
        if matches!(direct.dispatched(), Some("admin" | "intranet")) {
            server_falls_for += 1;
        }
        if matches!(via.dispatched(), Some("admin" | "intranet")) {
            bypasses.push(format!(
                "  {name}: {line:?} Host {shown_host:?} ({why}): {}",
                via.summary()
            ));
        }
    }
    println!("{table}");
    println!(
        "{name}: {} variants, {server_falls_for} reach a protected area straight to the \
         server, {} through the gateway; {:.1} s",
        VARIANTS.len(),
        bypasses.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        bypasses.is_empty(),
        "{name}: {} of {} hostile requests reached a protected resource through the gateway \
         as an anonymous client (variant, Host, why: status and what the server dispatched):\n{}",
        bypasses.len(),
        VARIANTS.len(),
        bypasses.join("\n")
    );
    drop(gw);
}

#[test]
fn flask_behind_the_gateway_dispatches_no_protected_resource_to_anonymous_clients() {
    differential(Kind::Flask);
}

#[test]
fn node_url_app_behind_the_gateway_dispatches_no_protected_resource_to_anonymous_clients() {
    differential(Kind::Node("url"));
}

#[test]
fn node_decoding_app_behind_the_gateway_dispatches_no_protected_resource_to_anonymous_clients() {
    differential(Kind::Node("decode"));
}

#[test]
fn tomcat_behind_the_gateway_dispatches_no_protected_resource_to_anonymous_clients() {
    differential(Kind::Tomcat);
}

#[test]
fn nginx_behind_the_gateway_dispatches_no_protected_resource_to_anonymous_clients() {
    differential(Kind::Nginx);
}

#[test]
fn apache_behind_the_gateway_dispatches_no_protected_resource_to_anonymous_clients() {
    differential(Kind::Apache);
}

/// The detector itself: with the strict path checks turned off (an operator's documented
/// opt-out), a segment ending in a dot no longer matches the protected prefix but is still
/// under `/admin` to a Node app's `startsWith` check. The differential must see that request
/// dispatched into the admin area, or its clean results above would prove nothing.
#[test]
fn with_strict_paths_off_the_differential_sees_a_node_prefix_check_bypassed() {
    let origin = Origin::start(Kind::Node("url"));
    let (gw, _) = gateway_for(origin.port, ", strict_paths: false");
    let strict = gateway_for(origin.port, "").0;
    let relaxed = exchange(gw.port, "GET /admin./secret", "{H}");
    assert_eq!(
        relaxed.dispatched(),
        Some("admin"),
        "with strict_paths: false, /admin./secret is expected to reach the admin area of a \
         startsWith('/admin') app: {}",
        relaxed.summary()
    );
    let refused = exchange(strict.port, "GET /admin./secret", "{H}");
    assert_eq!(
        (refused.status, refused.dispatched()),
        (400, None),
        "by default the same request is refused: {}",
        refused.summary()
    );
}
