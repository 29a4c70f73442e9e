"""The replicas in rotation, and the smooth weighted round-robin over them."""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Callable, Mapping


def smooth_weighted_sequence(weights: Mapping[str, int]) -> list[str]:
    """
    Return one period of the smooth weighted round-robin order of ``weights``.

    Each step adds every alias's weight to its running score, picks the alias
    with the highest score (first in ``weights`` order on ties) and subtracts
    the total weight from it, so weights {a: 3, b: 1} give a, a, b, a rather
    than a, a, a, b. The period is the sum of the weights.
    """
    total = sum(weights.values())
    scores = dict.fromkeys(weights, 0)
    order: list[str] = []
    for _ in range(total):
        for alias, weight in weights.items():
            scores[alias] += weight
        chosen = max(scores, key=scores.__getitem__)
        scores[chosen] -= total
        order.append(chosen)
    return order


def _nothing() -> None:
    return None


class Rotation:
    """
    The replicas that may serve reads now, and the order to hand them out.

    Immutable once built; ``pick()`` is safe to call from many threads at
    once because advancing an ``itertools.cycle`` is atomic in CPython. The
    tracker builds a new one only when membership or weights change, so the
    cycle goes on across health rounds.
    """

    __slots__ = ("members", "weights", "pick", "_others")

    def __init__(self, weights: Mapping[str, int]) -> None:
        self.weights: dict[str, int] = dict(weights)
        self.members: frozenset[str] = frozenset(weights)
        # pick(): the next replica alias, or None when the rotation is empty.
        # The cycle's own __next__ when there are members: one C call.
        self.pick: Callable[[], str | None] = (
            itertools.cycle(smooth_weighted_sequence(weights)).__next__
            if weights
            else _nothing
        )
        # For each member, the others and their cumulative weights.
        self._others: dict[str, tuple[list[str], list[int]]] = {}
        for alias in self.weights:
            others = [other for other in self.weights if other != alias]
            self._others[alias] = (
                others,
                list(itertools.accumulate(self.weights[o] for o in others)),
            )

    def random_other(self, alias: str) -> str | None:
        """Return a member other than ``alias``, at random by weight (None if none)."""
        entry = self._others.get(alias)
        if entry is None or not entry[0]:
            return None
        others, cumulative = entry
        if len(others) == 1:
            return others[0]
        point = random.random() * cumulative[-1]
        return others[bisect.bisect_right(cumulative, point)]

    def candidates(self) -> list[str]:
        """
        Return every member once: the next pick first, then the others.

        For loops that must consider each replica (read-your-writes, failover):
        taking ``len(members)`` picks from a weighted cycle repeats heavy
        members and can miss light ones.
        """
        first = self.pick()
        if first is None:
            return []
        return [first, *sorted(self.members - {first})]

    def __repr__(self) -> str:
        return f"<Rotation {sorted(self.members)}>"


EMPTY = Rotation({})
