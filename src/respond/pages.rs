//! The gateway's own small HTML pages (login, sign-out, refusals), in one look. They load
//! nothing from elsewhere and carry their style inline, so they render under the default
//! Content-Security-Policy. Every interpolated value is HTML-escaped here or by the caller
//! that builds markup.

use crate::demo::escape_html;

/// The one style sheet of every gateway page, kept here so that no page restates it.
pub const STYLE: &str = "body{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}
main{background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.15);width:100%;max-width:20rem;box-sizing:border-box;margin:1rem}
label{display:block;margin:.8rem 0 .3rem}input[type=email],input[type=password]{width:100%;padding:.5rem;box-sizing:border-box}
button{margin-top:1.2rem;width:100%;padding:.6rem;background:#1f5fbf;color:#fff;border:0;border-radius:4px;font-size:1rem}
a{color:#1f5fbf}.links a{display:inline-block;margin-right:1rem}
.error{color:#a40000;background:#fde8e8;padding:.5rem;border-radius:4px}
.notice{color:#4a3b00;background:#fff4cc;padding:.5rem;border-radius:4px}";

/// A whole page: `title` (escaped here) and `main`, the markup inside `<main>`, which the
/// caller has already escaped.
pub fn document(title: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n<style>\n{STYLE}\n</style></head>\n<body><main>{main}</main></body></html>\n",
        title = escape_html(title),
    )
}

/// A page that only tells something: a heading, one sentence and links `(href, text)`, all
/// escaped here.
pub fn message(title: &str, text: &str, links: &[(&str, &str)]) -> String {
    let links: String = links
        .iter()
        .map(|(href, label)| {
            format!(
                "<a href=\"{}\">{}</a>",
                escape_html(href),
                escape_html(label)
            )
        })
        .collect();
    document(
        title,
        &format!(
            "<h1>{}</h1>\n<p>{}</p>\n<p class=\"links\">{links}</p>",
            escape_html(title),
            escape_html(text)
        ),
    )
}

/// The sign-out page: a form, so that signing out needs the page's CSRF token and no
/// other site can end the session by linking here.
pub fn sign_out(csrf: &str, return_to: &str) -> String {
    document(
        "Sign out",
        &format!(
            "<h1>Sign out</h1>\n<p>End your session in this browser.</p>\n<form method=\"post\" action=\"/auth/logout\" id=\"logout\">\n<input type=\"hidden\" name=\"csrf\" value=\"{}\">\n<input type=\"hidden\" name=\"return_to\" value=\"{}\">\n<button type=\"submit\">Sign out</button>\n</form>",
            escape_html(csrf),
            escape_html(return_to)
        ),
    )
}

/// After the form sign-out: where to go next (a path the caller made safe).
pub fn signed_out(return_to: &str) -> String {
    message(
        "You have signed out",
        "Your session in this browser has ended.",
        &[(return_to, "Continue"), ("/auth/login", "Sign in again")],
    )
}

/// A navigation refused for lack of a role: a person reads this, not a script.
pub fn forbidden() -> String {
    message(
        "Access denied",
        "You do not have access to this page.",
        &[("/", "Home"), ("/auth/logout", "Sign out")],
    )
}

/// A navigation refused as a cross-site request, or a form whose CSRF token did not match.
pub fn cross_site(text: &str) -> String {
    message("Request refused", text, &[("/", "Home")])
}

/// A navigation whose session was ended (signed out elsewhere, or revoked): `login` is the
/// login page that brings the user back here.
pub fn session_ended(login: &str) -> String {
    message(
        "Your session has ended",
        "You were signed out. Sign in again to continue.",
        &[(login, "Sign in again")],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show() {
        let html = sign_out("c\"sr", "/x\"><script>");
        assert!(html.contains("value=\"c&quot;sr\""));
        assert!(!html.contains("<script>"));
        let html = session_ended("/auth/login?return_to=%2F&x=\"<b>");
        assert!(!html.contains("<b>") && html.contains("&amp;x=&quot;&lt;b&gt;"));
        assert!(signed_out("/").contains("You have signed out"));
    }

    #[test]
    fn pages_load_nothing_from_elsewhere() {
        for html in [
            forbidden(),
            cross_site("no"),
            signed_out("/a"),
            sign_out("t", "/"),
        ] {
            assert!(html.contains(STYLE));
            assert!(!html.contains("http://") && !html.contains("https://"));
            assert!(!html.contains("<script") && !html.contains("<link"));
        }
    }
}
