//! Liveness and readiness probes, answered before any routing or authentication.

use crate::config::RequireUpstreams;
use crate::respond::LocalResponse;
use crate::store::TokenStore;
use serde_json::{json, Map, Value};

/// `200 {"status":"alive"}` while the process serves.
pub fn liveness() -> LocalResponse {
    LocalResponse::json(200, &json!({ "status": "alive" })).no_store()
}

/// 200 when the gateway itself can serve: the store answers and no trusted issuer's keys are
/// failing (`issuer_failures`); the signing keys were proven at start-up (a process whose keys
/// do not load never starts). Each route's upstream group (`upstreams`: name and healthy peers)
/// is listed, and fails readiness only as `require` says. Otherwise 503 with each failing part
/// named in `failing`.
pub async fn readiness(
    store: &dyn TokenStore,
    upstreams: &[(&str, usize)],
    require: RequireUpstreams,
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
        groups.insert(name.to_string(), json!({ "healthy_peers": healthy }));
    }
    failing.extend(upstream_failures(upstreams, require));
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

/// What the upstreams' health adds to `failing` under `require`.
fn upstream_failures(upstreams: &[(&str, usize)], require: RequireUpstreams) -> Vec<String> {
    let down: Vec<&str> = upstreams
        .iter()
        .filter(|(_, healthy)| *healthy == 0)
        .map(|(name, _)| *name)
        .collect();
    match require {
        RequireUpstreams::None => Vec::new(),
        RequireUpstreams::Any if down.is_empty() || down.len() < upstreams.len() => Vec::new(),
        RequireUpstreams::Any => vec![format!(
            "upstreams: no healthy peer in any of {}",
            down.join(", ")
        )],
        RequireUpstreams::All => down
            .iter()
            .map(|name| format!("upstream {name}: no healthy peer"))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_fail_readiness_only_as_required() {
        let one_down = [("app", 2), ("api", 0)];
        let all_down = [("app", 0), ("api", 0)];
        assert!(upstream_failures(&all_down, RequireUpstreams::None).is_empty());
        assert!(upstream_failures(&one_down, RequireUpstreams::Any).is_empty());
        assert_eq!(
            upstream_failures(&all_down, RequireUpstreams::Any),
            vec!["upstreams: no healthy peer in any of app, api"]
        );
        assert_eq!(
            upstream_failures(&one_down, RequireUpstreams::All),
            vec!["upstream api: no healthy peer"]
        );
        assert!(upstream_failures(&[("app", 1)], RequireUpstreams::All).is_empty());
        // No upstream group at all (no routes): nothing to require.
        assert!(upstream_failures(&[], RequireUpstreams::Any).is_empty());
    }
}
