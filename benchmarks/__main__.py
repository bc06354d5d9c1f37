"""``python -m benchmarks [--size small|paper] [--out results.json] [--only fit|terrain|e2e]``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import Any

from benchmarks import bench_fit, bench_terrain
from benchmarks._timing import Row

SIZES: dict[str, dict[str, Any]] = {
    "small": {"fit_side": 256, "dem_side": 1024, "scene_px": (1200, 1000)},
    "paper": {"fit_side": 1024, "dem_side": 4096, "scene_px": (4440, 3700)},
}


def machine() -> dict[str, Any]:
    """The machine the figures come from (absolute figures are valid only there)."""
    cpu = platform.processor()
    ram_gb = float("nan")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gb = int(line.split()[1]) / 1024**2
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(ram_gb, 1),
        "python": platform.python_version(),
    }


def table(rows: list[Row]) -> str:
    """The results as a fixed-width text table."""
    lines = [f"{'benchmark':<52} {'value':>14} {'unit':<9} {'target':<8} {'result':<6} note"]
    for r in rows:
        verdict = "" if r.passed is None else ("PASS" if r.passed else "MISS")
        lines.append(
            f"{r.name:<52} {r.value:>14.4g} {r.unit:<9} {r.target:<8} {verdict:<6} {r.note}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument(
        "--only",
        choices=["fit", "terrain", "e2e"],
        action="append",
        help="run only these benchmarks (repeatable)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("benchmarks").setLevel(logging.INFO)
    # distributed logs every cluster start and stop at INFO, and sets that level when it is
    # imported: import it first, then quieten it to keep the table readable.
    import distributed  # noqa: F401

    logging.getLogger("distributed").setLevel(logging.WARNING)
    size = SIZES[args.size]
    only = set(args.only or ["fit", "terrain", "e2e"])

    rows: list[Row] = []
    if "fit" in only:
        rows += bench_fit.run(size["fit_side"])
    if "terrain" in only:
        rows += bench_terrain.run(size["dem_side"])
    if "e2e" in only:
        from benchmarks import bench_e2e

        rows += bench_e2e.run(*size["scene_px"])

    # The benchmark CLI's product is this table on stdout.
    sys.stdout.write(table(rows) + "\n")
    if args.out is not None:
        result = {"size": args.size, "machine": machine(), "rows": [r.as_dict() for r in rows]}
        args.out.write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
