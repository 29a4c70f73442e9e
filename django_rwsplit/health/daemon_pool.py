"""A fixed set of daemon threads that run calls in parallel (the probes')."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

_T = TypeVar("_T")


class DaemonPool:
    """
    A fixed set of daemon threads that run calls in parallel.

    Unlike a ThreadPoolExecutor it keeps taking work while the interpreter
    exits and is never joined then: the monitor goes on measuring, quietly,
    until the process is gone (and Python 3.12+ refuses to start threads
    during exit, so they are started up front).
    """

    def __init__(self, size: int, name: str = "rwsplit-probe") -> None:
        self._tasks: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            task()

    def map(self, func: Callable[[str], _T], items: Sequence[str]) -> list[_T]:
        """Return ``[func(item) for item in items]``, computed in parallel."""
        results: dict[int, _T] = {}
        errors: list[BaseException] = []
        done = threading.Semaphore(0)

        def task(index: int, item: str) -> Callable[[], None]:
            def run() -> None:
                try:
                    results[index] = func(item)
                except BaseException as exc:  # noqa: BLE001 - re-raised below
                    errors.append(exc)
                finally:
                    done.release()

            return run

        for index, item in enumerate(items):
            self._tasks.put(task(index, item))
        for _ in items:
            done.acquire()
        if errors:
            raise errors[0]
        return [results[i] for i in range(len(items))]

    def close(self) -> None:
        """Let the threads finish (they exit after their current task)."""
        for _ in self._threads:
            self._tasks.put(None)

    def __enter__(self) -> DaemonPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
