//! The HTML login page: no external assets, works under the default CSP (inline style only),
//! carries its own CSRF token (login CSRF) and the `return_to` it came with. The CSRF token
//! and `return_to` handling here serve every form page of `/auth/*`.

use super::Endpoints;
use crate::auth::cookie_value;
use crate::auth::cookies;
use crate::demo::escape_html;
use crate::respond::pages::document;
use crate::tokens::access::random_id;
use http::HeaderValue;
use pingora::http::RequestHeader;

/// How the login asked: a step-up (`step_up=1`) of the session the browser holds, and whether
/// what was missing is a code (`mfa=1`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Asked {
    pub step_up: bool,
    pub code: bool,
}

/// What the login page shows besides its form.
#[derive(Default)]
pub struct LoginView<'a> {
    /// `login_page.title`: names the application.
    pub title: &'a str,
    /// Shown above the form, announced to screen readers (`role="alert"`).
    pub error: Option<&'a str>,
    /// A calmer note above the form (`role="status"`): the session ended.
    pub notice: Option<&'a str>,
    /// The email typed last time.
    pub email: &'a str,
    /// A step-up, kept in hidden fields.
    pub asked: Asked,
}

/// The notice a `session_expired=1` login page shows.
pub const SESSION_EXPIRED: &str = "Your session has expired. Please sign in again.";

/// Render the page. `csrf` goes into the hidden field. The first field with something to fix
/// gets the focus: the password after an error (the email is kept), else the email.
pub fn render(csrf: &str, return_to: &str, view: &LoginView<'_>) -> String {
    let error = view
        .error
        .map(|e| {
            format!(
                "<p class=\"error\" role=\"alert\" id=\"login-error\">{}</p>",
                escape_html(e)
            )
        })
        .unwrap_or_default();
    let notice = view
        .notice
        .map(|n| format!("<p class=\"notice\" role=\"status\">{}</p>", escape_html(n)))
        .unwrap_or_default();
    let described = if view.error.is_some() {
        " aria-describedby=\"login-error\" aria-invalid=\"true\""
    } else {
        ""
    };
    let (email_focus, password_focus) = if view.error.is_some() && !view.email.is_empty() {
        ("", " autofocus")
    } else {
        (" autofocus", "")
    };
    let title = if view.title.is_empty() {
        "Sign in"
    } else {
        view.title
    };
    document(
        title,
        &format!(
            r#"<h1>{title}</h1>{notice}{error}
<form method="post" action="/auth/login" id="login">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="return_to" value="{return_to}">{step_up}
<label for="email">Email</label><input id="email" name="email" type="email" autocomplete="username" required value="{email}"{email_focus}{described}>
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required{password_focus}{described}>
<button type="submit">Sign in</button>
</form>"#,
            title = escape_html(title),
            csrf = escape_html(csrf),
            return_to = escape_html(return_to),
            email = escape_html(view.email),
            step_up = match (view.asked.step_up, view.asked.code) {
                (false, _) => "",
                (true, false) => "\n<input type=\"hidden\" name=\"step_up\" value=\"1\">",
                (true, true) => "\n<input type=\"hidden\" name=\"step_up\" value=\"1\"><input type=\"hidden\" name=\"mfa\" value=\"1\">",
            },
        ),
    )
}

/// The CSRF token a page's form carries: the CSRF cookie's when it looks like one of ours,
/// else a new one, returned with the `Set-Cookie` that makes the browser hold it (a form
/// post is checked against the cookie).
pub fn page_csrf(ep: &Endpoints, req: &RequestHeader) -> (String, Option<HeaderValue>) {
    let config = &ep.auth.config;
    let c = &config.cookies;
    match cookie_value(req, &c.csrf_name) {
        Some(Some(v))
            if v.len() >= 32
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            (v.to_string(), None)
        }
        _ => {
            let csrf = random_id(32);
            let max_age = config.tokens.session_max_lifetime.as_secs();
            let set = cookies::set(c, &c.csrf_name, &csrf, max_age, false);
            (csrf, Some(set))
        }
    }
}

/// The `return_to` of a page's query, made safe.
pub fn query_return_to(req: &RequestHeader) -> String {
    let found = req.uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "return_to")
            .map(|(_, v)| v.into_owned())
    });
    safe_return_to(found.as_deref().unwrap_or("/"))
}

/// A same-origin relative path, or `/`. Refuses `//host`, `/\host`, schemes and control bytes.
pub fn safe_return_to(candidate: &str) -> String {
    let ok = candidate.starts_with('/')
        && !candidate.starts_with("//")
        && !candidate.contains('\\')
        && candidate.len() <= 2048
        && !candidate.bytes().any(|b| b < 0x20 || b == 0x7f);
    if ok {
        candidate.to_string()
    } else {
        "/".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_to_is_same_origin_only() {
        assert_eq!(safe_return_to("/app?x=1"), "/app?x=1");
        for bad in [
            "https://evil.test/",
            "//evil.test",
            "/\\evil.test",
            "javascript:alert(1)",
            "",
            "/a\r\nb",
        ] {
            assert_eq!(safe_return_to(bad), "/", "{bad}");
        }
    }

    #[test]
    fn page_escapes_values() {
        let view = LoginView {
            title: "<App>",
            error: Some("<b>"),
            ..LoginView::default()
        };
        let html = render("c\"sr", "/x\"><script>", &view);
        assert!(html.contains("<h1>&lt;App&gt;</h1>"));
        assert!(html.contains("value=\"c&quot;sr\""));
        assert!(!html.contains("<script>") && html.contains("&lt;b&gt;"));
    }
}
