//! The second factor's endpoints: the code step of a login (`POST /auth/login/mfa`),
//! enrolment and removal (`GET`/`POST /auth/mfa`, the page and its forms;
//! `POST`/`DELETE /auth/mfa/totp`, JSON), and what a right password leads to
//! ([`after_password`]): the session at once, the code step, or enrolment first.
//!
//! Between the password and the code only the `pc_mfa` cookie exists: no access or refresh
//! cookie is set until the code is right. Every wrong code counts in the same throttling
//! buckets as a wrong password (the account's included), and is audited.

use super::login_page::{page_csrf, safe_return_to, Asked};
use super::mfa_page;
use super::signin::finish;
use super::{is_form, json_or_empty, with_cookies, Call, Endpoints};
use crate::auth::cookies::{self, csrf_header_ok, secure_eq};
use crate::auth::mfa::{Entered, MfaError, Pending, SecondFactor, Verdict, PENDING_TTL};
use crate::auth::ratelimit::{login_buckets, throttle};
use crate::auth::sessions::token_hash;
use crate::auth::users::User;
use crate::auth::{cookie_value, is_navigation, verify_request, Identity};
use crate::respond::{self, LocalResponse};
use crate::store::{Account, Family};
use http::header::{LOCATION, RETRY_AFTER, SET_COOKIE};
use http::{HeaderValue, Method};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// What a login needs after the password was right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing: the session (or the step-up) completes now.
    Done,
    /// A code: only the `pc_mfa` cookie is set.
    Code,
    /// Enrolment first (the account must use a second factor and has none): `pc_mfa` carries
    /// the login to the enrolment page, which completes it.
    Enrol,
    /// A signed-in user whose route wants a code they have no authenticator for: the step-up completes
    /// with the password, then the enrolment page.
    EnrolAfter,
}

/// The browser's live session of `user`, when the login is a step-up of it.
pub async fn step_up_session(ep: &Endpoints, call: &Call<'_>, user: &User) -> Option<Family> {
    let c = &ep.auth.config.cookies;
    let refresh = cookie_value(call.req, &c.refresh_name)??;
    if refresh.len() > 256 {
        return None;
    }
    let hash = token_hash(refresh);
    let f = ep.auth.store.family_of(&hash).await.ok()??;
    let now = ep.auth.tokens.clock.now();
    let held = f.current == hash || f.previous.as_deref() == Some(hash.as_str());
    (f.user == user.id && !f.revoked && f.expires_at() > now && held).then_some(f)
}

/// What a right password for `user` leads to.
pub async fn after_password(
    ep: &Endpoints,
    user: &User,
    asked: Asked,
    session: Option<&Family>,
) -> Result<Next, LocalResponse> {
    let Some(mfa) = &ep.auth.mfa else {
        return Ok(Next::Done);
    };
    let enrolled = mfa
        .enrolled(&user.id)
        .await
        .map_err(|_| respond::store_unavailable())?;
    Ok(if enrolled {
        Next::Code
    } else if session.is_some() && (mfa.required(user) || asked.code) {
        Next::EnrolAfter
    } else if mfa.required(user) {
        Next::Enrol
    } else {
        Next::Done
    })
}

/// The `pc_mfa` cookie carrying a login to its code step (or to enrolment).
pub fn pending_cookie(
    ep: &Endpoints,
    mfa: &SecondFactor,
    user: &str,
    sid: Option<&str>,
) -> HeaderValue {
    let c = &ep.auth.config.cookies;
    cookies::set(
        c,
        &c.mfa_name,
        &mfa.pending_cookie(user, sid),
        PENDING_TTL,
        true,
    )
}

fn clear_pending(ep: &Endpoints) -> HeaderValue {
    cookies::clear(
        &ep.auth.config.cookies,
        &ep.auth.config.cookies.mfa_name,
        true,
    )
}

