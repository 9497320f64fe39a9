#!/usr/bin/env bash
# Real-container test: the release flowinit as PID 1 under a real Docker
# engine (dockerd + containerd + runc), started by this script with its own
# data root, socket and exec root, and stopped again at the end.
#
#   sudo tests/e2e/docker.sh              # from the repository root, as root
#
# Nothing is pulled: the base image is `docker import`ed from a rootfs with
# Debian's busybox-static; the test image (tests/e2e/docker/Dockerfile) adds
# a static flowinit as ENTRYPOINT, the units of tests/e2e/docker/units and
# `HEALTHCHECK CMD ["flowinit","status","--quiet"]`. Containers run with
# `--network none` (no iptables here); the router's :3000 is reached from
# inside the container with `docker exec C busybox wget`.
#
# What it checks, under runc:
#   flowinit is PID 1 (no `docker run --init`); `docker logs` shows prefixed
#   lines (services on stdout, flowinit's own on stderr); the HEALTHCHECK
#   turns healthy; `docker exec C flowinit status`; the router answers on
#   :3000 (and 503 while its unit is stopped); a unit with `user = "nobody"`
#   runs (user lookup in the static binary); orphans are reparented to PID 1
#   and no zombie stays; `docker kill -s HUP` reloads edited units (a new unit
#   starts, a changed one restarts, an unchanged one keeps its pid; a broken
#   file is refused and the running set kept); `docker stop` -> exit 0 well
#   inside its 10 s, in reverse order; a critical unit's failure -> exit 1;
#   a never-ready unit -> unhealthy; a unit ignoring SIGTERM -> flowinit's 9 s
#   budget ends the stop before docker's SIGKILL (exit 0); `docker start`
#   after a clean stop and after `docker kill -s KILL` (stale control socket).
#
# Environment (all optional):
#   FLOWINIT_BIN       use this flowinit binary instead of building one (a
#                      dynamically linked one gets its libraries copied in)
#   DOCKER_E2E_TARGET  CARGO_TARGET_DIR for the static build (default /tmp/docker-target)
#   E2E_TIMEOUT        overall limit in seconds (default 900)
#   E2E_KEEP=1         keep the temp dir (dockerd log, container logs)
#
# Output: one PASS/FAIL line per check, timings, and a final line
# "N passed, M failed". Exit 0 only if every check passed; 77 (with
# "SKIPPED: ..." on stderr) when dockerd cannot start or run a container
# here; 1 otherwise.

# Note: set -o pipefail is on, so no `producer | grep -q` in this shell (an
# early grep exit SIGPIPEs the producer and fails the pipeline).
# The checks pass values to `bash -c '...'` as positional arguments on
# purpose; the single quotes are not a mistake.
# shellcheck disable=SC2016
set -uo pipefail

# ---- overall time limit -------------------------------------------------
if [ -z "${E2E_UNDER_TIMEOUT:-}" ]; then
  export E2E_UNDER_TIMEOUT=1
  exec timeout --foreground -k 20 "${E2E_TIMEOUT:-900}" bash "$0" "$@"
fi

REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$REPO/tests/e2e/docker
BASE_IMAGE=flowinit-test-base:latest
IMAGE=flowinit-test:latest
SKIP_RC=77

# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"

# ---- cleanup ------------------------------------------------------------
TMP=""
DOCKERD_PID=""
CONTAINERS=()   # names of the containers this run created
IMAGES_BUILT=() # images this run created

stop_pid() { # stop_pid PID SIGNAL SECONDS: signal, wait, then SIGKILL
  local pid=$1 sig=$2 secs=$3 i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -s "$sig" "$pid" 2>/dev/null
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  say "      pid $pid still alive after ${secs}s: SIGKILL"
  kill -s KILL "$pid" 2>/dev/null
  sleep 0.2
}

# Processes whose command line names our temp dir: containerd and its shims
# if dockerd had to be SIGKILLed and left them behind. Ours by construction
# (the path is unique to this run).
leftover_pids() {
  local p c
  [ -n "$TMP" ] || return 0
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    c=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
    [[ $c == *"$TMP/"* ]] && printf '%s\n' "${p#/proc/}"
  done
}

