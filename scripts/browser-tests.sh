#!/usr/bin/env bash
# Browser tests (browser-tests/*.test.mjs): Debian's chromium driven by playwright-core (pinned
# in browser-tests/package-lock.json; no browser download), run by node's test runner against a
# real `buildlogs all` that each test file starts (browser-tests/lib/server.mjs).
#
#   scripts/browser-tests.sh [test file …]
#
# Runs every test on the embedded stack (SQLite, a local folder), then on the production stack
# (PostgreSQL schema, Redis prefix, S3 bucket of their own, removed after) when
# BUILDLOGS_TEST_DATABASE_URL, BUILDLOGS_TEST_REDIS_URL and BUILDLOGS_TEST_S3_ENDPOINT/_ROOT/
# _ACCESS_KEY/_SECRET_KEY are set (.ci/run sets them). Screenshots: target/browser-screenshots/.
# Prints `browser tests: N passed, N failed` last; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

if [[ ! -x "${BUILDLOGS_CHROMIUM:-/usr/bin/chromium}" ]]; then
  log "installing chromium (Debian's)"
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi

# The dashboard tests seed dead jobs straight into the queue's store (browser-tests/lib/dashboard.mjs).
if ! command -v sqlite3 >/dev/null; then
  log "installing sqlite3 (Debian's)"
  apt-get update -qq && apt-get install -y -qq sqlite3 >/dev/null
fi

log "npm ci (browser-tests/)"
(cd browser-tests && npm ci --no-audit --no-fund --loglevel=error)

log "build"
cargo build --locked -p buildlogs-workers --bin buildlogs --quiet

target="${CARGO_TARGET_DIR:-target}"
rm -rf "$target/browser-screenshots"
mkdir -p "$target/browser-screenshots"
results="$(mktemp -d)"
trap 'rm -rf "$results"' EXIT

stacks=(embedded)
if [[ -n "${BUILDLOGS_TEST_DATABASE_URL:-}" && -n "${BUILDLOGS_TEST_REDIS_URL:-}" \
  && -n "${BUILDLOGS_TEST_S3_ENDPOINT:-}" && -n "${BUILDLOGS_TEST_S3_ROOT:-}" \
  && -n "${BUILDLOGS_TEST_S3_ACCESS_KEY:-}" && -n "${BUILDLOGS_TEST_S3_SECRET_KEY:-}" ]]; then
  stacks+=(production)
else
  echo "production stack skipped: BUILDLOGS_TEST_DATABASE_URL, _REDIS_URL and _S3_* not all set"
fi

if [[ $# -gt 0 ]]; then files=("$@"); else files=(browser-tests/*.test.mjs); fi
files=("${files[@]#browser-tests/}")

status=0
for stack in "${stacks[@]}"; do
  log "browser tests: $stack stack"
  # One file at a time: each starts its own server and chromium on 2 shared cores.
  (cd browser-tests && BUILDLOGS_BROWSER_STACK="$stack" node --test --test-concurrency=1 \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$results/$stack.tap" \
    "${files[@]}") || status=1
done

# One closing line: the tap summaries (`# pass N`, `# fail N`) of every stack.
awk '/^# pass / { p += $3 } /^# fail / { f += $3 } END { printf "\nbrowser tests: %d passed, %d failed\n", p, f }' \
  "$results"/*.tap
echo "screenshots: $target/browser-screenshots/"
exit "$status"
