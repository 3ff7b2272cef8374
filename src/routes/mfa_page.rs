//! The second factor's HTML pages: the code step of a login, enrolment (QR code and secret),
//! the recovery codes shown once, and the status of an enrolled account. Plain forms posted
//! with the page's CSRF field; every value escaped here.

use crate::demo::escape_html;
use crate::respond::pages::document;

/// Inputs of a one-time code: digits on phones, filled from SMS-less authenticators by
/// password managers.
const CODE_INPUT: &str = r#"<label for="code">Code from your authenticator app</label><input id="code" name="code" inputmode="numeric" pattern="[0-9 ]*" autocomplete="one-time-code" maxlength="8" autofocus"#;

fn error_block(error: Option<&str>) -> String {
    error
        .map(|e| {
            format!(
                "<p class=\"error\" role=\"alert\" id=\"mfa-error\">{}</p>",
                escape_html(e)
            )
        })
        .unwrap_or_default()
}

fn hidden(csrf: &str, return_to: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"return_to\" value=\"{}\">",
        escape_html(csrf),
        escape_html(return_to)
    )
}

/// The code step of a login: a code, or (folded away) a recovery code.
pub fn code_step(csrf: &str, return_to: &str, error: Option<&str>) -> String {
    document(
        "Two-step verification",
        &format!(
            r#"<h1>Two-step verification</h1>{error}
<form method="post" action="{action}" id="mfa">
{hidden}
{CODE_INPUT}>
<button type="submit">Verify</button>
</form>
<details><summary>Use a recovery code</summary>
<form method="post" action="{action}" id="recovery">
{hidden}
<label for="recovery_code">Recovery code</label><input id="recovery_code" name="recovery_code" autocomplete="off" maxlength="32">
<button type="submit">Use recovery code</button>
</form></details>
<p class="links"><a href="/auth/login">Start over</a></p>"#,
            error = error_block(error),
            hidden = hidden(csrf, return_to),
            // The page reloads where it was posted: keep where to go next in the address.
            action = escape_html(&format!(
                "/auth/login/mfa?return_to={}",
                form_urlencoded::byte_serialize(return_to.as_bytes()).collect::<String>()
            )),
        ),
    )
}

/// Enrolment: the QR code (`svg`, made by the QR encoder), the secret to type instead, and
/// the form that confirms it with a first code.
pub fn enrol(
    svg: &str,
    secret: &str,
    csrf: &str,
    return_to: &str,
    required: bool,
    error: Option<&str>,
) -> String {
    let why = if required {
        "<p class=\"notice\" role=\"status\">Your account requires two-step verification. Set it up to continue.</p>"
    } else {
        ""
    };
    // The secret in groups of four, as apps display it.
    let grouped: Vec<String> = secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    document(
        "Set up two-step verification",
        &format!(
            r#"<h1>Set up two-step verification</h1>{why}{error}
<p>Scan this code with an authenticator app:</p>
<div class="qr" role="img" aria-label="QR code of your new authenticator secret">{svg}</div>
<p>Or enter this key: <code id="secret" data-secret="{secret}">{grouped}</code></p>
<form method="post" action="/auth/mfa" id="enrol">
{hidden}
{CODE_INPUT}>
<button type="submit" name="action" value="confirm">Turn on</button>
</form>"#,
            error = error_block(error),
            secret = escape_html(secret),
            grouped = escape_html(&grouped.join(" ")),
            hidden = hidden(csrf, return_to),
        ),
    )
}

/// The recovery codes, shown this once.
pub fn recovery_codes(codes: &[String], return_to: &str) -> String {
    let items: String = codes
        .iter()
        .map(|c| format!("<li><code>{}</code></li>", escape_html(c)))
        .collect();
    document(
        "Save your recovery codes",
        &format!(
            r#"<h1>Two-step verification is on</h1>
<p>Save these recovery codes somewhere safe. Each works once, if you lose your authenticator. They are not shown again.</p>
<ol id="recovery-codes">{items}</ol>
<p class="links"><a id="continue" href="{return_to}">Continue</a></p>"#,
            return_to = escape_html(return_to),
        ),
    )
}

/// An enrolled account: how many recovery codes are left, and (when the account may go
/// without) the form that turns it off.
pub fn status(left: usize, csrf: &str, removable: bool, error: Option<&str>) -> String {
    let remove = if removable {
        format!(
            r#"<h2>Turn off</h2>
<form method="post" action="/auth/mfa" id="remove">
{hidden}
{CODE_INPUT}>
<button type="submit" name="action" value="remove">Turn off two-step verification</button>
</form>"#,
            hidden = hidden(csrf, "/auth/mfa"),
        )
    } else {
        "<p>Your account requires it: it cannot be turned off.</p>".to_string()
    };
    document(
        "Two-step verification",
        &format!(
            r#"<h1>Two-step verification</h1>{error}
<p id="mfa-status">Two-step verification is on. {left} recovery codes left.</p>
{remove}
<p class="links"><a href="/auth/account">Your account</a></p>"#,
            error = error_block(error),
        ),
    )
}