/// The CSRF cookie to set with `pc_mfa`, when the browser has none (a JSON login): the code
/// step is cookie-authenticated, so it needs the header.
pub fn csrf_for_code_step(ep: &Endpoints, call: &Call<'_>) -> Option<HeaderValue> {
    let (_, set) = page_csrf(ep, call.req);
    set
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeJson {
    code: Option<String>,
    recovery_code: Option<String>,
}

/// A code as posted: JSON `{"code"}` or `{"recovery_code"}`, or the same form fields (with
/// `csrf` and `return_to`).
struct Posted {
    code: Option<String>,
    recovery: Option<String>,
    csrf: String,
    return_to: String,
    action: String,
}

fn posted(call: &Call<'_>) -> Result<Posted, LocalResponse> {
    const BAD: &str = "expected a JSON object with a \"code\" (or \"recovery_code\") string";
    let mut p = Posted {
        code: None,
        recovery: None,
        csrf: String::new(),
        return_to: "/".into(),
        action: String::new(),
    };
    if is_form(call.req) {
        for (k, v) in form_urlencoded::parse(call.body) {
            match k.as_ref() {
                "code" if !v.trim().is_empty() => p.code = Some(v.into_owned()),
                "recovery_code" if !v.trim().is_empty() => p.recovery = Some(v.into_owned()),
                "csrf" => p.csrf = v.into_owned(),
                "return_to" => p.return_to = v.into_owned(),
                "action" => p.action = v.into_owned(),
                _ => {}
            }
        }
        p.return_to = safe_return_to(&p.return_to);
    } else {
        json_or_empty(call)?;
        let j: CodeJson =
            serde_json::from_slice(call.body).map_err(|_| respond::bad_request(BAD))?;
        p.code = j.code;
        p.recovery = j.recovery_code;
    }
    let too_long = |s: &Option<String>| s.as_ref().is_some_and(|s| s.len() > 64);
    if too_long(&p.code) || too_long(&p.recovery) {
        return Err(respond::bad_request("the code is too long"));
    }
    Ok(p)
}

impl Posted {
    fn entered(&self) -> Option<Entered<'_>> {
        match (&self.code, &self.recovery) {
            (Some(c), _) => Some(Entered::Code(c)),
            (None, Some(r)) => Some(Entered::Recovery(r)),
            (None, None) => None,
        }
    }
}

/// The form's CSRF field against the cookie, or (JSON) the header.
fn csrf_ok(
    ep: &Endpoints,
    call: &Call<'_>,
    p: &Posted,
    endpoint: &str,
) -> Result<(), LocalResponse> {
    let c = &ep.auth.config.cookies;
    let ok = if is_form(call.req) {
        let cookie = cookie_value(call.req, &c.csrf_name).flatten().unwrap_or("");
        secure_eq(&p.csrf, cookie)
    } else {
        csrf_header_ok(call.req, c)
    };
    if ok {
        return Ok(());
    }
    super::audit_csrf(ep, call, endpoint);
    Err(respond::csrf(if is_form(call.req) {
        "the form expired; reload the page and try again"
    } else {
        "missing or wrong X-CSRF-Token header"
    }))
}

fn counted(ep: &Endpoints, result: &str) {
    ep.metrics.mfa.with_label_values(&[result]).inc();
}

/// Why a code was not taken.
enum Refusal {
    Limited(u64),
    Invalid,
    Unavailable,
}

impl Refusal {
    fn json(&self) -> LocalResponse {
        match self {
            Refusal::Limited(retry) => respond::too_many(*retry),
            Refusal::Invalid => {
                LocalResponse::error(401, "invalid_code", "the code is wrong or was already used")
            }
            Refusal::Unavailable => respond::store_unavailable(),
        }
    }

