"""
The example project under real servers: gunicorn (WSGI) and uvicorn (ASGI).

Both run on loopback ports below 32768, against a dedicated database of a
:class:`~django_rwsplit.testing.cluster.LocalCluster`, configured through the
example's environment variables (see ``example_project/settings.py``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django_rwsplit.testing.cluster import LocalCluster
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
PORTS = range(18200, 18300)
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0


@dataclass(frozen=True)
class ChaosSettings:
    """The example's RWSPLIT knobs for a chaos run (the issue's values)."""

    database: str = "rwsplit_chaos"
    consistency: str = "lsn"
    check_interval: float = 0.5
    check_timeout: float = 0.5
    max_lag_seconds: float = 1.0
    readmit_after: int = 2
    sticky_seconds: float = 5.0
    connect_timeout: float = 2.0  # the example's OPTIONS["connect_timeout"]
    conn_max_age: int = 0
    health_checks: bool = False
    pool: bool = False
    atomic_requests: bool = False
    # PgBouncer (transaction pooling) in front of each replica.
    pgbouncer: bool = False
    balancer: str = "adaptive"
    visible_wait: float = 5.0
    # RWSPLIT["HEALTH_ENDPOINT_TOKEN"] ("": the endpoint answers staff only).
    health_token: str = ""
    secret_key: str = "rwsplit-chaos-not-secret"
    # The primary alias lists every node (libpq multi-host), as Patroni
    # users write it: a failover drill.
    every_node_as_primary: bool = False

    @property
    def shape(self) -> str:
        """How the example is deployed, in the README's words."""
        parts = [f"CONN_MAX_AGE={self.conn_max_age}"]
        if self.health_checks:
            parts.append("CONN_HEALTH_CHECKS=True")
        if self.pool:
            parts = ['OPTIONS["pool"]']
        if self.atomic_requests:
            parts.append("ATOMIC_REQUESTS=True")
        if self.pgbouncer:
            parts.append("PgBouncer (transaction pooling) before each replica")
        return ", ".join(parts)

    @property
    def ejection_bound(self) -> float:
        """Seconds after a fault by which every process has ejected the replica."""
        return 3 * self.check_interval + self.check_timeout

    @property
    def readmit_window(self) -> float:
        """Seconds after a heal by which a process readmits the replica (no slack)."""
        return self.readmit_after * self.check_interval + self.check_timeout


# The deployment shapes every chaos run is repeated in (``--shape`` names).
SHAPES: dict[str, ChaosSettings] = {
    "baseline": ChaosSettings(),
    "persistent": ChaosSettings(conn_max_age=60, health_checks=True),
    "pool": ChaosSettings(pool=True),
    "atomic": ChaosSettings(atomic_requests=True),
    "pgbouncer": ChaosSettings(pgbouncer=True),
}


def example_env(
    cluster: LocalCluster,
    settings: ChaosSettings,
    replica_ports: Sequence[int] | None = None,
) -> dict[str, str]:
    """
    The environment that points the example project at ``cluster``.

    ``replica_ports`` replace the replicas' own ports (PgBouncer in front).
    """
    if replica_ports is None:
        replica_ports = [r.port for r in cluster.replicas]

    def url(port: int) -> str:
        return f"postgres://postgres@127.0.0.1:{port}/{settings.database}"

    primary_url = url(cluster.primary.port)
    if settings.every_node_as_primary:
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in cluster.nodes)
        primary_url = (
            f"postgres://postgres@{hosts}/{settings.database}"
            "?target_session_attrs=read-write"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(
        {
            # pytest-django exported the suite's settings module; replace it.
            "DJANGO_SETTINGS_MODULE": "example_project.settings",
            "DATABASE_URL": primary_url,
            "REPLICA_URLS": ",".join(url(port) for port in replica_ports),
            "DEBUG": "false",
            "SECRET_KEY": settings.secret_key,
            "CONN_MAX_AGE": str(settings.conn_max_age),
            "CONN_HEALTH_CHECKS": str(settings.health_checks).lower(),
            "DB_POOL": str(settings.pool).lower(),
            "ATOMIC_REQUESTS": str(settings.atomic_requests).lower(),
            "RWSPLIT_CONSISTENCY": settings.consistency,
            "RWSPLIT_CHECK_INTERVAL": str(settings.check_interval),
            "RWSPLIT_CHECK_TIMEOUT": str(settings.check_timeout),
            "RWSPLIT_MAX_LAG_SECONDS": str(settings.max_lag_seconds),
            "RWSPLIT_READMIT_AFTER": str(settings.readmit_after),
            "RWSPLIT_STICKY_SECONDS": str(settings.sticky_seconds),
            "RWSPLIT_BALANCER": settings.balancer,
            "RWSPLIT_VISIBLE_WAIT": str(settings.visible_wait),
            "RWSPLIT_HEALTH_ENDPOINT_TOKEN": settings.health_token,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p
            ),
        }
    )
    return env


def reported_ports(
    cluster: LocalCluster, replica_ports: Sequence[int] | None = None
) -> dict[str, int]:
    """The port the example reports for each node (PgBouncer's, when in front)."""
    ports = {node.name: node.port for node in cluster.nodes}
    if replica_ports is not None:
        names = [r.name for r in cluster.replicas]
        ports.update(zip(names, replica_ports, strict=True))
    return ports


