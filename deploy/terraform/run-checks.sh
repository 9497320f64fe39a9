#!/usr/bin/env bash
# Offline checks of deploy/terraform: for the module, terraform fmt -check,
# init against a local provider directory, validate and test (mock
# provider, plan only: no AWS account, no network); validate for the
# example root; then checkov over deploy/terraform (zero failed checks; every
# skip carries its reason inline: `#checkov:skip=CKV_…:reason`).
#
#   deploy/terraform/run-checks.sh          # from anywhere; exit 0 = all passed
#
# TF_PLUGIN_DIR: the directory holding registry.terraform.io/hashicorp/aws
# (default /opt/tf-plugins). Without terraform on PATH, or without that
# directory, the terraform steps are skipped with a loud line on stderr
# (never a fake pass) and checkov still runs. Every step runs; the exit code
# is 1 if any failed. The .terraform dirs and lock files this creates are
# removed on exit.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here" || exit 1

TF_PLUGIN_DIR=${TF_PLUGIN_DIR:-/opt/tf-plugins}
MODULE=modules/flowstack
EXAMPLE=examples/ecs
# No ~/.terraformrc needed (and no warning about a missing one).
export TF_CLI_CONFIG_FILE=${TF_CLI_CONFIG_FILE:-/dev/null}
export TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1

failed=()
step() { # name, command…
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

created=()
cleanup() {
  local d
  for d in "${created[@]}"; do
    rm -rf "$d/.terraform" "$d/.terraform.lock.hcl"
  done
}
trap cleanup EXIT

tf_init() { # dir
  [ -e "$1/.terraform" ] || created+=("$1")
  terraform -chdir="$1" init -backend=false -input=false -no-color -plugin-dir="$TF_PLUGIN_DIR" >/dev/null
}

if ! command -v terraform >/dev/null 2>&1; then
  echo "== SKIPPED: terraform steps (fmt, init, validate, test): terraform is not on PATH; install Terraform >= 1.9 (tested with 1.11.4)" >&2
elif [ ! -d "$TF_PLUGIN_DIR/registry.terraform.io/hashicorp/aws" ]; then
  echo "== SKIPPED: terraform steps (fmt, init, validate, test): no AWS provider under TF_PLUGIN_DIR=$TF_PLUGIN_DIR (expected $TF_PLUGIN_DIR/registry.terraform.io/hashicorp/aws/<version>/<os_arch>/)" >&2
else
  step "terraform version" terraform version
  step "terraform fmt -check -recursive" terraform fmt -check -recursive -diff .
  step "terraform init $MODULE (-plugin-dir=$TF_PLUGIN_DIR)" tf_init "$MODULE"
  step "terraform validate $MODULE" terraform -chdir="$MODULE" validate -no-color
  step "terraform test $MODULE (mock provider, plan)" terraform -chdir="$MODULE" test -no-color
  step "terraform init $EXAMPLE (-backend=false)" tf_init "$EXAMPLE"
  step "terraform validate $EXAMPLE" terraform -chdir="$EXAMPLE" validate -no-color
fi

skip_reasons() {
  local bad
  bad=$(grep -rnE 'checkov:skip' --include='*.tf' --include='*.hcl' . |
    grep -vE 'checkov:skip=CKV2?_[A-Z0-9_]+: *[^ ].{9,}')
  if [ -n "$bad" ]; then
    echo "checkov skips without a reason:"
    printf '%s\n' "$bad"
    return 1
  fi
  grep -rhoE 'checkov:skip=CKV2?_[A-Z0-9_]+' --include='*.tf' --include='*.hcl' . |
    sed 's/checkov:skip=//' | sort | uniq -c | sed 's/^/skipped (with a reason): /'
}

if command -v checkov >/dev/null 2>&1; then
  step "checkov skips all have a reason" skip_reasons
  # --skip-download: no call to Prisma Cloud for guidelines or policies.
  step "checkov -d deploy/terraform" checkov -d . --compact --quiet --skip-download
else
  echo "check: checkov not found; install it with: python3 -m pip install checkov" >&2
  failed+=("checkov (not installed)")
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo "run-checks: ${#failed[@]} step(s) failed:"
  printf '  %s\n' "${failed[@]}"
  exit 1
fi
echo "run-checks: all passed"
