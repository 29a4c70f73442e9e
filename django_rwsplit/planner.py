"""
The read planner: the one place that decides which server serves a read.

A :class:`ReadPlanner` belongs to one cluster. Given the cluster's settings,
a view of its health (:class:`HealthView`, injected) and the routing state of
the current unit of work (:mod:`django_rwsplit.pinning`), :meth:`~ReadPlanner.plan`
returns a :class:`ReadPlan`: the alias, and why it is the primary when it is
(a :class:`~django_rwsplit.pin_reasons.PinReason`). The router returns the
plan's alias; the engine asks the same planner for :meth:`~ReadPlanner.substitutes`
when the replica it was given cannot serve, and never chooses on its own.

With several clusters each has its planner (:func:`for_config`); the rules
are the same code. Plans are made once per planner and reused: an unpinned
read allocates nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from django_rwsplit import consistency, observe, pinning
from django_rwsplit.balancing import BALANCERS, AdaptiveBalancer, mirrors_active
from django_rwsplit.conf import Config
from django_rwsplit.exceptions import NoReplicaAvailable
from django_rwsplit.health import load
from django_rwsplit.health.probes import PrimaryStatus
from django_rwsplit.health.rotation import Rotation
from django_rwsplit.health.tracker import ReplicaStatus
from django_rwsplit.pin_reasons import PinReason
from django_rwsplit.pinning import Scope

__all__ = [
    "HealthView",
    "Positions",
    "ReadPlan",
    "ReadPlanner",
    "for_alias",
    "for_config",
    "planners",
    "forget_primary_connections",
    "reset",
]


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """Where a read goes, and why it is the primary when it is."""

    #: The database alias the router returns.
    alias: str
    #: Why the read goes to the primary (None: a replica, by the balancer).
    reason: PinReason | None
    #: The cluster's name.
    cluster: str


class HealthView(Protocol):
    """What the planner reads of a cluster's health (a ``ProcessHealth``)."""

    @property
    def rotation(self) -> Rotation:
        """The replicas in rotation now."""

    @property
    def primary(self) -> PrimaryStatus | None:
        """The primary's last reading."""

    def status(self, alias: str) -> ReplicaStatus | None:
        """Replica ``alias``'s last status."""

    def await_first_round(self) -> bool:
        """Wait (bounded, once) for a first round not yet ended: True if it ended."""


class Positions(Protocol):
    """Asks servers their WAL positions (read-your-writes); I/O."""

    def replica_position(self, alias: str) -> int | None:
        """What replica ``alias`` has replayed (None: unknown)."""

    def primary_position(self, using: str) -> int | None:
        """The primary's current position (None: unknown)."""


class _ThreadPrimary(threading.local):
    """
    The calling thread's primary ``DatabaseWrapper`` of one planner's cluster.

    ``connections[alias]`` costs about a microsecond (asgiref's ``Local``
    probes for a running event loop); the planner asks whether the primary
    is inside ``atomic()`` on every read, so it keeps the wrapper Django
    handed this thread, until the next routing scope is activated.
    """

    wrapper: BaseDatabaseWrapper | None = None


def forget_primary_connections() -> None:
    """Drop the calling thread's remembered primary wrappers (a scope begins)."""
    for planner in planners.values():
        planner.thread.wrapper = None


def primary_connection(alias: str) -> BaseDatabaseWrapper:
    """The calling thread's wrapper of primary ``alias`` (Django's)."""
    return connections[alias]


def _process_health(config: Config) -> HealthView:
    from django_rwsplit.health import registry

    return registry.process_health(config)


_pin_depth = pinning.get_pin_depth
_cluster_pins = pinning.get_cluster_pins
_current_scope = pinning.get_scope
_unscoped_write = pinning.get_unscoped_write
_unscoped_writes = pinning.get_unscoped_writes
_NONE: dict[str, float] = {}


