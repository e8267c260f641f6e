#!/usr/bin/env bash
# TPU VM pod slice: the same command on every worker; jax.distributed.initialize() discovers the slice from the
# TPU environment, grain shards the data per process (jax.process_index()).
#   launch/tpu_pod.sh <tpu-name> <zone> configs/aloha.py gs://bucket/workdir [--config.overrides ...]
# The repo must be checked out (and `pip install -e .` + `pip install 'jax[tpu]'` done) on every worker, e.g.
#   gcloud compute tpus tpu-vm ssh <tpu-name> --zone <zone> --worker=all --command 'git clone ... && pip install -e .'
set -euo pipefail
tpu="${1:?tpu name}"; zone="${2:?zone}"; config="${3:?config}"; workdir="${4:?workdir (gs:// recommended)}"; shift 4
extra="$*"
gcloud compute tpus tpu-vm ssh "$tpu" --zone "$zone" --worker=all --command \
  "cd cosmos_jax && python -m cosmos_jax.train --distributed --config=$config --workdir=$workdir $extra"