    fn message(&self) -> &'static str {
        match self {
            Refusal::Limited(_) => "Too many attempts. Try again later.",
            Refusal::Invalid => "That code is wrong or was already used. Try the next one.",
            Refusal::Unavailable => "Sign-in is unavailable. Try again shortly.",
        }
    }

    fn status(&self) -> u16 {
        match self {
            Refusal::Limited(_) => 429,
            Refusal::Invalid => 401,
            Refusal::Unavailable => 503,
        }
    }
}

/// Check `entered` for `user`, throttled like a password (every bucket of the account, not
/// its browsers' device buckets: whoever is here already knew the password), audited and
/// counted. `stage` names the step for the audit line.
async fn check_code(
    ep: &Endpoints,
    call: &Call<'_>,
    mfa: &SecondFactor,
    user: &User,
    entered: Entered<'_>,
    stage: &str,
) -> Result<Verdict, Refusal> {
    let state = &*ep.auth;
    let now = state.tokens.clock.now();
    let account = Account::User(user.id.clone());
    let buckets = login_buckets(&state.config.rate_limits, &account, call.client, None);
    let store = state.store.as_ref();
    let (client_ip, request_id, user_agent) = (call.client, call.request_id, call.user_agent);
    match throttle(store, &buckets, now, false).await {
        Ok(Ok(())) => {}
        Ok(Err(limited)) => {
            counted(ep, "rate_limited");
            tracing::warn!(target: "portcullis::audit", event = "login_rate_limited", user = %user.id, reason = limited.bucket, retry_after = limited.retry_after, stage, client_ip, request_id, user_agent);
            return Err(Refusal::Limited(limited.retry_after));
        }
        Err(_) => return Err(Refusal::Unavailable),
    }
    let recovery = matches!(entered, Entered::Recovery(_));
    let verdict = match mfa.verify(user, entered).await {
        Ok(v) => v,
        Err(MfaError::Store(_)) => return Err(Refusal::Unavailable),
        Err(e @ MfaError::Sealed) => {
            tracing::error!(target: "portcullis::mfa", user = %user.id, error = %e, "second factor unusable");
            return Err(Refusal::Unavailable);
        }
    };
    match verdict {
        Verdict::Code => counted(ep, "success"),
        Verdict::Recovery => {
            counted(ep, "recovery");
            let left = mfa
                .record(&user.id)
                .await
                .ok()
                .flatten()
                .map_or(0, |r| r.recovery.len());
            tracing::warn!(target: "portcullis::audit", event = "recovery_code_used", user = %user.id, recovery_codes_left = left, stage, client_ip, request_id, user_agent);
        }
        Verdict::Replay | Verdict::Wrong => {
            let reason = match (verdict, recovery) {
                (Verdict::Replay, _) => "replay",
                (_, true) => "wrong_recovery_code",
                _ => "wrong_code",
            };
            counted(
                ep,
                if verdict == Verdict::Replay {
                    "replay"
                } else {
                    "wrong_code"
                },
            );
            tracing::warn!(target: "portcullis::audit", event = "mfa_failed", user = %user.id, reason, stage, client_ip, request_id, user_agent);
            if throttle(store, &buckets, now, true).await.is_err() {
                return Err(Refusal::Unavailable);
            }
            return Err(Refusal::Invalid);
        }
    }
    Ok(verdict)
}

/// The login a `pc_mfa` cookie carries, with its user (still allowed to sign in).
fn pending_login(ep: &Endpoints, call: &Call<'_>) -> Option<(Pending, Arc<User>)> {
    let mfa = ep.auth.mfa.as_ref()?;
    let cookie = cookie_value(call.req, &ep.auth.config.cookies.mfa_name)??;
    let pending = mfa.pending(cookie)?;
    let user = ep.auth.sessions.users.by_id(&pending.user)?;
    (!user.disabled).then_some((pending, user))
}

const EXPIRED: &str = "the sign-in expired or was not started here; sign in again";

