// What the log page tests share: opening a job's page signed in, and reading what is on screen.
import { READ_TOKEN } from './server.mjs';

/** Opens the job's page through its read link (POST /api/v4/jobs's `read_link`). */
export async function openWithReadLink(page, job, hash = '') {
  const link = job.created.read_link;
  if (!link) throw new Error(`job ${job.id}: no read_link in ${JSON.stringify(job.created)}`);
  await page.goto(link);
  await page.locator('#log .row').first().waitFor();
  if (hash) {
    await page.evaluate((h) => { location.hash = h; }, hash);
  }
}

/** Opens the job's page and signs in with the read-only token through the form. */
export async function openWithToken(page, base, job) {
  await page.goto(`${base}/jobs/${job.id}`);
  await page.locator('#signin').waitFor({ state: 'visible' });
  await page.fill('#token', READ_TOKEN);
  await page.click('#signin button[type=submit]');
  await page.locator('#log .row').first().waitFor();
}

/** The row element of line `n` (in the DOM only while on screen or near it). */
export function row(page, n) {
  return page.locator(`#log .row[data-line="${n}"]`);
}

/** Is line `n`'s row inside the log box's visible area? */
export async function lineOnScreen(page, n) {
  return page.evaluate((line) => {
    const el = document.querySelector(`#log .row[data-line="${line}"]`);
    if (!el) return false;
    const box = document.getElementById('log').getBoundingClientRect();
    const r = el.getBoundingClientRect();
    return r.top >= box.top - 1 && r.bottom <= box.bottom + 1;
  }, n);
}

/** Line numbers of the rows in the DOM, in order. */
export async function renderedLines(page) {
  return page.$$eval('#log .row', (rows) =>
    rows.map((r) => Number(r.dataset.line)).sort((a, b) => a - b));
}

/** Waits until every row on screen has its text (no "…" placeholder). */
export async function settled(page) {
  await page.waitForFunction(() => !document.querySelector('#log .row.loading'));
}
