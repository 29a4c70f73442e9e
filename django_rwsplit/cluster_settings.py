"""
``RWSPLIT["CLUSTERS"]``: named clusters beside the default one.

Each entry names a cluster (its own primary and replicas) and what it serves
(``APPS``: app labels, ``MODELS``: ``"app_label.ModelName"``), and may set
any per-cluster key (:data:`PER_CLUSTER_KEYS`); a key left out takes the
top-level value. The top-level keys keep describing the default cluster.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from django.apps import apps

from django_rwsplit.validators import Problem

if TYPE_CHECKING:
    from django_rwsplit.conf import Config, Setting

# The keys a named cluster may set; the others are the whole project's
# (the pin cookie and headers, CONSISTENCY, STICKY_SECONDS, the endpoint).
PER_CLUSTER_KEYS = (
    "PRIMARY",
    "REPLICAS",
    "BALANCER",
    "CAUSAL_WAIT",
    "MAX_LAG_SECONDS",
    "MAX_LAG_BYTES",
    "CHECK_INTERVAL",
    "CHECK_TIMEOUT",
    "READMIT_AFTER",
    "FALLBACK",
    "HEALTH_CACHE",
)
ROUTING_KEYS = ("APPS", "MODELS")
# A cluster's name travels in tokens ("name:0/16B3D48"): keep it plain.
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,39}$")
CHECK_ID = "rwsplit.E023"


def shape(setting: Setting, value: Any, problems: list[Problem]) -> dict[str, Any]:
    """A dict of cluster name to a dict of that cluster's keys."""
    if not isinstance(value, Mapping):
        problems.append(
            Problem(
                CHECK_ID,
                f'RWSPLIT["CLUSTERS"] should be a dict of cluster name to '
                f"settings, not {type(value).__name__}.",
                'For example {"analytics": {"PRIMARY": "analytics", '
                '"REPLICAS": ["analytics_replica"], "APPS": ["reports"]}}.',
            )
        )
        return {}
    clusters: dict[str, Any] = {}
    for name, entry in value.items():
        where = f'RWSPLIT["CLUSTERS"][{name!r}]'
        if not isinstance(name, str) or not NAME.match(name) or name == "default":
            problems.append(
                Problem(
                    CHECK_ID,
                    f"{where}: a cluster name should be letters, digits, '_' and "
                    "'-' (at most 40), and not 'default'.",
                    "The top-level keys describe the default cluster.",
                )
            )
            continue
        if not isinstance(entry, Mapping) or "PRIMARY" not in entry:
            problems.append(
                Problem(
                    CHECK_ID,
                    f'{where} should be a dict with at least a "PRIMARY" key.',
                )
            )
            continue
        unknown = [k for k in entry if k not in PER_CLUSTER_KEYS + ROUTING_KEYS]
        if unknown:
            problems.append(
                Problem(
                    CHECK_ID,
                    f"{where} has keys a cluster cannot set: "
                    f"{', '.join(map(repr, unknown))}.",
                    f"A cluster may set {', '.join(PER_CLUSTER_KEYS + ROUTING_KEYS)}.",
                )
            )
        clusters[name] = entry
    return clusters


def build(
    default: Config,
    raw: Mapping[str, Mapping[str, Any]],
    settings_by_key: Mapping[str, Setting],
    problems: list[Problem],
    check_aliases: Callable[[Config], tuple[Config, list[Problem]]],
) -> Config:
    """Return ``default`` holding the named clusters of ``raw`` and their routes."""
    clusters: dict[str, Config] = {}
    app_clusters: dict[str, str] = {}
    model_clusters: dict[str, str] = {}
    for name, entry in raw.items():
        # A named cluster's replicas are its own (none unless listed).
        values: dict[str, Any] = {"replicas": {}}
        for key in PER_CLUSTER_KEYS:
            if key in entry:
                setting = settings_by_key[key]
                # Messages then name the key where it is: CLUSTERS"]["x"]["KEY.
                here = replace(setting, key=f'CLUSTERS"]["{name}"]["{key}')
                values[setting.attribute] = setting.validate(here, entry[key], problems)
        cluster = replace(
            default,
            **values,
            name=name,
            is_default=False,
            clusters={},
            app_clusters={},
            model_clusters={},
            alias_clusters={},
            model_cache={},
        )
        cluster, found = check_aliases(cluster)
        problems.extend(found)
        clusters[name] = cluster
        _routes(name, "APPS", entry.get("APPS", ()), app_clusters, problems)
        _routes(name, "MODELS", entry.get("MODELS", ()), model_clusters, problems)
    alias_clusters = _aliases(default, clusters, problems)
    return replace(
        default,
        clusters=clusters,
        app_clusters=app_clusters,
        model_clusters=model_clusters,
        alias_clusters=alias_clusters,
        model_cache={},
    )


def _app_label(value: str) -> str | None:
    """The app label ``value`` if it is one (unknown: None); any while apps load."""
    if not apps.ready:
        return value
    return value if value in apps.app_configs else None


def _model_label(value: str) -> str | None:
    """``"app_label.modelname"`` (lower case) for a model label, else None."""
    app_label, dot, model_name = value.partition(".")
    if not dot or not app_label or not model_name:
        return None
    if apps.ready:
        try:
            apps.get_model(app_label, model_name)
        except LookupError:
            return None
    return f"{app_label}.{model_name.lower()}"


def _routes(
    name: str,
    kind: str,
    values: object,
    into: dict[str, str],
    problems: list[Problem],
) -> None:
    """Route the ``kind`` ("APPS" or "MODELS") entries of cluster ``name``."""
    label = _app_label if kind == "APPS" else _model_label
    where = f'RWSPLIT["CLUSTERS"]["{name}"]["{kind}"]'
    if isinstance(values, str) or not isinstance(values, Sequence):
        problems.append(
            Problem(
                "rwsplit.E025",
                f"{where} should be a list of "
                f"{'app labels' if kind == 'APPS' else 'app_label.ModelName'}.",
            )
        )
        return
    for value in values:
        key = label(value) if isinstance(value, str) else None
        if key is None:
            problems.append(
                Problem(
                    "rwsplit.E025",
                    f"{where} names {value!r}, which is not an installed "
                    f"{'app label' if kind == 'APPS' else 'model'}.",
                    "Models are named 'app_label.ModelName'."
                    if kind == "MODELS"
                    else None,
                )
            )
        elif key in into and into[key] != name:
            problems.append(
                Problem(
                    "rwsplit.E025",
                    f"{where} names {value!r}, already routed to cluster "
                    f"{into[key]!r}.",
                    "Route each app and model to one cluster.",
                )
            )
        else:
            into[key] = name


def _aliases(
    default: Config, clusters: Mapping[str, Config], problems: list[Problem]
) -> dict[str, str]:
    """Map every alias to its cluster; an alias in two clusters is an error."""
    owners: dict[str, str] = {}
    for cluster in (default, *clusters.values()):
        for alias in (cluster.primary, *cluster.replicas):
            if alias in owners and owners[alias] != cluster.name:
                problems.append(
                    Problem(
                        "rwsplit.E024",
                        f"Database {alias!r} is in cluster {owners[alias]!r} and "
                        f"in cluster {cluster.name!r}.",
                        "Each cluster has its own primary and replicas.",
                    )
                )
                continue
            owners[alias] = cluster.name
    return owners
