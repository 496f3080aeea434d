// The log page (/jobs/{id}) as a reader sees it: colours, folded sections, timestamps, line
// links, follow mode, sign-in, the phone layout. The 100 MiB log is in logpage-big.test.mjs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from './lib/server.mjs';
import { registerJob, seedJob } from './lib/runner.mjs';
import { launchBrowser, newPage, screenshot, horizontalOverflow, DESKTOP, PHONE } from './lib/browser.mjs';
import { openWithReadLink, openWithToken, row, lineOnScreen, renderedLines, settled } from './lib/logpage.mjs';

const E = '\x1b';
const T = 1764756000; // section timestamps (unix seconds)

// 1: plain; 2: colours; 3: \r progress; 4: erase; 5: unknown escapes; 6: bytes not UTF-8;
// 7-11: a collapsed section of 65 s; 12: an open section "build" whose lines run to 1300.
function showcaseLog() {
  const parts = [
    'plain start\n',
    `${E}[32mgreen16${E}[0m ${E}[1;31mboldred${E}[0m ${E}[38;5;208mcolour208${E}[0m ` +
      `${E}[38;2;255;128;0morange24${E}[0m ${E}[48;2;0;0;255mbluebg${E}[0m ${E}[3mitalic${E}[23m ` +
      `${E}[4munder${E}[0m ${E}[92mbright${E}[39m\n`,
    'progress 10%\rprogress 50%\rprogress 100%\n',
    `XXXXXXXXXXXX\r${E}[0Kerased ok\n`,
    `unknown ${E}[?25hescape ${E}]0;a title\x07done${E}[5n\n`,
  ];
  const bytes = [Buffer.from(parts.join(''), 'utf8'), Buffer.from([0x62, 0x61, 0x64, 0x20, 0xff, 0xfe, 0x20, 0x75, 0x74, 0x66, 0x0a])];
  let rest = `section_start:${T}:prepare[collapsed=true]\r${E}[0K${E}[36;1mPrepare the environment${E}[0;m\n`;
  for (let i = 1; i <= 3; i++) rest += `prepare secret line ${i}\n`;
  rest += `section_end:${T + 65}:prepare\r${E}[0K\n`;
  rest += `section_start:${T + 65}:build\r${E}[0K${E}[36;1mBuild${E}[0;m\n`;
  for (let n = 13; n <= 1300; n++) rest += `build output line ${n}\n`;
  rest += `section_end:${T + 65 + 3723}:build\r${E}[0K\n`;
  rest += `${E}[32;1mJob succeeded${E}[0;m\n`;
  bytes.push(Buffer.from(rest, 'utf8'));
  return Buffer.concat(bytes);
}

let server;
let browser;
let showcase;

