"""
Several clusters, on two real clusters: tests/clusterproject runs its tests.

The project routes its ``shop`` app to the default cluster and ``analytics``
to a second, independent primary with its own replicas. Its tests (writes,
reads, migrations, read-your-writes under lag, a lagging or failed replica
in one cluster, the command, the endpoint and the metrics) run in a
subprocess under that project's settings, against both clusters started
here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

# Routing, health and tokens do not depend on Django's version here: run once.
pytestmark = [pytest.mark.cluster, pytest.mark.long]

PROJECT = Path(__file__).parent / "clusterproject"
ROOT = Path(__file__).resolve().parents[1]


def test_the_two_cluster_project_passes(rwsplit_cluster, rwsplit_second_cluster):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(
        {
            "RWSPLIT_CLUSTER_DIR": str(rwsplit_cluster.base_dir),
            "RWSPLIT_CLUSTER_PORT": str(rwsplit_cluster.primary.port),
            "RWSPLIT_SECOND_CLUSTER_DIR": str(rwsplit_second_cluster.base_dir),
            "RWSPLIT_SECOND_CLUSTER_PORT": str(rwsplit_second_cluster.primary.port),
            "PYTHONPATH": os.pathsep.join([str(PROJECT), str(ROOT)]),
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfE", "test_clusters.py"],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed is not None and int(passed.group(1)) == 16, result.stdout[-2000:]