cleanup() {
  local rc=$? c i p m
  trap - EXIT INT TERM
  if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
    for c in "${CONTAINERS[@]}"; do dk rm -f "$c" >/dev/null 2>&1; done
    for i in "${IMAGES_BUILT[@]}"; do dk rmi -f "$i" >/dev/null 2>&1; done
    stop_pid "$DOCKERD_PID" TERM 20
    wait "$DOCKERD_PID" 2>/dev/null
  fi
  DOCKERD_PID=""
  for p in $(leftover_pids); do
    say "      leftover process $p ($(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | cut -c1-80)): stopping it"
    stop_pid "$p" TERM 5
  done
  if [ -n "$TMP" ] && [ -d "$TMP" ]; then
    # Mounts dockerd may have left under the temp dir (overlay, shm, netns).
    while read -r m; do
      umount -l "$m" 2>/dev/null
    done < <(awk -v t="$TMP/" 'index($5, t) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
    if [ "${E2E_KEEP:-}" = 1 ]; then say "kept $TMP"; else rm -rf "$TMP"; fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted (time limit ${E2E_TIMEOUT:-900}s or signal)"; FAILED=$((FAILED + 1)); summary; exit 1' INT TERM

summary() {
  say ""
  say "total time: $(elapsed "$T0") s"
  say "$PASSED passed, $FAILED failed"
}

die() { say "SETUP ERROR: $*"; FAILED=$((FAILED + 1)); summary; exit 1; }

skip() { # skip REASON: the engine cannot run here; distinct exit code
  printf 'SKIPPED: %s\n' "$*" >&2
  if [ -n "$TMP" ] && [ -s "$TMP/dockerd.log" ]; then
    printf -- '--- last lines of the dockerd log (%s):\n' "$TMP/dockerd.log" >&2
    tail -30 "$TMP/dockerd.log" >&2
  fi
  exit "$SKIP_RC"
}

# ---- prerequisites ------------------------------------------------------
[ "$(id -u)" = 0 ] || die "run as root (dockerd)"

need=()
command -v dockerd >/dev/null || need+=(docker.io)
# busybox-static, not busybox: the base image has no libc.
[ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null)" = "install ok installed" ] || need+=(busybox-static)
command -v jq >/dev/null || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]} (apt-get) ..."
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >/dev/null 2>&1 ||
    die "apt-get install ${need[*]} failed"
fi
BUSYBOX=$(command -v busybox) || die "no busybox after installing busybox-static"
# ldd says "not a dynamic executable" (or "statically linked") for static ones.
case $(ldd "$BUSYBOX" 2>&1) in
  *"not a dynamic executable"* | *"statically linked"*) ;;
  *) die "$BUSYBOX is not statically linked (install busybox-static)" ;;
esac
# The CLI that comes with the engine (the docker.io package): a newer client
# elsewhere on PATH may want an API or buildx this daemon does not have.
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=$(command -v docker) || die "no docker CLI"

# ---- flowinit -----------------------------------------------------------
if [ -n "${FLOWINIT_BIN:-}" ]; then
  FLOWINIT=$FLOWINIT_BIN
else
  say "building flowinit (release, static glibc: -C target-feature=+crt-static) ..."
  t=$(now)
  export CARGO_TARGET_DIR=${DOCKER_E2E_TARGET:-/tmp/docker-target}
  (cd "$REPO" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --quiet --target x86_64-unknown-linux-gnu) || die "cargo build (static) failed"
  FLOWINIT=$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/flowinit
  say "      build took $(elapsed "$t") s"
fi
[ -x "$FLOWINIT" ] || die "no flowinit binary at $FLOWINIT"

TMP=$(mktemp -d /tmp/flowinit-docker.XXXXXX)
chmod 755 "$TMP"

# ---- dockerd ------------------------------------------------------------
SOCK=$TMP/docker.sock
export DOCKER_HOST=unix://$SOCK
export DOCKER_CONFIG=$TMP/cli # keep the CLI away from ~/.docker
export DOCKER_BUILDKIT=0      # the classic builder: no buildx needed
mkdir -p "$TMP/data" "$TMP/exec" "$TMP/cli"
echo '{}' >"$TMP/daemon.json" # not /etc/docker/daemon.json
dk() { "$DOCKER" "$@"; }

say "starting dockerd (data root $TMP/data, socket $SOCK) ..."
t=$(now)
dockerd --config-file "$TMP/daemon.json" --data-root "$TMP/data" --exec-root "$TMP/exec" \
  --host "unix://$SOCK" --pidfile "$TMP/dockerd.pid" \
  --iptables=false --ip6tables=false --bridge=none >"$TMP/dockerd.log" 2>&1 &
