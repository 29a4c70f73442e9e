"""
The chaos scenario: faults injected into the cluster under load, then judged.

:func:`run_scenario` starts the load generator (its own process), holds each
phase for a fixed time under load, injects the next fault and records when
the injection began (``t0``) and returned (``t1``), all on the monotonic
clock the load generator's records use. :func:`violations` checks the
records against the pass criteria; :func:`report` renders the per-phase
table as Markdown.
"""

from __future__ import annotations

import asyncio
import json
import math
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django_rwsplit.testing.cluster import LocalCluster
from django_rwsplit.testing.fixtures import heal
from tests.chaos.servers import ROOT, ChaosSettings

# Seconds allowed, beyond READMIT_AFTER * CHECK_INTERVAL + CHECK_TIMEOUT, for a
# healed replica's reads to reappear: a round in progress, a loaded machine.
READMIT_SLACK = 1.5
# Every phase must carry at least this many requests to count as measured.
MIN_REQUESTS = 30


@dataclass(frozen=True)
class Step:
    """One phase: ``kind`` says what is injected at its start, into ``node``."""

    name: str
    kind: str
    node: str | None = None


PLAN = (
    Step("steady", "steady"),
    Step("replica1 paused", "pause", "replica1"),
    Step("replica1 resumed", "resume", "replica1"),
    Step("replica2 stopped", "stop", "replica2"),
    Step("replica2 restarted", "start", "replica2"),
    Step("replica1 frozen", "freeze", "replica1"),
    Step("replica1 thawed", "thaw", "replica1"),
    Step("replica1 slowed 4x", "slow", "replica1"),
    Step("replica1 unslowed", "unslow", "replica1"),
    Step("primary stopped", "primary_stop", "primary"),
    Step("primary restarted", "primary_start", "primary"),
)
HEALS = frozenset({"resume", "start", "thaw", "unslow"})
SLOW_FACTOR = 4.0
# The slowed phase has no share criterion of its own: the chaos load is
# light and spread over four processes, so each sees few samples (shares of
# 21 % to 46 % seen). benchmarks/balancing.py measures the share under a
# real WSGI server's concurrent load; here the phase must pass the general
# criteria (no failure, no stale read).
STOPS = frozenset({"stop", "primary_stop"})


def inject(
    cluster: LocalCluster,
    step: Step,
    extra: Mapping[str, Callable[[Step], object]] | None = None,
) -> None:
    """
    Inject ``step``'s fault (or heal it) and return when it took effect.

    ``extra`` adds kinds of step of a caller's own (a failover drill's).
    """
    if extra and step.kind in extra:
        extra[step.kind](step)
        return
    node = step.node or "primary"
    actions: dict[str, Callable[[], object]] = {
        "steady": lambda: None,
        "pause": lambda: cluster.pause_replay(node),
        "resume": lambda: cluster.resume_replay(node),
        "stop": lambda: cluster.stop_replica(node, mode="immediate"),
        "start": lambda: cluster.start_replica(node),
        "freeze": lambda: cluster.freeze(node),
        "thaw": lambda: cluster.thaw(node),
        "slow": lambda: cluster.slow(node, SLOW_FACTOR),
        "unslow": lambda: cluster.unslow(node),
        "primary_stop": cluster.stop_primary,
        "primary_start": cluster.start_primary,
    }
    actions[step.kind]()


@dataclass
class Phase:
    """A step as it ran: injection began at ``t0``, returned at ``t1``."""

    step: Step
    t0: float
    t1: float
    end: float = math.inf

    @property
    def name(self) -> str:
        return self.step.name

    def throughput(self, records: Sequence[Mapping[str, Any]]) -> float:
        """Requests per second that started in this phase."""
        return len(records) / max(self.end - self.t0, 1e-9)


