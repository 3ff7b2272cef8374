//! Once per request, after the response: the metrics and the access log line. Nothing here
//! decides anything; query strings and credentials never appear.

use super::ctx::RequestCtx;
use super::state::AppState;
use crate::metrics::status_class;
use pingora::proxy::Session;
use pingora::Error;

pub fn finish(s: &AppState, session: &Session, e: Option<&Error>, ctx: &mut RequestCtx) {
    if let Some(id) = ctx.ws_id.take() {
        s.websockets.unregister(id);
    }
    let status = session
        .response_written()
        .map(|r| r.status.as_u16())
        .or(ctx.local_status)
        .unwrap_or(0);
    let seconds = ctx.started.elapsed().as_secs_f64();
    let label = match ctx.route {
        Some(i) => {
            s.route_series[i].count(status, seconds);
            s.route_labels[i].as_str()
        }
        None => {
            let m = &s.metrics;
            m.requests
                .with_label_values(&[ctx.label, status_class(status)])
                .inc();
            m.request_duration
                .with_label_values(&[ctx.label])
                .observe(seconds);
            ctx.label
        }
    };
    let req = session.req_header();
    tracing::info!(
        target: "portcullis::access",
        request_id = %ctx.id,
        method = %req.method,
        path = %req.uri.path(),
        status,
        route = label,
        client_ip = ctx.client_ip.map(tracing::field::display),
        user = ctx
            .identity
            .as_ref()
            .map(|i| i.sub.as_str())
            .or(ctx.refused_user.as_deref()),
        reason = ctx.refusal,
        user_agent = super::request::user_agent(req),
        duration_ms = seconds * 1000.0,
        error = e.map(|e| e.etype().as_str()),
    );
}
