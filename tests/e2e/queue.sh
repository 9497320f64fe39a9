#!/usr/bin/env bash
# End-to-end test of Flowise queue mode under flowinit: two main replicas
# and a worker, each its own flowinit as PID 1 of its own PID namespace and
# in its own network namespace, sharing one real PostgreSQL 15 and one real
# Redis (Debian's packages; Redis under the `redis` unit of units/).
#
#   sudo tests/e2e/queue.sh            # from the repository root, as root
#
# The network: a bridge on the host (E2E_QUEUE_NET.1, where PostgreSQL and
# Redis listen) and a veth pair per namespace: replica A .11, replica B .12,
# worker .13. Each replica's router listens on :3000 of its own address;
# every check goes through those routers, as an ALB would.
#
# What it checks:
#   bad input: queue profile without REDIS_URL -> check 1 / up 2 naming it;
#     Redis down at start -> redis-check retries with backoff, then flowinit
#     exits 1 with a line that says Redis, no stack trace, worker never run;
#   A, B and the worker started together on a fresh database: one of them
#     migrates, the others wait on the lock (no race);
#   login on A, create a flow there, see it on B with A's session (shared
#     Redis session store and secrets);
#   a prediction through B is run by the worker (its log) and answered
#     through B;
#   SIGTERM to the worker while a job runs: the job finishes, the answer
#     comes back, the worker exits 0 inside its budget;
#   SIGKILL to A's flowinit: B keeps serving (ping, prediction);
#   everything restarted (PostgreSQL, Redis, replicas, worker): the account,
#     the flows and their answers are still there;
#   nothing is left: no process, namespace, veth or bridge.
#
# Environment (all optional):
#   FLOWSTACK_CACHE   npm cache of Flowise (default /var/cache/flowstack;
#                     tests/e2e/flowstack.sh installs it)
#   FLOWINIT_BIN      use this flowinit instead of building one
#   E2E_TIMEOUT       overall limit in seconds (default 900)
#   E2E_QUEUE_NET     first three octets of the test network (default 10.77.0)
#   E2E_QUEUE_PG_PORT port of the test PostgreSQL (default 5433)
#   E2E_KEEP=1        keep the temp dir (logs)
#
# Output: one line per check, timings, "N passed, M failed"; exit 0 only if
# every check passed.

# Values are passed to `bash -c '...'` as positional arguments on purpose.
# shellcheck disable=SC2016
set -uo pipefail

if [ -z "${E2E_UNDER_TIMEOUT:-}" ]; then
  export E2E_UNDER_TIMEOUT=1
  exec timeout --foreground -k 20 "${E2E_TIMEOUT:-900}" bash "$0" "$@"
fi

REPO=$(cd "$(dirname "$0")/../.." && pwd)
FLOWISE_VERSION=${FLOWISE_VERSION:-3.1.2}
CACHE=${FLOWSTACK_CACHE:-/var/cache/flowstack}
MODULES=$CACHE/node_modules
PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
NET=${E2E_QUEUE_NET:-10.77.0}
PG_PORT=${E2E_QUEUE_PG_PORT:-5433}
HOST_IP=$NET.1
ID=$(($$ % 100000))
BR=fsq${ID}br
declare -A IP=([a]=$NET.11 [b]=$NET.12 [w]=$NET.13)

# shellcheck source=tests/e2e/lib.sh
source "$REPO/tests/e2e/lib.sh"

rand() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
ADMIN_EMAIL=admin@example.com
ADMIN_PASSWORD="Q-$(rand 6)-Pw9!"
DB_PASSWORD="db$(rand 8)"
REDIS_PASSWORD="rd$(rand 8)"

# ---- cleanup --------------------------------------------------------------
TMP=""
declare -A WRAPPER=()  # role -> pid of `ip netns exec … unshare` (flowinit's parent)
PG_PID=""
NETNS=()
LINKS=()



