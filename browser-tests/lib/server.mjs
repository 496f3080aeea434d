// A real `buildlogs all` for a browser test, on one of two stacks:
// - embedded: SQLite and a local object folder in a temp dir of its own;
// - production: PostgreSQL (a schema of its own in BUILDLOGS_TEST_DATABASE_URL), Redis (a key
//   prefix of its own on BUILDLOGS_TEST_REDIS_URL) and S3 (a bucket of its own on
//   BUILDLOGS_TEST_S3_ENDPOINT, created as a directory under BUILDLOGS_TEST_S3_ROOT, as
//   tests/support/objects.rs does).
// Which one: BUILDLOGS_BROWSER_STACK (default embedded). Everything a server made (process, temp
// dir, schema, keys, bucket) is removed by stop(), and the process is killed if node exits first.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, openSync, readFileSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const TARGET = process.env.CARGO_TARGET_DIR
  ? resolve(REPO, process.env.CARGO_TARGET_DIR)
  : join(REPO, 'target');
export const BINARY = process.env.BUILDLOGS_BIN || join(TARGET, 'debug', 'buildlogs');

/** The stack these tests run on: "embedded" or "production". */
export const STACK = process.env.BUILDLOGS_BROWSER_STACK || 'embedded';

/** Tokens every test server is started with. */
export const ADMIN_TOKEN = 'browser-admin-token-0123456789abcdef';
export const READ_TOKEN = 'browser-read-token-0123456789abcdef';

const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

function freePort() {
  return new Promise((ok, fail) => {
    const probe = createServer();
    probe.on('error', fail);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => ok(port));
    });
  });
}

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`production stack: ${name} is not set`);
  return value;
}

/** Env settings and a cleanup for the stack; `name` makes the schema/prefix/bucket readable. */
function stackSettings(name) {
  if (STACK === 'embedded') return { env: {}, cleanup: () => {} };
  if (STACK !== 'production') throw new Error(`BUILDLOGS_BROWSER_STACK: embedded or production, not ${STACK}`);
  const pg = required('BUILDLOGS_TEST_DATABASE_URL');
  const redis = required('BUILDLOGS_TEST_REDIS_URL');
  const endpoint = required('BUILDLOGS_TEST_S3_ENDPOINT');
  const s3Root = required('BUILDLOGS_TEST_S3_ROOT');
  const unique = `browser_${name.replace(/[^a-z0-9]/gi, '_').toLowerCase()}_${randomBytes(4).toString('hex')}`;
  const bucket = unique.replace(/_/g, '-');
  execFileSync('psql', ['-XAtq', pg, '-c', `CREATE SCHEMA ${unique}`], { stdio: 'pipe' });
  mkdirSync(join(s3Root, bucket));
  const sep = pg.includes('?') ? '&' : '?';
  return {
    env: {
      DATABASE_URL: `${pg}${sep}options=-csearch_path%3D${unique}`,
      REDIS_URL: redis,
      BUILDLOGS_REDIS_PREFIX: unique,
      OBJECT_STORE_URL: `s3://${bucket}`,
      AWS_ENDPOINT_URL: endpoint,
      AWS_ACCESS_KEY_ID: required('BUILDLOGS_TEST_S3_ACCESS_KEY'),
      AWS_SECRET_ACCESS_KEY: required('BUILDLOGS_TEST_S3_SECRET_KEY'),
      AWS_REGION: 'us-east-1',
      AWS_ALLOW_HTTP: 'true',
    },
    cleanup: () => {
      try {
        execFileSync('psql', ['-XAtq', pg, '-c', `DROP SCHEMA IF EXISTS ${unique} CASCADE`], { stdio: 'pipe' });
      } catch (e) {
        console.error(`dropping schema ${unique}: ${e.message}`);
      }
      try {
        // Only this server's keys: the prefix is unique to it.
        const keys = execFileSync('redis-cli', ['-u', redis, '--scan', '--pattern', `${unique}*`])
          .toString().split('\n').filter(Boolean);
        for (let i = 0; i < keys.length; i += 500) {
          execFileSync('redis-cli', ['-u', redis, 'del', ...keys.slice(i, i + 500)]);
        }
      } catch (e) {
        console.error(`deleting redis keys ${unique}*: ${e.message}`);
      }
      rmSync(join(s3Root, bucket), { recursive: true, force: true });
    },
  };
}

/**
 * Starts `buildlogs all` and waits until it answers. `env` is added on top of the defaults.
 * Returns { url, stop(), log(), stack, dataDir, env }.
 */
export async function startServer(name, env = {}) {
  if (!existsSync(BINARY)) {
    throw new Error(`no ${BINARY}: build it first (cargo build -p buildlogs-workers --bin buildlogs)`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'buildlogs-browser-'));
  const stack = stackSettings(name);
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const logPath = join(dir, 'server.log');
  const logFd = openSync(logPath, 'a');
  const child = spawn(BINARY, ['all'], {
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      BUILDLOGS_DATA_DIR: join(dir, 'data'),
      BUILDLOGS_LISTEN: `127.0.0.1:${port}`,
      BUILDLOGS_PUBLIC_URL: url,
      BUILDLOGS_METRICS_LISTEN: 'off',
      BUILDLOGS_ADMIN_TOKEN: ADMIN_TOKEN,
      BUILDLOGS_READ_TOKEN: READ_TOKEN,
      // Tests seed logs as fast as they can: no per-job PATCH rate.
      BUILDLOGS_PATCH_RATE: '0',
      RUST_LOG: process.env.RUST_LOG || 'info',
      RUST_BACKTRACE: '1',
      ...stack.env,
      ...env,
    },
    stdio: ['ignore', logFd, logFd],
  });
  running.add(child);
  let exited = false;
  child.on('exit', () => {
    exited = true;
    running.delete(child);
  });
  const log = () => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : '');
  const stop = async () => {
    if (!exited) {
      const gone = new Promise((ok) => child.once('exit', ok));
      child.kill('SIGKILL');
      await gone;
    }
    stack.cleanup();
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (exited) {
      const text = log();
      await stop();
      throw new Error(`buildlogs exited at start:\n${text.slice(-4000)}`);
    }
    try {
      const res = await fetch(`${url}/api/v4/openapi.json`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      const text = log();
      await stop();
      throw new Error(`buildlogs did not answer on ${url} within 60 s:\n${text.slice(-4000)}`);
    }
    await new Promise((ok) => setTimeout(ok, 100));
  }
  // dataDir and env let a test seed what no API makes (e.g. a dead job in the job queue).
  return { url, stop, log, stack: STACK, dataDir: join(dir, 'data'), env: stack.env };
}
