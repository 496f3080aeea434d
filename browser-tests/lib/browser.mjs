// Debian's chromium (/usr/bin/chromium, or BUILDLOGS_CHROMIUM) driven by playwright-core: no
// browser is downloaded. Screenshots go to target/browser-screenshots/<stack>-<name>.png.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { TARGET, STACK } from './server.mjs';

export const CHROMIUM = process.env.BUILDLOGS_CHROMIUM || '/usr/bin/chromium';
export const SCREENSHOTS = join(TARGET, 'browser-screenshots');

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 390, height: 844 };

/** A headless chromium; close it in an `after` hook. */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // As root (CI containers) chromium refuses to start with its sandbox.
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
  });
}

/** A fresh page (own cookies) of `viewport` size; script errors are collected in page.errors. */
export async function newPage(browser, viewport = DESKTOP, options = {}) {
  const context = await browser.newContext({ viewport, ...options });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('console', (m) => {
    // A refused request is also logged as "Failed to load resource": tests assert on statuses.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) page.errors.push(m.text());
  });
  return page;
}

/** Saves a full-page PNG as target/browser-screenshots/<stack>-<name>.png; returns its path. */
export async function screenshot(page, name, { fullPage = false } = {}) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  const path = join(SCREENSHOTS, `${STACK}-${name}.png`);
  await page.screenshot({ path, fullPage });
  return path;
}

/** The page's horizontal overflow in px (0: no horizontal page scroll). */
export async function horizontalOverflow(page) {
  return page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
}
