// Sign-out by the plain HTML form, in Chromium, from an application page without any script:
// a protected page sends the browser to the login page, the login form brings it back, the
// page's "Sign out" link leads to the gateway's sign-out page, whose button ends the session;
// the protected page then sends the browser to the login page again.
//
// Usage: node logout_form.mjs BASE_URL EMAIL PASSWORD
//   (or GATEWAY_URL, LOGIN_EMAIL, LOGIN_PASSWORD in the environment; CHROMIUM names the
//   browser binary). Prints one JSON line; exits 1 on any failure.

import { args, clickAndWait, cookieNames, describe, expect, run } from './lib.mjs';

const { origin, email, password } = args('logout_form.mjs');

await run('logout_form', 60_000, async ({ context, page, step, result }) => {
  const loginUrl = `${origin}/auth/login?return_to=%2Fapp%2F`;

  // 1. The protected page, signed out: the gateway sends the browser to its login page.
  let s = step({ name: 'open protected page', ...(await describe(await page.goto(`${origin}/app/`))) });
  expect(s.redirects.length === 1 && s.redirects[0].status === 302,
    `GET /app/ should answer one 302, saw ${JSON.stringify(s.redirects)}`);
  expect(s.url === loginUrl, `GET /app/ should end on ${loginUrl}, ended on ${s.url}`);
  expect(s.status === 200, `the login page answered ${s.status}`);
  expect((await page.$('form#login input[name=csrf]')) !== null, 'the login page has no form with a csrf field');

  // 2. The login form, typed into and submitted like a person would.
  await page.fill('#email', email);
  await page.fill('#password', password);
  s = step({ name: 'submit login form', ...(await describe(await clickAndWait(page, 'form#login button[type=submit]'))) });
  expect(s.redirects.length === 1 && s.redirects[0].status === 303,
    `the login form post should answer one 303, saw ${JSON.stringify(s.redirects)} then ${s.status} ${s.url}`);
  expect(s.url === `${origin}/app/`, `the login should land on /app/, landed on ${s.url}`);
  expect(s.status === 200, `/app/ answered ${s.status} once signed in`);
  s.cookies = await cookieNames(context, origin);
  s.scripts = await page.evaluate(() => document.scripts.length);
  expect(s.scripts === 0, 'the application page must carry no script');
  const heading = await page.$eval('h1', (h) => h.textContent).catch(() => null);
  expect(heading === 'Legacy application', `/app/ is not the application page (h1: ${heading})`);

  // 3. The application's plain link to the sign-out page.
  s = step({ name: 'follow sign-out link', ...(await describe(await clickAndWait(page, 'a[href="/auth/logout"]'))) });
  expect(s.url === `${origin}/auth/logout`, `the link should open /auth/logout, opened ${s.url}`);
  expect(s.status === 200, `the sign-out page answered ${s.status}`);
  expect((await page.$('form#logout input[name=csrf]')) !== null, 'the sign-out page has no form with a csrf field');

  // 4. The sign-out button.
  s = step({ name: 'click sign-out button', ...(await describe(await clickAndWait(page, 'form#logout button[type=submit]'))) });
  expect(s.redirects.length === 1 && s.redirects[0].status === 303,
    `the sign-out form post should answer one 303, saw ${JSON.stringify(s.redirects)} then ${s.status} ${s.url}`);
  expect(s.url.startsWith(`${origin}/auth/logout?signed_out=1`), `the sign-out should end on the signed-out page, ended on ${s.url}`);
  expect(s.status === 200, `the signed-out page answered ${s.status}`);
  const text = await page.evaluate(() => document.body.innerText);
  expect(text.includes('You have signed out'), `the signed-out page says: ${JSON.stringify(text)}`);
  s.cookies = await cookieNames(context, origin);

  // 5. The protected page again: back to the login page.
  s = step({ name: 'open protected page again', ...(await describe(await page.goto(`${origin}/app/`))) });
  expect(s.redirects.length === 1 && s.redirects[0].status === 302,
    `GET /app/ after signing out should answer one 302, saw ${JSON.stringify(s.redirects)} then ${s.status} ${s.url}`);
  expect(s.url === loginUrl, `GET /app/ after signing out should end on ${loginUrl}, ended on ${s.url}`);
  expect(s.status === 200, `the login page answered ${s.status}`);

  result.final_url = page.url();
});