/// Mark the pending login `pending` as completed: `false` when it already was (a copy of its
/// cookie). The store remembers its nonce, atomically on every instance, until the cookie
/// would have expired anyway.
async fn complete_once(
    ep: &Endpoints,
    user: &str,
    pending: &Pending,
) -> Result<bool, crate::store::StoreError> {
    let now = ep.auth.tokens.clock.now();
    let once = format!("pc_mfa|{}", pending.nonce);
    let seen = ep
        .auth
        .store
        .remember_device(user, &once, now, PENDING_TTL)
        .await?;
    Ok(!seen)
}

/// `POST /auth/login/mfa`: the code step of a login (JSON or the code page's form).
pub async fn login_code(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    let form = is_form(call.req);
    let p = match posted(call) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (Some(mfa), Some((pending, user))) = (&ep.auth.mfa, pending_login(ep, call)) else {
        counted(ep, "expired");
        if form {
            return to_login(&p.return_to);
        }
        return LocalResponse::error(401, "mfa_login_expired", EXPIRED)
            .header(SET_COOKIE, clear_pending(ep));
    };
    if let Err(r) = csrf_ok(ep, call, &p, "/auth/login/mfa") {
        return r;
    }
    let again = |status: u16, message: &str| {
        let (csrf, set) = page_csrf(ep, call.req);
        let mut r = LocalResponse::html(
            status,
            mfa_page::code_step(&csrf, &p.return_to, Some(message)),
        );
        if let Some(set) = set {
            r = r.header(SET_COOKIE, set);
        }
        r
    };
    let Some(entered) = p.entered() else {
        if form {
            return again(400, "Enter the code from your authenticator app.");
        }
        return respond::bad_request("expected a \"code\" or a \"recovery_code\"");
    };
    if let Err(refusal) = check_code(ep, call, mfa, &user, entered, "login").await {
        if form {
            let r = again(refusal.status(), refusal.message());
            return match refusal {
                Refusal::Limited(retry) => r.header(RETRY_AFTER, HeaderValue::from(retry)),
                _ => r,
            };
        }
        return refusal.json();
    }
    // One login per password step: a copied pc_mfa cookie, even with a fresh code, starts no
    // second session.
    match complete_once(ep, &user.id, &pending).await {
        Ok(true) => {}
        Ok(false) => {
            counted(ep, "expired");
            if form {
                return to_login(&p.return_to);
            }
            return LocalResponse::error(401, "mfa_login_expired", EXPIRED)
                .header(SET_COOKIE, clear_pending(ep));
        }
        Err(_) => return respond::store_unavailable(),
    }
    let session = match &pending.sid {
        Some(sid) => ep
            .auth
            .store
            .family(sid)
            .await
            .ok()
            .flatten()
            .filter(|f| f.user == user.id && !f.revoked),
        None => None,
    };
    let device = match session {
        Some(_) => None,
        None => super::signin::device_for(ep, call, &user.id).await,
    };
    let finished = match finish(ep, call, user, session, &["pwd", "otp"], device).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let mut cookies = finished.cookies;
    cookies.push(clear_pending(ep));
    if form {
        let location = HeaderValue::from_str(&p.return_to).unwrap_or(HeaderValue::from_static("/"));
        let r = LocalResponse::new(303, "text/plain; charset=utf-8", "").header(LOCATION, location);
        return with_cookies(r, cookies);
    }
    with_cookies(LocalResponse::json(200, &finished.body), cookies)
}

/// `GET /auth/login/mfa` (a reload of the code page after a refused code): the code page
/// while the login waits for its code, else the login page.
fn code_page(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    let return_to = super::login_page::query_return_to(call.req);
    if pending_login(ep, call).is_none() {
        return to_login(&return_to);
    }
    let (csrf, set) = page_csrf(ep, call.req);
    let r = LocalResponse::html(200, mfa_page::code_step(&csrf, &return_to, None));
    match set {
        Some(set) => r.header(SET_COOKIE, set),
        None => r,
    }
}

