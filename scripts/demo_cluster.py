"""Helpers for scripts/demo.sh around the demo cluster in ./.rwsplit-cluster.

Usage:

- ``python scripts/demo_cluster.py port DIR``: print the primary port to use,
  or exit 2 with a clear message if one of the cluster's ports is taken by
  something other than the cluster in DIR.
- ``python scripts/demo_cluster.py createdb DIR NAME``: create database NAME
  on the primary if missing and wait until the replicas have it.
- ``python scripts/demo_cluster.py running DIR``: print the primary port if
  the cluster in DIR is up (``make test`` then reuses it), else nothing.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django_rwsplit.testing.cluster import LocalCluster


class DemoError(Exception):
    """A problem to report in one clear sentence (exit status 2)."""


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _cluster(directory: Path) -> LocalCluster:
    """The cluster in ``directory`` (its cluster.json, else the default ports)."""
    from django_rwsplit.testing.cluster import ClusterError, LocalCluster

    try:
        return LocalCluster(directory)
    except ClusterError as exc:
        raise DemoError(str(exc)) from None


def choose_port(directory: Path) -> int:
    """The demo cluster's primary port; raise DemoError if a port is taken."""
    cluster = _cluster(directory)
    port = cluster.primary.port
    env_port = os.environ.get("RWSPLIT_CLUSTER_PORT") or None
    if (directory / "cluster.json").is_file() and env_port not in (None, str(port)):
        raise DemoError(
            f"the demo cluster in {directory} uses port {port}, but "
            f"RWSPLIT_CLUSTER_PORT={env_port}. Run `make demo-down` first to "
            "move it, or unset RWSPLIT_CLUSTER_PORT."
        )
    for node in cluster.nodes:
        if _listening(node.port) and not cluster.node_running(node):
            raise DemoError(
                f"port {node.port} (for the demo {node.name}) is already in use by "
                f"another program, not by the demo cluster in {directory}. Stop "
                "that program, or run the demo on other ports: "
                "`RWSPLIT_CLUSTER_PORT=19432 make demo` (primary on 19432, "
                f"replicas on the next {len(cluster.replicas)} ports)."
            )
    return port


def running_port(directory: Path) -> int | None:
    """The primary port of the cluster in ``directory`` if all its nodes run."""
    if not (directory / "cluster.json").is_file():
        return None
    try:
        cluster = _cluster(directory)
    except DemoError:
        return None
    return cluster.primary.port if cluster.is_running() else None


def create_database(directory: Path, name: str) -> None:
    """Create ``name`` on the demo primary if missing and wait for the replicas."""
    from django_rwsplit.testing.cluster import ClusterError

    try:
        _cluster(directory).create_database(name)
    except ClusterError as exc:
        raise DemoError(str(exc)) from None


def main(argv: list[str]) -> int:
    try:
        if len(argv) == 2 and argv[0] == "port":
            print(choose_port(Path(argv[1]).absolute()))
        elif len(argv) == 2 and argv[0] == "running":
            port = running_port(Path(argv[1]).absolute())
            if port is not None:
                print(port)
        elif len(argv) == 3 and argv[0] == "createdb":
            create_database(Path(argv[1]).absolute(), argv[2])
        else:
            print(__doc__, file=sys.stderr)
            return 64
    except DemoError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
