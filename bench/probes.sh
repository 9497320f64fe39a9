#!/usr/bin/env bash
# CPU cost of readiness/liveness probes: 50 units probing every 500 ms
# (http, then tcp) against a tiny local server, and 50 units without probes
# (idle baseline, should be 0 ticks). About 4 minutes with the defaults.
#
#   bench/probes.sh
#
# FLOWINIT=path/to/flowinit (default: target/release/flowinit of this repo);
# PROBE_SECS (60), PROBE_UNITS (50), PROBE_KINDS ("http tcp none").
# Loopback only; every process it starts is stopped by pid.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
export FLOWINIT=${FLOWINIT:-$root/target/release/flowinit}
timeout --foreground -k 10 "${PROBE_BENCH_TIMEOUT:-900}" python3 "$here/router/probes.py" "$@"
