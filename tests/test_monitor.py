"""health.monitor without a cluster: the shared rounds' cache calls."""

from __future__ import annotations

import threading

import pytest

from django_rwsplit.health.deadline import CallTimeout
from django_rwsplit.health.monitor import SharedRounds


def test_two_sharers_in_one_process_never_refuse_each_others_calls():
    """
    The monitor's SharedRounds and replica_health's, in one process: a cache
    call of one still in flight (here: hung) must not refuse the other's.
    """
    monitors, command = (
        SharedRounds("default", 1.0, 0.2),
        SharedRounds("default", 1.0, 0.2),
    )
    gate = threading.Event()
    try:
        with pytest.raises(CallTimeout):
            monitors._call(lambda: gate.wait(10))  # hangs past its deadline
        with pytest.raises(CallTimeout, match="an earlier call has not returned"):
            monitors._call(lambda: 1)  # its own next call waits for the hung one
        assert command._call(lambda: 42) == 42
    finally:
        gate.set()
