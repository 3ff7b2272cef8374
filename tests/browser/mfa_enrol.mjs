// The second factor in Chromium, as a person meets it: signed in with a password, the user
// opens the enrolment page (inline SVG QR code, the secret in text), types the code their
// authenticator shows (computed here by pyotp from the secret on the page, nothing scanned)
// and gets ten recovery codes; signed out, a page of an `mfa: required` route sends them to
// the login page, whose password step now answers the code page; a code already used is
// refused, the next one lands them on the page they asked for.
//
// Usage: node mfa_enrol.mjs BASE_URL EMAIL PASSWORD  (CHROMIUM names the browser binary;
// SCREENSHOT_DIR where the screenshots go). Needs python3 with pyotp. Prints one JSON line;
// exits 1 on any failure.

import { execFileSync } from 'node:child_process';
import { args, clickAndWait, cookieNames, describe, expect, run, screenshot, signIn } from './lib.mjs';

const { origin, email, password } = args('mfa_enrol.mjs');
const STEP_S = 30;

/// The RFC 6238 code (SHA-1, 6 digits, 30 s) of base32 `secret` at unix time `at`, by pyotp:
/// an implementation independent of the gateway's.
function totp(secret, at) {
  const code = execFileSync(
    'python3',
    ['-c', 'import sys, pyotp; print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))', secret, String(at)],
    { encoding: 'utf8', timeout: 10_000 },
  ).trim();
  expect(/^[0-9]{6}$/.test(code), `pyotp printed ${JSON.stringify(code)}, not a 6-digit code`);
  return code;
}

/// An `otpauth://` URI as pyotp reads it: `{secret, name, issuer, digits, interval, digest}`.
function parseUri(uri) {
  const script = [
    'import json, sys, pyotp',
    't = pyotp.parse_uri(sys.argv[1])',
    'print(json.dumps({"secret": t.secret, "name": t.name, "issuer": t.issuer, "digits": t.digits,',
    '  "interval": t.interval, "digest": t.digest().name}))',
  ].join('\n');
  return JSON.parse(execFileSync('python3', ['-c', script, String(uri)], { encoding: 'utf8', timeout: 10_000 }));
}

/// The current TOTP time step.
const stepNow = () => Math.floor(Date.now() / 1000 / STEP_S);

/// Which of the gateway's cookies the browser holds (`access`, `refresh`, `mfa`), by name only.
async function held(context) {
  const names = await cookieNames(context, origin);
  const out = [];
  for (const n of names) {
    const m = /^(?:__Host-)?pc_(access|refresh|mfa)$/.exec(n);
    if (m) out.push(m[1]);
  }
  return out.sort();
}

