"""
The ``RWSPLIT`` setting: a table of its keys, parsed once and cached.

:data:`SETTINGS` lists every key with its type, default, bounds and system
check id. It drives parsing (:func:`parse`), the checks (``rwsplit.E0xx``)
and the README's settings list (a test compares the two).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS

from django_rwsplit import cluster_settings, validators
from django_rwsplit.validators import Problem

logger = logging.getLogger("django_rwsplit")

__all__ = [
    "BALANCER_CHOICES",
    "DEFAULT_CLUSTER",
    "CONSISTENCY_CHOICES",
    "DEFAULTS",
    "FALLBACK_CHOICES",
    "MAXIMUMS",
    "SETTINGS",
    "Config",
    "Problem",
    "Setting",
    "clear_cache",
    "config_or_none",
    "get_config",
    "parse",
]

FALLBACK_CHOICES = ("primary", "error")
CONSISTENCY_CHOICES = ("lsn", "time")
BALANCER_CHOICES = ("adaptive", "round_robin")
# The cluster the top-level keys describe (RWSPLIT["CLUSTERS"] names others).
DEFAULT_CLUSTER = "default"


@dataclass(frozen=True)
class Setting:
    """One key of ``RWSPLIT``: what it holds, its default and how it is checked."""

    key: str
    type: str
    default: Any
    validate: Callable[[Setting, Any, list[Problem]], Any]
    check_id: str
    maximum: float | None = None
    # The smallest accepted value (above zero), for a setting whose tiny
    # values would spin a thread (intervals, timeouts).
    minimum: float | None = None
    positive: bool = False
    nullable: bool = False
    integer: bool = False
    choices: tuple[str, ...] = ()

    @property
    def attribute(self) -> str:
        """The :class:`Config` field holding the parsed value."""
        return self.key.lower()

    @property
    def documented_default(self) -> str:
        """The default as the README writes it (strings in double quotes)."""
        if isinstance(self.default, str):
            return f'"{self.default}"'
        return repr(self.default)


_number = validators.number
_boolean = validators.boolean
_choice = validators.choice

# Upper bounds keep every number usable as a timeout, a cookie age or a date.
SETTINGS: tuple[Setting, ...] = (
    Setting("PRIMARY", "str", "default", validators.database_alias, "rwsplit.E003"),
    Setting(
        "REPLICAS",
        "Sequence[str] | Mapping[str, Mapping[str, int]]",
        (),
        validators.replicas,
        "rwsplit.E004",
    ),
    Setting(
        "BALANCER",
        "str",
        "adaptive",
        _choice,
        "rwsplit.E016",
        choices=BALANCER_CHOICES,
    ),
    Setting("PIN_UNSAFE_METHODS", "bool", True, _boolean, "rwsplit.E009"),
    Setting("REPLICA_READS_IN_ATOMIC_REQUESTS", "bool", True, _boolean, "rwsplit.E009"),
    Setting("ROUTE_TEST_MIRRORS_TO_PRIMARY", "bool", True, _boolean, "rwsplit.E009"),
    Setting(
        "CONSISTENCY",
        "str",
        "lsn",
        _choice,
        "rwsplit.E012",
        choices=CONSISTENCY_CHOICES,
    ),
    Setting("STICKY_SECONDS", "float", 5.0, _number, "rwsplit.E008", maximum=86_400),
    Setting("CAUSAL_WAIT", "float", 0, _number, "rwsplit.E008", maximum=60_000),
    Setting("PRIMARY_WAIT", "float", 0.0, _number, "rwsplit.E008", maximum=600),
    Setting("VISIBLE_WAIT", "float", 5.0, _number, "rwsplit.E008", maximum=600),
    Setting(
        "COOKIE_NAME", "str", "rwsplit_pin", validators.cookie_name, "rwsplit.E010"
    ),
    Setting(
        "RESPONSE_TOKEN_HEADER",
        "str | None",
        "X-RWSplit-Token",
        validators.header_name,
        "rwsplit.E017",
    ),
    Setting(
        "REQUEST_TOKEN_HEADER",
        "str | None",
        "X-RWSplit-Token",
        validators.header_name,
        "rwsplit.E017",
    ),
    Setting(
        "USER_PIN_CACHE", "str | None", None, validators.cache_alias, "rwsplit.E018"
    ),
    Setting(
        "MAX_LAG_SECONDS",
        "float | None",
        5.0,
        _number,
        "rwsplit.E008",
        maximum=86_400,
        positive=True,
        nullable=True,
    ),
    Setting(
        "MAX_LAG_BYTES",
        "int | None",
        None,
        _number,
        "rwsplit.E008",
        maximum=2**62,
        positive=True,
        nullable=True,
        integer=True,
    ),
    Setting(
        "CHECK_INTERVAL",
        "float",
        1.0,
        _number,
        "rwsplit.E008",
        maximum=3_600,
        minimum=0.05,
        positive=True,
    ),
    Setting(
        "CHECK_TIMEOUT",
        "float",
        1.0,
        _number,
        "rwsplit.E008",
        maximum=600,
        minimum=0.05,
        positive=True,
    ),
    Setting(
        "READMIT_AFTER",
        "int",
        3,
        _number,
        "rwsplit.E008",
        maximum=1_000_000,
        positive=True,
        integer=True,
    ),
    Setting(
        "FALLBACK", "str", "primary", _choice, "rwsplit.E011", choices=FALLBACK_CHOICES
    ),
    Setting("HEALTH_CACHE", "str | None", None, validators.cache_alias, "rwsplit.E013"),
    Setting(
        "HEALTH_ENDPOINT_TOKEN", "str | None", None, validators.secret, "rwsplit.E014"
    ),
    Setting("HEALTH_ENDPOINT_SHOW_HOSTS", "bool", False, _boolean, "rwsplit.E009"),
    Setting("METRICS", "bool", False, _boolean, "rwsplit.E009"),
    Setting(
        "CLUSTERS",
        "Mapping[str, Mapping[str, Any]]",
        {},
        cluster_settings.shape,
        "rwsplit.E023",
    ),
)
SETTINGS_BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
DEFAULTS: dict[str, Any] = {s.key: s.default for s in SETTINGS}
MAXIMUMS: dict[str, float] = {
    s.key: s.maximum for s in SETTINGS if s.maximum is not None
}


@dataclass(frozen=True)
class Config:
    """The parsed, validated ``RWSPLIT`` setting (one field per :data:`SETTINGS`)."""

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
    primary_wait: float = 0.0
    visible_wait: float = 5.0
    health_endpoint_token: str | None = field(default=None, repr=False)
    health_endpoint_show_hosts: bool = False
    metrics: bool = False
    replica_reads_in_atomic_requests: bool = True
    balancer: str = "adaptive"
    response_token_header: str | None = "X-RWSplit-Token"
    request_token_header: str | None = "X-RWSplit-Token"
    user_pin_cache: str | None = None
    # True when every replica is a TEST MIRROR of the primary and
    # ROUTE_TEST_MIRRORS_TO_PRIMARY is on (see balancing.mirrors_active).
    test_mirrors: bool = False
    # The system check errors of an invalid setting: this Config then sends
    # every query to the primary (see get_config).
    problems: tuple[str, ...] = ()
    # Several clusters (RWSPLIT["CLUSTERS"]). Each cluster is a Config of
    # its own named ``name``; the top-level Config is the default cluster's
    # and also holds the others, by name, with what routes to them.
    name: str = DEFAULT_CLUSTER
    # name == DEFAULT_CLUSTER, kept as a field: the router reads it per read.
    is_default: bool = True
    clusters: Mapping[str, Config] = field(default_factory=dict)
    app_clusters: Mapping[str, str] = field(default_factory=dict)
    model_clusters: Mapping[str, str] = field(default_factory=dict)
    alias_clusters: Mapping[str, str] = field(default_factory=dict)
    # Each model class's cluster once looked up (the router asks per read).
    model_cache: dict[type, Config] = field(
        default_factory=dict, compare=False, repr=False
    )
    # This cluster's read planner, once made (planner.for_config sets it; the
    # router reads it per read, an attribute rather than a lookup).
    read_planner: Any = field(default=None, compare=False, repr=False)

    def every_cluster(self) -> tuple[Config, ...]:
        """The default cluster, then the others in the order of CLUSTERS."""
        return (self, *self.clusters.values())

    def cluster(self, name: str) -> Config:
        """Return the cluster called ``name`` (KeyError when there is none)."""
        if name == self.name:
            return self
        return self.clusters[name]

    def selected(self, name: str | None) -> list[Config]:
        """The cluster ``name`` alone, or every cluster for None (KeyError: none)."""
        return list(self.every_cluster()) if name is None else [self.cluster(name)]

    def cluster_for_model(self, model: Any) -> Config:
        """Return the cluster that serves ``model`` (by model, then app label)."""
        found = self.model_cache.get(model)
        if found is not None:
            return found
        if not self.clusters:
            return self
        meta = model._meta
        name = self.model_clusters.get(meta.label_lower) or self.app_clusters.get(
            meta.app_label
        )
        found = self.clusters[name] if name else self
        self.model_cache[model] = found
        return found

    def cluster_for_alias(self, alias: str) -> Config | None:
        """Return the cluster whose primary or replica ``alias`` is (None: none)."""
        if not self.clusters:
            return self if alias == self.primary or alias in self.replicas else None
        name = self.alias_clusters.get(alias)
        return None if name is None else self.cluster(name)


def raw_setting() -> object:
    """Return ``settings.RWSPLIT`` as the user wrote it (``{}`` when absent)."""
    return getattr(settings, "RWSPLIT", {})


def test_mirror_of(alias: str) -> object:
    """Return the TEST["MIRROR"] of database ``alias`` (None when unset)."""
    options: Mapping[str, Any] = settings.DATABASES[alias]
    test = options.get("TEST") or {}
    return test.get("MIRROR") if isinstance(test, Mapping) else None


def _unknown_keys(raw: Mapping[Any, Any]) -> list[Problem]:
    problems = []
    for key in raw:
        if key not in SETTINGS_BY_KEY:
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
    return problems


def _replicas_problems(primary: str, replicas: dict[str, int]) -> list[Problem]:
    """Drop replicas that are the primary or unknown; check every engine."""
    problems = []
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
    for alias in (primary, *replicas) if replicas else ():
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
    return problems


def parse(raw: object) -> tuple[Config, list[Problem]]:
    """Parse ``raw`` into a :class:`Config`, collecting every problem found."""
    if not isinstance(raw, Mapping):
        problem = Problem(
            "rwsplit.E001",
            f"RWSPLIT should be a dict, not {type(raw).__name__}.",
            'For example RWSPLIT = {"REPLICAS": ["replica1"]}.',
        )
        return Config(), [problem]
    problems = _unknown_keys(raw)
    values = {
        s.attribute: s.validate(s, raw.get(s.key, s.default), problems)
        for s in SETTINGS
    }
    problems.extend(_replicas_problems(values["primary"], values["replicas"]))
    values["test_mirrors"] = _test_mirrors(
        values["route_test_mirrors_to_primary"], values["primary"], values["replicas"]
    )
    raw_clusters = values.pop("clusters")
    config = Config(**values)
    if not raw_clusters:
        return config, problems
    clusters = cluster_settings.build(
        config, raw_clusters, SETTINGS_BY_KEY, problems, _cluster_problems
    )
    return clusters, problems


def _test_mirrors(route: bool, primary: str, replicas: Mapping[str, int]) -> bool:
    """Whether every replica is a TEST MIRROR of ``primary`` (and that is routed)."""
    return bool(
        route and replicas and all(test_mirror_of(a) == primary for a in replicas)
    )


def _cluster_problems(config: Config) -> tuple[Config, list[Problem]]:
    """Check one named cluster's aliases; return it with its test mirrors known."""
    replicas = dict(config.replicas)
    problems = _replicas_problems(config.primary, replicas)
    mirrors = _test_mirrors(
        config.route_test_mirrors_to_primary, config.primary, replicas
    )
    return replace(config, replicas=replicas, test_mirrors=mirrors), [
        replace(p, msg=f"Cluster {config.name!r}: {p.msg}") for p in problems
    ]


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
    """
    Return the parsed ``RWSPLIT`` setting, parsing it once per change.

    An invalid setting (one that fails the system checks, which gunicorn and
    uvicorn do not run) never fails a request: the Config returned then has
    no replicas, so every query goes to the primary, and the errors are
    logged once per change of the setting (see :attr:`Config.problems`).
    """
    global cached
    config = cached
    if config is None:
        config, problems = parse(raw_setting())
        errors = tuple(
            f"{p.msg} ({p.id})" for p in problems if p.id.startswith("rwsplit.E")
        )
        if errors:
            config = primary_only(config, errors)
            logger.error(
                "RWSPLIT is invalid; every query goes to the primary %r until "
                "it is fixed (run 'manage.py check'): %s",
                config.primary,
                " ".join(errors),
            )
        cached = config
    return config


