"""The CLI's own behaviour: structured (JSON) logs. Commands are tested with the modules they drive."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def test_json_log_lines_carry_time_level_logger_and_message(
    tmp_path: Path, input_files: dict[str, Any]
) -> None:
    ftlcloud = Path(sys.executable).parent / "ftlcloud"
    done = subprocess.run(
        [str(ftlcloud), "--log-format", "json", "-v", "ingest", "inventory",
         "--store", str(tmp_path / "store"), "--name", "initial", str(input_files["inventory_path"])],
        capture_output=True,
        text=True,
        check=True,
    )  # fmt: skip
    records = [json.loads(line) for line in done.stderr.splitlines()]
    assert records, "no log line at -v"
    for rec in records:
        assert {"time", "level", "logger", "message"} <= set(rec)
    assert any(
        rec["logger"] == "ftlcloud.io.catalog" and "published STAC item" in rec["message"]
        for rec in records
    )
