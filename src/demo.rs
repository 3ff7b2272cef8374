//! `portcullis demo`: the gateway in front of a bundled "legacy app" that shows which identity
//! headers it received, with the embedded store under `data/`. One command, nothing to set up.

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The bundled upstream: a page listing the identity headers the gateway sent.
pub struct DemoApp;

/// Minimal HTML escaping for header values shown on the page.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The identity headers the demo shows.
const SHOWN: [&str; 7] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

/// The demo page's own script (external: the page has no inline code).
const PAGE_SCRIPT: &str = include_str!("demo_page.js");

#[async_trait]
impl ServeHttp for DemoApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let header = |name: &str| {
            req.headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let (content_type, body) = match req.uri.path() {
            "/demo.js" => ("text/javascript; charset=utf-8", PAGE_SCRIPT.to_string()),
            "/api/whoami" => {
                let mut seen = serde_json::Map::new();
                for name in SHOWN {
                    seen.insert(name.into(), header(name).into());
                }
                (
                    "application/json",
                    serde_json::Value::Object(seen).to_string(),
                )
            }
            path => {
                let mut rows = String::new();
                for name in SHOWN {
                    let value = header(name)
                        .map(|v| escape_html(&v))
                        .unwrap_or_else(|| "<em>(not sent)</em>".into());
                    let _ = write!(rows, "<tr><th>{name}</th><td>{value}</td></tr>");
                }
                let path = escape_html(path);
                let page = format!(
                    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>Legacy app (portcullis demo)</title>\
                     <style>body{{font-family:sans-serif;margin:2em auto;max-width:48em;padding:0 1em}}th{{text-align:left;padding-right:1em}}</style>\
                     <script src=\"/demo.js\" defer></script></head>\
                     <body><h1>Legacy app</h1><p>This page knows nothing about logins. portcullis authenticated you and told it who you are:</p>\
                     <table>{rows}</table><p>Path: <code>{path}</code></p>\
                     <p>Session ends in <strong id=\"left\">...</strong> unless you stay active: a minute before, portcullis warns you.</p>\
                     <p><button id=\"call-api\" type=\"button\">Call the API</button> <code id=\"api-result\"></code></p>\
                     <p><a href=\"/auth/logout\">Sign out</a></p></body></html>"
                );
                ("text/html; charset=utf-8", page)
            }
        };
        Response::builder()
            .status(200)
            .header("Content-Type", content_type)
            .header("Content-Length", body.len())
            .header("Server", "legacy-demo/1.0")
            .body(body.into_bytes())
            .expect("valid response")
    }
}

/// A listening service for [`DemoApp`] on `addr`.
pub fn demo_service(addr: &str) -> Service<HttpServer<DemoApp>> {
    let mut svc = Service::new("demo upstream".into(), HttpServer::new_app(DemoApp));
    svc.add_tcp(addr);
    svc
}

/// The demo account.
pub const DEMO_EMAIL: &str = "demo@example.com";

/// Why the demo's files could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A directory or file under `data` could not be written; the message names it.
    #[error("{}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The signing key could not be generated.
    #[error(transparent)]
    Keygen(#[from] crate::tokens::keys::KeygenError),
}

fn written(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    |source| DemoError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Create the demo's signing key (once) and users file (a fresh password each start) under
/// `data`; returns the password to print.
pub fn prepare(data: &Path) -> Result<String, DemoError> {
    let keys = data.join("demo-keys");
    let key = keys.join("demo.private.pem");
    if !key.exists() {
        std::fs::create_dir_all(&keys).map_err(written(&keys))?;
        let (private, _) = crate::tokens::keys::generate(crate::config::Algorithm::EdDSA)?;
        // Owner-only, as `keygen` writes keys: `check` warns about a key others can read.
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key)
            .and_then(|mut f| f.write_all(private.as_bytes()))
            .map_err(written(&key))?;
    }
    let password = crate::tokens::access::random_id(12);
    let users = format!(
        "users:\n  demo:\n    email: {DEMO_EMAIL}\n    password: \"{}\"\n    roles: [user]\n",
        crate::auth::password::hash_password(&password)
    );
    let file = data.join("demo-users.yaml");
    std::fs::write(&file, users).map_err(written(&file))?;
    Ok(password)
}

/// The demo's configuration text.
pub fn demo_config(port: u16, upstream_port: u16) -> String {
    format!(
        r#"server:
  listen: ["127.0.0.1:{port}"]
  public_url: http://127.0.0.1:{port}
  grace_period: 1s
cookies:
  secure: false
  same_site: Lax
store:
  backend: sled
  path: data/demo.db
users:
  file: data/demo-users.yaml
# Short lifetimes, so that the refresh and the expiry warning are seen within a minute.
tokens:
  access_ttl: 30s
  refresh_ttl: 2m
  signing_keys:
    - {{ kid: demo, algorithm: EdDSA, private_key_file: data/demo-keys/demo.private.pem }}
logging:
  format: text
  level: info
upstreams:
  demo:
    addresses: ["127.0.0.1:{upstream_port}"]
    health_check: {{ path: /, interval: 1s }}
client:
  warn_before: 1m
routes:
  - {{ path_prefix: /, upstream: demo, inject_client: true }}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_is_valid_and_escaping_works() {
        let c = crate::config::parse(
            &demo_config(8080, 8081),
            "demo".as_ref(),
            ".".as_ref(),
            |_| None,
        )
        .unwrap();
        assert_eq!(c.server.listen[0].port(), 8080);
        assert_eq!(
            escape_html("<a href='x'>&"),
            "&lt;a href=&#39;x&#39;&gt;&amp;"
        );
    }
}
