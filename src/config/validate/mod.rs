//! Wire -> model. Every error names the key path (`routes[2].upstream`) and what is wrong;
//! the caller prefixes the file name.
//!
//! `build` walks the file section by section; the larger sections have a file of their own
//! and `values.rs` parses the scalars they all share.

mod headers;
mod routes;
mod server;
mod store;
mod tokens;
mod values;

pub use headers::DEFAULT_SECURITY_HEADERS;
pub use values::duration;

use super::file::*;
use super::model::*;
use headers::{cookies, security_headers};
use routes::{cors, routes, upstreams};
use server::server;
use std::path::{Path, PathBuf};
use std::time::Duration;
use store::store;
use tokens::tokens;
use values::{duration_or, header_name, one_of, positive, rate, resolve_path, socket_addr};

/// A validation failure: the key path and a human message.
#[derive(Debug)]
pub struct Invalid {
    pub key: String,
    pub message: String,
}

type R<T> = Result<T, Invalid>;

fn invalid<T>(key: impl Into<String>, message: impl Into<String>) -> R<T> {
    Err(Invalid {
        key: key.into(),
        message: message.into(),
    })
}

/// Build the validated model. `base` is the directory relative paths are resolved against.
pub fn build(file: FileConfig, source: &Path, base: &Path) -> R<Config> {
    let mut warnings = Vec::new();
    let server = server(&file.server, base, &mut warnings)?;
    let tokens = tokens(&file.tokens, &server.public_url, base, &mut warnings)?;
    let cookies = cookies(&file.cookies)?;
    if cookies.secure && server.public_url.starts_with("http://") && !loopback(&server.public_url) {
        warnings.push(format!(
            "cookies.secure: true while server.public_url is {}: browsers do not send Secure \
             (__Host-) cookies over plain http (except to localhost), so sign-ins do not \
             stick; use an https:// public_url, or cookies.secure: false for local development",
            server.public_url
        ));
    }
    let (store, store_timeout, upgrade_socket) = store(&file.store, base)?;
    let pid_file = match (&file.server.pid_file, &store) {
        (Some(p), _) => resolve_path(base, p),
        (None, StoreConfig::Sled { path }) => path.with_extension("pid"),
        (None, StoreConfig::Redis { .. }) => PathBuf::from("/tmp/portcullis.pid"),
    };
    let rl = &file.rate_limits;
    let per = |count: u32, minutes: u64| Rate {
        count,
        window: Duration::from_secs(minutes * 60),
    };
    let rate_limits = RateLimits {
        login_per_ip: rate("rate_limits.login_per_ip", &rl.login_per_ip, per(100, 15))?,
        login_per_account_ip: rate(
            "rate_limits.login_per_account_ip",
            &rl.login_per_account_ip,
            per(5, 15),
        )?,
        login_per_account: rate(
            "rate_limits.login_per_account",
            &rl.login_per_account,
            per(20, 15),
        )?,
        login_per_device: rate(
            "rate_limits.login_per_device",
            &rl.login_per_device,
            per(10, 15),
        )?,
        refresh_per_ip: rate("rate_limits.refresh_per_ip", &rl.refresh_per_ip, per(60, 1))?,
    };
    let security_headers = security_headers("security_headers", &file.security_headers)?;
    let ih = &file.identity_headers;
    let spelled = [
        ih.user.as_deref().unwrap_or("X-Forwarded-User"),
        ih.email.as_deref().unwrap_or("X-Forwarded-Email"),
        ih.roles.as_deref().unwrap_or("X-Forwarded-Groups"),
    ];
    let identity_headers = IdentityHeaders {
        user: header_name("identity_headers.user", spelled[0])?,
        email: header_name("identity_headers.email", spelled[1])?,
        roles: header_name("identity_headers.roles", spelled[2])?,
        wire_names: spelled.map(str::to_string),
        forward_access_token: ih.forward_access_token.unwrap_or(false),
    };
    let upstreams = upstreams(&file.upstreams)?;
    let routes = routes(&file.routes, &upstreams, &mut warnings)?;
    if file.mfa.is_none() {
        if let Some(i) = routes.iter().position(|r| r.mfa_required) {
            return invalid(
                format!("routes[{i}].mfa"),
                "`mfa: required` needs the `mfa` section (and its encryption_key)",
            );
        }
    }
    let health = Health {
        liveness: probe_path(
            "health.liveness_path",
            file.health.liveness_path.as_deref().unwrap_or("/healthz"),
        )?,
        readiness: probe_path(
            "health.readiness_path",
            file.health.readiness_path.as_deref().unwrap_or("/readyz"),
        )?,
        readiness_requires_upstreams: one_of(
            "health.readiness_requires_upstreams",
            file.health.readiness_requires_upstreams.as_deref(),
            RequireUpstreams::None,
            &[
                ("none", RequireUpstreams::None),
                ("any", RequireUpstreams::Any),
                ("all", RequireUpstreams::All),
            ],
        )?,
        listen: match &file.health.listen {
            Some(l) => Some(own_listen("health.listen", l, &server)?),
            None => None,
        },
    };
    let client = ClientConfig {
        warn_before: duration_or(
            "client.warn_before",
            &file.client.warn_before,
            Duration::from_secs(300),
        )?,
        banner: file.client.banner.unwrap_or(true),
    };
    let login_title = match file.login_page.title.as_deref().map(str::trim) {
        None => "Sign in".to_string(),
        Some("") => return invalid("login_page.title", "must not be empty"),
        Some(t) if t.len() > 100 => return invalid("login_page.title", "at most 100 bytes"),
        Some(t) => t.to_string(),
    };
    let metrics_listen = match &file.metrics {
        Some(m) => Some(own_listen("metrics.listen", &m.listen, &server)?),
        None => None,
    };
    let admin = match &file.admin {
        Some(a) => {
            let listen = own_listen("admin.listen", &a.listen, &server)?;
            for (key, other) in [
                ("metrics.listen", metrics_listen),
                ("health.listen", health.listen),
            ] {
                if other.is_some_and(|o| binds_same(listen, o)) {
                    return invalid(
                        "admin.listen",
                        format!("{listen} is also {key}; give each its own address"),
                    );
                }
            }
            Some(AdminConfig {
                listen,
                token_file: resolve_path(base, &a.token_file),
            })
        }
        None => None,
    };
    if let (Some(h), Some(m)) = (health.listen, metrics_listen) {
        if binds_same(h, m) {
            return invalid(
                "health.listen",
                format!("{h} is also metrics.listen; give each its own address"),
            );
        }
    }
    let logging = Logging {
        format: one_of(
            "logging.format",
            file.logging.format.as_deref(),
            LogFormat::Json,
            &[("json", LogFormat::Json), ("text", LogFormat::Text)],
        )?,
        level: one_of(
            "logging.level",
            file.logging.level.as_deref(),
            "info",
            &[
                ("error", "error"),
                ("warn", "warn"),
                ("info", "info"),
                ("debug", "debug"),
                ("trace", "trace"),
            ],
        )?
        .to_string(),
    };
    let limits = Limits {
        max_header_bytes: positive(
            "limits.max_header_bytes",
            file.limits.max_header_bytes,
            32 * 1024,
        )?,
        max_headers: positive("limits.max_headers", file.limits.max_headers, 100)?,
        max_auth_body_bytes: positive(
            "limits.max_auth_body_bytes",
            file.limits.max_auth_body_bytes,
            16 * 1024,
        )?,
        read_buffer_bytes: positive(
            "limits.read_buffer_bytes",
            file.limits.read_buffer_bytes,
            1024,
        )?,
        header_timeout: duration_or(
            "limits.header_timeout",
            &file.limits.header_timeout,
            Duration::from_secs(10),
        )?,
        max_connections: positive(
            "limits.max_connections",
            file.limits.max_connections,
            10_000,
        )?,
    };
    let cors = match &file.cors {
        Some(c) => Some(cors("cors", c)?),
        None => None,
    };
    Ok(Config {
        source: source.to_path_buf(),
        server,
        tokens,
        cookies,
        users_file: resolve_path(base, file.users.file.as_deref().unwrap_or("users.yaml")),
        users_file_required: file.users.file.is_some(),
        store,
        store_timeout,
        upgrade_socket,
        pid_file,
        rate_limits,
        security_headers,
        identity_headers,
        upstreams,
        routes,
        health,
        metrics_listen,
        logging,
        limits,
        cors,
        client,
        login_title,
        max_sessions_per_user: file.sessions.max_per_user.unwrap_or(0),
        admin,
        known_device_ttl: duration_or(
            "sessions.known_device_ttl",
            &file.sessions.known_device_ttl,
            Duration::from_secs(90 * 86400),
        )?,
        mfa: match &file.mfa {
            Some(m) => Some(mfa(m)?),
            None => None,
        },
        webhook_url: match &file.notifications.webhook_url {
            None => None,
            Some(u) if u.starts_with("https://") || u.starts_with("http://") => Some(u.clone()),
            Some(u) => {
                return invalid(
                    "notifications.webhook_url",
                    format!("{u:?} is not an http(s) URL"),
                )
            }
        },
        warnings,
    })
}

