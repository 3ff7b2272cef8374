//! Liveness and readiness probes, answered before any routing or authentication.

use crate::respond::LocalResponse;
use crate::store::TokenStore;
use serde_json::{json, Map, Value};

/// `200 {"status":"alive"}` while the process serves.
pub fn liveness() -> LocalResponse {
    LocalResponse::json(200, &json!({ "status": "alive" })).no_store()
}

/// 200 when the store answers, every route's upstream group (`upstreams`: name and healthy
/// peers) has a healthy peer and no trusted issuer's keys are failing (`issuer_failures`);
/// otherwise 503 with each failing part named in `failing`.
pub async fn readiness(
    store: &dyn TokenStore,
    upstreams: &[(&str, usize)],
    issuer_failures: Vec<String>,
) -> LocalResponse {
    let mut failing = Vec::new();
    let store_state = match store.ping().await {
        Ok(()) => "ok".to_string(),
        Err(e) => {
            failing.push(format!("store ({}): {e}", store.backend()));
            "unavailable".to_string()
        }
    };
    let mut groups = Map::new();
    for (name, healthy) in upstreams {
        if *healthy == 0 {
            failing.push(format!("upstream {name}: no healthy peer"));
        }
        groups.insert(name.to_string(), json!({ "healthy_peers": healthy }));
    }
    failing.extend(issuer_failures);
    let ready = failing.is_empty();
    let body = json!({
        "status": if ready { "ready" } else { "unavailable" },
        "store": store_state,
        "upstreams": Value::Object(groups),
        "failing": failing,
    });
    LocalResponse::json(if ready { 200 } else { 503 }, &body).no_store()
}
