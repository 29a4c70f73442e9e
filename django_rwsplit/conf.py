"""Typed, cached access to the ``RWSPLIT`` setting."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULTS: dict[str, Any] = {
    "PRIMARY": "default",
    "REPLICAS": (),
    "STICKY_SECONDS": 5.0,
    "PIN_UNSAFE_METHODS": True,
    "COOKIE_NAME": "rwsplit_pin",
    "ROUTE_TEST_MIRRORS_TO_PRIMARY": True,
    "MAX_LAG_SECONDS": 5.0,
    "MAX_LAG_BYTES": None,
    "CHECK_INTERVAL": 1.0,
    "CHECK_TIMEOUT": 1.0,
    "READMIT_AFTER": 3,
    "FALLBACK": "primary",
    "HEALTH_CACHE": None,
    "CONSISTENCY": "lsn",
    "CAUSAL_WAIT": 0,
    "HEALTH_ENDPOINT_TOKEN": None,
    "HEALTH_ENDPOINT_SHOW_HOSTS": False,
    "METRICS": False,
    "REPLICA_READS_IN_ATOMIC_REQUESTS": True,
}
# Upper bounds keep every number usable as a timeout, a cookie age or a date.
MAXIMUMS: dict[str, float] = {
    "STICKY_SECONDS": 86_400,
    "MAX_LAG_SECONDS": 86_400,
    "MAX_LAG_BYTES": 2**62,
    "CHECK_INTERVAL": 3_600,
    "CHECK_TIMEOUT": 600,
    "READMIT_AFTER": 1_000_000,
    "CAUSAL_WAIT": 60_000,
}
FALLBACK_CHOICES = ("primary", "error")
CONSISTENCY_CHOICES = ("lsn", "time")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with ``RWSPLIT``, reported as a system check."""

    id: str
    msg: str
    hint: str | None = None


@dataclass(frozen=True)
class Config:
    """The parsed, validated ``RWSPLIT`` setting."""

    primary: str = "default"
    replicas: Mapping[str, int] = field(default_factory=dict)
    sticky_seconds: float = 5.0
    pin_unsafe_methods: bool = True
    cookie_name: str = "rwsplit_pin"
    route_test_mirrors_to_primary: bool = True
    max_lag_seconds: float | None = 5.0
    max_lag_bytes: int | None = None
    check_interval: float = 1.0
    check_timeout: float = 1.0
    readmit_after: int = 3
    fallback: str = "primary"
    health_cache: str | None = None
    consistency: str = "lsn"
    causal_wait: float = 0.0
    health_endpoint_token: str | None = field(default=None, repr=False)
    health_endpoint_show_hosts: bool = False
    metrics: bool = False
    replica_reads_in_atomic_requests: bool = True
    # True when every replica is a TEST MIRROR of the primary and
    # ROUTE_TEST_MIRRORS_TO_PRIMARY is on (see balancing.mirrors_active).
    test_mirrors: bool = False


def raw_setting() -> object:
    """Return ``settings.RWSPLIT`` as the user wrote it (``{}`` when absent)."""
    return getattr(settings, "RWSPLIT", {})


def _number(
    raw: Mapping[str, Any],
    key: str,
    problems: list[Problem],
    *,
    nullable: bool = False,
    integer: bool = False,
    positive: bool = False,
) -> Any:
    value = raw.get(key, DEFAULTS[key])
    if value is None and nullable:
        return None
    kinds = (int,) if integer else (int, float)
    bad_type = isinstance(value, bool) or not isinstance(value, kinds)
    maximum = MAXIMUMS[key]
    if (
        bad_type
        or (isinstance(value, float) and not math.isfinite(value))
        or value < 0
        or value > maximum
        or (positive and value == 0)
    ):
        wanted = "an integer" if integer else "a number"
        sign = "greater than zero" if positive else "zero or more"
        none = " or None" if nullable else ""
        problems.append(
            Problem(
                "rwsplit.E008",
                f'RWSPLIT["{key}"] should be {wanted} {sign} and at most '
                f"{maximum:g}{none}, not {value!r}.",
                f"The default is {DEFAULTS[key]!r}.",
            )
        )
        return DEFAULTS[key]
    return value


