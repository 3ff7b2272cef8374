//! Per-request state shared across the proxy's hooks.

use super::state::AppState;
use crate::auth::Identity;
use http::HeaderValue;
use std::net::IpAddr;
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
