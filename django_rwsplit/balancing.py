"""
The replica choice: the only place that picks which replica serves a read.

The router asks :func:`choose_replica` for an unpinned read; the backend asks
:func:`substitute_for_read` when the replica it was given cannot serve.
Both take the replicas in rotation from :mod:`django_rwsplit.health.state`,
in the order of the configured balancer (:data:`BALANCERS`), and never query
a server themselves, except to confirm read-your-writes (:func:`caught_up`)
and to reject a token from the future.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Protocol

from django.db import connections

from django_rwsplit import consistency, observe
from django_rwsplit.conf import Config
from django_rwsplit.exceptions import NoReplicaAvailable
from django_rwsplit.health import load
from django_rwsplit.health import state as health_state
from django_rwsplit.health.rotation import Rotation, smooth_weighted_sequence
from django_rwsplit.pin_reasons import PinReason
from django_rwsplit.pinning import Scope, current_scope

__all__ = [
    "BALANCERS",
    "AdaptiveBalancer",
    "Balancer",
    "RoundRobinBalancer",
    "acting_as_test_mirror",
    "Rotation",
    "caught_up",
    "cost",
    "choose_in_cluster",
    "choose_replica",
    "fallback",
    "mirrors_active",
    "remember_database_names",
    "smooth_weighted_sequence",
    "substitute_for_read",
]


class Balancer(Protocol):
    """Orders the replicas in rotation for a read."""

    def pick(self, rotation: Rotation) -> str | None:
        """Return the replica for a new scope's first read (None: none in rotation)."""

    def candidates(self, rotation: Rotation) -> list[str]:
        """Return every replica in rotation once, the preferred first."""


class RoundRobinBalancer:
    """Smooth weighted round-robin: a fixed order, whatever the load."""

    def pick(self, rotation: Rotation) -> str | None:
        return rotation.pick()

    def candidates(self, rotation: Rotation) -> list[str]:
        return rotation.candidates()


def cost(alias: str, now: float) -> float:
    """
    Return what a read on ``alias`` is expected to cost now (lower is better).

    Latency (this process's peak-EWMA, decaying to the health check's query
    time) times the load: 1 + this process's queries in flight there + the
    other sessions the last health check saw active on it (every process's).
    See :meth:`~django_rwsplit.health.load.ServerLoad.cost`.
    """
    return load.of(alias).cost(now)


class AdaptiveBalancer:
    """
    Two candidates: the round-robin's next replica and a random other.

    The second, drawn by weight among the other replicas in rotation, serves
    when the first is *penalised*: its :func:`cost` is clearly above the
    cheapest replica's (:func:`~django_rwsplit.health.load.judge`, renewed
    by finishing queries at most every millisecond and by each health round,
    so a pick reads one set) and the second's is not. With one replica in
    rotation no choice is made.
    """

    def pick(self, rotation: Rotation) -> str | None:
        first = rotation.pick()
        if first is None or first not in load.penalised:
            return first
        return self.instead_of(rotation, first)

    @staticmethod
    def instead_of(rotation: Rotation, first: str) -> str:
        """Return the replica to read from when ``first`` is penalised."""
        penalised = load.penalised
        second = rotation.random_other(first)
        if second is None or second not in penalised:
            return second or first
        # Both drawn are penalised (three replicas or more): any that is not.
        return next((a for a in rotation.weights if a not in penalised), first)

    def candidates(self, rotation: Rotation) -> list[str]:
        now = time.perf_counter()
        # sorted() is stable: equal costs keep the round-robin order.
        return sorted(rotation.candidates(), key=lambda alias: cost(alias, now))


BALANCERS: dict[str, Balancer] = {
    "adaptive": AdaptiveBalancer(),
    "round_robin": RoundRobinBalancer(),
}


def choose_replica(config: Config, scope: Scope | None) -> str:
    """
    Return the alias of cluster ``config`` that should serve an unpinned read.

    ``scope`` is that cluster's routing state in the unit of work (see
    :func:`choose_in_cluster` for a named cluster's).
    """
    if config.test_mirrors and mirrors_active(config):
        return config.primary
    state = health_state.running
    if state is None or state.config is not config:
        state = health_state.states.get(config.name)  # a named cluster's
        if state is None or state.config is not config:
            state = health_state.process_health(config)
    rotation = state.rotation
    if scope is not None:
        hook = scope.before_first_read
        if hook is not None:
            _run_first_read_hook(scope, hook)
            if scope.pinned is not None:
                return config.primary
        chosen = scope.replica
        if chosen is not None and chosen in rotation.members:
            return chosen
        if scope.min_lsn is not None:
            return _causal_choice(state, config, scope, rotation)
    # The balancers' pick, inlined: this runs for every unpinned read.
    alias = rotation.pick()
    if alias is None:
        return fallback(config)
    if alias in load.penalised and config.balancer == "adaptive":
        alias = AdaptiveBalancer.instead_of(rotation, alias)
    if scope is not None:
        scope.replica = alias
    return alias


def _run_first_read_hook(scope: Scope, hook: Callable[[Scope], bool]) -> None:
    """Run the scope's first-read hook; keep it for the next read until it is done."""
    scope.before_first_read = None  # reads the hook makes skip it
    if not hook(scope):
        scope.before_first_read = hook  # not yet: at the next read