DOCKERD_PID=$!
up=0
deadline=$(($(date +%s) + 30))
while [ "$(date +%s)" -lt "$deadline" ]; do
  if ! kill -0 "$DOCKERD_PID" 2>/dev/null; then
    wait "$DOCKERD_PID"
    rc=$?
    DOCKERD_PID=""
    reason=$(grep -E 'level=(fatal|error)|failed to start' "$TMP/dockerd.log" | tail -1)
    skip "dockerd could not start: it exited with status $rc${reason:+: $reason}"
  fi
  if dk version >/dev/null 2>&1; then up=1; break; fi
  sleep 0.1
done
[ "$up" = 1 ] || skip "dockerd could not start: no answer on $SOCK within 30 s"
say "      dockerd $(dk version -f '{{.Server.Version}}' 2>/dev/null) answered after $(elapsed "$t") s (pid $DOCKERD_PID)"

# ---- base image: busybox rootfs, imported ----------------------------------
ROOTFS=$TMP/rootfs
mkdir -p "$ROOTFS/bin" "$ROOTFS/etc" "$ROOTFS/tmp" "$ROOTFS/root" "$ROOTFS/run" \
  "$ROOTFS/usr/local/bin" "$ROOTFS/var/log"
chmod 1777 "$ROOTFS/tmp"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
for a in $("$BUSYBOX" --list); do
  [ "$a" = busybox ] || ln -sf busybox "$ROOTFS/bin/$a"
done
cat >"$ROOTFS/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$ROOTFS/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
LDD_OUT=$(ldd "$FLOWINIT" 2>&1)
if grep -q '=>' <<<"$LDD_OUT"; then
  # Dynamically linked (FLOWINIT_BIN): its libraries and the loader go into
  # the base rootfs with their paths.
  say "      $FLOWINIT is dynamically linked: copying its shared libraries into the base image"
  while read -r lib; do
    mkdir -p "$ROOTFS$(dirname "$lib")"
    cp -L "$lib" "$ROOTFS$lib"
  done < <(grep -oE '/[^ ]+' <<<"$LDD_OUT")
else
  say "      $FLOWINIT is statically linked"
fi
tar -C "$ROOTFS" -c . | dk import - "$BASE_IMAGE" >/dev/null || die "docker import of the busybox rootfs failed"
IMAGES_BUILT+=("$BASE_IMAGE")

# Can this engine run a container at all? (cgroups, seccomp, overlay, runc)
if ! out=$(timeout 60 "$DOCKER" run --rm --network none "$BASE_IMAGE" /bin/sh -c 'echo container-ok' 2>&1) ||
  [ "$out" != container-ok ]; then
  skip "dockerd started but cannot run a container: $(printf '%s' "$out" | tail -3 | tr '\n' ' ')"
fi

# ---- test image ---------------------------------------------------------
CTX=$TMP/context
mkdir -p "$CTX"
cp "$HERE/Dockerfile" "$CTX/Dockerfile"
cp -r "$HERE/units" "$HERE/units-critical" "$HERE/units-stubborn" "$HERE/units-unready" "$CTX/"
cp "$FLOWINIT" "$CTX/flowinit"
t=$(now)
dk build -q -t "$IMAGE" "$CTX" >"$TMP/build.log" 2>&1 || { cat "$TMP/build.log"; die "docker build failed"; }
IMAGES_BUILT+=("$IMAGE")
say "      built $IMAGE in $(elapsed "$t") s"

