"""
A bounded load generator for the chaos tests, run as its own process.

    python -m tests.chaos.loadgen --url wsgi=http://127.0.0.1:18201 \\
        --url asgi=http://127.0.0.1:18202 --duration 60 --max-requests 20000 \\
        --clients 8 --out records.jsonl

Each client is a thread with its own cookie jar, like a browser, and sends
every request to a server picked at random (a load balancer). Readers only
read (``GET /api/pin/``). Writers also run write-then-read sessions: ``POST
/api/write/``, then ``GET /api/read/<id>/`` on each server, which must see
the row while the pin cookie lives: a read that does not is *stale*.

One JSON record per request goes to ``--out``: ``t0``/``t1`` (start and end,
``time.monotonic()``: CLOCK_MONOTONIC, comparable across processes on
Linux), ``kind`` (``read``, ``write``, ``read_own``), ``server`` (the name in
``--url``), ``status`` (0: no HTTP response), ``port`` (the database server
that answered), ``stale``, ``pinned`` (the client held a live pin cookie),
``reason`` (the pin the server reported), ``note`` and ``text`` (the row a
write stored and a ``read_own`` looked for) and ``error``.

Only loopback URLs are accepted; the duration, the request count and the
number of clients are capped. SIGINT or SIGTERM ends the run early.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import signal
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import IO, Any

MAX_DURATION = 900.0
MAX_REQUESTS = 1_000_000
MAX_CLIENTS = 256
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
PIN_COOKIE = "rwsplit_pin"
# A read_own is judged only while the pin cookie surely lives on the server.
STICKY_MARGIN = 0.5


@dataclass
class Record:
    """One request and what its response said."""

    t0: float
    t1: float
    kind: str
    server: str
    status: int
    client: int
    pinned: bool
    port: int | None = None
    reason: str | None = None
    stale: bool | None = None
    note: int | None = None
    # The text a write stored (write and read_own): a row is found by it.
    text: str | None = None
    interface: str | None = None
    error: str | None = None


@dataclass
class CookieJar:
    """The cookies of one client, expiring by ``Max-Age`` like a browser's."""

    cookies: dict[str, tuple[str, float]] = field(default_factory=dict)

    def header(self, now: float) -> str | None:
        """Return the ``Cookie`` header to send (None when there is none)."""
        live = [f"{k}={v}" for k, (v, until) in self.cookies.items() if until > now]
        return "; ".join(live) or None

    def live(self, name: str, now: float) -> bool:
        """Return whether cookie ``name`` is set and not expired."""
        value = self.cookies.get(name)
        return value is not None and value[1] > now

    def update(self, set_cookies: Sequence[str], now: float) -> None:
        """Take the ``Set-Cookie`` headers of a response."""
        for header in set_cookies:
            try:
                parsed = SimpleCookie(header)
            except CookieError:
                continue
            for name, morsel in parsed.items():
                max_age = morsel["max-age"]
                try:
                    until = now + float(max_age) if max_age else float("inf")
                except ValueError:
                    until = float("inf")
                if until <= now:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = (morsel.value, until)


class Budget:
    """The run's limits: a deadline, a request count and a stop flag."""

    def __init__(self, duration: float, max_requests: int) -> None:
        self.deadline = time.monotonic() + duration
        self.left = max_requests
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Reserve one request; False once the run is over."""
        if self.stop.is_set() or time.monotonic() >= self.deadline:
            return False
        with self._lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


class Sink:
    """Write records as JSON lines, from many threads."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.count = 0
        self.failed = 0
        self.stale = 0
        self._lock = threading.Lock()

    def add(self, record: Record) -> None:
        line = json.dumps(asdict(record), separators=(",", ":"))
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()
            self.count += 1
            self.failed += record.status not in (200, 201)
            self.stale += record.stale is True


@dataclass(frozen=True)
class Server:
    """A named base URL on loopback."""

    name: str
    host: str
    port: int


def parse_server(text: str) -> Server:
    """Parse ``name=http://127.0.0.1:port``; refuse anything but loopback."""
    name, _, url = text.partition("=")
    parsed = urllib.parse.urlsplit(url)
    if not name or parsed.scheme != "http" or parsed.hostname not in LOOPBACK:
        raise argparse.ArgumentTypeError(
            f"expected name=http://127.0.0.1:PORT (loopback only), not {text!r}"
        )
    if parsed.port is None:
        raise argparse.ArgumentTypeError(f"no port in {text!r}")
    return Server(name, parsed.hostname, parsed.port)


