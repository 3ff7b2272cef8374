//! SIGTERM: in-flight requests finish, then the process exits cleanly.

use crate::harness::*;
use std::time::{Duration, Instant};

#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    let up = Upstream::start();
    let mut gw = Gateway::start(&format!(
        "server:\n  listen: [\"127.0.0.1:{{PORT}}\"]\n  grace_period: 3s\nupstreams:\n  app: {{ addresses: [\"{}\"] }}\nroutes:\n  - {{ path_prefix: /, upstream: app, auth: public }}\n",
        up.addr
    ));
    let url = gw.url("/slow?ms=1500");
    let slow = std::thread::spawn(move || get(&url, &[]));
    // Let the request reach the upstream before the signal.
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.count() == 0 {
        assert!(Instant::now() < deadline, "slow request never arrived");
        std::thread::sleep(Duration::from_millis(10));
    }
    gw.signal("TERM");
    let r = slow.join().unwrap();
    assert_eq!(r.status, 200, "in-flight request completed: {}", r.body);
    assert!(r.body.contains("/slow?ms=1500"));
    let status = gw.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "clean exit: {status}");
    // New connections are refused once it has gone.
    assert!(raw_get(gw.port, "/healthz").is_err());
}
