//! The HTML login page: no external assets, works under the default CSP (inline style only),
//! carries its own CSRF token (login CSRF) and the `return_to` it came with.

use crate::demo::escape_html;

/// Render the page. `csrf` goes into the hidden field; `error` is shown above the form.
pub fn render(csrf: &str, return_to: &str, error: Option<&str>, email: &str) -> String {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape_html(e)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in</title>
<style>
body{{font-family:system-ui,sans-serif;background:#f4f5f7;margin:0;display:flex;min-height:100vh;align-items:center;justify-content:center}}
main{{background:#fff;padding:2rem;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.15);width:20rem}}
label{{display:block;margin:.8rem 0 .3rem}}input[type=email],input[type=password]{{width:100%;padding:.5rem;box-sizing:border-box}}
button{{margin-top:1.2rem;width:100%;padding:.6rem;background:#1f5fbf;color:#fff;border:0;border-radius:4px;font-size:1rem}}
.error{{color:#a40000;background:#fde8e8;padding:.5rem;border-radius:4px}}
</style></head>
<body><main><h1>Sign in</h1>{error}
<form method="post" action="/auth/login" id="login">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="return_to" value="{return_to}">
<label for="email">Email</label><input id="email" name="email" type="email" autocomplete="username" required value="{email}">
<label for="password">Password</label><input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form></main></body></html>
"#,
        csrf = escape_html(csrf),
        return_to = escape_html(return_to),
        email = escape_html(email),
    )
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
        let html = render("c\"sr", "/x\"><script>", Some("<b>"), "");
        assert!(html.contains("value=\"c&quot;sr\""));
        assert!(!html.contains("<script>") && html.contains("&lt;b&gt;"));
    }
}
