#!/usr/bin/env bash
# The SLURM integration test: start a one-node SLURM cluster on this machine, run ML2D through
# profiles/slurm (tests/test_slurm.py, marked `slurm`), and stop the cluster again whatever
# happens. Needs root (apt-get, daemons). Called from .ci/run; fine to run by hand too.
set -euo pipefail
cd "$(dirname "$0")/../.."

export CRYOSNAKE_SLURM_DIR="${CRYOSNAKE_SLURM_DIR:-/tmp/cryosnake-slurm}"
# our slurm.conf even where /etc/slurm/slurm.conf belongs to someone else
export SLURM_CONF="$CRYOSNAKE_SLURM_DIR/slurm.conf"

# a cluster that is not there is a failure here, not a skip
export CRYOSNAKE_REQUIRE_SLURM=1

trap 'bash .ci/slurm/stop.sh' EXIT
bash .ci/slurm/setup.sh
# bounded: a dead controller must fail the run, not hang it
timeout 900 python -m pytest -q -m slurm tests/test_slurm.py
