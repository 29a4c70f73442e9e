"""scripts/check_dist.py: the CI check of what the sdist and wheel hold."""

from __future__ import annotations

import importlib.util
import io
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def check_dist() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_dist", ROOT / "scripts" / "check_dist.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(dist: Path, names: set[str], wheel_extra: set[str] = frozenset()) -> None:
    with zipfile.ZipFile(dist / "django_rwsplit-0.1.0-py3-none-any.whl", "w") as whl:
        for name in names | wheel_extra:
            whl.writestr(name, "")
    with tarfile.open(dist / "django_rwsplit-0.1.0.tar.gz", "w:gz") as sdist:
        for name in names:
            info = tarfile.TarInfo(f"django_rwsplit-0.1.0/{name}")
            sdist.addfile(info, io.BytesIO(b""))


def test_complete_distributions_pass(tmp_path):
    module = check_dist()
    build(tmp_path, module.required())
    assert module.problems(tmp_path) == []
    assert "django_rwsplit/templates/django_rwsplit/status.html" in module.required()


def test_a_wheel_without_py_typed_or_a_template_fails(tmp_path):
    module = check_dist()
    want = module.required()
    build(tmp_path, want - {"django_rwsplit/py.typed"})
    found = module.problems(tmp_path)
    assert any("whl lacks django_rwsplit/py.typed" in p for p in found)
    assert any("tar.gz lacks django_rwsplit/py.typed" in p for p in found)
    assert module.main(["check_dist", str(tmp_path)]) == 1


def test_tests_in_the_wheel_fail(tmp_path):
    module = check_dist()
    build(tmp_path, module.required(), wheel_extra={"tests/test_x.py"})
    assert module.problems(tmp_path) == [
        "django_rwsplit-0.1.0-py3-none-any.whl holds tests/test_x.py"
    ]
