"""
Bad input: arbitrary pin cookies and RWSPLIT values never crash a request.

A cookie is either honoured exactly as :func:`consistency.decode` reads it or
ignored (the request is served, not pinned); an RWSPLIT value is either
accepted or reported by system checks with ``rwsplit.E0xx`` ids, and a value
the checks accept serves requests. No database is needed.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core import signing
from django.http import HttpRequest, JsonResponse
from django.http.cookie import parse_cookie
from django.test import Client, override_settings
from django.urls import path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from django_rwsplit import checks, conf, consistency, pinning

FUZZ = settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
ERROR_ID = re.compile(r"rwsplit\.E\d{3}")
COOKIE = "rwsplit_pin"
BASE = {"REPLICAS": ["replica1", "replica2"], "ROUTE_TEST_MIRRORS_TO_PRIMARY": False}


def pin_state(request: HttpRequest) -> JsonResponse:
    """The routing scope as the middleware opened it; ``?write=1`` fakes a write."""
    scope = pinning.current_scope()
    body = {
        "scoped": scope is not None,
        "pinned": scope.pinned if scope else None,
        "min_lsn": scope.min_lsn if scope else None,
    }
    if request.GET.get("write"):
        pinning.note_write()  # as the write detector would, without a database
    return JsonResponse(body)


urlpatterns = [path("state/", pin_state)]


@contextmanager
def quiet_request_log() -> Iterator[None]:
    """Keep failing examples from printing a traceback each (the test reports)."""
    logger = logging.getLogger("django.request")
    disabled, logger.disabled = logger.disabled, True
    try:
        yield
    finally:
        logger.disabled = disabled


# -- strategies ----------------------------------------------------------------


def on_the_wire(text: str) -> str:
    """``text`` sent as UTF-8, as a WSGI server passes it on (PEP 3333: latin-1)."""
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


def as_django_reads(header: str) -> str:
    """The header as Django decodes it from the WSGI environ."""
    return header.encode("latin-1").decode("utf-8", "replace")


latin1 = st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
any_text = st.text(max_size=300).map(on_the_wire)
long_values = st.integers(0, 20_000).map(lambda n: "A" * n)


@st.composite
def mutated_tokens(draw: st.DrawFn) -> str:
    """A valid token (LSN or time), then truncated, overwritten or extended."""
    lsn = draw(st.none() | st.integers(0, 2**64 - 1))
    token = consistency.encode(lsn)
    at = draw(st.integers(0, len(token)))
    how = draw(st.sampled_from(["truncate", "replace", "insert", "append"]))
    piece = on_the_wire(draw(st.text(max_size=8)))
    if how == "truncate":
        return token[:at]
    if how == "replace":
        return token[:at] + piece + token[at + len(piece) :]
    if how == "insert":
        return token[:at] + piece + token[at:]
    return token + piece


cookie_values = latin1 | any_text | long_values | mutated_tokens()


@st.composite
def cookie_headers(draw: st.DrawFn) -> str:
    """A raw ``Cookie:`` header: garbage, or pin cookies among others."""
    if draw(st.booleans()):
        return draw(latin1 | any_text)
    parts = draw(
        st.lists(
            st.tuples(
                st.sampled_from([COOKIE, "csrftoken", "sessionid", " rwsplit_pin"])
                | st.text(max_size=10).map(on_the_wire),
                cookie_values,
            ),
            min_size=1,
            max_size=4,
        )
    )
    separator = draw(st.sampled_from(["; ", ";", ",", " ; "]))
    return separator.join(f"{name}={value}" for name, value in parts)


def signed(value: str) -> str:
    """``value`` signed with the project's key, as a forger with it would."""
    return signing.Signer(salt=consistency.SALT).sign(value)


leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.just(10**400)  # beyond float: comparisons work, float() overflows
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=10)
    | st.sampled_from(["replica1", "replica2", "default", "lsn", "time", "primary"])
)
keys = st.sampled_from(sorted(conf.DEFAULTS)) | st.text(max_size=12)
nested = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(keys | st.integers() | st.none(), children, max_size=4)
    ),
    max_leaves=12,
)
rwsplit_values = nested | st.dictionaries(keys, nested, max_size=8)
numbers = (
    st.integers(-3, 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([math.inf, math.nan, 1e14, 1e300, 10**30, 10**400, 0, True])
    | st.none()
    | st.text(max_size=3)
)
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "STICKY_SECONDS": numbers,
        "CHECK_INTERVAL": numbers,
        "CHECK_TIMEOUT": numbers,
        "MAX_LAG_SECONDS": numbers,
        "MAX_LAG_BYTES": numbers,
        "READMIT_AFTER": numbers,
        "CAUSAL_WAIT": numbers,
        "CONSISTENCY": st.sampled_from(["lsn", "time", "LSN", ""]),
        "PIN_UNSAFE_METHODS": st.booleans() | st.none(),
        "COOKIE_NAME": st.sampled_from([COOKIE, "pin", "a-b_c", "", "a b", "é"]),
        "FALLBACK": st.sampled_from(["primary", "error", "none"]),
    },
)


# -- the pin cookie ----------------------------------------------------------


def expected_scope(raw: str) -> tuple[str | None, int | None]:
    """The pin and position the middleware should take from ``raw``."""
    value = parse_cookie(as_django_reads(raw)).get(COOKIE)
    token = consistency.decode(value, conf.get_config())
    if token is None:
        return None, None
    if token.lsn is None or conf.get_config().consistency != "lsn":
        return "cookie", None
    return None, token.lsn