cleanup() {
  local rc=$? r ns p
  trap - EXIT INT TERM
  for r in "${!WRAPPER[@]}"; do
    # flowinit is PID 1 of its namespace: when it dies, so does the rest.
    stop_pid "$(child_of "${WRAPPER[$r]}")" TERM 15
    stop_pid "${WRAPPER[$r]}" TERM 3
  done
  stop_pid "$PG_PID" INT 10
  for ns in "${NETNS[@]}"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
  for l in "${LINKS[@]}"; do ip link del "$l" 2>/dev/null; done
  if [ -n "$TMP" ] && [ -d "$TMP" ]; then
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

# ---- prerequisites --------------------------------------------------------
[ "$(id -u)" = 0 ] || die "run as root (network and PID namespaces, users)"
for c in curl unshare ip runuser setpriv node awk od; do
  command -v "$c" >/dev/null || die "$c is missing"
done
[ -x "$PG_BINDIR/postgres" ] || die "no $PG_BINDIR/postgres (apt-get install postgresql; tests/e2e/flowstack.sh does)"
if ! command -v redis-server >/dev/null; then
  say "installing redis-server (apt-get install redis-server) ..."
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null || die "apt-get install redis-server failed"
fi
id redis >/dev/null 2>&1 || die "no redis user (made by the redis-server package)"
id node >/dev/null 2>&1 || die "no node user (tests/e2e/flowstack.sh creates it)"
[ -f "$MODULES/flowise/bin/run" ] || die "Flowise is not in $MODULES (run tests/e2e/flowstack.sh first: it installs it)"
v=$(node -p "require('$MODULES/flowise/package.json').version")
[ "$v" = "$FLOWISE_VERSION" ] || die "Flowise in $MODULES is $v, not $FLOWISE_VERSION"
ip netns add "fsq${ID}probe" 2>/dev/null || die "cannot create a network namespace here (ip netns add)"
ip netns del "fsq${ID}probe"

if [ -n "${FLOWINIT_BIN:-}" ]; then
  FLOWINIT=$FLOWINIT_BIN
else
  say "building flowinit (release) ..."
  (cd "$REPO" && cargo build --release --quiet) || die "cargo build failed"
  FLOWINIT=${CARGO_TARGET_DIR:-$REPO/target}/release/flowinit
  case $FLOWINIT in /*) ;; *) FLOWINIT=$REPO/$FLOWINIT ;; esac
fi
[ -x "$FLOWINIT" ] || die "no flowinit binary at $FLOWINIT"

TMP=$(mktemp -d /tmp/flowstack-queue.XXXXXX)
chmod 755 "$TMP"
UNITS=$TMP/units
mkdir -p "$UNITS" "$TMP/redis-units"
cp "$REPO"/units/*.toml "$UNITS"/
cp "$REPO/units/data-dirs.toml" "$REPO/units/redis.toml" "$TMP/redis-units/"
FLOWS="node $REPO/tests/e2e/queue/flows.js"

# ---- the network ------------------------------------------------------------
if ip -o addr show | grep -q " $NET\."; then
  die "addresses in $NET.0/24 are in use here; set E2E_QUEUE_NET to a free /24 (e.g. 10.78.0)"
fi
ip link add "$BR" type bridge || die "cannot create bridge $BR"
LINKS+=("$BR")
ip addr add "$HOST_IP/24" dev "$BR"
ip link set "$BR" up
for r in a b w; do
  ns=fsq${ID}$r
  ip netns add "$ns" || die "ip netns add $ns"
  NETNS+=("$ns")
  ip link add "fsq${ID}${r}h" type veth peer name "fsq${ID}${r}n" || die "veth for $r"
  LINKS+=("fsq${ID}${r}h")
  ip link set "fsq${ID}${r}h" master "$BR" up
  ip link set "fsq${ID}${r}n" netns "$ns"
  ip -n "$ns" addr add "${IP[$r]}/24" dev "fsq${ID}${r}n"
  ip -n "$ns" link set "fsq${ID}${r}n" up
  ip -n "$ns" link set lo up
done

# ---- helpers ----------------------------------------------------------------
REDIS_URL="redis://:$REDIS_PASSWORD@$HOST_IP:6379"
SECRETS=(
  "FLOWISE_SECRETKEY_OVERWRITE=$(rand 24)"
  "JWT_AUTH_TOKEN_SECRET=$(rand 24)"
  "JWT_REFRESH_TOKEN_SECRET=$(rand 24)"
  "EXPRESS_SESSION_SECRET=$(rand 24)"
  "TOKEN_HASH_SECRET=$(rand 24)"
)
COMMON_ENV=(
  "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  "FLOWSTACK_MODULES=$MODULES"
  "FLOWSTACK_LIB=$REPO/units/lib"
  "PG_BINDIR=$PG_BINDIR"
  "DATABASE_HOST=$HOST_IP"
  "DATABASE_PORT=$PG_PORT"
  "DATABASE_NAME=fsq"
  "DATABASE_USER=fsq"
  "DATABASE_PASSWORD=$DB_PASSWORD"
  "FLOWISE_USERNAME=$ADMIN_EMAIL"
  "FLOWISE_PASSWORD=$ADMIN_PASSWORD"
  "${SECRETS[@]}"
)

# start ROLE LOG [env...]: flowinit as PID 1 of a new PID namespace, in the
# role's network namespace (role r: the host's, for Redis).
declare -A STARTED=()
start() {
  local r=$1 log=$2 ns=(); shift 2
  [ "$r" = r ] || ns=(ip netns exec "fsq${ID}$r")
  rm -f "$TMP/$r.sock"
  STARTED[$r]=$(now)
  "${ns[@]}" env -i "${COMMON_ENV[@]}" "FLOWSTACK_DATA=$TMP/data-$r" "$@" \
    unshare -pf --mount-proc "$FLOWINIT" up --units "$(units_of "$r")" --socket "$TMP/$r.sock" >"$log" 2>&1 &
  WRAPPER[$r]=$!
}
units_of() { if [ "$1" = r ]; then printf '%s' "$TMP/redis-units"; else printf '%s' "$UNITS"; fi; }
start_redis() { start r "$1" FLOWINIT_PROFILES=redis "REDIS_BIND=$HOST_IP" "REDIS_PASSWORD=$REDIS_PASSWORD"; }
start_main() { start "$1" "$2" FLOWINIT_PROFILES=queue "REDIS_URL=$REDIS_URL"; }
start_worker() { start w "$1" FLOWINIT_PROFILES=worker "REDIS_URL=$REDIS_URL"; }

# stop ROLE SIGNAL -> STOP_RC, STOP_SECS
STOP_RC=""
STOP_SECS=""
stop() {
  local r=$1 sig=${2:-TERM} pid t i
  pid=$(child_of "${WRAPPER[$r]}")
  t=$(now)
  [ -n "$pid" ] && kill -s "$sig" "$pid"
  for ((i = 0; i < 400; i++)); do
    kill -0 "${WRAPPER[$r]}" 2>/dev/null || break
    sleep 0.05
  done
  STOP_SECS=$(elapsed "$t")
  STOP_RC=timeout
  if kill -0 "${WRAPPER[$r]}" 2>/dev/null; then
    stop_pid "$pid" KILL 2
    wait "${WRAPPER[$r]}" 2>/dev/null
  else
    wait "${WRAPPER[$r]}"
    STOP_RC=$?
  fi
  unset "WRAPPER[$r]"
}

ctl() { local r=$1; shift; "$FLOWINIT" "$@" --socket "$TMP/$r.sock"; }

unit_state() { # unit_state ROLE UNIT
  ctl "$1" status --json 2>/dev/null | node -e '
    let s = ""; process.stdin.on("data", d => s += d).on("end", () => {
      try { const u = JSON.parse(s).units.find(u => u.name === process.argv[1]); console.log(u ? u.state : "none"); }
      catch { console.log("error"); } });' "$2"
}
wait_state() { # wait_state ROLE UNIT STATE SECONDS
  local start st
  start=$(date +%s)
  while [ $(($(date +%s) - start)) -lt "$4" ]; do
    st=$(unit_state "$1" "$2")
    [ "$st" = "$3" ] && return 0
    kill -0 "${WRAPPER[$1]:-0}" 2>/dev/null || { say "      flowinit of $1 is gone"; return 1; }
    sleep 0.3
  done
  say "      $1: $2 is $st, not $3"
  return 1
}

url() { printf 'http://%s:3000%s' "${IP[$1]}" "$2"; }
http_code() { curl --noproxy '*' -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" 2>/dev/null || true; }
# wait_ping ROLE SECONDS -> sets PING_SECS (from that role's start)
PING_SECS=never
wait_ping() {
  local r=$1 start
  start=$(date +%s)
  PING_SECS=never
  while [ $(($(date +%s) - start)) -lt "$2" ]; do
    if [ "$(http_code "$(url "$r" /api/v1/ping)")" = 200 ]; then
      PING_SECS=$(elapsed "${STARTED[$r]}")
      return 0
    fi
    kill -0 "${WRAPPER[$r]:-0}" 2>/dev/null || return 1
    sleep 0.3
  done
  return 1
}

# The session of a login on A, as a Cookie header any replica is sent.
COOKIE=""
login() { # login ROLE
  local code
  code=$(curl --noproxy '*' -s -o "$TMP/login.json" -w '%{http_code}' --max-time 20 -c "$TMP/jar" \
    -H 'Content-Type: application/json' -X POST --data-binary @- "$(url "$1" /api/v1/auth/login)" <<EOF
{"email":"$ADMIN_EMAIL","password":"$ADMIN_PASSWORD"}
EOF
  )
  [ "$code" = 200 ] || { say "      login on $1: HTTP $code $(head -c 200 "$TMP/login.json")"; return 1; }
  COOKIE=$(sed 's/^#HttpOnly_//' "$TMP/jar" | awk -F'\t' 'NF == 7 { printf "%s%s=%s", sep, $6, $7; sep = "; " }')
  [ -n "$COOKIE" ]
}
api() { # api ROLE METHOD PATH [curl args]: with the session, as the UI calls it
  local r=$1 m=$2 p=$3; shift 3
  curl --noproxy '*' -s --max-time 30 -H "Cookie: $COOKIE" -H 'x-request-from: internal' -X "$m" "$@" "$(url "$r" "$p")"
}
create_flow() { # create_flow ROLE KIND NAME -> prints the id
  $FLOWS "$2" "$3" >"$TMP/flow-$3.json" || return 1
  api "$1" POST /api/v1/chatflows -H 'Content-Type: application/json' --data-binary @"$TMP/flow-$3.json" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{try{const j=JSON.parse(s);if(!j.id)throw 0;console.log(j.id)}catch{console.error("      create: "+s.slice(0,300));process.exit(1)}})'
}
flow_listed() { # flow_listed ROLE NAME
  api "$1" GET /api/v1/chatflows?type=AGENTFLOW >"$TMP/list.json"
  node -e '
    const j = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const list = Array.isArray(j) ? j : (j.data || []);
    process.exit(list.some(c => c.name === process.argv[2]) ? 0 : 1);' "$TMP/list.json" "$2" 2>/dev/null ||
    { say "      chatflows on $1: $(head -c 300 "$TMP/list.json")"; return 1; }
}
# predict ROLE ID QUESTION OUT -> 0 on HTTP 200; PREDICT_SECS; the answer in OUT
PREDICT_SECS=""
predict() {
  local t code
  t=$(now)
  code=$(curl --noproxy '*' -s -o "$4" -w '%{http_code}' --max-time 120 -H 'Content-Type: application/json' \
    -X POST --data-binary "{\"question\":\"$3\"}" "$(url "$1" "/api/v1/prediction/$2")")
  PREDICT_SECS=$(elapsed "$t")
  [ "$code" = 200 ] || { say "      prediction via $1: HTTP $code $(head -c 300 "$4")"; return 1; }
}
answer_is() { # answer_is FILE TEXT: the prediction's .text
  node -e 'const j=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")); process.exit(j.text===process.argv[2]?0:1)' "$1" "$2" 2>/dev/null ||
    { say "      answer: $(head -c 300 "$1") (wanted text \"$2\")"; return 1; }
}
count() { grep -c -E "$2" "$1" 2>/dev/null || true; }
no_secret_in() { ! grep -qF -e "$ADMIN_PASSWORD" -e "$DB_PASSWORD" -e "$REDIS_PASSWORD" "$@"; }

# ---- 0. bad input ------------------------------------------------------------
say "== bad input"
env -i "${COMMON_ENV[@]}" "FLOWSTACK_DATA=$TMP/bad" "$FLOWINIT" check --units "$UNITS" --profile queue >"$TMP/bad-check.out" 2>&1
check "queue profile without REDIS_URL: check exits 1" test $? = 1
check "  ...naming REDIS_URL in flowise.toml" grep -q 'flowise.toml:[0-9]*:[0-9]*: unit flowise: variable ${REDIS_URL} is required' "$TMP/bad-check.out"
env -i "${COMMON_ENV[@]}" "FLOWSTACK_DATA=$TMP/bad" FLOWINIT_PROFILES=worker \
  timeout 30 "$FLOWINIT" up --units "$UNITS" --socket "$TMP/bad.sock" </dev/null >"$TMP/bad-up.out" 2>&1
check "worker profile without REDIS_URL: up exits 2" test $? = 2
check "  ...naming REDIS_URL in flowise-worker.toml and redis-check.toml" bash -c '
  grep -q "unit flowise-worker: variable \${REDIS_URL} is required" "$1" &&
  grep -q "unit redis-check: variable \${REDIS_URL} is required" "$1"' _ "$TMP/bad-up.out"
check "  ...and started nothing" test ! -e "$TMP/bad"


# ---- 1. PostgreSQL and Redis on the host --------------------------------------
say ""
say "== PostgreSQL 15 and Redis on $HOST_IP"
PG=$TMP/pg
mkdir -p "$PG/data" "$PG/run"
chown -R postgres: "$PG"
chmod 700 "$PG/data"
start_pg() {
  setpriv --reuid=postgres --regid=postgres --init-groups \
    "$PG_BINDIR/postgres" -D "$PG/data" -p "$PG_PORT" -c "listen_addresses=127.0.0.1,$HOST_IP" \
    -c unix_socket_directories="$PG/run" -c logging_collector=off >>"$PG/postgres.log" 2>&1 &
  PG_PID=$!
  for ((i = 0; i < 100; i++)); do
    runuser -u postgres -- "$PG_BINDIR/pg_isready" -q -h "$PG/run" -p "$PG_PORT" && return 0
    sleep 0.2
  done
  return 1
}
psql_q() { runuser -u postgres -- "$PG_BINDIR/psql" -X -qAt -v ON_ERROR_STOP=1 -h "$PG/run" -p "$PG_PORT" -U postgres -d "${2:-postgres}" -c "$1"; }
runuser -u postgres -- "$PG_BINDIR/initdb" -D "$PG/data" -U postgres -E UTF8 --locale=C \
  --auth-local=peer --auth-host=scram-sha-256 >"$PG/initdb.log" 2>&1 || die "initdb: $(tail -3 "$PG/initdb.log")"
echo "host all all $NET.0/24 scram-sha-256" >>"$PG/data/pg_hba.conf"
start_pg || die "PostgreSQL did not start: $(tail -5 "$PG/postgres.log")"
psql_q "CREATE ROLE fsq LOGIN PASSWORD '$DB_PASSWORD'" && psql_q "CREATE DATABASE fsq OWNER fsq"
check "PostgreSQL up on $HOST_IP:$PG_PORT with role and database fsq" test $? = 0
reach_pg() { # reach_pg ROLE: a TCP connection from its namespace to PostgreSQL
  local i
  for ((i = 0; i < 50; i++)); do
    ip netns exec "fsq${ID}$1" timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST_IP" "$PG_PORT" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
for r in a b w; do
  check "network: namespace $r (${IP[$r]}) reaches PostgreSQL on the host over its veth and the bridge" reach_pg "$r"
done

RLOG1=$TMP/redis-1.log
start_redis "$RLOG1"
check "Redis (units/redis.toml, profile redis) ready on $HOST_IP:6379 with a password" wait_state r redis ready 30

# ---- 2. A, B and the worker start together on the fresh database --------------
say ""
say "== replicas A ($NET.11), B ($NET.12) and the worker ($NET.13) start together"
start_main a "$TMP/a-1.log"
start_main b "$TMP/b-1.log"
start_worker "$TMP/w-1.log"
if wait_ping a 300; then pass "A: ping 200 through its router (${PING_SECS} s from start)"; else fail "A: ping 200 within 300 s"; fi
PING_A=$PING_SECS
if wait_ping b 300; then pass "B: ping 200 through its router (${PING_SECS} s from start)"; else fail "B: ping 200 within 300 s"; fi
PING_B=$PING_SECS
if wait_state w flowise-worker ready 300; then
  WORKER_READY=$(elapsed "${STARTED[w]}")
  pass "worker: ready (its log: both BullMQ workers created) after $WORKER_READY s"
else
  WORKER_READY=never
  fail "worker ready within 300 s"
fi
MIG_LOGS=("$TMP/a-1.log" "$TMP/b-1.log" "$TMP/w-1.log")
applied=$(cat "${MIG_LOGS[@]}" | count /dev/stdin 'db-migrate: applied [0-9]+ migration')
current=$(cat "${MIG_LOGS[@]}" | count /dev/stdin 'db-migrate: schema up to date')
check "migrations: exactly one container applied them, the other two found the schema current ($applied applied, $current current)" \
  test "$applied" = 1 -a "$current" = 2
check "migrations: no Flowise process ran a migration itself" bash -c '! grep -h -E "has been +executed successfully|Migration .* has been executed" "$@"' _ "${MIG_LOGS[@]}"

# Redis down at start: a port nothing listens on, in the worker's namespace.
# Started once the schema is in place (its db-migrate must not be the one
# that migrates); runs in the background, checked in step 8.
DOWN_LOG=$TMP/redis-down.log
DOWN_T0=$(now)
{
  ip netns exec "fsq${ID}w" env -i "${COMMON_ENV[@]}" "FLOWSTACK_DATA=$TMP/data-down" FLOWINIT_PROFILES=worker \
    "REDIS_URL=redis://$HOST_IP:6390" unshare -pf --mount-proc "$FLOWINIT" up --units "$UNITS" \
    --socket "$TMP/down.sock" >"$DOWN_LOG" 2>&1 </dev/null
  echo $? >"$TMP/down.rc"
  now >"$TMP/down.end"
} &
DOWN_PID=$!

check "worker: no router, no UI, no seed-admin (shown disabled)" bash -c '
  for u in router flowise-ui seed-admin flowise; do [ "$("$0" status --json --socket "$1" | node -e "let s=\"\";process.stdin.on(\"data\",d=>s+=d).on(\"end\",()=>console.log(JSON.parse(s).units.find(u=>u.name===process.argv[1]).state))" "$u")" = disabled ] || exit 1; done' \
  "$FLOWINIT" "$TMP/w.sock"
ctl a status >"$TMP/status-a.txt" 2>&1
ctl w status >"$TMP/status-w.txt" 2>&1
check "A: all units healthy (status --quiet)" ctl a status --quiet
check "B: all units healthy (status --quiet)" ctl b status --quiet
SEEDED=$(cat "$TMP/a-1.log" "$TMP/b-1.log" | count /dev/stdin "seed-admin.*created the admin account")
check "seed-admin: the admin was created once, by A or B ($SEEDED)" test "$SEEDED" = 1

# ---- 3. one account, one flow, seen by both replicas ---------------------------
say ""
say "== login on A, flows created on A, seen on B"
check "login on A" login a
FAST=fsq-fast-$ID
SLOW=fsq-slow-$ID
if FAST_ID=$(create_flow a fast "$FAST"); then pass "fast flow created on A ($FAST_ID)"; else fail "fast flow created on A"; fi
if SLOW_ID=$(create_flow a slow "$SLOW"); then pass "slow flow created on A ($SLOW_ID)"; else fail "slow flow created on A"; fi
check "B lists A's flow, with A's session (Redis session store, shared secrets)" flow_listed b "$FAST"

# ---- 4. a prediction through B, run by the worker -------------------------------
say ""
say "== prediction through B"
Q="hello-$ID"
done_before=$(count "$TMP/w-1.log" 'Completed job .* flowise-queue-prediction')
if predict b "$FAST_ID" "$Q" "$TMP/p1.json"; then
  PREDICT1=$PREDICT_SECS
  pass "prediction through B answered in $PREDICT1 s"
else
  PREDICT1=never
  fail "prediction through B"
fi
check "  ...the answer is the flow's (echo: $Q)" answer_is "$TMP/p1.json" "echo: $Q"
check "  ...the worker ran the job (its log: Processing and Completed in flowise-queue-prediction)" bash -c '
  [ "$(grep -c -E "Completed job .* flowise-queue-prediction" "$1")" -gt "$2" ] && grep -q -E "Processing job .* flowise-queue-prediction" "$1"' _ "$TMP/w-1.log" "$done_before"
check "  ...neither main replica ran it (no job processed in A's or B's log)" bash -c '! grep -q "Processing job" "$1" "$2"' _ "$TMP/a-1.log" "$TMP/b-1.log"
check "  ...and B's router logged it (POST /api/v1/prediction 200)" grep -q -E "POST /api/v1/prediction/$FAST_ID.* 200" "$TMP/b-1.log"

# ---- 5. SIGTERM to the worker while a job runs -----------------------------------
say ""
say "== SIGTERM to the worker with a job in hand (the slow flow: 6 s)"
processing_before=$(count "$TMP/w-1.log" 'Processing job .* flowise-queue-prediction')
predict b "$SLOW_ID" "drain-$ID" "$TMP/p2.json" &
SLOW_CURL=$!
for ((i = 0; i < 100; i++)); do
  [ "$(count "$TMP/w-1.log" 'Processing job .* flowise-queue-prediction')" -gt "$processing_before" ] && break
  sleep 0.1
done
check "the worker took the slow job" test "$i" -lt 100
stop w TERM
DRAIN=$STOP_SECS
check "worker: flowinit exit 0 after SIGTERM (got $STOP_RC) in $DRAIN s (budget 9 s)" \
  bash -c '[ "$1" = 0 ] && awk -v s="$2" "BEGIN { exit !(s < 9.5) }"' _ "$STOP_RC" "$DRAIN"
check "  ...it waited for the job (drain $DRAIN s > 2 s)" awk -v s="$DRAIN" 'BEGIN { exit !(s > 2) }'
check "  ...BullMQ closed the workers (Flowise's shutdown ran)" grep -q "Shutting down Flowise Prediction Worker" "$TMP/w-1.log"
check "  ...the job completed before the worker exited" bash -c '
  a=$(grep -n -E "Completed job .* flowise-queue-prediction" "$1" | tail -1 | cut -d: -f1)
  b=$(grep -n "unit flowise-worker stopped" "$1" | cut -d: -f1)
  [ -n "$a" ] && [ -n "$b" ] && [ "$a" -lt "$b" ]' _ "$TMP/w-1.log"
check "  ...no unit of the worker was SIGKILLed" bash -c '! grep -q SIGKILL "$1"' _ "$TMP/w-1.log"
wait "$SLOW_CURL"
check "  ...and its answer came back through B" answer_is "$TMP/p2.json" "slow done after 6000 ms: drain-$ID"

start_worker "$TMP/w-2.log"
check "worker restarted (ready)" wait_state w flowise-worker ready 180

# ---- 6. SIGKILL to A: B keeps serving -------------------------------------------
say ""
say "== SIGKILL to A's flowinit"
stop a KILL
check "A is gone: no process left in its namespace" bash -c '[ -z "$(ip netns pids "$1")" ]' _ "fsq${ID}a"
check "A's router no longer answers" bash -c '[ "$(curl --noproxy "*" -s -o /dev/null -w "%{http_code}" --max-time 3 "$1")" = 000 ]' _ "$(url a /api/v1/ping)"
check "B: ping 200" bash -c '[ "$(curl --noproxy "*" -s -o /dev/null -w "%{http_code}" --max-time 5 "$1")" = 200 ]' _ "$(url b /api/v1/ping)"
if predict b "$FAST_ID" "after-a-$ID" "$TMP/p3.json"; then
  PREDICT3=$PREDICT_SECS
  pass "B: prediction answered without A ($PREDICT3 s)"
else
  fail "B: prediction without A"
fi
check "  ...with the flow's answer" answer_is "$TMP/p3.json" "echo: after-a-$ID"
check "B: the flows are listed (session still valid)" flow_listed b "$SLOW"

# ---- 7. restart everything -------------------------------------------------------
say ""
say "== everything stopped and started again"
stop b TERM
check "B: exit 0 after SIGTERM in $STOP_SECS s" bash -c '[ "$1" = 0 ]' _ "$STOP_RC"
stop w TERM
check "worker: exit 0 after SIGTERM in $STOP_SECS s" bash -c '[ "$1" = 0 ]' _ "$STOP_RC"
stop r TERM
check "Redis: exit 0 after SIGTERM in $STOP_SECS s" bash -c '[ "$1" = 0 ]' _ "$STOP_RC"
stop_pid "$PG_PID" INT 10
wait "$PG_PID" 2>/dev/null
PG_PID=""
start_pg || fail "PostgreSQL restarted"
start_redis "$TMP/redis-2.log"
check "Redis ready again (append-only file reused)" wait_state r redis ready 30
start_main a "$TMP/a-2.log"
start_main b "$TMP/b-2.log"
start_worker "$TMP/w-3.log"
if wait_ping a 300; then pass "A: ping 200 again (${PING_SECS} s)"; else fail "A: ping 200 after the restart"; fi
PING_A2=$PING_SECS
if wait_ping b 300; then pass "B: ping 200 again (${PING_SECS} s)"; else fail "B: ping 200 after the restart"; fi
PING_B2=$PING_SECS
check "worker ready again" wait_state w flowise-worker ready 300
check "migrations: all three found the schema current" bash -c '[ "$(cat "$@" | grep -c "db-migrate: schema up to date")" = 3 ]' _ "$TMP/a-2.log" "$TMP/b-2.log" "$TMP/w-3.log"
check "seed-admin: already seeded (both)" bash -c '[ "$(cat "$@" | grep -c "seed-admin.*already seeded")" = 2 ]' _ "$TMP/a-2.log" "$TMP/b-2.log"
check "login on B with the same account" login b
both_listed() { flow_listed "$1" "$FAST" && flow_listed "$1" "$SLOW"; }
check "A lists both flows" both_listed a
if predict a "$FAST_ID" "again-$ID" "$TMP/p4.json"; then
  pass "prediction through A after the restart ($PREDICT_SECS s)"
else
  fail "prediction through A after the restart"
fi
check "  ...with the flow's answer" answer_is "$TMP/p4.json" "echo: again-$ID"
ROWS=$(psql_q "select count(*) from chat_flow where name in ('$FAST', '$SLOW')" fsq)
check "flows stored in PostgreSQL (chat_flow rows: $ROWS)" test "$ROWS" = 2

# ---- 8. Redis down at start (started in step 2) ----------------------------------
say ""
say "== Redis down at start"
for ((i = 0; i < 600; i++)); do kill -0 "$DOWN_PID" 2>/dev/null || break; sleep 0.1; done
wait "$DOWN_PID"
DOWN_RC=$(cat "$TMP/down.rc" 2>/dev/null || echo none)
DOWN_SECS=$(awk -v a="$DOWN_T0" -v b="$(cat "$TMP/down.end" 2>/dev/null || now)" 'BEGIN { printf "%.1f", b - a }')
attempts=$(count "$DOWN_LOG" "unit redis-check started")
refused=$(count "$DOWN_LOG" "^redis-check +\\| redis-check: Redis at redis://$HOST_IP:6390 is not reachable: ECONNREFUSED")
check "flowinit exits 1 when Redis never answers (got $DOWN_RC after $DOWN_SECS s)" test "$DOWN_RC" = 1
check "  ...after retrying with backoff ($attempts attempts, $refused lines naming Redis and its address)" \
  bash -c '[ "$1" -ge 5 ] && [ "$1" = "$2" ]' _ "$attempts" "$refused"
DELAYS=$(grep -o "unit redis-check exited 1, restarting in [0-9]*s" "$DOWN_LOG" | grep -o "[0-9]*s$" | paste -sd' ')
check "  ...waiting 1 2 4 8 8 s between them (got: $DELAYS), and no restart announced after the last" test "$DELAYS" = "1s 2s 4s 8s 8s"
check "  ...the failure names redis-check and Redis" bash -c 'grep -q "unit redis-check" "$1" && grep -q "Redis at redis://" "$1"' _ "$DOWN_LOG"
check "  ...no stack trace in the output" bash -c '! grep -q -E "^[^|]*\| +at " "$1"' _ "$DOWN_LOG"
check "  ...the worker never started" bash -c '! grep -q "unit flowise-worker started" "$1"' _ "$DOWN_LOG"

# ---- 9. the end -------------------------------------------------------------------
stop a TERM
check "A: exit 0 after SIGTERM" test "$STOP_RC" = 0
stop b TERM
stop w TERM
check "worker: exit 0 after SIGTERM" test "$STOP_RC" = 0
stop r TERM
check "no password or secret in any log" no_secret_in "$TMP"/*.log

# Nothing left behind: every process of the run had FLOWSTACK_DATA=$TMP/…
# in its environment; then the namespaces and links go.
left_behind() {
  local f
  for f in /proc/[0-9]*/environ; do
    tr '\0' '\n' <"$f" 2>/dev/null | grep -q "^FLOWSTACK_DATA=$TMP/" && echo "${f//[!0-9]/}"
  done
}
LEFT=$(left_behind | tr '\n' ' ')
check "no process of the run is left (${LEFT:-none})" test -z "$LEFT"
for ns in "${NETNS[@]}"; do ip netns del "$ns"; done
for l in "${LINKS[@]}"; do ip link del "$l" 2>/dev/null; done
NETNS=()
LINKS=()
check "no network namespace of the run is left" bash -c '! ip netns list | grep -q "^fsq$1"' _ "$ID"
check "no veth or bridge of the run is left" bash -c '! ip -o link show | grep -q ": fsq$1"' _ "$ID"

say ""
say "status of replica A (queue role):"
sed 's/^/  /' "$TMP/status-a.txt"
say "status of the worker (worker role):"
sed 's/^/  /' "$TMP/status-w.txt"
say ""
say "timings: ping 200 from start, fresh database: A $PING_A s, B $PING_B s (worker ready $WORKER_READY s); after the restart: A $PING_A2 s, B $PING_B2 s"
say "timings: prediction round trip through B (worker on Redis): $PREDICT1 s; worker drain on SIGTERM with a 6 s job in hand: $DRAIN s"
if [ "$FAILED" -gt 0 ]; then
  for l in "$TMP"/*.log; do say "--- last lines of $(basename "$l")"; tail -15 "$l"; done
fi
summary
[ "$FAILED" = 0 ]
