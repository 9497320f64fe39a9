#!/usr/bin/env bash
# flowinit benchmarks, side by side with supervisord and tini.
#
#   bench/run.sh                 # everything (about 6-9 minutes)
#   bench/run.sh logs reap       # only some: logs units idle reap startup size
#
# FLOWINIT=path/to/flowinit (default: target/release/flowinit of this repo);
# BENCH_REPS, BENCH_LINES, BENCH_UNITS, BENCH_ORPHANS, BENCH_IDLE_SECS,
# BENCH_IDLE_REPS, BENCH_JSON, BENCH_KEEP: see bench/bench.py and
# docs/performance.md. Needs root (unshare -p) and Debian (apt-get).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
export FLOWINIT=${FLOWINIT:-$root/target/release/flowinit}
py=${PYTHON:-python3}

# Peers, installed only when missing.
missing=()
for b in tini tini-static hyperfine unshare strip cc; do
    command -v "$b" >/dev/null 2>&1 || missing+=("$b")
done
if ((${#missing[@]})); then
    pkgs=()
    for b in "${missing[@]}"; do
        case $b in
            tini|tini-static) pkgs+=(tini) ;;
            hyperfine) pkgs+=(hyperfine) ;;
            unshare) pkgs+=(util-linux) ;;
            strip) pkgs+=(binutils) ;;
            cc) pkgs+=(gcc libc6-dev) ;;
        esac
    done
    echo "installing ${pkgs[*]} with apt-get" >&2
    (apt-get install -y -qq "${pkgs[@]}" >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq "${pkgs[@]}" >/dev/null; }) ||
        echo "warning: could not install ${pkgs[*]}" >&2
fi
if ! "$py" -c 'import supervisor' 2>/dev/null; then
    echo "installing supervisor with pip" >&2
    "$py" -m pip install -q supervisor >&2
fi

# Helpers compiled into a temporary directory, removed on exit.
BENCH_BIN=$(mktemp -d /tmp/flowinit-bench-bin-XXXXXX)
export BENCH_BIN
trap 'rm -rf "$BENCH_BIN"' EXIT
cc -O2 -Wall -o "$BENCH_BIN/gen" "$here/gen.c"
cc -O2 -Wall -o "$BENCH_BIN/orphans" "$here/orphans.c"

# A whole run is bounded: nothing in it should take more than ~10 minutes.
timeout --foreground -k 10 "${BENCH_TIMEOUT:-1200}" "$py" "$here/bench.py" "$@"