def _replicas(raw: Mapping[str, Any], problems: list[Problem]) -> dict[str, int]:
    value = raw.get("REPLICAS", ())
    if isinstance(value, Mapping):
        weights: dict[str, int] = {}
        for alias, options in value.items():
            if not isinstance(alias, str):
                problems.append(
                    Problem(
                        "rwsplit.E004",
                        f'RWSPLIT["REPLICAS"] keys should be database aliases, '
                        f"not {alias!r}.",
                    )
                )
                continue
            weight = options.get("WEIGHT", 1) if isinstance(options, Mapping) else None
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int)
                or weight < 1
                or (isinstance(options, Mapping) and set(options) - {"WEIGHT"})
            ):
                problems.append(
                    Problem(
                        "rwsplit.E007",
                        f'RWSPLIT["REPLICAS"]["{alias}"] should be a dict with an '
                        f'optional positive integer "WEIGHT", not {options!r}.',
                        'For example {"WEIGHT": 3}. The default weight is 1.',
                    )
                )
                continue
            weights[alias] = weight
        return weights
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str | bytes)
        and all(isinstance(alias, str) for alias in value)
    ):
        return dict.fromkeys(value, 1)
    problems.append(
        Problem(
            "rwsplit.E004",
            'RWSPLIT["REPLICAS"] should be a sequence of database aliases or a '
            "dict of alias to options.",
            'For example ["replica1", "replica2"] or {"replica1": {"WEIGHT": 3}}.',
        )
    )
    return {}


def _choice(
    raw: Mapping[str, Any], key: str, choices: Sequence[str], problems: list[Problem]
) -> str:
    value = raw.get(key, DEFAULTS[key])
    if value not in choices:
        ids = {"FALLBACK": "rwsplit.E011", "CONSISTENCY": "rwsplit.E012"}
        problems.append(
            Problem(
                ids[key],
                f'RWSPLIT["{key}"] should be one of {", ".join(map(repr, choices))}, '
                f"not {value!r}.",
            )
        )
        return str(DEFAULTS[key])
    return str(value)


def _boolean(raw: Mapping[str, Any], key: str, problems: list[Problem]) -> bool:
    value = raw.get(key, DEFAULTS[key])
    if not isinstance(value, bool):
        problems.append(
            Problem(
                "rwsplit.E009",
                f'RWSPLIT["{key}"] should be True or False, not {value!r}.',
            )
        )
        return bool(DEFAULTS[key])
    return value


def _optional_alias(raw: Mapping[str, Any], problems: list[Problem]) -> str | None:
    value = raw.get("HEALTH_CACHE")
    if value is None:
        return None
    if not isinstance(value, str) or value not in settings.CACHES:
        problems.append(
            Problem(
                "rwsplit.E013",
                f'RWSPLIT["HEALTH_CACHE"] should be None or an alias in CACHES, '
                f"not {value!r}.",
                "Use a cache shared by every process, such as Redis.",
            )
        )
        return None
    return value


def _token(raw: Mapping[str, Any], problems: list[Problem]) -> str | None:
    value = raw.get("HEALTH_ENDPOINT_TOKEN")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(
            Problem(
                "rwsplit.E014",
                'RWSPLIT["HEALTH_ENDPOINT_TOKEN"] should be None or a non-empty '
                f"string, not {type(value).__name__}.",
                "Read it from the environment, e.g. "
                'os.environ.get("RWSPLIT_HEALTH_TOKEN").',
            )
        )
        return None
    return value


def test_mirror_of(alias: str) -> object:
    """Return the TEST["MIRROR"] of database ``alias`` (None when unset)."""
    options: Mapping[str, Any] = settings.DATABASES[alias]
    test = options.get("TEST") or {}
    return test.get("MIRROR") if isinstance(test, Mapping) else None