/// A listener of its own (`metrics.listen`, `health.listen`), which must not take one of the
/// proxy's own listen addresses (Pingora would stop at start-up on a bind error that names
/// neither key).
fn own_listen(key: &str, value: &str, server: &ServerConfig) -> R<std::net::SocketAddr> {
    let addr = socket_addr(key, value)?;
    let plain = server.listen.iter().map(|a| ("server.listen", a));
    let tls = server.tls.iter().flat_map(|t| &t.listen);
    let taken = plain
        .enumerate()
        .chain(tls.map(|a| ("server.tls.listen", a)).enumerate());
    for (i, (taken, other)) in taken {
        if binds_same(addr, *other) {
            let what = key.split('.').next().unwrap_or(key);
            return invalid(
                key,
                format!("{addr} is also {taken}[{i}] ({other}); give {what} an address of its own"),
            );
        }
    }
    Ok(addr)
}

/// Whether two listeners would take the same port: the same address, or a wildcard address
/// that covers the other (`[::]` also covers IPv4).
fn binds_same(a: std::net::SocketAddr, b: std::net::SocketAddr) -> bool {
    let covers = |w: std::net::SocketAddr, o: std::net::SocketAddr| {
        w.ip().is_unspecified() && (w.is_ipv6() || o.is_ipv4())
    };
    a.port() == b.port() && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

fn probe_path(key: &str, value: &str) -> R<String> {
    if !value.starts_with('/') || value.starts_with("/auth/") {
        return invalid(
            key,
            format!("must be an absolute path outside /auth/, got {value:?}"),
        );
    }
    Ok(value.to_string())
}

/// Is `url`'s host the loopback (where browsers treat plain http as secure)?
fn loopback(url: &str) -> bool {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or("");
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `mfa`: the key must be 32 bytes of base64 (a wrong or missing key stops the start; there is
/// no unsealed fallback). Its value never appears in a message.
fn mfa(m: &MfaFile) -> R<MfaConfig> {
    use base64::Engine;
    let key = "mfa.encryption_key";
    let Some(text) = m.encryption_key.as_deref().map(str::trim) else {
        return invalid(
            key,
            "required with `mfa` (32 random bytes in base64: `openssl rand -base64 32`)",
        );
    };
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let bytes = engines.iter().find_map(|e| e.decode(text).ok());
    let encryption_key = match bytes.map(<[u8; 32]>::try_from) {
        Some(Ok(k)) => k,
        Some(Err(b)) => {
            return invalid(
                key,
                format!(
                    "expected 32 bytes in base64, got {} (`openssl rand -base64 32` makes one)",
                    b.len()
                ),
            )
        }
        None => {
            return invalid(
                key,
                "not base64 (`openssl rand -base64 32` makes a key; `${VAR}` reads it from the environment)",
            )
        }
    };
    if encryption_key.iter().all(|&b| b == encryption_key[0]) {
        return invalid(key, "is one byte repeated; use 32 random bytes");
    }
    let issuer_name = match m.issuer_name.as_deref().map(str::trim) {
        None => "portcullis".to_string(),
        Some("") => return invalid("mfa.issuer_name", "must not be empty"),
        Some(n) if n.contains(':') || n.len() > 64 => {
            return invalid(
                "mfa.issuer_name",
                "at most 64 bytes, without ':' (authenticator apps split on it)",
            )
        }
        Some(n) => n.to_string(),
    };
    Ok(MfaConfig {
        issuer_name,
        encryption_key: crate::secret::Secret::new(encryption_key),
        required_for_roles: m.required_for_roles.clone(),
    })
}