/// The login page again (the code step's form after its login expired).
fn to_login(return_to: &str) -> LocalResponse {
    let location = respond::login_url(return_to);
    let location =
        HeaderValue::from_str(&location).unwrap_or(HeaderValue::from_static("/auth/login"));
    LocalResponse::new(303, "text/plain; charset=utf-8", "").header(LOCATION, location)
}

/// Who is enrolling or managing their second factor.
enum Caller {
    /// Signed in.
    Session(Identity, Arc<User>),
    /// Between the password and enrolment (an account that must use a second factor).
    Pending(Pending, Arc<User>),
}

impl Caller {
    fn user(&self) -> &Arc<User> {
        match self {
            Caller::Session(_, u) | Caller::Pending(_, u) => u,
        }
    }

    /// Who a pending secret is shown to: this session, or this pending login.
    fn owner(&self) -> &str {
        match self {
            Caller::Session(identity, _) => &identity.sid,
            Caller::Pending(pending, _) => &pending.nonce,
        }
    }
}

async fn caller(ep: &Endpoints, call: &Call<'_>) -> Option<Caller> {
    if let Ok(identity) = verify_request(&ep.auth, call.req).await {
        let user = ep.auth.sessions.users.by_id(&identity.sub)?;
        if identity.sid.is_empty() || user.disabled {
            return None;
        }
        return Some(Caller::Session(identity, user));
    }
    // Between the password and a code only an account that must enrol and has no secret
    // may enrol: anyone else there has proved the password alone, and must not replace the
    // secret that guards the account. A step-up's pending login has a session: that session
    // enrols, signed in.
    let (pending, user) = pending_login(ep, call)?;
    let mfa = ep.auth.mfa.as_ref()?;
    if pending.sid.is_some() || !mfa.required(&user) {
        return None;
    }
    match mfa.enrolled(&user.id).await {
        Ok(false) => Some(Caller::Pending(pending, user)),
        _ => None,
    }
}

fn not_configured() -> LocalResponse {
    respond::not_found("two-step verification is not configured on this gateway")
}

fn sign_in_first(call: &Call<'_>) -> LocalResponse {
    if is_navigation(call.req) {
        let location = respond::login_url("/auth/mfa");
        return LocalResponse::new(302, "text/plain; charset=utf-8", "")
            .header(LOCATION, HeaderValue::from_str(&location).expect("ASCII"));
    }
    respond::unauthorized("token_required", "authentication required", false)
}

/// `GET /auth/mfa`: enrolment (QR code and secret) or the enrolled account's status; JSON
/// (`Accept: application/json`) for scripts: `{"enrolled", "secret", "otpauth_uri"}`.
pub async fn page(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    let Some(mfa) = &ep.auth.mfa else {
        return not_configured();
    };
    let Some(caller) = caller(ep, call).await else {
        return sign_in_first(call);
    };
    let return_to = super::login_page::query_return_to(call.req);
    show(ep, call, mfa, &caller, &return_to, None).await
}

fn wants_json(call: &Call<'_>) -> bool {
    call.req
        .headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
}