def primary_only(parsed: Config, problems: tuple[str, ...]) -> Config:
    """
    The Config of an invalid setting: no replicas, each cluster's primary.

    The primary is ``DEFAULT_DB_ALIAS`` where the one named does not exist;
    named clusters that parsed keep routing their models to their primaries.
    """
    primary = parsed.primary
    if primary not in settings.DATABASES:
        primary = DEFAULT_DB_ALIAS
    clusters = {
        name: replace(cluster, replicas={}, test_mirrors=False, problems=problems)
        for name, cluster in parsed.clusters.items()
        if cluster.primary in settings.DATABASES
    }
    return replace(
        Config(primary=primary, replicas={}, problems=problems),
        clusters=clusters,
        app_clusters={k: v for k, v in parsed.app_clusters.items() if v in clusters},
        model_clusters={
            k: v for k, v in parsed.model_clusters.items() if v in clusters
        },
        alias_clusters={
            **{c.primary: n for n, c in clusters.items()},
            primary: DEFAULT_CLUSTER,
        },
    )


def config_or_none() -> Config | None:
    """
    Return the parsed setting, or None while ``RWSPLIT`` is invalid.

    For code that must show an invalid setting as such (the health views, the
    health command) rather than run with the primary-only fallback.
    """
    config = cached or get_config()
    return None if config.problems else config


def clear_cache(**kwargs: object) -> None:
    """Forget the parsed setting; connected to Django's ``setting_changed``."""
    global cached
    if kwargs.get("setting") in (None, "RWSPLIT", "DATABASES", "CACHES"):
        cached = None


def cluster_of(alias: str) -> Config | None:
    """The cluster (of a valid setting) that ``alias`` is a primary or replica of."""
    config = config_or_none()
    return None if config is None else config.cluster_for_alias(alias)
