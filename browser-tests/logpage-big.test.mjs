// A 100 MiB log (1,048,576 lines of 100 bytes, with colours and a 10 s section every 10,000 lines),
// archived: the page opens at its end, scrolls to its top without loading the log into the tab,
// and search finds the one line (1,000,000) that holds a needle.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './lib/server.mjs';
import { seedJob } from './lib/runner.mjs';
import { launchBrowser, newPage, screenshot, DESKTOP } from './lib/browser.mjs';
import { row, lineOnScreen, settled } from './lib/logpage.mjs';

const E = '\x1b';
const LINE = 100; // bytes a line, with its \n
const LINES = 1024 * 1024; // 100 MiB
const NEEDLE = 'the-needle-on-line-one-million';

function bigLog() {
  const buf = Buffer.alloc(LINES * LINE, 0x20);
  for (let n = 1; n <= LINES; n++) {
    let text;
    if (n === 1_000_000) text = `line ${n} ${NEEDLE}`;
    else if (n % 10_000 === 5 && n + 10_000 < LINES) text = `section_start:${1764756000 + n}:part_${n}\r${E}[0K${E}[36;1mPart ${n}${E}[0;m`;
    else if (n % 10_000 === 4 && n > 5) text = `section_end:${1764756000 + n - 9_999 + 10}:part_${n - 9_999}\r${E}[0K`;
    else text = `line ${n} ${E}[3${n % 8}mcolour ${n % 8}${E}[0m some output`;
    const at = (n - 1) * LINE;
    buf.write(text, at, 'latin1');
    buf[at + LINE - 1] = 0x0a;
  }
  return buf;
}

let server;
let browser;
let job;

before(async () => {
  server = await startServer('logpage-big');
  browser = await launchBrowser();
  job = await seedJob(server.url, bigLog(), { archived: true });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('a 100 MiB log opens at its end, scrolls to the top and the middle, and search finds line 1,000,000', async (t) => {
  const page = await newPage(browser, DESKTOP);
  let linesBytes = 0;
  let linesRequests = 0;
  page.on('response', async (res) => {
    if (!/\/jobs\/\d+\/lines\?/.test(res.url())) return;
    linesRequests++;
    try { linesBytes += (await res.body()).length; } catch { /* page closed */ }
  });
  let started = Date.now();
  await page.goto(job.created.read_link);
  await row(page, LINES).waitFor({ timeout: 120_000 }); // a cold index of 100 MiB on a debug build
  await settled(page);
  const firstOpen = Date.now() - started;
  assert.ok(await lineOnScreen(page, LINES), 'it opens at the last line');
  await screenshot(page, 'logpage-big-end');

  started = Date.now();
  await page.reload();
  await row(page, LINES).waitFor();
  await settled(page);
  const secondOpen = Date.now() - started;
  t.diagnostic(`open at the end of a 100 MiB log: first ${firstOpen} ms (cold line index), again ${secondOpen} ms`);

  // The top: every line is reachable, though 1M rows are far taller than a browser's cap.
  await page.click('#to-top');
  await row(page, 1).waitFor();
  await settled(page);
  assert.ok(await lineOnScreen(page, 1));
  assert.match(await row(page, 5).innerText(), /Part 5/);
  // The middle, as dragging the scrollbar half way would.
  await page.locator('#log').evaluate((el) => { el.scrollTop = (el.scrollHeight - el.clientHeight) / 2; });
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll('#log .row')].map((r) => Number(r.dataset.line));
    return rows.some((n) => n > 500_000 && n < 560_000) && !document.querySelector('#log .row.loading');
  });
  const inDom = await page.locator('#log .row').count();
  assert.ok(inDom < 200, `only the rows near the screen are in the DOM (${inDom})`);
  assert.ok(linesBytes < 8 * 1024 * 1024, `the tab loaded ${linesBytes} bytes of lines, not the log`);
  t.diagnostic(`lines fetched: ${linesRequests} requests, ${linesBytes} bytes`);

  started = Date.now();
  await page.fill('#q', NEEDLE.toUpperCase());
  await page.press('#q', 'Enter');
  await page.waitForFunction(() => document.getElementById('search-count').textContent === '1 of 1', null, { timeout: 120_000 });
  await row(page, 1_000_000).waitFor();
  await settled(page);
  t.diagnostic(`search of 100 MiB to line 1,000,000 on screen: ${Date.now() - started} ms`);
  assert.ok(await lineOnScreen(page, 1_000_000));
  assert.equal(await row(page, 1_000_000).locator('mark').innerText(), NEEDLE);
  await screenshot(page, 'logpage-big-search');

  // A folded section: its header shows its duration.
  await page.evaluate(() => { location.hash = '#L990005'; });
  await row(page, 990005).waitFor();
  assert.equal(await row(page, 990005).locator('.duration').innerText(), '10s');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
