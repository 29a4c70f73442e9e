"""
How each kind of ``RWSPLIT`` value is checked: one function per kind.

Each validator takes the :class:`~django_rwsplit.conf.Setting` it checks and
the value the user wrote, and returns the value to use. On a bad value it
appends a :class:`Problem` (reported as a system check with the setting's
id) and returns the default, so one mistake never hides the next.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings

if TYPE_CHECKING:
    from django_rwsplit.conf import Setting


@dataclass(frozen=True)
class Problem:
    """One thing wrong with ``RWSPLIT``, reported as a system check."""

    id: str
    msg: str
    hint: str | None = None


# The largest replica WEIGHT: a rotation is one period of the weighted order,
# so its length is the sum of the weights.
MAX_WEIGHT = 100
# The shortest HEALTH_ENDPOINT_TOKEN accepted.
MIN_SECRET_LENGTH = 16


def number(setting: Setting, value: Any, problems: list[Problem]) -> Any:
    """A finite number within the setting's bounds (or None when nullable)."""
    if value is None and setting.nullable:
        return None
    kinds = (int,) if setting.integer else (int, float)
    bad_type = isinstance(value, bool) or not isinstance(value, kinds)
    maximum = setting.maximum if setting.maximum is not None else math.inf
    minimum = setting.minimum
    if (
        bad_type
        or (isinstance(value, float) and not math.isfinite(value))
        or value < 0
        or value > maximum
        or (setting.positive and value == 0)
        or (minimum is not None and value < minimum)
    ):
        wanted = "an integer" if setting.integer else "a number"
        sign = (
            f"of at least {minimum:g}"
            if minimum is not None
            else "greater than zero"
            if setting.positive
            else "zero or more"
        )
        none = " or None" if setting.nullable else ""
        problems.append(
            Problem(
                setting.check_id,
                f'RWSPLIT["{setting.key}"] should be {wanted} {sign} and at most '
                f"{maximum:g}{none}, not {value!r}.",
                f"The default is {setting.default!r}.",
            )
        )
        return setting.default
    return float(value) if not setting.integer and value is not None else value


def boolean(setting: Setting, value: Any, problems: list[Problem]) -> bool:
    """True or False, nothing truthy."""
    if not isinstance(value, bool):
        problems.append(
            Problem(
                setting.check_id,
                f'RWSPLIT["{setting.key}"] should be True or False, not {value!r}.',
            )
        )
        return bool(setting.default)
    return value


def choice(setting: Setting, value: Any, problems: list[Problem]) -> str:
    """One of the setting's choices."""
    if value not in setting.choices:
        problems.append(
            Problem(
                setting.check_id,
                f'RWSPLIT["{setting.key}"] should be one of '
                f"{', '.join(map(repr, setting.choices))}, not {value!r}.",
            )
        )
        return str(setting.default)
    return str(value)


def database_alias(setting: Setting, value: Any, problems: list[Problem]) -> str:
    """An alias in ``DATABASES``."""
    if not isinstance(value, str) or value not in settings.DATABASES:
        problems.append(
            Problem(
                setting.check_id,
                f'RWSPLIT["{setting.key}"] should be an alias in DATABASES, '
                f"not {value!r}.",
                f"Known aliases: {', '.join(settings.DATABASES)}.",
            )
        )
        return str(setting.default)
    return value


def replicas(setting: Setting, value: Any, problems: list[Problem]) -> dict[str, int]:
    """A sequence of aliases, or a dict of alias to ``{"WEIGHT": n}``."""
    if isinstance(value, Mapping):
        weights: dict[str, int] = {}
        for alias, options in value.items():
            if not isinstance(alias, str):
                problems.append(
                    Problem(
                        setting.check_id,
                        f'RWSPLIT["REPLICAS"] keys should be database aliases, '
                        f"not {alias!r}.",
                    )
                )
                continue
            weight = options.get("WEIGHT", 1) if isinstance(options, Mapping) else None
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int)
                or not 1 <= weight <= MAX_WEIGHT
                or (isinstance(options, Mapping) and set(options) - {"WEIGHT"})
            ):
                problems.append(
                    Problem(
                        "rwsplit.E007",
                        f'RWSPLIT["REPLICAS"]["{alias}"] should be a dict with an '
                        f'optional integer "WEIGHT" from 1 to {MAX_WEIGHT}, '
                        f"not {options!r}.",
                        'For example {"WEIGHT": 3}. The default weight is 1; '
                        "only the ratios between weights matter.",
                    )
                )
                continue
            weights[alias] = weight
        return weights
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str | bytes)
        and all(isinstance(alias, str) for alias in value)
    ):
        return dict.fromkeys(value, 1)
    problems.append(
        Problem(
            setting.check_id,
            'RWSPLIT["REPLICAS"] should be a sequence of database aliases or a '
            "dict of alias to options.",
            'For example ["replica1", "replica2"] or {"replica1": {"WEIGHT": 3}}.',
        )
    )
    return {}


