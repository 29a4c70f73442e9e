"""
One document of a health snapshot, rendered by the CLI, the views and contrib.

:func:`health_document` is the JSON shape (``replica_health --json``, the
health endpoint); :func:`summary` the one-line explanation; :func:`redact`
the one place that hides host names, addresses and ports.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any

from django.db import connections

from django_rwsplit.conf import Config
from django_rwsplit.health.tracker import HealthSnapshot, ReplicaStatus
from django_rwsplit.health.verdict import primary_problem

PENDING = "readmission pending"


def show_hosts(config: Config | None) -> bool:
    """Return ``RWSPLIT["HEALTH_ENDPOINT_SHOW_HOSTS"]``."""
    return getattr(config, "health_endpoint_show_hosts", False) is True


@cache
def _host_patterns(settings_items: tuple[tuple[str, str], ...]) -> re.Pattern[str]:
    hosts = sorted({h for kind, h in settings_items if kind == "host"}, key=len)
    ports = sorted({p for kind, p in settings_items if kind == "port"})
    parts = [re.escape(host) for host in reversed(hosts)]
    words = sorted({w for kind, w in settings_items if kind == "word"}, key=len)
    parts += [rf"(?<![\w.-]){re.escape(word)}(?![\w.-])" for word in reversed(words)]
    parts += [rf"(?<=port ){port}\b" for port in ports]
    parts += [rf"(?<=:){port}\b" for port in ports]
    parts.append(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")  # any IPv4 literal
    parts.append(IPV6)
    return re.compile("|".join(parts))


# An IPv6 literal: four groups or more, or any with "::" (not a clock time).
IPV6 = (
    r"(?<![\w:])(?:(?:[0-9A-Fa-f]{1,4}:){3,7}[0-9A-Fa-f]{1,4}"
    r"|[0-9A-Fa-f:]*::[0-9A-Fa-f:]*(?:%\w+)?)(?![\w:])"
)


def _endpoint_parts(aliases: Iterable[str]) -> tuple[tuple[str, str], ...]:
    found: set[tuple[str, str]] = set()
    for alias in aliases:
        settings_dict: Mapping[str, Any] = connections.settings.get(alias) or {}
        options: Mapping[str, Any] = settings_dict.get("OPTIONS") or {}
        for value in (
            settings_dict.get("HOST"),
            options.get("host"),
            options.get("hostaddr"),
        ):
            for host in str(value or "").split(","):
                if host.strip():
                    found.add(("host", host.strip()))
        for value in (settings_dict.get("PORT"), options.get("port")):
            for port in str(value or "").split(","):
                if port.strip().isdigit():
                    found.add(("port", port.strip()))
        # The database user and name: an error message may quote them.
        for value in (
            settings_dict.get("USER"),
            options.get("user"),
            settings_dict.get("NAME"),
            options.get("dbname"),
        ):
            if isinstance(value, str) and len(value.strip()) >= 2:
                found.add(("word", value.strip()))
    return tuple(sorted(found))


def redact(text: str | None, config: Config) -> str | None:
    """
    Hide what an error may reveal of ``config``'s databases.

    Host names, IPv4 and IPv6 addresses, ports, database users and names.
    """
    if not text:
        return text
    parts = _endpoint_parts([config.primary, *config.replicas])
    return _host_patterns(parts).sub("<hidden>", text)


def stale_problem(snapshot: HealthSnapshot) -> str | None:
    """Return why the snapshot's round is not trusted, or None when it is."""
    if not snapshot.stale:
        return None
    return (
        f"no health round for {snapshot.round_age_seconds or 0:.1f} s (bound "
        f"{snapshot.stale_after_seconds or 0:.1f} s): checks stalled, reads "
        "left the replicas"
    )


def replica_reason(status: ReplicaStatus) -> str:
    """Return why a replica is out of rotation ("" when it is in)."""
    if status.error:
        return status.error
    return "" if status.in_rotation else PENDING


def summary(snapshot: HealthSnapshot) -> str:
    """Return a one-line explanation of a warning or critical snapshot."""
    parts = []
    stalled = stale_problem(snapshot)
    if stalled is not None:
        parts.append(stalled)
    problem = primary_problem(snapshot.primary)
    if problem is not None:
        alias = snapshot.primary.alias if snapshot.primary else "primary"
        parts.append(f"primary {alias} {problem}")
    out = [r for r in snapshot.replicas if not r.in_rotation]
    if out:
        detail = ", ".join(f"{r.alias} ({replica_reason(r)})" for r in out)
        if len(out) == len(snapshot.replicas):
            parts.append(f"no replica in rotation: {detail}")
        else:
            plural = "replica" if len(out) == 1 else "replicas"
            parts.append(f"{len(out)} {plural} out of rotation: {detail}")
    return "; ".join(parts) or f"status: {snapshot.status}"


def health_document(snapshot: HealthSnapshot, config: Config) -> dict[str, Any]:
    """Return the ``replica_health --json`` document, hosts hidden unless allowed."""
    visible = show_hosts(config)
    document = snapshot.as_dict(show_endpoints=visible)
    if not visible:
        document["primary"]["error"] = redact(document["primary"]["error"], config)
        for replica in document["replicas"]:
            replica["error"] = redact(replica["error"], config)
    document["checked_at"] = snapshot.taken_at
    return document


def public(text: str, config: Config) -> str:
    """``text`` as shown to whoever may not see hosts (unless they may)."""
    return text if show_hosts(config) else str(redact(text, config))
