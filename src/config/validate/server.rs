//! `server`: listen addresses, TLS files, the public URL and trusted proxies.

use super::values::{duration_or, positive, private_key_path, resolve_path, socket_addr, ttl_or};
use super::{invalid, R};
use crate::config::file::ServerFile;
use crate::config::model::{ServerConfig, TlsConfig};
use std::path::Path;
use std::time::Duration;

pub(super) fn server(s: &ServerFile, base: &Path, warnings: &mut Vec<String>) -> R<ServerConfig> {
    let listen_raw = s
        .listen
        .clone()
        .unwrap_or_else(|| vec!["0.0.0.0:8080".to_string()]);
    let mut listen = Vec::new();
    for (i, l) in listen_raw.iter().enumerate() {
        listen.push(socket_addr(&format!("server.listen[{i}]"), l)?);
    }
    let tls = match &s.tls {
        None => None,
        Some(t) => {
            let mut tls_listen = Vec::new();
            for (i, l) in t.listen.iter().enumerate() {
                tls_listen.push(socket_addr(&format!("server.tls.listen[{i}]"), l)?);
            }
            Some(TlsConfig {
                listen: tls_listen,
                cert: resolve_path(base, &t.cert),
                key: private_key_path("server.tls.key", base, &t.key, warnings),
            })
        }
    };
    if listen.is_empty() && tls.as_ref().is_none_or(|t| t.listen.is_empty()) {
        return invalid("server.listen", "at least one listen address is needed");
    }
    let default_url = format!(
        "http://localhost:{}",
        listen.first().map(|a| a.port()).unwrap_or(8080)
    );
    let public_url = public_url(s.public_url.as_deref().unwrap_or(&default_url))?;
    let mut trusted_proxies = Vec::new();
    for (i, p) in s.trusted_proxies.iter().enumerate() {
        let net = p
            .parse::<ipnet::IpNet>()
            .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match net {
            Ok(n) => trusted_proxies.push(n),
            Err(_) => {
                return invalid(
                    format!("server.trusted_proxies[{i}]"),
                    format!("expected a CIDR like \"10.0.0.0/8\" or an IP, got {p:?}"),
                )
            }
        }
    }
    let threads = positive("server.threads", s.threads, 2)?;
    if s.redirect_http && !public_url.starts_with("https://") {
        // Plain requests would be sent back to plain HTTP: a redirect loop.
        return invalid(
            "server.redirect_http",
            format!("needs an https:// server.public_url, got {public_url:?}"),
        );
    }
    Ok(ServerConfig {
        listen,
        tls,
        public_url,
        trusted_proxies,
        threads,
        grace_period: duration_or(
            "server.grace_period",
            &s.grace_period,
            Duration::from_secs(10),
        )?,
        keepalive_timeout: ttl_or(
            "server.keepalive_timeout",
            &s.keepalive_timeout,
            Duration::from_secs(60),
        )?,
        redirect_http: s.redirect_http,
    })
}

fn public_url(value: &str) -> R<String> {
    let key = "server.public_url";
    let uri: http::Uri = value
        .parse()
        .or_else(|_| invalid(key, format!("not a URL: {value:?}")))?;
    let scheme = uri.scheme_str().unwrap_or("");
    if scheme != "http" && scheme != "https" {
        return invalid(
            key,
            format!("expected an http:// or https:// URL, got {value:?}"),
        );
    }
    let Some(authority) = uri.authority() else {
        return invalid(key, format!("missing host in {value:?}"));
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return invalid(
            key,
            format!("must be an origin (scheme://host[:port]) without a path, got {value:?}"),
        );
    }
    Ok(format!(
        "{scheme}://{}",
        authority.as_str().to_ascii_lowercase()
    ))
}