def prepare_database(cluster: LocalCluster, settings: ChaosSettings) -> None:
    """Create the run's database afresh, migrate it, wait for the replicas."""
    name = settings.database
    cluster.execute(cluster.primary, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    cluster.create_database(name)
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=example_env(cluster, settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{done.stdout}\n{done.stderr}")
    cluster.wait_caught_up(timeout=60)


@dataclass
class Server:
    """One running web server (its own process group)."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    workers: int = field(default=1, kw_only=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no log at {self.log})"
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL the group if it does not exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                # Its own process group (start_new_session): it and its workers.
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=STOP_TIMEOUT)


def command(name: str, port: int, workers: int, threads: int) -> list[str]:
    """The command line of server ``name`` ("wsgi" or "asgi")."""
    if name == "wsgi":
        return [
            *(sys.executable, "-m", "gunicorn", "example_project.wsgi:application"),
            *("--bind", f"127.0.0.1:{port}", "--workers", str(workers)),
            *("--threads", str(threads), "--worker-class", "gthread"),
            *("--timeout", "60", "--graceful-timeout", "5", "--log-level", "warning"),
        ]
    return [
        *(sys.executable, "-m", "uvicorn", "example_project.asgi:application"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
        *("--lifespan", "off", "--no-access-log", "--log-level", "warning"),
        *("--timeout-graceful-shutdown", "5"),
    ]


def start_server(
    name: str,
    env: dict[str, str],
    log_dir: Path,
    *,
    workers: int = 2,
    threads: int = 8,
    taken: Sequence[int] = (),
) -> Server:
    """Start server ``name`` on a free port and wait until it answers."""
    last = ""
    for _ in range(3):  # another process may grab the port in between
        port = free_port(PORTS, taken)
        log = log_dir / f"{name}-{port}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                command(name, port, workers, threads),
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = Server(name, port, process, log, workers=workers)
        try:
            wait_answering(server)
            return server
        except RuntimeError as error:
            server.stop()
            last = str(error)
    raise RuntimeError(last)


def parent_pid(pid: int) -> int | None:
    """The parent of process ``pid`` (None if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def wait_answering(server: Server, timeout: float = START_TIMEOUT) -> None:
    """
    Poll ``/api/health/`` until one of the server's workers answers.

    Fails early if the server exits, or if another process answers on its
    port (another test run took the port first).
    """
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} server exited ({server.process.returncode}):\n"
                f"{server.log_tail()}"
            )
        status, body = get_json(server.url + "/api/health/", timeout=2)
        if status == 200:
            pid = body.get("pid")
            if isinstance(pid, int) and server.process.pid in (pid, parent_pid(pid)):
                return
            raise RuntimeError(f"another process answers on port {server.port}")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{server.name} server did not answer in {timeout:g} s:\n"
                f"{server.log_tail()}"
            )
        time.sleep(0.1)


@contextmanager
def running_servers(
    cluster: LocalCluster,
    settings: ChaosSettings,
    log_dir: Path,
    *,
    workers: int = 2,
    threads: int = 8,
    replica_ports: Sequence[int] | None = None,
) -> Iterator[dict[str, Server]]:
    """Run the example under gunicorn ("wsgi") and uvicorn ("asgi")."""
    env = example_env(cluster, settings, replica_ports)
    log_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        servers: dict[str, Server] = {}
        for name in ("wsgi", "asgi"):
            server = start_server(
                name,
                env,
                log_dir,
                workers=workers,
                threads=threads,
                taken=[s.port for s in servers.values()],
            )
            stack.callback(server.stop)
            servers[name] = server
        yield servers


def get_json(url: str, timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    """GET ``url``; return the status (0: no answer) and the JSON body ({} if none)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, payload = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, payload = error.code, error.read()
    except OSError:
        return 0, {}
    try:
        body = json.loads(payload or b"{}")
    except ValueError:
        body = {}
    return status, body if isinstance(body, dict) else {}


def warm_up(
    servers: dict[str, Server],
    replica_ports: Sequence[int],
    timeout: float = 30.0,
    *,
    streak: int = 5,
    parallel: int = 8,
) -> dict[str, set[int]]:
    """
    Read until each worker of each server answered from replicas ``streak`` times.

    Each process starts its health monitor on its first read, and readmits a
    replica only after its own passing checks; this makes sure every worker
    has replicas in rotation before a test starts. Reads go ``parallel`` at a
    time: one at a time, the kernel hands them all to the same idle worker.
    Returns the worker pids seen per server.
    """
    pids: dict[str, set[int]] = {}
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for server in servers.values():
            deadline = time.monotonic() + timeout
            streaks: dict[int, int] = {}
            last: tuple[int, dict[str, Any]] = (0, {})
            while sum(n >= streak for n in streaks.values()) < server.workers:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{server.name}: reads never settled on replicas in every "
                        f"worker (streaks per pid: {streaks}; last: {last}):\n"
                        f"{server.log_tail()}"
                    )
                settled = True
                for status, body in pool.map(
                    get_json, [server.url + "/api/pin/"] * parallel
                ):
                    last = (status, body)
                    pid = body.get("pid", 0)
                    on_replica = status == 200 and body.get("port") in replica_ports
                    streaks[pid] = streaks.get(pid, 0) + 1 if on_replica else 0
                    settled = settled and on_replica
                if not settled:
                    time.sleep(0.1)
            pids[server.name] = set(streaks) - {0}
    return pids
