"""ftlcloud.science stays pure: no storage, STAC, Dask or pipeline imports (checked in a fresh
interpreter, so imports made by other tests cannot hide or cause a failure)."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import ftlcloud.science

FORBIDDEN = (
    "dask",
    "distributed",
    "fsspec",
    "s3fs",
    "pystac",
    "pystac_client",
    "stackstac",
    "ftlcloud.io",
    "ftlcloud.pipeline",
)
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(ftlcloud.science.__path__, prefix="ftlcloud.science.")
)


def test_science_has_the_expected_modules():
    assert {"ftlcloud.science.fit", "ftlcloud.science.terrain", "ftlcloud.science.ndvi"} <= set(
        MODULES
    )


@pytest.mark.parametrize("module", ["ftlcloud.science", *MODULES])
def test_module_imports_nothing_forbidden(module):
    code = (
        "import importlib, json, sys\n"
        f"importlib.import_module({module!r})\n"
        f"forbidden = {list(FORBIDDEN)!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules"
        " if any(m == f or m.startswith(f + '.') for f in forbidden))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"importing {module} failed:\n{done.stderr}"
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded == [], f"{module} pulls in {loaded}; keep storage/Dask out of ftlcloud.science"
