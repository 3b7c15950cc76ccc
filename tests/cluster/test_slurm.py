"""The tiny synth DAG on a real one-node SLURM (run_slurm_test.sh), opt in: IAA_SLURM_TEST=1.

Needs root and apt (it installs SLURM, munge and MariaDB from the distribution's packages when
missing) and snakemake-executor-plugin-slurm (pip install -e '.[cluster]'). It takes a few
minutes: the DAG runs twice, locally and through SLURM, and the two tables must be identical.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "run_slurm_test.sh"
TIMEOUT_S = 1800

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        os.environ.get("IAA_SLURM_TEST") != "1", reason="SLURM test is opt-in: set IAA_SLURM_TEST=1"
    ),
]


def test_tiny_dag_through_slurm_matches_local_run():
    env = dict(os.environ, IAA_PYTHON=sys.executable)
    proc = subprocess.Popen(
        ["bash", str(SCRIPT)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # SIGTERM lets the script cancel its jobs and stop the daemons it started.
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
        pytest.fail(f"run_slurm_test.sh took over {TIMEOUT_S} s:\n{output[-6000:]}")
    print(output)
    assert proc.returncode == 0, output[-6000:]
