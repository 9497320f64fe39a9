#!/usr/bin/env bash
# flowinit's router side by side with nginx as a reverse proxy (issue 5).
#
#   bench/router.sh              # ~5 minutes: 4 peers x 2 loads x 3 repetitions
#
# Prints a table and PASS/FAIL per goal, and rewrites the benchmark block of
# docs/router.md (ROUTER_BENCH_RECORD=0 to leave it alone).
# FLOWINIT=path/to/flowinit (default: target/release/flowinit of this repo);
# ROUTER_BENCH_SECS (10), ROUTER_BENCH_WARMUP (2), ROUTER_BENCH_REPS (3),
# ROUTER_BENCH_KEEP=1 keeps the temp dir. Loopback only; every process it
# starts is stopped by pid. Needs Debian (apt-get) for nginx and wrk.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
export FLOWINIT=${FLOWINIT:-$root/target/release/flowinit}

missing=()
for b in nginx wrk; do
    command -v "$b" >/dev/null 2>&1 || missing+=("$b")
done
if ((${#missing[@]})); then
    echo "installing ${missing[*]} with apt-get" >&2
    apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; }
fi
ulimit -n 65536 2>/dev/null || true

# Bounded: the whole run should take ~5 minutes with the defaults.
timeout --foreground -k 10 "${ROUTER_BENCH_TIMEOUT:-900}" python3 "$here/router/bench.py" "$@"
