//! `health.listen`: a listener of its own that answers the liveness and readiness probes and
//! nothing else, so that a load balancer or an orchestrator can check a TLS-only gateway over
//! plain HTTP without a path to the login or the applications.

use super::state::AppState;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

pub struct ProbeApp {
    pub live: Arc<ArcSwap<AppState>>,
}

#[async_trait]
impl ServeHttp for ProbeApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let s = self.live.load_full();
        let path = session.req_header().uri.path().to_string();
        let health = &s.config.health;
        let answer = if path == health.liveness || path == health.readiness {
            super::request::probe(&s, &path).await
        } else {
            crate::respond::not_found("this listener answers only the health probes")
        };
        let mut r = Response::builder().status(answer.status);
        for (name, value) in &answer.headers {
            r = r.header(name, value);
        }
        r.header(http::header::CONTENT_LENGTH, answer.body.len())
            .body(answer.body.to_vec())
            .unwrap_or_else(|_| Response::new(Vec::new()))
    }
}