async fn show(
    ep: &Endpoints,
    call: &Call<'_>,
    mfa: &SecondFactor,
    caller: &Caller,
    return_to: &str,
    refused: Option<&Failed>,
) -> LocalResponse {
    let user = caller.user();
    let record = match mfa.record(&user.id).await {
        Ok(r) => r,
        Err(_) => return respond::store_unavailable(),
    };
    let (csrf, set) = page_csrf(ep, call.req);
    // The page again, with the refusal's status (401 wrong code, 429 throttled, ...) and
    // its message.
    let status = refused.map_or(200, |(r, _)| r.status);
    let error = refused.map(|(_, message)| *message);
    let r = match record.filter(|r| r.enrolled()) {
        Some(r) => {
            if wants_json(call) {
                LocalResponse::json(
                    200,
                    &json!({ "enrolled": true, "recovery_codes_left": r.recovery.len(), "required": mfa.required(user) }),
                )
            } else {
                LocalResponse::html(
                    status,
                    mfa_page::status(r.recovery.len(), &csrf, !mfa.required(user), error),
                )
            }
        }
        None => {
            let e = match mfa.begin(user, caller.owner()).await {
                Ok(e) => e,
                Err(_) => return respond::store_unavailable(),
            };
            if wants_json(call) {
                LocalResponse::json(
                    200,
                    &json!({ "enrolled": false, "secret": e.secret, "otpauth_uri": e.uri, "required": mfa.required(user) }),
                )
            } else {
                let svg = crate::auth::mfa::qr_svg(&e.uri);
                LocalResponse::html(
                    status,
                    mfa_page::enrol(&svg, &e.secret, &csrf, return_to, mfa.required(user), error),
                )
            }
        }
    };
    let mut r = match set {
        Some(set) => r.header(SET_COOKIE, set),
        None => r,
    };
    // A throttled form says when to try again, as the JSON answer does.
    if let Some((refusal, _)) = refused {
        r.headers.extend(
            refusal
                .headers
                .iter()
                .filter(|(n, _)| n == RETRY_AFTER)
                .cloned(),
        );
    }
    r
}

/// What every change to the second factor starts with: it is configured, the caller is
/// signed in (or must enrol), the body reads, and its CSRF token matches.
async fn opening<'e>(
    ep: &'e Endpoints,
    call: &Call<'_>,
    endpoint: &str,
) -> Result<(&'e SecondFactor, Caller, Posted), LocalResponse> {
    let mfa = ep.auth.mfa.as_ref().ok_or_else(not_configured)?;
    let Some(caller) = caller(ep, call).await else {
        return Err(if is_form(call.req) {
            sign_in_first(call)
        } else {
            respond::unauthorized("token_required", "authentication required", false)
        });
    };
    let p = posted(call)?;
    csrf_ok(ep, call, &p, endpoint)?;
    Ok((mfa, caller, p))
}

/// `POST /auth/mfa`: the page's forms (`action=confirm` with the first code, or
/// `action=remove`).
pub async fn form(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    let (mfa, caller, p) = match opening(ep, call, "/auth/mfa").await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let code = p.code.clone().unwrap_or_default();
    match p.action.as_str() {
        "remove" => match remove(ep, call, mfa, &caller, &p).await {
            Ok(()) => LocalResponse::html(
                200,
                crate::respond::pages::message(
                    "Two-step verification is off",
                    "Your account no longer asks for a code.",
                    &[("/auth/account", "Your account")],
                ),
            ),
            Err(refused) => show(ep, call, mfa, &caller, "/auth/mfa", Some(&refused)).await,
        },
        _ => match confirm(ep, call, mfa, &caller, &code).await {
            Ok((codes, cookies)) => with_cookies(
                LocalResponse::html(200, mfa_page::recovery_codes(&codes, &p.return_to)),
                cookies.0,
            ),
            Err(refused) => show(ep, call, mfa, &caller, &p.return_to, Some(&refused)).await,
        },
    }
}

/// `POST /auth/mfa/totp` `{"code"}`: confirm the secret `GET /auth/mfa` showed; 200
/// `{"recovery_codes": [...]}` (with the login's answer and cookies when it completed one).
pub async fn confirm_json(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    let (mfa, caller, p) = match opening(ep, call, "/auth/mfa/totp").await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let Some(code) = p.code.as_deref() else {
        return respond::bad_request("expected a JSON object with a \"code\" string");
    };
    match confirm(ep, call, mfa, &caller, code).await {
        Ok((codes, cookies)) => {
            let mut body = json!({ "recovery_codes": codes });
            if let Some(login) = cookies.1 {
                body.as_object_mut()
                    .expect("an object")
                    .extend(login.as_object().cloned().unwrap_or_default());
            }
            with_cookies(LocalResponse::json(200, &body), cookies.0)
        }
        Err((r, _)) => r,
    }
}

