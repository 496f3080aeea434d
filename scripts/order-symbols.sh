#!/usr/bin/env bash
# Regenerates workers/link/hot-symbols.txt: the functions of the `buildlogs` binary that a job
# worker executes, which the release link (workers/build.rs) lays out next to each other.
#
#   scripts/order-symbols.sh [--jobs N]
#
# Why: the kernel maps a binary's text in 64 KiB windows around each page first touched, and
# the linker scatters a worker's ~1.3 MB of hot code over the 15 MB of text; a no-op worker
# had 5.4 MB of text resident. Laid out together, `bench queue`'s worker peaks at 6.2-6.6 MB
# of RSS instead of 10.9-12.2 MB.
#
# How: a release build runs `bench queue` at c=10 with its worker under callgrind (valgrind,
# installed with apt when missing), which lists every function the worker ran: start-up,
# fetching, running and acking jobs, shutdown. Symbols are mangled names; their hashes change
# only with a dependency's version, features or the compiler, so the file stays valid across
# ordinary code changes and a stale one only costs RSS (unknown names are ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

jobs=5000
while [[ $# -gt 0 ]]; do
  case "$1" in
    --jobs) jobs="$2"; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

if ! command -v valgrind >/dev/null; then
  apt-get update -qq && apt-get install -y -qq valgrind
fi

cargo build --release --locked -p buildlogs-workers
exe="$PWD/target/release/buildlogs"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

BENCH_WORKER_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=$out/callgrind.%p --compress-strings=no --compress-pos=no --demangle=no" \
  "$exe" bench queue --concurrency 10 --jobs "$jobs"

# callgrind names each function under the object it belongs to ("ob=", or "cob=" for a
# callee); keep the binary's own, without callgrind's recursion suffix ('2).
awk -v exe="$exe" '
  /^ob=/  { ob = substr($0, 4) }
  /^cob=/ { cob = substr($0, 5) }
  /^fn=/  { if (ob == exe) print substr($0, 4) }
  /^cfn=/ { if ((cob != "" ? cob : ob) == exe) print substr($0, 5); cob = "" }
' "$out"/callgrind.* |
  sed "s/'[0-9]*\$//" | grep -v -e '^0x' -e '^(below main)' | LC_ALL=C sort -u \
  >workers/link/hot-symbols.txt

echo "workers/link/hot-symbols.txt: $(wc -l <workers/link/hot-symbols.txt) symbols"
