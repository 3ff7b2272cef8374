//! Who is asking: request ids, and the client-address policy (who may speak for the client in
//! `X-Forwarded-For`).

use ipnet::IpNet;
use pingora::http::RequestHeader;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

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
