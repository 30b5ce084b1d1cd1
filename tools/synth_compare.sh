#!/usr/bin/env bash
# Synthesize the app in every deploy mode into one folder, to compare a refactoring byte for byte.
#
#   tools/synth_compare.sh synth /tmp/before        # before the change
#   tools/synth_compare.sh synth /tmp/after         # after it
#   tools/synth_compare.sh diff /tmp/before /tmp/after
#
# Modes: dev and prod (cdk.json as is; prod with an admin principal), pipeline (deployMode=pipeline, one test
# account for the pipeline and both stages, a GitHub source with the shared-data repository), and two variants that exercise the other
# branches of the configuration: GPU nodegroup + Amazon Managed Prometheus, and the CPU inference variant.
# Offline: no credentials, no lookups (as `make synth`). `diff` runs tools/synth_compare.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 AWS_EC2_METADATA_DISABLED=true

ACCOUNT=111111111111
CONNECTION="arn:aws:codeconnections:us-west-2:${ACCOUNT}:connection/0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d"
# prod is a production environment: it refuses a cluster nobody can administer.
ADMIN="-c cluster.adminPrincipalArns=arn:aws:iam::${ACCOUNT}:role/platform-admin"
declare -A MODES=(
  [dev]=""
  [prod]="-c env=prod ${ADMIN}"
  [pipeline]="-c deployMode=pipeline -c pipeline.account=${ACCOUNT} -c aws.account=${ACCOUNT} ${ADMIN}
    -c pipeline.source.provider=github -c pipeline.source.connectionArn=${CONNECTION}
    -c pipeline.source.repository=acme/llama-eks -c pipeline.source.sharedData.repository=acme/llama-eks-shared"
  [nodegroup-amp]="-c compute.gpuCapacity=nodegroup -c addons.karpenter.enabled=false -c addons.metrics.backend=amp"
  [cpu]="-c inference.accelerator=cpu -c addons.karpenter.generalPurposePool=true"
)

synth() {
  local out="$1" mode
  mkdir -p "$out"
  for mode in dev prod pipeline nodegroup-amp cpu; do
    echo "== $mode" >&2
    # shellcheck disable=SC2086  # the mode's flags are word-split on purpose
    env -u AWS_PROFILE -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
      npx cdk synth --no-lookups --quiet -o "$out/$mode" ${MODES[$mode]}
  done
}

case "${1:-}" in
  synth) synth "${2:?output folder}" ;;
  diff) exec python3 tools/synth_compare.py "${2:?first folder}" "${3:?second folder}" ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
