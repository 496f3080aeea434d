// The harness itself: a real buildlogs starts, chromium opens a page of it, a screenshot lands.
// (The dashboard's own tests are in dashboard.test.mjs, the log page's in logpage*.test.mjs.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, ADMIN_TOKEN } from './lib/server.mjs';
import { launchBrowser, newPage, screenshot, DESKTOP } from './lib/browser.mjs';

let server;
let browser;

before(async () => {
  server = await startServer('harness');
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('the dashboard asks for a token, then shows the queues', async () => {
  const page = await newPage(browser, DESKTOP);
  await page.goto(`${server.url}/admin`);
  const login = page.locator('#login');
  await login.waitFor({ state: 'visible' });
  await screenshot(page, 'harness-dashboard-login');
  await page.fill('#token', ADMIN_TOKEN);
  await page.click('#login button[type=submit]');
  await page.locator('#dashboard').waitFor({ state: 'visible' });
  assert.equal(await login.isVisible(), false, 'the login form is gone once signed in');
  assert.match(await page.locator('h2').first().innerText(), /Queues/);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
