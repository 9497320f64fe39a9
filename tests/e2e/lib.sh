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
stop_pid() { # stop_pid PID SIGNAL SECONDS: signal, wait, then SIGKILL
  local pid=$1 sig=$2 secs=$3 i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -s "$sig" "$pid" 2>/dev/null
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -s KILL "$pid" 2>/dev/null
}
child_of() { # the first child of a pid (unshare -f forks flowinit)
  local c first _rest
  c=$(cat "/proc/$1/task/$1/children" 2>/dev/null) || return 0
  read -r first _rest <<<"$c"
  printf '%s' "${first:-}"
}