def cache_alias(setting: Setting, value: Any, problems: list[Problem]) -> str | None:
    """None, or an alias in ``CACHES``."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in settings.CACHES:
        problems.append(
            Problem(
                setting.check_id,
                f'RWSPLIT["{setting.key}"] should be None or an alias in CACHES, '
                f"not {value!r}.",
                "Use a cache shared by every process, such as Redis.",
            )
        )
        return None
    return value


def secret(setting: Setting, value: Any, problems: list[Problem]) -> str | None:
    """
    None or "" (no token), or a string of at least MIN_SECRET_LENGTH characters.

    The value is never echoed in the message. An empty string is no token,
    so ``os.environ.get("X", "")`` with the variable unset turns it off.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or len(value.strip()) < MIN_SECRET_LENGTH:
        what = (
            f"{len(value.strip())} characters"
            if isinstance(value, str)
            else type(value).__name__
        )
        problems.append(
            Problem(
                setting.check_id,
                f'RWSPLIT["{setting.key}"] should be None or a string of at least '
                f"{MIN_SECRET_LENGTH} characters, not {what}.",
                "Generate one with: python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))', and read it from the "
                'environment, e.g. os.environ.get("RWSPLIT_HEALTH_TOKEN").',
            )
        )
        return None
    if value != value.strip():
        problems.append(
            Problem(
                setting.check_id,
                f'RWSPLIT["{setting.key}"] has whitespace around it (a secret '
                "read from a file with its newline?): monitors sending the "
                "token would all be refused.",
                "Strip it where it is read, e.g. Path(...).read_text().strip().",
            )
        )
        return None
    return value


def cookie_name(setting: Setting, value: Any, problems: list[Problem]) -> str:
    """A cookie name of letters, digits, ``-`` and ``_``, not one of Django's."""
    if isinstance(value, str) and value in djangos_cookies():
        problems.append(
            Problem(
                "rwsplit.E019",
                f'RWSPLIT["{setting.key}"] is {value!r}, a cookie Django already '
                "sets: the pin would overwrite it.",
                f"Use another name; the default is {setting.default!r}.",
            )
        )
        return str(setting.default)
    if (
        not isinstance(value, str)
        or not value.isascii()
        or not value.replace("_", "").replace("-", "").isalnum()
    ):
        problems.append(
            Problem(
                setting.check_id,
                f'RWSPLIT["{setting.key}"] should be a non-empty name of letters, '
                f"digits, '-' and '_', not {value!r}.",
            )
        )
        return str(setting.default)
    return value


def djangos_cookies() -> set[str]:
    """The names of the cookies Django itself sets (session, CSRF, language)."""
    from django.conf import settings

    return {
        str(getattr(settings, name))
        for name in ("SESSION_COOKIE_NAME", "CSRF_COOKIE_NAME", "LANGUAGE_COOKIE_NAME")
        if getattr(settings, name, None)
    }


# Headers with a meaning of their own to HTTP, browsers, proxies or Django,
# which a token must never overwrite or be read from (lower case).
RESERVED_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-range",
        "content-security-policy",
        "content-type",
        "cookie",
        "date",
        "etag",
        "expect",
        "expires",
        "forwarded",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "keep-alive",
        "last-modified",
        "link",
        "location",
        "origin",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "range",
        "referer",
        "referrer-policy",
        "retry-after",
        "server",
        "set-cookie",
        "strict-transport-security",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "www-authenticate",
        "x-content-type-options",
        "x-csrftoken",
        "x-frame-options",
        "x-requested-with",
    }
)
RESERVED_HEADER_PREFIXES = ("access-control-", "sec-", "x-forwarded-")


def header_name(setting: Setting, value: Any, problems: list[Problem]) -> str | None:
    """None (off), or an HTTP header name of letters, digits and ``-``, not reserved."""
    if value is None:
        return None
    if isinstance(value, str) and (
        value.lower() in RESERVED_HEADERS
        or value.lower().startswith(RESERVED_HEADER_PREFIXES)
    ):
        problems.append(
            Problem(
                setting.check_id,
                f'RWSPLIT["{setting.key}"] is {value!r}, a header that HTTP, '
                "browsers, proxies or Django already use: the token would "
                "overwrite it or be read from it.",
                f"Use a header of its own; the default is {setting.default!r}.",
            )
        )
        return str(setting.default)
    if (
        not isinstance(value, str)
        or not value.isascii()
        or not value.replace("-", "").isalnum()
    ):
        problems.append(
            Problem(
                setting.check_id,
                f'RWSPLIT["{setting.key}"] should be None or a header name of '
                f"letters, digits and '-', not {value!r}.",
                f"The default is {setting.default!r}.",
            )
        )
        return str(setting.default)
    return value
