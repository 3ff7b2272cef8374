//! The host routing decides on: one spelling of each name, or refused.

use super::HostError;
use std::borrow::Cow;

/// A canonical host: lower case, without a trailing dot or the scheme's default port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host<'a> {
    /// `name[:port]`, as it goes upstream in `Host`.
    pub full: Cow<'a, str>,
    name_len: usize,
}

impl Host<'_> {
    /// The host name (or bracketed IPv6 literal, without brackets) routes match on.
    pub fn name(&self) -> &str {
        let n = &self.full[..self.name_len];
        n.strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(n)
    }
}

/// Canonicalize a `Host` value (or an absolute-form authority). `tls` says which port is the
/// default one.
pub fn canonical_host(raw: &str, tls: bool) -> Result<Host<'_>, HostError> {
    let (name, port) = if raw.starts_with('[') {
        let end = raw.find(']').ok_or(HostError::Invalid)?;
        let literal = &raw[1..end];
        literal
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| HostError::Invalid)?;
        match &raw[end + 1..] {
            "" => (&raw[..=end], None),
            p => (
                &raw[..=end],
                Some(p.strip_prefix(':').ok_or(HostError::Invalid)?),
            ),
        }
    } else {
        match raw.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (raw, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(p) => {
            if p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HostError::Invalid);
            }
            match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(HostError::Invalid),
                Ok(n) if n == if tls { 443 } else { 80 } => None,
                Ok(_) => Some(p),
            }
        }
    };
    let stripped = name.strip_suffix('.').unwrap_or(name);
    if !name.starts_with('[') && !valid_name(stripped) {
        return Err(HostError::Invalid);
    }
    let clean = stripped.len() == name.len()
        && !stripped.bytes().any(|b| b.is_ascii_uppercase())
        && port.map_or(name.len() == raw.len(), |p| {
            name.len() + 1 + p.len() == raw.len()
        });
    if clean {
        return Ok(Host {
            full: Cow::Borrowed(raw),
            name_len: name.len(),
        });
    }
    let mut full = stripped.to_ascii_lowercase();
    let name_len = full.len();
    if let Some(p) = port {
        full.push(':');
        full.push_str(p);
    }
    Ok(Host {
        full: Cow::Owned(full),
        name_len,
    })
}

/// A DNS name of letters, digits, `-` and `_` (labels of 1 to 63, not starting or ending with
/// `-`), or a dotted IPv4 address. A name whose last label is numeric must be an IPv4 address:
/// `127.1` and `0x7f.1` mean different hosts to different resolvers.
fn valid_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) || last.starts_with("0x") || last.starts_with("0X")
    {
        return name.parse::<std::net::Ipv4Addr>().is_ok();
    }
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}
