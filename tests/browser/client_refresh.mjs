// Expired access tokens in Chromium, against a gateway with `tokens.access_ttl: 2s`:
// a navigation after the expiry is refreshed by the gateway itself (the cookies rotate);
// five parallel portcullis.fetch calls that each get a 401 share one POST /auth/refresh and
// all succeed; the same through portcullis.axios on the real axios; a POST that got a 401 is
// replayed with its body and a fresh CSRF header; the eject function removes the axios
// interceptors; a refused refresh (the session was signed out from another browser) sends
// the page to the login page with the session-expired notice and return_to.
//
// Usage: node client_refresh.mjs BASE_URL EMAIL PASSWORD. Prints one JSON line; exits 1 on
// any failure.

import {
  args, clickAndWait, describe, expect, gatewayCookies, loopbackContext, run, signIn, sleep, watch,
} from './lib.mjs';

const { origin, email, password } = args('client_refresh.mjs');
const NOTICE = 'Your session has expired. Please sign in again.';
/// Long enough for a 2 s access token (whole seconds, no leeway) to be expired.
const EXPIRY_WAIT_MS = 3_300;

await run('client_refresh', 75_000, async ({ browser, context, page, offsite, step, result }) => {
  const log = await watch(context);
  const statuses = (prefix, since) =>
    log.responses.filter((r) => r.path.startsWith(prefix) && r.at >= since).map((r) => r.status);

  await signIn(page, origin, '/app/', email, password);
  await page.waitForFunction(() => window.portcullis);

  // 1. A navigation after the access token expired: refreshed by the gateway, new cookies.
  const before = await gatewayCookies(context, origin);
  await sleep(EXPIRY_WAIT_MS);
  let s = step({ name: 'navigate after expiry', ...(await describe(await page.goto(`${origin}/app/`))) });
  const after = await gatewayCookies(context, origin);
  s.access_rotated = before.access.value !== after.access.value;
  s.refresh_rotated = before.refresh.value !== after.refresh.value;
  expect(s.status === 200 && s.url === `${origin}/app/` && s.redirects.length === 0,
    `the navigation after expiry should stay on /app/ (200): ${JSON.stringify(s)}`);
  expect(s.access_rotated && s.refresh_rotated, `the cookies did not rotate: ${JSON.stringify(s)}`);
  await page.waitForFunction(() => window.portcullis);

  // 2. Five parallel portcullis.fetch calls, each answered 401 token_expired first.
  await sleep(EXPIRY_WAIT_MS);
  let mark = Date.now();
  const fetched = await page.evaluate(() =>
    Promise.all([1, 2, 3, 4, 5].map(() =>
      window.portcullis.fetch('/auth/session').then(async (r) => ({ status: r.status, user: (await r.json()).user?.id })))));
  await sleep(300); // the re-read of the session after the refresh
  s = step({
    name: 'parallel fetch',
    results: fetched,
    refreshes: log.count('POST', '/auth/refresh', mark),
    session_statuses: statuses('/auth/session', mark),
  });
  expect(fetched.every((r) => r.status === 200 && r.user === 'carol'), `not all 5 succeeded: ${JSON.stringify(fetched)}`);
  expect(s.session_statuses.filter((x) => x === 401).length === 5, `expected 5 first answers 401: ${JSON.stringify(s.session_statuses)}`);
  expect(s.refreshes === 1, `expected one POST /auth/refresh, saw ${s.refreshes}`);

  // 3. A POST whose first answer is 401 is replayed: same body, the current CSRF token.
  mark = Date.now();
  const posted = await page.evaluate(() =>
    window.portcullis.fetch('/app/api/flaky?id=fetch', {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ n: 42 }),
    }).then(async (r) => ({ status: r.status, body: await r.json() })));
  const csrfNow = (await gatewayCookies(context, origin)).csrf.value;
  const tries = log.requests.filter((r) => r.path === '/app/api/flaky?id=fetch');
  s = step({
    name: 'replayed POST',
    result: posted,
    tries: tries.map((r) => ({ body: r.body, csrf_is_cookie: r.csrf === csrfNow, csrf_sent: r.csrf !== null })),
    refreshes: log.count('POST', '/auth/refresh', mark),
  });
  expect(posted.status === 200, `the replayed POST answered ${JSON.stringify(posted)}`);
  expect(tries.length === 2 && tries.every((r) => r.body === '{"n":42}' && r.csrf),
    `the POST should be sent twice with its body and a CSRF header: ${JSON.stringify(s.tries)}`);
  expect(tries[1].csrf === csrfNow, 'the retry should carry the CSRF cookie as it is after the refresh');
  expect(s.refreshes === 1, `expected one refresh for the replayed POST, saw ${s.refreshes}`);

  // 4. The same through the real axios (served by the application, loaded like its own).
  await page.addScriptTag({ url: '/app/vendor/axios.min.js' });
  await page.evaluate(() => {
    window.api = window.axios.create();
    window.ejectPortcullis = window.portcullis.axios(window.api);
  });
  await sleep(EXPIRY_WAIT_MS);
  mark = Date.now();
  const viaAxios = await page.evaluate(() =>
    Promise.all([1, 2, 3, 4, 5].map(() =>
      window.api.get('/auth/session').then((r) => ({ status: r.status, user: r.data.user?.id })))));
  await sleep(300);
  s = step({
    name: 'parallel axios',
    axios_version: await page.evaluate(() => window.axios.VERSION),
    results: viaAxios,
    refreshes: log.count('POST', '/auth/refresh', mark),
    session_statuses: statuses('/auth/session', mark),
  });
  expect(viaAxios.every((r) => r.status === 200 && r.user === 'carol'), `not all 5 succeeded: ${JSON.stringify(viaAxios)}`);
  expect(s.session_statuses.filter((x) => x === 401).length === 5, `expected 5 first answers 401: ${JSON.stringify(s.session_statuses)}`);
  expect(s.refreshes === 1, `expected one POST /auth/refresh, saw ${s.refreshes}`);

  mark = Date.now();
  const axiosPost = await page.evaluate(() => window.api.post('/app/api/flaky?id=axios', { n: 7 }).then((r) => r.status));
  const axiosTries = log.requests.filter((r) => r.path === '/app/api/flaky?id=axios');
  s = step({
    name: 'axios POST replayed',
    status: axiosPost,
    tries: axiosTries.map((r) => ({ body: r.body, csrf_sent: r.csrf !== null })),
    refreshes: log.count('POST', '/auth/refresh', mark),
  });
  expect(axiosPost === 200 && axiosTries.length === 2 && axiosTries.every((r) => r.csrf && r.body === '{"n":7}'),
    `the axios POST should be sent twice with its body and CSRF header: ${JSON.stringify(s)}`);
  expect(s.refreshes === 1, `expected one refresh for the axios POST, saw ${s.refreshes}`);

  // eject(): no CSRF header and no retry any more.
  mark = Date.now();
  const ejected = await page.evaluate(() => {
    window.ejectPortcullis();
    return window.api.post('/app/api/flaky?id=ejected', { n: 1 }).then((r) => r.status, (e) => (e.response ? e.response.status : String(e)));
  });
  const ejectedTries = log.requests.filter((r) => r.path === '/app/api/flaky?id=ejected');
  s = step({ name: 'axios ejected', status: ejected, tries: ejectedTries.length, csrf_sent: ejectedTries.some((r) => r.csrf), refreshes: log.count('POST', '/auth/refresh', mark) });
  expect(ejected === 401 && s.tries === 1 && !s.csrf_sent && s.refreshes === 0,
    `after eject() axios should be left alone: ${JSON.stringify(s)}`);

  // 5. Signed out from another browser (same cookies): the refresh is refused, the page
  //    goes to the login page with the notice and return_to.
  const other = await loopbackContext(browser, offsite);
  await other.addCookies(await context.cookies(origin));
  const otherPage = await other.newPage();
  await otherPage.goto(`${origin}/auth/logout`);
  const signedOut = await describe(await clickAndWait(otherPage, 'form#logout button[type=submit]'));
  s = step({ name: 'sign out elsewhere', ...signedOut });
  expect(signedOut.url.startsWith(`${origin}/auth/logout?signed_out=1`),
    `the sign-out in the other browser ended on ${signedOut.url}`);
  await other.close();

  mark = Date.now();
  const expiredEventsBefore = log.events.filter((e) => e.name === 'portcullis:session-expired').length;
  const landed = page.waitForURL((u) => u.pathname === '/auth/login', { timeout: 10_000 });
  await page.evaluate(() => { window.portcullis.fetch('/app/api/data').catch(() => {}); });
  await landed;
  await page.waitForLoadState('load');
  s = step({
    name: 'refused refresh',
    url: page.url(),
    responses: log.responses.filter((r) => r.at >= mark).map((r) => `${r.method} ${r.path} ${r.status}`),
    notice: (await page.textContent('body')).includes(NOTICE),
    expired_events: log.events.filter((e) => e.name === 'portcullis:session-expired').length - expiredEventsBefore,
  });
  expect(s.url === `${origin}/auth/login?return_to=%2Fapp%2F&session_expired=1`, `landed on ${s.url}`);
  expect(s.notice, `the login page does not say "${NOTICE}"`);
  expect(s.responses.some((r) => /^POST \/auth\/refresh 40[13]$/.test(r)), `the refresh was not refused: ${JSON.stringify(s.responses)}`);

  result.refreshes = log.count('POST', '/auth/refresh');
  result.csp_violations = log.csp;
  expect(log.csp.length === 0, `CSP violations: ${JSON.stringify(log.csp)}`);
});