class ReadPlanner:
    """
    One cluster's read decisions (see the module docstring).

    ``health`` returns the cluster's health view (by default the process's
    health state, started on first use); ``positions`` asks servers their
    WAL positions; ``primary_wrapper`` returns the thread's primary
    connection (to see ``atomic()``). Tests inject fakes of all three.
    """

    def __init__(
        self,
        config: Config,
        health: Callable[[Config], HealthView] = _process_health,
        positions: Positions = consistency,
        primary_wrapper: Callable[[str], BaseDatabaseWrapper] = primary_connection,
    ) -> None:
        self.config = config
        self._health = health
        self._view: HealthView | None = None
        self.positions = positions
        self._primary_wrapper = primary_wrapper
        self.thread = _ThreadPrimary()
        self._balancer = BALANCERS[config.balancer]
        self._adaptive = config.balancer == "adaptive"
        self._is_default = config.is_default
        # pin_primary("name") pins exist only with several clusters.
        self._named_pins = bool(config.clusters) or not config.is_default
        primary, name = config.primary, config.name
        self._pinned = {r: ReadPlan(primary, r, name) for r in PinReason}
        self._replicas = {a: ReadPlan(a, None, name) for a in config.replicas}

    # -- the health view ------------------------------------------------------

    @property
    def health(self) -> HealthView:
        """The cluster's health view (fetched once; :meth:`forget_health`)."""
        view = self._view
        if view is None:
            view = self._view = self._health(self.config)
        return view

    def forget_health(self) -> None:
        """Fetch the health view again at the next read (the process was reset)."""
        self._view = None

    # -- plans ----------------------------------------------------------------

    def plan(self) -> ReadPlan:
        """Where the current context's next read of this cluster goes."""
        # This runs for every read: attribute reads, no I/O, few calls.
        config = self.config
        pinned = self._pinned
        if not self._replicas:
            return pinned[PinReason.NO_REPLICAS]
        if _pin_depth() or (self._named_pins and config.name in _cluster_pins()):
            return pinned[PinReason.PIN_PRIMARY]
        unit = _current_scope()
        scope = unit if unit is None or self._is_default else unit.of(config.name)
        if scope is not None:
            if scope.pinned is not None:
                return pinned[scope.pinned]
        elif (
            wrote_at := _unscoped_write()
            if self._is_default
            else _unscoped_writes(_NONE).get(config.name, 0.0)
        ) and time.monotonic() - wrote_at < config.sticky_seconds:
            # Outside any scope, a write pins its context for a while.
            return pinned[PinReason.WRITE]
        thread = self.thread
        wrapper = thread.wrapper
        if wrapper is None:
            wrapper = thread.wrapper = self._primary_wrapper(config.primary)
        if wrapper.in_atomic_block and (
            scope is None or scope.request_atomic_depth != len(wrapper.atomic_blocks)
        ):
            return pinned[PinReason.TRANSACTION]
        if config.test_mirrors and mirrors_active(config):
            return pinned[PinReason.TEST_MIRROR]
        view = self._view
        rotation = (view if view is not None else self.health).rotation
        if unit is not None and scope is not None:
            hook = unit.before_first_read
            if hook is not None:
                _run_first_read_hook(unit, hook)
                if scope.pinned is not None:
                    return pinned[scope.pinned]
            chosen = scope.replica
            if chosen is not None and chosen in rotation.members:
                return self._replicas[chosen]
            if scope.min_lsn is not None:
                return self._causal_choice(scope, rotation)
        return self._pick(scope, rotation)

    def _pick(self, scope: Scope | None, rotation: Rotation) -> ReadPlan:
        """The balancer's pick; a scope keeps it for its later reads."""
        alias = rotation.pick()
        if alias is None:
            return self.fallback()
        if self._adaptive and alias in load.penalised:
            alias = AdaptiveBalancer.instead_of(rotation, alias)
        if scope is not None:
            scope.replica = alias
        return self._replicas[alias]

    def _causal_choice(self, scope: Scope, rotation: Rotation) -> ReadPlan:
        """A replica that has replayed ``scope.min_lsn``, else the primary."""
        if not rotation.members:
            return self.fallback()
        for alias in self._balancer.candidates(rotation):
            if self.caught_up(alias, scope, ask=True):
                scope.replica = alias
                return self._replicas[alias]
        if not self.token_plausible(scope.min_lsn):
            scope.min_lsn = None
            return self._pick(scope, rotation)
        # No replica has the client's last write yet: the rest of the scope
        # reads from the primary without asking the replicas again.
        scope.pinned = PinReason.TOKEN
        observe.pin(PinReason.TOKEN)
        return self._pinned[PinReason.TOKEN]

    def fallback(self) -> ReadPlan:
        """Where reads go with no replica in rotation (or raise, ``FALLBACK``)."""
        if self.health.await_first_round() and self.health.rotation.members:
            return self.plan()  # the health started meanwhile (a server)
        if self.config.fallback == "error":
            raise NoReplicaAvailable(
                "No replica is in rotation and RWSPLIT['FALLBACK'] is 'error'; "
                "run 'manage.py replica_health' to see why."
            )
        return self._pinned[PinReason.FALLBACK]

    # -- substitutes -----------------------------------------------------------

    def substitutes(self, exclude: Collection[str] = ()) -> list[str]:
        """
        Where a read meant for an unusable replica may go, best first.

        The replicas in rotation (not in ``exclude``) that the health view
        shows at the current scope's read-your-writes position, in the
        balancer's order, then the primary. Asks no server.
        """
        unit = _current_scope()
        scope = (
            unit
            if unit is None or self.config.is_default
            else unit.of(self.config.name)
        )
        found = [
            alias
            for alias in self._balancer.candidates(self.health.rotation)
            if alias not in exclude and self.caught_up(alias, scope, ask=False)
        ]
        found.append(self.config.primary)
        return found

    def substitute(self, exclude: Collection[str] = ()) -> str:
        """The first of :meth:`substitutes`."""
        return self.substitutes(exclude)[0]

    # -- read-your-writes ------------------------------------------------------

    def caught_up(self, alias: str, scope: Scope | None, *, ask: bool) -> bool:
        """
        Return whether replica ``alias`` has replayed the scope's token position.

        True when the scope has none. The health view answers when it
        already shows the position, or (``ask`` false) whenever it is known.
        With ``ask``, a reading taken after the write that shows the replica
        behind answers too; otherwise the replica is asked once (and again
        until ``CAUSAL_WAIT`` milliseconds after the scope's first wait, if
        set: one deadline per scope, not per replica).
        """
        min_lsn = scope.min_lsn if scope is not None else None
        if not min_lsn:
            return True
        health = self.health
        status = health.status(alias)
        known = status.replay_lsn if status is not None else None
        if known is not None and known >= min_lsn:
            return True
        if not ask:
            return False
        causal_wait = self.config.causal_wait
        if known is not None and not causal_wait:
            primary = health.primary
            if primary is not None and (primary.current_lsn or 0) >= min_lsn:
                return False  # measured after the write, and behind
        deadline = scope.causal_deadline if scope is not None else None
        if deadline is None:
            deadline = time.monotonic() + causal_wait / 1000
            if scope is not None:
                scope.causal_deadline = deadline
        while True:
            position = self.positions.replica_position(alias)
            if position is not None and position >= min_lsn:
                return True
            if position is None or time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def token_plausible(self, lsn: int | None) -> bool:
        """
        Return False for a token past the primary's current WAL position.

        Such a token was not issued by this primary (forged with a leaked
        key, or from before a restore); honouring it would pin the client to
        the primary until it expires. The primary is asked only when the
        token is ahead of the last health round.
        """
        if lsn is None:
            return False
        known = self.health.primary
        if known is not None and (known.current_lsn or 0) >= lsn:
            return True
        current = self.positions.primary_position(self.config.primary)
        return current is None or lsn <= current