class Client(threading.Thread):
    """One browser-like client: reads, and (writers) write-then-read sessions."""

    def __init__(
        self,
        index: int,
        servers: Sequence[Server],
        budget: Budget,
        sink: Sink,
        options: argparse.Namespace,
    ) -> None:
        super().__init__(name=f"client-{index}", daemon=True)
        self.index = index
        self.servers = servers
        self.budget = budget
        self.sink = sink
        self.options = options
        self.writer = index % 2 == 0 and options.write_share > 0
        self.rng = random.Random(options.seed * 1000 + index)
        self.jar = CookieJar()
        self.written = 0

    def run(self) -> None:
        while not self.budget.stop.is_set():
            if self.writer and self.rng.random() < self.options.write_share:
                if not self.session():
                    return
            elif not self.read():
                return
            self.think()

    def think(self) -> None:
        pause = self.rng.uniform(0, 2 * self.options.think_ms) / 1000
        if pause:
            self.budget.stop.wait(pause)

    def read(self) -> bool:
        """One plain read; False when the budget is spent."""
        if not self.budget.take():
            return False
        self.call(self.rng.choice(self.servers), "read", "GET", "/api/pin/")
        return True

    def session(self) -> bool:
        """Write a row, then read it back from every server."""
        if not self.budget.take():
            return False
        self.written += 1
        text = f"c{self.index}-{self.written}"
        body = urllib.parse.urlencode({"text": text})
        record, data = self.call(
            self.rng.choice(self.servers),
            "write",
            "POST",
            "/api/write/",
            body,
            text=text,
        )
        if record.status != 201 or not isinstance(data.get("id"), int):
            return True
        note: int = data["id"]
        for server in self.rng.sample(list(self.servers), len(self.servers)):
            if not self.budget.take():
                return False
            read, body_read = self.call(
                server, "read_own", "GET", f"/api/read/{note}/", note=note, text=text
            )
            if read.status == 200 and read.t0 < record.t1 + self.sticky_window():
                read.stale = body_read.get("visible") is not True
            self.sink.add(read)
        return True

    def sticky_window(self) -> float:
        return float(self.options.sticky_seconds) - STICKY_MARGIN

    def call(
        self,
        server: Server,
        kind: str,
        method: str,
        path: str,
        body: str | None = None,
        note: int | None = None,
        text: str | None = None,
    ) -> tuple[Record, dict[str, Any]]:
        """Send one request; return its record (added to the sink, except
        ``read_own``, judged by the caller first) and its JSON body."""
        headers = {"Connection": "close", "Accept": "application/json"}
        t0 = time.monotonic()
        cookie = self.jar.header(t0)
        if cookie:
            headers["Cookie"] = cookie
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        record = Record(
            t0=t0,
            t1=t0,
            kind=kind,
            server=server.name,
            status=0,
            client=self.index,
            pinned=self.jar.live(PIN_COOKIE, t0),
            note=note,
            text=text,
        )
        data: dict[str, Any] = {}
        conn = http.client.HTTPConnection(
            server.host, server.port, timeout=self.options.timeout
        )
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            record.status = response.status
            cookies = response.headers.get_all("Set-Cookie") or []
            self.jar.update(cookies, time.monotonic())
            try:
                parsed = json.loads(payload) if payload else {}
            except ValueError:
                parsed = {}
            data = parsed if isinstance(parsed, dict) else {}
        except (OSError, http.client.HTTPException) as error:
            record.error = f"{type(error).__name__}: {error}"[:200]
        finally:
            conn.close()
            record.t1 = time.monotonic()
        port = data.get("port")
        record.port = port if isinstance(port, int) else None
        if kind == "write" and isinstance(data.get("id"), int):
            record.note = data["id"]
        reason, interface = data.get("pinned"), data.get("interface")
        record.reason = reason if isinstance(reason, str) else None
        record.interface = interface if isinstance(interface, str) else None
        if record.status not in (200, 201) and record.error is None:
            record.error = str(data.get("error") or f"HTTP {record.status}")[:200]
        if kind != "read_own":
            self.sink.add(record)
        return record, data


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.loadgen", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--url",
        dest="servers",
        action="append",
        type=parse_server,
        required=True,
        help="name=http://127.0.0.1:PORT, once per server (loopback only)",
    )
    parser.add_argument("--duration", type=float, required=True, help="seconds")
    parser.add_argument("--max-requests", type=int, required=True)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True, help="JSON lines file")
    parser.add_argument(
        "--write-share",
        type=float,
        default=0.5,
        help="share of a writer's turns that are write-then-read sessions",
    )
    parser.add_argument("--think-ms", type=float, default=20.0)
    parser.add_argument("--timeout", type=float, default=15.0, help="per request")
    parser.add_argument("--sticky-seconds", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    options = parser.parse_args(argv)
    if not 0 < options.duration <= MAX_DURATION:
        parser.error(f"--duration must be in (0, {MAX_DURATION:g}]")
    if not 0 < options.max_requests <= MAX_REQUESTS:
        parser.error(f"--max-requests must be in (0, {MAX_REQUESTS}]")
    if not 0 < options.clients <= MAX_CLIENTS:
        parser.error(f"--clients must be in (0, {MAX_CLIENTS}]")
    if not 0 <= options.write_share <= 1:
        parser.error("--write-share must be in [0, 1]")
    if not 0 < options.timeout <= 60 or options.think_ms < 0:
        parser.error("--timeout must be in (0, 60] and --think-ms >= 0")

    budget = Budget(options.duration, options.max_requests)

    def stop(signum: int, frame: object) -> None:
        budget.stop.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    started = time.monotonic()
    with options.out.open("w") as out:
        sink = Sink(out)
        clients = [
            Client(index, options.servers, budget, sink, options)
            for index in range(options.clients)
        ]
        print(json.dumps({"started": started}), flush=True)
        for client in clients:
            client.start()
        # Clients stop at the deadline or on a signal, after at most one
        # request timeout (a session makes up to 3 requests in a row).
        limit = budget.deadline + 3 * options.timeout + 5
        while any(c.is_alive() for c in clients) and time.monotonic() < limit:
            budget.stop.wait(0.1)
        budget.stop.set()
        for client in clients:
            client.join(timeout=max(0.0, limit - time.monotonic()))
        print(
            json.dumps(
                {
                    "requests": sink.count,
                    "failed": sink.failed,
                    "stale": sink.stale,
                    "seconds": round(time.monotonic() - started, 3),
                    "stuck_clients": sum(c.is_alive() for c in clients),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
