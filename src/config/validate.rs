//! Wire -> model. Every error names the key path (`routes[2].upstream`) and what is wrong;
//! the caller prefixes the file name.

use super::file::*;
use super::model::*;
use crate::secret::Secret;
use http::{HeaderName, HeaderValue};
use std::collections::{BTreeMap, HashSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Parse a duration string such as `900ms`, `15m`, `7d`.
pub fn duration(key: &str, value: &str) -> R<Duration> {
    match humantime::parse_duration(value.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => invalid(key, format!("must be longer than zero, got {value:?}")),
        Err(_) => invalid(
            key,
            format!("expected a duration like \"15m\", got {value:?}"),
        ),
    }
}

fn duration_or(key: &str, value: &Option<String>, default: Duration) -> R<Duration> {
    value.as_deref().map_or(Ok(default), |v| duration(key, v))
}

/// A duration of at least one second (token lifetimes, grace windows).
fn ttl_or(key: &str, value: &Option<String>, default: Duration) -> R<Duration> {
    let d = duration_or(key, value, default)?;
    if d < Duration::from_secs(1) {
        return invalid(key, format!("must be at least 1s, got {d:?}"));
    }
    Ok(d)
}

fn socket_addr(key: &str, value: &str) -> R<SocketAddr> {
    value.parse().or_else(|_| {
        invalid(
            key,
            format!("invalid listen address {value:?} (expected IP:PORT such as \"0.0.0.0:8080\")"),
        )
    })
}

fn resolve(key: &str, value: &str) -> R<SocketAddr> {
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    match value.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(addr)) => Ok(addr),
        _ => invalid(
            key,
            format!("cannot resolve upstream address {value:?} (expected HOST:PORT)"),
        ),
    }
}

fn rate(key: &str, value: &Option<String>, default: Rate) -> R<Rate> {
    let Some(value) = value else {
        return Ok(default);
    };
    let parsed = value
        .split_once('/')
        .and_then(|(count, window)| Some((count.trim().parse::<u32>().ok()?, window.trim())));
    match parsed {
        Some((count, window)) if count > 0 => Ok(Rate {
            count,
            window: duration(key, window)?,
        }),
        _ => invalid(
            key,
            format!("expected a rate like \"5/15m\" (count/duration), got {value:?}"),
        ),
    }
}

fn header_name(key: &str, value: &str) -> R<HeaderName> {
    HeaderName::from_bytes(value.as_bytes())
        .or_else(|_| invalid(key, format!("{value:?} is not a valid header name")))
}

