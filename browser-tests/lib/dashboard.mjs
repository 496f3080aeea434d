// What the dashboard tests need besides the API: signing in, and seeding what no API makes
// (dead jobs in the job queue, a partial log) straight into the server's own stores: SQLite on
// the embedded stack, Redis and PostgreSQL on the production one.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { ADMIN_TOKEN } from './server.mjs';

/** Opens /admin and signs in with `token`; waits for the first figures. */
export async function signIn(page, server, token = ADMIN_TOKEN) {
  await page.goto(`${server.url}/admin`);
  await page.locator('#login').waitFor({ state: 'visible' });
  await page.fill('#token', token);
  await page.click('#login button[type=submit]');
  await page.locator('#dashboard').waitFor({ state: 'visible' });
  await page.locator('#updated', { hasText: /updated/ }).waitFor();
}

/** Runs one SQL statement on the server's metadata database. */
export function sql(server, statement) {
  if (server.stack === 'embedded') {
    return execFileSync('sqlite3', ['-cmd', '.timeout 5000', join(server.dataDir, 'buildlogs.db'), statement])
      .toString();
  }
  return execFileSync('psql', ['-XAtq', server.env.DATABASE_URL, '-c', statement]).toString();
}

/**
 * Puts a job straight into `queue`'s dead set (as the broker buries one that used its attempts):
 * `id`, died `agoMs` ago with `error`.
 */
export function seedDeadJob(server, { queue, id, error, payload = '{}', agoMs = 60_000 }) {
  const died = Date.now() - agoMs;
  if (server.stack === 'embedded') {
    const q = (s) => `'${s.replace(/'/g, "''")}'`;
    sql(server, `INSERT INTO job_queues (queue) VALUES (${q(queue)}) ON CONFLICT DO NOTHING;
      INSERT INTO jobs (id, queue, state, attempt, max_attempts, dedup_mode, dedup_key,
        enqueued_at_ms, payload, died_at_ms, error)
      VALUES (${q(id)}, ${q(queue)}, 'dead', 3, 3, 'n', '', ${died - 1000}, ${q(payload)}, ${died}, ${q(error)})`);
    return;
  }
  // The Redis broker's keys (jobs/src/redis/keys.rs) and envelope wire form (envelope.rs).
  const prefix = server.env.BUILDLOGS_REDIS_PREFIX;
  const base = `${prefix}:{${queue}}:`;
  const envelope = `n|${id}|3|3||${died - 1000}|${queue}|${payload}`;
  const redis = (...args) => execFileSync('redis-cli', ['-u', server.env.REDIS_URL, ...args]);
  redis('SADD', `${prefix}:queues`, queue);
  redis('ZADD', `${base}dead`, String(died), id);
  redis('HSET', `${base}dead:data`, id, envelope);
  redis('HSET', `${base}dead:error`, id, error);
}

/**
 * Puts a job straight into `queue`'s schedule as a retry waiting out its backoff (as the broker
 * keeps one whose run failed): `id`, after `attempt` runs, due in `inMs`, its last `error`.
 */
export function seedRetryingJob(server, { queue, id, error, attempt = 1, inMs = 3_600_000 }) {
  const runAt = Date.now() + inMs;
  const enqueued = Date.now() - 60_000;
  if (server.stack === 'embedded') {
    const q = (s) => `'${s.replace(/'/g, "''")}'`;
    sql(server, `INSERT INTO job_queues (queue) VALUES (${q(queue)}) ON CONFLICT DO NOTHING;
      INSERT INTO jobs (id, queue, state, attempt, max_attempts, dedup_mode, dedup_key,
        enqueued_at_ms, payload, run_at_ms, error)
      VALUES (${q(id)}, ${q(queue)}, 'scheduled', ${attempt}, 5, 'n', '', ${enqueued}, '{}', ${runAt}, ${q(error)})`);
    return;
  }
  const prefix = server.env.BUILDLOGS_REDIS_PREFIX;
  const base = `${prefix}:{${queue}}:`;
  const envelope = `n|${id}|${attempt}|5||${enqueued}|${queue}|{}`;
  const redis = (...args) => execFileSync('redis-cli', ['-u', server.env.REDIS_URL, ...args]);
  redis('SADD', `${prefix}:queues`, queue);
  redis('ZADD', `${base}scheduled`, String(runAt), envelope);
  redis('HSET', `${base}retry:error`, id, error);
}

/** GET an admin JSON view with the admin token. */
export async function adminJson(server, path) {
  const res = await fetch(`${server.url}${path}`, { headers: { Authorization: `Bearer ${ADMIN_TOKEN}` } });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return res.json();
}
