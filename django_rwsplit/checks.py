"""System checks for the RWSPLIT setting and how the app is wired in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

from django_rwsplit import balancing, conf
from django_rwsplit.health.probes import probe_for
from django_rwsplit.health.verdict import PrimaryVerdict, judge_primary, primary_problem

ROUTER_PATH = "django_rwsplit.routers.ReadWriteRouter"
MIDDLEWARE_PATH = "django_rwsplit.middleware.PinPrimaryMiddleware"
BACKEND = "django_rwsplit.backends.postgresql"


def check_settings(**kwargs: Any) -> list[checks.CheckMessage]:
    """Report every problem in ``RWSPLIT`` (ids rwsplit.E001 to rwsplit.E026)."""
    config, problems = conf.parse(conf.raw_setting())
    messages: list[checks.CheckMessage] = [
        checks.Error(p.msg, hint=p.hint, id=p.id, obj="RWSPLIT") for p in problems
    ]
    if not problems:
        messages.extend(check_token_size(config))
    return messages


def check_token_size(config: conf.Config) -> list[checks.CheckMessage]:
    """Fail when a token of every cluster would exceed what decoding accepts."""
    from django_rwsplit import consistency
    from django_rwsplit.health.probes import LSN_MAX

    worst = {conf.DEFAULT_CLUSTER: LSN_MAX, **dict.fromkeys(config.clusters, LSN_MAX)}
    timelines = dict.fromkeys(worst, consistency.TIMELINE_MAX)
    length = len(consistency.encode_positions(worst, timelines))
    if length <= consistency.MAX_TOKEN_LENGTH:
        return []
    return [
        checks.Error(
            f"A read-your-writes token naming all {len(worst)} clusters can be "
            f"{length} characters long, over the {consistency.MAX_TOKEN_LENGTH} "
            "that a cookie or header token may have: such tokens would be "
            "ignored and read-your-writes silently lost.",
            hint='Use shorter names in RWSPLIT["CLUSTERS"], or fewer clusters.',
            id="rwsplit.E026",
            obj="RWSPLIT",
        )
    ]


def _uses(entries: Sequence[Any], path: str) -> bool:
    wanted = import_string(path)
    for entry in entries:
        if entry == path:
            return True
        try:
            candidate = import_string(entry) if isinstance(entry, str) else entry
        except ImportError:
            continue
        cls = candidate if isinstance(candidate, type) else type(candidate)
        if issubclass(cls, wanted):
            return True
    return False


def check_wiring(**kwargs: Any) -> list[checks.CheckMessage]:
    """Warn about a router, middleware, test mirror or backend that is missing."""
    messages: list[checks.CheckMessage] = []
    if not _uses(settings.DATABASE_ROUTERS, ROUTER_PATH):
        messages.append(
            checks.Warning(
                "django_rwsplit is installed but its router is not in "
                "DATABASE_ROUTERS, so no read goes to a replica.",
                hint=f'Add "{ROUTER_PATH}" to DATABASE_ROUTERS.',
                id="rwsplit.W001",
            )
        )
    if not _uses(settings.MIDDLEWARE, MIDDLEWARE_PATH):
        messages.append(
            checks.Warning(
                "PinPrimaryMiddleware is not in MIDDLEWARE, so a request that "
                "wrote may read stale data from a replica.",
                hint=f'Add "{MIDDLEWARE_PATH}" near the top of MIDDLEWARE.',
                id="rwsplit.W002",
            )
        )
    config, problems = conf.parse(conf.raw_setting())
    if any(p.id in ("rwsplit.E001", "rwsplit.E003") for p in problems):
        return messages
    replicas = [(c, alias) for c in config.every_cluster() for alias in c.replicas]
    for cluster, alias in replicas:
        options: Mapping[str, Any] = settings.DATABASES[alias]
        if conf.test_mirror_of(alias) != cluster.primary:
            messages.append(
                checks.Warning(
                    f"Replica {alias!r} is not a test mirror of the primary, so "
                    "the test runner would create a separate, empty test "
                    "database for it.",
                    hint=f'Set DATABASES["{alias}"]["TEST"] = '
                    f'{{"MIRROR": "{cluster.primary}"}}.',
                    id="rwsplit.W003",
                )
            )
        if options.get("ENGINE") != BACKEND:
            messages.append(
                checks.Warning(
                    f"Replica {alias!r} does not use the {BACKEND} engine, so a "
                    "read that cannot connect to it fails instead of moving to "
                    "another replica or the primary.",
                    hint=f'Set DATABASES["{alias}"]["ENGINE"] = "{BACKEND}".',
                    id="rwsplit.W004",
                )
            )
        if options.get("ATOMIC_REQUESTS"):
            messages.append(
                checks.Warning(
                    f"Replica {alias!r} has ATOMIC_REQUESTS: every request opens "
                    "a transaction on it, and reads in a transaction on a "
                    "replica are never retried elsewhere.",
                    hint=f'Set DATABASES["{alias}"]["ATOMIC_REQUESTS"] = False '
                    "(the primary's setting is the one that matters).",
                    id="rwsplit.W006",
                )
            )
    if config.replicas and settings.DATABASES[config.primary].get("ATOMIC_REQUESTS"):
        messages.append(atomic_requests_info(config))
    primary_engine = str(settings.DATABASES[config.primary].get("ENGINE", ""))
    if config.consistency == "lsn" and not conf.measurable_engine(primary_engine):
        messages.append(
            checks.Warning(
                'RWSPLIT["CONSISTENCY"] is "lsn" but the primary is not PostgreSQL.',
                hint='Use "time" consistency for other databases.',
                id="rwsplit.W005",
            )
        )
    return messages


def atomic_requests_info(config: conf.Config) -> checks.CheckMessage:
    """Say what ATOMIC_REQUESTS on the primary does to read routing."""
    if config.replica_reads_in_atomic_requests:
        return checks.Info(
            f"ATOMIC_REQUESTS is on for the primary {config.primary!r}: GET, HEAD, "
            "OPTIONS and TRACE views read from replicas until they write; reads "
            "inside the view's own atomic() blocks, after its first write, and "
            "in other methods (PIN_UNSAFE_METHODS) use the primary. The view's "
            "writes stay in one transaction.",
            hint='RWSPLIT["REPLICA_READS_IN_ATOMIC_REQUESTS"] = False sends every '
            "read of those views to the primary.",
            id="rwsplit.I001",
        )
    return checks.Info(
        f"ATOMIC_REQUESTS is on for the primary {config.primary!r} and "
        'RWSPLIT["REPLICA_READS_IN_ATOMIC_REQUESTS"] is False: every read of '
        "every view runs in the view's transaction on the primary, none on a "
        "replica.",
        hint="Set it to True (the default) to read from replicas until a view writes.",
        id="rwsplit.I001",
    )


def check_databases(
    databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """
    With ``check --database``, probe the named primary and replicas.

    Replicas that Django's test runner made test mirrors, whose reads then
    go to the primary (``ROUTE_TEST_MIRRORS_TO_PRIMARY``), are not probed:
    the runner checks after creating the test database, which a replica may
    not have replayed yet.
    """
    if not databases:
        return []
    config, problems = conf.parse(conf.raw_setting())
    if problems:
        return []
    messages: list[checks.CheckMessage] = []
    for alias in databases:
        options = settings.DATABASES[alias]
        cluster = config.cluster_for_alias(alias)
        if cluster is None:
            continue
        if alias == cluster.primary:
            primary = probe_for(options).check_primary(
                alias, options, cluster.check_timeout
            )
            if judge_primary(primary) in (
                PrimaryVerdict.UNREACHABLE,
                PrimaryVerdict.IN_RECOVERY,
            ):
                messages.append(
                    checks.Error(
                        f"Primary {alias!r} is {primary_problem(primary)}.",
                        id="rwsplit.E020",
                    )
                )
        elif alias in cluster.replicas and not (
            cluster.test_mirrors and balancing.acting_as_test_mirror(alias)
        ):
            # A test mirror whose reads go to the primary serves no test, and
            # the primary's fresh test database may not be replayed there yet.
            reading = probe_for(options).check_replica(
                alias, options, cluster.check_timeout
            )
            if not reading.reachable:
                messages.append(
                    checks.Error(
                        f"Replica {alias!r} is unreachable: {reading.error}.",
                        id="rwsplit.E021",
                    )
                )
            elif reading.in_recovery is False:
                messages.append(
                    checks.Error(
                        f"Replica {alias!r} is not in recovery: it is a primary.",
                        hint="A promoted node must not be listed in REPLICAS.",
                        id="rwsplit.E022",
                    )
                )
    return messages
