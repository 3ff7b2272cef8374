//! Liveness and readiness probes, answered before any routing or authentication.

use crate::gateway::AppState;
use crate::respond::LocalResponse;
use serde_json::{json, Map, Value};

/// `200 {"status":"alive"}` while the process serves.
pub fn liveness() -> LocalResponse {
    LocalResponse::json(200, &json!({ "status": "alive" })).no_store()
}

/// 200 when the store answers and every route's upstream group has a healthy peer; otherwise
/// 503 with each failing part named in `failing`.
pub async fn readiness(state: &AppState) -> LocalResponse {
    let mut failing = Vec::new();
    let store = match state.store.ping().await {
        Ok(()) => "ok".to_string(),
        Err(e) => {
            failing.push(format!("store ({}): {e}", state.store.backend()));
            "unavailable".to_string()
        }
    };
    let mut upstreams = Map::new();
    for route in &state.config.routes {
        if upstreams.contains_key(&route.upstream) {
            continue;
        }
        let healthy = state.upstreams.healthy_count(&route.upstream);
        if healthy == 0 {
            failing.push(format!("upstream {}: no healthy peer", route.upstream));
        }
        upstreams.insert(route.upstream.clone(), json!({ "healthy_peers": healthy }));
    }
    failing.extend(state.tokens.external.failures());
    let ready = failing.is_empty();
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "store": store,
        "upstreams": Value::Object(upstreams),
        "failing": failing,
    });
    LocalResponse::json(if ready { 200 } else { 503 }, &body).no_store()
}