def _run_first_read_hook(scope: Scope, hook: Callable[[Scope], bool]) -> None:
    """Run the scope's first-read hook; keep it for the next read until it is done."""
    scope.before_first_read = None  # reads the hook makes skip it
    if not hook(scope):
        scope.before_first_read = hook  # not yet: at the next read


# -- the process's planners ------------------------------------------------------

# The planners made in this process, by cluster name (the latest Config's):
# replaced, never mutated. The router reaches a planner through its Config.
planners: dict[str, ReadPlanner] = {}
_lock = threading.Lock()


def for_config(config: Config) -> ReadPlanner:
    """This process's planner of cluster ``config`` (made on first use)."""
    global planners
    planner: ReadPlanner | None = config.read_planner
    if planner is not None:
        return planner
    with _lock:
        planner = config.read_planner
        if planner is None:
            planner = ReadPlanner(config)
            planners = {**planners, config.name: planner}
            # Config is frozen; this one field is a cache the router reads.
            object.__setattr__(config, "read_planner", planner)
    return planner


def for_alias(alias: str) -> ReadPlanner | None:
    """The planner of the cluster ``alias`` is a primary or replica of."""
    from django_rwsplit import conf

    config = conf.cluster_of(alias)
    return None if config is None else for_config(config)


def reset() -> None:
    """Every planner fetches its health view again (the health state was reset)."""
    for planner in planners.values():
        planner.forget_health()
