# syntax=docker/dockerfile:1
#
# FlowStack: Flowise (core API + UI) behind flowinit's router on :3000, with
# flowinit as PID 1. Two targets:
#
#   docker build -t flowstack .                  # production (the last stage):
#                                                #   external Postgres via DATABASE_HOST
#   docker build --target dev -t flowstack:dev . # + bundled PostgreSQL 15,
#                                                #   FLOWINIT_PROFILES=dev
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
WORKDIR /var/lib/flowstack
EXPOSE 3000
STOPSIGNAL SIGTERM
# Healthy = every active unit ready (core's own /api/v1/ping probe, the UI,
# the router) or finished successfully (oneshots), and /api/v1/ping answers
# through the public port (router -> core). No curl: busybox wget.
# Start period: Flowise's readiness start_timeout (180s, units/flowise.toml)
# + 20s; docs/deploy.md "The numbers" (tests/deploy_numbers.rs checks).
HEALTHCHECK --interval=15s --timeout=5s --start-period=200s --retries=3 \
  CMD ["/bin/sh", "-c", "flowinit status --quiet && wget -q -O /dev/null -T 4 http://127.0.0.1:3000/api/v1/ping"]
ENTRYPOINT ["/usr/local/bin/flowinit"]

# ---- dev: bundled PostgreSQL 15 --------------------------------------------
FROM runtime AS dev
# Alpine package versions are not pinned: they follow the base image's
# Alpine release, and old versions disappear from the mirrors.
# hadolint ignore=DL3018
RUN apk add --no-cache postgresql15 postgresql15-client \
 && install -d -o postgres -g postgres -m 0755 /run/postgresql \
 && test -x /usr/libexec/postgresql15/postgres \
 && test -x /usr/libexec/postgresql15/initdb \
 && test -x /usr/libexec/postgresql15/psql \
 && test -x /usr/libexec/postgresql15/pg_isready
# The bundled database's address and a dev-only password: the units have
# no defaults for these (production must never fall back to a known
# password), so the dev image sets them here, and only here. The password
# is the bundled dev database's, known by design (DL3064 is about secrets).
# hadolint ignore=DL3064
ENV FLOWINIT_PROFILES=dev \
    PG_BINDIR=/usr/libexec/postgresql15 \
    DATABASE_HOST=127.0.0.1 \
    DATABASE_PASSWORD=flowise
# Fail the build, not the container, when a unit does not load here.
RUN flowinit check --units /etc/flowinit/units --profile dev

# ---- prod (default target): external database ------------------------------
FROM runtime AS prod
# DATABASE_HOST and DATABASE_PASSWORD are required at run time (the task
# definition gives them; without them flowinit up exits 2 naming them):
# the build checks the units with placeholders that are not kept.
RUN DATABASE_HOST=build-check.invalid DATABASE_PASSWORD=build-check-only \
    flowinit check --units /etc/flowinit/units
