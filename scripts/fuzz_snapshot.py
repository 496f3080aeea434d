"""Helper of scripts/fuzz-api.sh: the state a fuzz run must not change, and the run's counts.

  fuzz_snapshot.py setup  BASE ADMIN              -> prints "SENTINEL_ID FUZZ_ID FUZZ_TOKEN"
  fuzz_snapshot.py snap   BASE ADMIN DB SENTINEL  -> prints a JSON snapshot
  fuzz_snapshot.py diff   BEFORE AFTER SCOPE [CREATED]
  fuzz_snapshot.py har    HAR                     -> prints "requests 5xx created"

Snapshot: every row of the build-log tables (builds, chunks, artifacts, trace metadata,
pending states) and of the queues' limits and dead jobs, plus the sentinel job's JSON and the
SHA-256 of its log as the API serves them. `diff ... all` compares everything (a run without a
token may change nothing at all); `diff ... sentinel CREATED` compares the sentinel job only
(its token is never given to the fuzzer; only trace_watched_until, which any reader's stream
legitimately sets, is left out) and checks that the build count grew by at most CREATED, the
201s the HAR shows for POST /api/v4/jobs.

Standard library only; traffic only to BASE (127.0.0.1).
"""

import hashlib
import json
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request

TABLES = {
    "builds": "id",
    "build_trace_chunks": "build_id, chunk_index",
    "job_artifacts": "id",
    "build_trace_metadata": "build_id",
    "build_pending_states": "build_id",
}


def call(base, method, path, token=None, data=None, headers=None):
    request = urllib.request.Request(base + path, data=data, method=method)
    if token:
        request.add_header("Authorization", "Bearer " + token)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def setup(base, admin):
    """A sentinel job (log bytes, running, token kept here) and a job whose token the fuzzer gets."""
    ids = []
    for text in (b"sentinel line 1\nsentinel line 2\n", b"fuzzed job\n"):
        status, body = call(base, "POST", "/api/v4/jobs", admin)
        assert status == 201, (status, body)
        job = json.loads(body)
        status, body = call(
            base,
            "PATCH",
            "/api/v4/jobs/%d/trace" % job["id"],
            data=text,
            headers={"JOB-TOKEN": job["token"], "Content-Range": "0-%d" % (len(text) - 1)},
        )
        assert status == 202, (status, body)
        ids.append(job)
    print(ids[0]["id"], ids[1]["id"], ids[1]["token"])


def rows(db, table, order, where=""):
    cur = db.execute("SELECT * FROM %s %s ORDER BY %s" % (table, where, order))
    names = [d[0] for d in cur.description]
    out = []
    for row in cur.fetchall():
        out.append({n: (v.hex() if isinstance(v, bytes) else v) for n, v in zip(names, row)})
    return out


def pg_rows(url, table, order):
    """A PostgreSQL table's rows as JSON (DB is `postgres://…?options=-csearch_path%3D…`)."""
    sql = "SELECT coalesce(json_agg(t ORDER BY %s), '[]') FROM %s t" % (order, table)
    out = subprocess.run(["psql", "-XAtq", url, "-c", sql], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def snap(base, admin, db, sentinel):
    if db.startswith("postgres"):
        out = {"tables": {t: pg_rows(db, t, o) for t, o in TABLES.items()}}
    else:
        conn = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=30)
        out = {"tables": {t: rows(conn, t, o) for t, o in TABLES.items()}}
    # The queues as the dashboard shows them (either broker): limits set (not every queue: the
    # scheduler's first tick of a schedule adds its queue on its own) and dead jobs.
    status, body = call(base, "GET", "/admin/api/queues", admin)
    queues = json.loads(body)["queues"] if status == 200 else []
    out["queue_limits"] = sorted((q["queue"], q["limit"]) for q in queues if q["limit"] is not None)
    out["dead_jobs"] = sorted((q["queue"], q["dead"]) for q in queues if q["dead"])
    status, body = call(base, "GET", "/api/v4/jobs/%s" % sentinel, admin)
    out["sentinel_json"] = json.loads(body) if status == 200 else status
    status, body = call(base, "GET", "/api/v4/jobs/%s/trace" % sentinel, admin)
    out["sentinel_trace"] = [status, hashlib.sha256(body).hexdigest(), len(body)]
    print(json.dumps(out, sort_keys=True))


def sentinel_view(s, sentinel):
    view = {"json": s["sentinel_json"], "trace": s["sentinel_trace"]}
    for table in TABLES:
        key = "id" if table == "builds" else "build_id"
        picked = [dict(r) for r in s["tables"][table] if r.get(key) == sentinel]
        for r in picked:
            r.pop("trace_watched_until", None)
        view[table] = picked
    return view


def changes(b, a):
    """What differs, briefly: rows gone and rows new (for lists), or both values."""
    if isinstance(b, dict) and isinstance(a, dict):
        return "; ".join("%s: %s" % (k, changes(b.get(k), a.get(k))) for k in sorted(set(b) | set(a)) if b.get(k) != a.get(k))
    if isinstance(b, list) and isinstance(a, list):
        gone = [r for r in b if r not in a][:5]
        new = [r for r in a if r not in b][:5]
        return "gone %r, new %r" % (gone, new)
    return "%r -> %r" % (b, a)


def diff(before_path, after_path, scope, created="0"):
    before = json.load(open(before_path))
    after = json.load(open(after_path))
    problems = []
    if scope == "all":
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                problems.append("%s changed: %s" % (key, changes(before.get(key), after.get(key))))
    else:
        sentinel = before["sentinel_json"]["id"]
        b, a = sentinel_view(before, sentinel), sentinel_view(after, sentinel)
        for key in sorted(b):
            if b[key] != a[key]:
                problems.append("sentinel job %s: %s changed: %r -> %r" % (sentinel, key, b[key], a[key]))
        grew = len(after["tables"]["builds"]) - len(before["tables"]["builds"])
        if grew > int(created):
            problems.append("%d builds appeared, %s registered (201)" % (grew, created))
    for p in problems:
        print("CHANGED: " + p)
    print("changed=%d" % len(problems))
    return 1 if problems else 0


def har(path):
    entries = json.load(open(path))["log"]["entries"]
    fivexx = [e for e in entries if e["response"]["status"] >= 500]
    created = sum(
        1
        for e in entries
        if e["request"]["method"] == "POST"
        and e["request"]["url"].split("?")[0].endswith("/api/v4/jobs")
        and e["response"]["status"] == 201
    )
    for e in fivexx[:20]:
        print(
            "5xx: %s %s -> %s %s"
            % (e["request"]["method"], e["request"]["url"], e["response"]["status"],
               e["response"].get("content", {}).get("text", "")[:200]),
            file=sys.stderr,
        )
    print(len(entries), len(fivexx), created)


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "setup":
        setup(*args)
    elif command == "snap":
        snap(*args)
    elif command == "diff":
        sys.exit(diff(*args))
    elif command == "har":
        har(*args)
    else:
        sys.exit("unknown command " + command)