def choose_in_cluster(config: Config, scope: Scope | None) -> str:
    """
    :func:`choose_replica` for a named cluster (``RWSPLIT["CLUSTERS"]``).

    ``scope`` is the unit of work's; its hook (a user's pin, looked up at the
    first read) runs first, whichever cluster that read is of, and may pin
    this cluster's state, ``scope.of(config.name)``.
    """
    if scope is None:
        return choose_replica(config, None)
    hook = scope.before_first_read
    if hook is not None:
        _run_first_read_hook(scope, hook)
    own = scope.of(config.name)
    if hook is not None and own.pinned is not None:
        return config.primary
    return choose_replica(config, own)


def _causal_choice(
    state: health_state.ProcessHealth, config: Config, scope: Scope, rotation: Rotation
) -> str:
    """A replica that has replayed ``scope.min_lsn``, else the primary."""
    if not rotation.members:
        return fallback(config)
    for alias in BALANCERS[config.balancer].candidates(rotation):
        if caught_up(state, alias, scope, ask=True):
            scope.replica = alias
            return alias
    if not token_plausible(state, config, scope.min_lsn):
        scope.min_lsn = None
        return choose_replica(config, scope)
    # No replica has the client's last write yet: the rest of the scope
    # reads from the primary without asking the replicas again.
    scope.pinned = PinReason.TOKEN
    observe.pin(PinReason.TOKEN)
    return config.primary


def substitute_for_read(
    state: health_state.ProcessHealth, exclude: Collection[str] = ()
) -> str:
    """
    Return where a read meant for an unusable replica should go.

    Another replica in rotation (not in ``exclude``) that the health state
    shows at the current scope's read-your-writes position, else the
    primary. Each member is considered once, starting from the rotation's
    next pick, so substitutes spread over the replicas.
    """
    scope = current_scope()
    if scope is not None and not state.config.is_default:
        scope = scope.of(state.config.name)
    for alias in BALANCERS[state.config.balancer].candidates(state.rotation):
        if alias not in exclude and caught_up(state, alias, scope, ask=False):
            return alias
    return state.config.primary


def caught_up(
    state: health_state.ProcessHealth,
    alias: str,
    scope: Scope | None,
    *,
    ask: bool,
) -> bool:
    """
    Return whether replica ``alias`` has replayed the scope's token position.

    True when the scope has none. The health snapshot answers when it
    already shows the position, or (``ask`` false) whenever it is known. With
    ``ask``, a snapshot taken after the write that shows the replica behind
    answers too; otherwise the replica is asked once (and again until
    ``CAUSAL_WAIT`` milliseconds after the scope's first wait, if set: one
    deadline per scope, not per replica).
    """
    min_lsn = scope.min_lsn if scope is not None else None
    if not min_lsn:
        return True
    status = state.status(alias)
    known = status.replay_lsn if status is not None else None
    if known is not None and known >= min_lsn:
        return True
    if not ask:
        return False
    if known is not None:
        primary = state.primary
        measured_after_write = (
            primary is not None
            and primary.current_lsn is not None
            and primary.current_lsn >= min_lsn
        )
        if measured_after_write and not state.config.causal_wait:
            return False
    # One CAUSAL_WAIT per scope (request), however many replicas are asked.
    deadline = scope.causal_deadline if scope is not None else None
    if deadline is None:
        deadline = time.monotonic() + state.config.causal_wait / 1000
        if scope is not None:
            scope.causal_deadline = deadline
    while True:
        position = consistency.replica_position(alias)
        if position is not None and position >= min_lsn:
            return True
        if position is None or time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def token_plausible(
    state: health_state.ProcessHealth, config: Config, lsn: int | None
) -> bool:
    """
    Return False for a token past the primary's current WAL position.

    Such a token was not issued by this primary (forged with a leaked key, or
    from before a restore); honouring it would pin the client to the primary
    until it expires. The primary is asked only when the token is ahead of
    the last health round.
    """
    if lsn is None:
        return False
    known = state.primary
    if known is not None and known.current_lsn is not None and lsn <= known.current_lsn:
        return True
    current = consistency.primary_position(config.primary)
    return current is None or lsn <= current


def fallback(config: Config) -> str:
    """Return where reads go with no replica in rotation (or raise)."""
    if config.fallback == "error":
        raise NoReplicaAvailable(
            "No replica is in rotation and RWSPLIT['FALLBACK'] is 'error'; "
            "run 'manage.py replica_health' to see why."
        )
    return config.primary


_startup_names: dict[str, object] = {}


def remember_database_names() -> None:
    """Note each database NAME at start-up, before a test runner renames them."""
    for alias, settings_dict in connections.settings.items():
        _startup_names.setdefault(alias, settings_dict.get("NAME"))


def mirrors_active(config: Config) -> bool:
    """
    Return whether Django's test runner has made the replicas test mirrors.

    ``setup_databases`` points a replica whose ``TEST["MIRROR"]`` names the
    primary at the primary's test database by changing its NAME. Such a
    replica is a separate connection that cannot see the test's uncommitted
    writes, so while that is the case (and ``ROUTE_TEST_MIRRORS_TO_PRIMARY``
    is on) reads go to the primary.
    """
    # The runner renames every mirror at once: the first replica tells. (Kept
    # inline: this runs for every unpinned read while mirrors are routed.)
    for alias in config.replicas:
        name = connections.settings[alias].get("NAME")
        return bool(name != _startup_names.get(alias, name))
    return False


def acting_as_test_mirror(alias: str) -> bool:
    """Whether the test runner has renamed ``alias``'s database (a test mirror)."""
    name = connections.settings[alias].get("NAME")
    return bool(name != _startup_names.get(alias, name))