type Failed = (LocalResponse, &'static str);

/// Confirm enrolment with `code`: the recovery codes, and the cookies (and JSON answer) of
/// the login or step-up it completes.
async fn confirm(
    ep: &Endpoints,
    call: &Call<'_>,
    mfa: &SecondFactor,
    caller: &Caller,
    code: &str,
) -> Result<(Vec<String>, CookiesAndLogin), Failed> {
    let user = caller.user().clone();
    let state = &*ep.auth;
    let now = state.tokens.clock.now();
    let account = Account::User(user.id.clone());
    let buckets = login_buckets(&state.config.rate_limits, &account, call.client, None);
    let limited = |retry: u64| (respond::too_many(retry), Refusal::Limited(retry).message());
    match throttle(state.store.as_ref(), &buckets, now, false).await {
        Ok(Ok(())) => {}
        Ok(Err(l)) => return Err(limited(l.retry_after)),
        Err(_) => return Err((respond::store_unavailable(), Refusal::Unavailable.message())),
    }
    let codes = match mfa.confirm(&user, caller.owner(), code).await {
        Ok(Some(codes)) => codes,
        Ok(None) => {
            counted(ep, "wrong_code");
            tracing::warn!(target: "portcullis::audit", event = "mfa_failed", user = %user.id, reason = "wrong_code", stage = "enrolment", client_ip = %call.client, request_id = call.request_id, user_agent = call.user_agent);
            let _ = throttle(state.store.as_ref(), &buckets, now, true).await;
            let already = matches!(mfa.record(&user.id).await, Ok(Some(r)) if r.enrolled() && r.pending.is_none());
            if already {
                return Err((
                    LocalResponse::error(
                        409,
                        "already_enrolled",
                        "two-step verification is already on",
                    ),
                    "Two-step verification is already on.",
                ));
            }
            return Err((
                Refusal::Invalid.json(),
                "That code is wrong. Check the time on your phone and try the next code.",
            ));
        }
        Err(_) => return Err((respond::store_unavailable(), Refusal::Unavailable.message())),
    };
    counted(ep, "enrolled");
    tracing::warn!(target: "portcullis::audit", event = "mfa_enrolled", user = %user.id, client_ip = %call.client, request_id = call.request_id, user_agent = call.user_agent);
    end_password_only_sessions(ep, &user.id, caller).await;
    // The code entered here counts for this session (or completes the pending login).
    let done = match caller {
        Caller::Session(identity, _) => {
            let family = state.store.family(&identity.sid).await.ok().flatten();
            match family {
                Some(f) if !f.revoked => {
                    let finished =
                        finish(ep, call, user.clone(), Some(f), &["pwd", "otp"], None).await;
                    finished.ok()
                }
                _ => None,
            }
        }
        Caller::Pending(pending, _) => {
            // The pending login completes here, once: its cookie no longer works at the code
            // step.
            match complete_once(ep, &user.id, pending).await {
                Ok(true) => {
                    let device = super::signin::device_for(ep, call, &user.id).await;
                    let finished =
                        finish(ep, call, user.clone(), None, &["pwd", "otp"], device).await;
                    match finished {
                        Ok(mut f) => {
                            f.cookies.push(clear_pending(ep));
                            Some(f)
                        }
                        Err(r) => return Err((r, Refusal::Unavailable.message())),
                    }
                }
                Ok(false) => None,
                Err(_) => {
                    return Err((respond::store_unavailable(), Refusal::Unavailable.message()))
                }
            }
        }
    };
    Ok(match done {
        Some(f) => (codes, (f.cookies, Some(f.body))),
        None => (codes, (Vec::new(), None)),
    })
}

/// Once an account has a second factor, sessions that only ever proved the password (someone
/// else's, perhaps: the reason to turn it on) end; the enrolling one stays. A store failure
/// leaves them, logged: the enrolment stands.
async fn end_password_only_sessions(ep: &Endpoints, user: &str, caller: &Caller) {
    let state = &*ep.auth;
    let keep = match caller {
        Caller::Session(identity, _) => identity.sid.as_str(),
        Caller::Pending(..) => "",
    };
    let now = state.tokens.clock.now();
    let Ok(sessions) = state.store.sessions_of(user, now).await else {
        tracing::warn!(target: "portcullis::store", user, "cannot list the sessions to end after an enrolment");
        return;
    };
    let mut ended = 0;
    for f in sessions.iter().filter(|f| f.sid != keep && !f.otp()) {
        if state.sessions.revoke_family(&f.sid).await.is_ok() {
            ended += 1;
        }
    }
    if ended > 0 {
        tracing::info!(target: "portcullis::audit", event = "sessions_ended", reason = "mfa_enrolled", user, sessions = ended);
    }
}

/// Cookies to set, and the login's JSON answer when a login or step-up completed.
type CookiesAndLogin = (Vec<HeaderValue>, Option<serde_json::Value>);

/// `DELETE /auth/mfa/totp` `{"code"}` (or `{"recovery_code"}`): turn the second factor off,
/// unless the account must use one.
pub async fn remove_json(ep: &Endpoints, call: &Call<'_>) -> LocalResponse {
    let (mfa, caller, p) = match opening(ep, call, "/auth/mfa/totp").await {
        Ok(o) => o,
        Err(r) => return r,
    };
    match remove(ep, call, mfa, &caller, &p).await {
        Ok(()) => LocalResponse::json(200, &json!({ "ok": true })),
        Err((r, _)) => r,
    }
}

async fn remove(
    ep: &Endpoints,
    call: &Call<'_>,
    mfa: &SecondFactor,
    caller: &Caller,
    p: &Posted,
) -> Result<(), Failed> {
    let Caller::Session(_, user) = caller else {
        return Err((
            respond::unauthorized("token_required", "authentication required", false),
            "Sign in first.",
        ));
    };
    if mfa.required(user) {
        return Err((
            LocalResponse::error(
                403,
                "mfa_required",
                "your account requires two-step verification",
            ),
            "Your account requires two-step verification.",
        ));
    }
    let Some(entered) = p.entered() else {
        return Err((
            respond::bad_request("expected a JSON object with a \"code\" string"),
            "Enter a code to turn it off.",
        ));
    };
    if let Err(refusal) = check_code(ep, call, mfa, user, entered, "removal").await {
        return Err((refusal.json(), refusal.message()));
    }
    if mfa.remove(&user.id).await.is_err() {
        return Err((respond::store_unavailable(), Refusal::Unavailable.message()));
    }
    counted(ep, "removed");
    tracing::warn!(target: "portcullis::audit", event = "mfa_removed", user = %user.id, client_ip = %call.client, request_id = call.request_id, user_agent = call.user_agent);
    Ok(())
}

/// Dispatch of `/auth/mfa` and `/auth/mfa/totp`.
pub async fn answer(ep: &Endpoints, call: &Call<'_>, path: &str) -> LocalResponse {
    match (path, &call.req.method) {
        ("/auth/mfa", &Method::GET) => page(ep, call).await,
        ("/auth/mfa", &Method::POST) if is_form(call.req) => form(ep, call).await,
        ("/auth/mfa", &Method::POST) => respond::unsupported_media_type("send the page's form"),
        ("/auth/mfa", _) => respond::method_not_allowed("GET, POST"),
        ("/auth/mfa/totp", &Method::POST) => confirm_json(ep, call).await,
        ("/auth/mfa/totp", &Method::DELETE) => remove_json(ep, call).await,
        ("/auth/mfa/totp", _) => respond::method_not_allowed("POST, DELETE"),
        ("/auth/login/mfa", &Method::POST) => login_code(ep, call).await,
        ("/auth/login/mfa", &Method::GET) => code_page(ep, call),
        _ => respond::method_not_allowed("GET, POST"),
    }
}
