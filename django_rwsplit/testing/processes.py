"""
Operating-system plumbing for the local cluster: binaries, users, processes.

Nothing here knows about replication: it finds the server binaries, picks the
OS user to run them as, reads ``/proc``, and stops or continues a process
tree. :mod:`django_rwsplit.testing.cluster` builds the cluster on top of it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REQUIRED_BINARIES = ("initdb", "pg_ctl", "pg_basebackup", "postgres")
STOPPED = ("T", "t")


class ClusterError(RuntimeError):
    """Raised when the local cluster cannot be set up or driven."""


def version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bindir() -> Path:
    """Locate the PostgreSQL server binaries or raise ClusterError."""
    candidates: list[Path] = []
    if env_dir := os.environ.get("RWSPLIT_PG_BINDIR"):
        candidates.append(Path(env_dir))
    if pg_config := shutil.which("pg_config"):
        try:
            out = subprocess.run(
                [pg_config, "--bindir"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            candidates.append(Path(out))
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=version_key, reverse=True
    )
    for bindir in candidates:
        if all((bindir / b).is_file() for b in REQUIRED_BINARIES):
            return bindir
    looked = ", ".join(str(c) for c in candidates) or "pg_config, /usr/lib/postgresql"
    raise ClusterError(
        f"PostgreSQL server binaries not found (looked in {looked}; need "
        f"{', '.join(REQUIRED_BINARIES)}). Install them: apt-get install "
        "postgresql (Debian/Ubuntu), or set RWSPLIT_PG_BINDIR."
    )


def resolve_os_user(requested: str | None) -> str | None:
    """The OS user to run the servers as (None: the current user)."""
    if os.geteuid() != 0:
        return None
    name = requested or os.environ.get("RWSPLIT_PG_OS_USER") or "postgres"
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise ClusterError(
            f"running as root, but OS user {name!r} does not exist; PostgreSQL "
            "refuses to run as root. Create it (useradd --system postgres) or "
            "set RWSPLIT_PG_OS_USER to an unprivileged user."
        ) from None
    if not shutil.which("runuser"):
        raise ClusterError("running as root, but `runuser` is not available")
    return name


def proc_stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, ppid) of a process, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    comm = raw[raw.find("(") + 1 : raw.rfind(")")]
    fields = raw[raw.rfind(")") + 2 :].split()
    return comm, fields[0], int(fields[1])


def is_live_postgres(pid: int) -> bool:
    st = proc_stat(pid)
    return (
        st is not None
        and st[1] not in ("Z", "X")
        and st[0].startswith(("postgres", "postmaster"))
    )


def descendants(root: int) -> list[int]:
    """All live descendants of ``root`` (found via /proc/*/stat ppid)."""
    return ChildFinder(root).descendants()


def read_pid(path: Path) -> int | None:
    try:
        first = path.read_text().split("\n", 1)[0].strip()
        return int(first)
    except (OSError, ValueError):
        return None


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


def poll(check: Callable[[], bool], timeout: float, what: str, hint: str = "") -> None:
    """Call ``check`` until it returns True or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            if check():
                return
            last_error = None
        except ClusterError as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise ClusterError(f"timed out after {timeout:g}s {what}{detail}{hint}")
        time.sleep(0.05)


def stop_tree(pid: int, name: str) -> None:
    """SIGSTOP process ``pid`` and all its descendants; wait until all stopped."""
    os.kill(pid, signal.SIGSTOP)
    poll(
        lambda: (proc_stat(pid) or ("", "T", 0))[1] in STOPPED,
        5,
        f"waiting for {name} postmaster to stop",
    )
    kids = descendants(pid)  # the stopped postmaster cannot fork any more
    for kid in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(kid, signal.SIGSTOP)
    # SIGSTOP takes effect asynchronously (a child in disk wait stops
    # later): return only once every child is stopped, or has exited (a
    # zombie, as the stopped postmaster cannot reap it).
    poll(
        lambda: all(
            (proc_stat(k) or ("", "X", 0))[1] in (*STOPPED, "Z", "X") for k in kids
        ),
        5,
        f"waiting for {name}'s processes to stop",
    )


def continue_tree(pid: int, name: str) -> None:
    """SIGCONT ``pid``'s descendants and ``pid``; wait until all run."""

    def all_resumed() -> bool:
        stopped = [
            p
            for p in [*descendants(pid), pid]
            if (proc_stat(p) or ("", "R", 0))[1] in STOPPED
        ]
        for p in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)
        return not stopped

    poll(all_resumed, 10, f"waiting for {name} to resume")


def chown(path: Path, os_user: str | None) -> None:
    """Give ``path`` to ``os_user`` (nothing to do when None)."""
    if os_user:
        pw = pwd.getpwnam(os_user)
        os.chown(path, pw.pw_uid, pw.pw_gid)


def run_tool(
    binary: Path, args: Sequence[str], os_user: str | None, cwd: Path, timeout: float
) -> str:
    """Run a server binary (as ``os_user`` when set) and return its output."""
    cmd = [str(binary), *args]
    if os_user:
        cmd = ["runuser", "-u", os_user, "--", *cmd]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    tool = binary.name
    try:
        proc = subprocess.run(
            cmd,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"{tool} timed out after {timeout:g}s") from exc
    except OSError as exc:
        raise ClusterError(f"cannot run {tool}: {exc}") from exc
    if proc.returncode != 0:
        out = (proc.stderr or proc.stdout).strip()
        raise ClusterError(f"{tool} {' '.join(args)} failed: {out}")
    return proc.stdout


def check_writable(directory: Path, os_user: str | None) -> None:
    """Make sure ``os_user`` can reach and write ``directory``."""
    if not os_user:
        return
    proc = subprocess.run(
        ["runuser", "-u", os_user, "--", "test", "-w", str(directory)],
        cwd="/",
        capture_output=True,
        timeout=30,
    )
    if proc.returncode != 0:
        raise ClusterError(
            f"OS user {os_user!r} cannot write {directory}; every "
            "parent directory must be searchable by it (e.g. use a "
            "directory under /tmp)"
        )


def signal_all(pids: Sequence[int], signum: int) -> None:
    """Send ``signum`` to each of ``pids`` that still exists."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def duty_cycle(
    pid: int, factor: float, period: float, done: Callable[[], bool]
) -> None:
    """
    Let process ``pid`` and its descendants run ``1/factor`` of each ``period``.

    Each period stops the postmaster (so it forks no new backend), then its
    children, and continues them all after ``period * (1 - 1/factor)``
    seconds: a server with ``1/factor`` of its CPU, as on a starved VM. Ends,
    leaving every process running, when ``done()`` or when ``pid`` is gone.
    """
    running = period / factor
    stopped = period - running
    family: list[int] = []
    finder = ChildFinder(pid)
    try:
        while not done() and is_live_postgres(pid):
            os.kill(pid, signal.SIGSTOP)
            family = finder.descendants()
            signal_all(family, signal.SIGSTOP)
            time.sleep(stopped)
            signal_all([*family, pid], signal.SIGCONT)
            time.sleep(running)
    finally:
        signal_all([*family, *descendants(pid), pid], signal.SIGCONT)


class ChildFinder:
    """
    The descendants of one process, found cheaply again and again.

    Lists ``/proc`` each time but reads the parent of new processes only, so
    a scan costs a directory listing rather than one file read per process.
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self._parents: dict[int, int] = {}

    def descendants(self) -> list[int]:
        """Return the live descendants of the root now."""
        pids = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        for gone in self._parents.keys() - pids:
            del self._parents[gone]
        for new in pids - self._parents.keys():
            st = proc_stat(new)
            self._parents[new] = st[2] if st is not None else 0
        children: dict[int, list[int]] = {}
        for child, parent in self._parents.items():
            children.setdefault(parent, []).append(child)
        found: list[int] = []
        todo = [self.root]
        while todo:
            kids = children.get(todo.pop(), [])
            found += kids
            todo += kids
        return found


def is_running_command(pid: int, marker: str) -> bool:
    """Return whether ``pid`` is alive (not a zombie) with ``marker`` in its argv."""
    st = proc_stat(pid)
    if st is None or st[1] in ("Z", "X"):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return marker.encode() in argv
