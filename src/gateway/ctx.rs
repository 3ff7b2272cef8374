//! Per-request state shared across the proxy's hooks, request ids, and the client-address
//! policy (who may speak for the client in `X-Forwarded-For`).

use super::state::AppState;
use crate::auth::Identity;
use http::HeaderValue;
use ipnet::IpNet;
use pingora::http::RequestHeader;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Per-request state shared across hooks.
pub struct RequestCtx {
    /// The gateway's state when the request began: a reload does not change it mid-way.
    pub state: Arc<AppState>,
    pub id: String,
    pub started: Instant,
    pub route: Option<usize>,
    /// Label for metrics when no route applies (`auth`, `probe`, `none`).
    pub label: &'static str,
    pub identity: Option<Identity>,
    /// Why the request was refused (an error code), and whose credentials it carried.
    pub refusal: Option<&'static str>,
    pub refused_user: Option<String>,
    /// The verified access token, kept only when `forward_access_token` is on.
    pub access_token: Option<String>,
    pub peer_ip: Option<IpAddr>,
    pub peer_trusted: bool,
    pub client_ip: Option<IpAddr>,
    pub tls: bool,
    pub local_status: Option<u16>,
    pub upstream_started: Option<Instant>,
    /// `Set-Cookie` values to add to whatever response goes out (transparent refresh).
    pub set_cookies: Vec<HeaderValue>,
    /// An accepted `Upgrade: websocket` request, and its registration once connected.
    pub websocket: bool,
    pub ws_id: Option<u64>,
    /// The browser client's tag going into this HTML answer (`inject_client`).
    pub inject: Option<super::inject::Injector>,
}

impl RequestCtx {
    pub fn new(state: Arc<AppState>) -> Self {
        RequestCtx {
            id: state.ids.next(),
            state,
            started: Instant::now(),
            route: None,
            label: "none",
            identity: None,
            refusal: None,
            refused_user: None,
            access_token: None,
            peer_ip: None,
            peer_trusted: false,
            client_ip: None,
            tls: false,
            local_status: None,
            upstream_started: None,
            set_cookies: Vec::new(),
            websocket: false,
            ws_id: None,
            inject: None,
        }
    }

    /// The client address as rate limits and audit lines key on it.
    pub fn client_key(&self) -> String {
        self.client_ip
            .map(|i| i.to_string())
            .unwrap_or_else(|| "unknown".into())
    }
}

/// Request ids: a random per-process prefix and a counter (`1a2b3c4d-0000002a`).
pub struct RequestIds {
    prefix: String,
    counter: AtomicU64,
}

impl RequestIds {
    pub fn new() -> Self {
        RequestIds {
            prefix: format!("{:08x}", rand::random::<u32>()),
            counter: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:08x}", self.prefix)
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// Which peers are trusted proxies (`server.trusted_proxies`).
pub struct ClientIpPolicy {
    trusted: Vec<IpNet>,
}

impl ClientIpPolicy {
    pub fn new(trusted: &[IpNet]) -> Self {
        ClientIpPolicy {
            trusted: trusted.to_vec(),
        }
    }

    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client address: the peer, or, when the peer is a trusted proxy, the right-most
    /// address in `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client_ip(&self, peer: Option<IpAddr>, req: &RequestHeader) -> Option<IpAddr> {
        let peer = peer?;
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        let mut client = peer;
        let chain: Vec<IpAddr> = req
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        for ip in chain.into_iter().rev() {
            client = ip;
            if !self.is_trusted(ip) {
                break;
            }
        }
        Some(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_the_first_untrusted_address_from_the_right() {
        let policy = ClientIpPolicy::new(&["10.0.0.0/8".parse().unwrap()]);
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("X-Forwarded-For", "1.1.1.1, 2.2.2.2, 10.0.0.7")
            .unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            policy.client_ip(Some(ip("10.1.1.1")), &req),
            Some(ip("2.2.2.2"))
        );
        // An untrusted peer speaks for itself whatever it claims.
        assert_eq!(
            policy.client_ip(Some(ip("3.3.3.3")), &req),
            Some(ip("3.3.3.3"))
        );
        assert_eq!(policy.client_ip(None, &req), None);
    }
}
