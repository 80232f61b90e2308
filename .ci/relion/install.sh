#!/usr/bin/env bash
# Install RELION 3.1 (Debian 12 `relion`, CPU build) where it is missing, so that the tests
# marked `relion` run against RELION's own programs (relion_reconstruct, relion_stack_create,
# relion_star_handler). Needs root. Called from .ci/run before the SLURM leg starts (two
# apt-get runs at once would fight over the dpkg lock); fine to run by hand too.
set -euo pipefail
if command -v relion_reconstruct >/dev/null && command -v relion_stack_create >/dev/null; then
    echo "[relion] already installed: $(command -v relion_reconstruct)"
    exit 0
fi
[ "$(id -u)" -eq 0 ] || { echo "[relion] ERROR: run as root (apt-get)" >&2; exit 1; }
echo "[relion] installing relion from Debian"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends relion >/dev/null
command -v relion_reconstruct
