// Shared helpers of the browser tests (playwright-core): find and launch the system
// Chromium headless (no browser is downloaded), keep every request on the loopback
// address, record navigations, and end the run with one JSON line on stdout.

import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const NAV_TIMEOUT_MS = 10_000;

/// The Chromium to run: `$CHROMIUM`, else the first of the usual names found on PATH.
export function findChromium() {
  if (process.env.CHROMIUM) {
    if (!isExecutable(process.env.CHROMIUM)) {
      throw new Error(`CHROMIUM=${process.env.CHROMIUM} is not an executable file`);
    }
    return process.env.CHROMIUM;
  }
  const names = ['chromium', 'chromium-browser', 'google-chrome'];
  const dirs = ['/usr/bin', ...(process.env.PATH || '').split(path.delimiter).filter(Boolean)];
  for (const name of names) {
    for (const dir of dirs) {
      const candidate = path.join(dir, name);
      if (isExecutable(candidate)) return candidate;
    }
  }
  throw new Error(
    'no Chromium found (tried $CHROMIUM, chromium, chromium-browser, google-chrome): ' +
      'apt-get install chromium',
  );
}

function isExecutable(file) {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/// Headless Chromium (playwright-core driving the system binary; no browser is downloaded).
/// `--no-sandbox` only as root, where Chromium refuses to start with its sandbox.
export async function launch() {
  const executablePath = findChromium();
  const args = [
    '--disable-gpu',
    '--disable-dev-shm-usage',
    '--no-first-run',
    '--no-default-browser-check',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-domain-reliability',
    '--disable-sync',
  ];
  return chromium.launch({
    executablePath,
    headless: true,
    args,
    chromiumSandbox: !(typeof process.getuid === 'function' && process.getuid() === 0),
    timeout: NAV_TIMEOUT_MS * 2,
  });
}

/// A fresh context (its own cookie jar) whose requests may only go to 127.0.0.1; any other
/// is aborted and reported in `offsite` (the caller fails the run when it is not empty).
export async function loopbackContext(browser, offsite = []) {
  const context = await browser.newContext();
  context.setDefaultTimeout(NAV_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(NAV_TIMEOUT_MS);
  await context.route('**/*', (route) => {
    const url = route.request().url();
    let host = '';
    try {
      host = new URL(url).hostname;
    } catch {
      // data: and about: URLs have no host and leave nothing.
    }
    if (host === '127.0.0.1' || /^(data|about|blob):/.test(url)) {
      route.continue();
    } else {
      offsite.push(url);
      route.abort('blockedbyclient');
    }
  });
  return context;
}

/// A page in a fresh loopback-only context.
export async function loopbackPage(browser) {
  const offsite = [];
  const context = await loopbackContext(browser, offsite);
  const page = await context.newPage();
  return { context, page, offsite };
}

/// What a navigation went through: each redirect `{url, status, location}`, then the
/// final `{url, status}`.
export async function describe(response) {
  if (!response) return { url: null, status: null, redirects: [] };
  const redirects = [];
  for (let req = response.request().redirectedFrom(); req; req = req.redirectedFrom()) {
    const r = await req.response();
    redirects.unshift({
      url: req.url(),
      status: r ? r.status() : null,
      location: r ? (await r.headerValue('location')) ?? null : null,
    });
  }
  return { url: response.url(), status: response.status(), redirects };
}

/// Click `selector` and wait for the navigation it starts; the navigation's response.
export async function clickAndWait(page, selector) {
  const [response] = await Promise.all([
    page.waitForNavigation({ timeout: NAV_TIMEOUT_MS, waitUntil: 'load' }),
    page.click(selector),
  ]);
  return response;
}

/// Names only: cookie values are secrets.
export async function cookieNames(context, origin) {
  return (await context.cookies(origin)).map((c) => c.name).sort();
}

/// The command-line arguments `BASE_URL EMAIL PASSWORD` (or GATEWAY_URL, LOGIN_EMAIL,
/// LOGIN_PASSWORD), checked: exits 2 with a usage line when one is missing or the base is
/// not on 127.0.0.1.
export function args(script) {
  const [argBase, argEmail, argPassword] = process.argv.slice(2);
  const base = (argBase || process.env.GATEWAY_URL || '').replace(/\/+$/, '');
  const email = argEmail || process.env.LOGIN_EMAIL;
  const password = argPassword || process.env.LOGIN_PASSWORD;
  if (!base || !email || !password) {
    process.stderr.write(`usage: node ${script} BASE_URL EMAIL PASSWORD\n`);
    process.exit(2);
  }
  if (new URL(base).hostname !== '127.0.0.1') {
    process.stderr.write(`BASE_URL must be on 127.0.0.1, not ${base}\n`);
    process.exit(2);
  }
  return { origin: new URL(base).origin, email, password };
}

/// Where screenshots go: `$SCREENSHOT_DIR`, else target/screenshots of the repository
/// (git-ignored); created when missing.
export function screenshotDir() {
  const dir =
    process.env.SCREENSHOT_DIR ||
    path.resolve(path.dirname(new URL(import.meta.url).pathname), '../../target/screenshots');
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

/// Save a full-page screenshot as `<name>.png`; its path.
export async function screenshot(page, name) {
  const file = path.join(screenshotDir(), `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/// Fail the step unless `cond`.
export function expect(cond, message) {
  if (!cond) throw new Error(message);
}

/// Run `body(ctx)` with a browser and a loopback-only page, at most `totalMs`; print one
/// JSON line `{ok, chromium, steps, ..., error?}` and exit 0 on success, 1 on failure.
export async function run(name, totalMs, body) {
  const started = Date.now();
  const result = { test: name, ok: false, chromium: null, steps: [] };
  let browser = null;
  const finish = async (code) => {
    result.elapsed_ms = Date.now() - started;
    if (browser) {
      await Promise.race([browser.close().catch(() => {}), sleep(5000)]);
    }
    process.stdout.write(JSON.stringify(result) + '\n');
    process.exit(code);
  };
  const timer = setTimeout(() => {
    result.error = `timed out after ${totalMs} ms`;
    process.stderr.write(`${name}: FAILED: ${result.error}\n`);
    finish(1);
  }, totalMs);
  try {
    browser = await launch();
    result.chromium = browser.version();
    const { context, page, offsite } = await loopbackPage(browser);
    const step = (entry) => {
      result.steps.push(entry);
      return entry;
    };
    await body({ browser, context, page, offsite, step, result });
    expect(offsite.length === 0, `requests left 127.0.0.1: ${offsite.join(', ')}`);
    result.ok = true;
    clearTimeout(timer);
    await finish(0);
  } catch (e) {
    clearTimeout(timer);
    result.error = e && e.message ? e.message : String(e);
    process.stderr.write(`${name}: FAILED: ${result.error}\n`);
    await finish(1);
  }
}

/// Open `path` signed out, expect the gateway's login page, sign in with the form and
/// return `{login, landed}` (the two navigations, described).
export async function signIn(page, origin, path, email, password) {
  const login = await describe(await page.goto(`${origin}${path}`));
  const expected = `${origin}/auth/login?return_to=${encodeURIComponent(path)}`;
  expect(login.url === expected, `GET ${path} signed out should end on ${expected}, ended on ${login.url}`);
  await page.fill('#email', email);
  await page.fill('#password', password);
  const landed = await describe(await clickAndWait(page, 'form#login button[type=submit]'));
  expect(landed.url === `${origin}${path}` && landed.status === 200,
    `the login should land on ${path} (200), landed on ${landed.url} (${landed.status})`);
  return { login, landed };
}

/// Record what the pages of `context` do: every request `{method, url, path, at}` (with
/// its CSRF header and body), every response status of /auth/* and /app/api/*, the
/// portcullis events and CSP violations (reported by a binding that survives navigations).
export async function watch(context) {
  const log = { requests: [], responses: [], events: [], csp: [] };
  context.on('request', (req) => {
    const url = new URL(req.url());
    log.requests.push({
      method: req.method(),
      path: url.pathname + url.search,
      csrf: req.headers()['x-csrf-token'] ?? null,
      body: req.postData(),
      at: Date.now(),
    });
  });
  context.on('response', (res) => {
    const url = new URL(res.url());
    if (url.pathname.startsWith('/auth/') || url.pathname.startsWith('/app/api/')) {
      log.responses.push({ method: res.request().method(), path: url.pathname + url.search, status: res.status(), at: Date.now() });
    }
  });
  await context.exposeBinding('__pcReport', (_source, kind, detail) => {
    if (kind === 'csp') log.csp.push(detail);
    else log.events.push({ name: kind, detail, at: Date.now() });
  });
  await context.addInitScript(() => {
    for (const name of ['portcullis:session-expiring', 'portcullis:session-expired']) {
      window.addEventListener(name, (e) => window.__pcReport(name, e.detail));
    }
    document.addEventListener('securitypolicyviolation', (e) =>
      window.__pcReport('csp', { directive: e.violatedDirective, blocked: e.blockedURI }));
  });
  /// The requests `method path...` made at or after `since` (ms).
  log.count = (method, prefix, since = 0) =>
    log.requests.filter((r) => r.method === method && r.path.startsWith(prefix) && r.at >= since).length;
  return log;
}

/// axe-core's findings on the current page (or within `selector`): the violations as
/// `{id, impact, nodes}`. The script is evaluated, so a strict CSP does not stop it.
export async function axe(page, selector) {
  const source = fs.readFileSync(
    path.join(path.dirname(new URL(import.meta.url).pathname), 'node_modules/axe-core/axe.min.js'),
    'utf8',
  );
  await page.evaluate(source);
  const results = await page.evaluate((sel) => window.axe.run(sel || document), selector || null);
  return results.violations.map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(' ')) }));
}

/// The gateway's cookies as the browser holds them, by their plain name (`access`,
/// `refresh`, `csrf`): `{name, value, httpOnly, secure, sameSite, path}`.
export async function gatewayCookies(context, origin) {
  const out = {};
  for (const c of await context.cookies(origin)) {
    const m = /^(?:__Host-)?pc_(access|refresh|csrf)$/.exec(c.name);
    if (m) out[m[1]] = { name: c.name, value: c.value, httpOnly: c.httpOnly, secure: c.secure, sameSite: c.sameSite, path: c.path };
  }
  return out;
}

/// The cookies without their values (secrets), for the JSON line.
export function withoutValues(cookies) {
  const out = {};
  for (const [k, c] of Object.entries(cookies)) {
    const { value, ...rest } = c;
    out[k] = rest;
  }
  return out;
}
