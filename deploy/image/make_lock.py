"""Write requirements/lock.txt: exact pins of what ``pip install .`` needs, read from a venv.

The lock is the runtime closure of the package's ``[project] dependencies`` (extras followed,
environment markers evaluated for this interpreter and platform), with the versions installed in
the environment that runs this script — the one the test suite passed in. Dev tools (pytest, ruff,
dask-gateway-server, mintpy, ...) are not in it: the image does not need them.

    .venv/bin/python deploy/image/make_lock.py            # rewrite requirements/lock.txt
    .venv/bin/python deploy/image/make_lock.py --check    # exit 1 if the lock is stale
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements" / "lock.txt"
HEADER = """\
# Exact pins of the runtime closure of ftlcloud's [project] dependencies (no dev extras),
# for CPython 3.11 on Linux. Generated from the tested environment; do not edit by hand:
#   .venv/bin/python deploy/image/make_lock.py
# Installed by deploy/image/install.sh (the Dockerfile and tests/test_deploy.py both run it).
"""


def _closure(roots: list[Requirement]) -> dict[str, str]:
    """Map canonical name -> installed version for ``roots`` and everything they require."""
    pins: dict[str, str] = {}
    # (requirement, extras requested of it)
    todo: list[tuple[Requirement, frozenset[str]]] = [(r, frozenset(r.extras)) for r in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError as err:
            raise SystemExit(
                f"{req.name} is required but not installed in {sys.prefix}; "
                "install the package (pip install -e .) and rerun"
            ) from err
        pins[name] = dist.version
        for spec in dist.requires or []:
            sub = Requirement(spec)
            # A dependency applies if its marker holds with no extra or with a requested one.
            contexts = [{"extra": ""}] + [{"extra": e} for e in extras]
            if sub.marker is None or any(sub.marker.evaluate(c) for c in contexts):
                todo.append((sub, frozenset(sub.extras)))
    return pins


def render() -> str:
    """The lock file's text for the current environment."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    roots = [Requirement(d) for d in project["dependencies"]]
    roots = [r for r in roots if r.marker is None or r.marker.evaluate()]
    pins = _closure(roots)
    pins.pop(canonicalize_name(project["name"]), None)
    lines = [f"{name}=={version}" for name, version in sorted(pins.items())]
    return HEADER + "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the lock is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = LOCK.read_text() if LOCK.exists() else ""
        if current != text:
            sys.stderr.write(f"{LOCK} is stale; run {Path(__file__).name} to regenerate it\n")
            return 1
        return 0
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    LOCK.write_text(text)
    sys.stderr.write(f"wrote {LOCK} ({text.count(chr(10)) - HEADER.count(chr(10))} pins)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