def served(raw: str) -> dict[str, Any]:
    response = Client().get("/state/", HTTP_COOKIE=raw)
    assert response.status_code == 200, (raw, response.status_code)
    body: dict[str, Any] = response.json()
    assert body["scoped"]
    return body


@FUZZ
@given(raw=cookie_headers())
def test_any_cookie_header_is_served_and_honoured_only_if_valid(raw: str) -> None:
    for consistency_mode in ("lsn", "time"):
        with override_settings(
            ROOT_URLCONF=__name__, RWSPLIT={**BASE, "CONSISTENCY": consistency_mode}
        ):
            body = served(raw)
            assert (body["pinned"], body["min_lsn"]) == expected_scope(raw)


@FUZZ
@given(raw=latin1 | any_text | long_values)
def test_garbage_pin_cookie_is_ignored(raw: str) -> None:
    with override_settings(ROOT_URLCONF=__name__, RWSPLIT=BASE):
        assert consistency.decode(as_django_reads(raw), conf.get_config()) is None
        body = served(f"{COOKIE}={raw}")
        assert body["pinned"] is None and body["min_lsn"] is None


def test_a_valid_cookie_is_honoured() -> None:
    """The oracle of the tests above: real tokens do pin."""
    with override_settings(ROOT_URLCONF=__name__, RWSPLIT=BASE):
        assert served(f"{COOKIE}={consistency.encode(None)}")["pinned"] == "cookie"
        body = served(f"{COOKIE}={consistency.encode(0x1_0000_0010)}")
        assert body["pinned"] is None and body["min_lsn"] == 0x1_0000_0010


@FUZZ
@given(
    value=st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.binary(max_size=250)
    | st.text(max_size=300)
    | st.lists(st.text(max_size=5), max_size=3)
    | mutated_tokens(),
    sticky=st.floats(0.001, 1e6),
)
def test_decode_never_raises(value: object, sticky: float) -> None:
    with override_settings(RWSPLIT=BASE):
        config = conf.Config(sticky_seconds=sticky)
        token = consistency.decode(value, config)
    assert token is None or isinstance(token, consistency.Token)


@FUZZ
@given(
    payload=st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
    timestamp=st.integers(-(62**20), 62**150) | st.just(int(time.time())),
)
def test_decode_of_signed_garbage_never_raises(payload: str, timestamp: int) -> None:
    """Even a forger holding SECRET_KEY cannot make decode raise."""
    value = signed(f"{payload}:{signing.b62_encode(timestamp)}")
    with override_settings(RWSPLIT=BASE):
        token = consistency.decode(value, conf.get_config())
    if token is not None:
        assert len(value) <= consistency.MAX_TOKEN_LENGTH
        assert token.issued_at <= time.time() + consistency.MAX_CLOCK_SKEW


# -- RWSPLIT -------------------------------------------------------------------


def system_check(raw: object) -> list[Any]:
    """The rwsplit system check messages for ``RWSPLIT = raw``; a crash fails."""
    with override_settings(RWSPLIT=raw):
        try:
            return [*checks.check_settings(), *checks.check_wiring()]
        except Exception as error:  # noqa: BLE001 - reported below
            raise AssertionError(
                f"LIBRARY BUG (django_rwsplit.conf / checks): the system checks "
                f"crash on RWSPLIT={raw!r} with {type(error).__name__}: {error}, "
                "instead of reporting an rwsplit.E0xx error."
            ) from error


@FUZZ
@given(raw=rwsplit_values)
def test_parse_never_raises_and_reports_error_ids(raw: object) -> None:
    try:
        config, problems = conf.parse(raw)
    except Exception as error:  # noqa: BLE001 - reported below
        raise AssertionError(
            f"LIBRARY BUG (django_rwsplit.conf.parse): RWSPLIT={raw!r} raises "
            f"{type(error).__name__}: {error}"
        ) from error
    assert isinstance(config, conf.Config)
    assert all(ERROR_ID.fullmatch(p.id) for p in problems), problems


@FUZZ
@given(raw=rwsplit_values | near_valid.map(lambda extra: {**BASE, **extra}))
def test_system_checks_report_bad_settings_with_error_ids(raw: object) -> None:
    errors = [m for m in system_check(raw) if m.is_serious()]
    assert all(ERROR_ID.fullmatch(e.id or "") for e in errors), errors


@FUZZ
@given(extra=near_valid, cookie=cookie_values.filter(bool))
def test_settings_the_checks_accept_serve_requests(
    extra: dict[str, Any], cookie: str
) -> None:
    rwsplit = {**BASE, **extra}
    if any(m.is_serious() for m in system_check(rwsplit)):
        return  # reported: the project does not start
    with override_settings(ROOT_URLCONF=__name__, RWSPLIT=rwsplit), quiet_request_log():
        name = conf.get_config().cookie_name
        for what, url, header in (
            ("carrying a pin cookie", "/state/", f"{name}={cookie}"),
            ("that writes", "/state/?write=1", ""),
        ):
            status: int | str
            try:
                status = Client().get(url, HTTP_COOKIE=header).status_code
            except Exception as error:  # noqa: BLE001 - reported below
                status = f"{type(error).__name__}: {error}"
            assert status == 200, (
                f"LIBRARY BUG (django_rwsplit.conf): RWSPLIT={rwsplit!r} passes the "
                f"system checks, but a request {what} fails: {status}. Number "
                "settings must be finite and bounded (timedelta, math.ceil(), "
                "cookie expiry dates, threading waits), else rwsplit.E008."
            )
