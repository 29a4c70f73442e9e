"""pin_primary: context manager, decorator, nesting, threads and asyncio tasks."""

from __future__ import annotations

import asyncio
import threading

import pytest
from django.db import router

from django_rwsplit import pin_primary
from django_rwsplit.pinning import is_pinned
from tests.testapp.models import Item
from tests.utils import server_port

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]


def test_context_manager_pins_and_unpins():
    assert router.db_for_read(Item) != "default"
    with pin_primary():
        assert router.db_for_read(Item) == "default"
    assert router.db_for_read(Item) != "default"


def test_pinned_read_really_runs_on_primary(cluster, ports):
    with pin_primary():
        assert server_port(router.db_for_read(Item)) == ports["default"]
    assert server_port(router.db_for_read(Item)) in (
        ports["replica1"],
        ports["replica2"],
    )


def test_decorator_without_and_with_parentheses():
    @pin_primary
    def bare() -> str:
        return router.db_for_read(Item)

    @pin_primary()
    def called() -> str:
        return router.db_for_read(Item)

    assert bare() == "default"
    assert called() == "default"
    assert bare.__name__ == "bare"
    assert not is_pinned()


def test_nested_blocks_unpin_only_at_outermost_exit():
    with pin_primary():
        with pin_primary():
            assert is_pinned()
        assert is_pinned()
        assert router.db_for_read(Item) == "default"
    assert not is_pinned()


def test_pin_restored_after_exception():
    with pytest.raises(ValueError), pin_primary(), pin_primary():
        raise ValueError("boom")
    assert not is_pinned()
    assert router.db_for_read(Item) != "default"


def test_decorated_function_raising_leaves_no_pin():
    @pin_primary
    def explode() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        explode()
    assert not is_pinned()


def test_async_function_decorated_is_pinned_while_it_runs():
    @pin_primary
    async def inside() -> bool:
        await asyncio.sleep(0)
        return is_pinned()

    assert asyncio.iscoroutinefunction(inside)
    assert asyncio.run(inside()) is True
    assert not is_pinned()


def test_context_manager_inside_async_code():
    async def body() -> tuple[bool, bool]:
        with pin_primary():
            await asyncio.sleep(0)
            during = is_pinned()
        return during, is_pinned()

    assert asyncio.run(body()) == (True, False)


def test_gather_of_pinned_and_unpinned_tasks_does_not_leak():
    started = asyncio.Event

    async def main() -> list[tuple[str, bool]]:
        barrier = started()

        async def pinned(i: int) -> tuple[str, bool]:
            with pin_primary():
                await barrier.wait()
                return ("pinned", is_pinned())

        async def unpinned(i: int) -> tuple[str, bool]:
            await barrier.wait()
            return ("unpinned", is_pinned())

        tasks = [pinned(i) if i % 2 else unpinned(i) for i in range(50)]
        gathered = asyncio.gather(*tasks)
        await asyncio.sleep(0)
        barrier.set()
        return await gathered

    results = asyncio.run(main())
    assert len(results) == 50
    assert all(state == (kind == "pinned") for kind, state in results)


def test_hundred_threads_see_only_their_own_pin():
    barrier = threading.Barrier(100)
    seen: dict[int, bool] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            if i % 2:
                with pin_primary():
                    barrier.wait(timeout=30)
                    seen[i] = router.db_for_read(Item) == "default"
            else:
                barrier.wait(timeout=30)
                seen[i] = router.db_for_read(Item) == "default"
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert seen == {i: bool(i % 2) for i in range(100)}


def test_shared_decorated_function_across_threads_is_isolated():
    gate = threading.Event()
    inside = threading.Event()

    @pin_primary
    def slow() -> bool:
        inside.set()
        gate.wait(timeout=10)
        return is_pinned()

    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(slow()))
    thread.start()
    assert inside.wait(timeout=10)
    assert not is_pinned()
    gate.set()
    thread.join(timeout=10)
    assert result == [True]
