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

import json
import os
import socket
import sys
from pathlib import Path

DEFAULT_PORT = 15432
DEFAULT_REPLICAS = 2


class DemoError(Exception):
    """A problem to report in one clear sentence (exit status 2)."""


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _served_by_our_node(data_dir: Path, port: int) -> bool:
    """Whether the postmaster of ``data_dir`` is alive and listens on ``port``."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid, pid_port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return False
    return pid_port == port and Path(f"/proc/{pid}").exists()


def choose_port(directory: Path) -> int:
    """The demo cluster's primary port; raise DemoError if a port is taken."""
    env_port = os.environ.get("RWSPLIT_CLUSTER_PORT") or None
    state_file = directory / "cluster.json"
    replicas = DEFAULT_REPLICAS
    if state_file.is_file():
        state = json.loads(state_file.read_text())
        port = int(state["primary_port"])
        replicas = len(state["replicas"])
        if env_port is not None and int(env_port) != port:
            raise DemoError(
                f"the demo cluster in {directory} uses port {port}, but "
                f"RWSPLIT_CLUSTER_PORT={env_port}. Run `make demo-down` first to "
                "move it, or unset RWSPLIT_CLUSTER_PORT."
            )
    else:
        try:
            port = int(env_port or DEFAULT_PORT)
        except ValueError:
            raise DemoError(f"bad RWSPLIT_CLUSTER_PORT {env_port!r}") from None
    nodes = [("primary", port)] + [
        (f"replica{i}", port + i) for i in range(1, replicas + 1)
    ]
    for name, node_port in nodes:
        if _listening(node_port) and not _served_by_our_node(
            directory / name, node_port
        ):
            raise DemoError(
                f"port {node_port} (for the demo {name}) is already in use by "
                f"another program, not by the demo cluster in {directory}. Stop "
                "that program, or run the demo on other ports: "
                "`RWSPLIT_CLUSTER_PORT=19432 make demo` (primary on 19432, "
                f"replicas on the next {replicas} ports)."
            )
    return port


def running_port(directory: Path) -> int | None:
    """The primary port of the cluster in ``directory`` if all its nodes run."""
    try:
        state = json.loads((directory / "cluster.json").read_text())
        port = int(state["primary_port"])
        names = [
            "primary",
            *(f"replica{i}" for i in range(1, len(state["replicas"]) + 1)),
        ]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    for offset, name in enumerate(names):
        if not _served_by_our_node(directory / name, port + offset):
            return None
    return port


def create_database(directory: Path, name: str) -> None:
    """Create ``name`` on the demo primary if missing and wait for the replicas."""
    from django_rwsplit.testing.cluster import ClusterError, LocalCluster

    try:
        LocalCluster(directory).create_database(name)
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
