// Shared helpers of the browser tests: find and launch the system Chromium headless (no
// browser is downloaded), keep every request on the loopback address, record navigations,
// and end the run with one JSON line on stdout.

import fs from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';

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

/// Headless Chromium with a throwaway profile. `--no-sandbox` only as root, where
/// Chromium refuses to start with its sandbox.
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
  if (typeof process.getuid === 'function' && process.getuid() === 0) {
    args.push('--no-sandbox');
  }
  const browser = await puppeteer.launch({
    executablePath,
    headless: true,
    args,
    timeout: NAV_TIMEOUT_MS,
    protocolTimeout: NAV_TIMEOUT_MS * 2,
  });
  return browser;
}

/// A page whose requests may only go to 127.0.0.1; any other is aborted and reported in
/// `offsite` (the caller fails the run when it is not empty).
export async function loopbackPage(browser) {
  const page = await browser.newPage();
  page.setDefaultTimeout(NAV_TIMEOUT_MS);
  page.setDefaultNavigationTimeout(NAV_TIMEOUT_MS);
  const offsite = [];
  await page.setRequestInterception(true);
  page.on('request', (req) => {
    if (req.isInterceptResolutionHandled()) return;
    let host = '';
    try {
      host = new URL(req.url()).hostname;
    } catch {
      // data: and about: URLs have no host and leave nothing.
    }
    const local = host === '127.0.0.1' || /^(data|about|blob):/.test(req.url());
    if (local) {
      req.continue();
    } else {
      offsite.push(req.url());
      req.abort('blockedbyclient');
    }
  });
  return { page, offsite };
}

/// What a navigation went through: each redirect `{url, status, location}`, then the
/// final `{url, status}`.
export function describe(response) {
  if (!response) return { url: null, status: null, redirects: [] };
  const redirects = response
    .request()
    .redirectChain()
    .map((req) => {
      const r = req.response();
      return {
        url: req.url(),
        status: r ? r.status() : null,
        location: r ? r.headers().location ?? null : null,
      };
    });
  return { url: response.url(), status: response.status(), redirects };
}

/// Click `selector` and wait for the navigation it starts.
export async function clickAndWait(page, selector) {
  const [response] = await Promise.all([
    page.waitForNavigation({ timeout: NAV_TIMEOUT_MS, waitUntil: 'load' }),
    page.click(selector),
  ]);
  return response;
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
      const proc = browser.process();
      await Promise.race([browser.close().catch(() => {}), sleep(3000)]);
      if (proc && proc.exitCode === null) proc.kill('SIGKILL');
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
    result.chromium = await browser.version();
    const { page, offsite } = await loopbackPage(browser);
    const step = (entry) => {
      result.steps.push(entry);
      return entry;
    };
    await body({ browser, page, step, result });
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

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