before(async () => {
  // Trace streams end after 2 s, so the follow test sees the page resume one by offset.
  server = await startServer('logpage', { BUILDLOGS_STREAM_LIFETIME: '2' });
  browser = await launchBrowser();
  showcase = await seedJob(server.url, showcaseLog(), { archived: true });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

// Waits at most a second for line `n` to show `text`, checking every frame (a locator's
// waitFor backs off to 500 ms between checks, which would measure itself).
async function lineAppears(page, n, text) {
  await page.waitForFunction(
    ([line, want]) => document.querySelector(`#log .row[data-line="${line}"] .text`)?.textContent.includes(want),
    [n, text],
    { polling: 'raf', timeout: 1000 },
  );
}

async function styleOf(page, text) {
  return page.locator('#log .row span', { hasText: new RegExp(`^${text}$`) }).first().evaluate((el) => {
    const s = getComputedStyle(el);
    return { color: s.color, background: s.backgroundColor, weight: s.fontWeight, style: s.fontStyle, decoration: s.textDecorationLine };
  });
}

test('a read link opens the log at its end, drops the grant from the address, shows the job', async () => {
  const page = await newPage(browser, DESKTOP);
  await openWithReadLink(page, showcase);
  assert.equal(new URL(page.url()).hash, '', 'the grant is gone from the address bar');
  assert.ok(await lineOnScreen(page, 1302), 'the last line is on screen');
  assert.match(await row(page, 1302).innerText(), /Job succeeded/);
  assert.equal(await page.innerText('#status'), 'success');
  assert.equal(await page.innerText('[data-fact="checksum"]'), 'ok');
  assert.equal(await page.innerText('[data-fact="log"]'), 'archived');
  assert.equal(await page.getAttribute('#raw', 'href'), `/jobs/${showcase.id}/raw`);
  const raw = await page.context().request.get(`${server.url}/jobs/${showcase.id}/raw`);
  assert.equal(raw.status(), 200);
  assert.deepEqual(Buffer.from(await raw.body()), showcaseLog(), 'the raw view is the log, byte for byte');
  const download = await page.context().request.get(`${server.url}${await page.getAttribute('#download', 'href')}`);
  assert.match(download.headers()['content-disposition'] || '', /attachment/);
  await screenshot(page, 'logpage-end');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('colours, bold, italic, \\r overwrite, erase, unknown escapes and bad bytes render as a terminal would', async () => {
  const page = await newPage(browser, DESKTOP);
  await openWithReadLink(page, showcase, '#L1');
  await settled(page);
  assert.equal((await styleOf(page, 'green16')).color, 'rgb(13, 188, 121)');
  const boldRed = await styleOf(page, 'boldred');
  assert.equal(boldRed.color, 'rgb(205, 49, 49)');
  assert.equal(boldRed.weight, '700');
  assert.equal((await styleOf(page, 'colour208')).color, 'rgb(255, 135, 0)');
  assert.equal((await styleOf(page, 'orange24')).color, 'rgb(255, 128, 0)');
  assert.equal((await styleOf(page, 'bluebg')).background, 'rgb(0, 0, 255)');
  assert.equal((await styleOf(page, 'italic')).style, 'italic');
  assert.equal((await styleOf(page, 'under')).decoration, 'underline');
  assert.equal((await styleOf(page, 'bright')).color, 'rgb(35, 209, 139)');
  const text = (n) => row(page, n).locator('.text').innerText();
  assert.equal(await text(3), 'progress 100%');
  assert.equal(await text(4), 'erased ok');
  assert.equal(await text(5), 'unknown escape done');
  assert.equal(await text(6), 'bad \ufffd\ufffd utf');
  const all = await page.locator('#log').innerText();
  assert.ok(!all.includes('section_'), 'no section marker is shown');
  assert.ok(!all.includes('\x1b') && !all.includes('[0'), 'no escape sequence is shown');
  await screenshot(page, 'logpage-colours');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a collapsed section hides its lines and shows its duration; a click unfolds it; its end line says so', async () => {
  const page = await newPage(browser, DESKTOP);
  await openWithReadLink(page, showcase, '#L1');
  await settled(page);
  const header = row(page, 7);
  assert.match(await header.innerText(), /Prepare the environment/);
  assert.equal(await header.locator('.duration').innerText(), '1m 05s');
  assert.equal(await header.getAttribute('aria-expanded'), 'false');
  let lines = await renderedLines(page);
  for (const n of [8, 9, 10, 11]) assert.ok(!lines.includes(n), `line ${n} is folded away`);
  assert.ok(lines.includes(12), 'the next section follows the folded one');
  assert.ok(!(await page.locator('#log').innerText()).includes('prepare secret line'));
  assert.equal(await row(page, 12).locator('.duration').innerText(), '1h 02m', 'an hour-long section');
  await screenshot(page, 'logpage-folded');
  await header.click();
  await row(page, 8).waitFor();
  assert.equal(await row(page, 9).locator('.text').innerText(), 'prepare secret line 2');
  // The line that only ends the section says so, instead of being an empty numbered row.
  assert.equal(await row(page, 11).locator('.text').innerText(), 'end of prepare');
  assert.equal(await row(page, 7).getAttribute('aria-expanded'), 'true');
  await screenshot(page, 'logpage-unfolded');
  await row(page, 7).click();
  await row(page, 8).waitFor({ state: 'detached' });
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('#L1234 opens there, highlighted; a line number is a link to itself', async () => {
  const page = await newPage(browser, DESKTOP);
  await page.goto(showcase.created.read_link);
  await page.locator('#log .row').first().waitFor();
  await page.goto(`${server.url}/jobs/${showcase.id}#L1234`);
  await row(page, 1234).waitFor();
  await settled(page);
  assert.ok(await lineOnScreen(page, 1234), 'line 1234 is on screen');
  assert.match(await row(page, 1234).getAttribute('class'), /\btarget\b/);
  assert.equal(await row(page, 1234).locator('.text').innerText(), 'build output line 1234');
  assert.equal(await row(page, 1234).locator('a.num').getAttribute('href'), '#L1234');
  await row(page, 1240).locator('a.num').click();
  await page.waitForFunction(() => document.querySelector('#log .row.target')?.dataset.line === '1240');
  assert.equal(new URL(page.url()).hash, '#L1240');
  await screenshot(page, 'logpage-line-link');
  // A folded line unfolds its section.
  await page.evaluate(() => { location.hash = '#L9'; });
  await row(page, 9).waitFor();
  assert.ok(await lineOnScreen(page, 9));
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('search finds every match in the whole log, with count and next/previous', async () => {
  const page = await newPage(browser, DESKTOP);
  await openWithReadLink(page, showcase);
  await page.fill('#q', 'OUTPUT LINE 12');
  await page.press('#q', 'Enter');
  // lines 120-129 and 1200-1299: 110 matches; the view is at the end, so the first after it wraps
  await page.waitForFunction(() => /of 110$/.test(document.getElementById('search-count').textContent));
  const count = () => page.innerText('#search-count');
  // Each step waits for its own count ("k of 110"), so no step reads the one before.
  const step = async (button, k) => {
    await page.click(button);
    await page.waitForFunction((want) => document.getElementById('search-count').textContent === want, `${k} of 110`);
    const line = Number(await page.getAttribute('#search-count', 'data-line'));
    await row(page, line).and(page.locator('.current-match')).waitFor();
    return line;
  };
  const k0 = Number((await count()).split(' ')[0]);
  const next = (k) => (k % 110) + 1;
  const a = await step('#search-next', next(k0));
  const b = await step('#search-next', next(next(k0)));
  assert.ok(b > a || b === 120, `next goes forward (${a} -> ${b})`);
  assert.equal(await step('#search-prev', next(k0)), a, 'previous goes back');
  assert.ok(await lineOnScreen(page, a));
  assert.ok((await row(page, a).locator('mark').innerText()).toLowerCase() === 'output line 12');
  await screenshot(page, 'logpage-search');
  await page.fill('#q', 'no such text anywhere');
  await page.press('#q', 'Enter');
  await page.waitForFunction(() => document.getElementById('search-count').textContent === 'no matches');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('without a cookie the page asks for a token; the read-only token opens it; sign out', async () => {
  const page = await newPage(browser, DESKTOP);
  await page.goto(`${server.url}/jobs/${showcase.id}`);
  await page.locator('#signin').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#log').isVisible(), false);
  await screenshot(page, 'logpage-signin');
  await page.fill('#token', 'not-a-token');
  await page.click('#signin button[type=submit]');
  await page.waitForFunction(() => document.getElementById('signin-error').textContent.length > 0);
  await openWithToken(page, server.url, showcase);
  assert.match(await row(page, 1302).innerText(), /Job succeeded/);
  const cookies = await page.context().cookies();
  assert.ok(cookies.every((c) => !c.value.includes('browser-read-token')), 'the cookie never holds the token');
  await page.click('#sign-out');
  await page.locator('#signin').waitFor({ state: 'visible' });
  await page.reload();
  await page.locator('#signin').waitFor({ state: 'visible' });
  await page.context().close();
});

test('a live log: a line a runner appends appears within a second, also after the stream is resumed; scrolling up stops following', async () => {
  const job = await registerJob(server.url);
  let log = '';
  for (let i = 1; i <= 200; i++) log += `early line ${i}\n`;
  await job.append(`${log}a partial li`);
  const page = await newPage(browser, DESKTOP);
  await openWithReadLink(page, job);
  assert.equal(await page.getAttribute('#follow', 'aria-pressed'), 'true', 'a running job is followed');
  assert.equal(await row(page, 201).locator('.text').innerText(), 'a partial li');
  await job.append('ne\nappended by the runner\n');
  await lineAppears(page, 202, 'appended by the runner');
  assert.equal(await row(page, 201).locator('.text').innerText(), 'a partial line');
  assert.ok(await lineOnScreen(page, 202), 'follow keeps the new line on screen');
  // The server ends the stream after 2 s: the page resumes at its offset, nothing twice.
  await new Promise((ok) => setTimeout(ok, 3000));
  await job.append('after the stream was resumed\n');
  await lineAppears(page, 203, 'after the stream was resumed');
  assert.equal(await row(page, 202).locator('.text').innerText(), 'appended by the runner');
  assert.equal(await page.locator('#error').isVisible(), false, 'a planned reconnect raises no alarm');
  await screenshot(page, 'logpage-follow');
  // The reader scrolls up: following stops, new lines do not move the view.
  await page.locator('#log').hover();
  await page.mouse.wheel(0, -600);
  await page.waitForFunction(() => document.getElementById('follow').getAttribute('aria-pressed') === 'false');
  await job.append('while scrolled up\n');
  await page.waitForFunction(() => document.querySelector('[data-fact="lines"]')?.textContent === '204');
  await page.waitForTimeout(300); // a frame or more: a follow would have moved the view by now
  assert.equal(await lineOnScreen(page, 204), false, 'the view stays where the reader put it');
  assert.equal(await page.getAttribute('#follow', 'aria-pressed'), 'false');
  await job.finish();
  await page.waitForFunction(() => document.getElementById('status').textContent === 'success', null, { timeout: 20_000 });
  assert.equal(await page.locator('#follow').isVisible(), false, 'nothing left to follow');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('runner timestamps show in a gutter: since the start, UTC, or hidden; a `+` line continues the one above', async () => {
  let log = '';
  for (let i = 0; i < 40; i++) {
    const at = new Date(Date.UTC(2026, 11, 3, 10, 0, 0) + i * 3000).toISOString().replace('Z', '123Z').replace('.000', '.');
    log += `${at} 00O step ${i}\n`;
  }
  // The runner split a long red line: the `+` line continues it (line 42 goes on from 41).
  log += '2026-12-03T10:02:00.000000Z 00O \x1b[31mred start\n';
  log += '2026-12-03T10:02:00.100000Z 00O+ still red\x1b[0m\n';
  const job = await seedJob(server.url, log);
  const page = await newPage(browser, DESKTOP);
  await openWithReadLink(page, job, '#L1');
  await settled(page);
  assert.equal(await row(page, 2).locator('.ts').innerText(), '+0:00:03');
  assert.equal(await row(page, 2).locator('.text').innerText(), 'step 1', 'the prefix is not in the text');
  // The continuation: marked, no time of its own, the colour carried over.
  await page.locator('#log .row[data-line="42"]').scrollIntoViewIfNeeded();
  const cont = row(page, 42);
  assert.equal(await cont.getAttribute('class').then((c) => c.split(' ').includes('cont')), true);
  assert.equal(await cont.locator('.ts').innerText(), '\u21b3');
  assert.equal(await cont.locator('.text').innerText(), 'still red');
  const red = await row(page, 41).locator('.text span').first().evaluate((e) => getComputedStyle(e).color);
  assert.equal(await cont.locator('.text span').first().evaluate((e) => getComputedStyle(e).color), red);
  assert.equal(await row(page, 41).getAttribute('class').then((c) => c.split(' ').includes('cont')), false);
  await screenshot(page, 'logpage-timestamps');
  await page.selectOption('#time-mode', 'utc');
  await page.waitForFunction(() => document.querySelector('#log .row[data-line="2"] .ts')?.textContent === '10:00:03');
  await page.selectOption('#time-mode', 'off');
  await page.waitForFunction(() => !document.querySelector('#log .row .ts'));
  // A log without timestamps has no gutter for them and no control.
  const plain = await newPage(browser, DESKTOP);
  await openWithReadLink(plain, showcase);
  assert.equal(await plain.locator('#time-control').isVisible(), false);
  assert.equal(await plain.locator('#log .row .ts').count(), 0);
  await page.context().close();
  await plain.context().close();
});

test('a line of 100,000 characters shows its start and says how much more the raw view has', async () => {
  // The server sends 64 KiB of it (65,536 characters), the page draws 20,000.
  const job = await seedJob(server.url, `before\n${'x'.repeat(100000)}\nafter\n`);
  const page = await newPage(browser, DESKTOP);
  await openWithReadLink(page, job, '#L1');
  await settled(page);
  const notice = (await row(page, 2).locator('.notice').innerText()).trim();
  assert.equal(notice, '… about 80,000 more characters (see raw)');
  assert.equal(await row(page, 3).locator('.text').innerText(), 'after');
  await page.context().close();
});

test('a line growing live past 64 KiB keeps its start and counts the rest, as the server would', async () => {
  const job = await registerJob(server.url);
  await job.append(`first\n${'y'.repeat(60000)}`);
  const page = await newPage(browser, DESKTOP);
  await openWithReadLink(page, job);
  await page.locator('#log .row[data-line="2"]').waitFor();
  // 60,000 + 30,000 + 30,000 characters: the page keeps 65,536 of the line, draws 20,000.
  await job.append('y'.repeat(30000));
  await job.append(`${'y'.repeat(30000)}\nnext line\n`);
  await lineAppears(page, 3, 'next line');
  const notice = (await row(page, 2).locator('.notice').innerText()).trim();
  assert.equal(notice, '… about 100,000 more characters (see raw)');
  const kept = await page.evaluate(() => document.querySelector('#log .row[data-line="2"] .text').textContent.length);
  assert.ok(kept < 21000, `drawn ${kept} characters`);
  await job.finish();
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a phone (390 px) has no horizontal page scroll; a long line scrolls inside the log', async () => {
  const job = await seedJob(server.url, `short\n${'a-very-long-line-'.repeat(60)}\nend\n`);
  for (const [size, name] of [[PHONE, 'phone'], [DESKTOP, 'desktop']]) {
    const page = await newPage(browser, size, size === PHONE ? { isMobile: true, hasTouch: true } : {});
    await openWithReadLink(page, job);
    await settled(page);
    assert.equal(await horizontalOverflow(page), 0, `${name}: the page does not scroll sideways`);
    const log = await page.locator('#log').evaluate((el) => ({ scroll: el.scrollWidth, client: el.clientWidth }));
    assert.ok(log.scroll > log.client, `${name}: the long line scrolls inside the log`);
    assert.ok(await page.locator('#q').isVisible(), `${name}: search is reachable`);
    await screenshot(page, `logpage-${name}`);
    if (size === PHONE) {
      const showcasePage = await newPage(browser, PHONE, { isMobile: true, hasTouch: true });
      await openWithReadLink(showcasePage, showcase, '#L1');
      await settled(showcasePage);
      assert.equal(await horizontalOverflow(showcasePage), 0);
      await screenshot(showcasePage, 'logpage-phone-colours');
      await showcasePage.context().close();
    }
    await page.context().close();
  }
});
