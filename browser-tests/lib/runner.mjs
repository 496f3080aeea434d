// Seeds jobs through the HTTP API as a coordinator and a runner would: register
// (POST /api/v4/jobs, admin token), PATCH the log at the acknowledged offset, final PUT with the
// log's CRC32 repeated while it answers 202.
import { crc32 } from 'node:zlib';
import { ADMIN_TOKEN } from './server.mjs';

/** Largest PATCH body the server takes (4 MiB). */
export const MAX_PATCH = 4 * 1024 * 1024;

export class Job {
  constructor(base, created) {
    this.base = base;
    this.id = created.id;
    this.token = created.token;
    this.created = created;
    this.length = 0;
    this.crc = 0;
  }

  /** Appends `data` (string or bytes), in PATCHes of at most 4 MiB. */
  async append(data) {
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data);
    for (let at = 0; at < bytes.length; at += MAX_PATCH) {
      const piece = bytes.subarray(at, Math.min(at + MAX_PATCH, bytes.length));
      const start = this.length;
      const res = await fetch(`${this.base}/api/v4/jobs/${this.id}/trace`, {
        method: 'PATCH',
        headers: {
          'JOB-TOKEN': this.token,
          'Content-Range': `${start}-${start + piece.length - 1}`,
          'Content-Type': 'application/octet-stream',
        },
        body: piece,
      });
      const text = await res.text();
      if (res.status !== 202) throw new Error(`job ${this.id} PATCH at ${start}: ${res.status} ${text}`);
      this.length += piece.length;
      this.crc = crc32(piece, this.crc);
    }
  }

  /** Final PUT (`state`: success or failed), repeated while 202, until 200. */
  async finish(state = 'success', { timeoutMs = 60_000 } = {}) {
    const body = {
      token: this.token,
      state,
      output: {
        checksum: `crc32:${(this.crc >>> 0).toString(16).padStart(8, '0')}`,
        bytesize: String(this.length),
      },
    };
    if (state === 'failed') body.failure_reason = 'script_failure';
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const res = await fetch(`${this.base}/api/v4/jobs/${this.id}`, {
        method: 'PUT',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
      const text = await res.text();
      if (res.status === 200) return;
      if (res.status !== 202) throw new Error(`job ${this.id} final PUT: ${res.status} ${text}`);
      if (Date.now() > deadline) throw new Error(`job ${this.id}: final PUT still 202 after ${timeoutMs} ms`);
      const interval = Number(res.headers.get('X-GitLab-Trace-Update-Interval') || 1);
      await new Promise((ok) => setTimeout(ok, Math.min(interval, 1) * 1000));
    }
  }

  /** The job JSON (`GET /api/v4/jobs/:id`, admin token). */
  async json() {
    const res = await fetch(`${this.base}/api/v4/jobs/${this.id}`, {
      headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    if (!res.ok) throw new Error(`job ${this.id}: GET ${res.status} ${await res.text()}`);
    return res.json();
  }

  /** Waits until the trace's state is `state` (e.g. archived). */
  async waitTraceState(state, { timeoutMs = 60_000 } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const job = await this.json();
      if (job.trace && job.trace.state === state) return job;
      if (Date.now() > deadline) throw new Error(`job ${this.id}: trace ${JSON.stringify(job.trace)}, not ${state}`);
      await new Promise((ok) => setTimeout(ok, 200));
    }
  }
}

/** Registers a new running job on the server at `base`. */
export async function registerJob(base) {
  const res = await fetch(`${base}/api/v4/jobs`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`POST /api/v4/jobs: ${res.status} ${text}`);
  return new Job(base, JSON.parse(text));
}

/** A job with `log` appended and finished (success unless `state` says otherwise). */
export async function seedJob(base, log, { state = 'success', archived = false } = {}) {
  const job = await registerJob(base);
  await job.append(log);
  await job.finish(state);
  if (archived) await job.waitTraceState('archived');
  return job;
}
