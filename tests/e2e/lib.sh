# Shared helpers of the end-to-end scripts (sourced, not run): counters,
# PASS/FAIL lines, timing. Each script prints "N passed, M failed" at the end.
# shellcheck shell=bash

PASSED=0
FAILED=0
# Read by the scripts that source this file.
# shellcheck disable=SC2034
T0=$(date +%s.%N)

say() { printf '%s\n' "$*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
pass() { PASSED=$((PASSED + 1)); say "PASS  $*"; }
fail() { FAILED=$((FAILED + 1)); say "FAIL  $*"; }
check() { # check "description" command...
  local d=$1; shift
  if "$@"; then pass "$d"; else fail "$d"; fi
}
