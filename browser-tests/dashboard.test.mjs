// The operator dashboard (/admin) as an operator uses it: every action (sign in, set and clear a
// limit, retry and discard a dead job, run recovery now, open a build's log from the builds
// list), jobs waiting to retry with their last error, times that tick, one banner while the server does not answer, the phone layout.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startServer, READ_TOKEN } from './lib/server.mjs';
import { registerJob, seedJob } from './lib/runner.mjs';
import { launchBrowser, newPage, screenshot, horizontalOverflow, DESKTOP, PHONE } from './lib/browser.mjs';
import { signIn, sql, seedDeadJob, seedRetryingJob, adminJson } from './lib/dashboard.mjs';

const DEAD_QUEUE = 'browser_mail';
const RETRY_ID = '01JBROWSERTESTDEADJOB00001';
const DISCARD_ID = '01JBROWSERTESTDEADJOB00002';
const RETRY_QUEUE = 'browser_upload';
const WAITING_ID = '01JBROWSERTESTRETRYJOB0001';
const LONG_ERROR = 'smtp: connection refused by mail.example.com:25 after 30 s '
  + '(tried 3 addresses: 10.0.0.1, 10.0.0.2, 10.0.0.3) '.repeat(3);

let server;
let browser;
let archived;
let partial;
let running;

