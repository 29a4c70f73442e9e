"""The monitor's probe threads: parallel, ordered, errors surface, usable at exit."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from django_rwsplit.health.monitor import DaemonPool


def test_map_runs_in_parallel_and_keeps_order():
    barrier = threading.Barrier(3, timeout=10)

    def check(alias: str) -> str:
        barrier.wait()  # only passes when all three run at the same time
        return alias.upper()

    with DaemonPool(3) as pool:
        assert pool.map(check, ["a", "b", "c"]) == ["A", "B", "C"]
        assert pool.map(str.upper, ["x", "y"]) == ["X", "Y"]


def test_an_error_in_one_call_reaches_the_caller():
    def check(alias: str) -> str:
        if alias == "bad":
            raise ValueError("bad replica")
        return alias

    with DaemonPool(2) as pool, pytest.raises(ValueError, match="bad replica"):
        pool.map(check, ["good", "bad"])


def test_threads_are_daemons_and_leave_on_close():
    pool = DaemonPool(2, name="pool-test")
    threads = [t for t in threading.enumerate() if t.name.startswith("pool-test-")]
    assert len(threads) == 2 and all(t.daemon for t in threads)
    pool.close()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(t.is_alive() for t in threads)


def test_works_during_interpreter_exit():
    """Python 3.12+ cannot start threads in atexit; a ThreadPoolExecutor refuses."""
    script = """
import atexit
from django_rwsplit.health.monitor import DaemonPool
pool = DaemonPool(2)
atexit.register(lambda: print(pool.map(str.upper, ["a", "b"]), flush=True))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['A', 'B']"
