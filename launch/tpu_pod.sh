#!/usr/bin/env bash
# Training on a Cloud TPU pod slice: the same command on every worker VM.
#
#   launch/tpu_pod.sh gcloud     # gcloud compute tpus tpu-vm ssh --worker=all
#   launch/tpu_pod.sh xpk        # a GKE cluster through xpk
#
# Required variables:
#   TPU_NAME   the TPU VM (gcloud) or the workload name (xpk)
#   ZONE       e.g. us-east5-b (gcloud)
#   DATA_DIR   prepared dataset visible on every worker (gcsfuse mount or a shared disk)
#   WORKDIR    checkpoints/metrics, e.g. gs://bucket/runs/d2l (orbax writes gs:// directly)
# Optional:
#   PROJECT       gcloud project (default: the configured one)
#   REPO_DIR      checkout on the workers (default ~/diff2lip-jax)
#   CONFIG        default configs/diff2lip.py:official
#   EXTRA_ARGS    more flags, e.g. "--config.mesh.fsdp=4"
#   CLUSTER, TPU_TYPE, NUM_SLICES, DOCKER_IMAGE   for xpk (cluster name, e.g. v5litepod-64, 1, an image with the repo)
#
# jax.distributed.initialize() auto-detects TPU pod slices; each host reads its own shard.
set -euo pipefail

MODE=${1:-}
: "${TPU_NAME:?set TPU_NAME}"
: "${DATA_DIR:?set DATA_DIR to the prepared dataset}"
: "${WORKDIR:?set WORKDIR, e.g. gs://bucket/runs/d2l}"
CONFIG=${CONFIG:-configs/diff2lip.py:official}
REPO_DIR=${REPO_DIR:-~/diff2lip-jax}
TRAIN="cd $REPO_DIR && source .venv/bin/activate && source launch/xla_flags.sh tpu && \
diff2lip-train --config=$CONFIG --workdir=$WORKDIR --config.data.dir=$DATA_DIR ${EXTRA_ARGS:-}"

case "$MODE" in
  gcloud)
    : "${ZONE:?set ZONE}"
    gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"} \
      --worker=all --command="$TRAIN"
    ;;
  xpk)
    : "${CLUSTER:?set CLUSTER (the GKE cluster)}"
    : "${TPU_TYPE:?set TPU_TYPE, e.g. v5litepod-64}"
    : "${DOCKER_IMAGE:?set DOCKER_IMAGE, an image with the repo and its .venv}"
    xpk workload create --cluster="$CLUSTER" --workload="$TPU_NAME" --tpu-type="$TPU_TYPE" \
      --num-slices="${NUM_SLICES:-1}" --docker-image="$DOCKER_IMAGE" --command="$TRAIN"
    ;;
  *)
    echo "usage: $0 gcloud|xpk   (variables: see the top of this file)" >&2
    exit 2
    ;;
esac
