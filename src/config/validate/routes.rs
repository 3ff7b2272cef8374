//! `upstreams`, `routes` and `cors` (top level and per route): where requests go and who
//! may call them from another origin.

use super::headers::security_headers;
use super::values::{duration, duration_or, header_name, one_of, resolve};
use super::{invalid, R};
use crate::config::file::{CorsFile, RouteFile, UpstreamFile};
use crate::config::model::*;
use http::HeaderName;
use std::collections::BTreeMap;
use std::time::Duration;

pub(super) fn upstreams(u: &BTreeMap<String, UpstreamFile>) -> R<BTreeMap<String, UpstreamConfig>> {
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

pub(super) fn routes(
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
            inject_client: route.inject_client.unwrap_or(false),
            mfa_required: one_of(
                &format!("{key}.mfa"),
                route.mfa.as_deref(),
                false,
                &[("required", true), ("optional", false)],
            )?,
            max_auth_age: match &route.max_auth_age {
                Some(v) => Some(duration(&format!("{key}.max_auth_age"), v)?),
                None => None,
            },
        });
        let last = out.last().expect("just pushed");
        if !protected && (last.mfa_required || last.max_auth_age.is_some()) {
            return invalid(
                format!("{key}.auth"),
                "mfa and max_auth_age need `auth: required` (a public route checks nobody)",
            );
        }
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

pub(super) fn cors(at: &str, c: &CorsFile) -> R<Cors> {
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
