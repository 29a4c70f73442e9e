"""
The test matrix: Django 5.2 LTS on Python 3.11, Django 6.0 on Python 3.13 and
Django 6.1 on Python 3.12; plus lint and the built distributions.

``make test`` runs every session here (lint and typecheck, dist, then the
three test sessions); ``nox -s "tests(py3.12-django6.1)"`` runs one. The
chaos suite's deployment shapes are split over the test sessions
(``CHAOS_SHAPES``); ``RWSPLIT_CHAOS_SHAPES=all`` or a comma-separated list
overrides that.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from importlib import metadata

import nox

nox.options.sessions = ["lint", "dist", "tests"]
nox.options.error_on_missing_interpreters = True
# uv builds a session's virtualenv in seconds (requirements-dev.txt has it);
# virtualenv and pip if it is missing.
nox.options.default_venv_backend = "uv|virtualenv"

MATRIX = [("3.11", "5.2"), ("3.13", "6.0"), ("3.12", "6.1")]
# The chaos suite's deployment shapes (tests/chaos/servers.py SHAPES), split
# over the Django 6.x sessions (each shape's criteria compare it with its own
# steady phase, so a session needs no baseline run of its own): the Django 5.2
# session, which runs beside them (scripts/run_tests.sh), holds the drills.
CHAOS_SHAPES = {
    "5.2": "none",
    "6.0": "baseline,atomic",
    "6.1": "persistent,pool,pgbouncer",
}
# What each session leaves out: the Django 5.2 session runs everything; the
# others leave out the tests marked "long" or "once" (tests/conftest.py ONCE
# and DRILLS: their subject does not depend on Django's version).
SELECTION = {
    "5.2": "",
    "6.0": "not long and not once",
    "6.1": "not long and not once",
}
# Each session's cluster: its primary's port, this far above
# RWSPLIT_CLUSTER_PORT (default 15432; +10, +20 and +25 are taken by the
# second cluster and the failover drills), as the 5.2 session runs beside
# the 6.x ones.
CLUSTER_PORT_OFFSETS = {"5.2": 0, "6.0": 100, "6.1": 200}
# The Django version whose session also runs the tests marked "long" or "once".
LONG_TESTS_ON = "5.2"


def interpreter(version: str) -> str:
    """Return a working ``pythonX.Y``: on PATH, or installed by pyenv."""
    candidates = [shutil.which(f"python{version}") or ""]
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "pass"], capture_output=True)
        if probe.returncode == 0:
            return candidate
    return f"python{version}"  # nox reports it missing, clearly


# lint, dist and the Django 5.2 tests run in .venv (scripts/bootstrap.sh made
# it: Python 3.11 with Django 5.2, the dev tools, build and twine), saving
# three installs per run.
@nox.session(python=False, tags=["first"])
def lint(session: nox.Session) -> None:
    """ruff and mypy --strict (in .venv)."""
    python = sys.executable
    session.run(python, "-m", "ruff", "check", ".")
    session.run(python, "-m", "ruff", "format", "--check", ".")
    session.run(python, "-m", "mypy", "django_rwsplit", "example_project")


@nox.session(python=False, tags=["first"])
def dist(session: nox.Session) -> None:
    """Build the sdist and wheel; twine check them; check what they hold."""
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="rwsplit-dist-") as out:
        session.run(python, "-m", "build", "--outdir", out, ".")
        session.run(python, "-m", "twine", "check", "--strict", *glob.glob(f"{out}/*"))
        session.run(python, "scripts/check_dist.py", out)


@nox.session
@nox.parametrize(
    ("python", "django"),
    [
        nox.param(
            interpreter(python),
            django,
            id=f"py{python}-django{django}",
            # scripts/run_tests.sh: "first" (lane 1) beside "later" (lane 2).
            tags=["first" if django == LONG_TESTS_ON else "later"],
        )
        for python, django in MATRIX
    ],
)
def tests(session: nox.Session, django: str) -> None:
    """
    The suite against the local cluster, for one Django version.

    Every test runs on every version, except the chaos shapes (split by
    ``CHAOS_SHAPES``) and the tests marked ``long`` (scenarios that take
    seconds each and do not depend on Django's version: load balancing under
    light traffic and slowness, the browser test, two clusters, the local
    cluster tool) or ``once`` (pure logic, the probes and health rounds, the
    command's output, the drills: tests/conftest.py ONCE and DRILLS), which
    run on Django 5.2.
    """
    shapes = os.environ.get("RWSPLIT_CHAOS_SHAPES") or CHAOS_SHAPES[django]
    selection = ["-m", SELECTION[django]] if SELECTION[django] else []
    env = {"RWSPLIT_CHAOS_SHAPES": shapes}
    if not os.environ.get("RWSPLIT_CLUSTER_DIR"):  # not a reused demo cluster
        base = int(os.environ.get("RWSPLIT_CLUSTER_PORT") or 15432)
        env["RWSPLIT_CLUSTER_PORT"] = str(base + CLUSTER_PORT_OFFSETS[django])
    show_version = "import django; print('Django', django.__version__)"
    if bootstrap_venv_is(django):
        # .venv holds this very set (scripts/bootstrap.sh installed it): about
        # a minute of installing saved.
        python = sys.executable
        session.run(python, "-c", show_version, external=True)
        session.run(
            python, "-m", "pytest", *selection, *session.posargs, env=env, external=True
        )
        return
    session.install("-e", ".", "-r", "requirements-dev.txt", f"django~={django}.0")
    session.run("python", "-c", show_version)
    session.run("pytest", *selection, *session.posargs, env=env)


def bootstrap_venv_is(django: str) -> bool:
    """Whether .venv (nox's own interpreter) is this session's Python and Django."""
    wanted = {d: p for p, d in MATRIX}[django]
    try:
        installed = metadata.version("django")
    except metadata.PackageNotFoundError:
        return False
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    return python == wanted and installed.split(".")[:2] == django.split(".")
