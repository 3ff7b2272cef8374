//! Security notifications: events a user or an operator should hear about (a sign-in from a
//! new device) POSTed as JSON to `notifications.webhook_url`. Delivery runs beside the
//! request that caused it, never in its way: a few tries with a growing pause, then one
//! warning line (which names neither the URL, that may carry a token, nor the event's data).

use std::time::Duration;

/// Tries per event, and the pause before the first retry (doubled after each).
const TRIES: u32 = 3;
const FIRST_PAUSE: Duration = Duration::from_millis(500);

pub struct Notifier {
    url: Option<String>,
}

impl Notifier {
    pub fn new(url: Option<String>) -> Self {
        Notifier { url }
    }

    /// Send `event` in the background (nothing happens without a webhook URL).
    pub fn send(&self, event: serde_json::Value) {
        let Some(url) = self.url.clone() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn_blocking(move || deliver(&url, &event.to_string()));
    }
}

fn deliver(url: &str, body: &str) {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut pause = FIRST_PAUSE;
    for attempt in 1..=TRIES {
        let sent = agent
            .post(url)
            .header("Content-Type", "application/json")
            .header("User-Agent", "portcullis-webhook")
            .send(body);
        match sent {
            Ok(r) if r.status().is_success() => return,
            Ok(r) if attempt == TRIES => {
                tracing::warn!(target: "portcullis::notify", status = r.status().as_u16(), attempts = attempt, "webhook refused the notification; given up");
            }
            Err(e) if attempt == TRIES => {
                tracing::warn!(target: "portcullis::notify", error = e.to_string().split(':').next().unwrap_or("error"), attempts = attempt, "webhook unreachable; notification given up");
            }
            _ => {
                std::thread::sleep(pause);
                pause *= 2;
            }
        }
    }
}