fn resolve_path(base: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn one_of<T: Copy>(key: &str, value: Option<&str>, default: T, choices: &[(&str, T)]) -> R<T> {
    let Some(value) = value else {
        return Ok(default);
    };
    for (name, v) in choices {
        if name.eq_ignore_ascii_case(value) {
            return Ok(*v);
        }
    }
    let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
    invalid(
        key,
        format!("expected one of {}, got {value:?}", names.join(" | ")),
    )
}

/// Security headers a hardened NGINX would add.
pub const DEFAULT_SECURITY_HEADERS: &[(&str, &str)] = &[
    ("Strict-Transport-Security", "max-age=63072000; includeSubDomains"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "SAMEORIGIN"),
    ("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("Origin-Agent-Cluster", "?1"),
    ("X-DNS-Prefetch-Control", "off"),
    ("X-Permitted-Cross-Domain-Policies", "none"),
    ("X-XSS-Protection", "0"),
];

/// Build the validated model. `base` is the directory relative paths are resolved against.
pub fn build(file: FileConfig, source: &Path, base: &Path) -> R<Config> {
    let mut warnings = Vec::new();
    let server = server(&file.server, base)?;
    let tokens = tokens(&file.tokens, &server.public_url, base, &mut warnings)?;
    let cookies = cookies(&file.cookies)?;
    let store = match one_of(
        "store.backend",
        file.store.backend.as_deref(),
        "sled",
        &[("sled", "sled"), ("redis", "redis")],
    )? {
        "redis" => StoreConfig::Redis {
            url: Secret::new(
                file.store
                    .redis_url
                    .clone()
                    .unwrap_or_else(|| "redis://127.0.0.1:6379/0".into()),
            ),
            max_staleness: duration_or(
                "store.max_staleness",
                &file.store.max_staleness,
                Duration::from_secs(30),
            )?,
            sentinel: match &file.store.redis_sentinel {
                None => None,
                Some(s) => {
                    if s.master_name.trim().is_empty() {
                        return invalid("store.redis_sentinel.master_name", "must not be empty");
                    }
                    if s.addresses.is_empty() {
                        return invalid(
                            "store.redis_sentinel.addresses",
                            "at least one sentinel host:port is needed",
                        );
                    }
                    for (i, a) in s.addresses.iter().enumerate() {
                        resolve(&format!("store.redis_sentinel.addresses[{i}]"), a)?;
                    }
                    Some(Sentinel {
                        master_name: s.master_name.clone(),
                        addresses: s.addresses.clone(),
                    })
                }
            },
            min_replicas_acked: file.store.redis_min_replicas_acked.unwrap_or(0),
        },
        _ => StoreConfig::Sled {
            path: resolve_path(
                base,
                file.store.path.as_deref().unwrap_or("data/portcullis.db"),
            ),
        },
    };
    if matches!(store, StoreConfig::Sled { .. })
        && (file.store.redis_sentinel.is_some() || file.store.redis_min_replicas_acked.is_some())
    {
        return invalid(
            "store.redis_sentinel",
            "redis_sentinel and redis_min_replicas_acked need store.backend: redis",
        );
    }
    let store_timeout = duration_or("store.timeout", &file.store.timeout, Duration::from_secs(2))?;
    let upgrade_socket = match (&file.store.upgrade_socket, &store) {
        (Some(p), _) => resolve_path(base, p),
        (None, StoreConfig::Sled { path }) => path.with_extension("upgrade.sock"),
        (None, StoreConfig::Redis { .. }) => PathBuf::from("/tmp/portcullis_upgrade.sock"),
    };
    let rl = &file.rate_limits;
    let five_per_15m = Rate {
        count: 5,
        window: Duration::from_secs(15 * 60),
    };
    let rate_limits = RateLimits {
        login_per_ip: rate("rate_limits.login_per_ip", &rl.login_per_ip, five_per_15m)?,
        login_per_account: rate(
            "rate_limits.login_per_account",
            &rl.login_per_account,
            five_per_15m,
        )?,
        refresh_per_ip: rate(
            "rate_limits.refresh_per_ip",
            &rl.refresh_per_ip,
            Rate {
                count: 60,
                window: Duration::from_secs(60),
            },
        )?,
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
    let health = HealthPaths {
        liveness: probe_path(
            "health.liveness_path",
            file.health.liveness_path.as_deref().unwrap_or("/healthz"),
        )?,
        readiness: probe_path(
            "health.readiness_path",
            file.health.readiness_path.as_deref().unwrap_or("/readyz"),
        )?,
    };
    let metrics_listen = match &file.metrics {
        Some(m) => Some(socket_addr("metrics.listen", &m.listen)?),
        None => None,
    };
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
        warnings,
    })
}

fn positive(key: &str, value: Option<usize>, default: usize) -> R<usize> {
    match value {
        Some(0) => invalid(key, "must be greater than zero"),
        Some(v) => Ok(v),
        None => Ok(default),
    }
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

fn server(s: &ServerFile, base: &Path) -> R<ServerConfig> {
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
                key: resolve_path(base, &t.key),
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

fn tokens(
    t: &TokensFile,
    public_url: &str,
    base: &Path,
    warnings: &mut Vec<String>,
) -> R<TokensConfig> {
    let access_ttl = ttl_or("tokens.access_ttl", &t.access_ttl, Duration::from_secs(900))?;
    if access_ttl > Duration::from_secs(3600) {
        warnings.push(format!(
            "tokens.access_ttl: {} is longer than 1h; stolen access tokens stay valid that long",
            humantime::format_duration(access_ttl)
        ));
    }
    let reuse_grace = ttl_or(
        "tokens.reuse_grace",
        &t.reuse_grace,
        Duration::from_secs(10),
    )?;
    if reuse_grace > Duration::from_secs(60) {
        warnings.push(format!(
            "tokens.reuse_grace: {} is longer than 60s; a replayed refresh token is honoured that long",
            humantime::format_duration(reuse_grace)
        ));
    }
    let refresh_ttl = ttl_or(
        "tokens.refresh_ttl",
        &t.refresh_ttl,
        Duration::from_secs(7 * 86400),
    )?;
    let session_max_lifetime = ttl_or(
        "tokens.session_max_lifetime",
        &t.session_max_lifetime,
        Duration::from_secs(30 * 86400),
    )?;
    let on_reuse = one_of(
        "tokens.on_reuse",
        t.on_reuse.as_deref(),
        OnReuse::RevokeUser,
        &[
            ("revoke_user", OnReuse::RevokeUser),
            ("revoke_family", OnReuse::RevokeFamily),
        ],
    )?;
    let mut seen = HashSet::new();
    let mut signing_keys = Vec::new();
    for (i, k) in t.signing_keys.iter().enumerate() {
        let key = format!("tokens.signing_keys[{i}]");
        if k.kid.trim().is_empty() {
            return invalid(format!("{key}.kid"), "must not be empty");
        }
        if !seen.insert(k.kid.clone()) {
            return invalid(format!("{key}.kid"), format!("duplicate kid {:?}", k.kid));
        }
        let algorithm = one_of(
            &format!("{key}.algorithm"),
            Some(k.algorithm.as_str()),
            Algorithm::EdDSA,
            &[
                ("EdDSA", Algorithm::EdDSA),
                ("ES256", Algorithm::ES256),
                ("RS256", Algorithm::RS256),
                ("HS256", Algorithm::HS256),
            ],
        )?;
        let sources = [
            k.private_key_file.is_some(),
            k.public_key_file.is_some(),
            k.secret.is_some(),
        ];
        if sources.iter().filter(|s| **s).count() != 1 {
            return invalid(
                key,
                "set exactly one of private_key_file, public_key_file, secret",
            );
        }
        let source = match (algorithm, k) {
            (
                Algorithm::HS256,
                SigningKeyFile {
                    secret: Some(s), ..
                },
            ) => {
                if s.len() < 32 {
                    return invalid(
                        format!("{key}.secret"),
                        "an HS256 secret must be at least 32 bytes",
                    );
                }
                if crate::secret::PUBLISHED_SECRETS.contains(&s.as_str()) {
                    return invalid(
                        format!("{key}.secret"),
                        "is the placeholder published in portcullis's examples: anyone can forge tokens with it; set a random one (e.g. `openssl rand -base64 48`) through ${PORTCULLIS_HS256_SECRET}",
                    );
                }
                KeySource::Secret(Secret::new(s.clone()))
            }
            (Algorithm::HS256, _) => {
                return invalid(
                    format!("{key}.algorithm"),
                    "HS256 takes a `secret`, not a key file",
                )
            }
            (
                _,
                SigningKeyFile {
                    secret: Some(_), ..
                },
            ) => {
                return invalid(
                    format!("{key}.secret"),
                    "only HS256 takes a secret; asymmetric algorithms take key files",
                )
            }
            (
                _,
                SigningKeyFile {
                    private_key_file: Some(p),
                    ..
                },
            ) => KeySource::PrivatePem(resolve_path(base, p)),
            (
                _,
                SigningKeyFile {
                    public_key_file: Some(p),
                    ..
                },
            ) => KeySource::PublicPem(resolve_path(base, p)),
            _ => unreachable!("exactly one source is set"),
        };
        signing_keys.push(SigningKey {
            kid: k.kid.clone(),
            algorithm,
            source,
        });
    }
    let mut trusted_issuers = Vec::new();
    for (i, ti) in t.trusted_issuers.iter().enumerate() {
        let key = format!("tokens.trusted_issuers[{i}]");
        if !(ti.jwks_url.starts_with("http://") || ti.jwks_url.starts_with("https://")) {
            return invalid(
                format!("{key}.jwks_url"),
                format!("expected an http(s) URL, got {:?}", ti.jwks_url),
            );
        }
        trusted_issuers.push(TrustedIssuer {
            issuer: ti.issuer.clone(),
            jwks_url: ti.jwks_url.clone(),
            audience: ti
                .audience
                .clone()
                .or_else(|| t.audience.clone())
                .unwrap_or_else(|| "portcullis".into()),
            roles_claim: ti
                .roles_claim
                .as_deref()
                .unwrap_or("roles")
                .split('.')
                .map(str::to_string)
                .collect(),
            refresh_interval: duration_or(
                &format!("{key}.refresh_interval"),
                &ti.refresh_interval,
                Duration::from_secs(300),
            )?,
        });
    }
    Ok(TokensConfig {
        issuer: t.issuer.clone().unwrap_or_else(|| public_url.to_string()),
        audience: t.audience.clone().unwrap_or_else(|| "portcullis".into()),
        access_ttl,
        refresh_ttl,
        session_max_lifetime,
        reuse_grace,
        on_reuse,
        signing_keys,
        trusted_issuers,
        leeway: match t.leeway.as_deref() {
            None => Duration::from_secs(30),
            Some("0" | "0s") => Duration::ZERO,
            Some(v) => {
                let d = duration("tokens.leeway", v)?;
                if d > Duration::from_secs(30) {
                    return invalid("tokens.leeway", format!("at most 30s, got {v:?}"));
                }
                d
            }
        },
        // 0 disables the verified-token cache (every request checks the signature).
        cache_size: t.cache_size.unwrap_or(100_000),
    })
}

fn cookies(c: &CookiesFile) -> R<CookiesConfig> {
    let secure = c.secure.unwrap_or(true);
    let name = |key: &str, value: &Option<String>, default: &str| -> R<String> {
        let v = value.as_deref().unwrap_or(default);
        let valid = !v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
        if !valid {
            return invalid(
                key,
                format!("{v:?} is not a valid cookie name (letters, digits, _ - .)"),
            );
        }
        Ok(if secure {
            format!("__Host-{v}")
        } else {
            v.to_string()
        })
    };
    let cfg = CookiesConfig {
        secure,
        same_site: one_of(
            "cookies.same_site",
            c.same_site.as_deref(),
            SameSite::Strict,
            &[("Strict", SameSite::Strict), ("Lax", SameSite::Lax)],
        )?,
        access_name: name("cookies.access_name", &c.access_name, "pc_access")?,
        refresh_name: name("cookies.refresh_name", &c.refresh_name, "pc_refresh")?,
        csrf_name: name("cookies.csrf_name", &c.csrf_name, "pc_csrf")?,
    };
    let names = [&cfg.access_name, &cfg.refresh_name, &cfg.csrf_name];
    if names[0] == names[1] || names[0] == names[2] || names[1] == names[2] {
        return invalid(
            "cookies",
            "access_name, refresh_name and csrf_name must differ",
        );
    }
    Ok(cfg)
}

fn security_headers(at: &str, s: &SecurityHeadersFile) -> R<SecurityHeaders> {
    let mode = one_of(
        &format!("{at}.mode"),
        s.mode.as_deref(),
        HeaderMode::Set,
        &[("set", HeaderMode::Set), ("default", HeaderMode::Default)],
    )?;
    let mut headers = Vec::new();
    let mut wire_names = Vec::new();
    let pairs: Vec<(String, String)> = match &s.headers {
        Some(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        None => DEFAULT_SECURITY_HEADERS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    for (name, value) in pairs {
        let key = format!("{at}.headers.{name}");
        let hn = header_name(&key, &name)?;
        let hv = HeaderValue::from_str(&value)
            .or_else(|_| invalid(&key, "value contains characters not allowed in a header"))?;
        headers.push((hn, hv));
        wire_names.push(name);
    }
    let mut remove = Vec::new();
    let default_remove = vec!["Server".to_string(), "X-Powered-By".to_string()];
    for (i, name) in s
        .remove
        .as_ref()
        .unwrap_or(&default_remove)
        .iter()
        .enumerate()
    {
        remove.push(header_name(&format!("{at}.remove[{i}]"), name)?);
    }
    Ok(SecurityHeaders {
        mode,
        headers,
        wire_names,
        remove,
    })
}

fn upstreams(u: &BTreeMap<String, UpstreamFile>) -> R<BTreeMap<String, UpstreamConfig>> {
    let mut out = BTreeMap::new();
    for (name, up) in u {
        let key = format!("upstreams.{name}");
        if up.addresses.is_empty() {
            return invalid(format!("{key}.addresses"), "at least one address is needed");
        }
        let mut addresses = Vec::new();
        for (i, a) in up.addresses.iter().enumerate() {
            addresses.push(resolve(&format!("{key}.addresses[{i}]"), a)?);
        }
        let health_check = match &up.health_check {
            None => None,
            Some(hc) => {
                if let Some(p) = &hc.path {
                    if !p.starts_with('/') {
                        return invalid(
                            format!("{key}.health_check.path"),
                            format!("must start with '/', got {p:?}"),
                        );
                    }
                }
                Some(HealthCheck {
                    path: hc.path.clone(),
                    interval: duration_or(
                        &format!("{key}.health_check.interval"),
                        &hc.interval,
                        Duration::from_secs(5),
                    )?,
                })
            }
        };
        out.insert(
            name.clone(),
            UpstreamConfig {
                addresses,
                health_check,
                connect_timeout: duration_or(
                    &format!("{key}.connect_timeout"),
                    &up.connect_timeout,
                    Duration::from_secs(3),
                )?,
                read_timeout: duration_or(
                    &format!("{key}.read_timeout"),
                    &up.read_timeout,
                    Duration::from_secs(60),
                )?,
            },
        );
    }
    Ok(out)
}

fn routes(
    r: &[RouteFile],
    upstreams: &BTreeMap<String, UpstreamConfig>,
    warnings: &mut Vec<String>,
) -> R<Vec<Route>> {
    let mut out = Vec::new();
    for (i, route) in r.iter().enumerate() {
        let key = format!("routes[{i}]");
        if !upstreams.contains_key(&route.upstream) {
            return invalid(
                format!("{key}.upstream"),
                format!("unknown upstream {:?}", route.upstream),
            );
        }
        if !route.path_prefix.starts_with('/') {
            return invalid(
                format!("{key}.path_prefix"),
                format!("must start with '/', got {:?}", route.path_prefix),
            );
        }
        if route.path_prefix == "/auth" || route.path_prefix.starts_with("/auth/") {
            return invalid(
                format!("{key}.path_prefix"),
                "/auth/ is served by the gateway itself",
            );
        }
        let auth = one_of(
            &format!("{key}.auth"),
            route.auth.as_deref(),
            AuthMode::Required,
            &[
                ("required", AuthMode::Required),
                ("public", AuthMode::Public),
            ],
        )?;
        if auth == AuthMode::Public && !route.roles.is_empty() {
            return invalid(
                format!("{key}.roles"),
                "roles need `auth: required` (a public route checks nobody's roles)",
            );
        }
        let mut prefix = route.path_prefix.clone();
        while prefix.len() > 1 && prefix.ends_with('/') {
            prefix.pop();
        }
        let protected = auth == AuthMode::Required;
        let path_params = one_of(
            &format!("{key}.path_params"),
            route.path_params.as_deref(),
            if protected {
                PathParams::Reject
            } else {
                PathParams::Keep
            },
            &[
                ("strip", PathParams::Strip),
                ("keep", PathParams::Keep),
                ("reject", PathParams::Reject),
            ],
        )?;
        let host = match &route.host {
            Some(h) => Some(route_host(&format!("{key}.host"), h)?),
            None => None,
        };
        out.push(Route {
            host,
            path_prefix: prefix,
            upstream: route.upstream.clone(),
            auth,
            roles: route.roles.clone(),
            path_params,
            strict_paths: route.strict_paths.unwrap_or(true),
            cors: match &route.cors {
                Some(c) => Some(cors(&format!("{key}.cors"), c)?),
                None => None,
            },
            security_headers: match &route.security_headers {
                Some(h) => Some(security_headers(&format!("{key}.security_headers"), h)?),
                None => None,
            },
        });
    }
    if out.is_empty() {
        warnings.push("routes: none configured; every proxied request answers 404".into());
    }
    for name in upstreams.keys() {
        if !out.iter().any(|r| &r.upstream == name) {
            warnings.push(format!("upstreams.{name}: not used by any route"));
        }
    }
    Ok(out)
}

/// A route's host as requests are matched against it: lower case, without a trailing dot.
fn route_host(key: &str, value: &str) -> R<String> {
    let h = value.to_ascii_lowercase();
    let h = h.strip_suffix('.').unwrap_or(&h).to_string();
    if h.is_empty() || h.contains(['/', ':', ' ']) && !h.starts_with('[') {
        return invalid(
            key,
            format!("must be a host name without port, got {value:?}"),
        );
    }
    Ok(h)
}

fn cors(at: &str, c: &CorsFile) -> R<Cors> {
    let mut allowed_origins = Vec::new();
    let mut any_origin = false;
    for (i, o) in c.allowed_origins.iter().enumerate() {
        let key = format!("{at}.allowed_origins[{i}]");
        if o == "*" {
            any_origin = true;
            continue;
        }
        let lower = o.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"));
        match rest {
            Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ']) => {}
            _ => {
                return invalid(
                    key,
                    format!("must be an origin like https://app.example.com (no path), got {o:?}"),
                )
            }
        }
        allowed_origins.push(lower);
    }
    let allow_credentials = c.allow_credentials.unwrap_or(false);
    if any_origin && allow_credentials {
        return invalid(
            format!("{at}.allowed_origins"),
            "\"*\" cannot be combined with allow_credentials: true (browsers refuse it, and it would hand every site the user's session)",
        );
    }
    let methods = c
        .allowed_methods
        .clone()
        .unwrap_or_else(|| vec!["GET".into(), "POST".into()]);
    let mut allowed_methods = Vec::new();
    for (i, m) in methods.iter().enumerate() {
        let m = http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).or_else(|_| {
            invalid(
                format!("{at}.allowed_methods[{i}]"),
                format!("not an HTTP method: {m:?}"),
            )
        })?;
        allowed_methods.push(m);
    }
    let names = |list: &Option<Vec<String>>, what: &str| -> R<Vec<HeaderName>> {
        list.iter()
            .flatten()
            .enumerate()
            .map(|(i, n)| header_name(&format!("{at}.{what}[{i}]"), n))
            .collect()
    };
    Ok(Cors {
        allowed_origins,
        any_origin,
        allow_credentials,
        allowed_methods,
        allowed_headers: names(&c.allowed_headers, "allowed_headers")?,
        expose_headers: names(&c.expose_headers, "expose_headers")?,
        max_age: duration_or(
            &format!("{at}.max_age"),
            &c.max_age,
            Duration::from_secs(600),
        )?,
    })
}