@dataclass
class Run:
    """Everything a chaos run recorded."""

    settings: ChaosSettings
    ports: dict[str, int]
    phases: list[Phase]
    records: list[dict[str, Any]]
    started: float
    loadgen: dict[str, Any] = field(default_factory=dict)

    @property
    def replica_ports(self) -> set[int]:
        return {port for node, port in self.ports.items() if node != "primary"}

    def by_phase(self) -> list[tuple[Phase, list[dict[str, Any]]]]:
        """The records of each phase (by start time)."""
        groups: list[tuple[Phase, list[dict[str, Any]]]] = [
            (p, []) for p in self.phases
        ]
        for record in self.records:
            index = 0
            for i, phase in enumerate(self.phases):
                if record["t0"] >= phase.t0:
                    index = i
            groups[index][1].append(record)
        return groups


def loadgen_command(
    servers: Mapping[str, str],
    out: Path,
    *,
    duration: float,
    max_requests: int,
    clients: int,
    think_ms: float,
    sticky_seconds: float,
    seed: int,
) -> list[str]:
    """The load generator's command line."""
    command = [sys.executable, "-m", "tests.chaos.loadgen"]
    for name, url in servers.items():
        command += ["--url", f"{name}={url}"]
    return [
        *command,
        *("--duration", f"{duration:g}", "--max-requests", str(max_requests)),
        *("--clients", str(clients), "--think-ms", f"{think_ms:g}"),
        *("--sticky-seconds", f"{sticky_seconds:g}", "--seed", str(seed)),
        *("--out", str(out)),
    ]