def parse(raw: object) -> tuple[Config, list[Problem]]:
    """Parse ``raw`` into a :class:`Config`, collecting every problem found."""
    problems: list[Problem] = []
    if not isinstance(raw, Mapping):
        problems.append(
            Problem(
                "rwsplit.E001",
                f"RWSPLIT should be a dict, not {type(raw).__name__}.",
                'For example RWSPLIT = {"REPLICAS": ["replica1"]}.',
            )
        )
        return Config(), problems
    for key in raw:
        if key not in DEFAULTS:
            close = difflib.get_close_matches(str(key), list(DEFAULTS), n=1)
            problems.append(
                Problem(
                    "rwsplit.E002",
                    f"RWSPLIT has an unknown key {key!r}.",
                    f"Did you mean {close[0]!r}?"
                    if close
                    else f"Known keys: {', '.join(DEFAULTS)}.",
                )
            )
    primary = raw.get("PRIMARY", "default")
    if not isinstance(primary, str) or primary not in settings.DATABASES:
        problems.append(
            Problem(
                "rwsplit.E003",
                f'RWSPLIT["PRIMARY"] should be an alias in DATABASES, not {primary!r}.',
                f"Known aliases: {', '.join(settings.DATABASES)}.",
            )
        )
        primary = "default"
    replicas = _replicas(raw, problems)
    for alias in list(replicas):
        if alias == primary:
            problems.append(
                Problem(
                    "rwsplit.E006",
                    f'RWSPLIT["REPLICAS"] lists the primary {alias!r}.',
                    "The primary takes reads when no replica can; do not list it.",
                )
            )
            del replicas[alias]
        elif alias not in settings.DATABASES:
            problems.append(
                Problem(
                    "rwsplit.E005",
                    f'RWSPLIT["REPLICAS"] names {alias!r}, which is not in DATABASES.',
                    f"Known aliases: {', '.join(settings.DATABASES)}.",
                )
            )
            del replicas[alias]
    if replicas:
        for alias in (primary, *replicas):
            engine = str(settings.DATABASES.get(alias, {}).get("ENGINE") or "")
            if not measurable_engine(engine):
                problems.append(
                    Problem(
                        "rwsplit.E015",
                        f"DATABASES[{alias!r}] uses ENGINE {engine!r}: replica "
                        "health is measured on PostgreSQL streaming replication "
                        "only.",
                        "Use a PostgreSQL engine (or one built on Django's), or "
                        'leave RWSPLIT["REPLICAS"] empty.',
                    )
                )
    cookie_name = raw.get("COOKIE_NAME", DEFAULTS["COOKIE_NAME"])
    if (
        not isinstance(cookie_name, str)
        or not cookie_name.isascii()
        or not (cookie_name.replace("_", "").replace("-", "").isalnum())
    ):
        problems.append(
            Problem(
                "rwsplit.E010",
                f'RWSPLIT["COOKIE_NAME"] should be a non-empty name of letters, '
                f"digits, '-' and '_', not {cookie_name!r}.",
            )
        )
        cookie_name = DEFAULTS["COOKIE_NAME"]
    route_mirrors = _boolean(raw, "ROUTE_TEST_MIRRORS_TO_PRIMARY", problems)
    config = Config(
        primary=primary,
        replicas=replicas,
        sticky_seconds=float(_number(raw, "STICKY_SECONDS", problems)),
        pin_unsafe_methods=_boolean(raw, "PIN_UNSAFE_METHODS", problems),
        cookie_name=cookie_name,
        route_test_mirrors_to_primary=route_mirrors,
        max_lag_seconds=_number(
            raw, "MAX_LAG_SECONDS", problems, nullable=True, positive=True
        ),
        max_lag_bytes=_number(
            raw, "MAX_LAG_BYTES", problems, nullable=True, integer=True, positive=True
        ),
        check_interval=float(_number(raw, "CHECK_INTERVAL", problems, positive=True)),
        check_timeout=float(_number(raw, "CHECK_TIMEOUT", problems, positive=True)),
        readmit_after=int(
            _number(raw, "READMIT_AFTER", problems, integer=True, positive=True)
        ),
        fallback=_choice(raw, "FALLBACK", FALLBACK_CHOICES, problems),
        health_cache=_optional_alias(raw, problems),
        consistency=_choice(raw, "CONSISTENCY", CONSISTENCY_CHOICES, problems),
        causal_wait=float(_number(raw, "CAUSAL_WAIT", problems)),
        health_endpoint_token=_token(raw, problems),
        health_endpoint_show_hosts=_boolean(
            raw, "HEALTH_ENDPOINT_SHOW_HOSTS", problems
        ),
        metrics=_boolean(raw, "METRICS", problems),
        replica_reads_in_atomic_requests=_boolean(
            raw, "REPLICA_READS_IN_ATOMIC_REQUESTS", problems
        ),
        test_mirrors=route_mirrors
        and bool(replicas)
        and all(test_mirror_of(alias) == primary for alias in replicas),
    )
    return config, problems


# The parsed setting once get_config() ran (None before, and after a change):
# read directly only on the router's hot path.
cached: Config | None = None


def measurable_engine(engine: str) -> bool:
    """
    Return whether health probes can measure a server of this ``ENGINE``.

    Any backend whose vendor is PostgreSQL qualifies (subclasses of Django's
    included). A backend that cannot be loaded here (PostGIS without GDAL)
    is judged by its name: Django reports the loading problem itself.
    """
    from django.db.utils import load_backend

    if not engine:
        return False
    try:
        vendor = load_backend(engine).DatabaseWrapper.vendor
    except Exception:  # noqa: BLE001 - any loading failure
        return "postgresql" in engine or "postgis" in engine
    return bool(vendor == "postgresql")


def get_config() -> Config:
    """Return the parsed ``RWSPLIT`` setting, parsing it once per change."""
    global cached
    config = cached
    if config is None:
        config, problems = parse(raw_setting())
        errors = [p for p in problems if p.id.startswith("rwsplit.E")]
        if errors:
            raise ImproperlyConfigured(" ".join(f"{p.msg} ({p.id})" for p in errors))
        cached = config
    return config


def config_or_none() -> Config | None:
    """
    Return the parsed setting, or None while ``RWSPLIT`` is invalid.

    For code that Django runs before or during its system checks (router
    ``allow_migrate``, connection signals, health views): an invalid setting
    must reach the user as check errors, not as an exception from there.
    """
    try:
        return cached or get_config()
    except ImproperlyConfigured:
        return None


def clear_cache(**kwargs: object) -> None:
    """Forget the parsed setting; connected to Django's ``setting_changed``."""
    global cached
    if kwargs.get("setting") in (None, "RWSPLIT", "DATABASES", "CACHES"):
        cached = None
