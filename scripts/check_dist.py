"""
Check the built sdist and wheel: ``python scripts/check_dist.py DIST_DIR``.

Both must hold every template of ``django_rwsplit/templates`` and
``py.typed``; the wheel must hold no tests, example project or benchmarks.
Exit status 1 with the missing or stray files named; 0 otherwise.
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "django_rwsplit"
STRAY = ("tests/", "example_project/", "benchmarks/", "scripts/")


def required() -> set[str]:
    """The package files every distribution must hold (relative to the root)."""
    files = {"django_rwsplit/py.typed", "django_rwsplit/__init__.py"}
    files |= {
        path.relative_to(ROOT).as_posix()
        for path in (PACKAGE / "templates").rglob("*")
        if path.is_file()
    }
    return files


def wheel_names(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as archive:
        return set(archive.namelist())


def sdist_names(path: Path) -> set[str]:
    with tarfile.open(path) as archive:
        # Drop the top directory (django_rwsplit-0.1.0/).
        return {name.partition("/")[2] for name in archive.getnames()}


def problems(dist: Path) -> list[str]:
    wheels = sorted(dist.glob("*.whl"))
    sdists = sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        return [f"expected one wheel and one sdist in {dist}, found {wheels + sdists}"]
    found = []
    want = required()
    for path, names in (
        (wheels[0], wheel_names(wheels[0])),
        (sdists[0], sdist_names(sdists[0])),
    ):
        found += [f"{path.name} lacks {name}" for name in sorted(want - names)]
    stray = sorted(n for n in wheel_names(wheels[0]) if n.startswith(STRAY))
    found += [f"{wheels[0].name} holds {name}" for name in stray]
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    found = problems(Path(argv[1]))
    for problem in found:
        print(f"check_dist: {problem}", file=sys.stderr)
    if not found:
        print(f"check_dist: ok ({len(required())} package files in both)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
