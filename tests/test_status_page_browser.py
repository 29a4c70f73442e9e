"""
The status page in a real headless Chromium, against the real cluster.

Needs Debian's ``chromium`` (scripts/install_chromium.sh). When it is missing
and this is root, the test installs it; otherwise it is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from django_rwsplit.health import history
from django_rwsplit.health import registry as health_registry
from tests.test_views import TOKEN, endpoint_settings
from tests.testapp.models import Item
from tests.utils import rotation, start_health, wait_until

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.long,
    pytest.mark.django_db(transaction=True, databases="__all__"),
]

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "artifacts" / "status-page.png"
# Elements without children here (SVG shapes) or without an end tag (void).
LEAVES = frozenset({"circle", "polyline", "rect", "line", "text", "meta", "br"})
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str | None:
    return next(filter(None, map(shutil.which, BROWSERS)), None)


@pytest.fixture(scope="session")
def browser() -> str:
    """Path of a Chromium binary, installed with apt-get when root."""
    found = find_browser()
    if found is None and os.geteuid() == 0:
        subprocess.run(
            [str(ROOT / "scripts" / "install_chromium.sh")], check=True, timeout=600
        )
        found = find_browser()
    if found is None:
        pytest.skip(
            "Chromium is not installed and cannot be installed without root: "
            "run scripts/install_chromium.sh as root"
        )
    return found


@pytest.fixture
def server():
    """
    pytest-django's live server, started with a STATIC_URL.

    Its static-files wrapper fails on every request when STATIC_URL is None,
    as in tests/settings.py, so the ``live_server`` fixture cannot be used.
    """
    from django.test import override_settings
    from pytest_django.live_server_helper import LiveServer

    with override_settings(STATIC_URL="/static/"):
        live = LiveServer("127.0.0.1:0")
    try:
        yield live
    finally:
        live.stop()


def load(browser: str, url: str, profile: Path, screenshot: Path) -> str:
    """Load ``url`` headless, let its script run 4 s, save a PNG, return the DOM."""
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    screenshot.unlink(missing_ok=True)
    result = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--window-size=1200,800",
            "--virtual-time-budget=4000",
            f"--screenshot={screenshot}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


class Elements(HTMLParser):
    """Collect the tag and attributes of every element of a document."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[dict[str, str | None]] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        parent = self.stack[-1] if self.stack else {}
        attributes["_parent_alias"] = parent.get("data-alias") or parent.get(
            "_parent_alias"
        )
        self.found.append((tag, attributes))
        if tag not in LEAVES:
            self.stack.append(attributes)

    def handle_endtag(self, tag):
        if tag not in LEAVES and self.stack:
            self.stack.pop()

    def all(self, tag: str, **wanted: str) -> list[dict[str, str | None]]:
        def matches(attrs: dict[str, str | None]) -> bool:
            return all(
                wanted_value in (attrs.get(key.replace("_", "-")) or "").split()
                or attrs.get(key.replace("_", "-")) == wanted_value
                for key, wanted_value in wanted.items()
            )

        return [attrs for name, attrs in self.found if name == tag and matches(attrs)]


def record_round() -> None:
    """Feed the history as the health monitor does after each round."""
    history.record(health_registry.snapshot())


def test_lagging_replica_is_shown_out_of_rotation(cluster, server, browser, tmp_path):
    with endpoint_settings(
        HEALTH_ENDPOINT_TOKEN=TOKEN,
        MAX_LAG_SECONDS=0.5,
        CHECK_INTERVAL=0.2,
        CHECK_TIMEOUT=0.5,
        READMIT_AFTER=3,
    ):
        start_health()
        in_rotation_until = time.monotonic() + 1.5
        while time.monotonic() < in_rotation_until:  # some healthy history first
            record_round()
            time.sleep(0.1)
        cluster.pause_replay("replica1")

        def write_and_check() -> bool:
            Item.objects.create(name="tick")
            record_round()
            return "replica1" not in rotation()

        wait_until(write_and_check, timeout=10, interval=0.05)
        out_until = time.monotonic() + 1.5
        while time.monotonic() < out_until:  # some time out of rotation
            Item.objects.create(name="tock")
            record_round()
            time.sleep(0.1)

        url = f"{server.url}/rwsplit/status/?token={TOKEN}"
        dom = load(browser, url, tmp_path / "profile", SCREENSHOT)
        assert "replica1" not in rotation()  # still out while the page loaded

    page = Elements()
    page.feed(dom)
    badge = page.all("span", id="badge")
    assert badge and badge[0]["data-status"] == "warning", dom[:3000]
    rows = {row["data-alias"]: row for row in page.all("tr", data_role="replica")}
    assert rows.keys() == {"replica1", "replica2"}
    assert rows["replica1"]["data-in-rotation"] == "false"
    assert rows["replica2"]["data-in-rotation"] == "true"
    primary = page.all("tr", data_role="primary")
    assert primary and primary[0]["data-alias"] == "default"

    series = {g["data-alias"] for g in page.all("g", **{"class": "series"})}
    assert series == {"replica1", "replica2"}
    lines = page.all("polyline", **{"class": "lag-line"})
    assert {line["_parent_alias"] for line in lines} == {"replica1", "replica2"}
    out_points = page.all("circle", **{"class": "out-of-rotation"})
    assert out_points and {p["_parent_alias"] for p in out_points} == {"replica1"}
    out_spans = page.all("rect", **{"class": "out-span"})
    assert {s["_parent_alias"] for s in out_spans} == {"replica1"}
    (threshold,) = page.all("line", **{"class": "threshold"})
    assert threshold["data-max-lag-seconds"] == "0.5"
    (updated,) = page.all("span", id="updated")
    assert updated["class"] != "stale", dom[-3000:]  # the refreshes succeeded
    assert SCREENSHOT.stat().st_size > 10_000
