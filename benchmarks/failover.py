"""
The failover drill, side by side: this project's engine and Django's own.

    python benchmarks/failover.py [--drills 3] [--shape per_request]

Each drill starts a fresh three-node cluster (the drill changes its roles for
good) and runs tests/failover_drill.py in a process of its own: a writer
writes every 10 ms while the primary is stopped, replica1 promoted and
replica2 re-pointed; then the old primary is started again unfenced (two
writable nodes) for 3 s; then a fresh process (a deploy) writes. Reported per
engine: time from the promotion to the first write on the new primary
(median and worst), writes that failed at the switch, and writes that reached
the old primary once it was back.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from _setup import table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django_rwsplit.testing.cluster import LocalCluster  # noqa: E402

DRILL = Path(__file__).resolve().parent.parent / "tests" / "failover_drill.py"
RWSPLIT_ENGINE = "django_rwsplit.backends.postgresql"
# Each candidate: its engine and PRIMARY_WAIT (ignored by Django's engine).
CANDIDATES = {
    "django_rwsplit": (RWSPLIT_ENGINE, 0.0),
    "django_rwsplit, PRIMARY_WAIT 5 s": (RWSPLIT_ENGINE, 5.0),
    "Django's own (libpq alone)": ("django.db.backends.postgresql", 0.0),
}


def one_drill(engine: str, wait: float, shape: str, port: int) -> dict[str, Any]:
    local = LocalCluster(primary_port=port)
    try:
        local.start()
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
        done = subprocess.run(
            [
                sys.executable,
                str(DRILL),
                "--dir",
                str(local.base_dir),
                "--shape",
                shape,
                "--engine",
                engine,
                "--primary-wait",
                str(wait),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        if done.returncode != 0:
            sys.exit(f"the drill failed:\n{done.stderr[-4000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result
    finally:
        local.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--drills", type=int, default=3)
    parser.add_argument("--shape", default="per_request")
    parser.add_argument("--port", type=int, default=19452)
    args = parser.parse_args()
    rows = []
    for name, (engine, wait) in CANDIDATES.items():
        resumed, failed, to_old, total = [], 0, 0, 0
        for _ in range(args.drills):
            result = one_drill(engine, wait, args.shape, args.port)
            old = result["ports"]["primary"]
            if result["resumed_after"] is not None:
                resumed.append(result["resumed_after"])
            failed += sum(1 for o in result["switch"] if "error" in o)
            later = result["split_brain"] + result["fresh_process"]
            to_old += sum(1 for o in later if o.get("port") == old)
            total += len(later)
        rows.append(
            [
                name,
                f"{statistics.median(resumed):.2f} s" if resumed else "never",
                f"{max(resumed):.2f} s" if resumed else "never",
                str(failed),
                f"{to_old} of {total}",
            ]
        )
    print(
        f"{args.drills} drills per engine, shape {args.shape}, CHECK_INTERVAL 0.25 s\n"
    )
    print(
        table(
            rows,
            [
                "engine",
                "writes back after promotion (median)",
                "(worst)",
                "writes failed (no writable node yet)",
                "writes to the old primary once back",
            ],
        )
    )


if __name__ == "__main__":
    main()
