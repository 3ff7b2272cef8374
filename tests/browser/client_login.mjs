// The browser client on its happy path, in Chromium: a protected page sends the browser to
// the login page (checked with axe-core, screenshot), the login brings it back; the cookies
// are as configured; the page's own <script src="/auth/client.js"> runs under a strict CSP
// (script-src 'self'); an unmodified page on an `inject_client: true` route gets the script
// once and works.
//
// Usage: node client_login.mjs BASE_URL EMAIL PASSWORD  (CHROMIUM names the browser binary;
// SCREENSHOT_DIR where the screenshots go). Prints one JSON line; exits 1 on any failure.

import {
  args, axe, describe, expect, gatewayCookies, run, screenshot, signIn, watch, withoutValues,
} from './lib.mjs';

const { origin, email, password } = args('client_login.mjs');
const NOTICE = 'Your session has expired. Please sign in again.';

await run('client_login', 60_000, async ({ context, page, step, result }) => {
  const log = await watch(context);
  result.screenshots = [];

  // 1. The login page: reached from the protected page, accessible, screenshot.
  await page.goto(`${origin}/app/`);
  let s = step({ name: 'login page', url: page.url(), axe: await axe(page) });
  expect(s.axe.length === 0, `axe-core violations on the login page: ${JSON.stringify(s.axe)}`);
  expect(!(await page.textContent('body')).includes(NOTICE), 'the plain login page shows the session-expired notice');
  result.screenshots.push(await screenshot(page, 'login-page'));

  // The same page after an expired session: the notice, still accessible.
  const expiredUrl = `${origin}/auth/login?return_to=%2Fapp%2F&session_expired=1`;
  s = step({ name: 'login page, session expired', ...(await describe(await page.goto(expiredUrl))) });
  s.notice = (await page.textContent('body')).includes(NOTICE);
  s.axe = await axe(page);
  expect(s.notice, `the login page with session_expired=1 does not say "${NOTICE}"`);
  expect(s.axe.length === 0, `axe-core violations on the session-expired login page: ${JSON.stringify(s.axe)}`);
  result.screenshots.push(await screenshot(page, 'login-page-session-expired'));

  // 2. Protected page -> login -> back on the page.
  const { login, landed } = await signIn(page, origin, '/app/', email, password);
  s = step({ name: 'sign in', login, landed });
  expect(landed.redirects.length === 1 && landed.redirects[0].status === 303,
    `the form login should answer one 303, saw ${JSON.stringify(landed.redirects)}`);

  // 3. The cookies as the browser holds them.
  const cookies = await gatewayCookies(context, origin);
  s = step({ name: 'cookies', cookies: withoutValues(cookies) });
  for (const k of ['access', 'refresh', 'csrf']) expect(cookies[k], `no ${k} cookie: ${JSON.stringify(s.cookies)}`);
  expect(cookies.access.httpOnly && cookies.refresh.httpOnly, 'the access and refresh cookies must be HttpOnly');
  expect(!cookies.csrf.httpOnly, 'the CSRF cookie must be readable by scripts');
  expect(cookies.access.sameSite === 'Strict' && cookies.refresh.sameSite === 'Strict',
    `SameSite should be Strict: ${JSON.stringify(s.cookies)}`);
  const visible = await page.evaluate(() => document.cookie);
  expect(!/pc_access|pc_refresh/.test(visible), 'a page script can read the access or refresh cookie');

  // 4. The page loads /auth/client.js itself, under script-src 'self'.
  const reloaded = await page.goto(`${origin}/app/`);
  const csp = reloaded.headers()['content-security-policy'];
  await page.waitForFunction(() => window.portcullis && typeof window.portcullis.fetch === 'function');
  const session = await page.evaluate(() => window.portcullis.session());
  s = step({
    name: 'client on the application page',
    scripts: await page.evaluate(() => document.querySelectorAll('script[src="/auth/client.js"]').length),
    api: Object.keys(await page.evaluate(() => window.portcullis)).filter((k) => !k.startsWith('__')).sort(),
    session: { user: session.user, keys: Object.keys(session).sort() },
    csp,
  });
  expect(session.user && session.user.id === 'carol', `portcullis.session() user: ${JSON.stringify(session.user)}`);
  for (const k of ['access_expires_at', 'session_expires_at', 'idle_expires_at', 'warn_before', 'banner']) {
    expect(k in session, `/auth/session has no ${k}: ${JSON.stringify(session)}`);
  }
  const data = await page.evaluate(() => window.portcullis.fetch('/app/api/data').then(async (r) => ({ status: r.status, body: await r.json() })));
  s.api_call = data;
  expect(data.status === 200 && data.body.user === 'carol', `portcullis.fetch('/app/api/data'): ${JSON.stringify(data)}`);
  result.screenshots.push(await screenshot(page, 'application-page'));

  // 5. An unmodified page on an inject_client route.
  const legacy = step({ name: 'injected page', ...(await describe(await page.goto(`${origin}/legacy/`))) });
  expect(legacy.status === 200 && legacy.url === `${origin}/legacy/`, `/legacy/ answered ${legacy.status} at ${legacy.url}`);
  await page.waitForFunction(() => window.portcullis && typeof window.portcullis.fetch === 'function');
  legacy.scripts = await page.evaluate(() =>
    [...document.querySelectorAll('script')].map((e) => ({ src: e.getAttribute('src'), defer: e.defer, inHead: e.parentElement === document.head })));
  legacy.heading = await page.textContent('h1');
  legacy.form_fields = await page.evaluate(() => document.querySelectorAll('form input').length);
  const injected = legacy.scripts.filter((x) => x.src === '/auth/client.js');
  expect(injected.length === 1, `the injected page should carry /auth/client.js once: ${JSON.stringify(legacy.scripts)}`);
  expect(legacy.heading === 'Legacy page', `the injected page lost its content (h1: ${legacy.heading})`);
  const legacySession = await page.evaluate(() => window.portcullis.session().then((x) => x.user.id));
  legacy.session_user = legacySession;
  expect(legacySession === 'carol', `portcullis.session() on the injected page: ${legacySession}`);
  // The page still works: its plain link leads back to the application.
  const back = await describe(await Promise.all([page.waitForNavigation(), page.click('a#app')]).then(([r]) => r));
  legacy.link = back.url;
  expect(back.url === `${origin}/app/` && back.status === 200, `the injected page's link led to ${back.url} (${back.status})`);
  await page.goto(`${origin}/legacy/`);
  await page.waitForFunction(() => window.portcullis);
  result.screenshots.push(await screenshot(page, 'injected-page'));

  result.csp_violations = log.csp;
  expect(log.csp.length === 0, `CSP violations: ${JSON.stringify(log.csp)}`);
  result.refreshes = log.count('POST', '/auth/refresh');
  result.final_url = page.url();
});
