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

#[async_trait]
impl ServeHttp for DemoApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let mut rows = String::new();
        for name in [
            "x-forwarded-user",
            "x-forwarded-email",
            "x-forwarded-groups",
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-request-id",
        ] {
            let value = req
                .headers
                .get(name)
                .map(|v| escape_html(&String::from_utf8_lossy(v.as_bytes())))
                .unwrap_or_else(|| "<em>(not sent)</em>".into());
            let _ = write!(rows, "<tr><th>{name}</th><td>{value}</td></tr>");
        }
        let path = escape_html(req.uri.path());
        let body = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Legacy app (portcullis demo)</title>\
             <style>body{{font-family:sans-serif;margin:2em auto;max-width:48em}}th{{text-align:left;padding-right:1em}}</style></head>\
             <body><h1>Legacy app</h1><p>This page knows nothing about logins. portcullis authenticated you and told it who you are:</p>\
             <table>{rows}</table><p>Path: <code>{path}</code></p>\
             <button id=\"logout\" type=\"button\">Log out</button>\
             <script>document.getElementById('logout').onclick=function(){{var m=document.cookie.match(/(?:^|; )(?:__Host-)?pc_csrf=([^;]*)/);\
             fetch('/auth/logout',{{method:'POST',headers:{{'X-CSRF-Token':m?m[1]:''}}}}).then(function(){{location.href='/auth/login';}});}};</script>\
             </body></html>"
        );
        Response::builder()
            .status(200)
            .header("Content-Type", "text/html; charset=utf-8")
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
tokens:
  access_ttl: 5m
  signing_keys:
    - {{ kid: demo, algorithm: EdDSA, private_key_file: data/demo-keys/demo.private.pem }}
logging:
  format: text
  level: info
upstreams:
  demo:
    addresses: ["127.0.0.1:{upstream_port}"]
    health_check: {{ path: /, interval: 1s }}
routes:
  - {{ path_prefix: /, upstream: demo }}
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
