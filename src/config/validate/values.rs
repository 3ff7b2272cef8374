//! Scalar values every section parses the same way: durations, addresses, rates, header
//! names, paths and one-of choices. Each takes the key path so that its error can name it.

use super::{invalid, R};
use crate::config::model::Rate;
use http::HeaderName;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

pub(super) fn duration_or(key: &str, value: &Option<String>, default: Duration) -> R<Duration> {
    value.as_deref().map_or(Ok(default), |v| duration(key, v))
}

/// A duration of at least one second (token lifetimes, grace windows).
pub(super) fn ttl_or(key: &str, value: &Option<String>, default: Duration) -> R<Duration> {
    let d = duration_or(key, value, default)?;
    if d < Duration::from_secs(1) {
        return invalid(key, format!("must be at least 1s, got {d:?}"));
    }
    Ok(d)
}

pub(super) fn socket_addr(key: &str, value: &str) -> R<SocketAddr> {
    value.parse().or_else(|_| {
        invalid(
            key,
            format!("invalid listen address {value:?} (expected IP:PORT such as \"0.0.0.0:8080\")"),
        )
    })
}

pub(super) fn resolve(key: &str, value: &str) -> R<SocketAddr> {
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

pub(super) fn rate(key: &str, value: &Option<String>, default: Rate) -> R<Rate> {
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

pub(super) fn header_name(key: &str, value: &str) -> R<HeaderName> {
    HeaderName::from_bytes(value.as_bytes())
        .or_else(|_| invalid(key, format!("{value:?} is not a valid header name")))
}

pub(super) fn resolve_path(base: &Path, value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A private key file's path, resolved. A warning when group or others have any access to
/// it (`check` prints it, start-up logs it); a missing file is left to the key loaders,
/// which name it.
pub(super) fn private_key_path(
    key: &str,
    base: &Path,
    value: &str,
    warnings: &mut Vec<String>,
) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = resolve_path(base, value);
    if let Ok(meta) = std::fs::metadata(&path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            warnings.push(format!(
                "{key}: {} has mode {mode:04o}: group or others can read this private key; \
                 chmod 600 it",
                path.display()
            ));
        }
    }
    path
}

pub(super) fn one_of<T: Copy>(
    key: &str,
    value: Option<&str>,
    default: T,
    choices: &[(&str, T)],
) -> R<T> {
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

pub(super) fn positive(key: &str, value: Option<usize>, default: usize) -> R<usize> {
    match value {
        Some(0) => invalid(key, "must be greater than zero"),
        Some(v) => Ok(v),
        None => Ok(default),
    }
}
