#!/usr/bin/env bash
# Regenerate the typed cdk8s constructs in imports/ from the CRDs in ../shared/crds (or $CRD_DIR).
#
#   tools/import_crds.sh [OUTDIR]      default OUTDIR: <repo>/imports
#
# CRD files are named <api group>_<plural>.yaml. All files of one API group are imported together (one
# `cdk8s import` per group, files concatenated in name order), because a second import of the same group
# would overwrite the first. The Python module of group a.b.c is imports/c/b/a (cdk8s reverses the group),
# e.g. karpenter.sh -> `from imports.sh import karpenter`.
# The output is byte-stable: tests/imports/test_imports.py re-runs this into a temporary folder and diffs.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
crd_dir="${CRD_DIR:-$repo/../shared/crds}"
out="${1:-$repo/imports}"
cdk8s="$repo/node_modules/.bin/cdk8s"
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20

[[ -x "$cdk8s" ]] || { echo "cdk8s-cli not installed: run 'make deps' (npm ci) first" >&2; exit 1; }
[[ -d "$crd_dir" ]] || { echo "CRD folder not found: $crd_dir" >&2; exit 1; }
crd_dir="$(cd "$crd_dir" && pwd)"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

export LC_ALL=C
groups=$(cd "$crd_dir" && ls -1 -- *_*.yaml | sed 's/_.*//' | sort -u)
[[ -n "$groups" ]] || { echo "no <group>_<plural>.yaml files in $crd_dir" >&2; exit 1; }

# imports/ is generated as a whole: drop what a previous run wrote (only the group modules and README).
find "$out" -mindepth 1 -maxdepth 1 ! -name '.*' -exec rm -rf {} +

for group in $groups; do
  spec="$work/$group.yaml"
  first=1
  for f in $(cd "$crd_dir" && ls -1 -- "${group}"_*.yaml | sort); do
    if [[ $first -eq 0 ]]; then printf -- '---\n' >>"$spec"; fi
    cat -- "$crd_dir/$f" >>"$spec"
    first=0
  done
  echo "importing $group" >&2
  (cd "$work" && "$cdk8s" import "$spec" --language python --output "$out" --no-save --no-check-upgrade >/dev/null)
done

{
  echo "# Generated: typed cdk8s constructs for the CRDs in ../shared/crds"
  echo
  echo "Do not edit. Regenerate with \`tools/import_crds.sh\` (cdk8s-cli pinned in package.json)."
  echo
  echo "| API group | Python module |"
  echo "|---|---|"
  for group in $groups; do
    module="imports.$(echo "$group" | tr '.' '\n' | tac | paste -sd. -)"
    echo "| $group | \`${module}\` |"
  done
} >"$out/README.md"