# ---- helpers ------------------------------------------------------------
# run_container NAME [docker run args...] -> detached; records the name
# run_container NAME [docker run options...] [-- COMMAND ARGS...] -> detached
run_container() {
  local name=$1 opts=() a
  shift
  while [ $# -gt 0 ]; do
    a=$1; shift
    [ "$a" = -- ] && break
    opts+=("$a")
  done
  CONTAINERS+=("$name")
  dk run -d --name "$name" --network none "${opts[@]}" "$IMAGE" "$@" >/dev/null
}

state_of() { dk inspect -f "$2" "$1" 2>/dev/null; }

# wait_health C WANT SECONDS -> 0 when .State.Health.Status is WANT
wait_health() {
  local c=$1 want=$2 secs=$3 start st
  start=$(date +%s)
  while [ $(($(date +%s) - start)) -lt "$secs" ]; do
    st=$(state_of "$c" '{{.State.Health.Status}}')
    [ "$st" = "$want" ] && return 0
    [ "$(state_of "$c" '{{.State.Running}}')" = true ] || { say "      $c is not running"; return 1; }
    sleep 0.1
  done
  say "      health of $c is '$st', not '$want', after ${secs}s"
  return 1
}

# wait_exit C SECONDS -> 0 when the container has stopped
wait_exit() {
  local c=$1 secs=$2 i
  for ((i = 0; i < secs * 10; i++)); do
    [ "$(state_of "$c" '{{.State.Running}}')" = false ] && return 0
    sleep 0.1
  done
  return 1
}

fi_json() { dk exec "$1" flowinit status --json 2>/dev/null; }
unit_field() { # unit_field C UNIT FIELD -> the value from status --json
  fi_json "$1" | jq -r --arg u "$2" --arg f "$3" '.units[] | select(.name == $u) | .[$f]'
}
wait_unit_state() { # wait_unit_state C UNIT STATE SECONDS
  local c=$1 u=$2 want=$3 secs=$4 i st
  for ((i = 0; i < secs * 5; i++)); do
    st=$(unit_field "$c" "$u" state)
    [ "$st" = "$want" ] && return 0
    sleep 0.2
  done
  say "      unit $u is '${st:-none}', not '$want'"
  return 1
}

logs_have() { # logs_have C REGEX [SECONDS]: docker logs (both streams) match
  local c=$1 re=$2 secs=${3:-10} i
  for ((i = 0; i < secs * 5; i++)); do
    # (not `| grep -q`: with pipefail, docker logs' SIGPIPE would count)
    grep -qE -- "$re" <<<"$(dk logs "$c" 2>&1)" && return 0
    sleep 0.2
  done
  say "      no line matching /$re/ in docker logs $c"
  return 1
}

# In the container: pids in state Z, as "pid:comm:ppid" (one a line).
ZSCAN='for s in /proc/[0-9]*/stat; do
  read -r l <"$s" 2>/dev/null || continue
  rest=${l##*) }; set -- $rest
  [ "$1" = Z ] && { p=${s#/proc/}; echo "${p%/stat}:$(cat /proc/${p%/stat}/comm 2>/dev/null):$2"; }
done; true'

# In the container: processes named sleep whose parent is PID 1 (orphans
# flowinit adopted: the units' own sleeps have their shell as parent).
ORPHANSCAN='n=0; for s in /proc/[0-9]*/status; do
  c=$(sed -n "s/^Name:[[:space:]]*//p" "$s" 2>/dev/null)
  pp=$(sed -n "s/^PPid:[[:space:]]*//p" "$s" 2>/dev/null)
  [ "$c" = sleep ] && [ "$pp" = 1 ] && n=$((n+1))
done; echo $n'

# ---- 1. the main container ------------------------------------------------
say ""
say "== container fi-main: $IMAGE with tests/e2e/docker/units"
T_RUN=$(now)
run_container fi-main || die "docker run fi-main failed"

check "flowinit is PID 1 (no docker run --init): /proc/1/cmdline is flowinit" bash -c '
  cmd=$("$1" exec fi-main cat /proc/1/cmdline | tr "\0" " ")
  case $cmd in "/usr/local/bin/flowinit "|"/usr/local/bin/flowinit") exit 0 ;; esac
  echo "      /proc/1/cmdline: $cmd"; exit 1' _ "$DOCKER"
check "docker did not add an init (HostConfig.Init is not true)" \
  bash -c '[ "$("$1" inspect -f "{{.HostConfig.Init}}" fi-main)" != true ]' _ "$DOCKER"

if wait_health fi-main healthy 30; then
  TO_HEALTHY=$(elapsed "$T_RUN")
  pass "HEALTHCHECK (flowinit status --quiet) turned healthy ($TO_HEALTHY s after docker run returned)"
else
  TO_HEALTHY=never
  fail "HEALTHCHECK turned healthy within 30 s"
  dk logs fi-main 2>&1 | tail -30
  dk inspect -f '{{json .State.Health}}' fi-main | jq . 2>/dev/null | tail -20
fi

check "docker logs: a unit's lines are prefixed (ticker | tick N)" logs_have fi-main '^ticker +\| tick [0-9]+$'
check "docker logs: flowinit's own lines are prefixed (flowinit | ...)" logs_have fi-main '^flowinit +\| unit web is ready'
check "docker logs: the oneshot's output (setup | done) and its exit" bash -c '
  l=$("$1" logs fi-main 2>&1); grep -qE "^setup +\| done$" <<<"$l" && grep -qE "^flowinit +\| unit setup exited 0" <<<"$l"' _ "$DOCKER"
check "user = \"nobody\" works in the image (whoami | uid=65534(nobody))" \
  logs_have fi-main '^whoami +\| uid=65534\(nobody\)'
check "docker logs: ticker lines complete and in order (tick 1, 2, 3, 4)" bash -c '
  for _ in $(seq 50); do
    got=$("$1" logs fi-main 2>/dev/null | sed -n "s/^ticker *| tick //p" | head -4 | tr "\n" " ")
    [ "$got" = "1 2 3 4 " ] && exit 0
    sleep 0.2
  done
  echo "      ticker lines: $got"; exit 1' _ "$DOCKER"

dk exec fi-main flowinit status >"$TMP/status-main.txt" 2>&1
ST_RC=$?
check "docker exec fi-main flowinit status: exit 0 and the table (web ready, setup exited, router)" bash -c '
  [ "$1" = 0 ] && head -1 "$2" | grep -qE "^UNIT +STATE +PID" &&
  grep -qE "^web +ready " "$2" && grep -qE "^setup +exited " "$2" && grep -qE "^router +(ready|running) " "$2"' \
  _ "$ST_RC" "$TMP/status-main.txt"
check "status --json: every unit ready or exited" bash -c '
  "$1" exec fi-main flowinit status --json | jq -e "[.units[] | select(.state != \"ready\" and .state != \"running\" and .state != \"exited\")] | length == 0" >/dev/null' _ "$DOCKER"

check "router answers on :3000 inside the container (GET / -> web's page)" bash -c '
  out=$("$1" exec fi-main busybox wget -qO- http://127.0.0.1:3000/ 2>&1)
  [ "$out" = "hello from busybox httpd" ] || { echo "      got: $out"; exit 1; }' _ "$DOCKER"
check "router's access log: router | ... GET / 200 ... -> 127.0.0.1:8080" \
  logs_have fi-main '^router +\| [0-9.]+:[0-9]+ GET / 200 .*-> 127\.0\.0\.1:8080$'
# While web is stopped by an operator the router answers 503, not a refused connection.
dk exec fi-main flowinit stop web >/dev/null 2>&1
check "router answers 503 while web is stopped (flowinit stop web)" bash -c '
  out=$("$1" exec fi-main busybox wget -S -qO- http://127.0.0.1:3000/ 2>&1)
  grep -q "503" <<<"$out" || { echo "      got: $out"; exit 1; }' _ "$DOCKER"
check "router's access log shows the 503" logs_have fi-main '^router +\| [0-9.]+:[0-9]+ GET / 503 '
dk exec fi-main flowinit start web >/dev/null 2>&1
check "flowinit start web: web ready again and the router serves it" bash -c '
  "$1" exec fi-main busybox wget -qO- http://127.0.0.1:3000/ 2>/dev/null | grep -qx "hello from busybox httpd"' _ "$DOCKER"

# ---- zombies --------------------------------------------------------------
sleep 2
ADOPTED=0
for _ in 1 2 3 4 5; do
  n=$(dk exec fi-main sh -c "$ORPHANSCAN" 2>/dev/null)
  [ "${n:-0}" -gt "$ADOPTED" ] && ADOPTED=$n
  sleep 0.2
done
check "orphans are reparented to PID 1 (up to $ADOPTED adopted sleeps seen at once)" test "$ADOPTED" -gt 0
check "orphans unit is spawning (orphans | orphans so far: N)" logs_have fi-main '^orphans +\| orphans so far: [0-9]+'
# A zombie may exist for an instant between an exit and the reap: a pid
# counts only if it is still a zombie half a second later.
zombies_linger() {
  local first again p lingering=""
  for _ in 1 2 3 4 5 6; do
    first=$(dk exec fi-main sh -c "$ZSCAN" 2>/dev/null)
    if [ -n "$first" ]; then
      sleep 0.5
      again=$(dk exec fi-main sh -c "$ZSCAN" 2>/dev/null)
      for p in $first; do grep -qxF -- "$p" <<<"$again" && lingering="$lingering $p"; done
    fi
    sleep 0.3
  done
  [ -z "$lingering" ] || { say "      zombies that stayed (pid:comm:ppid):$lingering"; return 1; }
}
check "no zombie stays (scan of /proc/*/stat in the container, 6 rounds over ~3 s)" zombies_linger
# busybox ps, with the same rule: the orphans unit makes short-lived
# processes all the time, so one snapshot may catch an exit not yet reaped.
ps_zombies() { dk exec fi-main ps -o pid,stat,comm | awk 'NR > 1 && $2 ~ /^Z/ { print $1 }'; }
ps_agrees() {
  local first again p lingering=""
  first=$(ps_zombies)
  [ -z "$first" ] && return 0
  sleep 0.5
  again=$(ps_zombies)
  for p in $first; do grep -qxF -- "$p" <<<"$again" && lingering="$lingering $p"; done
  [ -z "$lingering" ] || { say "      zombies in ps that stayed:$lingering"; return 1; }
}
check "busybox ps agrees: no process stays in state Z" ps_agrees

# ---- reload on SIGHUP --------------------------------------------------------
say ""
say "== docker kill -s HUP: reload edited units"
WEB_PID_BEFORE=$(unit_field fi-main web pid)
TICKER_PID_BEFORE=$(unit_field fi-main ticker pid)
dk exec fi-main sh -c '
  printf "%s\n" "[unit]" "description = \"added while running\"" "" "[service]" \
    "shell = \"echo extra unit is here; exec sleep 100000\"" >/etc/flowinit/units/extra.toml
  sed -i "s/tick /tock /" /etc/flowinit/units/ticker.toml' ||
  fail "editing the units inside the container"
dk kill -s HUP fi-main >/dev/null || fail "docker kill -s HUP"
check "after HUP: the new unit extra is running (status --json)" wait_unit_state fi-main extra running 15
check "after HUP: its output is in docker logs (extra | extra unit is here)" logs_have fi-main '^extra +\| extra unit is here$'
check "after HUP: the changed unit ticker was restarted and prints the new text (tock N)" \
  logs_have fi-main '^ticker +\| tock [0-9]+$'
check "after HUP: ticker has a new pid" bash -c '
  p=$2; for _ in $(seq 25); do
    n=$("$1" exec fi-main flowinit status --json | jq -r ".units[] | select(.name == \"ticker\") | .pid")
    [ -n "$n" ] && [ "$n" != null ] && [ "$n" != "$p" ] && exit 0; sleep 0.2; done
  echo "      ticker pid $p -> $n"; exit 1' _ "$DOCKER" "$TICKER_PID_BEFORE"
check "after HUP: the unchanged unit web kept its pid ($WEB_PID_BEFORE)" \
  bash -c '[ -n "$2" ] && [ "$2" != null ] && [ "$("$1" exec fi-main flowinit status --json | jq -r ".units[] | select(.name == \"web\") | .pid")" = "$2" ]' \
  _ "$DOCKER" "$WEB_PID_BEFORE"
check "after HUP: flowinit logged the reload" logs_have fi-main '^flowinit +\|.*(reload|SIGHUP)'
check "after HUP: still healthy" wait_health fi-main healthy 10
# A broken unit file: the reload is refused as a whole, the running set stays.
EXTRA_PID=$(unit_field fi-main extra pid)
dk exec fi-main sh -c 'printf "%s\n" "[service]" "command = [\"sleep\", \"1\"]" "bogus_key = 1" >/etc/flowinit/units/broken.toml' ||
  fail "writing broken.toml inside the container"
dk kill -s HUP fi-main >/dev/null || fail "docker kill -s HUP (broken unit)"
check "HUP with a broken unit file: flowinit names broken.toml in its log" \
  logs_have fi-main '^flowinit +\|.*broken\.toml'
check "HUP with a broken unit file: the running set is kept (extra same pid, no unit broken)" bash -c '
  j=$("$1" exec fi-main flowinit status --json)
  [ "$(jq -r ".units[] | select(.name == \"extra\") | .pid" <<<"$j")" = "$2" ] &&
  [ -z "$(jq -r ".units[] | select(.name == \"broken\") | .name" <<<"$j")" ]' _ "$DOCKER" "$EXTRA_PID"
check "HUP with a broken unit file: still healthy" wait_health fi-main healthy 10
dk exec fi-main rm -f /etc/flowinit/units/broken.toml
check "flowinit is still PID 1 after the reload" bash -c '
  "$1" exec fi-main cat /proc/1/cmdline | tr "\0" " " | grep -q "^/usr/local/bin/flowinit"' _ "$DOCKER"

# ---- docker stop ------------------------------------------------------------
say ""
say "== docker stop fi-main (default grace 10 s)"
t=$(now)
dk stop fi-main >/dev/null
STOP_SECS=$(elapsed "$t")
EXIT_MAIN=$(state_of fi-main '{{.State.ExitCode}}')
OOM_MAIN=$(state_of fi-main '{{.State.OOMKilled}}')
dk logs fi-main >"$TMP/fi-main.out" 2>"$TMP/fi-main.err"
check "docker stop: exit code 0 (got $EXIT_MAIN)" test "$EXIT_MAIN" = 0
check "docker stop: stopped well inside 10 s ($STOP_SECS s, limit 5 s)" \
  awk -v s="$STOP_SECS" 'BEGIN { exit !(s < 5) }'
check "docker stop: flowinit logged SIGTERM and an orderly exit with code 0" bash -c '
  grep -qE "^flowinit +\| SIGTERM received" "$1" && grep -qE "^flowinit +\| all units stopped; exiting with code 0" "$1"' \
  _ "$TMP/fi-main.err"
check "docker stop: reverse order (router stopped before web)" bash -c '
  sed -n "/SIGTERM received/,\$p" "$1" >"$1.shutdown"
  r=$(grep -nE "unit router stopped" "$1.shutdown" | head -1 | cut -d: -f1)
  w=$(grep -nE "unit web stopped" "$1.shutdown" | head -1 | cut -d: -f1)
  [ -n "$r" ] && [ -n "$w" ] && [ "$r" -lt "$w" ] || { echo "      router stopped at line ${r:-none}, web at ${w:-none}"; exit 1; }' \
  _ "$TMP/fi-main.err"
check "docker stop: nothing was SIGKILLed" bash -c '! grep -q SIGKILL "$1"' _ "$TMP/fi-main.err"
check "not OOM-killed" test "$OOM_MAIN" = false
check "docker logs: service stdout on stdout, flowinit's own lines on stderr" bash -c '
  grep -qE "^ticker +\| t[io]ck " "$1" && ! grep -qE "^flowinit +\|" "$1" && grep -qE "^flowinit +\|" "$2"' \
  _ "$TMP/fi-main.out" "$TMP/fi-main.err"

# ---- 2. critical unit fails -> exit 1 ------------------------------------------
say ""
say "== container fi-critical: FLOWINIT_UNITS=/etc/flowinit/units-critical (doomed is critical, exits 1, restart = no)"
t=$(now)
run_container fi-critical -e FLOWINIT_UNITS=/etc/flowinit/units-critical || die "docker run fi-critical failed"
if wait_exit fi-critical 30; then
  CRIT_SECS=$(elapsed "$t")
  EXIT_CRIT=$(state_of fi-critical '{{.State.ExitCode}}')
  check "critical failure: the container exited with code 1 (got $EXIT_CRIT, after $CRIT_SECS s)" test "$EXIT_CRIT" = 1
else
  fail "critical failure: the container exited within 30 s"
fi
dk logs fi-critical >"$TMP/fi-critical.log" 2>&1
check "critical failure: logged 'critical unit doomed failed for good'" \
  grep -qE '^flowinit +\| ERROR: critical unit doomed failed for good' "$TMP/fi-critical.log"
check "critical failure: the other unit (app) was stopped first" bash -c '
  grep -qE "^flowinit +\| unit app stopped" "$1" && grep -qE "exiting with code 1" "$1"' _ "$TMP/fi-critical.log"
check "critical failure: doomed's stderr line is in docker logs" \
  grep -qE '^doomed +\| doomed: giving up$' "$TMP/fi-critical.log"

# ---- 3. unhealthy is visible to docker -------------------------------------------
say ""
say "== container fi-unready: FLOWINIT_UNITS=/etc/flowinit/units-unready (a readiness probe that never passes)"
run_container fi-unready -e FLOWINIT_UNITS=/etc/flowinit/units-unready || die "docker run fi-unready failed"
check "HEALTHCHECK turns unhealthy while a unit is not ready" wait_health fi-unready unhealthy 20
check "flowinit status --quiet exits 3 there" bash -c '"$1" exec fi-unready flowinit status --quiet; [ $? = 3 ]' _ "$DOCKER"
t=$(now)
dk stop fi-unready >/dev/null
UNR_STOP=$(elapsed "$t")
check "docker stop while a unit is starting: exit 0 in $UNR_STOP s" bash -c '
  [ "$("$1" inspect -f "{{.State.ExitCode}}" fi-unready)" = 0 ] && awk -v s="$2" "BEGIN { exit !(s < 5) }"' \
  _ "$DOCKER" "$UNR_STOP"

# ---- 4. the shutdown budget ends before docker's SIGKILL ---------------------------
say ""
say "== container fi-stubborn: FLOWINIT_UNITS=/etc/flowinit/units-stubborn (ignores SIGTERM, stop_timeout 30s)"
run_container fi-stubborn -e FLOWINIT_UNITS=/etc/flowinit/units-stubborn || die "docker run fi-stubborn failed"
logs_have fi-stubborn '^stubborn +\| stubborn up$' 15 >/dev/null
t=$(now)
dk stop fi-stubborn >/dev/null
STUB_STOP=$(elapsed "$t")
EXIT_STUB=$(state_of fi-stubborn '{{.State.ExitCode}}')
dk logs fi-stubborn >"$TMP/fi-stubborn.log" 2>&1
check "docker stop, unit ignores SIGTERM: flowinit's 9 s budget ends it before docker's 10 s SIGKILL (exit $EXIT_STUB in $STUB_STOP s)" \
  bash -c '[ "$1" = 0 ] && awk -v s="$2" "BEGIN { exit !(s >= 8.5 && s < 9.9) }"' _ "$EXIT_STUB" "$STUB_STOP"
check "budget spent: flowinit names the unit that used it up" \
  grep -qE '^flowinit +\| ERROR: shutdown budget of 9s spent; still stopping: stubborn' "$TMP/fi-stubborn.log"

# ---- 5. restarts of the same container -----------------------------------------------
say ""
say "== fi-main again: docker start after a clean stop; docker kill -s KILL; docker start (stale socket)"
dk start fi-main >/dev/null || fail "docker start fi-main"
check "docker start after docker stop: healthy again" wait_health fi-main healthy 30
dk kill -s KILL fi-main >/dev/null
wait_exit fi-main 10
say "      after docker kill -s KILL: exit code $(state_of fi-main '{{.State.ExitCode}}') (expected 137: SIGKILL cannot be caught)"
t=$(now)
dk start fi-main >/dev/null || fail "docker start fi-main after SIGKILL"
if wait_health fi-main healthy 30; then
  pass "docker start after SIGKILL (control socket left in the container's filesystem): healthy in $(elapsed "$t") s"
else
  fail "docker start after SIGKILL: healthy within 30 s"
  dk logs --tail 20 fi-main 2>&1
fi
t=$(now)
dk stop fi-main >/dev/null
STOP2_SECS=$(elapsed "$t")
check "docker stop again: exit 0 in $STOP2_SECS s" bash -c '
  [ "$("$1" inspect -f "{{.State.ExitCode}}" fi-main)" = 0 ] && awk -v s="$2" "BEGIN { exit !(s < 5) }"' \
  _ "$DOCKER" "$STOP2_SECS"

# ---- report ---------------------------------------------------------------
say ""
say "status table inside fi-main (docker exec fi-main flowinit status):"
sed 's/^/  /' "$TMP/status-main.txt"
say ""
say "timings: healthy ${TO_HEALTHY} s after docker run; docker stop ${STOP_SECS} s (exit $EXIT_MAIN); critical exit after ${CRIT_SECS:-?} s"
say "timings: docker stop with a unit ignoring SIGTERM ${STUB_STOP:-?} s (exit ${EXIT_STUB:-?}); docker stop after restart ${STOP2_SECS:-?} s"
if [ "$FAILED" -gt 0 ]; then
  for f in "$TMP/fi-main.err" "$TMP/fi-critical.log" "$TMP/fi-stubborn.log"; do
    [ -f "$f" ] && { say "--- last lines of $(basename "$f")"; tail -25 "$f"; }
  done
fi
summary
[ "$FAILED" = 0 ]
