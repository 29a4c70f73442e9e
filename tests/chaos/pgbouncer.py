"""
PgBouncer in transaction pooling mode in front of each replica, for a chaos shape.

One ``pgbouncer`` process per replica, on a free loopback port below 32768,
run as the cluster's OS user (PgBouncer refuses root, like PostgreSQL), with
its files in a directory that user owns. The example project's replica URLs
and its health checks then go through PgBouncer.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from django_rwsplit.testing.cluster import LocalCluster
from tests.ports import free_port

PORTS = range(18300, 18400)
START_TIMEOUT = 15.0


class PgBouncerMissing(RuntimeError):
    """The pgbouncer binary is not installed."""


def binary() -> str:
    """Return the pgbouncer executable, or raise :class:`PgBouncerMissing`."""
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None
    )
    if not found:
        raise PgBouncerMissing(
            "pgbouncer is not installed (Debian: apt-get install pgbouncer; "
            "scripts/bootstrap.sh installs it when run as root)"
        )
    return found


@dataclass
class Bouncer:
    """One PgBouncer in front of ``replica``."""

    replica: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """SIGINT (immediate shutdown) to its process group, then SIGKILL."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def config(listen_port: int, server_port: int, workdir: Path) -> str:
    """The ini file of one PgBouncer (transaction pooling, trust auth)."""
    return "\n".join(
        [
            "[databases]",
            f"* = host=127.0.0.1 port={server_port}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {listen_port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {workdir / 'userlist.txt'}",
            "pool_mode = transaction",
            "max_client_conn = 500",
            "default_pool_size = 20",
            # Fail fast while the replica is down, reconnect fast once back.
            "server_connect_timeout = 2",
            "server_login_retry = 1",
            "query_wait_timeout = 2",
            "ignore_startup_parameters = extra_float_digits,options",
            f"logfile = {workdir / 'pgbouncer.log'}",
            f"pidfile = {workdir / 'pgbouncer.pid'}",
            "",
        ]
    )


def _answering(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_bouncer(
    cluster: LocalCluster, name: str, server_port: int, taken: list[int]
) -> Bouncer:
    """Start a PgBouncer named ``name`` in front of ``server_port``."""
    executable = binary()
    workdir = cluster.base_dir / f"pgbouncer-{name}"
    workdir.mkdir(exist_ok=True)
    port = free_port(PORTS, taken)
    (workdir / "pgbouncer.ini").write_text(config(port, server_port, workdir))
    (workdir / "userlist.txt").write_text('"postgres" ""\n')
    command = [executable, str(workdir / "pgbouncer.ini")]
    if cluster.os_user:
        user = pwd.getpwnam(cluster.os_user)
        for path in (workdir, *workdir.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
        command = ["runuser", "-u", cluster.os_user, "--", *command]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    bouncer = Bouncer(name, port, process, workdir / "pgbouncer.log")
    deadline = time.monotonic() + START_TIMEOUT
    while not _answering(port):
        if process.poll() is not None or time.monotonic() > deadline:
            log = bouncer.log.read_text() if bouncer.log.exists() else ""
            bouncer.stop()
            raise RuntimeError(f"pgbouncer for {name} did not start:\n{log}")
        time.sleep(0.05)
    return bouncer


def repoint(workdir: Path, server_port: int) -> None:
    """
    Point the PgBouncer of ``workdir`` at ``server_port`` (as an operator or
    a failover hook does): rewrite its ini file, then SIGHUP (a reload).
    """
    ini = workdir / "pgbouncer.ini"
    text = ini.read_text()
    lines = [
        f"* = host=127.0.0.1 port={server_port}" if line.startswith("* =") else line
        for line in text.splitlines()
    ]
    ini.write_text("\n".join(lines) + "\n")
    pid = int((workdir / "pgbouncer.pid").read_text().split()[0])
    os.kill(pid, signal.SIGHUP)


@contextmanager
def bouncers(cluster: LocalCluster) -> Iterator[dict[str, Bouncer]]:
    """Run one PgBouncer per replica of ``cluster``; map replica name to it."""
    running: dict[str, Bouncer] = {}
    try:
        binary()
        for replica in cluster.replicas:
            taken = [b.port for b in running.values()]
            running[replica.name] = start_bouncer(
                cluster, replica.name, replica.port, taken
            )
        yield running
    finally:
        for bouncer in running.values():
            bouncer.stop()
