#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: the same command on every worker; JAX finds its peers itself.
#
#   launch/tpu_pod.sh TPU_NAME ZONE CONFIG WORKDIR [extra flags...]
#   launch/tpu_pod.sh my-v4-32 us-central2-b configs/shapes.py gs://bucket/runs/shapes
#
# WORKDIR should be a bucket (gs://...) or another path every worker can write: orbax writes each
# process's shards there. The repo is copied to every worker and installed into a venv first.
set -euo pipefail
if [[ $# -lt 4 ]]; then
  sed -n '2,9p' "$0"; exit 2
fi
TPU_NAME=$1 ZONE=$2 CONFIG=$3 WORKDIR=$4
shift 4
REPO_DIR=$(cd "$(dirname "$0")/.." && pwd)

gcloud compute tpus tpu-vm scp --recurse --worker=all --zone="$ZONE" \
  "$REPO_DIR" "$TPU_NAME":~/semgan_jax_src
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --worker=all --zone="$ZONE" --command="
  set -e
  cd ~/semgan_jax_src
  python3 -m venv .venv
  .venv/bin/pip install -q -e . 'jax[tpu]'
  .venv/bin/python -m semgan_jax.main --distributed \
    --config=$CONFIG --workdir=$WORKDIR $*
"
