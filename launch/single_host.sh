#!/usr/bin/env bash
# Single host (one or more GPUs, or a single TPU VM): all local devices in one process.
#   launch/single_host.sh configs/aloha.py /path/to/workdir [--config.overrides ...]
# Set --config.mesh.fsdp to the number of local devices to shard parameters and optimizer state (FSDP).
set -euo pipefail
config="${1:?config file, e.g. configs/aloha.py}"; workdir="${2:?workdir}"; shift 2
exec python -m cosmos_jax.train --config="$config" --workdir="$workdir" "$@"
