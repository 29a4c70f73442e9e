"""A throw-away PostgreSQL primary + streaming replicas on loopback, for tests.

Uses the server binaries installed on the machine (``initdb``, ``pg_ctl``,
``pg_basebackup``) and can inject faults: paused replay, apply delay, hard
stops and frozen (SIGSTOPped) servers. Only the standard library and
psycopg 3 are needed; Django is not imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg

from django_rwsplit.testing import processes
from django_rwsplit.testing.processes import ClusterError, find_bindir

__all__ = ["ClusterError", "LocalCluster", "Node", "find_bindir"]

DEFAULT_PRIMARY_PORT = 15432
SUPERUSER = "postgres"
STATE_FILE = "cluster.json"
LOG_FILE = "postgresql.log"
NODE_CONF = "rwsplit_node.conf"  # written last: marks a finished data directory
COMMON_CONF = "rwsplit.conf"
START_TIMEOUT = 60.0
# One stop-and-continue cycle of a slowed node, in seconds.
SLOW_PERIOD = 0.02
DUTY_CYCLE_COMMAND = "_duty-cycle"

Rows = list[tuple[Any, ...]]


@dataclass
class Node:
    """One PostgreSQL server of the cluster."""

    name: str
    port: int
    data_dir: Path

    @property
    def is_primary(self) -> bool:
        """Whether this is the primary."""
        return self.name == "primary"

    @property
    def log_file(self) -> Path:
        """The server log written by ``pg_ctl -l``."""
        return self.data_dir / LOG_FILE

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq connection string for this node."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={dbname}"


# --------------------------------------------------------------------------
# Binaries, OS user and /proc helpers
# --------------------------------------------------------------------------


def _load_state(base_dir: Path) -> dict[str, Any] | None:
    """The ``cluster.json`` written at init, or None if there is none."""
    path = base_dir / STATE_FILE
    if not path.is_file():
        return None
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ClusterError(f"unreadable cluster state {path}: {exc}") from exc
    return state


# --------------------------------------------------------------------------
# The cluster
# --------------------------------------------------------------------------


class LocalCluster:
    """A primary plus ``replicas`` streaming replicas under ``base_dir``.

    Ports are ``primary_port`` (default ``$RWSPLIT_CLUSTER_PORT`` or 15432)
    and ``primary_port + i`` for replica *i*. When ``base_dir`` already holds
    a cluster, its ``cluster.json`` decides ports, replicas and OS user.
    """

    def __init__(
        self,
        base_dir: Path | str | None = None,
        *,
        primary_port: int | None = None,
        replicas: int = 2,
        os_user: str | None = None,
    ) -> None:
        state = None if base_dir is None else _load_state(Path(base_dir))
        self.os_user = processes.resolve_os_user(
            os_user or (state or {}).get("os_user")
        )
        if state is not None:
            if primary_port is not None and primary_port != state["primary_port"]:
                raise ClusterError(
                    f"cluster in {base_dir} uses port {state['primary_port']}"
                    f", not {primary_port}; destroy it first to change ports"
                )
            primary_port = int(state["primary_port"])
            replicas = len(state["replicas"])
        elif primary_port is None:
            env_port = os.environ.get("RWSPLIT_CLUSTER_PORT") or DEFAULT_PRIMARY_PORT
            try:
                primary_port = int(env_port)
            except ValueError:
                raise ClusterError(f"bad RWSPLIT_CLUSTER_PORT {env_port!r}") from None
        if replicas < 0:
            raise ClusterError("replicas must be >= 0")
        if primary_port <= 5432 <= primary_port + replicas:
            raise ClusterError("refusing to use port 5432 (the system PostgreSQL)")
        if not 1024 <= primary_port <= 65535 - replicas:
            raise ClusterError(f"bad primary port {primary_port}")
        self.owns_dir = base_dir is None
        if base_dir is None:
            base_dir = tempfile.mkdtemp(prefix="rwsplit-cluster-")
        self.base_dir = Path(base_dir).absolute()
        self.run_dir = self.base_dir / "run"
        self._started_by_enter = False
        self._bindir: Path | None = None
        self.primary = Node("primary", primary_port, self.base_dir / "primary")
        self.replicas = [
            Node(f"replica{i}", primary_port + i, self.base_dir / f"replica{i}")
            for i in range(1, replicas + 1)
        ]

    # -- construction helpers ------------------------------------------------

    @classmethod
    def from_env(cls) -> LocalCluster | None:
        """Attach to the cluster in ``$RWSPLIT_CLUSTER_DIR`` (None if unset)."""
        base = os.environ.get("RWSPLIT_CLUSTER_DIR")
        if not base:
            return None
        if not (Path(base) / STATE_FILE).is_file():
            raise ClusterError(
                f"RWSPLIT_CLUSTER_DIR={base} holds no cluster ({STATE_FILE} "
                f"missing); run: python -m django_rwsplit.testing up --dir {base}"
            )
        return cls(base)

    def _write_state(self) -> None:
        state = {
            "primary_port": self.primary.port,
            "ports": {n.name: n.port for n in self.nodes},
            "replicas": [n.name for n in self.replicas],
            "os_user": self.os_user,
        }
        path = self.base_dir / STATE_FILE
        path.write_text(json.dumps(state, indent=2) + "\n")
        self._chown(path)

    # -- node lookup ---------------------------------------------------------

    @property
    def nodes(self) -> list[Node]:
        """Primary first, then the replicas."""
        return [self.primary, *self.replicas]

    def node(self, name_or_index: str | int | Node) -> Node:
        """A node by name ("primary", "replica1"), or replica by 1-based index."""
        if isinstance(name_or_index, Node):
            return name_or_index
        if isinstance(name_or_index, int):
            if name_or_index == 0:
                return self.primary
            if 1 <= name_or_index <= len(self.replicas):
                return self.replicas[name_or_index - 1]
        else:
            for n in self.nodes:
                if n.name == name_or_index:
                    return n
        names = ", ".join(n.name for n in self.nodes)
        raise ClusterError(f"no node {name_or_index!r} (have: {names})")

    def _replica(self, name: str | int | Node) -> Node:
        n = self.node(name)
        if n.is_primary:
            raise ClusterError(f"{n.name} is not a replica")
        return n

    # -- running commands ----------------------------------------------------

    @property
    def bindir(self) -> Path:
        """Directory of the PostgreSQL server binaries."""
        if self._bindir is None:
            self._bindir = find_bindir()
        return self._bindir

    def _chown(self, path: Path) -> None:
        processes.chown(path, self.os_user)

    def _run(self, tool: str, *args: str, timeout: float = 120.0) -> str:
        """Run a server binary (as the OS user when root); return its output."""
        return processes.run_tool(
            self.bindir / tool, args, self.os_user, self.base_dir, timeout
        )

    def _check_access(self) -> None:
        """Make sure the OS user can reach and write the base directory."""
        processes.check_writable(self.base_dir, self.os_user)

    # -- queries -------------------------------------------------------------

    def execute(
        self,
        node: str | int | Node,
        sql: str,
        dbname: str = "postgres",
        params: Sequence[Any] | None = None,
        *,
        timeout: float = 30.0,
    ) -> Rows:
        """Run ``sql`` in autocommit mode on ``node``; return its rows.

        Connecting gives up after 2 s; the query after ``timeout`` seconds
        (enforced client-side, by shutting the socket down). Frozen nodes
        are refused outright.
        """
        n = self.node(node)
        if self.is_frozen(n):
            raise ClusterError(f"{n.name} is frozen (SIGSTOP); thaw it first")
        try:
            conn = psycopg.connect(
                n.dsn(dbname),
                autocommit=True,
                connect_timeout=2,
                application_name="rwsplit-cluster",
            )
        except psycopg.Error as exc:
            raise ClusterError(f"cannot connect to {n.name}: {exc}") from exc
        sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
        fired = threading.Event()

        def kill_socket() -> None:
            fired.set()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(timeout, kill_socket)
        timer.daemon = True
        timer.start()
        try:
            cur = conn.execute(sql.encode(), params)
            return list(cur.fetchall()) if cur.description else []
        except psycopg.Error as exc:
            if fired.is_set():
                msg = f"query on {n.name} timed out after {timeout:g}s: {sql}"
                raise ClusterError(msg) from exc
            raise ClusterError(f"query on {n.name} failed: {exc}") from exc
        finally:
            timer.cancel()
            conn.close()
            sock.close()

    def _scalar(self, node: str | int | Node, sql: str, *params: Any) -> Any:
        rows = self.execute(node, sql, params=params or None)
        return rows[0][0] if rows else None

    # -- process state -------------------------------------------------------

    def postmaster_pid(self, node: str | int | Node) -> int | None:
        """PID of the node's live postmaster, or None if it is not running."""
        pid = processes.read_pid(self.node(node).data_dir / "postmaster.pid")
        return pid if pid is not None and processes.is_live_postgres(pid) else None

    def node_running(self, node: str | int | Node) -> bool:
        """Whether the node's postmaster process is alive (maybe frozen)."""
        return self.postmaster_pid(node) is not None

    def is_running(self) -> bool:
        """Whether every node of the cluster is running."""
        return all(self.node_running(n) for n in self.nodes)

    def is_frozen(self, node: str | int | Node) -> bool:
        """Whether the node's postmaster is stopped by SIGSTOP.

        The frozen state is read from /proc, so it is seen across processes
        (e.g. ``freeze`` and ``status`` run from separate CLI invocations).
        A slowed node (:meth:`slow`) is stopped often but not frozen.
        """
        pid = self.postmaster_pid(node)
        st = processes.proc_stat(pid) if pid else None
        stopped = st is not None and st[1] in processes.STOPPED
        return stopped and self._slow_state(self.node(node)) is None

    def _clean_stale(self, n: Node) -> None:
        """Remove lock files left by a dead (or zombie) postmaster."""
        lock = self.run_dir / f".s.PGSQL.{n.port}.lock"
        for path, extra in (
            (n.data_dir / "postmaster.pid", None),
            (lock, self.run_dir / f".s.PGSQL.{n.port}"),
        ):
            if not path.exists():
                continue
            pid = processes.read_pid(path)
            if pid is not None and processes.is_live_postgres(pid):
                continue
            path.unlink(missing_ok=True)
            if extra is not None:
                extra.unlink(missing_ok=True)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Initialise if needed, start every node, wait for streaming."""
        _ = self.bindir  # fail early, before creating anything
        self._init_if_needed()
        for n in self.nodes:
            self._start_node(n)
        if self.replicas:
            deadline = time.monotonic() + START_TIMEOUT
            for r in self.replicas:
                self.wait_streaming(r, timeout=max(1.0, deadline - time.monotonic()))

    def stop(self) -> None:
        """Stop every node (thawing frozen ones first), fast mode."""
        for n in [*self.replicas, self.primary]:
            self._stop_node(n, "fast")

    def destroy(self) -> None:
        """Stop the cluster and delete its base directory."""
        if self.base_dir.exists():
            self.stop()
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        self._started_by_enter = not self.is_running()
        try:
            self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Destroy a self-made temp cluster; else stop it if we started it."""
        if self.owns_dir:
            self.destroy()
        elif self._started_by_enter:
            self.stop()

    def _init_if_needed(self) -> None:
        fresh = not self.base_dir.exists() or not any(self.base_dir.iterdir())
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if fresh or self.owns_dir:
            self._chown(self.base_dir)
        self._check_access()
        self.run_dir.mkdir(exist_ok=True)
        self._chown(self.run_dir)
        if not (self.base_dir / STATE_FILE).exists():
            self._write_state()
        if not (self.primary.data_dir / NODE_CONF).exists():
            self._init_primary()
        missing = [r for r in self.replicas if not (r.data_dir / NODE_CONF).exists()]
        if missing:
            self._start_node(self.primary)
            with ThreadPoolExecutor(len(missing)) as pool:  # backups in parallel
                list(pool.map(self._clone_replica, missing))

    def _init_primary(self) -> None:
        p = self.primary
        if len(f"{self.run_dir}/.s.PGSQL.{p.port}.lock") > 107:
            raise ClusterError(f"{self.base_dir} is too long for a unix socket path")
        if p.data_dir.exists():
            shutil.rmtree(p.data_dir)
        opts = ["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--no-locale"]
        self._run("initdb", "-D", str(p.data_dir), *opts, "--no-sync")
        (p.data_dir / "pg_hba.conf").write_text(
            "local all all trust\n"
            "local replication all trust\n"
            "host all all 127.0.0.1/32 trust\n"
            "host replication all 127.0.0.1/32 trust\n"
        )
        (p.data_dir / COMMON_CONF).write_text(
            "# written by django_rwsplit.testing.cluster\n"
            "listen_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{self.run_dir}'\n"
            "max_connections = 200\n"
            "shared_buffers = 32MB\n"
            "wal_level = replica\n"
            "max_wal_senders = 10\n"
            "max_replication_slots = 10\n"
            "hot_standby = on\n"
            "hot_standby_feedback = on\n"
            "wal_receiver_status_interval = 1s\n"
            "wal_retrieve_retry_interval = 1s\n"
            "max_standby_streaming_delay = 5s\n"
            "checkpoint_timeout = 30s\n"
            "synchronous_commit = on\n"
            "fsync = off\n"
            "full_page_writes = on\n"
            # pg_rewind (testing.failover.rejoin) needs hint bits in the WAL.
            "wal_log_hints = on\n"
            "logging_collector = off\n"
            "log_line_prefix = '%m [%p] %q%a '\n"
        )
        with (p.data_dir / "postgresql.conf").open("a") as fh:
            fh.write(f"\ninclude '{COMMON_CONF}'\ninclude '{NODE_CONF}'\n")
        for f in ("pg_hba.conf", COMMON_CONF):
            self._chown(p.data_dir / f)
        self._write_node_conf(p)

    def _write_node_conf(self, n: Node) -> None:
        lines = [f"port = {n.port}", f"cluster_name = 'rwsplit-{n.name}'"]
        if not n.is_primary:
            conninfo = (
                f"host=127.0.0.1 port={self.primary.port} user={SUPERUSER} "
                f"application_name={n.name} connect_timeout=2"
            )
            lines += [
                f"primary_conninfo = '{conninfo}'",
                f"primary_slot_name = '{n.name}'",
            ]
        path = n.data_dir / NODE_CONF
        path.write_text("\n".join(lines) + "\n")
        self._chown(path)

    def _clone_replica(self, r: Node) -> None:
        """Base-backup the primary into ``r`` using a pre-reserved slot.

        Reserving the slot before the backup starts keeps its WAL even when
        other backups (run in parallel) checkpoint meanwhile.
        """
        if r.data_dir.exists():
            shutil.rmtree(r.data_dir)
        self.execute(
            self.primary,
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
            " WHERE slot_name = %s",
            params=[r.name],
        )
        self.execute(
            self.primary,
            "SELECT pg_create_physical_replication_slot(%s, true)",
            params=[r.name],
        )
        source = ["-h", "127.0.0.1", "-p", str(self.primary.port), "-U", SUPERUSER]
        opts = ["-X", "stream", "-c", "fast", "-S", r.name, "--no-sync"]
        self._run("pg_basebackup", *source, "-D", str(r.data_dir), *opts)
        (r.data_dir / "standby.signal").touch()
        self._chown(r.data_dir / "standby.signal")
        r.log_file.write_text("")  # drop the primary's log copied by the backup
        self._write_node_conf(r)

    def _start_node(self, n: Node) -> None:
        if self.node_running(n):
            if self.is_frozen(n):
                self.thaw(n)
            return
        if not (n.data_dir / NODE_CONF).exists():
            raise ClusterError(f"{n.name} is not initialised; run start() first")
        self._clean_stale(n)
        try:
            wait = ["-w", "-t", str(int(START_TIMEOUT))]
            args = ["start", "-D", str(n.data_dir), "-l", str(n.log_file), *wait]
            self._run("pg_ctl", *args, timeout=START_TIMEOUT + 10)
        except ClusterError as exc:
            raise ClusterError(
                f"{n.name} (port {n.port}) failed to start: {exc}\n"
                f"--- tail of {n.log_file} ---\n{processes.tail(n.log_file)}"
            ) from None

    def _stop_node(self, n: Node, mode: str) -> None:
        if mode not in ("smart", "fast", "immediate"):
            raise ClusterError(f"bad stop mode {mode!r}")
        if not self.node_running(n):
            return
        self.unslow(n)
        if self.is_frozen(n):
            self.thaw(n)
        try:
            self._run(
                "pg_ctl", "stop", "-D", str(n.data_dir), "-m", mode, "-w", "-t", "60"
            )
        except ClusterError:
            if self.node_running(n):
                raise

    # -- per-node control ----------------------------------------------------

    def stop_replica(self, replica: str | int | Node, mode: str = "immediate") -> None:
        """Stop a replica (hard stop by default); checkpoint first for quick restart."""
        r = self._replica(replica)
        if self.node_running(r) and not self.is_frozen(r):
            self._checkpoint_for(r)
        self._stop_node(r, mode)

    def _checkpoint_for(self, r: Node) -> None:
        """Best effort: checkpoint primary, let ``r`` replay it, restartpoint."""
        try:
            if self.node_running(self.primary) and not self.is_frozen(self.primary):
                self.execute(self.primary, "CHECKPOINT", timeout=20)
                self.wait_caught_up(r, timeout=5)
            self.execute(r, "CHECKPOINT", timeout=20)
        except ClusterError:
            pass

    def start_replica(self, replica: str | int | Node) -> None:
        """Start a replica (cleaning stale lock files) and wait for streaming."""
        r = self._replica(replica)
        self._start_node(r)
        if self.node_running(self.primary) and not self.is_frozen(self.primary):
            self.wait_streaming(r, timeout=START_TIMEOUT)

    def stop_primary(self, mode: str = "fast") -> None:
        """Stop the primary."""
        self._stop_node(self.primary, mode)

    def start_primary(self) -> None:
        """Start the primary and wait for running replicas to stream again."""
        self._start_node(self.primary)
        for r in self.replicas:
            if self.node_running(r) and not self.is_frozen(r):
                self.wait_streaming(r, timeout=START_TIMEOUT)

    # -- fault injection -----------------------------------------------------

    def freeze(self, node: str | int | Node) -> None:
        """SIGSTOP the node's postmaster and all its children (ends a slow-down)."""
        n = self.node(node)
        self.unslow(n)
        pid = self.postmaster_pid(n)
        if pid is None:
            raise ClusterError(f"{n.name} is not running")
        processes.stop_tree(pid, n.name)

    def thaw(self, node: str | int | Node) -> None:
        """SIGCONT the node's children and postmaster; wait until all run."""
        n = self.node(node)
        pid = self.postmaster_pid(n)
        if pid is None:
            return

        processes.continue_tree(pid, n.name)

    def slow(self, node: str | int | Node, factor: float) -> None:
        """
        Make ``node`` ``factor`` times slower until :meth:`unslow`.

        A background process stops and continues the node's processes so
        that they run ``1/factor`` of every :data:`SLOW_PERIOD` seconds: the
        node stays healthy and caught up, but each query waits for a running
        slice, as on a CPU-starved VM. Survives this process (CLI use).
        """
        n = self.node(node)
        if not 1 < factor <= 100:
            raise ClusterError(f"slow factor must be above 1 and at most 100: {factor}")
        self.unslow(n)
        pid = self.postmaster_pid(n)
        if pid is None:
            raise ClusterError(f"{n.name} is not running")
        if self.is_frozen(n):
            raise ClusterError(f"{n.name} is frozen; thaw it first")
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "django_rwsplit.testing",
                DUTY_CYCLE_COMMAND,
                str(pid),
                str(factor),
                str(SLOW_PERIOD),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        self._slow_file(n).write_text(
            json.dumps({"pid": daemon.pid, "factor": factor, "target": pid})
        )

    def slowed(self, node: str | int | Node) -> float | None:
        """Return the factor ``node`` is slowed by (None when it is not)."""
        state = self._slow_state(self.node(node))
        return None if state is None else float(state["factor"])

    def unslow(self, node: str | int | Node) -> None:
        """End :meth:`slow`: stop the background process; the node runs freely."""
        n = self.node(node)
        path = self._slow_file(n)
        state = self._slow_state(n)
        if state is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(state["pid"]), signal.SIGTERM)
            processes.poll(
                lambda: (
                    not processes.is_running_command(
                        int(state["pid"]), DUTY_CYCLE_COMMAND
                    )
                ),
                10,
                f"waiting for {n.name}'s slow-down to end",
            )
        path.unlink(missing_ok=True)
        pid = self.postmaster_pid(n)
        if pid is not None and state is not None:
            processes.continue_tree(pid, n.name)

    def _slow_file(self, n: Node) -> Path:
        return self.base_dir / f"slow-{n.name}.json"

    def _slow_state(self, n: Node) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads(self._slow_file(n).read_text())
        except (OSError, ValueError):
            return None
        alive = processes.is_running_command(int(state["pid"]), DUTY_CYCLE_COMMAND)
        return state if alive else None

    def pause_replay(self, replica: str | int | Node) -> None:
        """Pause WAL replay on a replica; wait until it is really paused."""
        r = self._replica(replica)
        self.execute(r, "SELECT pg_wal_replay_pause()")
        processes.poll(
            lambda: (
                self._scalar(r, "SELECT pg_get_wal_replay_pause_state()") == "paused"
            ),
            15,
            f"waiting for replay on {r.name} to pause",
        )

    def resume_replay(self, replica: str | int | Node) -> None:
        """Resume WAL replay on a replica."""
        r = self._replica(replica)
        self.execute(r, "SELECT pg_wal_replay_resume()")
        processes.poll(
            lambda: (
                self._scalar(r, "SELECT pg_get_wal_replay_pause_state()")
                == "not paused"
            ),
            15,
            f"waiting for replay on {r.name} to resume",
        )

    def set_apply_delay(self, replica: str | int | Node, ms: int) -> None:
        """Set ``recovery_min_apply_delay`` on a replica (0 clears it)."""
        r = self._replica(replica)
        if ms < 0:
            raise ClusterError("apply delay must be >= 0 ms")
        self.execute(r, f"ALTER SYSTEM SET recovery_min_apply_delay = '{int(ms)}ms'")
        self.execute(r, "SELECT pg_reload_conf()")
        sql = "SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'"
        processes.poll(
            lambda: int(self._scalar(r, sql)) == ms,
            15,
            f"waiting for {r.name} to apply recovery_min_apply_delay={ms}ms",
        )

    # -- waiting -------------------------------------------------------------

    def _is_streaming(self, r: Node) -> bool:
        sender = self._scalar(
            self.primary,
            "SELECT count(*) FROM pg_stat_replication"
            " WHERE application_name = %s AND state = 'streaming'",
            r.name,
        )
        if not sender:
            return False
        status = self._scalar(r, "SELECT status FROM pg_stat_wal_receiver")
        return bool(status == "streaming")

    def wait_streaming(self, replica: str | int | Node, timeout: float = 30.0) -> None:
        """Wait until the primary streams WAL to ``replica``."""
        r = self._replica(replica)
        processes.poll(
            lambda: self._is_streaming(r),
            timeout,
            f"waiting for {r.name} to stream from the primary",
            f"\n--- tail of {r.log_file} ---\n{processes.tail(r.log_file)}",
        )

    def wait_caught_up(
        self, replica: str | int | Node | None = None, timeout: float = 30.0
    ) -> None:
        """Wait until replay on ``replica`` (default: all running, unfrozen
        replicas) reaches the primary's current WAL position."""
        if replica is None:
            targets = [
                r
                for r in self.replicas
                if self.node_running(r) and not self.is_frozen(r)
            ]
        else:
            targets = [self._replica(replica)]
        lsn = self._scalar(self.primary, "SELECT pg_current_wal_lsn()::text")
        deadline = time.monotonic() + timeout
        sql = "SELECT coalesce(pg_last_wal_replay_lsn() >= %s::pg_lsn, false)"
        for r in targets:

            def replayed(r: Node = r) -> bool:
                return bool(self._scalar(r, sql, lsn))

            remaining = max(0.0, deadline - time.monotonic())
            processes.poll(
                replayed, remaining, f"waiting for {r.name} to replay up to {lsn}"
            )

    # -- Django glue ---------------------------------------------------------

    def create_database(self, name: str) -> None:
        """Create database ``name`` on the primary (if absent); wait for replicas."""
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ClusterError(f"unsupported database name {name!r}")
        exists = self.execute(
            self.primary, "SELECT 1 FROM pg_database WHERE datname = %s", params=[name]
        )
        if not exists:
            self.execute(self.primary, f'CREATE DATABASE "{name}"')
        self.wait_caught_up()

    def django_databases(
        self,
        dbname: str,
        *,
        test_mirror: bool = True,
        options: dict[str, Any] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """A Django ``DATABASES`` dict: "default" is the primary, then replicas."""

        def entry(n: Node) -> dict[str, Any]:
            return {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": dbname,
                "USER": SUPERUSER,
                "PASSWORD": "",
                "HOST": "127.0.0.1",
                "PORT": str(n.port),
                "OPTIONS": dict(options or {}),
            }

        databases = {"default": entry(self.primary)}
        for r in self.replicas:
            databases[r.name] = entry(r)
            if test_mirror:
                databases[r.name]["TEST"] = {"MIRROR": "default"}
        return databases

    def env(self) -> dict[str, str]:
        """Environment variables that let ``from_env`` find this cluster."""
        return {
            "RWSPLIT_CLUSTER_DIR": str(self.base_dir),
            "RWSPLIT_CLUSTER_PORT": str(self.primary.port),
        }


@contextlib.contextmanager
def running_cluster(port: int, replicas: int = 2) -> Iterator[LocalCluster]:
    """
    Yield a running cluster, and clean up what this call started.

    The cluster named by ``RWSPLIT_CLUSTER_DIR`` is reused (and left running);
    otherwise a throwaway one starts on ``port`` and is destroyed afterwards.
    """
    existing = LocalCluster.from_env()
    if existing is not None:
        existing.start()
        yield existing
        return
    local = LocalCluster(primary_port=port, replicas=replicas)
    try:
        local.start()
        yield local
    finally:
        local.destroy()