def _first_line(process: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    line = process.stdout.readline() if ready else ""
    if not line:
        raise RuntimeError("the load generator did not start")
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def _hold(process: subprocess.Popen[str], until: float) -> None:
    """Let the load run until ``until`` (the phase's fixed length)."""
    while (left := until - time.monotonic()) > 0:
        if process.poll() is not None:
            raise RuntimeError(f"the load generator exited ({process.returncode})")
        time.sleep(min(left, 0.1))


def run_scenario(
    cluster: LocalCluster,
    servers: Mapping[str, str],
    out_dir: Path,
    *,
    settings: ChaosSettings,
    phase_seconds: float = 5.0,
    clients: int = 6,
    think_ms: float = 25.0,
    max_requests: int = 200_000,
    seed: int = 1,
    plan: Sequence[Step] = PLAN,
    ports: Mapping[str, int] | None = None,
    extra: Mapping[str, Callable[[Step], object]] | None = None,
    heal_after: bool = True,
) -> Run:
    """
    Run ``plan`` under load; heal the cluster afterwards, whatever happened.

    ``ports`` maps each node to the port the example reports for it (the
    node's own, unless PgBouncer stands in front); ``extra`` adds kinds of
    step (:func:`inject`); ``heal_after=False`` leaves the cluster as the
    plan left it (a drill that changed its roles for good).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    records_path = out_dir / "records.jsonl"
    # A safety cap only: the run ends with SIGINT after the last phase.
    duration = min(900.0, len(plan) * (phase_seconds + 90))
    command = loadgen_command(
        servers,
        records_path,
        duration=duration,
        max_requests=max_requests,
        clients=clients,
        think_ms=think_ms,
        sticky_seconds=settings.sticky_seconds,
        seed=seed,
    )
    ports = dict(ports or {node.name: node.port for node in cluster.nodes})
    with (out_dir / "loadgen.log").open("w") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True
        )
        try:
            started = float(_first_line(process, 30)["started"])
            phases: list[Phase] = []
            for step in plan:
                t0 = time.monotonic() if phases else started
                inject(cluster, step, extra)
                t1 = time.monotonic() if phases else started
                if phases:
                    phases[-1].end = t0
                phases.append(Phase(step, t0, t1))
                _hold(process, t1 + phase_seconds)
            phases[-1].end = time.monotonic()
            process.send_signal(signal.SIGINT)
            output, _ = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if heal_after:
                heal(cluster)
    records = [json.loads(line) for line in records_path.read_text().splitlines()]
    summary = output.strip().splitlines()[-1] if output.strip() else "{}"
    (out_dir / "phases.json").write_text(  # beside records.jsonl, for a post-mortem
        json.dumps(
            {
                "started": started,
                "ports": ports,
                "phases": [
                    {"name": p.name, "kind": p.step.kind, "node": p.step.node}
                    | {"t0": p.t0, "t1": p.t1, "end": p.end}
                    for p in phases
                ],
            },
            indent=2,
        )
    )
    return Run(settings, ports, phases, records, started, json.loads(summary))


# -- judging -------------------------------------------------------------------


def failed(record: Mapping[str, Any]) -> bool:
    return record["status"] not in (200, 201)


def latency(record: Mapping[str, Any]) -> float:
    return float(record["t1"] - record["t0"])


def describe(record: Mapping[str, Any], started: float) -> str:
    """One record, briefly, with times relative to the start of the load."""
    return (
        f"{record['kind']} on {record['server']} at +{record['t0'] - started:.2f} s "
        f"({latency(record) * 1000:.0f} ms): status {record['status']}, "
        f"db port {record['port']}, client pinned {record['pinned']}, "
        f"reason {record['reason']}, error {record['error']}"
    )


def first_back(run: Run, phase: Phase) -> float | None:
    """Seconds after the heal until a response came from the healed node."""
    port = run.ports[phase.step.node or "primary"]
    ends = [
        r["t1"]
        for r in run.records
        if r["port"] == port and r["t0"] >= phase.t1 and not failed(r)
    ]
    return min(ends) - phase.t1 if ends else None


def last_served(
    run: Run, phase: Phase, records: Iterable[Mapping[str, Any]]
) -> float | None:
    """Seconds from the end of the injection to the faulted node's last answer."""
    port = run.ports[phase.step.node or "primary"]
    ends = [r["t1"] for r in records if r["port"] == port and r["t0"] >= phase.t0]
    return max(ends) - phase.t1 if ends else None


def violations(run: Run) -> list[str]:
    """Every pass criterion the run broke, as readable sentences."""
    s = run.settings
    problems: list[str] = []
    stops = [p for p in run.phases if p.step.kind in STOPS]

    def in_flight_at_a_stop(r: Mapping[str, Any]) -> bool:
        return any(r["t0"] <= p.t1 and r["t1"] >= p.t0 for p in stops)

    def report(phase: Phase, what: str, bad: Sequence[Mapping[str, Any]]) -> None:
        if bad:
            problems.append(
                f"{phase.name}: {len(bad)} {what}; first: "
                f"{describe(bad[0], run.started)}"
            )

    grouped = run.by_phase()
    for phase, records in grouped:
        kind = phase.step.kind
        if len(records) < MIN_REQUESTS:
            problems.append(f"{phase.name}: only {len(records)} requests measured")
        report(
            phase,
            "stale read(s) of the client's own write",
            [r for r in records if r["stale"]],
        )
        report(
            phase,
            "failure(s) that are not a 503 from the example project",
            [r for r in records if failed(r) and r["status"] != 503],
        )
        if kind == "primary_stop" and s.atomic_requests:
            # Django opens each view's transaction on the primary before the
            # view runs: with the primary down, no view can start.
            report(
                phase,
                "read(s) after the stop without a 503 database_unavailable",
                [
                    r
                    for r in records
                    if r["kind"] == "read"
                    and r["t0"] >= phase.t1
                    and failed(r)
                    and r["error"] != "database_unavailable"
                ],
            )
        elif kind == "primary_stop":
            report(
                phase,
                "read(s) of clients with no pending write that did not succeed "
                "from a replica",
                [
                    r
                    for r in records
                    if r["kind"] == "read"
                    and not r["pinned"]
                    and (r["status"] != 200 or r["port"] not in run.replica_ports)
                ],
            )
        if kind == "primary_stop":
            writes = [
                r for r in records if r["kind"] == "write" and r["t0"] >= phase.t1
            ]
            if not writes:
                problems.append(f"{phase.name}: no write was attempted")
            # A write may instead succeed if it was still waiting for a
            # (pooled) connection when the primary came back.
            report(
                phase,
                "write(s) without a 503 database_unavailable (or a success "
                "after the primary was back)",
                [
                    r
                    for r in writes
                    if (r["status"] != 503 or r["error"] != "database_unavailable")
                    and not (r["status"] in (200, 201) and r["t1"] >= phase.end)
                ],
            )
            report(
                phase,
                f"failure(s) slower than {s.connect_timeout + 1:g} s (a hang)",
                [
                    r
                    for r in records
                    if failed(r) and latency(r) > s.connect_timeout + 1
                ],
            )
        elif kind == "primary_start":
            report(
                phase,
                "failure(s) after the primary was back",
                [r for r in records if failed(r) and r["t0"] >= phase.t1],
            )
        elif kind == "stop":
            report(
                phase,
                "failure(s) of requests not in flight at the instant of the stop",
                [
                    r
                    for r in records
                    if failed(r) and not (r["t0"] <= phase.t1 and r["t1"] >= phase.t0)
                ],
            )
            report(
                phase,
                f"failure(s) after the replica left rotation (stop + "
                f"{s.ejection_bound:g} s)",
                [
                    r
                    for r in records
                    if failed(r) and r["t0"] >= phase.t1 + s.ejection_bound
                ],
            )
        else:
            report(
                phase,
                "failed request(s)",
                [r for r in records if failed(r) and not in_flight_at_a_stop(r)],
            )
        if kind == "freeze":
            bound = s.connect_timeout + 1
            report(
                phase,
                f"request(s) slower than {bound:g} s",
                [r for r in records if latency(r) > bound],
            )
            # Throughput while frozen is a figure, not a criterion (a busy
            # neighbour moves it): benchmarks/chaos.py reports it.
            port = run.ports[phase.step.node or "primary"]
            report(
                phase,
                f"response(s) served by the frozen node after it left rotation "
                f"(freeze + {s.ejection_bound:g} s)",
                [
                    r
                    for r in records
                    if r["port"] == port and r["t0"] >= phase.t1 + s.ejection_bound
                ],
            )
        if kind in HEALS:
            window = s.readmit_window + READMIT_SLACK
            back = first_back(run, phase)
            if back is None or back > window:
                seen = "never" if back is None else f"after {back:.2f} s"
                problems.append(
                    f"{phase.name}: {phase.step.node} served reads again {seen}, "
                    f"not within {window:g} s of the heal"
                )
        if kind == "steady":
            served = {r["port"] for r in records if r["kind"] == "read"}
            if not run.replica_ports <= served:
                problems.append(f"steady: reads did not reach every replica: {served}")
    return problems


# -- reporting -----------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile by nearest rank (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """``rows`` as a Markdown table, columns padded."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def observation(run: Run, phase: Phase, records: Sequence[Mapping[str, Any]]) -> str:
    """What the phase showed about the faulted node, in a few words."""
    kind, node = phase.step.kind, phase.step.node
    if kind in HEALS:
        back = first_back(run, phase)
        return f"{node} back after {back:.2f} s" if back is not None else "never back"
    if kind in ("pause", "stop", "freeze"):
        last = last_served(run, phase, records)
        if last is None:
            return f"{node} served nothing after the fault"
        return f"{node} last served {last:+.2f} s"
    if kind == "primary_stop":
        writes = [r for r in records if r["kind"] == "write" and r["t0"] >= phase.t1]
        slowest = max((latency(r) for r in writes), default=0.0)
        statuses = Counter(r["status"] for r in writes)
        shown = ", ".join(f"{n}x{status}" for status, n in sorted(statuses.items()))
        return f"writes: {shown or 'none'} (max {slowest * 1000:.0f} ms)"
    return ""


def table(run: Run) -> str:
    """The per-phase table."""
    names = {port: node for node, port in run.ports.items()}
    ports = sorted(names)
    header = [
        "phase",
        "fault at",
        "requests (wsgi/asgi)",
        "failed",
        "stale",
        "p50 ms",
        "p99 ms",
        "max ms",
        *(f"reads {names[p]} :{p}" for p in ports),
        "observed",
    ]
    rows = []
    for phase, records in run.by_phase():
        times = [latency(r) * 1000 for r in records]
        servers = Counter(r["server"] for r in records)
        reads = Counter(
            r["port"] for r in records if r["kind"] != "write" and not failed(r)
        )
        fault = (
            f"+{phase.t0 - run.started:.1f} s ({(phase.t1 - phase.t0) * 1000:.0f} ms)"
            if phase.step.kind != "steady"
            else "-"
        )
        rows.append(
            [
                phase.name,
                fault,
                f"{len(records)} ({servers['wsgi']}/{servers['asgi']})",
                sum(failed(r) for r in records),
                sum(bool(r["stale"]) for r in records),
                f"{percentile(times, 0.5):.0f}",
                f"{percentile(times, 0.99):.0f}",
                f"{max(times, default=0):.0f}",
                *(reads[p] for p in ports),
                observation(run, phase, records),
            ]
        )
    return markdown_table(header, rows)


def report(run: Run, problems: Sequence[str] | None = None) -> str:
    """The run as Markdown: settings, the table, and the verdict."""
    s = run.settings
    problems = violations(run) if problems is None else problems
    lines = [
        "# Chaos run",
        "",
        f"CONSISTENCY={s.consistency!r}, CHECK_INTERVAL={s.check_interval:g}, "
        f"CHECK_TIMEOUT={s.check_timeout:g}, MAX_LAG_SECONDS={s.max_lag_seconds:g}, "
        f"READMIT_AFTER={s.readmit_after}, STICKY_SECONDS={s.sticky_seconds:g}, "
        f"connect_timeout={s.connect_timeout:g}, {s.shape}; "
        f"{len(run.records)} requests in "
        f"{run.phases[-1].end - run.started:.1f} s ({json.dumps(run.loadgen)}).",
        "",
        "'fault at': when the injection began (its duration); reads: successful "
        "reads per database server port; 'observed': when the faulted node last "
        "answered after the fault, or first answered again after the heal.",
        "",
        table(run),
        "",
        "All pass criteria met."
        if not problems
        else "Violations:\n\n" + "\n".join(f"- {p}" for p in problems),
        "",
    ]
    return "\n".join(lines)


def write_artifact(text: str, name: str = "chaos.md") -> Path:
    """Write ``text`` under ``artifacts/`` (gitignored); return the path."""
    path = ROOT / "artifacts" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


# -- concurrent pins -----------------------------------------------------------


def time_pin_cookie(settings: ChaosSettings) -> str:
    """A valid time-only pin cookie for the example project (its SECRET_KEY)."""
    from django.core import signing

    from django_rwsplit import consistency

    signer = signing.TimestampSigner(
        key=settings.secret_key, salt=consistency.SALT, fallback_keys=[]
    )
    return signer.sign(consistency.TIME_PAYLOAD)


async def _concurrent_pins(
    servers: Mapping[str, str],
    cookie: Callable[[], str],
    count: int,
    hold_ms: int,
) -> list[tuple[str, str, int, dict[str, Any]]]:
    import httpx

    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=30.0) as client:

        async def one(i: int) -> tuple[str, str, int, dict[str, Any]]:
            name = sorted(servers)[i % len(servers)]
            url = f"{servers[name]}/api/pin/?hold_ms={hold_ms}"
            expected = ("unsafe_method", "cookie", "none")[(i // len(servers)) % 3]
            if expected == "unsafe_method":
                response = await client.post(url)
            elif expected == "cookie":
                # Signed as the request leaves: its STICKY_SECONDS window
                # must not run out while 200 requests queue at the servers.
                response = await client.get(
                    url, headers={"Cookie": f"rwsplit_pin={cookie()}"}
                )
            else:
                response = await client.get(url)
            try:
                body = response.json()
            except ValueError:
                body = {}
            return name, expected, response.status_code, body

        return await asyncio.gather(*(one(i) for i in range(count)))


def concurrent_pins(
    servers: Mapping[str, str],
    settings: ChaosSettings,
    ports: Mapping[str, int],
    *,
    count: int = 200,
    hold_ms: int = 100,
) -> tuple[Counter[tuple[str, str]], list[str]]:
    """
    Send ``count`` overlapping requests, pinned and unpinned, to every server.

    A third POSTs (pinned by the method), a third carries a time pin cookie,
    a third is a plain GET. Returns the responses per (server, expected pin)
    and every response that shows a pin other than its own.
    """
    results = asyncio.run(
        _concurrent_pins(servers, lambda: time_pin_cookie(settings), count, hold_ms)
    )
    replicas = {port for node, port in ports.items() if node != "primary"}
    seen: Counter[tuple[str, str]] = Counter()
    problems = []
    for name, expected, status, body in results:
        seen[(name, expected)] += 1
        pin = None if expected == "none" else expected
        if pin:
            port_ok = body.get("port") == ports["primary"]
        else:
            # An unpinned read falls back to the primary (or fails over to it)
            # only while that worker has a replica out of rotation: under this
            # burst a 2-core machine can miss a 0.5 s CHECK_TIMEOUT (seen in CI).
            port_ok = body.get("port") in replicas or (
                body.get("port") == ports["primary"] and body.get("replica_out") is True
            )
        if (
            status != 200
            or body.get("pinned") != pin
            or body.get("pinned_at_start") != pin
            or body.get("interface") != name
            or not port_ok
        ):
            problems.append(f"{name}, expected pin {pin}: {status} {body}")
    return seen, problems


# -- shapes side by side -------------------------------------------------------


def shape_summary(run: Run) -> dict[str, float]:
    """The figures the README compares across deployment shapes."""
    grouped = run.by_phase()
    by_kind = {phase.step.kind: (phase, records) for phase, records in grouped}
    steady, steady_records = by_kind["steady"]
    frozen, frozen_records = by_kind["freeze"]
    restarted = by_kind["start"][1]
    return {
        "requests": float(len(run.records)),
        "steady_rps": steady.throughput(steady_records),
        "frozen_rps": frozen.throughput(frozen_records),
        "frozen_max_s": max((latency(r) for r in frozen_records), default=0.0),
        "failed_after_restart": float(sum(failed(r) for r in restarted)),
        "stale": float(sum(bool(r["stale"]) for r in run.records)),
    }


def shapes_table(runs: Mapping[str, tuple[Run, Sequence[str]]]) -> str:
    """One row per shape; throughput as a ratio to the first (baseline) shape."""
    summaries = {name: shape_summary(run) for name, (run, _) in runs.items()}
    base = next(iter(summaries.values()))
    header = [
        "shape",
        "requests",
        "steady req/s",
        "frozen req/s",
        "frozen / steady",
        "frozen vs baseline",
        "worst frozen request",
        "failed after a replica restart",
        "stale",
        "criteria",
    ]
    rows = []
    for name, figures in summaries.items():
        run, problems = runs[name]
        rows.append(
            [
                f"{name} ({run.settings.shape})",
                f"{figures['requests']:.0f}",
                f"{figures['steady_rps']:.1f}",
                f"{figures['frozen_rps']:.1f}",
                f"{figures['frozen_rps'] / max(figures['steady_rps'], 1e-9):.2f}",
                f"{figures['frozen_rps'] / max(base['frozen_rps'], 1e-9):.2f}",
                f"{figures['frozen_max_s']:.2f} s",
                f"{figures['failed_after_restart']:.0f}",
                f"{figures['stale']:.0f}",
                "met" if not problems else f"{len(problems)} broken",
            ]
        )
    return markdown_table(header, rows)
