# syntax=docker/dockerfile:1
#
# FlowStack: Flowise (core API + UI) behind flowinit's router on :3000, with
# flowinit as PID 1. Two targets:
#
#   docker build -t flowstack .                  # production (the last stage):
#                                                #   external Postgres via DATABASE_HOST
#   docker build --target dev -t flowstack:dev . # + bundled PostgreSQL 15 and
#                                                #   Redis, FLOWINIT_PROFILES=dev
#
# One image, three roles chosen at run time by FLOWINIT_PROFILES: unset (one
# container), `queue` (a main replica in queue mode) and `worker` (a Flowise
# queue worker only); both of the last two need REDIS_URL. See
# docs/scaling.md.
#
# Build args: NODE_VERSION (20), FLOWISE_VERSION (3.1.2, the newest Flowise
# that declares Node 20; 3.1.3+ want Node 24: move both together, see
# docs/deploy.md). Nothing here is arch-specific: builds on amd64 and arm64.

ARG NODE_VERSION=20
ARG FLOWISE_VERSION=3.1.2

# ---- flowinit: a static musl binary ----------------------------------------
FROM rust:alpine AS flowinit-build
# musl-dev: crt files and libc.a for the (default, static) musl target.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked \
 && install -D -m 0755 target/release/flowinit /out/flowinit \
 && /out/flowinit --version

# ---- runtime: node + Flowise + flowinit + units ----------------------------
FROM node:${NODE_VERSION}-alpine AS runtime
ARG FLOWISE_VERSION

# Where the units find things (they default to these same paths; the e2e
# test on Debian points them elsewhere).
ENV FLOWSTACK_MODULES=/opt/flowstack/node_modules \
    FLOWSTACK_LIB=/usr/local/lib/flowstack \
    FLOWSTACK_DATA=/var/lib/flowstack \
    FLOWINIT_UNITS=/etc/flowinit/units

WORKDIR /opt/flowstack
# All three packages pinned to the same version: flowise alone pulls
# flowise-ui and flowise-components with caret ranges (newer ones).
# --ignore-scripts: the optional native faiss-node downloads from github.com
# (and has no musl prebuild); Postgres needs no native module.
RUN echo '{"name":"flowstack","private":true}' > package.json \
 && npm install --ignore-scripts --omit=dev --no-audit --no-fund \
      "flowise@${FLOWISE_VERSION}" \
      "flowise-ui@${FLOWISE_VERSION}" \
      "flowise-components@${FLOWISE_VERSION}" \
 && npm cache clean --force \
 && test -f node_modules/flowise/bin/run \
 && test -f node_modules/flowise-ui/build/index.html

COPY --from=flowinit-build /out/flowinit /usr/local/bin/flowinit
COPY units/*.toml /etc/flowinit/units/
COPY units/lib/ /usr/local/lib/flowstack/

# The data volume: Flowise's encryption key, auth secrets, uploads and
# logs (FLOWSTACK_DATA/flowise) and, in dev, the database
# (FLOWSTACK_DATA/postgres). The data-dirs unit fixes ownership at boot, so
# any empty volume (named volume, EFS, emptyDir) works.
RUN install -d -m 0755 /var/lib/flowstack
VOLUME ["/var/lib/flowstack"]

# flowinit runs as root on purpose: it is PID 1 and starts every service
# as its own user (node, postgres); nothing else runs as root.
# checkov:skip=CKV_DOCKER_3: no USER on purpose; flowinit (PID 1) needs root to start each service as its own user (node, postgres, redis)
WORKDIR /var/lib/flowstack
EXPOSE 3000
STOPSIGNAL SIGTERM
# Healthy = every active unit ready (core's own /api/v1/ping probe, the UI,
# the router) or finished successfully (oneshots), and /api/v1/ping answers
# through the public port (router -> core). No curl: busybox wget.
# Start period: Flowise's readiness start_timeout (180s, units/flowise.toml)
# + 20s; docs/deploy.md "The numbers" (tests/deploy_numbers.rs checks).
HEALTHCHECK --interval=15s --timeout=5s --start-period=200s --retries=3 \
  CMD ["/bin/sh", "-c", "flowinit status --quiet && case \",$FLOWINIT_PROFILES,\" in *,worker,*) ;; *) wget -q -O /dev/null -T 4 http://127.0.0.1:3000/api/v1/ping ;; esac"]
ENTRYPOINT ["/usr/local/bin/flowinit"]

# ---- dev: bundled PostgreSQL 15 and Redis ----------------------------------
FROM runtime AS dev
# Alpine package versions are not pinned: they follow the base image's
# Alpine release, and old versions disappear from the mirrors. redis:
# /usr/bin/redis-server and the redis user, for the redis unit (profile
# redis: FLOWINIT_PROFILES=dev,redis,queue is a queue-mode main with its
# database and Redis in one container; its workers run in other containers).
# hadolint ignore=DL3018
RUN apk add --no-cache postgresql15 postgresql15-client redis \
 && install -d -o postgres -g postgres -m 0755 /run/postgresql \
 && test -x /usr/libexec/postgresql15/postgres \
 && test -x /usr/libexec/postgresql15/initdb \
 && test -x /usr/libexec/postgresql15/psql \
 && test -x /usr/libexec/postgresql15/pg_isready \
 && test -x /usr/bin/redis-server \
 && id redis
# The bundled database's address and a dev-only password: the units have
# no defaults for these (production must never fall back to a known
# password), so the dev image sets them here, and only here. The password
# is the bundled dev database's, known by design (DL3064 is about secrets).
# hadolint ignore=DL3064
ENV FLOWINIT_PROFILES=dev \
    PG_BINDIR=/usr/libexec/postgresql15 \
    DATABASE_HOST=127.0.0.1 \
    DATABASE_PASSWORD=flowise
# Fail the build, not the container, when a unit does not load here: the
# default (dev), with the bundled Redis, and the two queue-mode roles. The
# REDIS_URL is the bundled Redis' address, given to the checks only (the
# queue and worker roles must be given one at run time).
RUN flowinit check --units /etc/flowinit/units --profile dev \
 && flowinit check --units /etc/flowinit/units --profile dev,redis \
 && REDIS_URL=redis://127.0.0.1:6379 \
    flowinit check --units /etc/flowinit/units --profile dev,redis,queue \
 && REDIS_URL=redis://127.0.0.1:6379 \
    flowinit check --units /etc/flowinit/units --profile worker

# ---- prod (default target): external database ------------------------------
FROM runtime AS prod
# DATABASE_HOST and DATABASE_PASSWORD are required at run time (the task
# definition gives them; without them flowinit up exits 2 naming them), and
# REDIS_URL in the queue and worker roles: the build checks the units, in
# each role, with placeholders that are not kept.
RUN DATABASE_HOST=build-check.invalid DATABASE_PASSWORD=build-check-only \
    flowinit check --units /etc/flowinit/units \
 && DATABASE_HOST=build-check.invalid DATABASE_PASSWORD=build-check-only \
    REDIS_URL=redis://build-check.invalid:6379 \
    flowinit check --units /etc/flowinit/units --profile queue \
 && DATABASE_HOST=build-check.invalid DATABASE_PASSWORD=build-check-only \
    REDIS_URL=redis://build-check.invalid:6379 \
    flowinit check --units /etc/flowinit/units --profile worker