await run('mfa_enrol', 75_000, async ({ context, page, step, result }) => {
  result.screenshots = [];
  const adminLogin = `${origin}/auth/login?return_to=%2Fadmin%2Fpage`;

  // 1. A password sign-in on the plain protected application page.
  const { login, landed } = await signIn(page, origin, '/app/', email, password);
  let s = step({ name: 'sign in with password', login, landed });
  expect(landed.redirects.length === 1 && landed.redirects[0].status === 303,
    `the form login should answer one 303, saw ${JSON.stringify(landed.redirects)}`);
  s.cookies = await held(context);
  expect(s.cookies.includes('access') && s.cookies.includes('refresh') && !s.cookies.includes('mfa'),
    `signed in with a password the browser should hold access and refresh, not mfa: ${s.cookies}`);

  // 2. The `mfa: required` route without a code: the step-up login page, nothing proxied.
  s = step({ name: 'admin page without a code', ...(await describe(await page.goto(`${origin}/admin/page`))) });
  const stepUp = `${origin}/auth/login?step_up=1&mfa=1&return_to=%2Fadmin%2Fpage`;
  expect(s.redirects.length === 1 && s.redirects[0].status === 302,
    `GET /admin/page without a code should answer one 302, saw ${JSON.stringify(s.redirects)} then ${s.status} ${s.url}`);
  expect(s.url === stepUp, `GET /admin/page without a code should end on ${stepUp}, ended on ${s.url}`);
  expect(s.status === 200 && (await page.$('form#login')) !== null, `the step-up login page answered ${s.status} without form#login`);

  // 3. The enrolment page: an inline SVG QR code and the secret in text.
  s = step({ name: 'open enrolment page', ...(await describe(await page.goto(`${origin}/auth/mfa?return_to=%2Fapp%2F`))) });
  expect(s.url === `${origin}/auth/mfa?return_to=%2Fapp%2F` && s.status === 200 && s.redirects.length === 0,
    `GET /auth/mfa signed in answered ${s.status} at ${s.url} after ${JSON.stringify(s.redirects)}`);
  s.heading = await page.textContent('h1');
  expect(s.heading === 'Set up two-step verification', `the enrolment page's h1: ${JSON.stringify(s.heading)}`);
  s.qr = await page.evaluate(() => {
    const svg = document.querySelector('.qr > svg');
    if (!svg) return null;
    const box = svg.getBoundingClientRect();
    return {
      width: Math.round(box.width),
      height: Math.round(box.height),
      shapes: svg.querySelectorAll('path, rect').length,
      images: document.querySelectorAll('.qr img, .qr object, .qr iframe').length,
    };
  });
  expect(s.qr !== null, 'the enrolment page has no inline <svg> in .qr');
  expect(s.qr.width >= 100 && s.qr.width === s.qr.height && s.qr.shapes > 0 && s.qr.images === 0,
    `the QR code should be a square inline SVG with shapes: ${JSON.stringify(s.qr)}`);
  const secret = await page.getAttribute('code#secret', 'data-secret');
  const shown = await page.textContent('code#secret');
  expect(/^[A-Z2-7]{32}$/.test(secret || ''), `data-secret is not a 160-bit base32 secret: ${JSON.stringify(secret)}`);
  expect(shown.replace(/\s+/g, '') === secret && /^([A-Z2-7]{4} )+[A-Z2-7]{4}$/.test(shown),
    `the secret shown (${JSON.stringify(shown)}) should be data-secret in groups of four`);
  s.secret_length = secret.length;
  // What the QR code encodes, as the page's script-facing twin answers it: the same secret,
  // in a URI an authenticator (pyotp's parser here) reads as SHA-1, 6 digits, 30 s.
  const uri = await page.evaluate(() =>
    fetch('/auth/mfa', { headers: { Accept: 'application/json' } }).then((r) => r.json()).then((j) => j.otpauth_uri));
  s.otpauth = parseUri(uri);
  expect(s.otpauth.secret === secret, `the otpauth URI's secret differs from the page's: ${uri}`);
  expect(s.otpauth.digits === 6 && s.otpauth.interval === STEP_S && s.otpauth.digest === 'sha1',
    `the otpauth URI is not SHA-1, 6 digits, 30 s: ${uri}`);
  delete s.otpauth.secret;
  result.screenshots.push(await screenshot(page, 'mfa-enrolment'));

  // 4. The code of the current time step confirms the secret: ten recovery codes, shown once.
  const enrolStep = stepNow();
  const enrolCode = totp(secret, enrolStep * STEP_S);
  await page.fill('form#enrol #code', enrolCode);
  s = step({ name: 'confirm with a code', step: enrolStep,
    ...(await describe(await clickAndWait(page, 'form#enrol button[name=action][value=confirm]'))) });
  expect(s.url === `${origin}/auth/mfa` && s.status === 200,
    `the enrolment form should answer 200 at /auth/mfa, answered ${s.status} at ${s.url}`);
  const codes = await page.$$eval('ol#recovery-codes > li', (lis) => lis.map((li) => li.textContent.trim()));
  s.recovery_codes = codes.length;
  expect(codes.length === 10, `the page should list 10 recovery codes, listed ${codes.length}`);
  expect(new Set(codes).size === 10, 'the recovery codes are not all different');
  expect(codes.every((c) => /^[a-z2-7]{5}-[a-z2-7]{5}$/.test(c)), `a recovery code is malformed: ${JSON.stringify(codes)}`);
  expect(!(await page.content()).includes(secret), 'the recovery-code page shows the secret again');
  result.screenshots.push(await screenshot(page, 'mfa-recovery-codes'));

  // 5. "Continue" goes back to where the enrolment was opened from.
  s = step({ name: 'continue', ...(await describe(await clickAndWait(page, 'a#continue'))) });
  expect(s.url === `${origin}/app/` && s.status === 200, `#continue led to ${s.url} (${s.status}), not /app/`);

  // 6. The sign-out page's button ends the session.
  s = step({ name: 'follow sign-out link', ...(await describe(await clickAndWait(page, 'a[href="/auth/logout"]'))) });
  expect(s.url === `${origin}/auth/logout` && s.status === 200, `the sign-out link opened ${s.url} (${s.status})`);
  s = step({ name: 'click sign-out button', ...(await describe(await clickAndWait(page, 'form#logout button[type=submit]'))) });
  expect(s.redirects.length === 1 && s.redirects[0].status === 303 && s.url.startsWith(`${origin}/auth/logout?signed_out=1`),
    `the sign-out should answer one 303 to the signed-out page, saw ${JSON.stringify(s.redirects)} then ${s.url}`);
  s.cookies = await held(context);
  expect(s.cookies.length === 0, `signed out, the browser still holds ${s.cookies}`);

  // 7. Signed out, the admin page sends the browser to the plain login page.
  s = step({ name: 'open admin page signed out', ...(await describe(await page.goto(`${origin}/admin/page`))) });
  expect(s.redirects.length === 1 && s.redirects[0].status === 302,
    `GET /admin/page signed out should answer one 302, saw ${JSON.stringify(s.redirects)} then ${s.status} ${s.url}`);
  expect(s.url === adminLogin && s.status === 200, `GET /admin/page signed out should end on ${adminLogin}, ended on ${s.url} (${s.status})`);

  // 8. The right password answers the code page, with only the pending-login cookie.
  await page.fill('#email', email);
  await page.fill('#password', password);
  s = step({ name: 'submit password', ...(await describe(await clickAndWait(page, 'form#login button[type=submit]'))) });
  expect(s.url === `${origin}/auth/login` && s.status === 200 && s.redirects.length === 0,
    `the password step of an enrolled user should answer 200 at /auth/login, saw ${JSON.stringify(s.redirects)} then ${s.status} ${s.url}`);
  s.heading = await page.textContent('h1');
  expect(s.heading === 'Two-step verification', `the code page's h1: ${JSON.stringify(s.heading)}`);
  expect((await page.$('form#mfa[action="/auth/login/mfa?return_to=%2Fadmin%2Fpage"] input#code')) !== null, 'the code page has no form#mfa with #code');
  s.return_to = await page.getAttribute('form#mfa input[name=return_to]', 'value');
  expect(s.return_to === '/admin/page', `the code form's return_to: ${JSON.stringify(s.return_to)}`);
  s.cookies = await held(context);
  expect(s.cookies.length === 1 && s.cookies[0] === 'mfa', `between password and code the browser should hold only mfa: ${s.cookies}`);
  result.screenshots.push(await screenshot(page, 'mfa-code-step'));

  // 9. The enrolment's code again: its time step is used up (or out of the window).
  await page.fill('form#mfa #code', enrolCode);
  s = step({ name: 'used code refused', ...(await describe(await clickAndWait(page, 'form#mfa button[type=submit]'))) });
  s.now_step = stepNow();
  expect(s.url === `${origin}/auth/login/mfa?return_to=%2Fadmin%2Fpage` && s.status === 401,
    `the used code should answer 401 at /auth/login/mfa, answered ${s.status} at ${s.url}`);
  s.error = (await page.textContent('#mfa-error').catch(() => null)) || null;
  expect(s.error && s.error.includes('already used'), `the refusal says ${JSON.stringify(s.error)}`);
  s.cookies = await held(context);
  expect(s.cookies.length === 1 && s.cookies[0] === 'mfa', `after a refused code the browser should hold only mfa: ${s.cookies}`);

  // Opening that address again (a GET: what a reload becomes once the browser stops offering
  // to resend the form) asks again for the code, keeping where to go next.
  s = step({ name: 'reload code page', ...(await describe(await page.goto(page.url()))) });
  expect(s.status === 200 && (await page.$('form#mfa input#code')) !== null,
    `a reload of the code page should show it again, answered ${s.status} at ${s.url}`);
  s.return_to = await page.getAttribute('form#mfa input[name=return_to]', 'value');
  expect(s.return_to === '/admin/page', `the reloaded code form's return_to: ${JSON.stringify(s.return_to)}`);

  // 10. The code of the next time step (accepted with one step of skew, never used): the
  // session begins and the browser lands on the page it asked for.
  const codeStep = stepNow() + 1;
  await page.fill('form#mfa #code', totp(secret, codeStep * STEP_S));
  s = step({ name: 'enter next code', step: codeStep,
    ...(await describe(await clickAndWait(page, 'form#mfa button[type=submit]'))) });
  expect(s.redirects.length === 1 && s.redirects[0].status === 303 && s.redirects[0].location === '/admin/page',
    `the code should answer one 303 to /admin/page, saw ${JSON.stringify(s.redirects)} then ${s.status} ${s.url}`);
  expect(s.url === `${origin}/admin/page` && s.status === 200, `the code should land on /admin/page, landed on ${s.url} (${s.status})`);
  s.heading = await page.textContent('h1');
  expect(s.heading === 'Admin page', `/admin/page is not the upstream's admin page (h1: ${JSON.stringify(s.heading)})`);
  s.seen = await page.textContent('#seen');
  expect(/^Request 1 for \S+$/.test(s.seen), `the upstream saw /admin/page before the code: ${JSON.stringify(s.seen)}`);
  s.cookies = await held(context);
  expect(s.cookies.join() === 'access,refresh', `signed in with a code the browser should hold access and refresh only: ${s.cookies}`);

  result.final_url = page.url();
});