before(async () => {
  server = await startServer('dashboard');
  browser = await launchBrowser();
  archived = await seedJob(server.url, 'all good\n', { archived: true });
  partial = await seedJob(server.url, 'lost some\n', { archived: true });
  sql(server, `UPDATE build_trace_metadata SET lost_bytes = 131072 WHERE build_id = ${partial.id}`);
  running = await registerJob(server.url);
  await running.append('still going\n');
  seedDeadJob(server, { queue: DEAD_QUEUE, id: RETRY_ID, error: LONG_ERROR, payload: '{"to":"ops@example.com"}' });
  seedDeadJob(server, { queue: DEAD_QUEUE, id: DISCARD_ID, error: 'boom', agoMs: 10_000 });
  seedRetryingJob(server, { queue: RETRY_QUEUE, id: WAITING_ID, error: 's3: 503 Slow Down', attempt: 2, inMs: 90 * 60_000 });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** The queues table's row of `queue`. */
const queueRow = (page, queue) => page.locator('#queues tbody tr', { has: page.locator('td', { hasText: new RegExp(`^${queue}$`) }) });

test('sign in, then every section shows; the builds list links each build to its log page', async () => {
  const page = await newPage(browser, DESKTOP);
  await signIn(page, server);
  for (const title of ['Queues', 'Builds', 'Backlog', 'Object store', 'Stale-trace recovery', 'Log expiry', 'Cron schedules', 'Waiting to run again', 'Dead jobs']) {
    assert.equal(await page.locator('h2', { hasText: title }).count(), 1, title);
  }
  const links = page.locator('#builds tbody tr a');
  await links.first().waitFor();
  const hrefs = await links.evaluateAll((as) => as.map((a) => a.getAttribute('href')));
  assert.deepEqual(hrefs, [running.id, partial.id, archived.id].map((id) => `/jobs/${id}`), 'newest first');
  const partialRow = page.locator('#builds tbody tr', { has: page.locator(`a[href="/jobs/${partial.id}"]`) });
  assert.match(await partialRow.innerText(), /archived/);
  assert.match(await partialRow.locator('.badge').first().innerText(), /partial: 128 KiB lost/);
  assert.match(await page.locator('#expiry').innerText(), /off/, 'no BUILDLOGS_TRACE_EXPIRE_DAYS: expiry off');
  await screenshot(page, 'dashboard-desktop', { fullPage: true });

  // Filters ask the server for only those builds.
  await page.selectOption('#builds-state', 'running');
  await page.locator('#builds tbody tr').first().waitFor();
  await page.waitForFunction(() => document.querySelectorAll('#builds tbody tr').length === 1);
  assert.equal(await links.first().getAttribute('href'), `/jobs/${running.id}`);
  await page.selectOption('#builds-state', 'partial');
  await page.waitForFunction((id) => {
    const rows = document.querySelectorAll('#builds tbody tr a');
    return rows.length === 1 && rows[0].getAttribute('href') === `/jobs/${id}`;
  }, partial.id);

  // The link opens that job's log page.
  await links.first().click();
  await page.waitForURL(`${server.url}/jobs/${partial.id}`);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a job waiting to retry shows its queue, runs, last error and when it runs next', async () => {
  const page = await newPage(browser, DESKTOP);
  await signIn(page, server);
  const row = page.locator('#retries tbody tr', { has: page.locator(`td[title="${WAITING_ID}"]`) });
  await row.waitFor();
  const cells = await row.locator('td').allInnerTexts();
  assert.equal(cells[0], RETRY_QUEUE);
  assert.equal(cells[2], '2/5');
  assert.match(cells[3], /^in 1h (29|30)m$/);
  assert.equal(cells[4], 's3: 503 Slow Down');
  const next = row.locator('td span.when');
  const before = await next.getAttribute('data-at');
  assert.ok(Math.abs(Number(before) - Date.now() - 90 * 60_000) < 120_000, 'due in 90 minutes');
  const listed = await adminJson(server, '/admin/api/retries');
  const job = listed.jobs.find((j) => j.id === WAITING_ID);
  assert.deepEqual([job.queue, job.attempts, job.last_error], [RETRY_QUEUE, 2, 's3: 503 Slow Down']);
  await screenshot(page, 'dashboard-retries');
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("the object store's past outages show when each began, how long it lasted and why", async () => {
  // Two changes of the shared breaker, as the workers record them: down for 1h 2m, two hours ago.
  const opened = Date.now() - 2 * 3_600_000;
  const closed = opened + 62 * 60_000;
  sql(server, `INSERT INTO circuit_breaker_events (name, state, reason, at) VALUES
    ('object_store', 'open', 's3: connection refused (os error 111)', ${opened}),
    ('object_store', 'closed', NULL, ${closed})`);
  const page = await newPage(browser, DESKTOP);
  await signIn(page, server);
  const outage = page.locator('#breaker-history li');
  await outage.first().waitFor();
  assert.equal(await outage.count(), 1, 'one outage (a close is its end, not a line)');
  assert.match(await outage.innerText(), /^opened 2h 0m ago, down 1h 2m: s3: connection refused \(os error 111\)$/);
  assert.equal(await page.locator('#breaker-history-title').isVisible(), true);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a limit is set and shown in its input, a bad one refused in words, "none" clears it', async () => {
  const page = await newPage(browser, DESKTOP);
  await signIn(page, server);
  const row = queueRow(page, 'archive_trace');
  const input = row.locator('input.limit');
  assert.equal(await input.inputValue(), 'none');
  await input.fill('3');
  await row.locator('button', { hasText: 'set' }).click();
  const result = page.locator('#limit-result');
  await result.filter({ hasText: 'archive_trace: at most 3 running at once' }).waitFor();
  const queues = await adminJson(server, '/admin/api/queues');
  assert.equal(queues.queues.find((q) => q.queue === 'archive_trace').limit, 3);
  // Refreshes keep showing the limit now set.
  await page.waitForTimeout(2500);
  assert.equal(await input.inputValue(), '3');

  await input.fill('three');
  await row.locator('button', { hasText: 'set' }).click();
  await result.filter({ hasText: 'is not a limit' }).waitFor();
  const message = await result.innerText();
  assert.match(message, /whole number of at least 1, or “none”/);
  assert.doesNotMatch(message, /[{}]/, 'no API JSON in the message');
  assert.equal((await adminJson(server, '/admin/api/queues')).queues.find((q) => q.queue === 'archive_trace').limit, 3);
  // Result messages clear after a few seconds.
  await result.filter({ hasText: /^$/ }).waitFor({ timeout: 10_000 });

  await input.fill('none');
  await row.locator('button', { hasText: 'set' }).click();
  await result.filter({ hasText: 'archive_trace: no limit now' }).waitFor();
  assert.equal(await input.inputValue(), 'none');
  assert.equal((await adminJson(server, '/admin/api/queues')).queues.find((q) => q.queue === 'archive_trace').limit, null);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a dead job is retried (queued again) and another discarded; ids shown whole in a tooltip', async () => {
  const page = await newPage(browser, DESKTOP);
  page.on('dialog', (dialog) => dialog.accept());
  await signIn(page, server);
  await page.selectOption('#dead-queue', DEAD_QUEUE);
  const retryRow = page.locator('#dead tbody tr', { has: page.locator(`td[title="${RETRY_ID}"]`) });
  await retryRow.waitFor();
  const idCell = retryRow.locator('td.id');
  assert.equal(await idCell.getAttribute('title'), RETRY_ID);
  const lineCount = () => idCell.evaluate((td) => {
    const range = document.createRange();
    range.selectNodeContents(td);
    // One rect per run of glyphs (a fallback font for "…" makes another): count line tops.
    return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
  });
  // The table is redrawn every 2 s: a measure taken mid-redraw sees no text (0 lines; seen
  // once in CI), so measure again until the cell has text.
  let lines = await lineCount();
  for (let i = 0; lines === 0 && i < 50; i++) {
    await page.waitForTimeout(100);
    lines = await lineCount();
  }
  assert.equal(lines, 1, 'the id stays on one line');
  assert.match(await idCell.innerText(), /^01JBROWS…JOB00001$/);
  await screenshot(page, 'dashboard-dead-jobs');

  await retryRow.locator('button', { hasText: 'retry' }).click();
  const result = page.locator('#dead-result');
  await result.filter({ hasText: `${RETRY_ID}: queued again` }).waitFor();
  await retryRow.waitFor({ state: 'detached' });
  const stats = (await adminJson(server, '/admin/api/queues')).queues.find((q) => q.queue === DEAD_QUEUE);
  assert.equal(stats.ready, 1, 'back in the queue');

  const discardRow = page.locator('#dead tbody tr', { has: page.locator(`td[title="${DISCARD_ID}"]`) });
  await discardRow.locator('button', { hasText: 'discard' }).click();
  await result.filter({ hasText: `${DISCARD_ID}: discarded` }).waitFor();
  await discardRow.waitFor({ state: 'detached' });
  assert.equal((await adminJson(server, `/admin/api/queues/${DEAD_QUEUE}/dead`)).jobs.length, 0);
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('a retried job that dies again at once is reported as such, not as queued', async () => {
  // A payload its handler cannot decode: the worker buries it again as soon as it runs it.
  const id = '01JBROWSERTESTDIESAGAIN001';
  seedDeadJob(server, { queue: 'drop_stuck_builds', id, error: 'cannot decode', payload: 'not json' });
  const page = await newPage(browser, DESKTOP);
  await signIn(page, server);
  await page.selectOption('#dead-queue', 'drop_stuck_builds');
  const row = page.locator('#dead tbody tr', { has: page.locator(`td[title="${id}"]`) });
  await row.locator('button', { hasText: 'retry' }).click();
  await page.locator('#dead-result', { hasText: `${id}: ran again and died again: ` }).waitFor({ timeout: 15_000 });
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test('run recovery now queues a run; the read-only token sees everything and changes nothing', async () => {
  const page = await newPage(browser, DESKTOP);
  await signIn(page, server);
  await page.click('#recovery-run');
  await page.locator('#recovery-result', { hasText: /recovery run is (queued|already queued or running)/ }).waitFor();
  await page.context().close();

  const reader = await newPage(browser, DESKTOP);
  await signIn(reader, server, READ_TOKEN);
  await reader.click('#recovery-run');
  await reader.locator('#recovery-result', { hasText: 'the read-only token cannot run recovery' }).waitFor();
  const input = queueRow(reader, 'archive_trace').locator('input.limit');
  await input.fill('5');
  await queueRow(reader, 'archive_trace').locator('button', { hasText: 'set' }).click();
  await reader.locator('#limit-result', { hasText: 'the read-only token cannot change limits' }).waitFor();
  assert.equal((await adminJson(server, '/admin/api/queues')).queues.find((q) => q.queue === 'archive_trace').limit, null);
  await reader.context().close();
});

test('relative times tick between refreshes; the chart axis has distinct labels on its gridlines', async () => {
  const page = await newPage(browser, DESKTOP);
  await signIn(page, server);
  // Paused: nothing is fetched, so any change is the page's own clock.
  await page.check('#paused');
  const started = page.locator('#builds tbody tr').first().locator('span.when').first();
  const first = await started.innerText();
  const updated = await page.locator('#updated').innerText();
  await page.waitForFunction(([text]) => {
    const node = document.querySelector('#builds tbody tr span.when');
    return node && node.textContent !== text;
  }, [first], { timeout: 5_000 });
  assert.match(await started.innerText(), /ago$/);
  // The age of the figures ticks too ("updated just now", then "updated 2s ago").
  await page.waitForFunction((text) => document.getElementById('updated').textContent !== text,
    updated, { timeout: 5_000 });

  await page.uncheck('#paused');
  await page.locator('#chart svg').waitFor({ timeout: 15_000 });
  const axis = await page.evaluate(() => {
    const labels = [...document.querySelectorAll('#chart svg text[text-anchor="end"]')]
      .filter((t) => /^\d+$/.test(t.textContent))
      .map((t) => ({ value: Number(t.textContent), y: Number(t.getAttribute('y')) - 4 }));
    const lines = [...document.querySelectorAll('#chart svg line')].map((l) => Number(l.getAttribute('y1')));
    return { labels, lines };
  });
  const values = axis.labels.map((l) => l.value);
  assert.ok(values.length >= 2, JSON.stringify(axis));
  assert.equal(new Set(values).size, values.length, `distinct labels: ${values}`);
  for (const label of axis.labels) {
    assert.ok(axis.lines.some((y) => Math.abs(y - label.y) < 0.01), `a gridline at ${label.value}`);
  }
  await page.context().close();
});

test('while requests fail: one banner, figures marked stale, the clock stops; then it recovers', async () => {
  const page = await newPage(browser, DESKTOP);
  await signIn(page, server);
  await page.route('**/admin/api/**', (route) => route.abort());
  const banner = page.locator('#error');
  await banner.waitFor({ state: 'visible', timeout: 10_000 });
  const text = await banner.innerText();
  assert.equal(text.match(/the server does not answer/g).length, 1, `one reason, once: ${text}`);
  assert.ok(await page.locator('main.stale').count() === 1, 'figures marked stale');
  await page.locator('#updated', { hasText: /^stale: last updated/ }).waitFor();
  await screenshot(page, 'dashboard-stale');
  await page.unroute('**/admin/api/**');
  await banner.waitFor({ state: 'hidden', timeout: 10_000 });
  assert.equal(await page.locator('main.stale').count(), 0);
  await page.context().close();
});

test('at phone width the page does not scroll sideways and the limits are within reach', async () => {
  const page = await newPage(browser, PHONE);
  await signIn(page, server);
  await page.locator('#builds tbody tr').first().waitFor();
  assert.equal(await horizontalOverflow(page), 0, 'no horizontal page scroll');
  const box = await queueRow(page, 'archive_trace').locator('input.limit').boundingBox();
  assert.ok(box.x >= 0 && box.x + box.width <= PHONE.width, `limit input on screen: ${JSON.stringify(box)}`);
  await screenshot(page, 'dashboard-phone', { fullPage: true });
  assert.deepEqual(page.errors, []);
  await page.context().close();
});
