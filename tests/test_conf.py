"""The settings table: parsing, defaults, bounds, and the README that lists it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from django_rwsplit import conf

README = Path(__file__).resolve().parents[1] / "README.md"


def test_an_empty_setting_parses_to_every_default():
    config, problems = conf.parse({})
    assert problems == []
    for setting in conf.SETTINGS:
        parsed = getattr(config, setting.attribute)
        if setting.key == "REPLICAS":
            assert parsed == {}
        else:
            assert parsed == setting.default, setting.key


def test_every_config_field_comes_from_the_table():
    derived = {"test_mirrors", "problems", "name", "is_default"}
    derived |= {"app_clusters", "model_clusters", "alias_clusters", "model_cache"}
    derived |= {"read_planner"}
    fields = set(conf.Config.__dataclass_fields__) - derived
    assert fields == {setting.attribute for setting in conf.SETTINGS}


def test_defaults_and_maximums_are_derived_from_the_table():
    assert list(conf.DEFAULTS) == [s.key for s in conf.SETTINGS]
    assert conf.MAXIMUMS["CHECK_TIMEOUT"] == 600
    assert "PRIMARY" not in conf.MAXIMUMS


@pytest.mark.parametrize(
    "setting", [s for s in conf.SETTINGS if s.maximum is not None], ids=lambda s: s.key
)
def test_each_bound_is_inclusive_and_checked(setting):
    top = int(setting.maximum) if setting.integer else setting.maximum
    _, problems = conf.parse({setting.key: top})
    assert problems == []
    _, problems = conf.parse({setting.key: top * 2})
    assert [p.id for p in problems] == [setting.check_id]
    assert f'RWSPLIT["{setting.key}"]' in problems[0].msg


def test_one_bad_value_does_not_hide_the_next():
    config, problems = conf.parse({"STICKY_SECONDS": -1, "FALLBACK": "nowhere"})
    assert [p.id for p in problems] == ["rwsplit.E008", "rwsplit.E011"]
    assert config.sticky_seconds == 5.0 and config.fallback == "primary"


def _readme_settings() -> dict[str, tuple[str, str]]:
    text = README.read_text()
    found = {}
    pattern = r'#### `RWSPLIT\["(\w+)"\]: ([^`]+)`\n\nDefaults to `([^`]+)`'
    for key, kind, default in re.findall(pattern, text):
        found[key] = (kind, default)
    return found


def test_the_readme_lists_every_setting_with_its_type_and_default():
    documented = _readme_settings()
    assert set(documented) == set(conf.DEFAULTS)
    for setting in conf.SETTINGS:
        assert documented[setting.key] == (
            setting.type,
            setting.documented_default,
        ), setting.key
