// The session-expiry warning in Chromium, against a gateway with a tiny idle lifetime
// (`tokens.refresh_ttl: 6s`, `client.warn_before: 3s`): the expiring event, the banner
// (alertdialog, focus on "Stay signed in", axe-clean, screenshot), whose button refreshes
// once and moves idle_expires_at; then, left alone, the expiring event again, the expired
// event and the login page with the notice. With `--no-banner` (a gateway with
// `client.banner: false`) the events fire and no banner is shown.
//
// Usage: node client_expiry.mjs BASE_URL EMAIL PASSWORD [--no-banner]. Prints one JSON
// line; exits 1 on any failure.

import { args, axe, expect, run, screenshot, signIn, watch } from './lib.mjs';

const { origin, email, password } = args('client_expiry.mjs');
const withBanner = !process.argv.includes('--no-banner');
const NOTICE = 'Your session has expired. Please sign in again.';
const EXPIRING = 'portcullis:session-expiring';
const EXPIRED = 'portcullis:session-expired';

await run(withBanner ? 'client_expiry' : 'client_expiry_no_banner', 60_000, async ({ context, page, step, result }) => {
  const log = await watch(context);
  const sessions = []; // every 200 /auth/session body, in order
  context.on('response', async (res) => {
    if (new URL(res.url()).pathname === '/auth/session' && res.status() === 200) {
      try {
        sessions.push({ at: Date.now(), ...(await res.json()) });
      } catch {
        // a body gone with its page
      }
    }
  });
  const events = (name) => log.events.filter((e) => e.name === name);
  const waitFor = async (cond, ms, what) => {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const signedIn = Date.now();
  await signIn(page, origin, '/app/', email, password);
  await waitFor(() => sessions.length > 0, 5_000, 'the client to read /auth/session');
  const first = sessions[sessions.length - 1];
  let s = step({
    name: 'session read on load',
    idle_expires_at: first.idle_expires_at,
    session_expires_at: first.session_expires_at,
    warn_before: first.warn_before,
    banner: first.banner,
  });
  expect(first.warn_before === 3 && first.banner === withBanner, `unexpected session: ${JSON.stringify(first)}`);

  // 1. The expiring event, warn_before before the idle end.
  await waitFor(() => events(EXPIRING).length >= 1, 10_000, EXPIRING);
  const expiring = events(EXPIRING)[0];
  s = step({ name: 'expiring event', detail: expiring.detail, after_ms: expiring.at - signedIn });
  expect(expiring.detail.expires_at === first.idle_expires_at,
    `expires_at ${expiring.detail.expires_at} should be the idle end ${first.idle_expires_at}`);
  expect(expiring.detail.seconds_left >= 0 && expiring.detail.seconds_left <= 3,
    `seconds_left ${expiring.detail.seconds_left} should be at most warn_before`);
  expect(events(EXPIRED).length === 0, 'the expired event came before the session ended');

  if (withBanner) {
    // 2. The banner: an alertdialog, named, focus on its button, no axe-core violation.
    const dialog = await page.waitForSelector('[role="alertdialog"]', { timeout: 3_000 });
    s = step({
      name: 'banner',
      label: await page.evaluate((d) => {
        const id = d.getAttribute('aria-labelledby');
        return id && document.getElementById(id) ? document.getElementById(id).textContent : d.getAttribute('aria-label');
      }, dialog),
      text: await dialog.textContent(),
      focused: await page.evaluate(() => document.activeElement && document.activeElement.textContent),
      axe: await axe(page, '[role="alertdialog"]'),
      count: await page.locator('[role="alertdialog"]').count(),
    });
    expect(s.label, 'the banner has no accessible name');
    expect(/Your session will expire in \d+ (second|minute)s?/.test(s.text), `banner text: ${s.text}`);
    expect(s.focused === 'Stay signed in', `focus should be on "Stay signed in", is on ${JSON.stringify(s.focused)}`);
    expect(s.axe.length === 0, `axe-core violations in the banner: ${JSON.stringify(s.axe)}`);
    expect(s.count === 1, `${s.count} banners`);
    result.screenshots = [await screenshot(page, 'session-banner')];

    // 3. "Stay signed in": one refresh, the banner goes, idle_expires_at moves later.
    const mark = Date.now();
    const reads = sessions.length;
    await page.click('[role="alertdialog"] button');
    await page.waitForSelector('[role="alertdialog"]', { state: 'detached', timeout: 3_000 });
    await waitFor(() => sessions.length > reads, 5_000, 'the session re-read after the refresh');
    const renewed = sessions[sessions.length - 1];
    s = step({
      name: 'stay signed in',
      refreshes: log.count('POST', '/auth/refresh', mark),
      idle_before: first.idle_expires_at,
      idle_after: renewed.idle_expires_at,
    });
    expect(s.refreshes === 1, `"Stay signed in" should refresh once, saw ${s.refreshes}`);
    expect(Date.parse(renewed.idle_expires_at) > Date.parse(first.idle_expires_at),
      `idle_expires_at did not move: ${first.idle_expires_at} -> ${renewed.idle_expires_at}`);
  } else {
    s = step({ name: 'no banner', count: await page.locator('[role="alertdialog"]').count() });
    expect(s.count === 0, 'a banner was shown with banner: false');
  }

  // 4. Left alone: expiring again (after the refresh), then expired and the login page.
  const last = sessions[sessions.length - 1];
  const landed = page.waitForURL((u) => u.pathname === '/auth/login', { timeout: 12_000 });
  await landed;
  await page.waitForLoadState('load');
  const expired = events(EXPIRED);
  s = step({
    name: 'expired',
    url: page.url(),
    expiring_events: events(EXPIRING).length,
    expired_events: expired.length,
    expired_detail: expired[0] && expired[0].detail,
    expired_after_end_ms: expired[0] ? expired[0].at - Date.parse(last.idle_expires_at) : null,
    notice: (await page.textContent('body')).includes(NOTICE),
    refreshes: log.count('POST', '/auth/refresh'),
    banner_shown_again: withBanner ? undefined : false,
  });
  expect(s.url === `${origin}/auth/login?return_to=%2Fapp%2F&session_expired=1`, `landed on ${s.url}`);
  expect(s.notice, `the login page does not say "${NOTICE}"`);
  expect(s.expired_events === 1, `expected one expired event, saw ${s.expired_events}`);
  expect(s.expiring_events === (withBanner ? 2 : 1), `expected ${withBanner ? 2 : 1} expiring events, saw ${s.expiring_events}`);
  expect(s.expired_after_end_ms > -1_000, `the expired event came ${-s.expired_after_end_ms} ms before the session end`);
  expect(s.refreshes === (withBanner ? 1 : 0), `refreshes: ${s.refreshes}`);
  result.csp_violations = log.csp;
  expect(log.csp.length === 0, `CSP violations: ${JSON.stringify(log.csp)}`);
});
